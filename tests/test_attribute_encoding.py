"""attribute_encoding: the memoised OTLP attribute encoding gives the original's bytes."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._internal import metrics_encoder, trace_encoder
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from otel_flask_metrics import attribute_encoding, fast_attributes

ORIGINAL = getattr(
    trace_encoder._encode_attributes, "__wrapped__", trace_encoder._encode_attributes
)


_VALUES: list[Any] = [
    "GET", "", "é/ü", "x" * 500, 0, 1, 200, -3, 2**63 - 1, True, False, 1.0, 0.0, -0.0,
    float("nan"), float("inf"), None, b"bytes", ("a", "b"), ("",), (), ["a"], (True, 1),
    (1, True), ("a", 1), {"nested": "map"},
]


def _spans(seed: int, count: int) -> list[ReadableSpan]:
    rng = random.Random(seed)
    keys = ["http.request.method", "url.path", "http.response.status_code", "a", "b", "é"]
    resource = Resource.create({"service.name": "enc"})
    spans = []
    for index in range(count):
        attributes = {k: rng.choice(_VALUES) for k in rng.sample(keys, rng.randint(0, 6))}
        context = SpanContext(index + 1, index + 2, is_remote=False, trace_flags=TraceFlags(1))
        events = [Event("exception", attributes, timestamp=index)] if rng.random() < 0.2 else []
        links = [Link(context, attributes)] if rng.random() < 0.1 else []
        spans.append(
            ReadableSpan(
                name=f"GET /{index % 3}", context=context, attributes=attributes,
                events=events, links=links, kind=SpanKind.SERVER, resource=resource,
                start_time=index, end_time=index + 5,
            )
        )
    return spans


def test_memoised_encoding_gives_the_original_bytes_batch_after_batch() -> None:
    fast = attribute_encoding.memoized(ORIGINAL)
    for seed in range(20):
        spans = _spans(seed, 60)
        expected = trace_encoder.encode_spans(spans).SerializeToString()
        trace_encoder._encode_attributes = fast  # type: ignore[attr-defined]
        try:
            got = trace_encoder.encode_spans(spans).SerializeToString()
        finally:
            trace_encoder._encode_attributes = ORIGINAL  # type: ignore[attr-defined]
        assert got == expected, seed
    assert fast.memo, "the batches shared attributes"  # type: ignore[attr-defined]


def test_values_whose_equality_does_not_decide_their_encoding_are_not_memoised() -> None:
    fast = attribute_encoding.memoized(ORIGINAL)
    fast({"t": True, "one": 1, "zero": 0.0, "minus": -0.0, "nan": float("nan"), "mix": (1, True)})
    assert sorted(k[0] for k in fast.memo) == ["one", "t"]  # type: ignore[attr-defined]
    assert [kv.value.bool_value for kv in fast({"x": True})] == [True]
    assert [kv.value.int_value for kv in fast({"x": 1})] == [1]


def test_an_attribute_the_encoder_refuses_is_skipped_as_the_original_skips_it() -> None:
    fast = attribute_encoding.memoized(ORIGINAL)
    attributes = {"big": 2**70, "ok": "v"}
    assert fast(attributes) == ORIGINAL(attributes)
    assert [kv.key for kv in fast(attributes)] == ["ok"]


def test_an_encoder_argument_it_does_not_know_goes_to_the_original() -> None:
    calls: list[tuple[Any, ...]] = []

    def newer(attributes: Any, allow_null: bool = False) -> list[Any]:
        calls.append((attributes, allow_null))
        return ORIGINAL(attributes)

    fast = attribute_encoding.memoized(newer)
    assert fast({"k": "v"}, allow_null=True) == ORIGINAL({"k": "v"})
    assert fast({"k": "v"}, True) == ORIGINAL({"k": "v"})
    assert calls == [({"k": "v"}, True), ({"k": "v"}, True)]
    assert not fast.memo  # type: ignore[attr-defined]


def test_the_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attribute_encoding, "MAX_ENTRIES", 10)
    fast = attribute_encoding.memoized(ORIGINAL)
    for index in range(100):
        assert fast({"url.path": f"/items/{index}"}) == ORIGINAL({"url.path": f"/items/{index}"})
    assert len(fast.memo) <= 10  # type: ignore[attr-defined]


def test_installed_with_the_fast_path_and_removed_with_it(sdk_functions: None) -> None:
    assert fast_attributes.install()
    for module in (trace_encoder, metrics_encoder):
        assert getattr(module._encode_attributes, "__wrapped__", None) is not None, module
    fast_attributes.uninstall()
    assert trace_encoder._encode_attributes is ORIGINAL
    assert not hasattr(metrics_encoder._encode_attributes, "__wrapped__")


def test_an_encoder_that_encodes_otherwise_is_left_alone(
    sdk_functions: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = [0]

    def other(attributes: Any) -> list[Any]:  # an encoder whose output the memo would change
        calls[0] += 1
        return ORIGINAL({k: f"{v}#{calls[0]}" for k, v in (attributes or {}).items()})

    monkeypatch.setattr(trace_encoder, "_encode_attributes", other)
    monkeypatch.setattr(metrics_encoder, "_encode_attributes", other)
    assert attribute_encoding.plan() == []
    assert trace_encoder._encode_attributes is other


def _metrics(seed: int) -> Any:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("m")
    histogram, counter = meter.create_histogram("h", unit="s"), meter.create_counter("c")
    rng = random.Random(seed)
    for _ in range(300):
        attributes = {
            "http.route": rng.choice(["/a", "/b/<id>"]),
            "http.response.status_code": rng.choice([200, 404, True]),
            "api.consumer.id": rng.choice(["c1", "c2", 1, 1.0, -0.0, ("x",)]),
        }
        histogram.record(rng.random(), attributes)
        counter.add(1, attributes)
    return reader.get_metrics_data()


def test_metric_exports_encode_to_the_original_bytes_export_after_export(
    sdk_functions: None,
) -> None:
    original = metrics_encoder._encode_attributes
    fast = attribute_encoding.memoized(original)
    for seed in range(5):
        data = _metrics(seed)
        expected = encode_metrics(data).SerializeToString()
        metrics_encoder._encode_attributes = fast  # type: ignore[attr-defined]
        try:
            assert encode_metrics(data).SerializeToString() == expected, seed
            assert encode_metrics(data).SerializeToString() == expected, seed  # from the memo
        finally:
            metrics_encoder._encode_attributes = original  # type: ignore[attr-defined]


def test_the_encoder_pauses_once_per_span_or_point(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[int] = []
    monkeypatch.setattr(attribute_encoding, "let_requests_run", lambda: pauses.append(1))
    fast = attribute_encoding.memoized(ORIGINAL)
    for attributes in ({"a": "b"}, {}, None, {"c": 1.5}):
        fast(attributes)
    assert len(pauses) == 4
