"""What one Collector core sustains, and what queues and series cost in memory.

Three measurements, each on the real Collector binary
(``scripts/build-collector.sh``) on free loopback ports:

``throughput``
    The shipped ``collector-config/otelcol-config.yaml``, pinned to one core
    (``taskset``), exporting to discarding sinks (traces: an OTLP/gRPC sink;
    metrics: a remote-write endpoint that answers 204) on the other core with
    the load generator. The load is the distro's: gzip OTLP/HTTP protobuf,
    256-span batches of server spans with the attributes the distro sets
    (``user_agent.original`` from a handful of real browsers and clients, a
    tenth carrying credential headers or a token in the query that the
    redaction processors act on), and metric exports of one worker's
    histograms and process metrics. For each variant of the pipeline (the
    shipped one, without the user-agent transform, without the two redaction
    processors, without all three) a round first saturates a Collector
    (``--connections`` senders that each wait for the answer), then offers
    rates open-loop, each to a fresh Collector, starting at 90 % of what the
    saturated one exported: a rate passes when the receiver accepted all of
    it, the exporter sent all it accepted and nothing was refused or failed
    (:func:`passes`); a passing rate below one core predicts the next (rate /
    cores used), a failing one is bisected. The sustained rate is the
    highest that passed; divided by the cores the Collector used there it
    is the per-CPU-second figure, which other processes on its core do not
    change. Saturated, the metrics receiver takes many times what the
    remote-write exporter can send (its queue grows): the exporter, not the
    receiver, is the capacity. The counts are the Collector's own
    (``otelcol_receiver_accepted_*``, ``otelcol_receiver_refused_*``,
    ``otelcol_exporter_sent_*``, ``otelcol_exporter_send_failed_*``,
    ``otelcol_exporter_enqueue_failed_*``
    on its telemetry port), its CPU is read from ``/proc``.

``prometheus-memory``
    Worker exports of the same shape for ``--instances`` processes, written
    through the shipped Collector into the pinned Prometheus
    (``scripts/build-prometheus.sh``): its RSS and Go heap per head series.

``queue-memory``
    The agent of ``collector-config/gateway/agent.yaml`` with its one gateway
    down (nothing listens on the gateway port): N spans, or N metric data
    points, sent to it wait in the load-balancing exporter's queue; the
    agent's RSS and Go heap are read idle and with N items held, giving
    bytes per queued item. (What was accepted is what is held: the
    per-gateway queues report no size of their own, and a drop fails the run.)

Run: ``python benchmarks/collector_capacity.py throughput --rounds 3`` (about
18 minutes on 2 cores); ``queue-memory`` and ``prometheus-memory`` take about a
minute each. Markdown on stdout, progress on stderr. Linux only (``taskset``,
``/proc``). Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from otlp_sink import data_points  # noqa: E402  # benchmarks/, the script's folder
from stack_processes import (  # noqa: E402
    LOOPBACK,
    Service,
    build_collector,
    find_prometheus,
    free_port,
    wait_until,
)

sys.path.insert(0, str(ROOT))
from otel_flask_metrics.metrics import BODY_SIZE_BUCKETS, DURATION_BUCKETS  # noqa: E402

SHIPPED_CONFIG = ROOT / "collector-config" / "otelcol-config.yaml"
AGENT_CONFIG = ROOT / "collector-config" / "gateway" / "agent.yaml"

SPANS_PER_BATCH = 256  # the distro's span export batch (README, Performance)
UA_TRANSFORM = "transform/user-agent"
REDACTION = ("attributes/drop-credentials", "redaction/secret-values")

#: The traces pipeline's processors per variant (memory_limiter always first).
TRACE_VARIANTS: dict[str, list[str] | None] = {
    "shipped": None,  # the file as it is
    "no user-agent": ["memory_limiter", *REDACTION],
    "no redaction": ["memory_limiter", UA_TRANSFORM],
    "neither": ["memory_limiter"],
}
METRIC_VARIANTS: dict[str, list[str] | None] = {
    "shipped": None,
    "no redaction": ["memory_limiter"],
}

# Real user agents of an API's callers: browsers, mobile, scripts.
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "python-requests/2.32.3",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "Go-http-client/2.0",
)
ROUTES = ("/items/<int:item_id>", "/users/<int:user_id>/orders", "/search", "/health")
STATUSES = (200, 200, 200, 200, 201, 404, 400, 500)
CONSUMERS = tuple(f"consumer-{i}" for i in range(20))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the load: OTLP requests shaped like the distro's --------------------------


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, tuple):
        return KeyValue(
            key=key,
            value=AnyValue(
                array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value])
            ),
        )
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _resource(instance: int) -> list[KeyValue]:
    return [
        _kv(k, v)
        for k, v in {
            "service.name": "orders-api",
            "service.instance.id": f"7f3c2a9e-{instance:04d}-4d7e-9b1a-{instance:012d}",
            "deployment.environment.name": "production",
            "service.version": "2.14.0",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": "1.39.1",
            "telemetry.distro.name": "otel-flask-metrics",
            "process.pid": 1000 + instance,
            "host.name": "api-7d9f8b6c5-x2k4p",
        }.items()
    ]


def _span(rng: random.Random, now: int) -> trace_pb2.Span:
    route = rng.choice(ROUTES)
    status = rng.choice(STATUSES)
    method = "POST" if route == "/items/<int:item_id>" and rng.random() < 0.25 else "GET"
    path = route.replace("<int:item_id>", str(rng.randrange(1, 10**6))).replace(
        "<int:user_id>", str(rng.randrange(1, 10**5))
    )
    query = "" if rng.random() < 0.6 else f"page={rng.randrange(1, 50)}&limit=50"
    consumer = rng.choice(CONSUMERS)
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.scheme": "https",
        "http.route": route,
        "http.response.status_code": status,
        "url.path": path,
        "server.address": "api.example.com",
        "server.port": 443,
        "client.address": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        "network.protocol.version": "1.1",
        "user_agent.original": rng.choice(USER_AGENTS),
        "http.response.header.content-type": ("application/json",),
        "http.response.body.size": rng.randrange(40, 20000),
        "api.consumer.id": consumer,
        "api.consumer.group": "enterprise" if consumer < "consumer-5" else "free",
    }
    if query:
        attributes["url.query"] = query
    if method == "POST":
        attributes["http.request.body.size"] = rng.randrange(40, 4000)
    if rng.random() < 0.3:
        attributes["http.request.header.referer"] = ("https://app.example.com/dashboard",)
    # What the redaction processors act on (an app without the distro's own
    # redaction, or one capturing headers): a tenth of the spans.
    roll = rng.random()
    if roll < 0.05:
        attributes["http.request.header.authorization"] = (
            "Bearer " + "".join(rng.choice("abcdef0123456789") for _ in range(40)),
        )
        attributes["http.request.header.x-api-key"] = ("sk_live_" + "a1b2c3d4" * 3,)
    elif roll < 0.1:
        attributes["url.query"] = (
            "token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36"
        )
    if status >= 500:
        attributes["error.type"] = str(status)
    start = now - rng.randrange(1_000_000, 200_000_000)
    return trace_pb2.Span(
        trace_id=rng.randbytes(16),
        span_id=rng.randbytes(8),
        name=f"{method} {route}",
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=start + rng.randrange(500_000, 150_000_000),
        attributes=[_kv(k, v) for k, v in attributes.items()],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR if status >= 500 else 0),
    )


def trace_requests(count: int, seed: int = 15) -> list[bytes]:
    """``count`` gzip bodies of SPANS_PER_BATCH spans each, from distinct processes."""
    rng = random.Random(seed)
    now = time.time_ns()
    bodies = []
    for i in range(count):
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(_resource(i))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "otel_flask_metrics.extension"
        scope_spans.scope.version = "0.1.0"
        scope_spans.spans.extend(_span(rng, now) for _ in range(SPANS_PER_BATCH))
        bodies.append(gzip.compress(request.SerializeToString()))
    return bodies


@dataclass
class MetricShape:
    """One worker's export: its attribute sets (route x status x consumer)."""

    routes: int = 10
    statuses: int = 3
    consumers: int = 10
    post_share: float = 0.25  # attribute sets of requests with a body


