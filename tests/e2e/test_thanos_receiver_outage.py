"""The Thanos store with one receiver stopped mid-traffic, then started again.

``LocalStack(thanos=...)`` as ``scripts/stack.py --store thanos`` runs it: the
Collector remote-writes to Prometheus and to the first receiver of a hashring
of two (replication factor 1), which forwards each series to the receiver that
owns it. OTLP metrics go straight to the Collector every half second for ~30 s
from eight services; one receiver is stopped (SIGTERM) 5 s in and started
again 15 s later on the same ports and data directory:

- the second receiver (not the one the Collector writes to): the entry
  receiver writes its own share and fails the forward, so the whole remote
  write answers 503 ("backing off forward request ... target not available")
  and the Collector retries all of it. The share already written is written
  again, the same samples: Thanos takes them without an error (no 409, no
  out-of-order: the exporter sends one request at a time, so no newer sample
  gets in first);
- the entry receiver: every remote write fails to connect (nothing logged).

Either way the exporter retries the request at the head of its queue and
everything else waits behind it, so the running receiver's share of the
outage is not written either until the stopped one is back. With the
exporter's default timeout (5 s, which also ends the retries) that head
request was dropped every 5 s; collector-config/thanos.yaml gives it 5 min.

Each export holds, per service, four series of its own tick (from a fresh
MeterProvider, so written by that export only: a lost write is a missing
series, not a gap a later cumulative value would hide) and four cumulative
counters (one MeterProvider for the whole run, as an app exports). Once the
receiver is back, every series must reach Thanos Query with exactly what was
sent, as in Prometheus. It prints what was sent and counted per receiver (the
owner of each series, read back through Query's dedup-free view), how long the
stored receivers took to hold everything once the stopped one was ready, and
what the Collector and the entry receiver logged.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from local_stack import LocalStack  # type: ignore[import-not-found]
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
)
from opentelemetry.sdk.resources import Resource
from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    build_thanos,
    wait_until,
)

pytestmark = pytest.mark.e2e

SERVICES = [f"outage-api-{i}" for i in range(8)]
KEYS = 4  # series of each kind per service and export
TICK_SECONDS = 0.5
TICKS = 60  # ~30 s of traffic
STOP_AFTER = 5.0  # s of traffic before the receiver is stopped
OUTAGE_SECONDS = 15.0
TICK_METRIC = "outage_test_ticks_total"  # one series per (service, tick, key)
CUMULATIVE_METRIC = "outage_test_requests_total"  # one series per (service, key)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path, with_alertmanager=False, thanos=build_thanos())
    local.start()
    try:
        yield local
    finally:
        local.stop()


# --- the traffic -----------------------------------------------------------------


@dataclass
class Sent:
    ticks: dict[tuple[str, int, int], int] = field(default_factory=dict)
    tick_times: dict[int, float] = field(default_factory=dict)  # tick -> monotonic, once sent
    cumulative: Counter[tuple[str, int]] = field(default_factory=Counter)
    error: BaseException | None = None


def _traffic(endpoint: str, sent: Sent, stop: threading.Event) -> None:
    try:
        exporters = {
            s: OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=10) for s in SERVICES
        }
        resources = {
            s: Resource.create({"service.name": s, "service.instance.id": f"{s}-1"})
            for s in SERVICES
        }
        readers = {s: InMemoryMetricReader() for s in SERVICES}
        lasting = {
            s: MeterProvider(resource=resources[s], metric_readers=[readers[s]]) for s in SERVICES
        }
        requests = {
            s: lasting[s].get_meter("outage-test.requests").create_counter("outage.test.requests")
            for s in SERVICES
        }
        start = time.monotonic()
        for tick in range(TICKS):
            if stop.is_set():
                return
            for index, service in enumerate(SERVICES):
                fresh_reader = InMemoryMetricReader()
                fresh = MeterProvider(resource=resources[service], metric_readers=[fresh_reader])
                ticks = fresh.get_meter("outage-test.ticks").create_counter("outage.test.ticks")
                for key in range(KEYS):
                    count = 1 + (tick * 7 + index * 3 + key) % 5
                    ticks.add(count, {"tick": str(tick), "key": str(key)})
                    sent.ticks[(service, tick, key)] = count
                    requests[service].add(count, {"key": str(key)})
                    sent.cumulative[(service, key)] += count
                own = fresh_reader.get_metrics_data()
                cumulative = readers[service].get_metrics_data()
                assert own is not None and cumulative is not None
                # One export per service and tick, as one app process sends it:
                # one resource (the encoder keeps one entry per resource and
                # per scope), two scopes.
                (mine,), (lasting_metrics,) = own.resource_metrics, cumulative.resource_metrics
                data = MetricsData([ResourceMetrics(
                    mine.resource,
                    [*mine.scope_metrics, *lasting_metrics.scope_metrics],
                    mine.schema_url,
                )])
                result = exporters[service].export(data)
                assert result is MetricExportResult.SUCCESS, f"{service} tick {tick}: {result}"
                fresh.shutdown()
            sent.tick_times[tick] = time.monotonic()
            time.sleep(max(0.0, start + (tick + 1) * TICK_SECONDS - time.monotonic()))
        for provider in lasting.values():
            provider.shutdown()
    except BaseException as exc:  # reported by the test thread
        sent.error = exc


# --- reading back ----------------------------------------------------------------


def _query(base: str, promql: str, **params: str) -> list[dict[str, Any]]:
    body = urllib.parse.urlencode({"query": promql, **params}).encode()
    try:
        with urllib.request.urlopen(f"{base}/api/v1/query", body, timeout=10) as response:
            return json.load(response)["data"]["result"]  # type: ignore[no-any-return]
    except (OSError, ValueError, KeyError):
        return []


def _ticks(base: str, **params: str) -> dict[tuple[str, int, int], float]:
    return {
        (r["metric"]["service_name"], int(r["metric"]["tick"]), int(r["metric"]["key"])):
            float(r["value"][1])
        for r in _query(base, TICK_METRIC, **params)
    }


def _cumulative(base: str) -> dict[tuple[str, int], float]:
    return {
        (r["metric"]["service_name"], int(r["metric"]["key"])): float(r["value"][1])
        for r in _query(base, CUMULATIVE_METRIC)
    }


def _owners(query_url: str) -> dict[tuple[str, int, int], str]:
    """Which receiver holds each tick series: its own label, in Query's dedup-free view."""
    return {
        (r["metric"]["service_name"], int(r["metric"]["tick"]), int(r["metric"]["key"])):
            r["metric"]["receive_replica"]
        for r in _query(query_url, TICK_METRIC, dedup="false")
    }


