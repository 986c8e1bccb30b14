"""The distro, the configurator and ``opentelemetry-instrument`` as users run it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_flask_metrics import FlaskMetrics
from otel_flask_metrics.config import ConfigProblem
from otel_flask_metrics.distro import (
    ENVIRONMENT_DEFAULTS,
    FlaskMetricsDistro,
    HashedOnceResource,
    handler_level,
    load_exporters,
    metric_views,
)
from tests.conftest import metric_points

ROOT = Path(__file__).resolve().parents[1]


class RecordingInstrumentor:
    """Stands in for an instrumentor entry point's class: records that it was used."""

    instrumented: list[dict[str, Any]] = []

    def instrument(self, **kwargs: Any) -> None:
        RecordingInstrumentor.instrumented.append(kwargs)


def test_distro_sets_defaults_without_overriding_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    for name in ENVIRONMENT_DEFAULTS:
        if name != "OTEL_EXPORTER_OTLP_PROTOCOL":
            monkeypatch.delenv(name, raising=False)
    FlaskMetricsDistro().configure()
    assert os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert os.environ["OTEL_TRACES_EXPORTER"] == "otlp"
    assert os.environ["OTEL_LOGS_EXPORTER"] == "otlp"
    assert os.environ["OTEL_PYTHON_LOG_HANDLER_LEVEL"] == "info"
    assert os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http"
    assert os.environ["OTEL_PYTHON_CONFIGURATOR"] == "otel_flask_metrics"
    assert os.environ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] == "256"


@pytest.mark.parametrize(
    ("queue", "batch_set_by_user", "expected_batch"),
    [
        ("100", None, "100"),  # our default would exceed the user's queue
        ("4096", None, "256"),
        ("100", "50", "50"),  # the user's own choice is never touched
        ("not-a-number", None, "256"),  # the SDK reports that variable itself
    ],
)
def test_batch_size_default_fits_the_users_queue(
    monkeypatch: pytest.MonkeyPatch, queue: str, batch_set_by_user: str | None, expected_batch: str
) -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    for name in ENVIRONMENT_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", queue)
    if batch_set_by_user is not None:
        monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", batch_set_by_user)
    FlaskMetricsDistro().configure()
    assert os.environ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] == expected_batch
    if queue.isdigit():
        # The SDK accepts what we leave it (it refuses a batch over the queue).
        BatchSpanProcessor(InMemorySpanExporter()).shutdown()


def test_disabled_distro_sets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_FLASK_METRICS_DISABLED", "true")
    FlaskMetricsDistro().configure()
    assert "OTEL_TRACES_EXPORTER" not in os.environ


def test_distro_skips_the_stock_flask_instrumentor_only() -> None:
    RecordingInstrumentor.instrumented.clear()
    target = f"{__name__}:RecordingInstrumentor"
    distro = FlaskMetricsDistro()
    distro.load_instrumentor(EntryPoint("flask", target, "opentelemetry_instrumentor"))
    assert RecordingInstrumentor.instrumented == []
    distro.load_instrumentor(EntryPoint("requests", target, "opentelemetry_instrumentor"), x=1)
    assert RecordingInstrumentor.instrumented == [{"x": 1}]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, [HttpSpanExporter]),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, [GrpcSpanExporter]),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, [GrpcSpanExporter]),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, [HttpSpanExporter, "ConsoleSpanExporter"]),
    ],
)
def test_trace_exporters_follow_the_standard_variables(
    env: dict[str, str], expected: list[Any]
) -> None:
    problems: list[ConfigProblem] = []
    exporters = load_exporters("traces", env, problems)
    assert problems == []
    names = [type(e) if not isinstance(x, str) else type(e).__name__ for e, x in zip(exporters, expected)]
    assert names == expected and len(exporters) == len(expected)
    for exporter in exporters:
        exporter.shutdown()


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkn"}, "OTEL_TRACES_EXPORTER", "unknown exporter 'zipkn'"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL", "expected http/protobuf or grpc"),
    ],
)
def test_bad_standard_variables_are_reported_not_raised(
    env: dict[str, str], variable: str, fragment: str
) -> None:
    problems: list[ConfigProblem] = []
    exporters = load_exporters("traces", env, problems)
    assert [p.variable for p in problems] == [variable]
    assert fragment in str(problems[0])
    for exporter in exporters:
        exporter.shutdown()


