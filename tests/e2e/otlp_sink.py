"""A real OTLP/HTTP endpoint on loopback that keeps what it receives, decoded."""

from __future__ import annotations

import gzip
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in items if isinstance(kv, KeyValue)}


class OtlpSink:
    """Collects OTLP/HTTP protobuf exports; answers 200 like a Collector.

    :param metrics_delay: seconds each metrics export waits before its answer,
        as a slow Collector would keep the exporter (and its locks) busy.
    """

    def __init__(self, metrics_delay: float = 0.0) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.logs: list[ExportLogsServiceRequest] = []
        self.raw_bytes: list[bytes] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                sink.receive(self.path, body)
                if metrics_delay and self.path == "/v1/metrics":
                    time.sleep(metrics_delay)  # the slow Collector itself, not a wait
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def receive(self, path: str, body: bytes) -> None:
        with self._lock:
            self.raw_bytes.append(body)
            if path == "/v1/traces":
                self.traces.append(ExportTraceServiceRequest.FromString(body))
            elif path == "/v1/metrics":
                self.metrics.append(ExportMetricsServiceRequest.FromString(body))
            elif path == "/v1/logs":
                self.logs.append(ExportLogsServiceRequest.FromString(body))

    def __enter__(self) -> OtlpSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        with self._lock:
            requests = list(self.traces)
        return _items(requests, "resource_spans", "scope_spans", "spans")

    def log_records(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, log record) for every log record received."""
        with self._lock:
            requests = list(self.logs)
        return _items(requests, "resource_logs", "scope_logs", "log_records")

    def latest_points(self, metric_name: str) -> Iterator[tuple[dict[str, Any], dict[str, Any], Any]]:
        """The newest cumulative point per (process, attribute set) of a metric.

        Yields (resource attributes, point attributes, point). Each worker
        process exports its own cumulative series, so totals are sums of the
        newest point of every process.
        """
        with self._lock:
            requests = list(self.metrics)
        newest: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any], Any]] = {}
        for request in requests:
            for resource_metrics in request.resource_metrics:
                resource = attributes(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name != metric_name:
                            continue
                        data = getattr(metric, metric.WhichOneof("data"))
                        for point in data.data_points:
                            point_attributes = attributes(point.attributes)
                            key = (
                                resource.get("service.instance.id"),
                                tuple(sorted(point_attributes.items())),
                            )
                            current = newest.get(key)
                            if current is None or point.time_unix_nano >= current[2].time_unix_nano:
                                newest[key] = (resource, point_attributes, point)
        yield from newest.values()

    def histogram_totals(
        self, metric_name: str, *keys: str
    ) -> dict[tuple[Any, ...], tuple[int, float]]:
        """(count, sum) of a histogram summed over processes, grouped by ``keys``."""
        totals: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0, 0.0])
        for _resource, point_attributes, point in self.latest_points(metric_name):
            group = tuple(point_attributes.get(k) for k in keys)
            totals[group][0] += point.count
            totals[group][1] += point.sum
        return {k: (int(v[0]), v[1]) for k, v in totals.items()}


def _items(requests: list[Any], resources: str, scopes: str, items: str) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, item) for each item of each export request, as OTLP nests them."""
    found = []
    for request in requests:
        for resource_items in getattr(request, resources):
            resource = attributes(resource_items.resource.attributes)
            for scope_items in getattr(resource_items, scopes):
                found.extend((resource, item) for item in getattr(scope_items, items))
    return found
