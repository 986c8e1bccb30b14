"""The ``opentelemetry-instrument`` entry points: a distro and a configurator.

``opentelemetry-instrument`` runs, in order: the distro (ours only sets
environment defaults), the configurator (ours builds the SDK providers), then
every instrumentor. Our distro skips the stock Flask instrumentor, because
otel-flask-metrics' own instrumentor produces the server span and the HTTP
metrics; letting both run would double every span and every count.

:func:`configure` is also the programmatic path for apps that are not started
by ``opentelemetry-instrument`` (see :class:`~otel_flask_metrics.FlaskMetrics`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import DropAggregation, View
from opentelemetry.sdk.resources import Attributes, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from . import exit_export, export_transport, log_throttle
from .config import ConfigProblem, Settings, report_problems, resolve_settings
from .consumers import DEFAULT_HASH_KEY
from .fork_safety import ForkSafeMetricReader, fork_safe_provider
from .log_console import show_what_the_console_would
from .process_metrics import ProcessMetrics
from .redaction import (
    RedactingLogRecordProcessor,
    RedactingSpanExporter,
    RedactionRules,
    Redactor,
)
from .sdk_variables import sdk_variable_problems
from .version import __version__

_logger = logging.getLogger(__name__)

DISTRO_NAME = "otel_flask_metrics"

# What a Flask API team expects without setting anything: traces, metrics and
# the app's log lines (info and above) over OTLP http/protobuf to a local
# Collector, stable HTTP semantic conventions, and metrics fresh enough for a
# live dashboard.
ENVIRONMENT_DEFAULTS: Mapping[str, str] = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    # Read by OpenTelemetry's logging handler: debug lines stay in the process.
    "OTEL_PYTHON_LOG_HANDLER_LEVEL": "info",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    "OTEL_METRIC_EXPORT_INTERVAL": "15000",  # milliseconds
    # gzip shrinks OTLP several times over for a little CPU in the export
    # thread; the Collector accepts it.
    "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    # Half the SDK's 512: encoding a batch holds the GIL in the export thread,
    # and a request arriving meanwhile waits. 256 spans cut that stall (p99
    # 63 -> 41 ms under load) and the spans held in memory, for about 2 % more
    # export CPU (one more POST per 256 spans).
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "256",
    # When another distro is installed too, make sure our configurator is the
    # one that runs once our distro was chosen (OTEL_PYTHON_DISTRO).
    "OTEL_PYTHON_CONFIGURATOR": DISTRO_NAME,
}

# Instrumentation scopes whose HTTP server metrics ours replace: if the stock
# Flask or WSGI instrumentation runs anyway, its instruments are dropped so no
# request is counted twice.
REPLACED_METER_SCOPES = (
    "opentelemetry.instrumentation.flask",
    "opentelemetry.instrumentation.wsgi",
)

_OTLP_PROTOCOLS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}


def is_disabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("OTEL_FLASK_METRICS_DISABLED", "").strip().lower() == "true"


def apply_environment_defaults() -> None:
    """Put :data:`ENVIRONMENT_DEFAULTS` into ``os.environ`` where the user set nothing.

    The SDK's exporters and processors read ``os.environ`` themselves. A user's
    ``OTEL_BSP_MAX_QUEUE_SIZE`` below our batch size lowers the batch size
    with it: the SDK refuses a batch larger than its queue, and that must not
    cost the app its telemetry.
    """
    batch = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
    batch_is_ours = batch not in os.environ
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    queue = os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "").strip()
    if batch_is_ours and queue.isascii() and queue.isdigit():
        if 0 < int(queue) < int(ENVIRONMENT_DEFAULTS[batch]):
            os.environ[batch] = queue


class FlaskMetricsDistro(BaseDistro):  # type: ignore[misc]  # untyped base class
    """Sets environment defaults and leaves Flask to our own instrumentor."""

    def _configure(self, **kwargs: Any) -> None:
        if is_disabled():
            return
        apply_environment_defaults()

    def load_instrumentor(self, entry_point: EntryPoint, **kwargs: Any) -> None:
        if is_disabled() and entry_point.name == "flask_metrics":
            return
        if entry_point.name == "flask":
            _logger.debug("otel-flask-metrics instruments Flask; skipping the stock instrumentor")
            return
        if entry_point.name == "logging" and not _logging_instrumentor_wanted(os.environ):
            # Its handler on the root logger would stop Python's last-resort
            # stderr output for nothing: no log is exported.
            return
        super().load_instrumentor(entry_point, **kwargs)
        if entry_point.name == "logging":
            _show_what_the_console_would()


def _logging_instrumentor_wanted(env: Mapping[str, str]) -> bool:
    """Logs are exported (``OTEL_LOGS_EXPORTER``), or their trace ids put in log lines."""
    exporters = env.get("OTEL_LOGS_EXPORTER", ENVIRONMENT_DEFAULTS["OTEL_LOGS_EXPORTER"])
    exported = any(name.strip() not in ("", "none") for name in exporters.split(","))
    correlation = env.get("OTEL_PYTHON_LOG_CORRELATION", "").strip().lower() == "true"
    return exported or correlation


class FlaskMetricsConfigurator(_BaseConfigurator):
    """Builds the SDK providers when ``opentelemetry-instrument`` starts the app."""

    def _configure(self, **kwargs: Any) -> None:
        # opentelemetry-instrumentation-logging's instrumentor runs next and
        # installs the logging handler itself.
        configure(_logging_handler=False)


@dataclass(frozen=True)
class Providers:
    """What :func:`configure` set up, for tests and for shutting down."""

    settings: Settings
    tracer_provider: TracerProvider
    meter_provider: MeterProvider


_configured: Providers | None = None


def configured() -> Providers | None:
    """The providers set by :func:`configure` in this process, if it ran."""
    return _configured


def configure(
    environ: Mapping[str, str] | None = None, *, _logging_handler: bool = True, **options: Any
) -> Providers | None:
    """Set up tracing and metrics for otel-flask-metrics, once per process.

    The steps run in this order: settings (so a bad variable is reported
    before anything starts), the resource (every signal shares it), the
    providers with their processors and exporters, and last the global
    registration, so that instrumentation created afterwards finds them.

    :param environ: the environment to read (``os.environ`` by default).
    :param options: :class:`~otel_flask_metrics.config.Settings` fields that
        win over the environment.
    :returns: the providers, or None when otel-flask-metrics is disabled.
    """
    global _configured
    if _configured is not None:
        _logger.warning("otel-flask-metrics is already configured in this process; ignoring")
        return _configured
    if environ is None:
        apply_environment_defaults()
    env = os.environ if environ is None else environ
    settings, problems = resolve_settings(env, **options)
    problems.extend(sdk_variable_problems(env))
    if settings.disabled:
        report_problems(problems)
        return None
    # A dead Collector or a hostile header must not flood the app's log.
    log_throttle.install()
    resource = _setup_resource(settings)
    tracer_provider = _setup_tracing(resource, settings, env, problems)
    meter_provider = _setup_metrics(resource, env, problems)
    if settings.process_metrics:
        # Observable instruments register on the provider, so it must exist.
        ProcessMetrics().register(meter_provider)
    _setup_logging(resource, settings, env, problems, _logging_handler)
    # Registered after the providers' own atexit shutdown, so it runs first.
    exit_export.register()
    report_problems(problems)  # deduplicated: a bad protocol is one line
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _configured = Providers(settings, tracer_provider, meter_provider)
    return _configured


def _setup_resource(settings: Settings) -> Resource:
    # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES,
    # and gives each process its own service.instance.id, renewed after a
    # fork, so every pre-fork worker exports its own series.
    resource = Resource.create(
        {"telemetry.distro.name": "otel-flask-metrics", "telemetry.distro.version": __version__}
    )
    if settings.environment and "deployment.environment.name" not in resource.attributes:
        resource = resource.merge(Resource({"deployment.environment.name": settings.environment}))
    return HashedOnceResource(resource.attributes, resource.schema_url)


class HashedOnceResource(Resource):
    """A :class:`Resource` that computes its hash once.

    The OTLP encoders group every exported span by its resource, and the SDK's
    ``Resource.__hash__`` serialises all the attributes to JSON on every call:
    about 10 µs of the export thread per span, for a value that cannot change
    (resource attributes are immutable). ``merge`` keeps the class, so the
    resource the SDK renews after a fork is hashed once too.
    """

    def __init__(self, attributes: Attributes, schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def merge(self, other: Resource) -> Resource:
        merged = super().merge(other)
        return HashedOnceResource(merged.attributes, merged.schema_url)


def _setup_tracing(
    resource: Resource, settings: Settings, env: Mapping[str, str], problems: list[ConfigProblem]
) -> TracerProvider:
    # The sampler (OTEL_TRACES_SAMPLER), span limits and batch sizes
    # (OTEL_BSP_*) are read by the SDK itself.
    provider = TracerProvider(resource=resource)
    redactor = build_redactor(settings)
    for exporter in load_exporters("traces", env, problems):
        # Redaction wraps each exporter: nothing reaches it unredacted,
        # whatever instrumentation produced the span, and the work runs in the
        # batch processor's export thread, not on the request thread.
        provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(exporter, redactor)))
    return provider


def _setup_metrics(
    resource: Resource, env: Mapping[str, str], problems: list[ConfigProblem]
) -> MeterProvider:
    readers: list[MetricReader] = []
    for exporter in load_exporters("metrics", env, problems):
        if isinstance(exporter, MetricReader):  # e.g. a Prometheus reader
            readers.append(exporter)
        else:
            # OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT are read by the reader;
            # a worker forked mid-export must not inherit its locks held.
            readers.append(ForkSafeMetricReader(exporter))
    provider = MeterProvider(resource=resource, metric_readers=readers, views=metric_views())
    return fork_safe_provider(provider)


def build_redactor(settings: Settings) -> Redactor:
    """The redaction rules of the settings: defaults extended unless replaced."""
    hash_key = None
    if settings.redact_hash:
        key = settings.consumer_hash_key
        hash_key = key.encode() if key else DEFAULT_HASH_KEY
    return Redactor(
        RedactionRules.build(
            extra_keys=settings.redact_keys,
            replace_keys=settings.redact_keys_replace,
            extra_patterns=settings.redact_patterns,
            replace_patterns=settings.redact_patterns_replace,
            allowed_keys=settings.redact_allowed_keys,
            marker=settings.redact_marker,
            hash_key=hash_key,
        )
    )


def _setup_logging(
    resource: Resource,
    settings: Settings,
    env: Mapping[str, str],
    problems: list[ConfigProblem],
    handler: bool,
) -> None:
    """The logger provider, and (without the launcher) OpenTelemetry's logging handler.

    A record made while a request is served gets its route and consumer, and
    every record passes redaction before the exporter sees it.
    """
    exporters = load_exporters("logs", env, problems)
    if not exporters:
        return
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from .request_logs import RequestLogProcessor

    provider = LoggerProvider(resource=resource)
    redactor = build_redactor(settings)
    for exporter in exporters:
        provider.add_log_record_processor(
            RequestLogProcessor(
                RedactingLogRecordProcessor(BatchLogRecordProcessor(exporter), redactor),
                settings.log_records_per_request,
            )
        )
    set_logger_provider(provider)
    automatic = env.get("OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION", "true").strip().lower()
    if handler and automatic == "true":
        from opentelemetry.instrumentation.logging import LoggingInstrumentor

        # What opentelemetry-instrument would run: the handler on the root
        # logger, kept there through logging.basicConfig / dictConfig.
        LoggingInstrumentor().instrument(
            log_handler_level=handler_level(env, problems)
        )
        _show_what_the_console_would()


def _show_what_the_console_would() -> None:
    """The console lines that the logging instrumentor's root handler would stop."""
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    show_what_the_console_would(LoggingInstrumentor._logging_handler)


