"""The app's log lines: tied to their request (ids, route, consumer), capped, redacted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, g
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from otel_flask_metrics import FlaskMetrics
from otel_flask_metrics.config import resolve_settings
from otel_flask_metrics.distro import build_redactor
from otel_flask_metrics.redaction import RedactingLogRecordProcessor
from otel_flask_metrics.request_logs import RequestLogProcessor

CARD = "4111 1111 1111 1111"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"
PASSWORD = "hunter2-Sw0rdfish"
CAP = 5

app_logger = logging.getLogger("tests.request_logs.app")


@pytest.fixture
def log_exporter() -> InMemoryLogRecordExporter:
    return InMemoryLogRecordExporter()


@pytest.fixture
def handler(log_exporter: InMemoryLogRecordExporter) -> Iterator[LoggingHandler]:
    """The chain the distro builds, behind OpenTelemetry's handler on one logger."""
    settings, _ = resolve_settings({})
    provider = LoggerProvider()
    provider.add_log_record_processor(
        RequestLogProcessor(
            RedactingLogRecordProcessor(
                SimpleLogRecordProcessor(log_exporter), build_redactor(settings)
            ),
            CAP,
        )
    )
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    app_logger.addHandler(handler)
    app_logger.setLevel(logging.DEBUG)
    # Not to a root handler another test's configure() left behind.
    app_logger.propagate = False
    yield handler
    app_logger.removeHandler(handler)
    provider.shutdown()


def two_exporters_provider(
    first: InMemoryLogRecordExporter, second: InMemoryLogRecordExporter
) -> LoggerProvider:
    """As the distro builds it for OTEL_LOGS_EXPORTER=otlp,console: a chain per exporter."""
    provider = LoggerProvider()
    for exporter in (first, second):
        provider.add_log_record_processor(
            RequestLogProcessor(SimpleLogRecordProcessor(exporter), CAP)
        )
    return provider


