from __future__ import annotations

import enum
import random
from typing import Any

import pytest
from flask import Flask
from opentelemetry import attributes as api_attributes
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal import _view_instrument_match, measurement
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_flask_metrics import FlaskMetrics, fast_attributes
from otel_flask_metrics.fast_attributes import flat_clean, flat_hash


def _sdks(function: Any) -> Any:
    """The SDK's own function, even if an earlier test left the fast path installed."""
    return getattr(function, "__wrapped__", function)


SDK_HASH = _sdks(_view_instrument_match._hash_attributes)
_clean_attribute_value = _sdks(api_attributes._clean_attribute_value)


class Plan(enum.IntEnum):
    FREE = 0


class Tier(str, enum.Enum):
    GOLD = "gold"


def _values(rng: random.Random) -> Any:
    return rng.choice(
        [
            "GET", "", "é/ü", 0, 1, 200, -3, 1.0, 0.5, float("inf"), True, False,
            None, b"bytes", ("a", "b"), ("",), (), [1, 2], (True, 1, 1.0), ("a", 1),
            (Tier.GOLD,), Plan.FREE, Tier.GOLD,
            {"nested": "map"},
        ]
    )


def _attribute_dicts() -> list[dict[Any, Any]]:
    rng = random.Random(7)
    keys = ["http.request.method", "url.scheme", "http.route", "a", "b", "Z", "é", ""]
    dicts: list[dict[Any, Any]] = [{}, {1: "int key"}, {"a": 1, 2: "mixed keys"}]
    for _ in range(500):
        picked = rng.sample(keys, rng.randint(1, 6))
        dicts.append({k: _values(rng) for k in picked})
        # The common shape, in random key order.
        flat = {k: rng.choice(["GET", 200, 1.5, True]) for k in picked if k}
        dicts.append(dict(rng.sample(list(flat.items()), len(flat))))
    return dicts


def test_fast_hash_equals_the_sdks() -> None:
    fast = flat_hash(SDK_HASH)
    for attributes in _attribute_dicts():
        try:
            expected = SDK_HASH(dict(attributes))
        except TypeError:  # what the SDK cannot hash, the fast path must not either
            with pytest.raises(TypeError):
                fast(dict(attributes))
            continue
        assert fast(dict(attributes)) == expected, attributes


@pytest.mark.parametrize("max_length", [None, 2])
def test_fast_clean_equals_the_sdks(max_length: int | None) -> None:
    fast = flat_clean(_clean_attribute_value)
    for attributes in _attribute_dicts():
        expected = _clean_attribute_value(attributes, max_length)
        cleaned = fast(attributes, max_length)
        assert cleaned == expected, attributes
        assert list(cleaned) == list(expected), ("same key order", attributes)
        assert cleaned is not attributes, "a copy, as the SDK makes"


def test_bool_int_and_float_keep_separate_keys() -> None:
    fast = flat_hash(SDK_HASH)
    assert len({fast({"a": True}), fast({"a": 1}), fast({"a": 1.0})}) == 3


def test_install_replaces_and_uninstall_restores(sdk_functions: None) -> None:
    assert fast_attributes.install()
    assert fast_attributes.install(), "idempotent"
    assert _view_instrument_match._hash_attributes is not SDK_HASH
    assert measurement._clean_attribute_value is not _clean_attribute_value
    assert api_attributes._clean_attribute_value is not _clean_attribute_value
    fast_attributes.uninstall()
    assert _view_instrument_match._hash_attributes is SDK_HASH
    assert measurement._clean_attribute_value is _clean_attribute_value
    assert api_attributes._clean_attribute_value is _clean_attribute_value


