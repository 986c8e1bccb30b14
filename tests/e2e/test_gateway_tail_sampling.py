"""Tail decisions at the gateway: one agent, two gateways with the tail-sampling layer.

Real binaries on 127.0.0.1, free ports, as in test_gateway_tier.py: the
Collector built from the manifest runs as the agent
(collector-config/gateway/agent.yaml, traces routed by trace id) and as two
gateways running the shipped collector-config/otelcol-config.yaml with
collector-config/gateway/tail-sampling.yaml and then
tests/e2e/collector-file-export.yaml layered on, so each gateway writes the
spans it keeps to a file of its own. The decision wait is short here (3 s,
through the layer's variable) and is the one real wait of the test.

Traces of three spans from two services (a front server span, the back
service's server span and a database span under it) go in over OTLP/HTTP, each
service's spans in exports of their own, the back service's first and the
front's half a second later, as two processes would send them:

- ordinary traces, a few milliseconds long: kept at the configured percentage;
- error traces: the back service failed (its server and database spans have
  status ERROR) while the front span, the upstream caller, has none: the whole
  trace must be kept, the front span included;
- slow traces: the front span lasts longer than the latency threshold;
- lone kept spans: a back server span alone in its trace, failed or slow,
  whose parent was never exported, as the distro's in-process keep rules send
  an unsampled request's span: the layer must not drop them.

Every trace must be decided exactly once (the gateways' own decision
counters), every error, slow and lone trace found whole on exactly one
gateway, no trace split or partly kept, and the ordinary traces kept within a
binomial bound of the percentage. It prints what was sent and kept.
"""

from __future__ import annotations

import math
import os
import re
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    ROOT,
    Service,
    build_collector,
    free_port,
    wait_until,
)

from tests.e2e.file_export import FILE_EXPORT_CONFIG, exported_spans
from tests.e2e.test_gateway_tier import _collector_env, _spans_by_gateway, start_agent

AGENT_CONFIG = ROOT / "collector-config" / "gateway" / "agent.yaml"
GATEWAY_CONFIG = ROOT / "collector-config" / "otelcol-config.yaml"
TAIL_CONFIG = ROOT / "collector-config" / "gateway" / "tail-sampling.yaml"

FRONT, BACK = "tail-front", "tail-back"
DECISION_WAIT_S = 3
LATENCY_MS = 500
PERCENTAGE = 25
SLOW_MS = 800  # the slow traces' length, well past LATENCY_MS
ORDINARY, ERRORS, SLOW, LONE = 1200, 60, 60, 20
EXPORT_BATCH = 256  # spans per export, the distro's OTEL_BSP_MAX_EXPORT_BATCH_SIZE
# The ordinary share may be off by this many standard deviations of the
# binomial (a false failure about once in 1.7 million runs).
SIGMAS = 5

# The gateways' own metrics (Prometheus text) that count the decisions.
DECISIONS = re.compile(
    r"^otelcol_processor_tail_sampling_global_count_traces_sampled\{([^}]*)\} (\S+)$", re.MULTILINE
)
DROPPED_EARLY = re.compile(
    r"^otelcol_processor_tail_sampling_sampling_trace_dropped_too_early(?:\{[^}]*\})? (\S+)$",
    re.MULTILINE,
)


def _processors(config: dict[str, Any]) -> list[str]:
    return list(config["service"]["pipelines"]["traces"]["processors"])


def test_the_layer_is_the_shipped_traces_pipeline_plus_tail_sampling() -> None:
    """Merged configs replace lists whole, so the layer restates the processors."""
    shipped = _processors(yaml.safe_load(GATEWAY_CONFIG.read_text(encoding="utf-8")))
    layered = _processors(yaml.safe_load(TAIL_CONFIG.read_text(encoding="utf-8")))
    assert shipped[0] == "memory_limiter"
    assert layered == [shipped[0], "tail_sampling", *shipped[1:]]


# --- the processes ---------------------------------------------------------------


@dataclass
class Gateway:
    name: str
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    export_dir: Path | None = None
    service: Service | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def start(self, collector: Path, work: Path) -> Gateway:
        self.export_dir = work / f"{self.name}-export"
        self.export_dir.mkdir()
        health = free_port()
        env = {
            **_collector_env(self.grpc_port, free_port(), health, self.metrics_port),
            "OTELCOL_FILE_EXPORT_DIR": str(self.export_dir),
            "OTELCOL_TAIL_DECISION_WAIT": f"{DECISION_WAIT_S}s",
            "OTELCOL_TAIL_LATENCY_MS": str(LATENCY_MS),
            "OTELCOL_TAIL_SAMPLING_PERCENTAGE": str(PERCENTAGE),
            # Defined by the shipped config, unused here (nothing sends metrics
            # or logs; traces go to the file): loopback ports where nothing listens.
            "PROMETHEUS_REMOTE_WRITE_ENDPOINT": f"http://{LOOPBACK}:{free_port()}/api/v1/write",
            "TRACES_OTLP_ENDPOINT": f"{LOOPBACK}:{free_port()}",
            "LOGS_OTLP_HTTP_ENDPOINT": f"http://{LOOPBACK}:{free_port()}/v1/logs",
        }
        self.service = Service(
            self.name,
            [
                str(collector),
                f"--config={GATEWAY_CONFIG}",
                f"--config={TAIL_CONFIG}",
                f"--config={FILE_EXPORT_CONFIG}",
            ],
            work / "logs",
            env=env,
            ready_url=f"http://{LOOPBACK}:{health}/",
        ).start()
        self.service.wait_ready(90)
        return self

    def spans(self) -> list[dict[str, Any]]:
        return exported_spans(self.export_dir) if self.export_dir else []

    def _own_metrics(self) -> str:
        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def decisions(self) -> Counter[str]:
        """Traces this gateway decided, by the processor's counter: "true" kept, "false" not."""
        counts: Counter[str] = Counter()
        for labels, value in DECISIONS.findall(self._own_metrics()):
            sampled = re.search(r'sampled="(\w+)"', labels)
            if sampled:
                counts[sampled.group(1)] += int(float(value))
        return counts

    def dropped_too_early(self) -> int:
        return sum(int(float(v)) for v in DROPPED_EARLY.findall(self._own_metrics()))