def test_metric_exporter_defaults_to_otlp_http() -> None:
    problems: list[ConfigProblem] = []
    (exporter,) = load_exporters("metrics", {}, problems)
    assert isinstance(exporter, OTLPMetricExporter)
    exporter.shutdown()


def test_views_drop_the_stock_flask_metrics_so_nothing_is_counted_twice(
    tracer_provider: Any,
) -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], views=metric_views())
    app = Flask(__name__)
    app.add_url_rule("/x", "x", lambda: "x")
    FlaskInstrumentor().instrument_app(app, meter_provider=meter_provider, tracer_provider=tracer_provider)
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        app.test_client().get("/x", buffered=True)
        data = reader.get_metrics_data()
        scopes = {sm.scope.name for rm in data.resource_metrics for sm in rm.scope_metrics if sm.metrics}
        assert scopes == {"otel_flask_metrics.extension"}
        (point,) = metric_points(reader, "http.server.request.duration")
        assert point.count == 1
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        meter_provider.shutdown()


def _run(code: str, env: dict[str, str], *, instrument: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", textwrap.dedent(code)]
    if instrument:
        argv = ["opentelemetry-instrument", *argv]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full_env.update(env)
    return subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=120, cwd=ROOT)


PROBE_APP = """
    import json
    import flask
    from opentelemetry import trace, metrics
    from otel_flask_metrics.distro import configured
    app = flask.Flask("probe")
    app.add_url_rule("/items/<int:i>", "item", lambda i: {"i": i})
    response = app.test_client().get(
        "/items/3?access_token=tok-supersecret-0042", headers={"X-API-Key": "k-123"}, buffered=True
    )
    providers = configured()
    print(json.dumps({
        "status": response.status_code,
        "flask_class_replaced": flask.Flask.__module__ != "flask.app",
        "extension": "otel_flask_metrics" in app.extensions,
        "configured": providers is not None,
        "resource": dict(providers.tracer_provider.resource.attributes) if providers else None,
        "resource_class": type(providers.tracer_provider.resource).__name__ if providers else None,
        "meter_resource_shared": providers is not None
        and providers.meter_provider._sdk_config.resource is providers.tracer_provider.resource,
    }))
"""


def _last_json(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith("{\"status\"")]
    assert lines, output
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def test_opentelemetry_instrument_uses_our_distro_configurator_and_instrumentor() -> None:
    result = _run(
        PROBE_APP,
        {
            "OTEL_SERVICE_NAME": "probe-api",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
            "OTEL_FLASK_METRICS_ENVIRONMENT": "staging",
        },
        instrument=True,
    )
    assert result.returncode == 0, result.stderr
    probe = _last_json(result.stdout)
    assert probe["status"] == 200
    assert probe["extension"] and probe["configured"]
    assert not probe["flask_class_replaced"], "flask.Flask is not replaced"
    resource = probe["resource"]
    assert resource["service.name"] == "probe-api"
    assert resource["deployment.environment.name"] == "staging"
    assert resource["telemetry.distro.name"] == "otel-flask-metrics"
    assert resource["service.instance.id"]
    assert probe["resource_class"] == "HashedOnceResource"
    assert probe["meter_resource_shared"]
    # The console exporter printed our server span, with the consumer pseudonymised.
    assert '"http.route": "/items/<int:i>"' in result.stdout
    assert '"api.consumer.id"' in result.stdout
    assert "k-123" not in result.stdout
    # Redaction sits between every exporter and the spans, in the export path.
    assert "tok-supersecret-0042" not in result.stdout
    assert "access_token=[REDACTED]" in result.stdout


