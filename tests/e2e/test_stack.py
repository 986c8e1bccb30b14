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

The last section runs ``scripts/stack.py`` itself, as a user does: the venv's
tools found without activation, the Prometheus compose.yaml pins chosen when it
is built, every endpoint printed and answering, the demo API's port chosen or
the demo left out, the logs kept after Ctrl-C, and one clear line when a tool
is missing.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from otel_flask_metrics.metrics import DURATION_BUCKETS
from otel_flask_metrics.redaction import pseudonymize
from tests.e2e.file_export import exported_spans, file_export_stack
from tests.grafana import dashboard_queries as dq

from local_stack import LocalStack, app_service  # type: ignore[import-not-found]
from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    ROOT,
    MissingTool,
    find_prometheus,
    free_port,
    http_status,
    pinned_prometheus_version,
    tool_cache,
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
    port = free_port()
    # The app's health URL is probed, as the demo API's is by stack.py, and a
    # port where nothing listens, so the uptime panels have a failure to show.
    probe_urls = [f"http://{LOOPBACK}:{port}/health", f"http://{LOOPBACK}:{free_port()}/health"]
    stack, export_dir = file_export_stack(work, probe_urls=probe_urls)
    stack.start()
    try:
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

        # First the probes, before the traffic, so that the 1m rate() windows
        # of the dashboard test still hold the traffic: two successful probes
        # of the app, 15s apart, so the rules of 15s groups have read one; then
        # every rule group evaluated once more (the slowest every minute), so
        # recordings of recordings exist too.
        def probed() -> bool:
            selector = f'probe_success{{job="uptime", instance="{probe_urls[0]}"}}'
            samples = result.query(f"sum_over_time({selector}[1m])")
            return bool(samples) and float(samples[0]["value"][1]) >= 2

        wait_until(probed, 60, "two successful uptime probes of the app", 0.5)
        probed_at = time.time()

        def rules_evaluated() -> bool:
            url = f"{stack.prometheus_url}/api/v1/rules"
            with urllib.request.urlopen(url, timeout=10) as response:
                groups = json.load(response)["data"]["groups"]
            evaluated = [
                datetime.fromisoformat(g["lastEvaluation"].replace("Z", "+00:00")).timestamp()
                for g in groups
            ]
            return bool(evaluated) and min(evaluated) > probed_at

        wait_until(rules_evaluated, 90, "every rule group evaluated after the probes", 0.5)

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


def test_the_uptime_probes_reach_the_app_through_the_blackbox_exporter(
    running: RunningStack,
) -> None:
    url, nothing_there = running.stack.probe_urls
    selector = f'{{job="uptime", instance="{url}"}}'
    assert running.values(f"probe_success{selector}") == {(): 1}
    assert running.values(f"probe_http_status_code{selector}") == {(): 200}
    assert 0 < running.values(f"probe_duration_seconds{selector}")[()] < 5
    assert running.values(f"up{selector}") == {(): 1}
    down = f'{{job="uptime", instance="{nothing_there}"}}'
    assert running.values(f"probe_success{down}") == {(): 0}
    assert running.values(f"probe_http_status_code{down}") == {(): 0}
    assert running.values(f"up{down}") == {(): 1}, "the exporter answers: the URL is down"
    # /health is excluded from the app's metrics: probes are not traffic.
    routes = running.values(
        "count by (http_route) "
        f'(http_server_request_duration_seconds_count{{service_name="{SERVICE}"}})',
        "http_route",
    )
    assert ("/health",) not in routes


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
    # The uptime panels too: the stack probes the app's /health.
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


# --- scripts/stack.py as a user runs it ----------------------------------------

STACK_SCRIPT = ROOT / "scripts" / "stack.py"
READY_LINE = "Ctrl-C stops everything."
STARTUP_TIMEOUT = 240  # seconds; the Collector is already built by the test command
STOP_TIMEOUT = 90  # seconds; each process gets 20 s to flush, in turn
EVERY_ENDPOINT = {
    "Prometheus", "Alertmanager", "Collector OTLP gRPC", "Collector OTLP HTTP",
    "Collector health check", "Collector metrics", "alert webhook", "demo API",
    "traces file", "blackbox exporter", "Jaeger query API", "VictoriaLogs (log lines)",
}
STACK_LOGS = (
    "prometheus.log", "alertmanager.log", "otel-collector.log", "alert-webhook.log",
    "blackbox-exporter.log", "jaeger.log", "victorialogs.log",
)