@dataclass
class Tier:
    agent_otlp_http: str
    gateways: list[Gateway]


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[Tier]:
    collector = build_collector()
    logs = tmp_path / "logs"
    logs.mkdir()
    gateways = [Gateway(f"tail-gateway-{i}") for i in range(2)]
    agent: Service | None = None
    try:
        for gateway in gateways:
            gateway.start(collector, tmp_path)
        agent, agent_url = start_agent(collector, [g.address for g in gateways], logs)
        yield Tier(agent_url, gateways)
    finally:
        for service in [agent, *(g.service for g in gateways)]:
            if service is not None:
                service.stop()


# --- the traffic -----------------------------------------------------------------


@dataclass
class Sent:
    kinds: dict[str, str] = field(default_factory=dict)  # trace id -> kind
    spans: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def _make_traces() -> tuple[Sent, list[ReadableSpan]]:
    """Every trace of the run, made with the SDK: (what was made, its spans)."""
    finished = InMemorySpanExporter()
    tracers = {}
    # "kept": the back service's tracer for the lone spans, which records
    # whatever the parent decided, as the distro's keep rules do.
    for key, name, sampler in ((FRONT, FRONT, None), (BACK, BACK, None), ("kept", BACK, ALWAYS_ON)):
        provider = TracerProvider(resource=Resource.create({"service.name": name}), sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(finished))
        tracers[key] = provider.get_tracer("tail-sampling-test")
    front, back, kept = tracers[FRONT], tracers[BACK], tracers["kept"]
    sent = Sent()
    error = Status(StatusCode.ERROR, "HTTP 500")

    def three_spans(kind: str) -> int:
        now = time.time_ns()
        start = now - SLOW_MS * 1_000_000 if kind == "slow" else now - 3_000_000
        with front.start_as_current_span(
            "GET /orders", kind=SpanKind.SERVER, start_time=start, end_on_exit=False
        ) as root:
            with back.start_as_current_span(
                "GET /stock", kind=SpanKind.SERVER, start_time=start + 500_000, end_on_exit=False
            ) as server:
                with back.start_as_current_span(
                    "SELECT stock", start_time=start + 600_000, end_on_exit=False
                ) as query:
                    if kind == "error":
                        query.set_status(error)
                        server.set_status(error)
                    query.end(start + 1_000_000)
                server.end(start + 1_500_000)
            root.end(now)  # the front span answered, with no error of its own
        return root.get_span_context().trace_id

    def lone_span(kind: str) -> int:
        # The upstream caller's span was not sampled, so never exported.
        parent = trace.set_span_in_context(
            NonRecordingSpan(
                SpanContext(
                    trace_id=int.from_bytes(os.urandom(16), "big"),
                    span_id=int.from_bytes(os.urandom(8), "big"),
                    is_remote=True,
                )
            )
        )
        now = time.time_ns()
        start = now - (SLOW_MS if kind == "lone-slow" else 2) * 1_000_000
        span = kept.start_span("GET /stock", parent, SpanKind.SERVER, start_time=start)
        if kind == "lone-error":
            span.set_status(error)
        span.end(now)
        return span.get_span_context().trace_id

    plan = (
        ["ordinary"] * ORDINARY
        + ["error"] * ERRORS
        + ["slow"] * SLOW
        + ["lone-error"] * (LONE // 2)
        + ["lone-slow"] * (LONE - LONE // 2)
    )
    for kind in plan:
        trace_id = (lone_span if kind.startswith("lone") else three_spans)(kind)
        sent.kinds[trace.format_trace_id(trace_id)] = kind
    spans = list(finished.get_finished_spans())
    for span in spans:
        assert span.context is not None
        sent.spans[trace.format_trace_id(span.context.trace_id)].add(
            trace.format_span_id(span.context.span_id)
        )
    return sent, spans


def _export(endpoint: str, spans: list[ReadableSpan], service: str) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=10)
    mine = [s for s in spans if s.resource.attributes["service.name"] == service]
    for i in range(0, len(mine), EXPORT_BATCH):
        result = exporter.export(mine[i : i + EXPORT_BATCH])
        assert result is SpanExportResult.SUCCESS, f"{service} batch {i}: {result}"
    exporter.shutdown()


@pytest.mark.e2e
def test_errors_and_slow_traces_are_kept_whole_and_a_share_of_the_rest(
    tier: Tier, capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.monotonic()
    sent, spans = _make_traces()
    # The back service's spans first, the front's (with every root) half a
    # second later: one decision must still see both services' spans.
    _export(tier.agent_otlp_http, spans, BACK)
    time.sleep(0.5)
    _export(tier.agent_otlp_http, spans, FRONT)
    sent_at = time.monotonic()

    def decided() -> int:
        return sum(sum(g.decisions().values()) for g in tier.gateways)

    # Each gateway decides decision_wait after a trace's first span; then the
    # file exporter writes what was kept (flushed every second).
    wait_until(lambda: decided() >= len(sent.kinds), 30, "a decision on every trace", 0.2)
    decided_after = time.monotonic() - sent_at
    kept_count = sum(g.decisions()["true"] for g in tier.gateways)

    def all_kept_written() -> bool:
        found = _spans_by_gateway(tier.gateways)
        traces = [t for by_trace in found.values() for t in by_trace]
        spans_written = sum(len(v) for by_trace in found.values() for v in by_trace.values())
        return len(traces) >= kept_count and spans_written >= sum(
            len(sent.spans[t]) for t in set(traces) if t in sent.spans
        )

    wait_until(all_kept_written, 30, "the kept traces in the gateways' files", 0.2)
    written_after = time.monotonic() - sent_at
    found = _spans_by_gateway(tier.gateways)
    decisions = {g.name: g.decisions() for g in tier.gateways}

    # Every trace decided once: a trace whose spans went to two gateways would
    # be decided on both.
    assert decided() == len(sent.kinds), decisions
    assert all(g.dropped_too_early() == 0 for g in tier.gateways)

    # What was kept: whole, on exactly one gateway, every span once.
    kept: Counter[str] = Counter()
    split, partial = [], []
    duplicates = 0
    for trace_id, kind in sent.kinds.items():
        holders = [name for name, by_trace in found.items() if trace_id in by_trace]
        if not holders:
            continue
        if len(holders) > 1:
            split.append((trace_id, holders))
            continue
        got = found[holders[0]][trace_id]
        duplicates += len(got) - len(set(got))
        if set(got) != sent.spans[trace_id]:
            partial.append((kind, trace_id))
        kept[kind] += 1
    unknown = {t for by_trace in found.values() for t in by_trace} - sent.kinds.keys()
    assert not split, f"{len(split)} traces on two gateways, e.g. {split[:3]}"
    assert not partial, f"{len(partial)} traces partly kept, e.g. {partial[:3]}"
    assert duplicates == 0, f"{duplicates} spans written twice"
    assert not unknown
    assert sum(kept.values()) == kept_count, (kept, decisions)
    for name, by_trace in found.items():
        assert len(by_trace) == decisions[name]["true"], (name, decisions)
    assert all(found.values()), "one gateway kept nothing"

    # Errors (upstream span included), slow traces and the lone kept spans: all.
    sent_kinds = Counter(sent.kinds.values())
    for kind in ("error", "slow", "lone-error", "lone-slow"):
        assert kept[kind] == sent_kinds[kind], f"{kind}: {kept[kind]} of {sent_kinds[kind]} kept"

    # The rest: a share within the binomial bound of the configured percentage.
    p = PERCENTAGE / 100
    mean, sigma = ORDINARY * p, math.sqrt(ORDINARY * p * (1 - p))
    assert abs(kept["ordinary"] - mean) <= SIGMAS * sigma, (
        f"{kept['ordinary']} of {ORDINARY} ordinary traces kept, expected {mean:.0f} "
        f"+- {SIGMAS * sigma:.0f}"
    )

    with capsys.disabled():
        print(
            f"\n[gateway tail sampling] decision_wait {DECISION_WAIT_S} s, latency > "
            f"{LATENCY_MS} ms, {PERCENTAGE} % of the rest; {len(spans)} spans in "
            f"{len(sent.kinds)} traces"
            + f"\n  ordinary: {kept['ordinary']} of {ORDINARY} kept whole "
            f"({100 * kept['ordinary'] / ORDINARY:.1f} %, bound {mean:.0f} +- {SIGMAS * sigma:.0f})"
            + "".join(
                f"\n  {kind}: {kept[kind]} of {sent_kinds[kind]} kept whole"
                for kind in ("error", "slow", "lone-error", "lone-slow")
            )
            + "\n  per gateway (kept / not): "
            + ", ".join(f"{n} {d['true']} / {d['false']}" for n, d in decisions.items())
            + f"; 0 split, 0 partial, {duplicates} duplicated"
            f"\n  every trace decided {decided_after:.1f} s after the last export, "
            f"written {written_after:.1f} s after; {time.monotonic() - began:.1f} s of test"
        )