def _histogram_point(
    rng: random.Random, attrs: dict[str, Any], bounds: tuple[float, ...], now: int
) -> metrics_pb2.HistogramDataPoint:
    counts = [rng.randrange(0, 50) for _ in range(len(bounds) + 1)]
    total = sum(counts)
    return metrics_pb2.HistogramDataPoint(
        attributes=[_kv(k, v) for k, v in attrs.items()],
        start_time_unix_nano=now - 3_600_000_000_000,
        time_unix_nano=now,
        count=total,
        sum=total * bounds[len(bounds) // 2],
        bucket_counts=counts,
        explicit_bounds=list(bounds),
        min=0.0,
        max=bounds[-1],
    )


def metric_request(
    instance: int, shape: MetricShape, seed: int = 15
) -> ExportMetricsServiceRequest:
    """One worker's metric export, as the distro makes it (cumulative)."""
    rng = random.Random(seed + instance)
    now = time.time_ns()
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend(_resource(instance))
    scope = resource_metrics.scope_metrics.add()
    scope.scope.name = "otel_flask_metrics.extension"
    duration = scope.metrics.add(name="http.server.request.duration", unit="s")
    request_size = scope.metrics.add(name="http.server.request.body.size", unit="By")
    response_size = scope.metrics.add(name="http.server.response.body.size", unit="By")
    for histogram in (duration, request_size, response_size):
        histogram.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    statuses = (200, 404, 500, 201, 400, 401, 403, 409, 422, 503)[: shape.statuses]
    for r in range(shape.routes):
        for status in statuses:
            for c in range(shape.consumers):
                post = rng.random() < shape.post_share
                attrs: dict[str, Any] = {
                    "http.request.method": "POST" if post else "GET",
                    "url.scheme": "https",
                    "http.response.status_code": status,
                    "http.route": f"/resource{r}/<int:id>",
                    "api.consumer.id": f"consumer-{c}",
                    "api.consumer.group": "free",
                }
                if status >= 500:
                    attrs["error.type"] = str(status)
                duration.histogram.data_points.append(
                    _histogram_point(rng, attrs, DURATION_BUCKETS, now)
                )
                response_size.histogram.data_points.append(
                    _histogram_point(rng, attrs, BODY_SIZE_BUCKETS, now)
                )
                if post:
                    request_size.histogram.data_points.append(
                        _histogram_point(rng, attrs, BODY_SIZE_BUCKETS, now)
                    )
    active = scope.metrics.add(name="http.server.active_requests", unit="{request}")
    active.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    for method in ("GET", "POST"):
        active.sum.data_points.add(
            attributes=[_kv("http.request.method", method), _kv("url.scheme", "https")],
            time_unix_nano=now, as_int=rng.randrange(0, 3),
        )
    process = resource_metrics.scope_metrics.add()
    process.scope.name = "otel_flask_metrics.process_metrics"
    cpu = process.metrics.add(name="process.cpu.time", unit="s")
    cpu.sum.is_monotonic = True
    cpu.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    for mode in ("user", "system"):
        cpu.sum.data_points.add(
            attributes=[_kv("cpu.mode", mode)], time_unix_nano=now, as_double=rng.random() * 100
        )
    memory = process.metrics.add(name="process.memory.usage", unit="By")
    memory.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    memory.sum.data_points.add(time_unix_nano=now, as_int=52_000_000)
    uptime = process.metrics.add(name="process.uptime", unit="s")
    uptime.gauge.data_points.add(time_unix_nano=now, as_double=3600.0)
    return request


def metric_requests(count: int, shape: MetricShape) -> tuple[list[bytes], int]:
    """``count`` gzip bodies (distinct workers) and the data points in each."""
    requests = [metric_request(i, shape) for i in range(count)]
    return [gzip.compress(r.SerializeToString()) for r in requests], data_points(requests[0])


# --- sinks that accept and discard --------------------------------------------


class _RemoteWriteSink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def run_sinks(grpc_port: int, http_port: int) -> None:
    """The discarding sinks, in their own process (``--sinks``)."""
    import grpc

    def export(request: bytes, context: Any) -> bytes:
        return b""  # an empty ExportTraceServiceResponse

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export, request_deserializer=None, response_serializer=None
            )
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{LOOPBACK}:{grpc_port}")
    server.start()
    http_server = ThreadingHTTPServer((LOOPBACK, http_port), _RemoteWriteSink)
    http_server.daemon_threads = True
    print("ready", flush=True)
    http_server.serve_forever()


