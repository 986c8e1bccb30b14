"""The Flask extension: spans, metrics, sizes, routes, errors, and never breaking a request."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, abort, stream_with_context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from werkzeug.test import EnvironBuilder, run_wsgi_app

from otel_flask_metrics import FlaskMetrics
from otel_flask_metrics.extension import EXTENSION_KEY
from otel_flask_metrics.metrics import DURATION_BUCKETS
from tests.conftest import metric_points


def make_app() -> Flask:
    app = Flask(__name__)

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.post("/echo")
    def echo() -> bytes:
        from flask import request

        return request.get_data()

    @app.get("/stream")
    def stream() -> Response:
        def body() -> Iterator[bytes]:
            yield b"a" * 100
            yield b""
            yield b"b" * 23

        return Response(stream_with_context(body()))

    @app.get("/empty")
    def empty() -> tuple[str, int]:
        return "", 204

    @app.get("/missing")
    def missing() -> None:
        abort(404)

    @app.get("/boom")
    def boom() -> None:
        raise ValueError("boom")

    return app


@pytest.fixture
def app(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Flask:
    app = make_app()
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    return app


def only_span(exporter: InMemorySpanExporter) -> Any:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def test_server_span_has_route_status_sizes(app: Flask, span_exporter: InMemorySpanExporter) -> None:
    response = app.test_client().get("/users/7?x=1", buffered=True)
    assert response.status_code == 200
    span = only_span(span_exporter)
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /users/<int:user_id>"
    attrs = span.attributes
    assert attrs["http.route"] == "/users/<int:user_id>"
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.response.status_code"] == 200
    assert attrs["url.path"] == "/users/7"
    assert attrs["url.query"] == "x=1"
    assert attrs["url.scheme"] == "http"
    assert "http.request.body.size" not in attrs, "a request without a body has no size"
    assert attrs["http.response.body.size"] == len(response.data)
    assert attrs["client.address"] == "127.0.0.1"
    assert "error.type" not in attrs


def test_metrics_use_route_template_and_semconv_buckets(
    app: Flask, metric_reader: InMemoryMetricReader
) -> None:
    client = app.test_client()
    for user_id in (1, 2, 3):
        client.get(f"/users/{user_id}", buffered=True)
    points = metric_points(metric_reader, "http.server.request.duration")
    assert len(points) == 1, "raw paths never become separate series"
    point = points[0]
    assert point.count == 3
    assert dict(point.attributes) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "http.route": "/users/<int:user_id>",
    }
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    active = metric_points(metric_reader, "http.server.active_requests")
    assert [p.value for p in active] == [0]


def test_unmatched_request_has_no_route_and_no_raw_path_label(
    app: Flask, metric_reader: InMemoryMetricReader, span_exporter: InMemorySpanExporter
) -> None:
    client = app.test_client()
    for path in ("/a", "/b", "/c/d"):
        assert client.get(path, buffered=True).status_code == 404
    (point,) = metric_points(metric_reader, "http.server.request.duration")
    assert point.count == 3
    assert "http.route" not in point.attributes
    assert all(span.name == "GET" for span in span_exporter.get_finished_spans())


def test_streamed_response_counted_as_it_flows_and_duration_covers_it(
    app: Flask, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    environ = EnvironBuilder(path="/stream").get_environ()
    body, status, _headers = run_wsgi_app(app.wsgi_app, environ)
    chunks = iter(body)
    assert next(chunks) == b"a" * 100
    assert span_exporter.get_finished_spans() == (), "the span is open while the body flows"
    assert b"".join(chunks) == b"b" * 23
    body.close()  # type: ignore[attr-defined]
    span = only_span(span_exporter)
    assert span.attributes["http.response.body.size"] == 123
    (point,) = metric_points(metric_reader, "http.server.response.body.size")
    assert (point.count, point.sum) == (1, 123)


def test_client_disconnect_mid_stream_records_what_was_sent(
    app: Flask, span_exporter: InMemorySpanExporter
) -> None:
    environ = EnvironBuilder(path="/stream").get_environ()
    body, _status, _headers = run_wsgi_app(app.wsgi_app, environ)
    chunks = iter(body)
    next(chunks)  # the server got the first chunk; its write fails: it closes
    body.close()  # type: ignore[attr-defined]
    span = only_span(span_exporter)
    assert span.attributes["http.response.body.size"] == 0


def test_request_body_sizes_with_and_without_content_length(
    app: Flask, span_exporter: InMemorySpanExporter
) -> None:
    client = app.test_client()
    assert client.post("/echo", data=b"z" * 321, buffered=True).data == b"z" * 321
    # A chunked body: no Content-Length, the server marks the input terminated.
    import io

    environ = EnvironBuilder(
        path="/echo", method="POST", input_stream=io.BytesIO(b"q" * 999)
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    body, _status, _headers = run_wsgi_app(app.wsgi_app, environ, buffered=True)
    assert b"".join(body) == b"q" * 999
    sizes = [s.attributes["http.request.body.size"] for s in span_exporter.get_finished_spans()]
    assert sizes == [321, 999]



def test_request_size_measured_only_for_requests_with_a_body(
    app: Flask, metric_reader: InMemoryMetricReader
) -> None:
    client = app.test_client()
    client.get("/users/1", buffered=True)
    client.post("/echo", data=b"", buffered=True)
    client.post("/echo", data=b"z" * 40, buffered=True)
    (point,) = metric_points(metric_reader, "http.server.request.body.size")
    assert (point.count, point.sum) == (1, 40), "bodiless requests are not sized"
    responses = metric_points(metric_reader, "http.server.response.body.size")
    assert sum(p.count for p in responses) == 3, "every response is sized"


def test_exemplars_only_on_the_duration_and_only_for_sampled_spans(
    app: Flask, metric_reader: InMemoryMetricReader, span_exporter: InMemorySpanExporter
) -> None:
    app.test_client().post("/echo", data=b"abc", buffered=True)
    trace_id = only_span(span_exporter).get_span_context().trace_id
    (duration,) = metric_points(metric_reader, "http.server.request.duration")
    assert [e.trace_id for e in duration.exemplars] == [trace_id]
    for name in ("http.server.request.body.size", "http.server.response.body.size"):
        (point,) = metric_points(metric_reader, name)
        assert not [e for e in point.exemplars if e.trace_id], name

@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("HEAD", "/users/1", 200), ("GET", "/empty", 204), ("OPTIONS", "/users/1", 200)],
)
def test_bodiless_responses_have_size_zero(
    app: Flask, span_exporter: InMemorySpanExporter, method: str, path: str, status: int
) -> None:
    response = app.test_client().open(path, method=method, buffered=True)
    assert response.status_code == status
    span = only_span(span_exporter)
    assert span.attributes["http.response.body.size"] == len(response.data)
    if method != "OPTIONS":
        assert span.attributes["http.response.body.size"] == 0


def test_304_has_size_zero(app: Flask, span_exporter: InMemorySpanExporter) -> None:
    @app.get("/cached")
    def cached() -> Response:
        response = Response("hello")
        response.set_etag("v1")
        return response.make_conditional(__import__("flask").request)

    response = app.test_client().get("/cached", headers={"If-None-Match": '"v1"'}, buffered=True)
    assert response.status_code == 304
    assert only_span(span_exporter).attributes["http.response.body.size"] == 0


def test_unhandled_exception_sets_error_type_and_event(
    app: Flask, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.CRITICAL, logger="flask.app"):
        assert app.test_client().get("/boom", buffered=True).status_code == 500
    span = only_span(span_exporter)
    assert span.attributes["error.type"] == "ValueError"
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    assert span.events[0].attributes["exception.message"] == "boom"
    (point,) = metric_points(metric_reader, "http.server.request.duration")
    assert point.attributes["error.type"] == "ValueError"
    assert point.attributes["http.response.status_code"] == 500


def test_client_errors_are_not_server_errors(app: Flask, span_exporter: InMemorySpanExporter) -> None:
    assert app.test_client().get("/missing", buffered=True).status_code == 404
    span = only_span(span_exporter)
    assert "error.type" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET


def test_unknown_method_is_folded(app: Flask, metric_reader: InMemoryMetricReader) -> None:
    app.test_client().open("/users/1", method="BREW", buffered=True)
    (point,) = metric_points(metric_reader, "http.server.request.duration")
    assert point.attributes["http.request.method"] == "_OTHER"


def test_incoming_trace_context_is_continued(app: Flask, span_exporter: InMemorySpanExporter) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    app.test_client().get(
        "/users/1", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}, buffered=True
    )
    span = only_span(span_exporter)
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and span.parent.is_remote


def test_spans_created_in_views_are_children(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, span_exporter: InMemorySpanExporter
) -> None:
    app = make_app()

    @app.get("/work")
    def work() -> str:
        with tracer_provider.get_tracer("app").start_as_current_span("inner"):
            return "done"

    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    app.test_client().get("/work", buffered=True)
    inner, server = span_exporter.get_finished_spans()
    assert inner.parent is not None and inner.parent.span_id == server.context.span_id


def test_excluded_urls_are_not_recorded(
    monkeypatch: pytest.MonkeyPatch, tracer_provider: TracerProvider,
    meter_provider: MeterProvider, span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "/users/.*")
    app = make_app()
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert app.test_client().get("/users/1", buffered=True).status_code == 200
    assert span_exporter.get_finished_spans() == ()
    assert metric_points(metric_reader, "http.server.request.duration") == []


def test_disabled_registers_nothing(
    monkeypatch: pytest.MonkeyPatch, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    monkeypatch.setenv("OTEL_FLASK_METRICS_DISABLED", "true")
    app = make_app()
    original = app.wsgi_app
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert app.wsgi_app == original
    assert EXTENSION_KEY not in app.extensions


def test_second_init_app_warns_and_does_nothing(
    app: Flask, tracer_provider: TracerProvider, meter_provider: MeterProvider,
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        FlaskMetrics(tracer_provider=tracer_provider, meter_provider=meter_provider).init_app(app)
    assert "already set up" in caplog.text
    app.test_client().get("/users/1", buffered=True)
    assert len(span_exporter.get_finished_spans()) == 1


def test_factory_pattern_two_apps_in_one_process(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, span_exporter: InMemorySpanExporter
) -> None:
    extension = FlaskMetrics(tracer_provider=tracer_provider, meter_provider=meter_provider)
    first, second = make_app(), make_app()
    extension.init_app(first)
    extension.init_app(second)
    first.test_client().get("/users/1", buffered=True)
    second.test_client().get("/users/2", buffered=True)
    assert len(span_exporter.get_finished_spans()) == 2
    assert not hasattr(extension, "app"), "no app is stored on the extension"


def test_uninstrument_app_restores_everything(
    app: Flask, span_exporter: InMemorySpanExporter
) -> None:
    FlaskMetrics.uninstrument_app(app)
    assert EXTENSION_KEY not in app.extensions
    assert app.test_client().get("/users/1", buffered=True).status_code == 200
    assert span_exporter.get_finished_spans() == ()


def _raw_response(app: Flask, path: str, method: str = "GET", data: bytes | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
    environ = EnvironBuilder(path=path, method=method, data=data).get_environ()
    body, status, headers = run_wsgi_app(app.wsgi_app, environ, buffered=True)
    return status, list(headers.items()), b"".join(body)


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("GET", "/users/1", None),
        ("GET", "/stream", None),
        ("POST", "/echo", b"\xff\xfe invalid utf-8 \x00"),
        ("GET", "/nope", None),
        ("HEAD", "/users/1", None),
        ("GET", "/users/1?q=%ff%fe", None),
    ],
)
def test_responses_are_byte_identical_with_instrumentation(
    tracer_provider: TracerProvider, meter_provider: MeterProvider,
    method: str, path: str, data: bytes | None,
) -> None:
    bare = make_app()
    instrumented = make_app()
    FlaskMetrics(instrumented, tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert _raw_response(instrumented, path, method, data) == _raw_response(bare, path, method, data)


def test_a_failure_inside_our_code_never_reaches_the_app(
    app: Flask, monkeypatch: pytest.MonkeyPatch, span_exporter: InMemorySpanExporter
) -> None:
    state = app.extensions[EXTENSION_KEY]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("instrument failure")

    monkeypatch.setattr(state.instruments.duration, "record", broken)
    monkeypatch.setattr(state.consumers, "resolve", broken)
    response = app.test_client().get("/users/3", buffered=True)
    assert (response.status_code, response.json) == (200, {"id": 3})
    assert len(span_exporter.get_finished_spans()) == 1, "the span still ends"
    assert not state.instruments.active_requests.in_flight, "and the request is no longer in flight"


def test_a_failure_before_the_request_falls_back_to_the_bare_app(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = app.extensions[EXTENSION_KEY]
    monkeypatch.setattr(state, "tracer", None)  # start_span now raises AttributeError
    response = app.test_client().get("/users/4", buffered=True)
    assert (response.status_code, response.json) == (200, {"id": 4})


def test_active_requests_counts_a_streaming_response_until_it_ends(
    app: Flask, metric_reader: InMemoryMetricReader
) -> None:
    environ = EnvironBuilder(path="/stream").get_environ()
    body, _status, _headers = run_wsgi_app(app.wsgi_app, environ)
    chunks = iter(body)
    next(chunks)
    assert [p.value for p in metric_points(metric_reader, "http.server.active_requests")] == [1]
    list(chunks)
    body.close()  # type: ignore[attr-defined]
    assert [p.value for p in metric_points(metric_reader, "http.server.active_requests")] == [0]


@pytest.mark.parametrize(
    ("host", "address", "port"),
    [
        ("api.example.com:8443", "api.example.com", 8443),
        ("api.example.com", "api.example.com", None),
        ("[::1]:8080", "[::1]", 8080),
        ("127.0.0.1:99999999999999999999999", "127.0.0.1", None),
        ("127.0.0.1:70000", "127.0.0.1", None),
        ("127.0.0.1:\u00b2\u00b3", "127.0.0.1:\u00b2\u00b3", None),
    ],
)
def test_hostile_host_headers_never_break_the_span(
    app: Flask, span_exporter: InMemorySpanExporter, host: str, address: str, port: int | None
) -> None:
    # Built by hand: werkzeug's client refuses to send such Host headers.
    environ = EnvironBuilder(path="/users/1").get_environ()
    environ["HTTP_HOST"] = host
    _body, status, _headers = run_wsgi_app(app.wsgi_app, environ, buffered=True)
    assert status.startswith("200")
    attributes = only_span(span_exporter).attributes
    assert attributes["http.response.status_code"] == 200, "the span keeps its core attributes"
    assert attributes["server.address"] == address
    assert attributes.get("server.port") == port


@pytest.mark.parametrize("length", ["-5", "abc", "\u00b2"])
def test_an_invalid_content_length_is_counted_as_read(
    app: Flask, span_exporter: InMemorySpanExporter, length: str
) -> None:
    import io

    environ = EnvironBuilder(path="/echo", method="POST", input_stream=io.BytesIO(b"abc")).get_environ()
    environ["CONTENT_LENGTH"] = length
    environ["wsgi.input_terminated"] = True
    run_wsgi_app(app.wsgi_app, environ, buffered=True)
    assert only_span(span_exporter).attributes["http.request.body.size"] >= 0