def test_explicit_init_app_under_the_launcher_does_not_double_instrument() -> None:
    code = """
        import flask, json
        from otel_flask_metrics import FlaskMetrics
        app = flask.Flask("probe")
        app.add_url_rule("/", "i", lambda: "ok")
        FlaskMetrics().init_app(app)
        FlaskMetrics(app)
        print(json.dumps({"status": 0, "wrapped_twice": type(app.wsgi_app.wrapped).__name__ == "Middleware"}))
    """
    result = _run(code, {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}, instrument=True)
    assert result.returncode == 0, result.stderr
    assert _last_json(result.stdout)["wrapped_twice"] is False
    assert "already set up" not in result.stderr, "no warning for the expected no-op"


def test_disabled_under_the_launcher_leaves_flask_alone() -> None:
    result = _run(PROBE_APP, {"OTEL_FLASK_METRICS_DISABLED": "true"}, instrument=True)
    assert result.returncode == 0, result.stderr
    probe = _last_json(result.stdout)
    assert probe["status"] == 200
    assert not probe["extension"] and not probe["configured"]


def test_a_bad_variable_is_one_clear_line_and_the_app_still_serves() -> None:
    result = _run(
        PROBE_APP,
        {"OTEL_FLASK_METRICS_MAX_CONSUMERS": "lots", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
        instrument=True,
    )
    assert result.returncode == 0, result.stderr
    assert _last_json(result.stdout)["status"] == 200
    lines = [line for line in result.stderr.splitlines() if "OTEL_FLASK_METRICS_MAX_CONSUMERS" in line]
    assert len(lines) == 1, result.stderr
    assert "'lots'" in lines[0] and "positive integer" in lines[0] and "1000" in lines[0]


def test_a_bad_sdk_variable_is_one_line_naming_it_at_startup() -> None:
    """The SDK's own warning ("Found invalid value for export interval") names no variable."""
    result = _run(
        PROBE_APP,
        {"OTEL_METRIC_EXPORT_INTERVAL": "15s", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
        instrument=True,
    )
    assert result.returncode == 0, result.stderr
    assert _last_json(result.stdout)["status"] == 200
    lines = [line for line in result.stderr.splitlines() if "OTEL_METRIC_EXPORT_INTERVAL" in line]
    assert len(lines) == 1, result.stderr
    assert "'15s'" in lines[0] and "milliseconds" in lines[0] and "60000" in lines[0]


def test_configure_is_the_programmatic_path_for_app_factories() -> None:
    code = """
        import flask, json
        import otel_flask_metrics
        providers = otel_flask_metrics.configure(consumer_header="X-Key")
        again = otel_flask_metrics.configure()
        app = flask.Flask("factory")
        app.add_url_rule("/", "i", lambda: "ok")
        otel_flask_metrics.FlaskMetrics(app)
        r = app.test_client().get("/", buffered=True)
        print(json.dumps({"status": r.status_code, "same": providers is again,
                          "header": providers.settings.consumer_header}))
    """
    result = _run(code, {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"})
    assert result.returncode == 0, result.stderr
    probe = _last_json(result.stdout)
    assert probe == {"status": 200, "same": True, "header": "X-Key"}


def test_another_distro_installed_beside_ours_is_resolved_by_the_documented_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.instrumentation.auto_instrumentation import _load

    others = [
        EntryPoint("other", f"{__name__}:RecordingInstrumentor", "opentelemetry_distro"),
        EntryPoint("otel_flask_metrics", "otel_flask_metrics.distro:FlaskMetricsDistro", "opentelemetry_distro"),
    ]
    monkeypatch.setattr(_load, "entry_points", lambda group: others if group == "opentelemetry_distro" else [])
    monkeypatch.setenv("OTEL_PYTHON_DISTRO", "otel_flask_metrics")
    assert isinstance(_load._load_distro(), FlaskMetricsDistro)


def test_the_resource_is_hashed_once_and_stays_so_through_merges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.resources import Resource

    resource = HashedOnceResource({"service.name": "api", "k": 1}, "https://schema")
    plain = Resource({"service.name": "api", "k": 1}, "https://schema")
    assert resource == plain and hash(resource) == hash(plain), "interchangeable with Resource"
    json_calls = 0
    import opentelemetry.sdk.resources as resources_module

    original = resources_module.dumps

    def counting(*args: Any, **kwargs: Any) -> str:
        nonlocal json_calls
        json_calls += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(resources_module, "dumps", counting)
    for _ in range(100):
        hash(resource)
    assert json_calls == 0, "the hash was computed once, at construction"
    # What the SDK does to a provider's resource after a fork.
    renewed = resource.merge(Resource({"service.instance.id": "new"}))
    assert isinstance(renewed, HashedOnceResource)
    assert renewed.attributes["service.instance.id"] == "new"
    assert hash(renewed) == hash(Resource(dict(renewed.attributes), renewed.schema_url))



def test_grpc_chosen_without_the_extra_exports_nothing_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """grpcio is an extra: without it, one problem line instead of a crash or a guess."""
    from otel_flask_metrics import distro

    real = distro.entry_points
    monkeypatch.setattr(
        distro,
        "entry_points",
        lambda group: [ep for ep in real(group=group) if ep.name != "otlp_proto_grpc"],
    )
    problems: list[ConfigProblem] = []
    assert load_exporters("traces", {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, problems) == []
    (problem,) = problems
    assert problem.variable == "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    assert "pip install 'otel-flask-metrics[grpc]'" in problem.message


# Traces and metrics off; logs exported at the distro's default, to a loopback
# port where nothing listens (refused at once).
LOGS_TO_A_CLOSED_PORT = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
}

_HANDLERS_PROBE = """
    import json, logging
    {setup}
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggingHandler as DeprecatedSdkHandler
    handlers = logging.getLogger().handlers
    print(json.dumps({{
        "status": 0,
        "maintained": sum(isinstance(h, LoggingHandler) for h in handlers),
        "sdk": sum(isinstance(h, DeprecatedSdkHandler) for h in handlers),
        "levels": [h.level for h in handlers if isinstance(h, LoggingHandler)],
    }}))
"""


def test_no_logging_handler_when_no_log_is_exported() -> None:
    """Python's last-resort stderr output keeps working when logs stay in the process."""
    env = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    result = _run(_HANDLERS_PROBE.format(setup=""), env, instrument=True)
    assert result.returncode == 0, result.stderr
    assert _last_json(result.stdout)["maintained"] == 0


@pytest.mark.parametrize("launcher", [True, False], ids=["opentelemetry-instrument", "configure()"])
def test_one_maintained_logging_handler_from_info_either_way(launcher: bool) -> None:
    """The launcher's logging instrumentor installs it, configure() does without it: never both."""
    setup = "" if launcher else "import otel_flask_metrics; otel_flask_metrics.configure()"
    env = LOGS_TO_A_CLOSED_PORT
    result = _run(_HANDLERS_PROBE.format(setup=setup), env, instrument=launcher)
    assert result.returncode == 0, result.stderr
    probe = _last_json(result.stdout)
    assert probe == {"status": 0, "maintained": 1, "sdk": 0, "levels": [logging.INFO]}


def test_a_500s_traceback_still_reaches_the_console_with_logs_exported() -> None:
    """Flask adds its console handler only when no handler would show the app's
    records, and OpenTelemetry's on the root logger counts as one."""
    code = """
        import flask, json
        app = flask.Flask("probe")
        app.add_url_rule("/", "boom", lambda: 1 / 0)
        print(json.dumps({"status": app.test_client().get("/").status_code}))
    """
    env = LOGS_TO_A_CLOSED_PORT
    result = _run(code, env, instrument=True)
    assert result.returncode == 0, result.stderr
    assert _last_json(result.stdout)["status"] == 500
    assert "Exception on / [GET]" in result.stderr
    assert "ZeroDivisionError" in result.stderr


def test_basicconfig_after_configure_still_works_and_keeps_the_export_handler() -> None:
    code = """
        import json, logging
        import otel_flask_metrics
        from opentelemetry.instrumentation.logging.handler import LoggingHandler
        otel_flask_metrics.configure()
        logging.basicConfig(level=logging.INFO)
        root = logging.getLogger()
        print(json.dumps({"status": 0, "level": root.level,
                          "kinds": sorted(type(h).__name__ for h in root.handlers)}))
    """
    env = LOGS_TO_A_CLOSED_PORT
    result = _run(code, env)
    assert result.returncode == 0, result.stderr
    probe = _last_json(result.stdout)
    assert probe == {"status": 0, "level": logging.INFO, "kinds": ["LoggingHandler", "StreamHandler"]}


def test_an_app_that_configures_logging_after_it_is_created_prints_each_line_once() -> None:
    code = """
        import flask, json, logging
        app = flask.Flask("probe")
        logging.basicConfig(level=logging.INFO, format="root: %(message)s")
        app.logger.warning("a line to see once")
        print(json.dumps({"status": 0}))
    """
    env = LOGS_TO_A_CLOSED_PORT
    result = _run(code, env, instrument=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("a line to see once") == 1, result.stderr
    assert "root: a line to see once" in result.stderr


@pytest.mark.parametrize(
    ("raw", "level"), [("warn", logging.WARNING), ("FATAL", logging.CRITICAL), (" debug ", logging.DEBUG)]
)
def test_the_handler_level_is_read_as_the_instrumentor_reads_it(raw: str, level: int) -> None:
    problems: list[Any] = []
    assert handler_level({"OTEL_PYTHON_LOG_HANDLER_LEVEL": raw}, problems) == level
    assert problems == []


#: Logs exported to a closed port, given up on after a second (the exit flush retries until then).
QUICK_TO_FAIL = {**LOGS_TO_A_CLOSED_PORT, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}


@pytest.mark.parametrize("launcher", [True, False], ids=["opentelemetry-instrument", "configure()"])
def test_a_library_warning_still_reaches_the_console_with_logs_exported(launcher: bool) -> None:
    """Python's last-resort output, which OpenTelemetry's root handler stops, is shown as before."""
    setup = "" if launcher else "import otel_flask_metrics; otel_flask_metrics.configure()"
    code = f"""
        import json, logging
        {setup}
        logging.getLogger("somelib").warning("a library warning")
        logging.getLogger("somelib").info("an info line Python would not show")
        logging.basicConfig(format="root: %(message)s")
        logging.getLogger("somelib").warning("after basicConfig")
        print(json.dumps({{"status": 0}}))
    """
    result = _run(code, QUICK_TO_FAIL, instrument=launcher)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines.count("a library warning") == 1, result.stderr
    assert "an info line Python would not show" not in result.stderr
    # Once the app configures logging, its own handler shows the line, once.
    assert result.stderr.count("after basicConfig") == 1, result.stderr
    assert "root: after basicConfig" in lines


def test_werkzeugs_lines_still_reach_the_console_with_logs_exported() -> None:
    """Werkzeug adds its console handler only when no handler at its level exists."""
    code = """
        import json
        from werkzeug._internal import _log
        _log("info", " * Running on http://127.0.0.1:1")
        print(json.dumps({"status": 0}))
    """
    result = _run(code, QUICK_TO_FAIL, instrument=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines().count(" * Running on http://127.0.0.1:1") == 1, result.stderr


def test_a_failed_export_is_reported_on_the_console() -> None:
    """With no Collector listening, the exporter's warning is what tells the user."""
    code = """
        import json
        from opentelemetry import trace
        with trace.get_tracer("probe").start_as_current_span("work"):
            pass
        trace.get_tracer_provider().force_flush(20_000)
        print(json.dumps({"status": 0}))
    """
    env = {**QUICK_TO_FAIL, "OTEL_TRACES_EXPORTER": "otlp"}
    result = _run(code, env, instrument=True)
    assert result.returncode == 0, result.stderr
    # "Transient error … retrying", or at the deadline "Failed to export spans batch …".
    assert "spans batch" in result.stderr, result.stderr


def test_a_bad_variable_is_one_line_with_logs_exported() -> None:
    code = """
        import json
        import otel_flask_metrics
        otel_flask_metrics.configure()
        print(json.dumps({"status": 0}))
    """
    env = {**QUICK_TO_FAIL, "OTEL_FLASK_METRICS_MAX_CONSUMERS": "lots"}
    result = _run(code, env)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "OTEL_FLASK_METRICS_MAX_CONSUMERS" in line]
    assert len(lines) == 1, result.stderr
