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
  the response body is exhausted or closed, whichever comes first, so the
  duration covers streamed bodies, and a host that reads the body but never
  calls ``close()`` (the Flask test client, some middleware) still records the
  request. A body that is dropped unread ends the request when it is freed
  (at the next request when the cyclic collector freed it: nothing runs
  inside the collector).
  The response size is the bytes the server was handed, counted as they flow
  (never buffered). A client that disconnects mid-stream gets what was sent.
* A file the app sends with the server's ``wsgi.file_wrapper`` (``send_file``)
  is handed back to the server as that very object, so the server's zero-copy
  path (``sendfile()``) is kept; its size is its ``Content-Length``, and the
  request ends when the server closes it.
* The wrapper holds the app weakly: an instrumented app is freed as soon as
  its last reference goes, as Flask intends (no reference cycle).
* The request size is ``Content-Length`` when there is one; a chunked body is
  counted as the app reads it.
* The teardown function runs after the view, with ``g`` still there: it reads
  the route template (never the raw path) and the consumer.
* A request the head sampler left out is not recorded while it runs; when it
  ends with a 5xx, an unhandled exception, or slower than a threshold, its
  span is made then (:mod:`.kept_requests`).
* None of our code may break a request: every step is guarded, and an app's
  own exception passes through unchanged.

The WSGI side lives in :mod:`.middleware`, and how a request becomes a span
and metric records in :mod:`.request_record`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, request
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.trace import TracerProvider, get_tracer
from opentelemetry.util.http import get_excluded_urls

from . import fast_attributes
from .capture import Capture
from .config import ConfigProblem, Settings, report_problems, resolve_settings
from .consumers import ConsumerLabelLimiter, ConsumerResolver
from .kept_requests import RequestKeeper
from .log_console import keep_flask_console
from .metrics import HttpServerInstruments
from .middleware import Middleware
from .request_record import ENVIRON_KEY, MetricAttributes, RequestRecord, split_host
from .version import __version__

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

_logger = logging.getLogger(__name__)

EXTENSION_KEY = "otel_flask_metrics"
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"


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
        state = AppState(settings, self._tracer_provider, self._meter_provider, automatic)
        app.extensions[EXTENSION_KEY] = state
        app.wsgi_app = Middleware(app.wsgi_app, state)  # type: ignore[method-assign]
        app.teardown_request(state.on_teardown)
        try:
            keep_flask_console(app)
        except Exception:
            _logger.debug("otel-flask-metrics: could not check the app's console", exc_info=True)

    @staticmethod
    def uninstrument_app(app: Flask) -> None:
        """Undo :meth:`init_app`: restore the original ``wsgi_app`` and hooks."""
        state = app.extensions.pop(EXTENSION_KEY, None)
        if state is None:
            return
        middleware = app.wsgi_app
        if isinstance(middleware, Middleware):
            if middleware.wraps_flask_method:
                # Flask's own method again, looked up on the class: no cycle.
                del app.wsgi_app
            else:
                app.wsgi_app = middleware.wrapped  # type: ignore[method-assign,assignment]
        funcs = app.teardown_request_funcs.get(None, [])
        if state.on_teardown in funcs:
            funcs.remove(state.on_teardown)


class AppState:
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
        # Failed and slow requests that were not sampled: kept after the response.
        self.keeper = RequestKeeper.from_settings(settings, self.tracer)
        meter = get_meter(__name__, __version__, meter_provider, schema_url=_SCHEMA_URL)
        self.instruments = HttpServerInstruments.create(meter)
        self.consumers = ConsumerResolver(settings)
        self.consumer_labels = ConsumerLabelLimiter(settings.max_consumers)
        self.metric_attributes = MetricAttributes()
        # Apps may use per-tenant groups: they are capped the same way.
        self.group_labels = ConsumerLabelLimiter(settings.max_consumers)
        # OTEL_PYTHON_FLASK_EXCLUDED_URLS, or OTEL_PYTHON_EXCLUDED_URLS.
        self.excluded_urls = get_excluded_urls("FLASK")
        # The check itself, or None when nothing is excluded (the usual case:
        # no call per request).
        self.url_excluded: Callable[[str], bool] | None = (
            self.excluded_urls.url_disabled
            if getattr(self.excluded_urls, "_excluded_urls", True)
            else None
        )
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
        record: RequestRecord | None = req.environ.get(ENVIRON_KEY)
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
        name = split_host(host)[0]
        return name in exact or (bool(suffixes) and name.endswith(suffixes))

    return allowed
