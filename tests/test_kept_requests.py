"""Failed and slow requests kept after the response, whatever the head sampler decided."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, request
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBasedTraceIdRatio, Sampler
from opentelemetry.trace import SpanKind, StatusCode

from otel_flask_metrics import FlaskMetrics
from otel_flask_metrics.config import resolve_settings
from otel_flask_metrics.consumers import DEFAULT_HASH_KEY
from otel_flask_metrics.distro import build_redactor
from otel_flask_metrics.redaction import RedactingSpanProcessor, pseudonymize
from tests.conftest import metric_points

SECRET_PASSWORD = "hunter2-Sw0rdfish"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"


def make_app(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, **options: Any
) -> tuple[Flask, list[int]]:
    """The app, and the span ids its views saw as current (what their logs would carry)."""
    app = Flask(__name__)
    seen: list[int] = []

    @app.before_request
    def note_span() -> None:
        seen.append(trace.get_current_span().get_span_context().span_id)

    @app.get("/ok/<int:n>")
    def ok(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/missing")
    def missing() -> tuple[str, int]:
        return "no", 404

    @app.get("/unavailable")
    def unavailable() -> tuple[str, int]:
        return "later", 503

    @app.post("/boom")
    def boom() -> None:
        request.get_data()
        raise ValueError("boom")

    @app.get("/slow")
    def slow() -> str:
        time.sleep(0.06)  # the request being slow is what is tested
        return "slow"

    @app.get("/stream")
    def stream() -> Response:
        def body() -> Iterator[bytes]:
            yield b"x" * 10
            raise RuntimeError("mid-stream")

        return Response(body())

    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider, **options)
    return app, seen


def provider_with(sampler: Sampler, exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture(params=["always_off", "parentbased_traceidratio_0.0"])
def unsampled(request: pytest.FixtureRequest, span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """A provider whose head sampler samples nothing."""
    sampler = ALWAYS_OFF if request.param == "always_off" else ParentBasedTraceIdRatio(0.0)
    provider = provider_with(sampler, span_exporter)
    yield provider
    provider.shutdown()


def by_route(exporter: InMemorySpanExporter) -> dict[str, Any]:
    spans = exporter.get_finished_spans()
    routes = [s.attributes.get("http.route") for s in spans]
    assert len(set(routes)) == len(routes), routes
    return {s.attributes.get("http.route"): s for s in spans}


def test_errors_are_kept_and_nothing_else(
    unsampled: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = make_app(unsampled, meter_provider)
    client = app.test_client()
    for n in range(5):
        assert client.get(f"/ok/{n}", buffered=True).status_code == 200
    assert client.get("/missing", buffered=True).status_code == 404
    assert client.get("/unavailable", buffered=True).status_code == 503
    with caplog.at_level(logging.CRITICAL, logger="flask.app"):
        assert client.post("/boom", data=b"12345", buffered=True).status_code == 500

    spans = by_route(span_exporter)
    assert set(spans) == {"/unavailable", "/boom"}
    boom = spans["/boom"]
    assert boom.name == "POST /boom"
    assert boom.kind is SpanKind.SERVER
    assert boom.attributes["http.response.status_code"] == 500
    assert boom.attributes["error.type"] == "ValueError"
    assert boom.attributes["http.request.body.size"] == 5
    assert boom.attributes["http.response.body.size"] > 0
    assert boom.attributes["url.path"] == "/boom"
    assert boom.status.status_code is StatusCode.ERROR
    assert [e.name for e in boom.events] == ["exception"]
    assert boom.events[0].attributes["exception.message"] == "boom"
    assert boom.events[0].timestamp >= boom.start_time
    assert spans["/unavailable"].attributes["error.type"] == "503"
    for span in spans.values():
        assert span.context.trace_flags.sampled
        assert span.end_time > span.start_time

    # Metrics are unchanged: every request counted once.
    points = metric_points(metric_reader, "http.server.request.duration")
    assert sum(p.count for p in points) == 8


def test_a_kept_span_has_the_ids_the_request_had(
    unsampled: TracerProvider, span_exporter: InMemorySpanExporter, meter_provider: MeterProvider
) -> None:
    """Logs and downstream calls carried these ids while the request ran."""
    app, seen = make_app(unsampled, meter_provider)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent_id = "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-00"}
    assert app.test_client().get("/unavailable", headers=headers, buffered=True).status_code == 503
    (span,) = span_exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and span.parent.is_remote
    assert format(span.parent.span_id, "016x") == parent_id
    assert span.context.span_id == seen[-1] != 0

    # A root request: its own trace id and span id, as the view saw them.
    assert app.test_client().get("/unavailable", buffered=True).status_code == 503
    root = span_exporter.get_finished_spans()[-1]
    assert root.parent is None
    assert root.context.span_id == seen[-1]
    assert root.context.trace_id != int(trace_id, 16)


def test_slow_requests_are_kept_above_the_threshold(
    unsampled: TracerProvider, span_exporter: InMemorySpanExporter, meter_provider: MeterProvider
) -> None:
    app, _ = make_app(unsampled, meter_provider, keep_slow_ms=50)
    client = app.test_client()
    assert client.get("/ok/1", buffered=True).status_code == 200
    assert client.get("/slow", buffered=True).status_code == 200
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes["http.route"] == "/slow"
    assert "error.type" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET
    assert (span.end_time - span.start_time) / 1e9 >= 0.06


def test_keeping_is_configurable(
    span_exporter: InMemorySpanExporter, meter_provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    provider = provider_with(ALWAYS_OFF, span_exporter)
    app, _ = make_app(provider, meter_provider, keep_errors=False)
    with caplog.at_level(logging.CRITICAL, logger="flask.app"):
        assert app.test_client().post("/boom", buffered=True).status_code == 500
    assert app.test_client().get("/slow", buffered=True).status_code == 200
    assert span_exporter.get_finished_spans() == ()


def test_the_settings_read_the_environment() -> None:
    settings, problems = resolve_settings(
        {"OTEL_FLASK_METRICS_KEEP_ERRORS": "false", "OTEL_FLASK_METRICS_KEEP_SLOW_MS": "1500"}
    )
    assert (settings.keep_errors, settings.keep_slow_ms, problems) == (False, 1500, [])
    defaults, _ = resolve_settings({})
    assert (defaults.keep_errors, defaults.keep_slow_ms) == (True, None)
    _, problems = resolve_settings({"OTEL_FLASK_METRICS_KEEP_SLOW_MS": "1.5s"})
    assert [str(p) for p in problems] == [
        "OTEL_FLASK_METRICS_KEEP_SLOW_MS='1.5s': expected a positive integer; "
        "using the default None instead"
    ]


def test_sampled_errors_are_exported_once(
    span_exporter: InMemorySpanExporter, meter_provider: MeterProvider
) -> None:
    provider = provider_with(ALWAYS_ON, span_exporter)
    app, _ = make_app(provider, meter_provider, keep_slow_ms=1)
    assert app.test_client().get("/unavailable", buffered=True).status_code == 503
    assert app.test_client().get("/slow", buffered=True).status_code == 200
    assert sorted(s.attributes["http.route"] for s in span_exporter.get_finished_spans()) == [
        "/slow",
        "/unavailable",
    ]


def test_an_error_mid_stream_is_kept_when_the_body_ends(
    unsampled: TracerProvider, span_exporter: InMemorySpanExporter, meter_provider: MeterProvider
) -> None:
    app, _ = make_app(unsampled, meter_provider)
    with pytest.raises(RuntimeError):
        app.test_client().get("/stream", buffered=True)
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes["http.route"] == "/stream"
    assert span.attributes["http.response.body.size"] == 10


def test_kept_requests_carry_consumer_captures_and_an_exemplar_all_redacted(
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "authorization,x-request-id"
    )
    settings, _ = resolve_settings({})
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(0.1))
    provider.add_span_processor(
        RedactingSpanProcessor(SimpleSpanProcessor(span_exporter), build_redactor(settings))
    )
    app, _ = make_app(
        provider, meter_provider, consumer_header="X-API-Key", capture_bodies=True
    )
    body = json.dumps({"user": "ada", "password": SECRET_PASSWORD}).encode()
    # The trace id makes the ratio sampler say no: 0xfff... is above any 10 % bound.
    unsampled_parent = "00-ffffffffffffffffffffffffffffffff-00f067aa0ba902b7-00"
    with caplog.at_level(logging.CRITICAL, logger="flask.app"):
        response = app.test_client().post(
            "/boom",
            data=body,
            content_type="application/json",
            headers={
                "X-API-Key": "key-of-acme",
                "Authorization": BEARER,
                "X-Request-Id": "r-42",
                "traceparent": unsampled_parent,
            },
            buffered=True,
        )
    assert response.status_code == 500
    (span,) = span_exporter.get_finished_spans()
    attributes = dict(span.attributes)
    # Pseudonymised, never the key.
    assert attributes["api.consumer.id"] == pseudonymize("key-of-acme", DEFAULT_HASH_KEY)
    assert attributes["http.request.header.x-request-id"] == ("r-42",)
    exported = json.dumps(attributes, default=str)
    for secret in (SECRET_PASSWORD, BEARER, "eyJhbGciOiJIUzI1NiJ9", "key-of-acme"):
        assert secret not in exported
    assert attributes["http.request.body.content"] == '{"user": "ada", "password": "[REDACTED]"}'
    assert attributes["http.request.header.authorization"] == ("[REDACTED]",)

    (point,) = metric_points(metric_reader, "http.server.request.duration")
    assert [e.trace_id for e in point.exemplars] == [span.context.trace_id]


def test_no_sdk_tracer_means_nothing_kept_and_nothing_broken(
    meter_provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_app(trace.NoOpTracerProvider(), meter_provider)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="otel_flask_metrics.kept_requests"):
        assert app.test_client().get("/unavailable", buffered=True).status_code == 503
        assert app.test_client().get("/unavailable", buffered=True).status_code == 503
    assert len([r for r in caplog.records if "not kept" in r.getMessage()]) == 1


def test_a_disabled_request_tracer_keeps_nothing(
    span_exporter: InMemorySpanExporter, meter_provider: MeterProvider
) -> None:
    """No ids to keep under: never a span with all-zero ids."""
    from opentelemetry.sdk.trace import _TracerConfig

    provider = TracerProvider(
        sampler=ALWAYS_OFF, _tracer_configurator=lambda scope: _TracerConfig(False)
    )
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    app, _ = make_app(provider, meter_provider)
    assert app.test_client().get("/unavailable", buffered=True).status_code == 503
    assert span_exporter.get_finished_spans() == ()