# --- the Collector, its telemetry and its CPU ----------------------------------


def variant_config(base: Path, pipeline: str, processors: list[str] | None, out: Path) -> Path:
    config = yaml.safe_load(base.read_text())
    if processors is not None:
        config["service"]["pipelines"][pipeline]["processors"] = processors
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def telemetry(url: str) -> list[tuple[str, dict[str, str], float]]:
    """The Collector's own metrics: (name, labels, value) of every sample."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = dict(_LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(
        value
        for n, have, value in samples
        if n in (name, name + "_total") and all(have.get(k) == v for k, v in labels.items())
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@dataclass
class Collector:
    service: Service
    otlp_http: int
    metrics_url: str

    @property
    def pid(self) -> int:
        assert self.service.process is not None
        return self.service.process.pid


@contextmanager
def collector(
    binary: Path, config: Path, work: Path, name: str, cpu: str | None, extra_env: dict[str, str]
) -> Iterator[Collector]:
    ports = {k: free_port() for k in ("grpc", "http", "health", "metrics")}
    env = {
        **os.environ,
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"{LOOPBACK}:{ports['grpc']}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{ports['http']}",
        "OTELCOL_HEALTH_ENDPOINT": f"{LOOPBACK}:{ports['health']}",
        "OTELCOL_METRICS_HOST": LOOPBACK,
        "OTELCOL_METRICS_PORT": str(ports["metrics"]),
        **extra_env,
    }
    argv = [str(binary), f"--config={config}"]
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    service = Service(
        name, argv, work, env=env, ready_url=f"http://{LOOPBACK}:{ports['health']}/"
    ).start()
    try:
        service.wait_ready(60)
        yield Collector(service, ports["http"], f"http://{LOOPBACK}:{ports['metrics']}/metrics")
    finally:
        service.stop()


# --- the load generator --------------------------------------------------------


@dataclass
class Load:
    """Senders posting prebuilt bodies; closed-loop, or paced to a rate."""

    port: int
    path: str
    bodies: list[bytes]
    connections: int
    rate: float | None = None  # requests/s over all senders; None: as fast as answered
    sent: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(self.connections):
            thread = threading.Thread(target=self._send, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _send(self, index: int) -> None:
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        interval = None if self.rate is None else self.connections / self.rate
        next_at = time.monotonic() + (interval or 0) * index / self.connections
        n = index
        while not self._stop.is_set():
            if interval is not None:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval
            body = self.bodies[n % len(self.bodies)]
            n += self.connections
            try:
                connection.request("POST", self.path, body, headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
                status = 0
            with self._lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 200:
                    self.sent += 1
                else:
                    self.failed += 1


# --- throughput ----------------------------------------------------------------


@dataclass
class Window:
    seconds: float
    accepted: float
    refused: float
    sent: float
    failed: float
    cpu: float  # cores

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds


def measure(col: Collector, signal: str, seconds: float) -> Window:
    """Deltas of the Collector's counters and CPU over ``seconds``."""
    unit = "spans" if signal == "traces" else "metric_points"
    exporter = "otlp_grpc/traces" if signal == "traces" else "prometheus_remote_write"

    def counters() -> tuple[float, ...]:
        t = telemetry(col.metrics_url)
        return (
            total(t, f"otelcol_receiver_accepted_{unit}"),
            total(t, f"otelcol_receiver_refused_{unit}")
            + total(t, f"otelcol_receiver_failed_{unit}"),
            total(t, f"otelcol_exporter_sent_{unit}", exporter=exporter),
            total(t, f"otelcol_exporter_send_failed_{unit}", exporter=exporter)
            + total(t, f"otelcol_exporter_enqueue_failed_{unit}", exporter=exporter),
        )

    before, cpu0, t0 = counters(), cpu_seconds(col.pid), time.monotonic()
    time.sleep(seconds)
    after, cpu1, t1 = counters(), cpu_seconds(col.pid), time.monotonic()
    d = [a - b for a, b in zip(after, before, strict=True)]
    elapsed = t1 - t0
    return Window(elapsed, d[0], d[1], d[2], d[3], (cpu1 - cpu0) / elapsed)


