"""The app's log lines reach the log store, found by trace id and by consumer, redacted.

Real binaries on 127.0.0.1: an unchanged app under ``opentelemetry-instrument
gunicorn`` logs a line with a card number and a bearer token while serving a
request; the Collector built from the manifest (the shipped config) sends it to
VictoriaLogs built at the version compose.yaml pins. The line is looked up the
ways Grafana does: by the trace id of the request's span (the Jaeger →
logs link), by consumer, and with every dashboard log panel's LogsQL.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from local_stack import LocalStack, app_service  # type: ignore[import-not-found]
from stack_processes import LOOPBACK, free_port, wait_until  # type: ignore[import-not-found]

from tests.grafana import dashboard_queries as dq

pytestmark = pytest.mark.e2e

APPS = Path(__file__).resolve().parents[1] / "apps"
SERVICE = "log-store-api"
CARD = "4111 1111 1111 1111"
TOKEN = "sk-live-0123456789abcdef"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(tmp_path / "stack", with_alertmanager=False) as running:
        yield running


def logsql(stack: LocalStack, query: str) -> list[dict[str, Any]]:
    """The records a LogsQL query finds (VictoriaLogs answers one JSON object per line)."""
    url = f"{stack.victorialogs_url}/select/logsql/query?" + urllib.parse.urlencode(
        {"query": query}
    )
    with urllib.request.urlopen(url, timeout=5) as response:
        return [json.loads(line) for line in response.read().decode().splitlines() if line]


def _charge_span(traces: Path) -> dict[str, Any] | None:
    """The /charge server span in the Collector's traces file, with its attributes flattened."""
    if not traces.exists():
        return None
    for line in traces.read_text().splitlines():
        for resource_spans in json.loads(line).get("resourceSpans", []):
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    attrs = {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}
                    if attrs.get("http.route") == "/charge":
                        return {"traceId": span["traceId"], **attrs}
    return None


def _eventually(stack: LocalStack, query: str, what: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def any_found() -> bool:
        found[:] = logsql(stack, query)
        return bool(found)

    # A stored record becomes searchable within about a second.
    wait_until(any_found, 30, what, 0.2)
    return found


def test_a_request_log_line_is_found_by_trace_id_and_consumer_redacted(
    stack: LocalStack, tmp_path: Path
) -> None:
    port = free_port()
    stack.add(
        app_service(
            stack,
            tmp_path,
            app="api:app",
            chdir=APPS,
            port=port,
            name="log-store-api",
            env={
                "OTEL_SERVICE_NAME": SERVICE,
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=e2e",
                "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
            },
        )
    )
    response = requests.get(
        f"http://{LOOPBACK}:{port}/charge",
        params={"card": CARD},
        headers={"Authorization": f"Bearer {TOKEN}", "X-API-Key": "key-log-store-0123456789"},
        timeout=10,
    )
    assert response.status_code == 200
    span: dict[str, Any] = {}

    def exported() -> bool:
        span.update(_charge_span(stack.traces_path) or {})
        return bool(span)

    wait_until(exported, 30, "the /charge span in the traces file", 0.2)
    consumer = span["api.consumer.id"]

    # From the trace to its log lines, as Jaeger's tracesToLogsV2 query asks.
    (line,) = _eventually(stack, f'trace_id:="{span["traceId"]}"', "the line by trace id")
    assert line["http.route"] == "/charge"
    assert line["api.consumer.id"] == consumer
    assert (line["service.name"], line["deployment.environment.name"]) == (SERVICE, "e2e")
    assert "charging card" in line["_msg"]
    for field, value in line.items():
        assert CARD not in value and TOKEN not in value, f"{field} holds a secret: {value}"
    # The streams are service and environment, not one per worker.
    assert line["_stream"] == f'{{deployment.environment.name="e2e",service.name="{SERVICE}"}}'

    by_consumer = _eventually(stack, f'api.consumer.id:="{consumer}"', "the line by consumer")
    assert [r["trace_id"] for r in by_consumer] == [span["traceId"]]

    # Every dashboard log panel finds it with "All" selected and with this
    # request's own environment, service, consumer and route selected.
    selections = [
        {"environment": ".*", "service": ".*", "consumer": ".*", "route": ".*"},
        {"environment": "e2e", "service": SERVICE, "consumer": consumer, "route": "/charge"},
    ]
    queries = [
        q for dashboard in dq.load_dashboards().values() for q in dq.iter_log_queries(dashboard)
    ]
    assert queries, "the dashboards have log panels"
    for where, expr in queries:
        for selected in selections:
            query = expr
            for name, value in selected.items():
                query = query.replace(f"${name}", value)
            found = logsql(stack, query)
            assert span["traceId"] in {r.get("trace_id") for r in found}, (where, query)
    # ... and not with another consumer selected.
    other = queries[0][1].replace("$consumer", "someone-else")
    for name, value in selections[0].items():
        other = other.replace(f"${name}", value)
    assert logsql(stack, other) == []
