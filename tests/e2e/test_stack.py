"""The shipped stack, end to end, on real binaries: app -> Collector -> Prometheus.

The Collector is built from collector-config/builder-manifest.yaml and runs the
shipped collector-config/otelcol-config.yaml (plus a file exporter layered on
top, since no trace store runs here); Prometheus runs the shipped
prometheus/prometheus.yml and alerts.yml with only target addresses rewritten;
the app runs under ``opentelemetry-instrument gunicorn -w 2``. Everything is
started by scripts/stack.py, the same code as the no-Docker quick start.

A known mix of requests goes in; the test asserts exact numbers through
Prometheus' HTTP API, runs every dashboard query, and searches everything the
stack stored for the secrets it sent.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from otel_flask_metrics.metrics import DURATION_BUCKETS
from otel_flask_metrics.redaction import pseudonymize
from tests.e2e.file_export import exported_spans, file_export_stack
from tests.grafana import dashboard_queries as dq

from stack import (  # type: ignore[import-not-found]
    LOOPBACK,
    LocalStack,
    app_service,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
APPS = HERE.parent / "apps"
SERVICE = "e2e-stack"
ENVIRONMENT = "e2e"
HASH_KEY = "stack-test-hash-key"
API_KEY = "ik_live_4f9a8b7c6d5e4f3a2b1c"  # initech's credential: must never be stored
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhY21lIn0.c2lnbmF0dXJlLXNlY3JldA"
QUERY_TOKEN = "qtok-7f3e2d1c0b9a8f7e"
PASSWORD = "pw-Correct-Horse-42"
CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@customer.example"
SECRETS = (API_KEY, BEARER.split()[1], QUERY_TOKEN, PASSWORD, CARD, EMAIL)
ITEM = {"name": "widget", "tags": ["a", "b"], "price": 12.5,
        "owner": {"password": PASSWORD, "card": CARD, "contact": EMAIL}}
ITEM_BYTES = len(json.dumps(ITEM).encode())
INVALID_BODY = b"this is not json"
INITECH = pseudonymize(API_KEY, HASH_KEY.encode())


@dataclass
class RunningStack:
    stack: LocalStack
    export_dir: Path
    total: int

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", (promql, body)
        return body["data"]["result"]  # type: ignore[no-any-return]

    def values(self, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {
            tuple(sample["metric"].get(label, "") for label in labels): float(sample["value"][1])
            for sample in self.query(promql)
        }


Request = tuple[str, str, dict[str, str], int, dict[str, Any]]


def known_mix() -> list[Request]:
    """The traffic whose numbers the test knows: (method, path, headers, status, kwargs)."""
    acme = {"X-Tenant": "acme", "Authorization": BEARER}
    globex = {"X-Customer": "globex"}
    initech = {"X-API-Key": API_KEY}
    mix: list[Request] = [("GET", f"/items/{i}", acme, 200, {}) for i in range(1, 6)]
    mix.append(("GET", f"/items/2?access_token={QUERY_TOKEN}&page=2&email={EMAIL}", acme, 200, {}))
    mix += [("POST", "/items", acme, 201, {"json": ITEM})] * 3
    mix.append(("GET", "/fail", acme, 500, {}))
    mix += [("GET", "/stream", globex, 200, {})] * 2
    invalid = {**globex, "Content-Type": "application/json"}
    mix += [("POST", "/items", invalid, 400, {"data": INVALID_BODY})] * 2
    mix.append(("GET", "/items/5000", globex, 404, {}))
    mix += [("GET", "/items/7", initech, 200, {})] * 4
    mix.append(("POST", "/upload", initech, 200, {"data": iter([b"u" * 700] * 3)}))  # chunked
    mix.append(("GET", "/no/such/path", {}, 404, {}))
    return mix


def send(base: str, requests_: list[Request]) -> None:
    for method, path, headers, status, kwargs in requests_:
        response = requests.request(method, base + path, headers=headers, timeout=10, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        if path == "/stream":
            assert len(response.content) == 5000


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    work = tmp_path_factory.mktemp("stack")
    stack, export_dir = file_export_stack(work)
    stack.start()
    try:
        port = free_port()
        app = stack.add(
            app_service(
                stack, work, app="api:app", chdir=APPS, port=port, name="api",
                env={
                    "OTEL_SERVICE_NAME": SERVICE,
                    "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment.name={ENVIRONMENT}",
                    "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
                    "OTEL_FLASK_METRICS_CONSUMER_HASH_KEY": HASH_KEY,
                    "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "/health",
                    # Capture everything a debugging team would turn on: the
                    # redaction must still keep every secret out.
                    "OTEL_FLASK_METRICS_CAPTURE_BODIES": "true",
                    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": ".*",
                    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": ".*",
                },
            ),
            ready_timeout=60,
        )
        mix = known_mix()
        result = RunningStack(stack, export_dir, len(mix))

        def counted(expected: int) -> Callable[[], bool]:
            def check() -> bool:
                samples = result.query(
                    f'sum(http_server_request_duration_seconds_count{{service_name="{SERVICE}"}})'
                )
                return bool(samples) and float(samples[0]["value"][1]) >= expected

            return check

        # Two interleaved waves, so that rate() panels see the same series grow
        # between samples (the first sample of a new series has no rate).
        base = f"http://{LOOPBACK}:{port}"
        first, second = mix[::2], mix[1::2]
        half = len(first)
        try:
            send(base, first)
            wait_until(counted(half), 60, f"{half} requests counted in Prometheus", 0.5)
            send(base, second)
            wait_until(counted(len(mix)), 60, f"{len(mix)} requests counted in Prometheus", 0.5)
        except TimeoutError as exc:
            assert stack.collector is not None
            raise AssertionError(
                f"{exc}\ncollector log:\n{stack.collector.log_tail()}\napp log:\n{app.log_tail()}"
            ) from None
        # rate() needs two samples in its window: wait until every series
        # has a few exports after the traffic.
        def rate_ready() -> bool:
            samples = result.query(
                f'min(count_over_time(http_server_request_duration_seconds_count{{service_name="{SERVICE}"}}[1m]))'
            )
            return bool(samples) and float(samples[0]["value"][1]) >= 3

        wait_until(rate_ready, 60, "three samples of every series", 0.5)
        yield result
    finally:
        stack.stop()


def test_request_counts_per_route_and_status_are_exact(running: RunningStack) -> None:
    counts = running.values(
        f'sum by (http_route, http_response_status_code) '
        f'(http_server_request_duration_seconds_count{{service_name="{SERVICE}"}})',
        "http_route", "http_response_status_code",
    )
    assert counts == {
        ("/items/<int:item_id>", "200"): 10,
        ("/items", "201"): 3,
        ("/fail", "500"): 1,
        ("/stream", "200"): 2,
        ("/items", "400"): 2,
        ("/items/<int:item_id>", "404"): 1,
        ("/upload", "200"): 1,
        ("", "404"): 1,
    }
    assert sum(counts.values()) == running.total


def test_request_counts_per_consumer_are_exact(running: RunningStack) -> None:
    counts = running.values(
        f'sum by (api_consumer_id, api_consumer_group) '
        f'(http_server_request_duration_seconds_count{{service_name="{SERVICE}"}})',
        "api_consumer_id", "api_consumer_group",
    )
    assert counts == {
        ("acme", "enterprise"): 10,
        ("globex", ""): 5,
        (INITECH, ""): 5,
        ("", ""): 1,
    }


def test_error_counts(running: RunningStack) -> None:
    errors = running.values(
        f'sum by (error_type) (http_server_request_duration_seconds_count{{service_name="{SERVICE}", error_type!=""}})',
        "error_type",
    )
    assert errors == {("RuntimeError",): 1}
    client_errors = running.values(
        f'sum(http_server_request_duration_seconds_count{{service_name="{SERVICE}", http_response_status_code=~"4.."}})'
    )
    assert client_errors == {(): 4}


def test_payload_size_sums_are_exact(running: RunningStack) -> None:
    request_bytes = running.values(
        f'sum by (http_route) (http_server_request_body_size_bytes_sum{{service_name="{SERVICE}"}})',
        "http_route",
    )
    assert request_bytes[("/items",)] == 3 * ITEM_BYTES + 2 * len(INVALID_BODY)
    assert request_bytes[("/upload",)] == 2100
    response_bytes = running.values(
        f'sum by (http_route) (http_server_response_body_size_bytes_sum{{service_name="{SERVICE}"}})',
        "http_route",
    )
    assert response_bytes[("/stream",)] == 10000


def test_latency_histogram_has_the_semantic_convention_buckets(running: RunningStack) -> None:
    buckets = running.values(
        f'count by (le) (http_server_request_duration_seconds_bucket{{service_name="{SERVICE}"}})', "le"
    )
    expected = {float(b) for b in DURATION_BUCKETS} | {float("inf")}
    assert {float(le) for (le,) in buckets} == expected


def test_service_and_environment_are_filterable_labels(running: RunningStack) -> None:
    filtered = running.values(
        f'sum(http_server_request_duration_seconds_count{{service_name="{SERVICE}", '
        f'deployment_environment_name="{ENVIRONMENT}"}})'
    )
    assert filtered == {(): running.total}
    instances = running.values(
        f'count by (service_instance_id) (http_server_request_duration_seconds_count{{service_name="{SERVICE}"}})',
        "service_instance_id",
    )
    assert all(instance for (instance,) in instances), "every worker has its service.instance.id"


def test_no_secret_reaches_any_label_or_exported_trace(running: RunningStack) -> None:
    with urllib.request.urlopen(f"{running.stack.prometheus_url}/api/v1/labels", timeout=10) as r:
        labels = json.load(r)["data"]
    stored: list[str] = []
    for label in labels:
        with urllib.request.urlopen(f"{running.stack.prometheus_url}/api/v1/label/{label}/values", timeout=10) as r:
            stored.extend(json.load(r)["data"])
    exported = "".join(p.read_text() for p in running.export_dir.iterdir())
    assert exported, "the Collector wrote what it exported"
    for secret in SECRETS:
        assert not [v for v in stored if secret in v], f"{secret!r} is in a Prometheus label"
        assert secret not in exported, f"{secret!r} is in what the Collector exported"


def test_traces_arrived_with_consumer_attributes(running: RunningStack) -> None:
    def traced() -> bool:
        return len(exported_spans(running.export_dir)) >= running.total

    wait_until(traced, 30, "every server span in the Collector's file export", 0.5)
    spans = exported_spans(running.export_dir)
    assert len(spans) == running.total
    acme = [s for s in spans if s["attrs"].get("api.consumer.id") == "acme"]
    assert len(acme) == 10
    assert all(s["attrs"]["api.consumer.name"] == "Tenant acme" for s in acme)
    assert all(s["attrs"]["api.consumer.group"] == "enterprise" for s in acme)
    with_query = [s for s in acme if "url.query" in s["attrs"]]
    assert len(with_query) == 1 and "page=2" in with_query[0]["attrs"]["url.query"]
    # Captured bodies arrived, redacted but still useful.
    posted = [s for s in acme if s["attrs"].get("http.route") == "/items" and "http.request.body.content" in s["attrs"]]
    assert len(posted) == 3
    body = json.loads(posted[0]["attrs"]["http.request.body.content"])
    assert body["name"] == "widget" and body["owner"]["password"] != PASSWORD


# --- every dashboard query against this Prometheus ---------------------------

# Panels that are rightly empty here: no alert fires in a test this short, and
# in-flight requests are zero-valued gauges with no consumer or route label.
MAY_BE_EMPTY_WITH_ALL = {"Active alerts (ALERTS)", "Alerts over time", "Alert list"}


def _all_queries() -> list[tuple[str, str, str]]:
    return [
        (uid, title, expr)
        for uid, dashboard in dq.load_dashboards().items()
        for title, expr in dq.iter_queries(dashboard)
    ]


def test_every_dashboard_query_returns_data_with_all(running: RunningStack) -> None:
    empty = []
    for uid, title, expr in _all_queries():
        # $__interval is 1s here: the whole run lasts seconds, not hours.
        query = dq.substitute(expr, {}, rate_interval="1m", range_="1h", interval="1s")
        if not running.query(query) and title not in MAY_BE_EMPTY_WITH_ALL:
            empty.append(f"{uid} / {title}: {query}")
    assert not empty, "queries that returned nothing:\n" + "\n".join(empty)


@pytest.mark.parametrize(
    "selection",
    [{"consumer": "acme"}, {"route": "/items/<int:item_id>"}, {"consumer_group": "enterprise"}],
    ids=["consumer", "route", "group"],
)
def test_every_dashboard_query_runs_with_a_concrete_selection(
    running: RunningStack, selection: dict[str, str]
) -> None:
    variables = {"service": SERVICE, "environment": ENVIRONMENT, **selection}
    answered = 0
    for _uid, _title, expr in _all_queries():
        running.query(dq.substitute(expr, variables, rate_interval="1m", range_="1h", interval="15s"))
        answered += 1
    assert answered > 30


def _panel_query(uid: str, title: str, column: int = 0) -> str:
    queries = [expr for t, expr in dq.iter_queries(dq.load_dashboards()[uid]) if t == title]
    return queries[column]


def test_consumers_dashboard_shows_the_exact_numbers(running: RunningStack) -> None:
    def column(index: int) -> dict[tuple[str, ...], float]:
        query = dq.substitute(_panel_query("ofm-consumers", "Consumers", index), {}, rate_interval="1m", range_="1h")
        return running.values(query, "api_consumer_id")

    assert column(0) == {("acme",): 10, ("globex",): 5, (INITECH,): 5, ("",): 1}
    errors = column(1)
    assert (errors[("acme",)], errors[("globex",)], errors[(INITECH,)]) == (1, 3, 0)
    bytes_in = column(4)
    assert bytes_in[("acme",)] == 3 * ITEM_BYTES
    assert bytes_in[("globex",)] == 2 * len(INVALID_BODY)
    assert bytes_in[(INITECH,)] == 2100
    assert column(5)[("globex",)] >= 10000


def test_overview_totals_are_exact(running: RunningStack) -> None:
    def single(title: str) -> float:
        query = dq.substitute(_panel_query("ofm-overview", title), {}, rate_interval="1m", range_="1h")
        ((value,),) = [tuple(v.values()) for v in [running.values(query)]]
        return value

    assert single("Requests in range") == running.total
    assert single("5xx ratio in range") == pytest.approx(1 / running.total)
    assert single("4xx ratio in range") == pytest.approx(4 / running.total)
    assert single("Active consumers") == 3


def test_latency_exemplars_point_at_exported_traces(running: RunningStack) -> None:
    """The exemplars Grafana's latency panels show carry trace ids of real traces."""
    import time as _time

    now = _time.time()
    url = f"{running.stack.prometheus_url}/api/v1/query_exemplars?" + urllib.parse.urlencode(
        {
            "query": f'http_server_request_duration_seconds_bucket{{service_name="{SERVICE}"}}',
            "start": now - 3600,
            "end": now + 60,
        }
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        series = json.load(response)["data"]
    trace_ids = {
        exemplar["labels"].get("trace_id") for s in series for exemplar in s["exemplars"]
    }
    trace_ids.discard(None)
    assert trace_ids, "no exemplar with a trace_id reached Prometheus"
    exported = {span["traceId"] for span in exported_spans(running.export_dir)}
    assert trace_ids <= exported, "every exemplar opens a trace the Collector exported"