def _queue_size(stack: LocalStack) -> int | None:
    """Requests waiting in the Collector's queue for Thanos (its own metric)."""
    url = f"http://{LOOPBACK}:{stack.ports['collector_metrics']}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    match = re.search(
        r"^otelcol_exporter_queue_size\{[^}]*"
        r'exporter="prometheus_remote_write/thanos"[^}]*\} (\S+)$',
        text, re.MULTILINE,
    )
    return None if match is None else int(float(match.group(1)))


def _collector_log(path: Path) -> dict[str, int]:
    """What the Collector's exporter to Thanos said: answers, drops, and why."""
    summary: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        if "prometheus_remote_write/thanos" not in line:
            continue
        status = re.search(r'"status_code": (\d+)', line)
        if status:
            summary[f"answered {status.group(1)}"] += 1
        items = re.search(r'"dropped_items": (\d+)', line)
        if items:
            summary["items dropped"] += int(items.group(1))
        for what in ("backing off forward request", "context deadline exceeded"):
            if what in line:
                summary[what] += 1
    return dict(summary)


def _thanos_log(path: Path) -> dict[str, int]:
    """Thanos' warnings and errors, by message."""
    summary: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        if re.search(r"level=(warn|error)", line):
            message = re.search(r'msg="([^"]*)"', line)
            reason = re.search(r'(?:reason|err)="([^"]{0,60})', line)
            summary[" ".join(m.group(1) for m in (message, reason) if m)] += 1
    return dict(summary)


