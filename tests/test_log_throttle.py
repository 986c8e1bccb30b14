"""A full export queue or a hostile header is one log line, not one per request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otel_flask_metrics.log_throttle import RepeatedMessageFilter, install


class BlockedExporter(SpanExporter):
    """An exporter stuck like one whose Collector is down."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        return SpanExportResult.FAILURE


def test_a_full_queue_is_logged_once_not_per_span(caplog: pytest.LogCaptureFixture) -> None:
    install()
    exporter = BlockedExporter()
    processor = BatchSpanProcessor(exporter, max_queue_size=10, max_export_batch_size=5)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(500):
                tracer.start_span("request").end()
        full = [r for r in caplog.records if "Queue full" in r.getMessage()]
        assert len(full) == 1, f"{len(full)} lines for one full queue"
    finally:
        exporter.release.set()
        provider.shutdown()


def test_the_next_line_says_how_many_were_held_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_flask_metrics import log_throttle

    now = [1000.0]
    monkeypatch.setattr(log_throttle.time, "monotonic", lambda: now[0])
    throttle = RepeatedMessageFilter(interval=60.0)

    def record(level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("sdk", level, __file__, 1, "Queue full, dropping spans.", None, None)

    assert throttle.filter(record())
    assert [throttle.filter(record()) for _ in range(41)] == [False] * 41
    assert throttle.filter(record(logging.INFO)), "below warning level nothing is held back"
    now[0] += 61
    later = record()
    assert throttle.filter(later)
    assert later.getMessage() == "Queue full, dropping spans. (41 more like this in the last 60 s)"


def test_exports_to_an_absent_collector_are_logged_once_not_per_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real HTTP exporter against a closed loopback port: every retry used to log."""
    import socket

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens
    install()
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=1)
    span = TracerProvider().get_tracer("t").start_span("request")
    span.end()
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(4):
                exporter.export([span])  # type: ignore[list-item]
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry.exporter")]
        messages = {r.msg for r in caplog.records if r.name.startswith("opentelemetry.exporter")}
        assert lines, "the first failure is logged"
        assert len(lines) == len(messages), f"each kind of line once: {lines}"
    finally:
        exporter.shutdown()