def _accepts_tcp(address: str) -> bool:
    host, port = urllib.parse.urlsplit(address).netloc.split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _accepts_otlp_http(address: str) -> bool:
    request = urllib.request.Request(
        f"{address}/v1/traces", data=b"", method="POST",
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status) == 200


# How each printed endpoint proves that it answers.
ENDPOINT_CHECKS: dict[str, Callable[[str], bool]] = {
    "Prometheus": lambda a: http_status(f"{a}/-/ready") == 200,
    "Alertmanager": lambda a: http_status(f"{a}/-/ready") == 200,
    "Collector OTLP gRPC": _accepts_tcp,
    "Collector OTLP HTTP": _accepts_otlp_http,
    "Collector health check": lambda a: http_status(a) == 200,
    "Collector metrics": lambda a: http_status(a) == 200,
    "alert webhook": lambda a: http_status(f"{a}health") == 200,
    "demo API": lambda a: http_status(f"{a}/health") == 200,
    "traces file": lambda a: Path(a).parent.is_dir(),
    "Jaeger query API": lambda a: http_status(a) == 200,
    "VictoriaLogs (log lines)": lambda a: http_status(a) == 200,
    "blackbox exporter": lambda a: http_status(f"{a}/-/healthy") == 200,
}


def _not_activated() -> dict[str, str]:
    """This environment with the venv's bin directory off PATH, as in a fresh shell."""
    venv_bin = os.path.realpath(Path(sys.executable).parent)
    path = [
        d for d in os.environ["PATH"].split(os.pathsep) if d and os.path.realpath(d) != venv_bin
    ]
    return {**os.environ, "PATH": os.pathsep.join(path)}


def _as_from_a_terminal() -> None:
    """Ctrl-C's SIGINT handled as in a terminal, whatever this test run inherited.

    A shell without job control starts a background command (``scripts/test.sh
    &``) with SIGINT ignored, every child inherits that, and Python then never
    raises KeyboardInterrupt: stack.py would sit out the stop below.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class StackRun:
    """``scripts/stack.py`` running in the background, its output read line by line."""

    process: subprocess.Popen[str]
    logs: Path
    output: list[str] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, args: list[str], logs: Path) -> StackRun:
        process = subprocess.Popen(
            [sys.executable, str(STACK_SCRIPT), *args, "--logs", str(logs),
             "--jaeger-data", str(logs.parent / "jaeger-data")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=_not_activated(), cwd=ROOT, preexec_fn=_as_from_a_terminal,
        )
        run = cls(process, logs)
        run._reader = threading.Thread(target=run._read, daemon=True)
        run._reader.start()
        return run

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, wanted: str, timeout: float) -> None:
        """Read output until a line starting with ``wanted``; fail on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {wanted!r} from stack.py:\n" + "\n".join(self.output))
            self.output.append(line)
            if line.startswith(wanted):
                return

    def endpoints(self) -> dict[str, str]:
        """The printed endpoint table, as {service: address}."""
        start = next(i for i, line in enumerate(self.output) if line.startswith("service "))
        rows = {}
        for line in self.output[start + 1:]:
            if not line.strip():
                break
            name, address = (part.strip() for part in line.rsplit("  ", 1))
            rows[name] = address
        return rows

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Stop as a user does (Ctrl-C) and read the rest of the output."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(STOP_TIMEOUT)
        self.wait_for("stopped; the logs are in", 10)
        return code


@pytest.fixture
def run_stack(tmp_path: Path) -> Iterator[Callable[..., StackRun]]:
    """Starts ``scripts/stack.py ARGS`` with its logs in tmp_path/logs; always stops it."""
    runs: list[StackRun] = []

    def start(*args: str) -> StackRun:
        run = StackRun.start(list(args), tmp_path / "logs")
        runs.append(run)
        run.wait_for(READY_LINE, STARTUP_TIMEOUT)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
            try:
                run.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait(10)
        assert run._reader is not None
        run._reader.join(10)  # it closes the pipe at the end of the output


