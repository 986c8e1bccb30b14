from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from otel_flask_metrics import exit_export


@pytest.fixture(autouse=True)
def no_budget() -> Iterator[None]:
    exit_export._reset_for_tests()
    yield
    exit_export._reset_for_tests()


def test_the_exporters_event_is_replaced_and_keeps_its_state() -> None:
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    assert exit_export.watch(exporter)
    event = exporter._client._shutdown_event
    assert isinstance(event, exit_export.ExitBoundEvent)
    assert not event.is_set()
    assert exit_export.watch(exporter)  # twice is once
    assert exporter._client._shutdown_event is event
    exporter.shutdown()  # the SDK's own shutdown still sets it
    assert event.is_set()


def test_an_exporter_without_the_event_is_left_alone() -> None:
    class Other:
        _client = object()

    assert not exit_export.watch(Other())


def test_once_the_budget_is_spent_a_retry_wait_ends_at_once() -> None:
    event = exit_export.ExitBoundEvent()
    assert not event.wait(0.01)
    exit_export.start_budget(0.2)
    started = time.monotonic()
    assert event.wait(30) is True  # clipped to the budget
    assert 0.1 < time.monotonic() - started < 5
    assert event.is_set()
    assert event.wait(30) is True


def test_a_set_before_the_budget_ends_the_wait() -> None:
    event = exit_export.ExitBoundEvent()
    exit_export.start_budget(60)
    threading.Timer(0.05, event.set).start()
    assert event.wait(10) is True


_PROGRAM = """
import logging, time
import otel_flask_metrics
from opentelemetry import metrics, trace
otel_flask_metrics.configure()
with trace.get_tracer("t").start_as_current_span("s"):
    metrics.get_meter("m").create_counter("c").add(1)
    logging.getLogger("app").warning("a line")
print("exiting", flush=True)
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_process_exits_within_the_budget_with_the_collector_down() -> None:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
        "OTEL_SERVICE_NAME": "exit-test",
    }
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"):
        env.pop(name, None)  # the defaults: all three over OTLP
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM], env=env, capture_output=True, text=True, timeout=90
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "exiting" in done.stdout
    # Each signal made its attempt and gave up (the SDK's retries alone take
    # about 7 s a signal with its 10 s timeout: over 20 s here).
    for kind in ("spans", "metrics", "logs"):
        assert (
            f"Failed to export {kind} batch" in done.stderr
            or f"exporting {kind} batch" in done.stderr
        ), done.stderr
    assert took < exit_export.EXIT_RETRY_SECONDS + 6, (took, done.stderr)
