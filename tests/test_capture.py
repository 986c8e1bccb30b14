"""Opt-in header and body capture, the per-request opt-out and allowed hosts."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, request
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.test import EnvironBuilder, run_wsgi_app

from otel_flask_metrics import FlaskMetrics
from otel_flask_metrics.config import resolve_settings
from otel_flask_metrics.distro import build_redactor
from otel_flask_metrics.redaction import RedactingSpanProcessor
from tests.conftest import metric_points


def opted_out(req: Any) -> bool:
    return req.cookies.get("dnt") == "1"


@pytest.fixture
def redacted_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def redacting_provider(redacted_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """Spans go through redaction before the exporter, as the distro wires it."""
    settings, _ = resolve_settings({})
    provider = TracerProvider()
    provider.add_span_processor(
        RedactingSpanProcessor(SimpleSpanProcessor(redacted_exporter), build_redactor(settings))
    )
    yield provider
    provider.shutdown()


def make_app(tracer_provider: TracerProvider, meter_provider: MeterProvider, **options: Any) -> Flask:
    app = Flask(__name__)

    @app.post("/login")
    def login() -> dict[str, Any]:
        body = request.get_json(silent=True) or {}
        return {"user": body.get("user"), "session_token": "tok-abcdefgh12345678"}

    @app.post("/form")
    def form() -> str:
        return "ok " + request.form.get("name", "")

    @app.post("/binary")
    def binary() -> Response:
        return Response(bytes(range(256)), mimetype="application/octet-stream")

    @app.get("/stream")
    def stream() -> Response:
        def body() -> Iterator[str]:
            for i in range(50):
                yield f"line {i:03d}\n"

        return Response(body(), mimetype="text/plain")

    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider, **options)
    return app


def only(exporter: InMemorySpanExporter) -> Any:
    (span,) = exporter.get_finished_spans()
    return span


def test_nothing_is_captured_by_default(
    redacting_provider: TracerProvider, meter_provider: MeterProvider,
    redacted_exporter: InMemorySpanExporter,
) -> None:
    app = make_app(redacting_provider, meter_provider)
    app.test_client().post("/login", json={"user": "ann", "password": "pw-123456"}, buffered=True)
    attributes = only(redacted_exporter).attributes
    assert not [k for k in attributes if k.startswith(("http.request.body.content", "http.response.body.content"))]
    assert not [k for k in attributes if k.startswith("http.request.header.") and k != "http.request.header.referer"]


def test_json_bodies_are_captured_and_redacted(
    redacting_provider: TracerProvider, meter_provider: MeterProvider,
    redacted_exporter: InMemorySpanExporter,
) -> None:
    app = make_app(redacting_provider, meter_provider, capture_bodies=True)
    response = app.test_client().post(
        "/login", json={"user": "ann", "password": "pw-123456", "nested": {"api_key": "k-987654321"}},
        buffered=True,
    )
    assert response.json == {"user": "ann", "session_token": "tok-abcdefgh12345678"}
    attributes = only(redacted_exporter).attributes
    request_body = json.loads(attributes["http.request.body.content"])
    assert request_body["user"] == "ann"
    assert request_body["password"] == "[REDACTED]"
    assert request_body["nested"]["api_key"] == "[REDACTED]"
    response_body = json.loads(attributes["http.response.body.content"])
    assert response_body["user"] == "ann"
    assert response_body["session_token"] == "[REDACTED]"
    exported = json.dumps(dict(attributes))
    for secret in ("pw-123456", "k-987654321", "tok-abcdefgh12345678"):
        assert secret not in exported


def test_form_bodies_are_redacted_and_binary_is_never_captured(
    redacting_provider: TracerProvider, meter_provider: MeterProvider,
    redacted_exporter: InMemorySpanExporter,
) -> None:
    app = make_app(redacting_provider, meter_provider, capture_bodies=True)
    client = app.test_client()
    assert client.post("/form", data={"name": "bob", "password": "hunter2-secret"}, buffered=True).data == b"ok bob"
    client.post("/binary", data=b"\x00\x01\xff" * 10, content_type="application/octet-stream", buffered=True)
    form_span, binary_span = redacted_exporter.get_finished_spans()
    body = form_span.attributes["http.request.body.content"]
    assert "name=bob" in body and "hunter2-secret" not in body
    assert form_span.attributes["http.response.body.content"] == "ok bob"
    assert "http.request.body.content" not in binary_span.attributes
    assert "http.response.body.content" not in binary_span.attributes


def test_captured_bodies_are_capped_and_streams_are_not_buffered(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, span_exporter: InMemorySpanExporter,
) -> None:
    app = make_app(tracer_provider, meter_provider, capture_bodies=True, capture_body_max_bytes=20)
    environ = EnvironBuilder(path="/stream").get_environ()
    body, _status, _headers = run_wsgi_app(app.wsgi_app, environ)
    chunks = iter(body)
    assert next(chunks) == b"line 000\n"  # handed over at once, not after the whole body
    rest = b"".join(chunks)
    body.close()  # type: ignore[attr-defined]
    span = only(span_exporter)
    assert span.attributes["http.response.body.content"] == "line 000\nline 001\nli"
    assert span.attributes["http.response.body.size"] == 9 + len(rest)


def test_invalid_utf8_and_invalid_json_are_served_unchanged(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, span_exporter: InMemorySpanExporter,
) -> None:
    app = make_app(tracer_provider, meter_provider, capture_bodies=True)
    bare = Flask(__name__)
    bare.post("/login")(lambda: {"user": None, "session_token": "tok-abcdefgh12345678"})
    raw = b'{"user": "\xff\xfe broken'
    instrumented = app.test_client().post("/login", data=raw, content_type="application/json", buffered=True)
    assert instrumented.status_code == 200
    assert "\ufffd" in only(span_exporter).attributes["http.request.body.content"]


def test_standard_header_capture_variables_are_honoured(
    monkeypatch: pytest.MonkeyPatch, redacting_provider: TracerProvider,
    meter_provider: MeterProvider, redacted_exporter: InMemorySpanExporter,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-request-id,authorization,x-tenant-.*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "content-type,set-cookie")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "x-tenant-secret")
    app = make_app(redacting_provider, meter_provider)

    @app.get("/cookie")
    def cookie() -> Response:
        response = Response("hi")
        response.set_cookie("session", "sess-verysecret")
        return response

    app.test_client().get(
        "/cookie",
        headers={
            "X-Request-Id": "r-1", "Authorization": "Bearer abcdefghijklmnop",
            "X-Tenant-Name": "acme", "X-Tenant-Secret": "s-1",
        },
        buffered=True,
    )
    attributes = only(redacted_exporter).attributes
    assert attributes["http.request.header.x-request-id"] == ("r-1",)
    assert attributes["http.request.header.x-tenant-name"] == ("acme",)
    assert attributes["http.request.header.x-tenant-secret"] == ("[REDACTED]",)
    assert attributes["http.request.header.authorization"] == ("[REDACTED]",)
    assert attributes["http.response.header.set-cookie"] == ("[REDACTED]",)
    assert attributes["http.response.header.content-type"] == ("text/html; charset=utf-8",)


def test_skip_callback_keeps_the_count_but_not_the_details(
    tracer_provider: TracerProvider, meter_provider: MeterProvider,
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader,
) -> None:
    app = make_app(
        tracer_provider, meter_provider, capture_bodies=True, skip_callback=opted_out,
        consumer_header="X-API-Key",
    )
    client = app.test_client()
    client.set_cookie("dnt", "1")
    client.post(
        "/login?ref=mail", json={"user": "ann"}, headers={"X-API-Key": "k1", "User-Agent": "curl/8"},
        buffered=True,
    )
    span = only(span_exporter)
    for key in ("api.consumer.id", "url.query", "client.address", "user_agent.original", "http.request.body.content"):
        assert key not in span.attributes, key
    assert span.attributes["http.route"] == "/login"
    (point,) = metric_points(metric_reader, "http.server.request.duration")
    assert point.count == 1 and "api.consumer.id" not in point.attributes


def test_skip_callback_by_variable(
    monkeypatch: pytest.MonkeyPatch, tracer_provider: TracerProvider,
    meter_provider: MeterProvider, span_exporter: InMemorySpanExporter,
) -> None:
    monkeypatch.setenv("OTEL_FLASK_METRICS_SKIP_CALLBACK", "tests.test_capture:opted_out")
    app = make_app(tracer_provider, meter_provider)
    client = app.test_client()
    client.post("/login?a=1", json={}, buffered=True)
    client.set_cookie("dnt", "1")
    client.post("/login?a=1", json={}, buffered=True)
    recorded, skipped = span_exporter.get_finished_spans()
    assert "url.query" in recorded.attributes and "url.query" not in skipped.attributes


def test_allowed_hosts_record_only_those_hosts(
    tracer_provider: TracerProvider, meter_provider: MeterProvider,
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader,
) -> None:
    app = make_app(tracer_provider, meter_provider, allowed_hosts=("api.example.com", "*.example.org"))
    client = app.test_client()
    for host in ("api.example.com", "eu.example.org:8443", "evil.example.net", "example.org"):
        assert client.post("/form", data={"name": "x"}, headers={"Host": host}, buffered=True).status_code == 200
    assert len(span_exporter.get_finished_spans()) == 2
    (point,) = metric_points(metric_reader, "http.server.request.duration")
    assert point.count == 2


def test_chunked_request_body_is_captured_as_read(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, span_exporter: InMemorySpanExporter,
) -> None:
    app = make_app(tracer_provider, meter_provider, capture_bodies=True)
    payload = json.dumps({"user": "zed"}).encode()
    environ = EnvironBuilder(
        path="/login", method="POST", input_stream=io.BytesIO(payload), content_type="application/json"
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    body, _status, _headers = run_wsgi_app(app.wsgi_app, environ, buffered=True)
    assert json.loads(b"".join(body))["user"] == "zed"
    span = only(span_exporter)
    assert span.attributes["http.request.body.content"] == payload.decode()
    assert span.attributes["http.request.body.size"] == len(payload)
