"""A webhook receiver for Alertmanager that prints the alerts (standard library only).

prometheus/alertmanager.yml sends every notification to
``http://alert-webhook:8080/``; in the compose stack this script answers there,
so ``docker compose logs alert-webhook`` shows what would have paged someone::

    python demo/alert_webhook.py --bind 127.0.0.1 --port 8080

Replace it with your real receiver (Slack, email, an incident tool) by editing
alertmanager.yml. ``GET /health`` answers 200 for the container's healthcheck.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

MAX_BODY = 1024 * 1024  # bytes; Alertmanager's notifications are far smaller


def describe(notification: dict[str, Any]) -> list[str]:
    """One line per alert of an Alertmanager webhook notification."""
    lines = []
    for alert in notification.get("alerts", []):
        labels = alert.get("labels", {})
        annotations = alert.get("annotations", {})
        scope = " ".join(
            f"{name}={labels[name]}"
            for name in ("service_name", "http_route", "api_consumer_id")
            if name in labels
        )
        line = f"[{alert.get('status', '?').upper()}] {labels.get('alertname', '?')}"
        line += f" severity={labels.get('severity', '?')}"
        if scope:
            line += f" {scope}"
        if annotations.get("summary"):
            line += f": {annotations['summary']}"
        lines.append(line)
    return lines


class Handler(BaseHTTPRequestHandler):
    server_version = "alert-webhook/1.0"

    def do_GET(self) -> None:
        self._reply(HTTPStatus.OK if self.path == "/health" else HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self._reply(HTTPStatus.BAD_REQUEST)
            return
        try:
            notification = json.loads(self.rfile.read(length))
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST)
            return
        if not isinstance(notification, dict):
            self._reply(HTTPStatus.BAD_REQUEST)
            return
        for line in describe(notification):
            print(line, flush=True)
        self._reply(HTTPStatus.OK)

    def _reply(self, status: HTTPStatus) -> None:
        body = json.dumps({"status": status.phrase}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the alerts are the log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1", help="address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    args = parser.parse_args(argv)

    server = ThreadingHTTPServer((args.bind, args.port), Handler)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever(), which runs in this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"alert-webhook: listening on {args.bind}:{args.port}", flush=True)
    with server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