def handler_level(env: Mapping[str, str], problems: list[ConfigProblem]) -> int:
    """``OTEL_PYTHON_LOG_HANDLER_LEVEL`` read as the logging instrumentor reads it, checked.

    Like the instrumentor: any name ``logging`` knows (``warn`` and ``fatal``
    included), and NOTSET (every level) for anything else.
    """
    variable = "OTEL_PYTHON_LOG_HANDLER_LEVEL"
    raw = env.get(variable, ENVIRONMENT_DEFAULTS[variable])
    level = logging.getLevelName(raw.strip().upper())
    if isinstance(level, int):
        return level
    problems.append(
        ConfigProblem(
            variable,
            raw,
            "expected a logging level (debug, info, warning, error, critical); "
            "every level is exported instead",
        )
    )
    return logging.NOTSET


def metric_views() -> list[View]:
    """Views that drop the stock Flask/WSGI HTTP metrics, which ours replace."""
    return [
        View(meter_name=scope, aggregation=DropAggregation()) for scope in REPLACED_METER_SCOPES
    ]


def load_exporters(
    signal: str, env: Mapping[str, str], problems: list[ConfigProblem]
) -> list[Any]:
    """Instantiate the exporters named by ``OTEL_<SIGNAL>_EXPORTER``.

    Names are looked up in the ``opentelemetry_<signal>_exporter`` entry-point
    group, as the SDK does; ``otlp`` picks http/protobuf or grpc from
    ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``.
    The exporters read their own ``OTEL_EXPORTER_OTLP_*`` variables.
    """
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    raw = env.get(variable, ENVIRONMENT_DEFAULTS[variable])
    names = [name.strip() for name in raw.split(",") if name.strip()]
    available = {ep.name: ep for ep in entry_points(group=f"opentelemetry_{signal}_exporter")}
    exporters: list[Any] = []
    for name in names:
        if name == "none":
            continue
        entry_name = name
        if name == "otlp":
            entry_name, protocol_variable = _otlp_entry_name(signal, env, problems)
            if entry_name not in available and entry_name == _OTLP_PROTOCOLS["grpc"]:
                # grpcio is an extra: most users never need it.
                problems.append(
                    ConfigProblem(
                        protocol_variable,
                        env.get(protocol_variable, ""),
                        "the gRPC exporter is not installed: pip install "
                        "'otel-flask-metrics[grpc]' (or use http/protobuf); nothing is "
                        "exported over OTLP until then",
                    )
                )
                continue
        entry_point = available.get(entry_name)
        if entry_point is None:
            accepted = ", ".join(sorted({"none", "otlp", *available}))
            problems.append(
                ConfigProblem(variable, raw, f"unknown exporter {name!r}; accepted: {accepted}")
            )
            continue
        try:
            factory = entry_point.load()
            if entry_name == export_transport.HTTP_EXPORTER_ENTRY:
                exporters.append(export_transport.build_exporter(factory, signal, env))
            else:
                exporters.append(factory())
            exit_export.watch(exporters[-1])  # its retries at exit are bounded
        except Exception as exc:
            problems.append(ConfigProblem(variable, raw, f"exporter {name!r} failed: {exc}"))
    return exporters


def _otlp_entry_name(
    signal: str, env: Mapping[str, str], problems: list[ConfigProblem]
) -> tuple[str, str]:
    """The exporter entry point for ``otlp`` and the variable that chose it."""
    for variable in otlp_protocol_variables(signal):
        protocol = env.get(variable)
        if protocol is None:
            continue
        entry = _OTLP_PROTOCOLS.get(protocol.strip())
        if entry is not None:
            return entry, variable
        problems.append(
            ConfigProblem(
                variable,
                protocol,
                "expected http/protobuf or grpc; using the default http/protobuf instead",
            )
        )
        break
    return _OTLP_PROTOCOLS["http/protobuf"], "OTEL_EXPORTER_OTLP_PROTOCOL"


def otlp_protocol_variables(signal: str) -> tuple[str, str]:
    """The variables that choose a signal's OTLP protocol, the first set one winning."""
    return f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