def passes(window: Window, offered: float) -> bool:
    """All offered accepted, all accepted exported (no queue growing), nothing refused."""
    return (
        window.accepted >= 0.97 * offered * window.seconds
        and window.sent >= 0.97 * window.accepted
        and window.refused == 0
        and window.failed == 0
    )


@dataclass
class Round:
    variant: str
    saturated: Window
    sustained: float  # items/s: the highest offered rate that passed
    confirmed: Window  # the window at that rate
    tried: list[tuple[float, bool]]


def throughput_round(
    binary: Path, work: Path, signal: str, variant: str, processors: list[str] | None,
    sinks: tuple[int, int], bodies: list[bytes], items_per_body: int, args: argparse.Namespace,
) -> Round:
    """Saturate, then search the highest offered rate that passes (:func:`passes`).

    Each step runs a fresh Collector, so no backlog of an earlier step is in
    the next one's figures.
    """
    grpc_port, http_port = sinks
    config = variant_config(
        SHIPPED_CONFIG, signal, processors,
        work / f"otelcol-{signal}-{variant.replace(' ', '-')}.yaml",
    )
    env = {
        "PROMETHEUS_REMOTE_WRITE_ENDPOINT": f"http://{LOOPBACK}:{http_port}/api/v1/write",
        "TRACES_OTLP_ENDPOINT": f"{LOOPBACK}:{grpc_port}",
        # Nothing sends logs; the logs exporter points at the discarding sink.
        "LOGS_OTLP_HTTP_ENDPOINT": f"http://{LOOPBACK}:{http_port}/v1/logs",
    }
    path = f"/v1/{signal}"

    def step(rate: float | None) -> Window:
        with collector(binary, config, work, f"collector-{signal}", args.collector_cpu, env) as col:
            per_s = None if rate is None else rate / items_per_body
            load = Load(col.otlp_http, path, bodies, args.connections, rate=per_s).start()
            time.sleep(args.warmup)
            window = measure(col, signal, args.seconds)
            load.stop()
            if load.failed:
                log(f"  answers other than 200 at {rate or 'saturation'}: {load.statuses}")
            return window

    saturated = step(None)
    if saturated.accepted <= 0:
        raise RuntimeError("nothing accepted while saturating: see the Collector's log")
    # The exporter may fall behind the receiver (saturated, the receiver takes
    # the core): 90 % of what it exported is the first rate tried. A rate that
    # passes below one core predicts the next (rate / cores used); one that
    # fails is bisected (geometrically) with the best that passed.
    rate = 0.9 * min(saturated.rate, saturated.sent / saturated.seconds)
    high: float | None = None
    tried: list[tuple[float, bool]] = []
    best, best_window = 0.0, saturated
    for _ in range(args.steps):
        window = step(rate)
        ok = passes(window, rate)
        tried.append((rate, ok))
        if ok:
            best, best_window = rate, window
            estimate = 0.98 * rate / max(window.cpu, 0.05)
            if estimate <= 1.03 * best:
                break  # at about one core already
            rate = estimate if high is None else min(estimate, (best * high) ** 0.5)
        else:
            high = rate
            rate = (best * high) ** 0.5 if best else 0.7 * rate
    return Round(variant, saturated, best, best_window, tried)