def _probe_result(prometheus: str, url: str) -> Callable[[], float | None]:
    """probe_success of ``url`` as Prometheus has it now, None before the first probe."""

    def result() -> float | None:
        selector = f'probe_success{{job="uptime", instance="{url}"}}'
        query = urllib.parse.urlencode({"query": selector})
        with urllib.request.urlopen(f"{prometheus}/api/v1/query?{query}", timeout=5) as response:
            samples = json.load(response)["data"]["result"]
        return float(samples[0]["value"][1]) if samples else None

    return result


def _assert_every_endpoint_answers(endpoints: dict[str, str]) -> None:
    silent = [f"{name} {address}" for name, address in endpoints.items()
              if not ENDPOINT_CHECKS[name](address)]
    assert not silent, f"printed but not answering: {silent}"


def test_stack_script_prints_every_endpoint_and_keeps_its_logs(
    run_stack: Callable[..., StackRun], tmp_path: Path
) -> None:
    demo_port = free_port()
    run = run_stack("--demo-port", str(demo_port), "--no-traffic")
    logs = tmp_path / "logs"
    # Which Prometheus, first: the pinned one whenever the build cache has it.
    assert run.output[0] == find_prometheus().describe()
    assert f"logs: {logs}" in run.output
    endpoints = run.endpoints()
    assert set(endpoints) == EVERY_ENDPOINT
    assert endpoints["demo API"] == f"http://{LOOPBACK}:{demo_port}"
    assert endpoints["traces file"] == str(logs / "traces.jsonl")
    _assert_every_endpoint_answers(endpoints)
    assert (
        f"Your own app: OTEL_EXPORTER_OTLP_ENDPOINT={endpoints['Collector OTLP HTTP']} "
        "opentelemetry-instrument <your command>"
    ) in run.output
    # The demo API's health URL is probed: up once it has started.
    assert f"Uptime probes (ApiDown): {endpoints['demo API']}/health" in run.output
    probe = _probe_result(endpoints["Prometheus"], f"{endpoints['demo API']}/health")
    wait_until(lambda: probe() == 1, 60, "a successful uptime probe of the demo API", 0.5)

    # A demo request's trace lands in the file, once: nothing sends it back
    # to the Collector's own OTLP receiver.
    demo = endpoints["demo API"]
    assert requests.get(f"{demo}/api/items/1", timeout=10).status_code == 200
    traces = logs / "traces.jsonl"
    wait_until(lambda: traces.exists() and "/api/items/" in traces.read_text(), 30,
               "the demo's trace in traces.jsonl", 0.2)
    # ... and in Jaeger, found by service and route as the dashboards' links search.
    jaeger = endpoints["Jaeger query API"].removesuffix("/api/services")
    search = urllib.parse.urlencode(
        {"service": "demo-api", "tags": json.dumps({"http.route": "/api/items/<int:item_id>"})}
    )

    def in_jaeger() -> bool:
        with urllib.request.urlopen(f"{jaeger}/api/traces?{search}", timeout=5) as response:
            return bool(json.load(response)["data"])

    wait_until(in_jaeger, 30, "the demo's trace in Jaeger", 0.2)
    with urllib.request.urlopen(endpoints["Collector metrics"], timeout=5) as response:
        own_metrics = response.read().decode()
    assert 'otelcol_receiver_accepted_spans{receiver="otlp",transport="grpc"' not in own_metrics

    assert run.stop(signal.SIGINT) == 0
    assert run.output[-1] == f"stopped; the logs are in {logs}"
    for name in (*STACK_LOGS, "demo-api.log"):
        assert (logs / name).stat().st_size > 0, f"{name} is empty or gone after the stop"
    assert not (logs / "traffic.log").exists(), "--no-traffic started the traffic generator"
    assert http_status(f"{demo}/health", 1.0) is None, "the demo API outlived the stack"


def test_stack_script_runs_the_demo_on_a_free_port_by_default(
    run_stack: Callable[..., StackRun], tmp_path: Path
) -> None:
    run = run_stack()
    demo = run.endpoints()["demo API"]
    assert urllib.parse.urlsplit(demo).port != 8000, "8000 is the port the user's own app takes"
    assert http_status(f"{demo}/health") == 200
    assert (tmp_path / "logs" / "traffic.log").exists()
    assert run.stop(signal.SIGTERM) == 0


