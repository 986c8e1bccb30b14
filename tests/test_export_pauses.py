"""export_pauses: the export path lets a waiting request thread have the GIL after each span."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_flask_metrics import redacting_processors
from otel_flask_metrics.redaction import RedactingSpanExporter


class _Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def test_redaction_pauses_once_per_span(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[int] = []
    monkeypatch.setattr(redacting_processors, "let_requests_run", lambda: pauses.append(1))
    tracer = TracerProvider().get_tracer("t")
    spans = []
    for index in range(5):
        span = tracer.start_span(f"s{index}", attributes={"password": "hunter2", "n": index})
        span.end()
        spans.append(span)
    kept = _Kept()
    assert RedactingSpanExporter(kept).export(spans) is SpanExportResult.SUCCESS
    assert len(pauses) == 5
    assert [s.attributes["n"] for s in kept.spans] == [0, 1, 2, 3, 4]
    assert all(s.attributes["password"] != "hunter2" for s in kept.spans)


def test_a_pause_only_after_the_work_of_a_pause_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_flask_metrics import export_pauses

    clock = [100.0]
    sleeps: list[float] = []
    monkeypatch.setattr(export_pauses.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(export_pauses.time, "sleep", sleeps.append)
    monkeypatch.setattr(export_pauses, "_last_pause", 0.0)
    export_pauses.let_requests_run()  # long since the last one
    assert sleeps == [export_pauses.PAUSE_FOR]
    for _ in range(10):  # work shorter than the interval: no pause
        clock[0] += export_pauses.PAUSE_EVERY / 20
        export_pauses.let_requests_run()
    assert len(sleeps) == 1
    clock[0] += export_pauses.PAUSE_EVERY
    export_pauses.let_requests_run()
    assert len(sleeps) == 2
