"""Each gunicorn worker exports its own CPU time, memory and uptime over OTLP.

``opentelemetry-instrument gunicorn`` configures the SDK in the arbiter, and
the workers are forks of it (with or without ``--preload``). Every process,
recycled workers included, must export the process.* metrics under its own
``service.instance.id``, with figures read from its own pid, not the arbiter's.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    Service,
    free_port,
    wait_until,
)

from tests.e2e.otlp_sink import OtlpSink

APPS = Path(__file__).resolve().parents[1] / "apps"
pytestmark = pytest.mark.e2e

PROCESS_METRICS = ("process.cpu.time", "process.memory.usage", "process.uptime")


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as running:
        yield running


def _gunicorn(sink: OtlpSink, port: int, log_dir: Path, args: list[str]) -> Service:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "OTEL_SERVICE_NAME": "e2e-process",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
    }
    return Service(
        "gunicorn",
        [
            shutil.which("opentelemetry-instrument") or "opentelemetry-instrument",
            shutil.which("gunicorn") or "gunicorn",
            *("--bind", f"{LOOPBACK}:{port}", "--chdir", str(APPS), *args),
            "api:app",
        ],
        log_dir,
        env=env,
        ready_url=f"http://{LOOPBACK}:{port}/health",
    )


def _slow_burst(base: str, count: int) -> set[str]:
    """Concurrent slow requests, so every sync worker serves some; their pids."""
    with ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(lambda _: requests.get(base + "/slow", timeout=10), range(count)))
    assert all(r.status_code == 200 for r in responses)
    return {r.headers["X-Worker-Pid"] for r in responses}


def _by_instance(sink: OtlpSink, name: str) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """The newest points of a metric per service.instance.id."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for resource, attributes, point in sink.latest_points(name):
        found.setdefault(resource["service.instance.id"], []).append((attributes, point))
    return found


def _started_at(point: Any) -> float:
    """When the process started, from an uptime point: its time minus the uptime."""
    return float(point.time_unix_nano / 1e9 - point.as_double)


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
def test_every_worker_exports_its_own_process_metrics_and_recycling_shows(
    sink: OtlpSink, tmp_path: Path, preload: bool
) -> None:
    port = free_port()
    args = ["--workers", "2", "--max-requests", "20", *(["--preload"] if preload else [])]
    launched = time.time()
    app = _gunicorn(sink, port, tmp_path, args).start()
    base = f"http://{LOOPBACK}:{port}"
    try:
        app.wait_ready(60)
        # --- two workers, each with its own series --------------------------
        # Fewer requests than --max-requests: nobody is recycled yet.
        first_pids = _slow_burst(base, 6)
        assert len(first_pids) == 2, "both workers served"

        def served_by_two() -> bool:
            serving = set(_by_instance(sink, "http.server.request.duration"))
            with_memory = set(_by_instance(sink, "process.memory.usage"))
            return len(serving) == 2 and serving <= with_memory

        wait_until(served_by_two, 30, "2 workers with HTTP and process metrics")
        workers = set(_by_instance(sink, "http.server.request.duration"))
        for name in PROCESS_METRICS:
            exported = _by_instance(sink, name)
            for worker in workers:
                assert worker in exported, f"{name} of worker {worker}"
        for worker in workers:
            cpu = {
                a["cpu.mode"]: p.as_double
                for a, p in _by_instance(sink, "process.cpu.time")[worker]
            }
            # A worker forked from a preloaded arbiter may not have used a
            # whole clock tick (10 ms) yet: zero is a valid reading here.
            assert set(cpu) == {"user", "system"} and min(cpu.values()) >= 0
            ((_, rss),) = _by_instance(sink, "process.memory.usage")[worker]
            assert rss.as_int > 10 * 2**20, "a Flask worker's RSS is tens of MB"
            ((_, uptime),) = _by_instance(sink, "process.uptime")[worker]
            assert uptime.as_double > 0
            assert _started_at(uptime) >= launched - 1.0

        # --- recycling: new processes, new ids, their own start time ---------
        # Long enough after launch that a worker forked now cannot be mistaken
        # for the arbiter (whose uptime a pid captured before the fork would give).
        time.sleep(max(0.0, launched + 3.0 - time.time()))
        recycle_started = time.time()
        # Until two replacement workers have served (how requests spread over
        # the workers varies, so a fixed count may recycle only one of them).
        new_pids: set[str] = set()
        for _ in range(20):
            new_pids |= _slow_burst(base, 6) - first_pids
            if len(new_pids) >= 2:
                break
        assert len(new_pids) >= 2, "--max-requests replaced the workers"

        def new_processes() -> set[str]:
            return {
                instance
                for instance, points in _by_instance(sink, "process.uptime").items()
                if _started_at(points[0][1]) >= recycle_started - 0.5
            }

        wait_until(
            lambda: len(new_processes()) >= len(new_pids),
            30,
            f"process metrics of the {len(new_pids)} replacement workers",
        )
    finally:
        app.stop()

    new = new_processes()
    assert not new & workers, "a recycled worker is a new service.instance.id"
    memory = _by_instance(sink, "process.memory.usage")
    cpu_time = _by_instance(sink, "process.cpu.time")
    for instance in new:
        assert instance in memory and instance in cpu_time
    uptimes = _by_instance(sink, "process.uptime")
    # The arbiter exports too: it was configured before it forked anything.
    arbiters = {i for i, p in uptimes.items() if _started_at(p[0][1]) < launched + 2.0} - workers
    assert len(arbiters) == 1, "one arbiter, started at launch"
    (arbiter,) = arbiters
    arbiter_cpu = {a["cpu.mode"]: p.as_double for a, p in cpu_time[arbiter]}
    assert arbiter_cpu["user"] > 0, "the arbiter imported everything"
    assert len(uptimes) >= 1 + len(workers) + len(new)
