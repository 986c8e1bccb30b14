"""Every Python example of docs/migration.md runs, and does what the guide says.

Each example runs in its own process with in-memory providers set as the
global ones (the examples use the global providers, as users' code does);
the checks below say what request each example gets and what must be exported.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "migration.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", GUIDE, re.DOTALL)

HARNESS = """
import json, sys
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

request = json.loads(sys.argv[1])
namespace = {"__name__": "example"}
exec(compile(sys.stdin.read(), "example", "exec"), namespace)
app = namespace["app"]
if "otel_flask_metrics" not in app.extensions:
    from otel_flask_metrics import FlaskMetrics
    FlaskMetrics(app)  # what opentelemetry-instrument does for the examples without init_app
client = app.test_client()
for name, value in request.get("cookies", {}).items():
    client.set_cookie(name, value)
response = client.open(request["path"], method=request["method"], headers=request.get("headers", {}), buffered=True)
spans = [dict(s.attributes) for s in exporter.get_finished_spans()]
points = {}
for rm in reader.get_metrics_data().resource_metrics:
    for sm in rm.scope_metrics:
        for m in sm.metrics:
            points[m.name] = [dict(p.attributes) for p in m.data.data_points]
print(json.dumps({"status": response.status_code, "spans": spans, "metrics": points}, default=str))
"""

# (request, checks on the result) for each example, in the guide's order.
CHECKS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"method": "GET", "path": "/orders", "headers": {"X-Customer": "cust-9"}},
     {"api.consumer.id": "cust-9"}),
    ({"method": "GET", "path": "/orders"},
     {"api.consumer.id": "acme", "api.consumer.name": "Acme Corp", "api.consumer.group": "enterprise"}),
    ({"method": "GET", "path": "/orders", "headers": {"X-API-Key": "live-key-123456"}},
     {"api.consumer.name": "Acme Corp", "no": ["live-key-123456", "ops@acme.example"]}),
    ({"method": "GET", "path": "/?ref=x", "cookies": {"disable_stat": "True"}},
     {"absent": ["url.query", "client.address"], "http.route": "/"}),
    ({"method": "POST", "path": "/signup"},
     {"metrics": ["user.signup", "signup.external_call.duration"], "http.route": "/signup"}),
]


def test_every_example_has_a_check() -> None:
    assert len(EXAMPLES) == len(CHECKS)


@pytest.mark.parametrize(("index"), range(len(CHECKS)))
def test_example_runs_and_does_what_the_guide_says(index: int) -> None:
    request, expected = CHECKS[index]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HARNESS), json.dumps(request)],
        input=EXAMPLES[index], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 200
    (span,) = outcome["spans"]
    for key, value in expected.items():
        if key == "no":
            for secret in value:
                assert secret not in result.stdout
        elif key == "absent":
            for attribute in value:
                assert attribute not in span
        elif key == "metrics":
            for name in value:
                (point,) = outcome["metrics"][name]
                assert point["http.route"] == expected["http.route"]
        else:
            assert span[key] == value, (key, span)