@contextmanager
def sinks_process(work: Path, cpu: str | None) -> Iterator[tuple[int, int]]:
    grpc_port, http_port = free_port(), free_port()
    argv = [sys.executable, __file__, "--sinks", str(grpc_port), str(http_port)]
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    service = Service("sinks", argv, work).start()
    try:
        wait_until(lambda: "ready" in service.log_tail(), 30, "the sinks")
        yield grpc_port, http_port
    finally:
        service.stop()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def throughput(args: argparse.Namespace) -> None:
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is needed (util-linux)")
    binary = build_collector()
    if args.load_cpu is not None:
        os.sched_setaffinity(0, {int(c) for c in args.load_cpu.split(",")})
    trace_bodies = trace_requests(16)
    shape = MetricShape()
    metric_bodies, points = metric_requests(16, shape)
    log(
        f"trace request: {SPANS_PER_BATCH} spans, {len(trace_bodies[0]):,} bytes gzip; "
        f"metric request: {points} data points, {len(metric_bodies[0]):,} bytes gzip"
    )
    results: dict[tuple[str, str], list[Round]] = {}
    plan = [("traces", v, p) for v, p in TRACE_VARIANTS.items()]
    plan += [("metrics", v, p) for v, p in METRIC_VARIANTS.items()]
    with tempfile.TemporaryDirectory(prefix="ofm-capacity-") as tmp:
        work = Path(tmp)
        with sinks_process(work, args.load_cpu) as sinks:
            for r in range(args.rounds):
                # Each round starts one variant later, so no variant always
                # runs in the same slot of a drifting machine.
                order = plan[r % len(plan):] + plan[: r % len(plan)]
                for signal, variant, processors in order:
                    bodies = trace_bodies if signal == "traces" else metric_bodies
                    per_body = SPANS_PER_BATCH if signal == "traces" else points
                    result = throughput_round(
                        binary, work, signal, variant, processors, sinks, bodies, per_body, args
                    )
                    results.setdefault((signal, variant), []).append(result)
                    s, c = result.saturated, result.confirmed
                    log(
                        f"round {r + 1} {signal:7} {variant:13}: saturated: accepted "
                        f"{s.rate:,.0f}/s, exported {s.sent / s.seconds:,.0f}/s at {s.cpu:.2f} "
                        f"cores; sustained {result.sustained:,.0f}/s (exported "
                        f"{c.sent / c.seconds:,.0f}/s at {c.cpu:.2f} cores); tried "
                        + ", ".join(f"{rate:,.0f}{'+' if ok else '-'}" for rate, ok in result.tried)
                    )
    report: dict[str, Any] = {
        f"{signal}/{variant}": [
            {
                "saturated_accepted_per_s": r.saturated.rate,
                "saturated_exported_per_s": r.saturated.sent / r.saturated.seconds,
                "saturated_cpu": r.saturated.cpu,
                "sustained_per_s": r.sustained,
                "sustained_exported_per_s": r.confirmed.sent / r.confirmed.seconds,
                "sustained_cpu": r.confirmed.cpu,
                "tried": r.tried,
            }
            for r in rounds
        ]
        for (signal, variant), rounds in results.items()
    }
    report["_meta"] = {"rounds": args.rounds, "cpu": args.collector_cpu, "points": points}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    render(report)


