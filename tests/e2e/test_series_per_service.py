"""The README's series formula holds in a real Prometheus.

Series of one service, per worker process (each has its own
``service.instance.id``, a constant label on every series):

* per attribute set (method x route x status x consumer label, ``error.type``
  following the status): the duration histogram's buckets + 1 (``+Inf``) +
  ``_sum`` + ``_count``, the same for the response size, and for requests
  with a body the request size too;
* ``http_server_active_requests``: one per method seen;
* the process metrics: CPU time (user, system), memory, uptime: 4;
* ``target_info``: 1.

The consumer labels of a process are capped by OTEL_FLASK_METRICS_MAX_CONSUMERS,
the rest folded into ``_other``. The arbiter exports its process metrics and
``target_info`` too. Checked here: gunicorn with 2 workers under
``opentelemetry-instrument``, the shipped Collector config, the pinned
Prometheus, 4 route-status pairs x 5 consumers with a cap of 3, every worker
serving every combination; the series Prometheus holds for the service must be
exactly the formula's.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    ROOT,
    Service,
    build_collector,
    find_prometheus,
    free_port,
    wait_until,
)

from otel_flask_metrics.metrics import BODY_SIZE_BUCKETS, DURATION_BUCKETS

APPS = Path(__file__).resolve().parents[1] / "apps"
SHIPPED = ROOT / "collector-config" / "otelcol-config.yaml"
pytestmark = pytest.mark.e2e

SERVICE = "e2e-series"
WORKERS = 2
CAP = 3
CONSUMERS = [f"consumer-{i}" for i in range(5)]
# (method, path, body, status): the app's two routes, two statuses each.
REQUESTS = [
    ("GET", "/items/7", None, 200),
    ("GET", "/items/5000", None, 404),
    ("POST", "/items", b'{"name": "x"}', 201),
    ("POST", "/items", b"not json", 400),
]


def series_per_worker(
    pairs: int, pairs_with_body: int, consumers: int, cap: int, methods: int
) -> int:
    """The formula: Prometheus series one worker process adds to its service."""
    labels = min(consumers, cap) + (1 if consumers > cap else 0)
    duration = len(DURATION_BUCKETS) + 1 + 2  # buckets, +Inf, _sum, _count
    size = len(BODY_SIZE_BUCKETS) + 1 + 2
    http = pairs * labels * (duration + size) + pairs_with_body * labels * size
    return http + methods + 4 + 1  # active requests, process metrics, target_info


ARBITER = 4 + 1  # process metrics and target_info, no HTTP metrics


@dataclass
class Stack:
    prometheus_url: str
    otlp_http: str


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    collector, prometheus = build_collector(), find_prometheus()
    services: list[Service] = []
    try:
        prometheus_url = f"http://{LOOPBACK}:{free_port()}"
        config = tmp_path / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\n")
        services.append(Service(
            "prometheus",
            [
                prometheus.path, f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                f"--web.listen-address={prometheus_url.removeprefix('http://')}",
                "--web.enable-remote-write-receiver",
            ],
            tmp_path, ready_url=f"{prometheus_url}/-/ready",
        ).start().wait_ready(60))
        http, health = free_port(), free_port()
        env = {
            **os.environ,
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"{LOOPBACK}:{free_port()}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{http}",
            "OTELCOL_HEALTH_ENDPOINT": f"{LOOPBACK}:{health}",
            "OTELCOL_METRICS_HOST": LOOPBACK,
            "OTELCOL_METRICS_PORT": str(free_port()),
            "PROMETHEUS_REMOTE_WRITE_ENDPOINT": f"{prometheus_url}/api/v1/write",
            # No traces or logs are sent: nothing listens at these.
            "TRACES_OTLP_ENDPOINT": f"{LOOPBACK}:{free_port()}",
            "LOGS_OTLP_HTTP_ENDPOINT": f"http://{LOOPBACK}:{free_port()}/v1/logs",
        }
        services.append(Service(
            "collector", [str(collector), f"--config={SHIPPED}"], tmp_path, env=env,
            ready_url=f"http://{LOOPBACK}:{health}/",
        ).start().wait_ready(60))
        yield Stack(prometheus_url, f"http://{LOOPBACK}:{http}")
    finally:
        for service in reversed(services):
            service.stop()


def _query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=5) as r:
        result: list[dict[str, Any]] = json.load(r)["data"]["result"]
    return result


def _count(prometheus_url: str) -> int:
    result = _query(prometheus_url, f'count({{job="{SERVICE}"}})')
    return int(result[0]["value"][1]) if result else 0


def test_series_of_a_service_are_the_formulas(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp_http,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
        "OTEL_FLASK_METRICS_MAX_CONSUMERS": str(CAP),
        # The readiness checks are no API traffic: no series of their own.
        "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "health",
    }
    app = Service(
        "gunicorn",
        [
            shutil.which("opentelemetry-instrument") or "opentelemetry-instrument",
            shutil.which("gunicorn") or "gunicorn",
            "--bind", f"{LOOPBACK}:{port}", "--workers", str(WORKERS), "--chdir", str(APPS),
            "api:app",
        ],
        tmp_path, env=env, ready_url=f"http://{LOOPBACK}:{port}/health",
    ).start()
    base = f"http://{LOOPBACK}:{port}"
    try:
        app.wait_ready(60)
        served: dict[str, set[tuple[int, str]]] = {}

        def send(item: tuple[int, str]) -> None:
            method, path, body, status = REQUESTS[item[0]]
            response = requests.request(
                method, base + path, data=body, timeout=10,
                headers={"X-API-Key": item[1], "Content-Type": "application/json"},
            )
            assert response.status_code == status, (method, path, response.status_code)
            served.setdefault(response.headers["X-Worker-Pid"], set()).add(item)

        # Every worker serves every combination, so each has the same series.
        combinations = {(i, c) for i in range(len(REQUESTS)) for c in CONSUMERS}
        with ThreadPoolExecutor(8) as pool:
            for _ in range(60):
                list(pool.map(send, sorted(combinations) * 2))
                if len(served) == WORKERS and all(s == combinations for s in served.values()):
                    break
        assert len(served) == WORKERS and all(s == combinations for s in served.values())

        expected = WORKERS * series_per_worker(
            pairs=len(REQUESTS),
            pairs_with_body=sum(1 for r in REQUESTS if r[2] is not None),
            consumers=len(CONSUMERS), cap=CAP,
            methods=len({r[0] for r in REQUESTS}),
        ) + ARBITER
        # The 1 s exports land within a few seconds; wait past the first match
        # for a late series that would make the count too high.
        wait_until(lambda: _count(stack.prometheus_url) >= expected, 30, f"{expected} series")
        time.sleep(3)
        count = _count(stack.prometheus_url)
        by_name = {
            str(r["metric"]["__name__"]): int(r["value"][1])
            for r in _query(stack.prometheus_url, f'count by (__name__) ({{job="{SERVICE}"}})')
        }
        print(f"\n{count} series for {WORKERS} workers + the arbiter: {by_name}")
        assert count == expected, by_name
        consumers = _query(
            stack.prometheus_url,
            f'count by (api_consumer_id) (http_server_request_duration_seconds_count'
            f'{{job="{SERVICE}"}})',
        )
        labels = {str(r["metric"].get("api_consumer_id")) for r in consumers}
        assert "_other" in labels and len(labels) <= len(CONSUMERS) + 1
    finally:
        app.stop()
