"""The Flask extension: one server span and the HTTP metrics for every request.

Usage, the Flask way (app factories included)::

    from otel_flask_metrics import FlaskMetrics

    metrics = FlaskMetrics()

    def create_app():
        app = Flask(__name__)
        metrics.init_app(app)
        return app

Under ``opentelemetry-instrument`` every Flask app is set up automatically and
an explicit ``init_app`` becomes a no-op, so both can be used together.

How it works, and why:

* ``init_app`` wraps ``app.wsgi_app`` (Flask's documented middleware slot) and
  registers one ``teardown_request`` function. Nothing in Flask is patched.
* The wrapper starts the span before Flask sees the request and ends it when
  the server closes the response iterable, so the duration covers streamed
  bodies, and the response size is the bytes the server was handed, counted as
  they flow (never buffered). A client that disconnects mid-stream gets what
  was sent.
* The request size is ``Content-Length`` when there is one; a chunked body is
  counted as the app reads it.
* The teardown function runs after the view, with ``g`` still there: it reads
  the route template (never the raw path) and the consumer.
* None of our code may break a request: every step is guarded, and an app's
  own exception passes through unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Flask, request
from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider, get_tracer
from opentelemetry.util.http import get_excluded_urls

from . import fast_attributes
from .capture import (
    REQUEST_BODY,
    RESPONSE_BODY,
    BodyPrefix,
    Capture,
    CapturingInput,
    decode,
    is_textual,
)
from .config import ConfigProblem, Settings, report_problems, resolve_settings
from .consumers import Consumer, ConsumerLabelLimiter, ConsumerResolver
from .metrics import HttpServerInstruments
from .version import __version__

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_logger = logging.getLogger(__name__)

EXTENSION_KEY = "otel_flask_metrics"
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
_ENVIRON_KEY = "otel_flask_metrics.request"

# Attribute keys (semantic conventions; the consumer ones are ours).
API_CONSUMER_ID = "api.consumer.id"
API_CONSUMER_NAME = "api.consumer.name"
API_CONSUMER_GROUP = "api.consumer.group"
HTTP_REQUEST_BODY_SIZE = "http.request.body.size"
HTTP_RESPONSE_BODY_SIZE = "http.response.body.size"
USER_AGENT_NAME = "user_agent.name"
USER_AGENT_OS_NAME = "user_agent.os.name"
HTTP_REQUEST_REFERER = "http.request.header.referer"
HTTP_RESPONSE_CONTENT_TYPE = "http.response.header.content-type"

_METHOD = http_attributes.HTTP_REQUEST_METHOD
_STATUS = http_attributes.HTTP_RESPONSE_STATUS_CODE
_ROUTE = http_attributes.HTTP_ROUTE
_SCHEME = url_attributes.URL_SCHEME
_ERROR_TYPE = error_attributes.ERROR_TYPE
_PATH = url_attributes.URL_PATH

# Metric records that must not carry an exemplar get this context: not empty
# (the SDK would fall back to the current one), and without a span.
_WITHOUT_SPAN = context.set_value("otel_flask_metrics.no_exemplar", True, context.Context())

# The methods the semantic conventions know; anything else is "_OTHER", so a
# client cannot create series by inventing methods.
_KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY")
)


class FlaskMetrics:
    """Instruments Flask apps: server spans and HTTP metrics with consumers and sizes.

    :param app: an app to set up now; or call :meth:`init_app` later.
    :param tracer_provider: defaults to the global one (set by the distro).
    :param meter_provider: defaults to the global one (set by the distro).
    :param options: any :class:`~otel_flask_metrics.config.Settings` field,
        e.g. ``consumer_header="X-API-Key"``; they win over environment variables.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        **options: Any,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the middleware and hooks on ``app`` (once per app).

        A second call on the same app warns and does nothing; when
        ``opentelemetry-instrument`` already set the app up, the call is a
        silent no-op, so code written for both ways runs under both.
        """
        self._setup(app, automatic=False)

    def _setup(self, app: Flask, automatic: bool) -> None:
        existing = app.extensions.get(EXTENSION_KEY)
        if existing is not None:
            if not existing.automatic:
                _logger.warning("otel-flask-metrics is already set up on %r; ignoring", app)
            return
        settings, problems = resolve_settings(**self._options)
        # Checked here, not in the configurator: uWSGI's module exists only
        # once an app is loaded.
        report_problems(problems + uwsgi_problems())
        if settings.disabled:
            return
        state = _AppState(settings, self._tracer_provider, self._meter_provider, automatic)
        app.extensions[EXTENSION_KEY] = state
        app.wsgi_app = _Middleware(app.wsgi_app, state)  # type: ignore[method-assign]
        app.teardown_request(state.on_teardown)

    @staticmethod
    def uninstrument_app(app: Flask) -> None:
        """Undo :meth:`init_app`: restore the original ``wsgi_app`` and hooks."""
        state = app.extensions.pop(EXTENSION_KEY, None)
        if state is None:
            return
        if isinstance(app.wsgi_app, _Middleware):
            app.wsgi_app = app.wsgi_app.wrapped  # type: ignore[method-assign,assignment]
        funcs = app.teardown_request_funcs.get(None, [])
        if state.on_teardown in funcs:
            funcs.remove(state.on_teardown)


class _AppState:
    """Per-app state, kept in ``app.extensions["otel_flask_metrics"]``."""

    def __init__(
        self,
        settings: Settings,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        automatic: bool = False,
    ) -> None:
        self.settings = settings
        self.automatic = automatic
        if settings.sdk_fast_path:
            fast_attributes.install()
        self.tracer = get_tracer(__name__, __version__, tracer_provider, schema_url=_SCHEMA_URL)
        meter = get_meter(__name__, __version__, meter_provider, schema_url=_SCHEMA_URL)
        self.instruments = HttpServerInstruments.create(meter)
        self.consumers = ConsumerResolver(settings)
        self.consumer_labels = ConsumerLabelLimiter(settings.max_consumers)
        # Apps may use per-tenant groups: they are capped the same way.
        self.group_labels = ConsumerLabelLimiter(settings.max_consumers)
        # OTEL_PYTHON_FLASK_EXCLUDED_URLS, or OTEL_PYTHON_EXCLUDED_URLS.
        self.excluded_urls = get_excluded_urls("FLASK")
        self.capture = Capture(settings)
        self.allowed_hosts = _host_matcher(settings.allowed_hosts)
        # ua-parser is imported only when asked for: its rules cost memory in
        # every worker.
        self.parse_user_agent: Callable[[str], tuple[str | None, str | None]] | None = None
        if settings.parse_user_agent:
            from .user_agent import parse_user_agent, warm_up

            warm_up()
            self.parse_user_agent = parse_user_agent

    def on_teardown(self, exc: BaseException | None) -> None:
        """After the view: route, consumer and the app's unhandled exception."""
        # The request itself, not the proxy: each proxy attribute is a
        # context lookup, and this runs on every request.
        req = request._get_current_object()  # type: ignore[attr-defined]
        record: _RequestRecord | None = req.environ.get(_ENVIRON_KEY)
        if record is None:
            return
        try:
            rule = req.url_rule
            if rule is not None:
                record.route = rule.rule
            if exc is not None:
                record.exception = exc
            skip = self.settings.skip_callback
            if skip is not None and _asks_to_skip(skip, req):
                record.private = True
                return
            record.consumer = self.consumers.resolve(req)
        except Exception:
            _logger.debug("otel-flask-metrics: teardown failed", exc_info=True)


