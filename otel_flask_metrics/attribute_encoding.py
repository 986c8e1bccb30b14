"""OTLP encoding of attributes, made once per distinct attribute and reused.

The OTLP exporters encode in Python: for each attribute a ``KeyValue`` and an
``AnyValue`` message are built after a chain of ``isinstance`` checks.

- A server span has about a dozen attributes, and most of them repeat from
  span to span (method, scheme, route, status, server address, content
  type). In the export thread that was about 60 µs a span, 40 % of what a
  fully traced request costs in instructions (``benchmarks/``).
- A metric export encodes every series' attributes again, every interval:
  8,000 histogram points took 209 ms, 140 ms with the memo (measured once,
  same bytes).

Every microsecond of it holds the GIL while requests wait; the replacement
also pauses after each span or point (:mod:`.export_pauses`).

The trace and metrics encoders' ``_encode_attributes`` is replaced by one that
keeps the encoded ``KeyValue`` of each (key, value) it has seen, for values
whose encoding their equality decides: exact ``str``, ``int`` and ``bool``
(the type is part of the key, so ``True`` and ``1`` stay apart) and tuples of
exact ``str``. Floats are left out (``-0.0 == 0.0``, ``nan != nan``), and so
is anything else. A message is copied into the span or point that uses it,
so the kept one never changes. Each memo is cleared when it holds
:data:`MAX_ENTRIES`, so memory stays bounded when values rarely repeat.

It is installed with the metrics fast path (:mod:`.fast_attributes`, same
switch) only if each encoder still has the function and, on probes, the bytes
it produces are identical to the original's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .export_pauses import let_requests_run

#: Distinct (key, value) encodings kept at most; the memo starts over past this.
#: Each costs about 1 KiB (a message and its upb arena, measured): 0.5 MiB at most.
MAX_ENTRIES = 512

_MEMO_TYPES = frozenset((str, int, bool))

#: (module, name, original, replacement): one function to swap.
Replacement = tuple[Any, str, Callable[..., Any], Callable[..., Any]]


def _memo_key(key: Any, value: Any) -> tuple[Any, ...] | None:
    """The memo's key for one attribute, or None when its encoding is not memoised."""
    kind = type(value)
    if kind in _MEMO_TYPES:
        return (key, kind, value)
    if kind is tuple:
        for element in value:
            if type(element) is not str:
                return None
        return (key, tuple, value)
    return None


def memoized(original: Callable[[Any], list[Any]]) -> Callable[[Any], list[Any]]:
    """``_encode_attributes`` reusing each attribute's encoded message.

    A value seen for the first time, or one not memoised, is encoded by
    ``original`` itself (which logs and skips what it cannot encode), so the
    result is always what the original gives.
    """
    memo: dict[tuple[Any, ...], Any] = {}

    def encode_attributes(
        attributes: Mapping[str, Any] | None, *rest: Any, **options: Any
    ) -> list[Any]:
        let_requests_run()  # once per span or metric point (see export_pauses)
        if rest or options:  # a newer encoder's argument (allow_null...): its own path
            return original(attributes, *rest, **options)
        if not attributes:
            return []
        encoded = []
        for key, value in attributes.items():
            memo_key = _memo_key(key, value) if type(key) is str else None
            if memo_key is None:
                encoded.extend(original({key: value}))
                continue
            message = memo.get(memo_key)
            if message is None:
                made = original({key: value})
                if len(made) != 1:  # not encodable: the original logged it
                    continue
                message = made[0]
                if len(memo) >= MAX_ENTRIES:
                    memo.clear()
                memo[memo_key] = message
            encoded.append(message)
        return encoded

    encode_attributes.__wrapped__ = original  # type: ignore[attr-defined]
    encode_attributes.memo = memo  # type: ignore[attr-defined]  # for tests
    return encode_attributes


def _probe_spans() -> list[Any]:
    """Spans with every kind of attribute value the encoder takes, and events and links."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

    context = SpanContext(0x1F, 0x2F, is_remote=False, trace_flags=TraceFlags(1))
    attributes: list[dict[str, Any]] = [
        {"http.request.method": "GET", "http.response.status_code": 200, "ok": True},
        {"a": 1, "b": True, "c": 1.0, "d": -0.0, "e": float("nan"), "f": b"\x00"},
        {"h": ("application/json",), "i": (), "j": ("a", "b"), "k": [1, 2], "l": (True, 1)},
        {"none": None, "map": {"x": "y"}, "é": "ü", "long": "x" * 300},
    ]
    spans = []
    for repeat in range(2):  # the second pass reads the memo
        for index, attrs in enumerate(attributes):
            spans.append(
                ReadableSpan(
                    name=f"probe {index}",
                    context=context,
                    attributes=attrs,
                    events=[Event("e", attrs, timestamp=5)],
                    links=[Link(context, attrs)],
                    kind=SpanKind.SERVER,
                    resource=Resource({"service.name": "probe", "n": repeat}),
                    start_time=1,
                    end_time=2,
                )
            )
    return spans


def _same_bytes(original: Callable[[Any], list[Any]], fast: Callable[[Any], list[Any]]) -> bool:
    """Whether ``fast`` encodes the probes' attributes to the original's bytes, twice over."""
    probes = [dict(span.attributes) for span in _probe_spans()]
    return all(
        [kv.SerializeToString() for kv in fast(p)] == [kv.SerializeToString() for kv in original(p)]
        for p in probes
    )


def plan() -> list[Replacement]:
    """The replacement of each encoder that takes the memo."""
    replacements: list[Replacement] = []
    try:
        from opentelemetry.exporter.otlp.proto.common._internal import (
            metrics_encoder,
            trace_encoder,
        )
    except ImportError:
        return []
    span_plan = _span_plan(trace_encoder)
    if span_plan is not None:
        replacements.append(span_plan)
    original = getattr(metrics_encoder, "_encode_attributes", None)
    if callable(original):
        fast = memoized(original)
        try:
            agrees = _same_bytes(original, fast)
        except Exception:
            agrees = False
        fast.memo.clear()  # type: ignore[attr-defined]
        if agrees:
            replacements.append((metrics_encoder, "_encode_attributes", original, fast))
    return replacements


def _span_plan(trace_encoder: Any) -> Replacement | None:
    """The trace encoder's replacement, checked on whole encoded requests."""
    original = getattr(trace_encoder, "_encode_attributes", None)
    encode_spans = getattr(trace_encoder, "encode_spans", None)
    if not callable(original) or not callable(encode_spans):
        return None
    fast = memoized(original)
    try:
        probes = _probe_spans()
        expected = encode_spans(probes).SerializeToString()
        setattr(trace_encoder, "_encode_attributes", fast)  # noqa: B010  # untyped on purpose
        try:
            agrees = encode_spans(probes).SerializeToString() == expected
        finally:
            setattr(trace_encoder, "_encode_attributes", original)  # noqa: B010
    except Exception:
        return None
    fast.memo.clear()  # type: ignore[attr-defined]
    return (trace_encoder, "_encode_attributes", original, fast) if agrees else None
