"""The gateway tier: one agent Collector, two gateways, one of them stopped mid-traffic.

Real binaries on 127.0.0.1, free ports: the Collector built from the manifest
runs as the agent (collector-config/gateway/agent.yaml: the load-balancing
exporter, traces by trace id, metrics by service, a static list of the two
gateways) and as two gateways (the shipped collector-config/otelcol-config.yaml
with tests/e2e/collector-file-export.yaml layered on, so each gateway writes
the spans and metrics it exports to files of its own), and a real Prometheus
takes the gateways' remote writes.

Spans and metrics go in over OTLP/HTTP, as the distro sends them, every half
second for ~35 s; one gateway is stopped (SIGTERM) 8 s in and started again
15 s later. Every OTLP export is checked accepted, and counted back:

- metrics: each (service, tick) is its own series, written by one export only
  (a fresh MeterProvider per tick), so a lost export is a missing series, not a
  gap a later cumulative value would hide; each must hold exactly what was
  added, and each service's series must come from one gateway only;
- traces: each trace has three spans from two services, sent in two exports
  (one per service), and all three must be in exactly one gateway's file, with
  no span missing or written twice.

It prints what was sent and counted and how long the stopped gateway took to
deliver its backlog once back (the recovery time: with a static list of
gateways nothing fails over to the other one; what was routed to the stopped
gateway waits in the agent's queue for it).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    ROOT,
    Service,
    build_collector,
    find_prometheus,
    free_port,
    wait_until,
)

from tests.e2e.file_export import FILE_EXPORT_CONFIG, exported_spans

pytestmark = pytest.mark.e2e

AGENT_CONFIG = ROOT / "collector-config" / "gateway" / "agent.yaml"
GATEWAY_CONFIG = ROOT / "collector-config" / "otelcol-config.yaml"

# Enough services that, with 200 ring points a gateway, both gateways get
# some of the metrics whatever ports the run picked (all 16 on one: ~2 in 10^5).
METRIC_SERVICES = [f"gateway-api-{i:02d}" for i in range(16)]
FRONT, BACK = "gateway-front", "gateway-back"
TICK_SECONDS = 0.5
TICKS = 70  # ~35 s of traffic
TRACES_PER_TICK = 6
STOP_AFTER = 8.0  # s of traffic before one gateway is stopped
OUTAGE_SECONDS = 15.0
METRIC = "gateway_test_requests_total"


# --- the processes ---------------------------------------------------------------


@dataclass
class Gateway:
    name: str
    grpc_port: int
    http_port: int
    health_port: int
    metrics_port: int
    export_dirs: list[Path] = field(default_factory=list)
    service: Service | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def start(self, collector: Path, work: Path, prometheus_url: str) -> Gateway:
        """Start (again): each incarnation exports to a fresh directory (the file
        exporter truncates its file when it opens it)."""
        export_dir = work / f"{self.name}-export-{len(self.export_dirs)}"
        export_dir.mkdir(parents=True)
        self.export_dirs.append(export_dir)
        env = {
            **_collector_env(self.grpc_port, self.http_port, self.health_port, self.metrics_port),
            "PROMETHEUS_REMOTE_WRITE_ENDPOINT": f"{prometheus_url}/api/v1/write",
            "OTELCOL_FILE_EXPORT_DIR": str(export_dir),
            # Defined by the shipped config, unused here (nothing sends logs;
            # traces go to the file): loopback ports where nothing listens.
            "TRACES_OTLP_ENDPOINT": f"{LOOPBACK}:{free_port()}",
            "LOGS_OTLP_HTTP_ENDPOINT": f"http://{LOOPBACK}:{free_port()}/v1/logs",
        }
        self.service = Service(
            self.name,
            [str(collector), f"--config={GATEWAY_CONFIG}", f"--config={FILE_EXPORT_CONFIG}"],
            work / "logs",
            env=env,
            ready_url=f"http://{LOOPBACK}:{self.health_port}/",
        ).start()
        self.service.wait_ready(90)
        return self

    def spans(self) -> list[dict[str, Any]]:
        return [span for d in self.export_dirs for span in exported_spans(d)]

    def metric_services(self) -> set[str]:
        """The service.name of every resource in this gateway's metrics export."""
        names = set()
        for d in self.export_dirs:
            path = d / "metrics.jsonl"
            if not path.exists():
                continue
            for line in path.read_text().split("\n")[:-1]:
                for resource_metrics in json.loads(line).get("resourceMetrics", []):
                    for attr in resource_metrics.get("resource", {}).get("attributes", []):
                        if attr["key"] == "service.name":
                            names.add(attr["value"]["stringValue"])
        return names


