"""The WSGI middleware: every request ends exactly once, files keep the server's path, no cycle."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.util import FileWrapper

import pytest
from flask import Flask, Response, send_file, stream_with_context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.test import EnvironBuilder

from otel_flask_metrics import FlaskMetrics
from otel_flask_metrics.extension import EXTENSION_KEY
from otel_flask_metrics.middleware import Middleware
from tests.conftest import metric_points

FILE_SIZE = 300_000  # bytes


def make_app(download: Path) -> Flask:
    app = Flask(__name__)

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.get("/stream")
    def stream() -> Response:
        def body() -> Iterator[bytes]:
            yield b"a" * 100
            yield b"b" * 23

        return Response(stream_with_context(body()))

    @app.get("/download")
    def download_file() -> Response:
        return send_file(download, mimetype="application/octet-stream")

    @app.get("/generated")
    def generated() -> Response:
        def chunks() -> Iterator[bytes]:
            with download.open("rb") as f:
                while chunk := f.read(8192):
                    yield chunk

        return Response(chunks(), mimetype="application/octet-stream")

    return app


@pytest.fixture
def download(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * FILE_SIZE)
    return path


@pytest.fixture
def app(download: Path, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Flask:
    app = make_app(download)
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    return app


@contextmanager
def closing_body(body: Iterable[bytes]) -> Iterator[Iterable[bytes]]:
    try:
        yield body
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def in_flight(app: Flask) -> int:
    return len(app.extensions[EXTENSION_KEY].instruments.active_requests.in_flight)


def durations(reader: InMemoryMetricReader) -> int:
    return sum(p.count for p in metric_points(reader, "http.server.request.duration"))


def start(app: Flask, path: str, **environ: Any) -> tuple[Any, list[Any]]:
    """Call the app as a server does; returns the body and what start_response got."""
    env = EnvironBuilder(path=path).get_environ()
    env.update(environ)
    started: list[Any] = []
    body = app.wsgi_app(env, lambda status, headers, exc_info=None: started.append((status, headers)))
    return body, started


# --- every request ends exactly once -----------------------------------------


def test_a_response_read_but_never_closed_is_recorded(
    app: Flask, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    """The test client reads the body and leaves close() to the caller."""
    client = app.test_client()
    for user_id in (1, 2, 3):
        response = client.get(f"/users/{user_id}")
        assert response.json == {"id": user_id}
    assert len(span_exporter.get_finished_spans()) == 3
    assert durations(metric_reader) == 3
    assert in_flight(app) == 0
    response.close()
    assert durations(metric_reader) == 3, "a late close() does not count it again"
    assert len(span_exporter.get_finished_spans()) == 3


def test_an_exhausted_stream_ends_once_and_covers_the_whole_body(
    app: Flask, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    body, _ = start(app, "/stream")
    chunks = iter(body)
    assert next(chunks) == b"a" * 100
    assert span_exporter.get_finished_spans() == (), "open while the body flows"
    assert in_flight(app) == 1
    # A slow client between two chunks: the span and the duration metric both
    # run to the end of the body, so both include the pause.
    pause = 0.05
    mid_body = time.time_ns()
    time.sleep(pause)
    assert list(chunks) == [b"b" * 23]
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes["http.response.body.size"] == 123
    assert span.end_time is not None and span.end_time >= mid_body + pause * 1e9
    (point,) = metric_points(metric_reader, "http.server.request.duration")
    assert point.sum >= pause
    assert in_flight(app) == 0
    body.close()
    assert len(span_exporter.get_finished_spans()) == 1
    assert durations(metric_reader) == 1


def test_a_response_neither_iterated_nor_closed_leaks_nothing(
    app: Flask, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    body, started = start(app, "/users/5")
    assert started[0][0] == "200 OK"
    assert in_flight(app) == 1
    del body
    assert in_flight(app) == 0, "dropping the body releases the in-flight count"
    (span,) = span_exporter.get_finished_spans()
    assert span.end_time is not None
    assert durations(metric_reader) == 1


def test_closing_without_reading_ends_the_request_once(
    app: Flask, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    body, _ = start(app, "/stream")
    body.close()
    del body
    assert len(span_exporter.get_finished_spans()) == 1
    assert durations(metric_reader) == 1
    assert in_flight(app) == 0


# --- files sent with the server's wsgi.file_wrapper --------------------------


def test_a_server_file_wrapper_is_handed_back_untouched(
    app: Flask, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    """gunicorn and wsgiref send it with sendfile() only if they get their own object."""
    body, started = start(app, "/download", **{"wsgi.file_wrapper": FileWrapper})
    assert type(body) is FileWrapper, "the server's own object, so its zero-copy path applies"
    assert span_exporter.get_finished_spans() == (), "the transfer has not happened yet"
    assert in_flight(app) == 1
    assert sum(len(chunk) for chunk in body) == FILE_SIZE
    body.close()  # the server closes it after sending
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes["http.response.body.size"] == FILE_SIZE
    assert span.attributes["http.response.status_code"] == 200
    (point,) = metric_points(metric_reader, "http.server.response.body.size")
    assert (point.count, point.sum) == (1, FILE_SIZE)
    assert in_flight(app) == 0
    assert dict(started[0][1])["Content-Length"] == str(FILE_SIZE)


def test_a_server_file_object_is_handed_back_and_ends_when_dropped(
    app: Flask, span_exporter: InMemorySpanExporter
) -> None:
    """uWSGI's file_wrapper is a function returning the file itself, compared by identity."""
    returned: list[Any] = []

    def uwsgi_like_file_wrapper(filelike: Any, block_size: int = 8192) -> Any:
        returned.append(filelike)
        return filelike

    body, _ = start(app, "/download", **{"wsgi.file_wrapper": uwsgi_like_file_wrapper})
    assert body is returned[0], "the very object the server's function returned"
    assert span_exporter.get_finished_spans() == ()
    body.close()
    del body, returned
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes["http.response.body.size"] == FILE_SIZE
    assert in_flight(app) == 0


