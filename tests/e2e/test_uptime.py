"""Uptime, end to end on real binaries: a stopped API pages, and its return is told.

The stack is started by scripts/stack.py's :class:`LocalStack`, as users start
it: the blackbox exporter probes the demo API's health URL every 15s (job
``uptime`` of the shipped prometheus.yml), Prometheus evaluates the shipped
ApiDown every 15s, and the shipped Alertmanager routes it to a webhook. The
test stops the demo API, waits for the ApiDown notification, starts the API
again and waits for the resolved one, and prints both delays.

The Prometheus side runs the shipped timing (15s probes and evaluations, ApiDown
``for: 1m``), so the firing delay measured here is the one users get: about 1
to 1.5 minutes, plus Alertmanager's group_wait for critical alerts (10s).
Alertmanager sends a resolved notification only at the group's next
``group_interval`` tick, 5m in the shipped alertmanager.yml; this test's stack
shortens that one setting to 10s (its own copy of the file), so the resolved
delay here is the detection (the next probe and evaluation, at most about 30s)
plus at most 10s, where users wait up to 5 minutes more.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The alert receiver test_alerting.py uses: a real HTTP server on loopback.
from tests.e2e.test_alerting import Webhook

from local_stack import LocalStack, app_service  # type: ignore[import-not-found]
from stack_processes import LOOPBACK, ROOT, free_port, wait_until  # type: ignore[import-not-found]

pytestmark = pytest.mark.e2e

# Seconds. From the stop: the next probe (<= 15s), the next evaluation (<= 15s,
# pending), `for: 1m`, group_wait 10s; plus slack for slow machines.
FIRING_BOUND = 130
FIRING_AT_LEAST = 60  # `for: 1m`: never sooner
# From the API answering again: the next probe and evaluation (<= 30s) and this
# test's group_interval (10s); plus slack.
RESOLVED_BOUND = 75
TEST_GROUP_INTERVAL = "10s"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


def _prometheus_json(stack: LocalStack, path: str, **params: str) -> Any:
    url = f"{stack.prometheus_url}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def _api_down_alerts(stack: LocalStack) -> list[dict[str, Any]]:
    """ApiDown alerts Prometheus has now, pending or firing."""
    alerts = _prometheus_json(stack, "/api/v1/alerts")["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == "ApiDown"]


def _wait_for_notification(
    webhook: Webhook, status: str, instance: str, since: float, timeout: float
) -> tuple[dict[str, Any], float]:
    """The first ApiDown notification with ``status`` for ``instance``, and its delay."""
    seen = len(webhook.notifications)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for notification in webhook.notifications[seen:]:
            seen += 1
            for alert in notification["alerts"]:
                labels = alert["labels"]
                if (labels["alertname"], labels.get("instance"), alert["status"]) == (
                    "ApiDown", instance, status,
                ):
                    return notification, time.monotonic() - since
        time.sleep(0.2)
    raise AssertionError(
        f"no {status} ApiDown notification for {instance} within {timeout}s; "
        f"received: {json.dumps(webhook.notifications, indent=1)[:4000]}"
    )


def test_a_stopped_api_fires_api_down_and_its_return_resolves_it(
    webhook: Webhook, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    health = f"http://{LOOPBACK}:{port}/health"
    stack = LocalStack(
        tmp_path / "stack",
        alert_webhook_url=webhook.url,
        probe_urls=[health],
        alertmanager_group_interval=TEST_GROUP_INTERVAL,
    )
    try:
        stack.start()
        api = stack.add(
            app_service(
                stack, tmp_path, app="app:app", chdir=ROOT / "demo", port=port, name="demo-api",
                env={"OTEL_SERVICE_NAME": "demo-api", "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "/health"},
            )
        )

        def probe_success() -> float | None:
            query = f'probe_success{{job="uptime", instance="{health}"}}'
            samples = _prometheus_json(stack, "/api/v1/query", query=query)["result"]
            return float(samples[0]["value"][1]) if samples else None

        # Up, and nothing left pending from the probes that ran before it started.
        wait_until(
            lambda: probe_success() == 1 and not _api_down_alerts(stack), 90,
            "a successful probe and no ApiDown pending", 0.5,
        )
        assert not webhook.notifications

        stopped = time.monotonic()
        api.stop()
        wait_until(lambda: probe_success() == 0, 30, "a failed probe after the stop", 0.5)
        fired, firing_delay = _wait_for_notification(
            webhook, "firing", health, stopped, FIRING_BOUND
        )
        assert fired["receiver"] == "critical"
        (alert,) = [a for a in fired["alerts"] if a["labels"]["alertname"] == "ApiDown"]
        assert alert["labels"]["job"] == "uptime"
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["summary"] == f"{health} is down: its uptime probes fail"
        assert firing_delay >= FIRING_AT_LEAST, "ApiDown fired before its `for: 1m`"

        restarted = time.monotonic()
        api.start().wait_ready(60)
        answering = time.monotonic()
        _, resolved_delay = _wait_for_notification(
            webhook, "resolved", health, answering, RESOLVED_BOUND
        )
    finally:
        stack.stop()
    with capsys.disabled():
        print(
            f"\nApiDown: firing notification {firing_delay:.1f}s after the API was stopped "
            f"(bound {FIRING_BOUND}s); resolved notification {resolved_delay:.1f}s after it "
            f"answered again ({answering - restarted:.1f}s after the restart command; "
            f"group_interval {TEST_GROUP_INTERVAL} here, 5m shipped)"
        )