def _collector_env(grpc: int, http: int, health: int, metrics: int) -> dict[str, str]:
    """The variables both configs read for their own addresses, for a loopback run."""
    return {
        **os.environ,
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"{LOOPBACK}:{grpc}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{http}",
        "OTELCOL_HEALTH_ENDPOINT": f"{LOOPBACK}:{health}",
        "OTELCOL_METRICS_HOST": LOOPBACK,
        "OTELCOL_METRICS_PORT": str(metrics),
    }


def start_agent(collector: Path, gateways: list[str], logs: Path) -> tuple[Service, str]:
    """The agent Collector routing to ``gateways`` (host:port), ready; and its OTLP/HTTP URL."""
    agent_http, agent_health = free_port(), free_port()
    env = _collector_env(free_port(), agent_http, agent_health, free_port())
    env["OTELCOL_GATEWAYS"] = "[" + ", ".join(gateways) + "]"
    agent = Service(
        "agent",
        [str(collector), f"--config={AGENT_CONFIG}"],
        logs,
        env=env,
        ready_url=f"http://{LOOPBACK}:{agent_health}/",
    ).start()
    agent.wait_ready(90)
    return agent, f"http://{LOOPBACK}:{agent_http}"


@dataclass
class Tier:
    prometheus_url: str
    agent_otlp_http: str
    gateways: list[Gateway]
    collector: Path
    work: Path


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[Tier]:
    collector = build_collector()
    prometheus = find_prometheus()
    logs = tmp_path / "logs"
    logs.mkdir()
    prom: Service | None = None
    agent: Service | None = None
    gateways = [
        Gateway(f"gateway-{i}", free_port(), free_port(), free_port(), free_port())
        for i in range(2)
    ]
    try:
        prometheus_port = free_port()
        prometheus_url = f"http://{LOOPBACK}:{prometheus_port}"
        config = tmp_path / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\n")
        prom = Service(
            "prometheus",
            [
                prometheus.path,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                f"--web.listen-address={prometheus_url.removeprefix('http://')}",
                "--web.enable-remote-write-receiver",
            ],
            logs,
            ready_url=f"{prometheus_url}/-/ready",
        ).start()
        prom.wait_ready(60)
        for gateway in gateways:
            gateway.start(collector, tmp_path, prometheus_url)
        agent, agent_url = start_agent(collector, [g.address for g in gateways], logs)
        yield Tier(prometheus_url, agent_url, gateways, collector, tmp_path)
    finally:
        # The agent first (it hands its queues to the gateways), Prometheus last.
        for service in [agent, *(g.service for g in gateways), prom]:
            if service is not None:
                service.stop()


# --- the traffic -----------------------------------------------------------------


@dataclass
class Sent:
    """What the traffic thread sent, and when (monotonic seconds)."""

    metrics: dict[tuple[str, int], int] = field(default_factory=dict)
    metric_times: dict[int, float] = field(default_factory=dict)
    traces: dict[str, set[str]] = field(default_factory=dict)  # trace id -> span ids
    trace_times: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None


