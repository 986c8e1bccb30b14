"""A process forked while the parent exports or collects metrics still exports its own.

Each test holds one of the SDK's locks in the parent (an export blocked in the
exporter, an observable callback blocked mid-collection), forks, and has the
child collect with a bounded wait: without the renewal the child's collection
blocks for ever on the inherited lock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from otel_flask_metrics.config import ConfigProblem, resolve_settings
from otel_flask_metrics.distro import _setup_metrics, _setup_resource
from otel_flask_metrics.fork_safety import ForkSafeMetricReader, fork_safe_provider, sdk_supported

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHILD_OK, CHILD_BLOCKED, CHILD_WRONG = 0, 3, 4


class ParentBlockingExporter(MetricExporter):
    """Blocks the parent's first export until released; records every export's points."""

    def __init__(self) -> None:
        super().__init__()
        self.parent = os.getpid()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.points: list[tuple[str, Any]] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.points.extend(_points(metrics_data))
        if os.getpid() == self.parent and not self.release.is_set():
            self.entered.set()
            self.release.wait(30)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def _points(data: MetricsData) -> Iterator[tuple[str, Any]]:
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    yield metric.name, getattr(point, "value", None)


def _provider(
    exporter: MetricExporter, monkeypatch: pytest.MonkeyPatch
) -> tuple[MeterProvider, ForkSafeMetricReader]:
    # Only explicit collections: the periodic thread never wakes in a test.
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
    reader = ForkSafeMetricReader(exporter)
    return fork_safe_provider(MeterProvider(metric_readers=[reader])), reader


def _in_child(collect: Any, check: Any) -> int:
    """Fork; the child collects (at most 5 s) and exits with a CHILD_* code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = CHILD_WRONG
        try:
            done = threading.Event()
            worker = threading.Thread(target=lambda: (collect(), done.set()), daemon=True)
            worker.start()
            code = (
                CHILD_OK
                if done.wait(5) and check()
                else (CHILD_WRONG if done.is_set() else CHILD_BLOCKED)
            )
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child did not exit within 20 s")


def test_a_child_forked_during_the_parents_export_exports_its_own_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = ParentBlockingExporter()
    provider, reader = _provider(exporter, monkeypatch)
    counter = provider.get_meter("t").create_counter("requests")
    counter.add(1)
    parent_export = threading.Thread(target=reader.collect, daemon=True)
    parent_export.start()
    assert exporter.entered.wait(10), "the parent's export started"
    try:
        before = len(exporter.points)

        def collect() -> None:
            counter.add(2)
            reader.collect(timeout_millis=2_000)

        # The child's points: 2, not 3; the parent's aggregate stays the parent's.
        code = _in_child(collect, lambda: exporter.points[before:] == [("requests", 2)])
    finally:
        exporter.release.set()
        parent_export.join(10)
    assert code == CHILD_OK, {
        CHILD_BLOCKED: "child blocked on the export lock",
        CHILD_WRONG: "wrong points",
    }.get(code)
    provider.shutdown()


def test_a_child_forked_during_the_parents_collection_collects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = ParentBlockingExporter()
    exporter.release.set()  # exports never block here; the callback does
    provider, reader = _provider(exporter, monkeypatch)
    parent = os.getpid()
    in_callback, release = threading.Event(), threading.Event()

    def pid_gauge(options: CallbackOptions) -> Iterable[Observation]:
        if os.getpid() == parent and not release.is_set():
            in_callback.set()
            release.wait(30)
        yield Observation(os.getpid())

    provider.get_meter("t").create_observable_gauge("pid", callbacks=[pid_gauge])
    parent_collect = threading.Thread(target=reader.collect, daemon=True)
    parent_collect.start()
    assert in_callback.wait(10), "the parent's collection is in the callback"
    try:
        code = _in_child(
            lambda: reader.collect(timeout_millis=2_000),
            lambda: ("pid", os.getpid()) in exporter.points,
        )
    finally:
        release.set()
        parent_collect.join(10)
    assert code == CHILD_OK, {
        CHILD_BLOCKED: "child blocked on the consumer lock",
        CHILD_WRONG: "wrong points",
    }.get(code)
    provider.shutdown()


def test_the_installed_sdk_has_what_is_renewed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails when an SDK upgrade moves the internals: the renewal would silently stop."""
    provider, reader = _provider(ParentBlockingExporter(), monkeypatch)
    assert sdk_supported(provider)
    assert reader.renew_consumer is not None
    provider.shutdown()


def test_the_distro_builds_fork_safe_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
    settings, _ = resolve_settings({})
    problems: list[ConfigProblem] = []
    provider = _setup_metrics(
        _setup_resource(settings),
        {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        problems,
    )
    readers = list(provider._measurement_consumer._reader_storages)
    assert problems == []
    assert readers and all(
        isinstance(r, ForkSafeMetricReader) and r.renew_consumer for r in readers
    )
    provider.shutdown(timeout_millis=1_000)
