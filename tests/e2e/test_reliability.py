"""Outages on real processes: the app keeps serving, nothing blocks, every request is counted.

Scenario 1, Collector down: requests succeed with their status codes, latency is
not blocked on export, and once the Collector is back Prometheus shows exactly
the requests served during and after the outage (cumulative metrics carry the
counts across the gap). Scenario 2: the Collector and Prometheus restart
mid-traffic, and totals are exact once both are back. Also: the OTLP receivers
can require a bearer token (collector-config/otlp-auth.yaml).
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local_stack import LocalStack, app_service  # type: ignore[import-not-found]
from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    ROOT,
    Service,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.e2e

APPS = Path(__file__).resolve().parents[1] / "apps"
SERVICE = "e2e-reliability"


def prometheus_total(stack: LocalStack, promql: str) -> float | None:
    url = f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.load(response)["data"]["result"]
    except (OSError, ValueError):
        return None
    return float(result[0]["value"][1]) if result else None


def count_query(route: str) -> str:
    return (
        f'sum(http_server_request_duration_seconds_count{{service_name="{SERVICE}", '
        f'http_route="{route}"}})'
    )


def timed_requests(base: str, path: str, count: int) -> list[float]:
    """Send ``count`` requests on one connection; return their latencies (s)."""
    latencies = []
    with requests.Session() as session:
        for i in range(count):
            start = time.perf_counter()
            response = session.get(f"{base}{path}{i % 50}", timeout=10)
            latencies.append(time.perf_counter() - start)
            assert response.status_code == 200
    return latencies


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    running = LocalStack(tmp_path / "stack", with_alertmanager=False)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def start_app(stack: LocalStack, log_dir: Path) -> tuple[Service, str]:
    port = free_port()
    app = stack.add(
        app_service(
            stack, log_dir, app="api:app", chdir=APPS, port=port, name="api",
            env={
                "OTEL_SERVICE_NAME": SERVICE,
                "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "/health",
                # A short export timeout keeps the test fast; requests must
                # not wait for it either way.
                "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
            },
        )
    )
    return app, f"http://{LOOPBACK}:{port}"


def test_collector_outage_blocks_nothing_and_loses_no_count(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, base = start_app(stack, tmp_path)
    up = timed_requests(base, "/items/", 300)
    assert stack.collector is not None
    stack.collector.stop()
    down = timed_requests(base, "/items/", 300)
    # Give the exporters time to hit the dead Collector (and time out) while
    # traffic continues: the next batch must still be fast.
    down += timed_requests(base, "/items/", 300)
    ratio = p99(down) / p99(up)
    with capsys.disabled():
        print(
            f"\n[collector outage] p99 up {p99(up) * 1000:.2f} ms, down {p99(down) * 1000:.2f} ms "
            f"(x{ratio:.2f}); max down {max(down) * 1000:.1f} ms"
        )
    assert max(down) < 1.0, "a request waited for an export timeout"
    assert ratio < 3, f"p99 with the Collector down is {ratio:.1f}x the p99 with it up"

    stack.collector.start().wait_ready(60)
    after = timed_requests(base, "/items/", 100)
    assert len(after) == 100
    expected = 300 + 600 + 100

    def exact() -> bool:
        return prometheus_total(stack, count_query("/items/<int:item_id>")) == expected

    try:
        wait_until(exact, 60, f"{expected} requests in Prometheus after the outage", 0.5)
    except TimeoutError:
        seen = prometheus_total(stack, count_query("/items/<int:item_id>"))
        raise AssertionError(f"Prometheus shows {seen}, expected {expected}\n{app.log_tail()}") from None


def test_collector_and_prometheus_restart_mid_traffic(stack: LocalStack, tmp_path: Path) -> None:
    _app, base = start_app(stack, tmp_path)
    assert stack.collector is not None and stack.prometheus is not None
    sent = len(timed_requests(base, "/items/", 100))
    stack.prometheus.stop()
    sent += len(timed_requests(base, "/items/", 100))
    stack.prometheus.start().wait_ready(60)
    stack.collector.stop()
    sent += len(timed_requests(base, "/items/", 100))
    stack.collector.start().wait_ready(60)
    sent += len(timed_requests(base, "/items/", 100))

    def exact() -> bool:
        return prometheus_total(stack, count_query("/items/<int:item_id>")) == sent

    wait_until(exact, 60, f"{sent} requests in Prometheus after both restarts", 0.5)
    # Each worker process kept one cumulative series: no counter reset to undo.
    instances = prometheus_total(
        stack, f'count(count by (service_instance_id) (http_server_request_duration_seconds_count{{service_name="{SERVICE}"}}))'
    )
    assert instances is not None and instances <= 2


def test_otlp_receivers_can_require_a_bearer_token(tmp_path: Path) -> None:
    token = "e2e-otlp-token-5f2a"
    stack = LocalStack(
        tmp_path / "stack",
        extra_collector_configs=[ROOT / "collector-config" / "otlp-auth.yaml"],
        collector_env={"OTLP_BEARER_TOKEN": token},
        with_alertmanager=False,
    )
    stack.start()
    try:
        url = f"{stack.otlp_http_endpoint}/v1/metrics"

        def post(headers: dict[str, str]) -> int:
            request = urllib.request.Request(
                url, data=b"", method="POST",
                headers={"Content-Type": "application/x-protobuf", **headers},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        assert post({}) == 401
        assert post({"Authorization": "Bearer wrong-token"}) == 401
        assert post({"Authorization": f"Bearer {token}"}) == 200

        # The distro sends it from the standard variable.
        port = free_port()
        stack.add(
            app_service(
                stack, tmp_path, app="api:app", chdir=APPS, port=port, name="api",
                env={
                    "OTEL_SERVICE_NAME": SERVICE,
                    "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "/health",
                    "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{token}",
                },
            )
        )
        sent = len(timed_requests(f"http://{LOOPBACK}:{port}", "/items/", 20))
        wait_until(
            lambda: prometheus_total(stack, count_query("/items/<int:item_id>")) == sent,
            60, "metrics sent with the bearer token", 0.5,
        )
    finally:
        stack.stop()