def _traffic(endpoint: str, sent: Sent, stop: threading.Event) -> None:
    try:
        metric_exporters = {
            s: OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=10)
            for s in METRIC_SERVICES
        }
        span_exporters = {
            s: OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=10) for s in (FRONT, BACK)
        }
        finished = InMemorySpanExporter()
        providers = {}
        for name in (FRONT, BACK):
            provider = TracerProvider(resource=Resource.create({"service.name": name}))
            provider.add_span_processor(SimpleSpanProcessor(finished))
            providers[name] = provider
        front = providers[FRONT].get_tracer("gateway-test")
        back = providers[BACK].get_tracer("gateway-test")
        start = time.monotonic()
        for tick in range(TICKS):
            if stop.is_set():
                return
            # Metrics: one export per service, of a series for this tick alone.
            for index, service in enumerate(METRIC_SERVICES):
                reader = InMemoryMetricReader()
                provider = MeterProvider(
                    resource=Resource.create(
                        {"service.name": service, "service.instance.id": f"{service}-1"}
                    ),
                    metric_readers=[reader],
                )
                count = 1 + (tick * 7 + index) % 5
                counter = provider.get_meter("gateway-test").create_counter(
                    "gateway.test.requests", unit="{request}"
                )
                counter.add(count, {"tick": str(tick)})
                data = reader.get_metrics_data()
                assert data is not None
                result = metric_exporters[service].export(data)
                assert result is MetricExportResult.SUCCESS, f"{service} tick {tick}: {result}"
                sent.metrics[(service, tick)] = count
                provider.shutdown()
            sent.metric_times[tick] = time.monotonic()
            # Traces: a front span and two back spans, each service's spans in
            # an export of its own, as two processes would send them.
            for _ in range(TRACES_PER_TICK):
                with front.start_as_current_span("GET /orders") as root:
                    with back.start_as_current_span("SELECT orders"):
                        with back.start_as_current_span("serialize"):
                            pass
                context = root.get_span_context()
                trace_id = trace.format_trace_id(context.trace_id)
                sent.traces[trace_id] = set()
            spans = finished.get_finished_spans()
            finished.clear()
            for name in (FRONT, BACK):
                batch = [s for s in spans if s.resource.attributes["service.name"] == name]
                result = span_exporters[name].export(batch)
                assert result is SpanExportResult.SUCCESS, f"{name} tick {tick}: {result}"
            now = time.monotonic()
            for span in spans:
                assert span.context is not None
                trace_id = trace.format_trace_id(span.context.trace_id)
                sent.traces[trace_id].add(trace.format_span_id(span.context.span_id))
                sent.trace_times[trace_id] = now
            time.sleep(max(0.0, start + (tick + 1) * TICK_SECONDS - time.monotonic()))
        for provider in providers.values():
            provider.shutdown()
    except BaseException as exc:  # reported by the test thread
        sent.error = exc


# --- reading back ----------------------------------------------------------------


def _series(prometheus_url: str) -> dict[tuple[str, int], float]:
    query = urllib.parse.urlencode({"query": METRIC})
    try:
        with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=5) as r:
            result = json.load(r)["data"]["result"]
    except (OSError, ValueError):
        return {}
    return {
        (item["metric"]["service_name"], int(item["metric"]["tick"])): float(item["value"][1])
        for item in result
    }


def _spans_by_gateway(gateways: Sequence[Any]) -> dict[str, dict[str, list[str]]]:
    """gateway name -> trace id -> the span ids it exported (duplicates kept).

    Any gateway with a ``name`` and a ``spans()`` reader of its file export.
    """
    found: dict[str, dict[str, list[str]]] = {}
    for gateway in gateways:
        by_trace: dict[str, list[str]] = defaultdict(list)
        for span in gateway.spans():
            by_trace[span["traceId"]].append(span["spanId"])
        found[gateway.name] = by_trace
    return found