def test_an_sdk_with_another_key_format_is_left_alone(
    sdk_functions: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def other_format(value: Any) -> Any:
        return frozenset(value.items()) if isinstance(value, dict) else value

    monkeypatch.setattr(_view_instrument_match, "_hash_attributes", other_format)
    assert not fast_attributes.install()
    assert _view_instrument_match._hash_attributes is other_format
    assert measurement._clean_attribute_value is _clean_attribute_value


def _points(fast: bool) -> list[tuple[Any, ...]]:
    if fast:
        fast_attributes.install()
    else:
        fast_attributes.uninstall()
    reader = InMemoryMetricReader()
    histogram = MeterProvider(metric_readers=[reader]).get_meter("t").create_histogram("h")
    rng = random.Random(3)
    for _ in range(300):
        attributes = {"method": rng.choice(["GET", "POST"]), "status": rng.choice([200, 404])}
        if rng.random() < 0.3:
            attributes["flag"] = rng.choice([True, 1, 1.0, ("x",), Plan.FREE])
        histogram.record(rng.random(), dict(rng.sample(list(attributes.items()), len(attributes))))
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    return sorted(
        (tuple(sorted((k, repr(v)) for k, v in p.attributes.items())), p.count, p.sum,
         tuple(p.bucket_counts))
        for p in metric.data.data_points
    )


def test_the_sdk_aggregates_exactly_the_same_with_the_fast_path(sdk_functions: None) -> None:
    assert _points(fast=True) == _points(fast=False)


def test_the_extension_installs_it_unless_turned_off(
    sdk_functions: None, meter_provider: MeterProvider
) -> None:
    FlaskMetrics(Flask("off"), meter_provider=meter_provider, sdk_fast_path=False)
    assert not fast_attributes.is_installed()
    FlaskMetrics(Flask("on"), meter_provider=meter_provider)
    assert fast_attributes.is_installed()


def test_checking_availability_changes_nothing(sdk_functions: None) -> None:
    assert fast_attributes.available()
    assert not fast_attributes.is_installed()
    assert _view_instrument_match._hash_attributes is SDK_HASH


def test_frozen_attributes_clean_to_the_same_plain_dict() -> None:
    fast = flat_clean(_clean_attribute_value)
    attributes = {"http.request.method": "GET", "http.response.status_code": 200, "a": 1.5}
    frozen = fast_attributes.FrozenAttributes.of(dict(attributes))
    assert type(frozen) is fast_attributes.FrozenAttributes
    cleaned = fast(frozen, None)
    assert type(cleaned) is dict and cleaned == _clean_attribute_value(frozen, None) == attributes
    assert list(cleaned) == list(attributes)
    for change in (
        lambda: frozen.__setitem__("a", 2),
        lambda: frozen.__delitem__("a"),
        lambda: frozen.update(b=1),
        lambda: frozen.pop("a"),
        lambda: frozen.setdefault("c", 1),
        frozen.clear,
        frozen.popitem,
    ):
        with pytest.raises(TypeError):
            change()
    assert frozen == attributes


@pytest.mark.parametrize(
    "attributes", [{"a": Tier.GOLD}, {"a": Plan.FREE}, {"": "empty key"}, {"a": ("x",)}]
)
def test_only_flat_attributes_are_frozen(attributes: dict[str, Any]) -> None:
    assert fast_attributes.FrozenAttributes.of(attributes) is attributes


def test_metric_attributes_are_shared_per_series_and_keep_types_apart() -> None:
    from otel_flask_metrics.request_record import MetricAttributes

    class Route(str):
        pass

    sets = MetricAttributes()
    first = sets.get("GET", "http", 200, "/items/<id>", None, "c1", None)
    assert first == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "http.route": "/items/<id>",
        "api.consumer.id": "c1",
    }
    assert sets.get("GET", "http", 200, "/items/<id>", None, "c1", None) is first
    other = sets.get("GET", "http", 200, Route("/items/<id>"), None, "c1", None)
    assert type(other["http.route"]) is Route
    assert sets.get("GET", "http", 0, None, "OSError", None, "g") == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "error.type": "OSError",
    }


def test_a_copy_of_frozen_attributes_gets_the_sdks_key_and_equal_lookalikes_their_own() -> None:
    fast_hash = flat_hash(SDK_HASH)
    fast_clean = flat_clean(_clean_attribute_value)
    frozen = fast_attributes.FrozenAttributes({"a": 1, "b": "x", "c": 2.5})
    copy = dict(fast_clean(frozen, None))  # what the SDK hashes: a copy of the cleaned dict
    assert fast_hash(copy) == SDK_HASH(dict(frozen))
    assert fast_hash(dict(copy)) is fast_hash(copy), "computed once"
    # Equal to it, but other objects of other types: each keeps its own key.
    for lookalike in ({"a": True, "b": "x", "c": 2.5}, {"a": 1.0, "b": "x", "c": 2.5},
                      {"a": 1, "b": Tier.GOLD, "c": 2.5}, {"a": 1, "b": "x", "d": 2.5}):
        assert fast_hash(lookalike) == SDK_HASH(dict(lookalike)), lookalike
    with pytest.raises(TypeError):
        fast_attributes.FrozenAttributes({"a": Tier.GOLD})


def _span_attributes(fast: bool, limits: SpanLimits | None = None) -> list[Any]:
    """Every span's attributes and dropped count, the dicts set at start and afterwards."""
    if fast:
        fast_attributes.install()
    else:
        fast_attributes.uninstall()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    dicts = _attribute_dicts()
    for start, later in zip(dicts[::2], dicts[1::2], strict=False):
        span = tracer.start_span("s", attributes=start)
        span.set_attributes(later)
        span.end()
    return [
        (list(s.attributes.items()), s.dropped_attributes) for s in exporter.get_finished_spans()
    ]


@pytest.mark.parametrize(
    "limits",
    [None, SpanLimits(max_span_attributes=3), SpanLimits(max_span_attribute_length=2)],
    ids=["default limits", "3 attributes", "values of 2 characters"],
)
def test_spans_get_exactly_the_same_attributes_with_the_fast_path(
    sdk_functions: None, limits: SpanLimits | None
) -> None:
    assert _span_attributes(True, limits) == _span_attributes(False, limits)