class _RequestRecord:
    """What one request has told us so far."""

    __slots__ = (
        "consumer",
        "environ",
        "exception",
        "finished",
        "input",
        "method",
        "private",
        "request_body",
        "request_size",
        "response_body",
        "response_headers",
        "response_size",
        "route",
        "scheme",
        "span",
        "start",
        "state",
        "status",
    )

    def __init__(
        self,
        state: _AppState,
        environ: WSGIEnvironment,
        span: trace.Span,
        method: str,
        scheme: str,
    ) -> None:
        self.state = state
        self.environ = environ
        self.span = span
        self.method = method
        self.scheme = scheme
        self.start = perf_counter()
        self.request_size: int | None = None
        self.input: CapturingInput | None = None
        self.request_body: BodyPrefix | None = None
        self.response_body: BodyPrefix | None = None
        self.private = False
        self.response_size = 0
        self.status: str | None = None
        self.response_headers: list[tuple[str, str]] | None = None
        self.route: str | None = None
        self.consumer: Consumer | None = None
        self.exception: BaseException | None = None
        self.finished = False

    def finish(self) -> None:
        """End the span and record the metrics, once."""
        if self.finished:
            return
        self.finished = True
        span = self.span
        attributes: dict[str, Any] | None = None
        request_size = 0
        error_type: str | None = None
        try:
            duration = max(perf_counter() - self.start, 0.0)
            state = self.state
            status_code = _status_code(self.status)
            if self.exception is not None or status_code >= 500:
                error_type = _error_type(self.exception, status_code)
            request_size = self.request_size if self.request_size is not None else (
                self.input.count if self.input is not None else 0
            )

            attributes = {_METHOD: self.method, _SCHEME: self.scheme}
            if status_code:
                attributes[_STATUS] = status_code
            if self.route is not None:
                attributes[_ROUTE] = self.route
            if error_type is not None:
                attributes[_ERROR_TYPE] = error_type
            consumer = self.consumer
            if consumer is not None:
                attributes[API_CONSUMER_ID] = state.consumer_labels.label(consumer.id)
                if consumer.group is not None:
                    attributes[API_CONSUMER_GROUP] = state.group_labels.label(consumer.group)

            instruments = state.instruments
            # Exemplars link the latency histogram to sampled traces. The body
            # may end after the request's context was detached, so the span's
            # context is passed. The size histograms get a context without a
            # span: an exemplar there is not worth an offer on every request.
            if span.get_span_context().trace_flags.sampled:
                exemplar_context = trace.set_span_in_context(span)
            else:
                exemplar_context = _WITHOUT_SPAN
            instruments.duration.record(duration, attributes, exemplar_context)
            # Only a request with a body has a size: the zeros of every GET
            # would flatten the percentiles and cost a record per request.
            if request_size:
                instruments.request_body_size.record(request_size, attributes, _WITHOUT_SPAN)
            instruments.response_body_size.record(self.response_size, attributes, _WITHOUT_SPAN)
        finally:
            # Whatever happened above, the request leaves the in-flight count
            # and its span is ended.
            self.state.instruments.active_requests.end(self)
            if attributes is not None and span.is_recording():
                self._end_span(attributes, request_size, error_type)
            else:
                span.end()
            # environ -> record -> environ: break the cycle for the collector.
            self.environ.pop(_ENVIRON_KEY, None)

    def _end_span(
        self, attributes: dict[str, Any], request_size: int, error_type: str | None
    ) -> None:
        """Everything a recorded span says beyond its metric attributes, then end it."""
        span = self.span
        try:
            span_attributes = dict(attributes)
            # Set at start_span already: setting them again costs a
            # validation each.
            del span_attributes[_METHOD], span_attributes[_SCHEME]
            if request_size:
                span_attributes[HTTP_REQUEST_BODY_SIZE] = request_size
            span_attributes[HTTP_RESPONSE_BODY_SIZE] = self.response_size
            if not self.private:
                try:
                    self._add_details(span_attributes)
                except Exception:
                    # Details are best effort; the span keeps its core.
                    _logger.debug("otel-flask-metrics: request details failed", exc_info=True)
            consumer = self.consumer
            if consumer is not None:
                span_attributes[API_CONSUMER_ID] = consumer.id
                if consumer.group is not None:
                    span_attributes[API_CONSUMER_GROUP] = consumer.group
                if consumer.name is not None:
                    span_attributes[API_CONSUMER_NAME] = consumer.name
            content_type = _header(self.response_headers, "content-type")
            if content_type is not None:
                span_attributes[HTTP_RESPONSE_CONTENT_TYPE] = (content_type,)
            span.set_attributes(span_attributes)
            if self.route is not None:
                span.update_name(f"{self.method} {self.route}")
            if self.exception is not None:
                span.record_exception(self.exception)
            if error_type is not None:
                span.set_status(Status(StatusCode.ERROR, error_type))
        finally:
            span.end()

    def _add_details(self, span_attributes: dict[str, Any]) -> None:
        """What a recorded span says of the request beyond its metrics.

        Computed at the end, only for recorded spans, and left out for a
        request the skip callback opted out.
        """
        state = self.state
        span_attributes.update(
            _request_attributes(self.environ, self.method, state.parse_user_agent)
        )
        capture = state.capture
        if capture.headers:
            span_attributes.update(capture.request_headers(self.environ))
            span_attributes.update(capture.response_headers(self.response_headers))
        if self.request_body is not None and self.request_body.data:
            span_attributes[REQUEST_BODY] = decode(bytes(self.request_body.data))
        if self.response_body is not None and self.response_body.data:
            span_attributes[RESPONSE_BODY] = decode(bytes(self.response_body.data))