def test_gateway_stopped_mid_traffic_loses_nothing_and_splits_no_trace(
    tier: Tier, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = Sent()
    stop = threading.Event()
    thread = threading.Thread(target=_traffic, args=(tier.agent_otlp_http, sent, stop))
    began = time.monotonic()
    thread.start()
    try:
        stopped = tier.gateways[1]
        assert stopped.service is not None
        time.sleep(STOP_AFTER)
        down_at = time.monotonic()
        stopped.service.stop()
        stop_took = time.monotonic() - down_at
        time.sleep(max(0.0, OUTAGE_SECONDS - stop_took))
        # What the healthy gateway exported of the outage's traces before the
        # stopped one was back: its share goes on while the other is down.
        healthy_during = len(
            {s["traceId"] for s in tier.gateways[0].spans()}
            & {t for t, at in sent.trace_times.items() if at > down_at}
        )
        restart_at = time.monotonic()
        stopped.start(tier.collector, tier.work, tier.prometheus_url)
        up_at = time.monotonic()
        outage_ticks = [t for t, at in sent.metric_times.items() if down_at <= at <= restart_at]
        outage_traces = {t for t, at in sent.trace_times.items() if down_at <= at <= restart_at}
        assert outage_ticks and outage_traces

        # Recovery: until everything sent while the gateway was down is stored.
        def metrics_back() -> bool:
            series = _series(tier.prometheus_url)
            return all(
                series.get((s, t)) == sent.metrics[(s, t)]
                for s in METRIC_SERVICES
                for t in outage_ticks
            )

        def traces_back() -> bool:
            found = _spans_by_gateway(tier.gateways)
            return all(
                any(set(by_trace.get(t, ())) == sent.traces[t] for by_trace in found.values())
                for t in outage_traces
            )

        wait_until(metrics_back, 90, "the outage's metrics in Prometheus", 0.2)
        metrics_recovered = time.monotonic() - up_at
        wait_until(traces_back, 90, "the outage's traces in the gateways' files", 0.2)
        traces_recovered = time.monotonic() - up_at
    except BaseException:
        stop.set()
        raise
    finally:
        thread.join(TICKS * TICK_SECONDS + 60)
    if sent.error is not None:
        raise sent.error
    assert not thread.is_alive()
    traffic_seconds = time.monotonic() - began

    # Everything, exact, once the agent's queues are drained.
    expected_total = sum(sent.metrics.values())

    def all_metrics() -> bool:
        return _series(tier.prometheus_url) == {k: float(v) for k, v in sent.metrics.items()}

    def all_traces() -> bool:
        found = _spans_by_gateway(tier.gateways)
        return sum(len(v) for by_trace in found.values() for v in by_trace.values()) >= sum(
            len(v) for v in sent.traces.values()
        )

    wait_until(all_metrics, 60, "every series exact in Prometheus", 0.5)
    wait_until(all_traces, 60, "every span in the gateways' files", 0.5)
    time.sleep(2)  # the file exporter flushes every second: a duplicate would show by now
    series = _series(tier.prometheus_url)
    counted_total = sum(series.values())
    found = _spans_by_gateway(tier.gateways)

    # Metrics: sent == counted, series by series, and each service on one gateway.
    assert series == {k: float(v) for k, v in sent.metrics.items()}
    homes = {g.name: g.metric_services() for g in tier.gateways}
    for service in METRIC_SERVICES:
        holders = [name for name, services in homes.items() if service in services]
        assert len(holders) == 1, f"{service}'s metrics went through {holders}"
    assert all(homes.values()), f"one gateway took no metrics at all: {homes}"

    # Traces: each whole on exactly one gateway, every span once.
    split, incomplete = [], []
    duplicates = 0
    per_gateway: Counter[str] = Counter()
    for trace_id, span_ids in sent.traces.items():
        holders = [name for name, by_trace in found.items() if trace_id in by_trace]
        if len(holders) != 1:
            split.append((trace_id, holders))
            continue
        got = found[holders[0]][trace_id]
        per_gateway[holders[0]] += 1
        duplicates += len(got) - len(set(got))
        if set(got) != span_ids:
            incomplete.append(trace_id)
    unknown = {t for by_trace in found.values() for t in by_trace} - sent.traces.keys()
    assert not split, f"{len(split)} traces not on exactly one gateway, e.g. {split[:3]}"
    assert not incomplete, f"{len(incomplete)} traces with spans missing, e.g. {incomplete[:3]}"
    assert duplicates == 0, f"{duplicates} spans exported twice"
    assert not unknown
    assert len(per_gateway) == 2, f"all traces on one gateway: {per_gateway}"
    assert healthy_during > 0, "the healthy gateway exported nothing while the other was down"

    sent_spans = sum(len(v) for v in sent.traces.values())
    counted_spans = sum(len(v) for by_trace in found.values() for v in by_trace.values())
    with capsys.disabled():
        print(
            f"\n[gateway tier] {traffic_seconds:.0f} s of traffic, {stopped.name} down "
            f"{restart_at - down_at:.1f} s (stopping took {stop_took:.1f} s, restart to ready "
            f"{up_at - restart_at:.1f} s)"
            f"\n  metrics: {len(sent.metrics)} series, sent {expected_total}, counted "
            f"{counted_total:.0f}; gateways by service: "
            + ", ".join(f"{n} {len(s)}" for n, s in homes.items())
            + f"\n  traces: {len(sent.traces)} traces / {sent_spans} spans sent, {counted_spans} "
            f"counted, 0 split, {duplicates} duplicated; per gateway: {dict(per_gateway)}"
            f"\n  during the outage: {len(outage_traces)} traces and {len(outage_ticks)} ticks "
            f"sent; the healthy gateway had exported {healthy_during} of its traces before "
            f"the restart"
            f"\n  recovery once the gateway was ready: metrics {metrics_recovered:.1f} s, "
            f"traces {traces_recovered:.1f} s (incl. the file exporter's 1 s flush)"
        )
