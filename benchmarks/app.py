"""The benchmark app and its traffic, defined once for every variant and mode.

A small JSON API: ``GET /items/<int:item_id>`` returns a small object and
``POST /items`` echoes a JSON body. :data:`REQUEST_MIX` is the traffic both
modes send (three reads for one write, a few API keys and user agents, item
ids that vary so only route templates keep cardinality bounded);
:func:`wrk_script` renders the same mix as a wrk Lua script.

:func:`build_app` applies one instrumentation variant. It must run in a fresh
process: the OpenTelemetry providers it sets are process-global.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Flask, jsonify, request


def create_app() -> Flask:
    """The plain app, identical for every variant."""
    app = Flask("bench_api")

    @app.get("/items/<int:item_id>")
    def get_item(item_id: int):  # type: ignore[no-untyped-def]
        return jsonify(id=item_id, name=f"item-{item_id}", price=12.5, tags=["a", "b"])

    @app.post("/items")
    def create_item():  # type: ignore[no-untyped-def]
        body = request.get_json(silent=True)
        if body is None:
            return jsonify(error="expected a JSON body"), 400
        return jsonify(body), 201

    return app


# --- traffic -----------------------------------------------------------------

API_KEYS = (
    "ak_live_3f2a9c1d5e7b8a60",
    "ak_live_91c0ffee42d1b7aa",
    "ak_live_0d15ea5e77fa11ed",
    "ak_live_5ca1ab1ec0debeef",
    "ak_live_b16b00b5deadc0de",
)
USER_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "python-requests/2.32.3",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
)


@dataclass(frozen=True)
class BenchRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes | None = None


def _mix() -> tuple[BenchRequest, ...]:
    out = []
    for i in range(40):
        headers = {
            "User-Agent": USER_AGENTS[i % len(USER_AGENTS)],
            "X-API-Key": API_KEYS[i % len(API_KEYS)],
            "Accept": "application/json",
        }
        if i % 4 == 3:
            body = json.dumps({"name": f"widget-{i}", "price": 12.5, "tags": ["a", "b"]}).encode()
            headers["Content-Type"] = "application/json"
            out.append(BenchRequest("POST", "/items", headers, body))
        else:
            out.append(BenchRequest("GET", f"/items/{1000 + 37 * i}", headers))
    return tuple(out)


#: Forty requests, cycled: 3 GETs for 1 POST, 5 API keys, 3 user agents.
REQUEST_MIX: tuple[BenchRequest, ...] = _mix()


def _lua_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script() -> str:
    """:data:`REQUEST_MIX` as a wrk script; ``done`` prints one JSON line."""
    lines = ["local reqs = {}", "init = function(args)"]
    for r in REQUEST_MIX:
        headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in r.headers.items())
        body = _lua_string(r.body.decode()) if r.body is not None else "nil"
        lines.append(
            f"  reqs[#reqs + 1] = wrk.format({_lua_string(r.method)}, {_lua_string(r.path)}, "
            f"{{{headers}}}, {body})"
        )
    lines += [
        "end",
        "local i = 0",
        "request = function()",
        "  i = i % #reqs + 1",
        "  return reqs[i]",
        "end",
        "done = function(summary, latency, requests)",
        "  local e = summary.errors",
        "  io.write(string.format('WRK_JSON {\"requests\": %d, \"duration_us\": %d, "
        "\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d, "
        "\"p50_us\": %d, \"p99_us\": %d}\\n', summary.requests, summary.duration, "
        "e.connect, e.read, e.write, e.status, e.timeout, "
        "latency:percentile(50), latency:percentile(99)))",
        "end",
    ]
    return "\n".join(lines) + "\n"


# --- variants ----------------------------------------------------------------


def _apitally_app() -> Flask:
    """Apitally 1.0 as its Flask guide sets it up, the consumer from the API key.

    Apitally is an OpenTelemetry distribution too: it exports OTLP (spooled to
    gzip files, then posted) to ``APITALLY_OTLP_ENDPOINT``, pointed here at the
    same local sink as the others' ``OTEL_EXPORTER_OTLP_ENDPOINT``.
    """
    import apitally
    import apitally.flask
    from flask import request

    if "OTEL_EXPORTER_OTLP_ENDPOINT" in os.environ:
        os.environ.setdefault("APITALLY_OTLP_ENDPOINT", os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
    app = create_app()

    @app.before_request
    def identify() -> None:
        key = request.headers.get("X-API-Key")
        if key:
            apitally.set_consumer(key)

    apitally.flask.init(app)
    return app


#: Environment each variant adds to the common one (see ``overhead.py``).
VARIANT_ENV: dict[str, dict[str, str]] = {
    "bare": {},
    "vanilla": {},
    "ofm-full": {"OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key"},
    "ofm-production": {
        "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    "ofm-ua": {
        "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
        "OTEL_FLASK_METRICS_PARSE_USER_AGENT": "true",
    },
    "pfe": {},
    # A write token is required; nothing leaves loopback (the endpoint is the sink).
    "apitally": {"APITALLY_WRITE_TOKEN": "apt_" + "0" * 24},  # the format it checks
}
VARIANTS: tuple[str, ...] = tuple(VARIANT_ENV)


def build_app(variant: str) -> Flask:
    """The app with ``variant``'s instrumentation; sets global providers."""
    if variant == "bare":
        return create_app()
    if variant == "vanilla":
        _vanilla_providers()
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        app = create_app()
        FlaskInstrumentor().instrument_app(app)  # type: ignore[no-untyped-call]  # untyped contrib
        return app
    if variant.startswith("ofm-"):
        import otel_flask_metrics

        otel_flask_metrics.configure()
        app = create_app()
        otel_flask_metrics.FlaskMetrics(app)
        return app
    if variant == "pfe":
        from prometheus_flask_exporter import PrometheusMetrics

        app = create_app()
        # group_by="url_rule": label by route template like the others; the
        # default ("path") would make one series per item id.
        PrometheusMetrics(app, group_by="url_rule")
        return app
    if variant == "apitally":
        return _apitally_app()
    raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def _vanilla_providers() -> None:
    """What ``opentelemetry-instrument`` with opentelemetry-distro builds.

    opentelemetry-distro's configurator is the SDK's own ``_OTelSDKConfigurator``
    unchanged, so it is called here: one TracerProvider with a
    BatchSpanProcessor per trace exporter and one MeterProvider with a
    PeriodicExportingMetricReader per metric exporter, the exporters, sampler,
    BSP sizes and export interval all from ``OTEL_*`` variables, and the
    modules it imports counted in the memory figures.
    """
    from opentelemetry.sdk._configuration import _OTelSDKConfigurator

    _OTelSDKConfigurator().configure(auto_instrumentation_version="bench")


def flush_providers() -> None:
    """Export what is queued now, so a measurement starts with empty queues."""
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush()


def shutdown_providers() -> None:
    """Flush and stop whatever providers are set, so every export reaches the sink."""
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        stop = getattr(provider, "shutdown", None)
        if stop is not None:
            stop()


def variant_from_env() -> str:
    return os.environ["OFM_BENCH_VARIANT"]
