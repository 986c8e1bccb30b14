"""The OTLP/HTTP exporters send over urllib3 only where that sends what requests would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from otel_flask_metrics.export_transport import (
    applicable_proxy,
    build_exporter,
    urllib3_sends_the_same,
)
from tests.e2e.otlp_sink import OtlpSink

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("env", "same"),
    [
        ({}, True),  # the default endpoint, http://localhost:4318
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "HTTP://collector:4318"}, True),
        # The signal's own variable wins over the general one, both ways.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c:4318/v1/traces"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318",
          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, False),  # no scheme: not ours to judge
        # requests honours proxy variables; a bare urllib3 pool does not.
        ({"HTTP_PROXY": "http://proxy:3128"}, False),
        ({"http_proxy": "http://proxy:3128"}, False),
        ({"ALL_PROXY": "http://proxy:3128"}, False),
        ({"HTTPS_PROXY": "http://proxy:3128"}, True),  # not used for an http:// endpoint
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "localhost,127.0.0.1"}, True),
        ({"HTTP_PROXY": "http://proxy:3128", "no_proxy": "*"}, True),
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "example.org"}, False),
        ({"HTTP_PROXY": ""}, True),
        # A credential provider hands the exporter a requests.Session.
        ({"OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "mine"}, False),
        ({"OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER": "mine"}, False),
    ],
)
def test_urllib3_only_where_it_sends_what_requests_would(env: dict[str, str], same: bool) -> None:
    assert urllib3_sends_the_same("traces", env) is same


def test_an_exporter_without_the_transport_argument_is_built_as_the_sdk_builds_it() -> None:
    calls: list[dict[str, Any]] = []

    def old_exporter(**kwargs: Any) -> str:
        calls.append(kwargs)
        if kwargs:
            raise TypeError("unexpected keyword argument '_transport'")
        return "exporter"

    assert build_exporter(old_exporter, "traces", {}) == "exporter"
    assert [set(c) for c in calls] == [{"_transport"}, set()]
    calls.clear()
    assert build_exporter(old_exporter, "traces", {"HTTP_PROXY": "http://p:1"}) == "exporter"
    assert calls == [{}]


EXPORT_ONE_OF_EACH = """
    import json, logging, sys
    import otel_flask_metrics
    from opentelemetry import metrics, trace
    otel_flask_metrics.configure()
    with trace.get_tracer("probe").start_as_current_span("probe-span"):
        metrics.get_meter("probe").create_counter("probe.count").add(1)
        logging.getLogger("probe").warning("probe line")
    from opentelemetry._logs import get_logger_provider
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider(),
                     get_logger_provider()):
        provider.force_flush()
    print(json.dumps({"requests": "requests" in sys.modules}))
"""


def _export_one_of_each(endpoint: str, **extra: str) -> dict[str, bool]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("OTEL_") and not k.lower().endswith("_proxy")
    }
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="probe",
        OTEL_METRIC_EXPORT_INTERVAL="600000", **extra,
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXPORT_ONE_OF_EACH)], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_every_signal_reaches_a_real_endpoint_over_urllib3_without_importing_requests() -> None:
    with OtlpSink() as sink:
        seen = _export_one_of_each(sink.endpoint)
        assert seen == {"requests": False}
        assert [span.name for _, span in sink.spans()] == ["probe-span"]
        assert any(r.body.string_value == "probe line" for _, r in sink.log_records())
        names = {
            m.name
            for request in sink.metrics
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }
        assert "probe.count" in names


def test_behind_a_proxy_variable_the_exporters_keep_requests() -> None:
    # The proxy is this very sink: requests sends it the absolute URL.
    with OtlpSink() as sink:
        seen = _export_one_of_each(
            "http://collector.invalid:4318", HTTP_PROXY=sink.endpoint, NO_PROXY=""
        )
        assert seen == {"requests": True}


@pytest.mark.parametrize(
    ("endpoint", "env", "expected"),
    [
        (
            "http://c:4318",
            {"ALL_PROXY": "http://a:1", "HTTP_PROXY": "http://h:1"},
            ("HTTP_PROXY", "http://h:1"),
        ),
        ("http://c:4318", {"ALL_PROXY": "http://a:1"}, ("ALL_PROXY", "http://a:1")),
        ("http://c:4318", {"HTTPS_PROXY": "http://s:1"}, None),
        ("https://c:4318", {"HTTPS_PROXY": "http://s:1"}, ("HTTPS_PROXY", "http://s:1")),
        ("https://c:4318", {"HTTPS_PROXY": "http://s:1", "NO_PROXY": "c"}, None),
        ("grpc://c:4317", {"ALL_PROXY": "http://a:1"}, None),
    ],
)
def test_the_proxy_a_request_to_the_endpoint_goes_through(
    endpoint: str, env: dict[str, str], expected: tuple[str, str] | None
) -> None:
    assert applicable_proxy(endpoint, env) == expected
