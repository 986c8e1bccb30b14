"""Alerts reach people: Prometheus knows the shipped Alertmanager, which routes to the webhook."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from local_stack import LocalStack  # type: ignore[import-not-found]
from stack_processes import LOOPBACK, wait_until  # type: ignore[import-not-found]

pytestmark = pytest.mark.e2e


class Webhook:
    """A real HTTP receiver on loopback that keeps Alertmanager's notifications."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


def test_a_critical_alert_is_routed_to_the_webhook(webhook: Webhook, tmp_path: Path) -> None:
    with LocalStack(tmp_path / "stack", alert_webhook_url=webhook.url) as stack:
        # The shipped prometheus.yml sends its alerts to this Alertmanager.
        def discovered() -> bool:
            with urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/alertmanagers", timeout=5) as r:
                active = json.load(r)["data"]["activeAlertmanagers"]
            return any(str(stack.ports["alertmanager"]) in a["url"] for a in active)

        wait_until(discovered, 30, "Prometheus to discover the Alertmanager")
        # The shipped rules are loaded.
        with urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/rules", timeout=5) as r:
            groups = json.load(r)["data"]["groups"]
        names = {rule["name"] for group in groups for rule in group["rules"]}
        assert {"ApiHighServerErrorRatio", "ApiNoTraffic", "OtelCollectorDown"} <= names

        alert = [{
            "labels": {"alertname": "ApiHighServerErrorRatio", "severity": "critical",
                       "service_name": "orders-api", "http_route": "/orders"},
            "annotations": {"summary": "5xx ratio above 5% on /orders"},
        }]
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{stack.ports['alertmanager']}/api/v2/alerts",
            data=json.dumps(alert).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        # Critical alerts wait 10 s (group_wait) before the first notification.
        wait_until(lambda: bool(webhook.notifications), 45, "the webhook notification", 0.5)
    (notification,) = webhook.notifications[:1]
    assert notification["receiver"] == "critical"
    (sent,) = notification["alerts"]
    assert sent["labels"]["alertname"] == "ApiHighServerErrorRatio"
    assert sent["labels"]["http_route"] == "/orders"
