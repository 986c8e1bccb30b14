"""The WSGI middleware around ``app.wsgi_app``: where a request starts and ends.

It starts the server span before Flask sees the request, counts the request
body as the app reads it and the response body as the server takes it, and
ends the request (see :class:`~otel_flask_metrics.request_record.RequestRecord`)
at the first of: the body exhausted, the body closed, or the body freed
unread. A file sent with the server's ``wsgi.file_wrapper`` goes back to the
server untouched so that its zero-copy path still applies.
"""

from __future__ import annotations

import atexit
import gc
import logging
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Flask
from opentelemetry import context, trace
from opentelemetry.trace import SpanKind
from werkzeug.wsgi import ClosingIterator

from .capture import BodyPrefix, CapturingInput, is_textual
from .request_record import (
    ENVIRON_KEY,
    METHOD,
    PATH,
    SCHEME,
    RequestRecord,
    extract_parent,
    finish_safely,
    header_value,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .extension import AppState

_logger = logging.getLogger(__name__)

# The methods the semantic conventions know; anything else is "_OTHER", so a
# client cannot create series by inventing methods.
_KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY")
)


# Requests whose response body was freed while the cyclic garbage collector
# ran, with when: they are finished at the next request (or at exit), never
# inside the collector. The collector runs at any allocation, even one the SDK
# makes while holding a lock that recording a metric takes (a deadlock), or
# inside ast.parse (a nested parse raises SystemError on CPython 3.11).
_released: deque[tuple[RequestRecord, float]] = deque()
_collecting = False
_hooks_installed = False


def _track_collector(phase: str, info: dict[str, int]) -> None:
    global _collecting
    _collecting = phase == "start"


def _install_hooks() -> None:
    global _hooks_installed
    if not _hooks_installed:
        _hooks_installed = True
        gc.callbacks.append(_track_collector)
        # Before the providers' own exit hooks (registered earlier), so the
        # last requests are exported.
        atexit.register(finish_released)


def _on_release(record: RequestRecord) -> None:
    """A body was freed before its request ended: end it now, or soon if unsafe."""
    if record.finished:
        return
    if _collecting:
        _released.append((record, perf_counter()))
    else:
        finish_safely(record)


def finish_released() -> None:
    """Finish the requests whose body the collector freed."""
    while _released:
        try:
            record, ended = _released.popleft()
        except IndexError:  # another thread took the last one
            return
        finish_safely(record, ended)


