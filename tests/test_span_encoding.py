"""span_encoding: the memoised OTLP attribute encoding gives the original's bytes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._internal import trace_encoder
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from otel_flask_metrics import fast_attributes, span_encoding

ORIGINAL = getattr(
    trace_encoder._encode_attributes, "__wrapped__", trace_encoder._encode_attributes
)


@pytest.fixture
def sdk_functions() -> Iterator[None]:
    was_installed = fast_attributes.is_installed()
    fast_attributes.uninstall()
    yield
    fast_attributes.uninstall()
    if was_installed:
        fast_attributes.install()


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
    fast = span_encoding.memoized(ORIGINAL)
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
    fast = span_encoding.memoized(ORIGINAL)
    fast({"t": True, "one": 1, "zero": 0.0, "minus": -0.0, "nan": float("nan"), "mix": (1, True)})
    assert sorted(k[0] for k in fast.memo) == ["one", "t"]  # type: ignore[attr-defined]
    assert [kv.value.bool_value for kv in fast({"x": True})] == [True]
    assert [kv.value.int_value for kv in fast({"x": 1})] == [1]


def test_an_attribute_the_encoder_refuses_is_skipped_as_the_original_skips_it() -> None:
    fast = span_encoding.memoized(ORIGINAL)
    attributes = {"big": 2**70, "ok": "v"}
    assert fast(attributes) == ORIGINAL(attributes)
    assert [kv.key for kv in fast(attributes)] == ["ok"]


def test_the_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(span_encoding, "MAX_ENTRIES", 10)
    fast = span_encoding.memoized(ORIGINAL)
    for index in range(100):
        assert fast({"url.path": f"/items/{index}"}) == ORIGINAL({"url.path": f"/items/{index}"})
    assert len(fast.memo) <= 10  # type: ignore[attr-defined]


def test_installed_with_the_fast_path_and_removed_with_it(sdk_functions: None) -> None:
    assert fast_attributes.install()
    assert getattr(trace_encoder._encode_attributes, "__wrapped__", None) is ORIGINAL
    fast_attributes.uninstall()
    assert trace_encoder._encode_attributes is ORIGINAL


def test_an_encoder_that_encodes_otherwise_is_left_alone(
    sdk_functions: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def other(attributes: Any) -> list[Any]:  # an encoder whose output the memo would change
        other.calls += 1  # type: ignore[attr-defined]
        return ORIGINAL({k: f"{v}#{other.calls}" for k, v in (attributes or {}).items()})  # type: ignore[attr-defined]

    other.calls = 0  # type: ignore[attr-defined]
    monkeypatch.setattr(trace_encoder, "_encode_attributes", other)
    assert span_encoding.plan() is None
    assert trace_encoder._encode_attributes is other