def test_a_file_without_a_server_wrapper_and_a_generator_are_counted_byte_by_byte(
    app: Flask, span_exporter: InMemorySpanExporter
) -> None:
    client = app.test_client()
    for path in ("/download", "/generated"):  # /download: Werkzeug's own FileWrapper
        with client.get(path) as response:
            assert len(response.data) == FILE_SIZE
    sizes = [s.attributes["http.response.body.size"] for s in span_exporter.get_finished_spans()]
    assert sizes == [FILE_SIZE, FILE_SIZE]


def test_a_client_leaving_a_generated_download_records_what_was_sent(
    app: Flask, span_exporter: InMemorySpanExporter
) -> None:
    body, _ = start(app, "/generated", **{"wsgi.file_wrapper": FileWrapper})
    chunks = iter(body)
    next(chunks)
    next(chunks)  # the first chunk was taken; the second write fails
    body.close()
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes["http.response.body.size"] == 8192


# --- no reference cycle ---------------------------------------------------------


@pytest.fixture
def cyclic_collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("cyclic_collector_off")
def test_an_instrumented_app_is_freed_at_its_last_reference(
    download: Path, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    """Flask removed app -> wsgi_app -> app on purpose (pallets/flask#3761)."""
    app = make_app(download)
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert isinstance(app.wsgi_app, Middleware)
    client = app.test_client()
    assert client.get("/users/1").json == {"id": 1}
    client.get("/stream").close()
    freed = weakref.ref(app)
    del app, client
    assert freed() is None


@pytest.mark.usefixtures("cyclic_collector_off")
def test_a_bare_app_is_freed_the_same_way(download: Path) -> None:
    """The control for the test above: it would fail without gc.disable() mattering."""
    app = make_app(download)
    freed = weakref.ref(app)
    app.wsgi_app = app.wsgi_app  # type: ignore[method-assign]  # the cycle Flask removed
    del app
    assert freed() is not None, "a bound wsgi_app on the app is a cycle"


def test_an_app_middleware_is_kept_and_restored(
    download: Path, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    app = make_app(download)
    seen: list[str] = []
    inner = app.wsgi_app

    def user_middleware(environ: Any, start_response: Any) -> Any:
        seen.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    app.wsgi_app = user_middleware  # type: ignore[method-assign]
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    app.test_client().get("/users/1")
    assert seen == ["/users/1"]
    FlaskMetrics.uninstrument_app(app)
    assert app.wsgi_app is user_middleware


def test_uninstrument_gives_back_flasks_own_method(
    download: Path, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    app = make_app(download)
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    FlaskMetrics.uninstrument_app(app)
    assert "wsgi_app" not in vars(app), "looked up on the class again, as before"
    assert app.test_client().get("/users/2").json == {"id": 2}


# --- bodies freed by the cyclic garbage collector -------------------------------

# A 500 whose response nobody reads or closes: the saved exception's traceback
# makes a cycle, so only the cyclic collector frees the body, at any allocation.
_UNREAD_ERROR_APP = """
import gc, flask
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from otel_flask_metrics import FlaskMetrics

app = flask.Flask("probe")
app.config["PROPAGATE_EXCEPTIONS"] = False
FlaskMetrics(app, tracer_provider=TracerProvider(),
             meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
app.add_url_rule("/boom", "boom", lambda: 1 / 0)
app.add_url_rule("/ok", "ok", lambda: "ok")
app.add_url_rule("/other", "other", lambda: "other")
app.test_client().get("/ok").close()
gc.disable()
app.test_client().get("/boom")
"""


def _run_probe(code: str) -> str:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_body_freed_by_the_collector_inside_an_sdk_lock_does_not_deadlock() -> None:
    """The collector runs at an allocation the SDK makes while holding its lock."""
    stdout = _run_probe(
        _UNREAD_ERROR_APP
        + """
import faulthandler
from opentelemetry.sdk.metrics._internal import aggregation
faulthandler.dump_traceback_later(20, exit=True)
init = aggregation._ExplicitBucketHistogramAggregation.__init__
def init_and_collect(self, *args, **kwargs):
    gc.collect()
    init(self, *args, **kwargs)
aggregation._ExplicitBucketHistogramAggregation.__init__ = init_and_collect
app.test_client().get("/other").close()  # a new label set: a new aggregation
print("served")
"""
    )
    assert "served" in stdout


def test_a_body_freed_by_the_collector_inside_ast_parse_raises_nothing_there() -> None:
    """Werkzeug parses Python for each URL rule; formatting a traceback there broke it."""
    stdout = _run_probe(
        _UNREAD_ERROR_APP
        + """
import ast
gc.set_threshold(1)
gc.enable()
ast.parse("def f():\\n    return [x for x in range(3)]\\n")
print("parsed")
"""
    )
    assert "parsed" in stdout


@pytest.mark.usefixtures("cyclic_collector_off")
def test_a_request_freed_by_the_collector_ends_at_the_next_request_with_its_drop_time(
    app: Flask, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    import time

    body, _ = start(app, "/users/9")
    cycle: list[Any] = [body]
    cycle.append(cycle)
    del body, cycle
    gc.collect()
    collected_at = time.time_ns()
    assert span_exporter.get_finished_spans() == (), "nothing is done inside the collector"
    time.sleep(0.05)  # a measurable gap between the drop and the next request
    assert app.test_client().get("/users/1").json == {"id": 1}
    first, second = span_exporter.get_finished_spans()
    assert first.attributes["http.route"] == "/users/<int:user_id>"
    assert first.end_time <= collected_at, "ended when it was dropped, not at the next request"
    assert durations(metric_reader) == 2
    assert in_flight(app) == 0


# --- bodies already in memory ---------------------------------------------------


def test_a_list_body_from_an_app_middleware_goes_back_as_it_is(
    download: Path, tracer_provider: TracerProvider, meter_provider: MeterProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """wsgiref sets Content-Length for a one-item list: the server must still see the list."""
    from io import BytesIO
    from wsgiref.handlers import SimpleHandler

    def served(instrumented: bool) -> bytes:
        app = make_app(download)
        inner = app.wsgi_app

        def buffering(environ: Any, start_response: Any) -> Any:
            def without_length(status: str, headers: list[Any], exc_info: Any = None) -> Any:
                kept = [(k, v) for k, v in headers if k.lower() != "content-length"]
                return start_response(status, kept, exc_info)

            with closing_body(inner(environ, without_length)) as body:
                return [b"".join(body)]

        app.wsgi_app = buffering  # type: ignore[method-assign]
        if instrumented:
            FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
        environ = EnvironBuilder(path="/users/3").get_environ()
        out = BytesIO()
        SimpleHandler(BytesIO(), out, BytesIO(), environ).run(app.wsgi_app)
        return b"\n".join(x for x in out.getvalue().split(b"\n") if not x.startswith(b"Date:"))

    bare, instrumented = served(False), served(True)
    assert b"Content-Length: 9" in bare, "set by the server from the one-item list"
    assert instrumented == bare
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes["http.response.body.size"] == 9