@pytest.mark.parametrize("stopped", [1, 0], ids=["second-receiver", "entry-receiver"])
def test_receiver_stopped_mid_traffic_loses_nothing(
    stack: LocalStack, stopped: int, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = stack.thanos_services[stopped]
    sent = Sent()
    stop = threading.Event()
    thread = threading.Thread(target=_traffic, args=(stack.otlp_http_endpoint, sent, stop))
    began = time.monotonic()
    thread.start()
    try:
        time.sleep(STOP_AFTER)
        down_at = time.monotonic()
        receiver.stop()
        stop_took = time.monotonic() - down_at
        time.sleep(max(0.0, OUTAGE_SECONDS - stop_took))
        # What Query shows of the outage's series before the receiver is back,
        # and what waits in the Collector.
        during = _ticks(stack.thanos_query_url, dedup="false")
        backlog = _queue_size(stack)
        restart_at = time.monotonic()
        receiver.start().wait_ready(60)
        up_at = time.monotonic()
        outage_ticks = {t for t, at in sent.tick_times.items() if down_at <= at <= restart_at}
        assert outage_ticks
        outage = {k: v for k, v in sent.ticks.items() if k[1] in outage_ticks}

        def outage_back() -> bool:
            found = _ticks(stack.thanos_query_url)
            return all(found.get(k) == v for k, v in outage.items())

        recovered: float | None = None
        drained: float | None = None
        try:
            wait_until(lambda: _queue_size(stack) == 0, 45, "the Collector's queue empty", 0.2)
            drained = time.monotonic() - up_at
            wait_until(outage_back, 45, "the outage's series in Thanos Query", 0.2)
            recovered = time.monotonic() - up_at
        except TimeoutError:
            pass  # reported below, with what is missing
    except BaseException:
        stop.set()
        raise
    finally:
        thread.join(TICKS * TICK_SECONDS + 60)
    if sent.error is not None:
        raise sent.error
    assert not thread.is_alive()
    traffic_seconds = max(sent.tick_times.values()) - began
    expected = {k: float(v) for k, v in sent.ticks.items()}
    expected_cumulative = {k: float(v) for k, v in sent.cumulative.items()}

    def everything() -> bool:
        return (
            _ticks(stack.thanos_query_url) == expected
            and _cumulative(stack.thanos_query_url) == expected_cumulative
        )

    try:
        wait_until(everything, 15 if recovered is None else 30, "every series exact", 0.5)
    except TimeoutError:
        pass  # reported below, with what is missing
    thanos, prometheus = _ticks(stack.thanos_query_url), _ticks(stack.prometheus_url)
    owners = _owners(stack.thanos_query_url)
    lost = sorted(k for k in expected if k not in thanos)
    wrong = sorted(k for k in expected if k in thanos and thanos[k] != expected[k])
    unknown = sorted(thanos.keys() - expected.keys())

    # Per receiver (the owner of each series), before/during/after the outage.
    table: Counter[tuple[str, str, str]] = Counter()
    for (service, tick, key), value in sent.ticks.items():
        when = (
            "during" if tick in outage_ticks
            else "before" if sent.tick_times[tick] < down_at else "after"
        )
        owner = owners.get((service, tick, key), "lost")
        table[(owner, when, "series")] += 1
        table[(owner, when, "sent")] += value
        table[(owner, when, "counted")] += int(thanos.get((service, tick, key), 0))
    stayed_up = str(2 - stopped)  # receive_replica of the receiver left running
    during_up = [k for k in outage if owners.get(k) == stayed_up]
    visible_during = sum(1 for k in during_up if during.get(k) == sent.ticks[k])
    collector_log = _collector_log(stack.log_dir / "otel-collector.log")
    thanos_logs = {
        service.name: _thanos_log(service.log_path) for service in stack.thanos_services
    }
    with capsys.disabled():
        print(
            f"\n[thanos receiver outage: {receiver.name} stopped] {traffic_seconds:.0f} s of "
            f"traffic, down {restart_at - down_at:.1f} s (stopping took {stop_took:.1f} s, "
            f"restart to ready {up_at - restart_at:.1f} s), {len(outage_ticks)} ticks sent "
            f"while down"
            f"\n  tick series: {len(expected)} sent, {len(thanos)} in Thanos, "
            f"{len(prometheus)} in Prometheus; lost {len(lost)}, wrong {len(wrong)}"
            f"\n  counts per owner (sent/counted): "
            + "; ".join(
                f"receiver {owner} {when} {table[(owner, when, 'sent')]}/"
                f"{table[(owner, when, 'counted')]} ({table[(owner, when, 'series')]} series)"
                for owner in sorted({o for o, _, _ in table})
                for when in ("before", "during", "after")
            )
            + f"\n  the running receiver's outage series already in Query before the restart: "
            f"{visible_during} of {len(during_up)}"
            + f"\n  requests queued in the Collector for Thanos before the restart: {backlog}"
            + "\n  once the receiver was ready: queue empty after "
            + ("never" if drained is None else f"{drained:.1f} s")
            + ", outage series all in Thanos Query after "
            + ("never" if recovered is None else f"{recovered:.1f} s")
            + f"\n  Collector (exporter to Thanos) logged: {collector_log}"
            + "".join(f"\n  {name} warned: {log}" for name, log in thanos_logs.items())
        )
    assert prometheus == expected, "Prometheus lost or changed series"
    assert not lost, f"{len(lost)} series never reached Thanos, e.g. {lost[:5]}"
    assert not wrong, f"{len(wrong)} series with other values, e.g. {wrong[:5]}"
    assert not unknown
    assert _cumulative(stack.thanos_query_url) == expected_cumulative
    assert set(owners.values()) == {"1", "2"}, "one receiver owns every series"
    # The retried share written twice was taken as the same samples.
    refused = [m for log in thanos_logs.values() for m in log if re.search("order|uplicate", m)]
    assert not refused, refused