def render(report: dict[str, Any]) -> None:
    """The Markdown table of a throughput run (also from its ``--json`` file)."""
    meta = report["_meta"]
    print(
        f"One Collector core (`taskset -c {meta['cpu']}`), {meta['rounds']} rounds, "
        f"median (min-max); {SPANS_PER_BATCH}-span gzip batches; metric exports of "
        f"{meta['points']} data points each (in Prometheus a duration point is 17 samples, "
        "a size point 14). Per CPU-second: the sustained rate divided by the cores the "
        "Collector used there, which other processes on its core do not change\n"
    )
    print(
        "| pipeline | processors | sustained (/s) | CPU there (cores) | per CPU-second "
        "| saturated: accepted / exported (/s) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    for key, rounds in report.items():
        if key.startswith("_"):
            continue
        signal, variant = key.split("/", 1)
        processors = (TRACE_VARIANTS if signal == "traces" else METRIC_VARIANTS)[variant]
        shown = processors or config["service"]["pipelines"][signal]["processors"]
        unit = "spans" if signal == "traces" else "data points"
        print(
            f"| {signal} ({unit}) | {variant}: {', '.join(shown)} "
            f"| {spread([r['sustained_per_s'] for r in rounds])} "
            f"| {statistics.median(r['sustained_cpu'] for r in rounds):.2f} "
            f"| {spread([r['sustained_per_s'] / r['sustained_cpu'] for r in rounds])} "
            f"| {spread([r['saturated_accepted_per_s'] for r in rounds])} / "
            f"{spread([r['saturated_exported_per_s'] for r in rounds])} |"
        )


# --- queue memory --------------------------------------------------------------


def queue_memory(args: argparse.Namespace) -> None:
    binary = build_collector()
    down = free_port()  # the gateway: nothing listens here
    shape = MetricShape()
    metric_bodies, points = metric_requests(16, shape)
    trace_bodies = trace_requests(16)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ofm-queue-") as tmp:
        work = Path(tmp)
        for signal, bodies, per_body, unit in (
            ("traces", trace_bodies, SPANS_PER_BATCH, "spans"),
            ("metrics", metric_bodies, points, "metric_points"),
        ):
            for held in args.items:
                env = {"OTELCOL_GATEWAYS": f"[{LOOPBACK}:{down}]"}
                name = f"agent-{signal}-{held}"
                with collector(binary, AGENT_CONFIG, work, name, None, env) as agent:
                    time.sleep(2)
                    base_rss = rss_bytes(agent.pid)
                    base_heap = total(
                        telemetry(agent.metrics_url), "otelcol_process_runtime_heap_alloc_bytes"
                    )
                    connection = http.client.HTTPConnection(LOOPBACK, agent.otlp_http, timeout=30)
                    for n in range(held // per_body):
                        connection.request(
                            "POST", f"/v1/{signal}", bodies[n % len(bodies)],
                            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
                        )
                        response = connection.getresponse()
                        response.read()
                        if response.status != 200:
                            raise RuntimeError(f"the agent answered {response.status}")
                    time.sleep(args.settle)
                    t = telemetry(agent.metrics_url)
                    # The load-balancing exporter's per-gateway queues report no
                    # size of their own; nothing can leave (no gateway listens)
                    # and nothing may be dropped, so what was accepted is held.
                    queued = total(t, f"otelcol_receiver_accepted_{unit}")
                    dropped = [
                        line for line in agent.service.log_tail(200).splitlines()
                        if "drop" in line.lower() or "queue is full" in line.lower()
                    ]
                    if dropped:
                        raise RuntimeError("the agent dropped data:\n" + "\n".join(dropped[:5]))
                    rss = rss_bytes(agent.pid)
                    heap = total(t, "otelcol_process_runtime_heap_alloc_bytes")
                    rows.append((signal, queued, base_rss, rss, base_heap, heap))
                    log(
                        f"{signal}: {queued:,.0f} {unit} queued; RSS {base_rss / 2**20:.0f} -> "
                        f"{rss / 2**20:.0f} MiB, heap {base_heap / 2**20:.0f} -> "
                        f"{heap / 2**20:.0f} MiB"
                    )
    print("| signal | items queued | agent RSS idle -> held (MiB) | Go heap idle -> held (MiB) "
          "| bytes per queued item (RSS) | (heap) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for signal, queued, base_rss, rss, base_heap, heap in rows:
        per_rss = (rss - base_rss) / queued if queued else float("nan")
        per_heap = (heap - base_heap) / queued if queued else float("nan")
        print(
            f"| {signal} | {queued:,.0f} | {base_rss / 2**20:.0f} -> {rss / 2**20:.0f} "
            f"| {base_heap / 2**20:.0f} -> {heap / 2**20:.0f} | {per_rss:,.0f} | {per_heap:,.0f} |"
        )


# --- Prometheus memory per series ------------------------------------------------


def prometheus_memory(args: argparse.Namespace) -> None:
    """Series written through the shipped Collector into the pinned Prometheus."""
    binary, prometheus = build_collector(), find_prometheus()
    shape = MetricShape()
    with tempfile.TemporaryDirectory(prefix="ofm-prometheus-") as tmp:
        work = Path(tmp)
        url = f"http://{LOOPBACK}:{free_port()}"
        config = work / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\n")
        prom = Service(
            "prometheus",
            [
                prometheus.path, f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
                "--web.enable-remote-write-receiver",
            ],
            work, ready_url=f"{url}/-/ready",
        ).start()
        try:
            prom.wait_ready(60)
            assert prom.process is not None
            env = {
                "PROMETHEUS_REMOTE_WRITE_ENDPOINT": f"{url}/api/v1/write",
                "TRACES_OTLP_ENDPOINT": f"{LOOPBACK}:{free_port()}",
                "LOGS_OTLP_HTTP_ENDPOINT": f"http://{LOOPBACK}:{free_port()}/v1/logs",
            }
            with collector(binary, SHIPPED_CONFIG, work, "collector", None, env) as col:
                def own() -> tuple[float, float, float]:
                    t = telemetry(f"{url}/metrics")
                    return (
                        total(t, "prometheus_tsdb_head_series"),
                        float(rss_bytes(prom.process.pid)),  # type: ignore[union-attr]
                        total(t, "go_memstats_heap_inuse_bytes"),
                    )

                time.sleep(3)
                before = own()
                connection = http.client.HTTPConnection(LOOPBACK, col.otlp_http, timeout=60)
                for _ in range(args.samples):
                    started = time.monotonic()
                    for instance in range(args.instances):
                        body = gzip.compress(
                            metric_request(instance, shape).SerializeToString()
                        )
                        connection.request(
                            "POST", "/v1/metrics", body,
                            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
                        )
                        response = connection.getresponse()
                        response.read()
                        if response.status != 200:
                            raise RuntimeError(f"the Collector answered {response.status}")
                    # One export per process per interval, as the distro sends.
                    time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
                time.sleep(args.interval)
                after = own()
        finally:
            prom.stop()
    series = after[0] - before[0]
    print(
        f"Prometheus {prometheus.version}: {series:,.0f} series written through the shipped "
        f"Collector ({args.instances} worker processes' exports, {args.samples} samples each, "
        f"{args.interval:.0f} s apart)\n"
    )
    print("| | before | after | per series (bytes) |")
    print("| --- | --- | --- | --- |")
    print(f"| head series | {before[0]:,.0f} | {after[0]:,.0f} | |")
    for label, i in (("RSS", 1), ("Go heap in use", 2)):
        per = (after[i] - before[i]) / series if series else float("nan")
        print(
            f"| {label} (MiB) | {before[i] / 2**20:,.0f} | {after[i] / 2**20:,.0f} | {per:,.0f} |"
        )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--sinks":
        run_sinks(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("throughput", help="spans/s and data points/s per Collector core")
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--seconds", type=float, default=8.0, help="each measured window")
    t.add_argument("--warmup", type=float, default=2.0)
    t.add_argument("--connections", type=int, default=4)
    t.add_argument("--steps", type=int, default=5, help="rates tried per round")
    t.add_argument("--collector-cpu", default="0", help="taskset list for the Collector")
    t.add_argument("--load-cpu", default="1", help="CPUs of the load generator and sinks")
    t.add_argument("--json", help="also write the raw figures here")
    t.add_argument(
        "--from-json", help="only print the table of earlier runs' --json files (comma-separated)"
    )
    q = sub.add_parser("queue-memory", help="agent memory per item held in its queues")
    q.add_argument(
        "--items", type=lambda s: [int(x) for x in s.split(",")],
        default=[50_000, 100_000, 199_000],
        help="items to hold, comma-separated (rounded down to whole requests)",
    )
    q.add_argument("--settle", type=float, default=5.0, help="seconds before reading memory")
    m = sub.add_parser("prometheus-memory", help="Prometheus memory per series it holds")
    m.add_argument("--instances", type=int, default=20, help="worker processes simulated")
    m.add_argument("--samples", type=int, default=4, help="exports per process")
    m.add_argument("--interval", type=float, default=5.0, help="seconds between exports")
    args = parser.parse_args()
    commands = {
        "throughput": throughput,
        "queue-memory": queue_memory,
        "prometheus-memory": prometheus_memory,
    }
    if args.command == "throughput" and args.from_json:
        # Several runs' files: their rounds together.
        merged: dict[str, Any] = {}
        for name in args.from_json.split(","):
            report = json.loads(Path(name).read_text())
            meta = report.pop("_meta")
            for key, rounds in report.items():
                merged.setdefault(key, []).extend(rounds)
            merged.setdefault("_meta", {**meta, "rounds": 0})["rounds"] += meta["rounds"]
        render(merged)
        return
    commands[args.command](args)


if __name__ == "__main__":
    main()
