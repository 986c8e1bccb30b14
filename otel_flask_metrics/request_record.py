"""One request's record: what it told us, and how it ends as a span and metric records.

The middleware (:mod:`.middleware`) creates the record when the request
arrives and fills it as the request goes; the teardown hook adds the route
and the consumer. :meth:`RequestRecord.finish` runs once, when the response
is over, and turns it into the HTTP metrics and the server span.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter, time_ns
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .capture import REQUEST_BODY, RESPONSE_BODY, BodyPrefix, CapturingInput, decode
from .consumers import Consumer
from .fast_attributes import FrozenAttributes

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .extension import AppState
    from .kept_requests import RequestKeeper

_logger = logging.getLogger(__name__)

# Where the record of a request is kept in its WSGI environ.
ENVIRON_KEY = "otel_flask_metrics.request"

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
LOG_RECORDS_DROPPED = "otel_flask_metrics.log_records.dropped"

METHOD = http_attributes.HTTP_REQUEST_METHOD
_STATUS = http_attributes.HTTP_RESPONSE_STATUS_CODE
_ROUTE = http_attributes.HTTP_ROUTE
SCHEME = url_attributes.URL_SCHEME
PATH = url_attributes.URL_PATH
_ERROR_TYPE = error_attributes.ERROR_TYPE

# Metric records that must not carry an exemplar get this context: not empty
# (the SDK would fall back to the current one), and without a span.
_WITHOUT_SPAN = context.set_value("otel_flask_metrics.no_exemplar", True, context.Context())


# What the default propagators (OTEL_PROPAGATORS=tracecontext,baggage) extract
# from a request that has neither of their headers: an empty context. A
# Context is immutable, so one serves every such request.
_NO_PARENT = Context()
_DEFAULT_PROPAGATOR_TYPES = (TraceContextTextMapPropagator, W3CBaggagePropagator)
# The global propagator's propagators, last seen to be exactly the default pair.
_default_propagators: tuple[object, ...] = ()


def extract_parent(environ: WSGIEnvironment) -> Context:
    """The context a request continues: ``propagate.extract`` of its headers.

    Most requests carry no ``traceparent`` and no ``baggage``; with the default
    propagators their extraction yields an empty context, which is returned
    without running them (two header lookups instead of two propagators). Any
    other propagator, or either header present, takes the full extraction.
    """
    global _default_propagators
    if "HTTP_TRACEPARENT" not in environ and "HTTP_BAGGAGE" not in environ:
        textmap = propagate.get_global_textmap()
        if type(textmap) is CompositePropagator:
            inner = tuple(getattr(textmap, "_propagators", ()))
            if inner == _default_propagators:
                return _NO_PARENT
            if tuple(type(p) for p in inner) == _DEFAULT_PROPAGATOR_TYPES:
                _default_propagators = inner
                return _NO_PARENT
    return propagate.extract(environ, getter=wsgi_getter)


class MetricAttributes:
    """The HTTP metrics' attributes of each series, made once and then shared.

    Every request of a series records the same attributes two or three times;
    one :class:`~.fast_attributes.FrozenAttributes` per series spares building
    them per request and checking them per record. Bounded: emptied when full.
    """

    __slots__ = ("_sets",)

    def __init__(self) -> None:
        self._sets: dict[tuple[Any, ...], dict[str, Any]] = {}

    def get(
        self,
        method: str,
        scheme: str,
        status_code: int,
        route: str | None,
        error_type: str | None,
        consumer: str | None,
        group: str | None,
    ) -> dict[str, Any]:
        key = (method, scheme, status_code, route, error_type, consumer, group)
        found = self._sets.get(key)
        # Exact str only: a str subclass equal to a cached value must keep its
        # own type, as the SDK keeps it apart.
        if found is not None and type(method) is str and type(scheme) is str and (
            route is None or type(route) is str
        ):
            return found
        attributes: dict[str, Any] = {METHOD: method, SCHEME: scheme}
        if status_code:
            attributes[_STATUS] = status_code
        if route is not None:
            attributes[_ROUTE] = route
        if error_type is not None:
            attributes[_ERROR_TYPE] = error_type
        if consumer is not None:
            attributes[API_CONSUMER_ID] = consumer
            if group is not None:
                attributes[API_CONSUMER_GROUP] = group
        if type(method) is str and type(scheme) is str and (route is None or type(route) is str):
            if len(self._sets) >= _METRIC_ATTRIBUTE_SETS:
                self._sets.clear()
            attributes = self._sets[key] = FrozenAttributes.of(attributes)
        return attributes


_METRIC_ATTRIBUTE_SETS = 4096  # entries


class RequestRecord:
    """What one request has told us so far."""

    __slots__ = (
        "consumer",
        "environ",
        "exception",
        "finished",
        "input",
        "last_log",
        "log_records",
        "log_records_dropped",
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
        state: AppState,
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
        self.log_records = 0  # the app's log lines while serving it (request_logs)
        self.last_log: object = None
        self.log_records_dropped = 0  # over the cap (request_logs)

    def finish(self, ended: float | None = None) -> None:
        """End the span and record the metrics, once.

        :param ended: when the request ended (``perf_counter()``), if that was
            before now; the duration and the span's end time then use it.
        """
        if self.finished:
            return
        self.finished = True
        span = self.span
        attributes: dict[str, Any] | None = None
        request_size = 0
        error_type: str | None = None
        end_time: int | None = None  # ns since the epoch; None: now
        try:
            now = perf_counter()
            if ended is not None:
                end_time = time_ns() - int((now - ended) * 1e9)
                now = ended
            duration = max(now - self.start, 0.0)
            state = self.state
            status = self.status
            status_code = _STATUS_CODES.get(status) if status else 0
            if status_code is None:
                status_code = _status_code(status)
            if self.exception is not None or status_code >= 500:
                error_type = _error_type(self.exception, status_code)
            request_size = self.request_size if self.request_size is not None else (
                self.input.count if self.input is not None else 0
            )

            consumer = self.consumer
            consumer_label = group_label = None
            if consumer is not None:
                consumer_label = state.consumer_labels.label(consumer.id)
                if consumer.group is not None:
                    group_label = state.group_labels.label(consumer.group)
            attributes = state.metric_attributes.get(
                self.method, self.scheme, status_code, self.route, error_type, consumer_label,
                group_label,
            )

            sampled = span.get_span_context().trace_flags.sampled
            keeper = state.keeper
            if (
                not sampled
                and keeper is not None
                and (error_type is not None or keeper.slow_seconds is not None)
                and keeper.wants(error_type, duration)
                and not span.is_recording()
            ):
                # Failed or slow, and not sampled: its span is made now.
                end_time = end_time if end_time is not None else time_ns()
                try:
                    kept = self._keep(keeper, duration, end_time)
                except Exception:
                    # The metrics below are recorded whatever happened here.
                    _logger.debug("otel-flask-metrics: could not keep a request", exc_info=True)
                    kept = None
                if kept is not None:
                    span = self.span = kept
                    sampled = True

            instruments = state.instruments
            # Exemplars link the latency histogram to sampled (or kept)
            # traces. The body may end after the request's context was
            # detached, so the span's context is passed. The size histograms
            # get a context without a span: an exemplar there is not worth an
            # offer on every request.
            if sampled:
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
                self._end_span(attributes, request_size, error_type, end_time)
            else:
                span.end(end_time)
            # environ -> record -> environ: break the cycle for the collector.
            self.environ.pop(ENVIRON_KEY, None)

    def _keep(self, keeper: RequestKeeper, duration: float, end_time: int) -> trace.Span | None:
        """The recorded span of this unsampled request, started when it began."""
        environ = self.environ
        # Extracted again, only for the few requests kept: the request's own
        # trace is continued, as the unsampled span had continued it.
        parent = extract_parent(environ)
        attributes = {
            METHOD: self.method,
            SCHEME: self.scheme,
            PATH: environ.get("PATH_INFO") or "/",
        }
        start_time = end_time - int(duration * 1e9)
        return keeper.start_span(self.span, self.method, parent, attributes, start_time)

    def _end_span(
        self,
        attributes: dict[str, Any],
        request_size: int,
        error_type: str | None,
        end_time: int | None,
    ) -> None:
        """Everything a recorded span says beyond its metric attributes, then end it."""
        span = self.span
        try:
            span_attributes = dict(attributes)
            # Set at start_span already: setting them again costs a
            # validation each.
            del span_attributes[METHOD], span_attributes[SCHEME]
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
            if self.log_records_dropped:
                span_attributes[LOG_RECORDS_DROPPED] = self.log_records_dropped
            content_type = header_value(self.response_headers, "content-type")
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
            span.end(end_time)

    def _add_details(self, span_attributes: dict[str, Any]) -> None:
        """What a recorded span says of the request beyond its metrics.

        Computed at the end, only for recorded spans, and left out for a
        request the skip callback opted out.
        """
        state = self.state
        span_attributes.update(
            request_attributes(self.environ, self.method, state.parse_user_agent)
        )
        capture = state.capture
        if capture.headers:
            span_attributes.update(capture.request_headers(self.environ))
            span_attributes.update(capture.response_headers(self.response_headers))
        if self.request_body is not None and self.request_body.data:
            span_attributes[REQUEST_BODY] = decode(bytes(self.request_body.data))
        if self.response_body is not None and self.response_body.data:
            span_attributes[RESPONSE_BODY] = decode(bytes(self.response_body.data))


def request_attributes(
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
        name, port = split_host(host)
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


def split_host(host: str) -> tuple[str, int | None]:
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


def _status_code(status: str | None) -> int:
    if not status:
        return 0
    try:
        code = int(status[:3])
    except ValueError:
        return 0
    if len(_STATUS_CODES) < _STATUS_CODES_SIZE:
        _STATUS_CODES[status] = code
    return code


# Status lines seen -> their code: a few recur on every request.
_STATUS_CODES: dict[str, int] = {}
_STATUS_CODES_SIZE = 1024  # entries


def _error_type(exception: BaseException | None, status_code: int) -> str | None:
    if exception is not None:
        cls = type(exception)
        module = cls.__module__
        return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    if status_code >= 500:
        return str(status_code)
    return None


def header_value(headers: list[tuple[str, str]] | None, name: str) -> str | None:
    if headers:
        for key, value in headers:
            if key.lower() == name:
                return value
    return None


def finish_safely(record: RequestRecord, ended: float | None = None) -> None:
    try:
        record.finish(ended)
    except Exception:
        _logger.debug("otel-flask-metrics: could not finish the request", exc_info=True)