def test_stack_script_without_the_demo_leaves_the_collector_to_your_app(
    run_stack: Callable[..., StackRun], tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "demo-api.log").write_text("a previous run's log\n")
    # Your own app's health URL (nothing listens there in this test: down).
    yours = f"http://{LOOPBACK}:{free_port()}/health"
    run = run_stack("--no-demo", "--probe", yours)
    endpoints = run.endpoints()
    assert set(endpoints) == EVERY_ENDPOINT - {"demo API"}
    _assert_every_endpoint_answers(endpoints)
    assert f"Uptime probes (ApiDown): {yours}" in run.output
    probe = _probe_result(endpoints["Prometheus"], yours)
    wait_until(lambda: probe() is not None, 60, f"an uptime probe of {yours}", 0.5)
    assert probe() == 0
    assert run.stop() == 0
    assert not (logs / "demo-api.log").exists(), "a run replaces the previous run's logs"
    assert not (logs / "traffic.log").exists()
    assert all((logs / name).stat().st_size > 0 for name in STACK_LOGS)


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _fake_prometheus(path: Path, version: str) -> Path:
    return _executable(path, f"#!/bin/sh\necho 'prometheus, version {version} (branch: fake)'\n")


@pytest.mark.parametrize(
    "variable", ["OTEL_FLASK_METRICS_CACHE", "XDG_CACHE_HOME", "HOME"]
)
def test_stack_looks_where_build_prometheus_caches(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script's cache path and stack.py's agree, for each variable that sets it."""
    for name in ("OTEL_FLASK_METRICS_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(tmp_path))
    built = tool_cache() / f"prometheus-{pinned_prometheus_version()}" / "bin"
    for name in ("prometheus", "promtool"):  # present, so the script builds nothing
        _fake_prometheus(built / name, pinned_prometheus_version())
    printed = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-prometheus.sh")],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()
    assert printed == str(built)
    assert str(built).startswith(str(tmp_path))


def test_stack_chooses_the_pinned_prometheus_when_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = pinned_prometheus_version()
    monkeypatch.delenv("OFM_PROMETHEUS", raising=False)
    monkeypatch.setenv("OTEL_FLASK_METRICS_CACHE", str(tmp_path / "cache"))
    system = _fake_prometheus(tmp_path / "system" / "prometheus", "2.42.0+ds")
    monkeypatch.setenv("PATH", str(system.parent))

    fallback = find_prometheus()
    assert (fallback.path, fallback.version, fallback.source) == (str(system), "2.42.0+ds", "PATH")
    assert not fallback.is_pinned
    assert f"not the {pinned} compose.yaml pins" in fallback.describe()
    assert "scripts/build-prometheus.sh" in fallback.describe()

    cached = _fake_prometheus(
        tmp_path / "cache" / f"prometheus-{pinned}" / "bin" / "prometheus", pinned
    )
    chosen = find_prometheus()
    assert (chosen.path, chosen.version, chosen.source) == (str(cached), pinned, "build cache")
    assert chosen.describe().endswith("the version compose.yaml pins")

    other = _fake_prometheus(tmp_path / "other" / "prometheus", "3.0.0")
    monkeypatch.setenv("OFM_PROMETHEUS", str(other))
    assert find_prometheus().path == str(other)

    monkeypatch.delenv("OFM_PROMETHEUS")
    cached.unlink()
    system.unlink()
    with pytest.raises(MissingTool, match=r"scripts/build-prometheus\.sh"):
        find_prometheus()


@pytest.mark.parametrize(
    ("args", "names"),
    [([], ("opentelemetry-instrument", "pip install -e")), (["--no-demo"], ("Prometheus",))],
    ids=["venv-tools", "prometheus"],
)
def test_a_missing_tool_is_one_clear_line(
    args: list[str], names: tuple[str, ...], tmp_path: Path
) -> None:
    """A Python with no tools beside it and a PATH without them: one line, no traceback."""
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    result = subprocess.run(
        [str(python), str(STACK_SCRIPT), *args, "--logs", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=60,
        env={"PATH": str(python.parent), "HOME": str(tmp_path),
             "OTEL_FLASK_METRICS_CACHE": str(tmp_path / "empty-cache")},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stack.py: ")
    for name in names:
        assert name in lines[0]