class _Middleware:
    """The WSGI wrapper around ``app.wsgi_app``."""

    def __init__(self, wrapped: WSGIApplication, state: _AppState) -> None:
        self.wrapped = wrapped
        self._state = state

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            record = _begin(self._state, environ)
        except Exception:
            _logger.debug("otel-flask-metrics: could not start the request", exc_info=True)
            record = None
        if record is None:
            return self.wrapped(environ, start_response)

        def recording_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            record.status = status
            record.response_headers = headers
            limit = self._state.capture.body_limit
            if (
                limit
                and record.span.is_recording()
                and is_textual(_header(headers, "content-type"))
            ):
                record.response_body = BodyPrefix(limit)
            return start_response(status, headers, exc_info)

        token = context.attach(trace.set_span_in_context(record.span))
        try:
            body = self.wrapped(environ, recording_start_response)
        except BaseException as exc:
            # Only reached when Flask propagates (testing/debug) or for
            # BaseExceptions: record, then let it go on unchanged.
            record.exception = exc
            record.status = record.status or "500 INTERNAL SERVER ERROR"
            _finish_safely(record)
            raise
        finally:
            context.detach(token)
        return _ResponseBody(body, record)


def _begin(state: _AppState, environ: WSGIEnvironment) -> _RequestRecord | None:
    if state.excluded_urls.url_disabled(environ.get("PATH_INFO") or "/"):
        return None
    if state.allowed_hosts is not None and not state.allowed_hosts(environ):
        return None
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in _KNOWN_METHODS:
        method = "_OTHER"
    scheme = environ.get("wsgi.url_scheme", "http")
    parent = propagate.extract(environ, getter=wsgi_getter)
    # Samplers see the method, scheme and path; the rest is only computed for
    # spans that are recorded.
    span = state.tracer.start_span(
        method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={_METHOD: method, _SCHEME: scheme, _PATH: environ.get("PATH_INFO") or "/"},
    )
    record = _RequestRecord(state, environ, span, method, scheme)
    length = environ.get("CONTENT_LENGTH")
    if length and length.isascii() and length.isdigit():
        record.request_size = int(length)
    limit = state.capture.body_limit
    if limit and span.is_recording() and is_textual(environ.get("CONTENT_TYPE")):
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
    environ[_ENVIRON_KEY] = record
    state.instruments.active_requests.start(record, method, scheme)
    return record