def make_app(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Flask:
    app = Flask(__name__)

    @app.get("/pay/<int:order>")
    def pay(order: int) -> dict[str, int]:
        g.consumer_identifier = "acme"
        app_logger.info("charging card %s for order %d", CARD, order)
        app_logger.warning("upstream said: %s", f"Authorization: {BEARER}")
        app_logger.debug("not exported: below the handler's level")
        return {"order": order}

    @app.get("/loop")
    def loop() -> str:
        for i in range(CAP + 3):
            app_logger.info("iteration %d", i)
        return "done"

    @app.get("/fail")
    def fail() -> tuple[str, int]:
        try:
            raise ValueError(f"login failed for password={PASSWORD}")
        except ValueError:
            app_logger.exception("could not log in")
        return "no", 503

    FlaskMetrics(
        app,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        log_records_per_request=CAP,
    )
    return app


def exported(exporter: InMemoryLogRecordExporter) -> list[Any]:
    return [r.log_record for r in exporter.get_finished_logs()]


def test_a_requests_lines_carry_its_ids_route_and_consumer_redacted(
    handler: LoggingHandler,
    log_exporter: InMemoryLogRecordExporter,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
) -> None:
    app = make_app(tracer_provider, meter_provider)
    assert app.test_client().get("/pay/7", buffered=True).status_code == 200
    (span,) = span_exporter.get_finished_spans()
    records = exported(log_exporter)
    assert [r.severity_text for r in records] == ["INFO", "WARN"]
    for record in records:
        assert record.trace_id == span.context.trace_id
        assert record.span_id == span.context.span_id
        assert record.attributes["http.route"] == "/pay/<int:order>"
        assert record.attributes["api.consumer.id"] == "acme"
    everything = json.dumps([(r.body, dict(r.attributes)) for r in records], default=str)
    assert CARD not in everything and "eyJhbGciOiJIUzI1NiJ9" not in everything
    assert "for order 7" in records[0].body


def test_lines_outside_a_request_carry_neither_route_nor_consumer(
    handler: LoggingHandler, log_exporter: InMemoryLogRecordExporter
) -> None:
    app_logger.info("worker booted")
    (record,) = exported(log_exporter)
    assert record.body == "worker booted"
    assert "http.route" not in record.attributes
    assert "api.consumer.id" not in record.attributes
    assert record.trace_id in (0, None)


def test_a_looping_request_exports_at_most_the_cap_and_says_how_many_it_dropped(
    handler: LoggingHandler,
    log_exporter: InMemoryLogRecordExporter,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
) -> None:
    app = make_app(tracer_provider, meter_provider)
    client = app.test_client()
    assert client.get("/loop", buffered=True).status_code == 200
    assert client.get("/loop", buffered=True).status_code == 200
    bodies = [r.body for r in exported(log_exporter)]
    assert bodies == [f"iteration {i}" for i in range(CAP)] * 2, "the cap is per request"
    spans = span_exporter.get_finished_spans()
    assert [s.attributes["otel_flask_metrics.log_records.dropped"] for s in spans] == [3, 3]


def test_an_exception_logged_by_an_unsampled_failed_request_is_redacted_and_tied_to_its_kept_span(
    handler: LoggingHandler,
    log_exporter: InMemoryLogRecordExporter,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    app = make_app(provider, meter_provider)
    assert app.test_client().get("/fail", buffered=True).status_code == 503
    (span,) = span_exporter.get_finished_spans()  # kept after the response
    (record,) = exported(log_exporter)
    assert (record.trace_id, record.span_id) == (span.context.trace_id, span.context.span_id)
    assert record.attributes["exception.type"] == "ValueError"
    assert PASSWORD not in json.dumps(dict(record.attributes), default=str)
    assert "could not log in" in record.body


def test_two_exporters_each_get_the_cap_not_half_of_it(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    first, second = InMemoryLogRecordExporter(), InMemoryLogRecordExporter()
    provider = two_exporters_provider(first, second)
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    app_logger.addHandler(handler)
    app_logger.setLevel(logging.INFO)
    app_logger.propagate = False
    try:
        app = make_app(tracer_provider, meter_provider)
        assert app.test_client().get("/loop", buffered=True).status_code == 200
    finally:
        app_logger.removeHandler(handler)
        provider.shutdown()
    assert len(exported(first)) == len(exported(second)) == CAP


calls: list[str] = []


def counting_callback(req: Any) -> str:
    calls.append(req.path)
    return "from-callback"


def test_the_consumer_callback_runs_once_per_request_not_per_line(
    handler: LoggingHandler,
    log_exporter: InMemoryLogRecordExporter,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    calls.clear()
    app = Flask(__name__)

    @app.get("/many")
    def many() -> str:
        for i in range(CAP):
            app_logger.info("line %d", i)
        return "ok"

    FlaskMetrics(
        app,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        consumer_callback=counting_callback,
    )
    assert app.test_client().get("/many", buffered=True).status_code == 200
    assert calls == ["/many"], "after the view, once"
    # Lines written while the view ran: the callback's consumer is not known yet.
    assert all("api.consumer.id" not in r.attributes for r in exported(log_exporter))


def test_a_request_the_skip_callback_may_opt_out_has_no_consumer_on_its_lines(
    handler: LoggingHandler,
    log_exporter: InMemoryLogRecordExporter,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    app = Flask(__name__)

    @app.get("/private")
    def private() -> str:
        app_logger.info("a line")
        return "ok"

    FlaskMetrics(
        app,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        consumer_header="X-API-Key",
        skip_callback=lambda req: True,
    )
    headers = {"X-API-Key": "key-1"}
    assert app.test_client().get("/private", headers=headers, buffered=True).status_code == 200
    (record,) = exported(log_exporter)
    assert "api.consumer.id" not in record.attributes
    assert record.attributes["http.route"] == "/private"


def test_the_span_counts_what_was_dropped_whatever_cap_the_extension_was_given(
    handler: LoggingHandler,
    log_exporter: InMemoryLogRecordExporter,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
) -> None:
    app = Flask(__name__)

    @app.get("/loop")
    def loop() -> str:
        for i in range(CAP + 4):
            app_logger.info("iteration %d", i)
        return "done"

    # The processor's cap (CAP) is what applies; the extension's own differs.
    FlaskMetrics(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider, log_records_per_request=2
    )
    assert app.test_client().get("/loop", buffered=True).status_code == 200
    assert len(exported(log_exporter)) == CAP
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes["otel_flask_metrics.log_records.dropped"] == 4