class Middleware:
    """The WSGI wrapper around ``app.wsgi_app``.

    When it wraps the app's own ``wsgi_app`` method it keeps the function and a
    weak reference to the app rather than the bound method: app -> wrapper ->
    bound method -> app is the reference cycle Flask removed on purpose
    (pallets/flask#3761), and it would keep every app of a test suite's app
    factory alive until the cyclic collector runs.
    """

    __slots__ = ("_app", "_function", "_state", "_wrapped")

    def __init__(self, wrapped: WSGIApplication, state: AppState) -> None:
        self._state = state
        _install_hooks()
        owner = getattr(wrapped, "__self__", None)
        function = getattr(wrapped, "__func__", None)
        self._app: weakref.ref[Flask] | None = None
        self._function: Callable[..., Iterable[bytes]] | None = None
        self._wrapped: WSGIApplication | None = None
        if isinstance(owner, Flask) and function is not None:
            self._app = weakref.ref(owner)
            self._function = function
        else:
            self._wrapped = wrapped

    @property
    def wrapped(self) -> WSGIApplication:
        """The WSGI callable this wrapper calls."""
        if self._wrapped is not None:
            return self._wrapped
        assert self._app is not None and self._function is not None
        app = self._app()
        if app is None:
            raise ReferenceError("the Flask app of this wsgi_app wrapper is gone")
        return self._function.__get__(app)  # type: ignore[no-any-return]

    @property
    def wraps_flask_method(self) -> bool:
        """Whether it wraps the app class's own ``wsgi_app``, not an app's middleware."""
        app = self._app() if self._app is not None else None
        return app is not None and self._function is type(app).wsgi_app

    def _call_wrapped(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if self._wrapped is not None:
            return self._wrapped(environ, start_response)
        assert self._app is not None and self._function is not None
        return self._function(self._app(), environ, start_response)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if _released:
            finish_released()
        try:
            record = begin_request(self._state, environ)
        except Exception:
            _logger.debug("otel-flask-metrics: could not start the request", exc_info=True)
            record = None
        if record is None:
            return self._call_wrapped(environ, start_response)

        def recording_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            record.status = status
            record.response_headers = headers
            limit = self._state.capture.body_limit
            if (
                limit
                and (record.span.is_recording() or self._state.keeper is not None)
                and is_textual(header_value(headers, "content-type"))
            ):
                record.response_body = BodyPrefix(limit)
            return start_response(status, headers, exc_info)

        token = context.attach(trace.set_span_in_context(record.span))
        try:
            body = self._call_wrapped(environ, recording_start_response)
        except BaseException as exc:
            # Only reached when Flask propagates (testing/debug) or for
            # BaseExceptions: record, then let it go on unchanged.
            record.exception = exc
            record.status = record.status or "500 INTERNAL SERVER ERROR"
            finish_safely(record)
            raise
        finally:
            context.detach(token)
        # Flask's own responses are a ClosingIterator: only other bodies (a
        # server's file, an app middleware's list) need a second look.
        if type(body) is not ClosingIterator and _handed_back(body, record, environ):
            return body
        return _ResponseBody(body, record)


def begin_request(state: AppState, environ: WSGIEnvironment) -> RequestRecord | None:
    url_excluded = state.url_excluded
    if url_excluded is not None and url_excluded(environ.get("PATH_INFO") or "/"):
        return None
    if state.allowed_hosts is not None and not state.allowed_hosts(environ):
        return None
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in _KNOWN_METHODS:
        method = "_OTHER"
    scheme = environ.get("wsgi.url_scheme", "http")
    parent = extract_parent(environ)
    # Samplers see the method, scheme and path; the rest is only computed for
    # spans that are recorded.
    span = state.tracer.start_span(
        method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={METHOD: method, SCHEME: scheme, PATH: environ.get("PATH_INFO") or "/"},
    )
    record = RequestRecord(state, environ, span, method, scheme)
    length = environ.get("CONTENT_LENGTH")
    if length and length.isascii() and length.isdigit():
        record.request_size = int(length)
    limit = state.capture.body_limit
    # A request that may be kept after its response keeps its prefix too.
    if (
        limit
        and (span.is_recording() or state.keeper is not None)
        and is_textual(environ.get("CONTENT_TYPE"))
    ):
        record.request_body = BodyPrefix(limit)
    if record.request_body is not None or (
        record.request_size is None and (length or "HTTP_TRANSFER_ENCODING" in environ)
    ):
        # A chunked body (or one with an invalid Content-Length) is counted
        # as the app reads it; a captured one is kept as it is read. With
        # neither header a request has no body (RFC 9112, 6.3).
        stream = environ.get("wsgi.input")
        if stream is not None:
            record.input = CapturingInput(stream, record.request_body)
            environ["wsgi.input"] = record.input
    environ[ENVIRON_KEY] = record
    state.instruments.active_requests.start(record, method, scheme)
    return record


class _ResponseBody:
    """The response iterable: counts bytes as the server takes them, ends the request.

    A chunk is counted once the server asks for the next one (or the body
    ends), so a chunk whose write failed because the client left is not
    counted. The request ends at the first of: the body exhausted, ``close()``,
    or this object freed unread.
    """

    __slots__ = ("_body", "_record")

    def __init__(self, body: Iterable[bytes], record: RequestRecord) -> None:
        self._body = body
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        record = self._record
        prefix = record.response_body
        try:
            for chunk in self._body:
                yield chunk
                record.response_size += len(chunk)
                if prefix is not None:
                    prefix.add(chunk)
        except Exception as exc:
            # The body failed mid-stream (a generator's error after the
            # status went out): the request failed, whatever its status.
            if record.exception is None:
                record.exception = exc
            raise
        # Everything was handed over: the request is done, even for a host
        # that never calls close().
        finish_safely(record)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._record.finished:
                finish_safely(self._record)

    def __del__(self) -> None:
        # Neither exhausted nor closed: end the span and leave the in-flight
        # count now (or at the next request) rather than never.
        if not self._record.finished:
            _on_release(self._record)


def _handed_back(body: Iterable[bytes], record: RequestRecord, environ: WSGIEnvironment) -> bool:
    """Whether ``body`` goes back to the server as it is, a server special-casing it."""
    if type(body) is list or type(body) is tuple:
        # A body already in memory: servers read its length (wsgiref sets
        # Content-Length for one chunk); the request ends here.
        _end_with_sequence(body, record)
        return True
    file_wrapper = environ.get("wsgi.file_wrapper")
    if file_wrapper is not None and _is_server_file(body, file_wrapper):
        try:
            return _end_with_server_file(body, record)
        except Exception:
            _logger.debug("otel-flask-metrics: could not follow a file body", exc_info=True)
    return False


def _end_with_sequence(body: list[bytes] | tuple[bytes, ...], record: RequestRecord) -> None:
    try:
        prefix = record.response_body
        for chunk in body:
            record.response_size += len(chunk)
            if prefix is not None:
                prefix.add(chunk)
    except Exception:
        _logger.debug("otel-flask-metrics: could not count a sequence body", exc_info=True)
    finish_safely(record)


def _is_server_file(body: object, file_wrapper: object) -> bool:
    """Whether ``body`` is what the server's ``wsgi.file_wrapper`` made.

    gunicorn and wsgiref give a class and check ``isinstance``; uWSGI gives a
    function that returns the file itself and compares identity, so there a
    body with a file descriptor is taken to be one.
    """
    if isinstance(file_wrapper, type):
        return isinstance(body, file_wrapper)
    return callable(getattr(body, "fileno", None))


def _end_with_server_file(body: Any, record: RequestRecord) -> bool:
    """Arrange for the request to end when the server closes its file object.

    The server must get its own object back to send it with ``sendfile()``,
    so the bytes cannot be counted: the size is the declared
    ``Content-Length``. Returns False when that is unknown, and the body is
    then wrapped and counted.
    """
    length = header_value(record.response_headers, "content-length")
    if length is None or not (length.isascii() and length.isdigit()):
        return False
    # The request ends when the server drops the object, right after closing
    # it, at the latest (uWSGI's file objects cannot be hooked otherwise).
    weakref.finalize(body, _on_release, record)
    if hasattr(body, "__dict__"):
        # gunicorn's and wsgiref's wrappers: an instance attribute ``close``
        # is what the server calls when the transfer is over.
        own_close = getattr(body, "close", None)

        def close() -> None:
            try:
                if own_close is not None:
                    own_close()
            finally:
                finish_safely(record)

        body.close = close
    record.response_size = int(length)
    return True