def _request_attributes(
    environ: WSGIEnvironment,
    method: str,
    parse_agent: Callable[[str], tuple[str | None, str | None]] | None,
) -> dict[str, Any]:
    """What a recorded server span says of the request, besides method and path."""
    attributes: dict[str, Any] = {}
    if method == "_OTHER":
        attributes[http_attributes.HTTP_REQUEST_METHOD_ORIGINAL] = environ.get("REQUEST_METHOD")
    query = environ.get("QUERY_STRING")
    if query:
        attributes[url_attributes.URL_QUERY] = query
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME")
    if host:
        name, port = _split_host(host)
        attributes[server_attributes.SERVER_ADDRESS] = name
        if port is not None:
            attributes[server_attributes.SERVER_PORT] = port
    remote = environ.get("REMOTE_ADDR")
    if remote:
        attributes[client_attributes.CLIENT_ADDRESS] = remote
    protocol = environ.get("SERVER_PROTOCOL", "")
    if protocol.startswith("HTTP/"):
        attributes[network_attributes.NETWORK_PROTOCOL_VERSION] = protocol[5:]
    agent = environ.get("HTTP_USER_AGENT")
    if agent:
        attributes[user_agent_attributes.USER_AGENT_ORIGINAL] = agent
        if parse_agent is not None:
            browser, os_name = parse_agent(agent)
            if browser:
                attributes[USER_AGENT_NAME] = browser
            if os_name:
                attributes[USER_AGENT_OS_NAME] = os_name
    referer = environ.get("HTTP_REFERER")
    if referer:
        attributes[HTTP_REQUEST_REFERER] = (referer,)
    return attributes


