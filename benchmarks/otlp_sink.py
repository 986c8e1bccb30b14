"""A tiny OTLP/HTTP sink: answers 200 to every export and counts what it got.

``POST <prefix>/v1/traces`` and ``POST <prefix>/v1/metrics`` (protobuf, gzip
or not) are accepted and counted under ``<prefix>``, so that each benchmark
process exports to its own prefix (``OTEL_EXPORTER_OTLP_ENDPOINT=
http://127.0.0.1:PORT/<tag>``). ``GET /stats`` returns every prefix's count
of exports, body bytes as received, spans and metric data points.

Run alone: ``python benchmarks/otlp_sink.py --port 4318``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_lock = threading.Lock()
_stats: dict[str, dict[str, dict[str, int]]] = defaultdict(
    lambda: {
        "traces": {"exports": 0, "bytes": 0, "items": 0},
        "metrics": {"exports": 0, "bytes": 0, "items": 0},
    }
)


def _count_spans(body: bytes) -> int:
    req = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


def _count_points(body: bytes) -> int:
    return data_points(ExportMetricsServiceRequest.FromString(body))


def data_points(req: ExportMetricsServiceRequest) -> int:
    """The data points of every metric in an export request, whatever the metric's kind."""
    total = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(m, kind).data_points)
    return total


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        prefix, _, signal = self.path.rstrip("/").rpartition("/v1/")
        if signal not in ("traces", "metrics", "logs"):
            self._reply(404, b"")
            return
        raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
        items = 0
        try:
            if signal == "traces":
                items = _count_spans(raw)
            elif signal == "metrics":
                items = _count_points(raw)
        except Exception:  # still count the bytes
            items = -1
        if signal != "logs":
            with _lock:
                entry = _stats[prefix.strip("/") or "-"][signal]
                entry["exports"] += 1
                entry["bytes"] += len(body)
                entry["items"] += items
        # An empty Export*ServiceResponse is the empty protobuf message.
        self._reply(200, b"", "application/x-protobuf")

    def do_GET(self) -> None:
        if self.path != "/stats":
            self._reply(404, b"")
            return
        with _lock:
            data = json.dumps(_stats).encode()
        self._reply(200, data, "application/json")

    def _reply(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    # The parent reads this line to learn the port.
    print(f"listening 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
