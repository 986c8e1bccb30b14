"""What the request log costs per request, in-process (Flask test client), median of 7 rounds.

* kept requests: an unsampled 503 with keeping off, the same kept after the
  response, and a sampled 503 (spans to a null exporter through the batch
  processor);
* log lines: 0, 1 and 10 info lines per request through OpenTelemetry's
  logging handler, the request-log processor and redaction, to a null
  exporter through the batch processor.

Requests that are neither failed nor slow, and write no log line, are what
``instructions.py`` measures (its mix has none).

    python benchmarks/bench_request_log.py
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

from otel_flask_metrics import FlaskMetrics
from otel_flask_metrics.config import resolve_settings
from otel_flask_metrics.distro import build_redactor
from otel_flask_metrics.redaction import RedactingLogRecordProcessor
from otel_flask_metrics.request_logs import RequestLogProcessor

ROUNDS = 7
REQUESTS = 1000


class NullSpans(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class NullLogs(LogRecordExporter):
    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


def client(sampler: Sampler, view: Callable[..., Any], rule: str, **options: Any) -> FlaskClient:
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(BatchSpanProcessor(NullSpans()))
    app = Flask("bench")
    app.add_url_rule(rule, "view", view)
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=MeterProvider(), **options)
    return app.test_client()


def measure(cases: dict[str, tuple[FlaskClient, str]]) -> dict[str, float]:
    for test_client, path in cases.values():
        for _ in range(300):
            test_client.get(path, buffered=True)
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, (test_client, path) in cases.items():
            started = time.perf_counter()
            for _ in range(REQUESTS):
                test_client.get(path, buffered=True)
            rounds[name].append((time.perf_counter() - started) / REQUESTS * 1e6)
    return {name: statistics.median(values) for name, values in rounds.items()}


def kept_requests() -> None:
    def unavailable() -> tuple[str, int]:
        return "no", 503

    cases = {
        "unsampled 503, keeping off": (
            client(ALWAYS_OFF, unavailable, "/e", keep_errors=False),
            "/e",
        ),
        "unsampled 503, kept": (client(ALWAYS_OFF, unavailable, "/e"), "/e"),
        "sampled 503": (client(ALWAYS_ON, unavailable, "/e"), "/e"),
    }
    for name, us in measure(cases).items():
        print(f"{name}: {us:.1f} us/request")


def log_lines() -> None:
    settings, _ = resolve_settings({})
    provider = LoggerProvider()
    provider.add_log_record_processor(
        RequestLogProcessor(
            RedactingLogRecordProcessor(
                BatchLogRecordProcessor(NullLogs()), build_redactor(settings)
            ),
            settings.log_records_per_request,
        )
    )
    log = logging.getLogger("bench")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))

    def lines(n: int) -> str:
        for i in range(n):
            log.info("order %d shipped to %s", i, "customer-42")
        return "ok"

    test_client = client(ALWAYS_OFF, lines, "/n/<int:n>")
    results = measure({f"{n} lines": (test_client, f"/n/{n}") for n in (0, 1, 10)})
    base = results["0 lines"]
    for n in (0, 1, 10):
        us = results[f"{n} lines"]
        per_line = f", {(us - base) / n:.1f} us per line" if n else ""
        print(f"{n:2d} log lines: {us:.1f} us/request{per_line}")


if __name__ == "__main__":
    kept_requests()
    log_lines()