def _split_host(host: str) -> tuple[str, int | None]:
    """``example.com:8080`` -> ``("example.com", 8080)``; IPv6 literals kept whole."""
    name, sep, port = host.rpartition(":")
    if sep and not name.endswith(":"):
        # isascii: "²³".isdigit() is true; a client's Host must never make an
        # attribute the exporter cannot encode.
        if port.isascii() and port.isdigit() and 0 < int(port) <= 65535:
            return name, int(port)
        if port.isascii() and port.isdigit():
            return name, None
    return host, None


class _ResponseBody:
    """The response iterable: counts bytes as the server takes them, ends on close.

    A chunk is counted once the server asks for the next one (or the body
    ends), so a chunk whose write failed because the client left is not counted.
    """

    __slots__ = ("_body", "_record")

    def __init__(self, body: Iterable[bytes], record: _RequestRecord) -> None:
        self._body = body
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        record = self._record
        prefix = record.response_body
        for chunk in self._body:
            yield chunk
            record.response_size += len(chunk)
            if prefix is not None:
                prefix.add(chunk)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            _finish_safely(self._record)


def _finish_safely(record: _RequestRecord) -> None:
    try:
        record.finish()
    except Exception:
        _logger.debug("otel-flask-metrics: could not finish the request", exc_info=True)


# uWSGI forks its workers from C: without these options the SDK's after-fork
# hooks never run in a worker (no exporter thread, one shared instance id).
UWSGI_OPTIONS = ("enable-threads", "lazy-apps", "py-call-osafterfork")


def uwsgi_problems() -> list[ConfigProblem]:
    try:
        import uwsgi  # type: ignore[import-not-found,import-untyped,unused-ignore]  # only inside uWSGI
    except ImportError:
        return []
    missing = [f"--{name}" for name in UWSGI_OPTIONS if not uwsgi.opt.get(name)]
    if not missing:
        return []
    return [
        ConfigProblem(
            "uWSGI options",
            " ".join(missing) + " missing",
            "start uWSGI with --enable-threads --lazy-apps --py-call-osafterfork, or workers "
            "export nothing",
        )
    ]


def _asks_to_skip(skip: Any, req: Any) -> bool:
    try:
        return bool(skip(req))
    except Exception:
        _logger.debug("the skip callback raised; recording the request", exc_info=True)
        return False


def _host_matcher(hosts: tuple[str, ...] | None) -> Any:
    """A predicate on the environ for ReadMe's allowed hosts, or None to allow all."""
    if not hosts:
        return None
    exact = {h.lower() for h in hosts if not h.startswith("*.")}
    suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))

    def allowed(environ: WSGIEnvironment) -> bool:
        host = (environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "").lower()
        name = _split_host(host)[0]
        return name in exact or (bool(suffixes) and name.endswith(suffixes))

    return allowed


def _status_code(status: str | None) -> int:
    if not status:
        return 0
    try:
        return int(status[:3])
    except ValueError:
        return 0


def _error_type(exception: BaseException | None, status_code: int) -> str | None:
    if exception is not None:
        cls = type(exception)
        module = cls.__module__
        return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    if status_code >= 500:
        return str(status_code)
    return None


def _header(headers: list[tuple[str, str]] | None, name: str) -> str | None:
    if headers:
        for key, value in headers:
            if key.lower() == name:
                return value
    return None
