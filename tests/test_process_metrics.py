"""Each process's CPU time, memory and uptime (process semconv), read at collection time."""

from __future__ import annotations

import os
import threading
from typing import Any

import psutil
import pytest
from flask import Flask
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)

from otel_flask_metrics import FlaskMetrics
from otel_flask_metrics.config import ConfigProblem, resolve_settings
from otel_flask_metrics.distro import configure
from otel_flask_metrics.process_metrics import ProcessMetrics
from tests.conftest import metric_points

NAMES = ("process.cpu.time", "process.memory.usage", "process.uptime")


def _metrics(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }


def test_the_three_process_metrics_have_semconv_names_units_and_real_values(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    ProcessMetrics().register(meter_provider)
    sum(i * i for i in range(200_000))  # some CPU time to see

    found = _metrics(metric_reader)

    cpu = found["process.cpu.time"]
    assert cpu.unit == "s"
    assert cpu.data.is_monotonic, "a counter: process_cpu_time_seconds_total in Prometheus"
    by_mode = {p.attributes["cpu.mode"]: p.value for p in cpu.data.data_points}
    assert set(by_mode) == {"user", "system"}
    assert by_mode["user"] > 0
    assert all(value >= 0 for value in by_mode.values())

    memory = found["process.memory.usage"]
    assert memory.unit == "By"
    assert not memory.data.is_monotonic, "an up-down counter: a gauge in Prometheus"
    (rss,) = memory.data.data_points
    assert rss.attributes == {}
    # The resident set size of this very process (it moves a little between reads).
    assert rss.value == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)

    uptime = found["process.uptime"]
    assert uptime.unit == "s"
    (point,) = uptime.data.data_points
    assert 0 < point.value < 24 * 3600


class _KeepingExporter(MetricExporter):
    """Keeps every export, so a test can wait for one."""

    def __init__(self) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self.exported = threading.Event()

    def export(
        self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exported.set()
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every read of the process, in order."""
    names: list[str] = []
    real = ProcessMetrics._current

    def spy(self: ProcessMetrics) -> Any:
        names.append(threading.current_thread().name)
        return real(self)

    monkeypatch.setattr(ProcessMetrics, "_current", spy)
    return names


def test_reads_happen_at_collection_once_per_instrument_never_per_request(
    threads: list[str],
) -> None:
    exporter = _KeepingExporter()
    # A long interval: the only collection is the one shutdown() forces.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader])
    try:
        ProcessMetrics().register(provider)
        app = Flask("served")
        app.add_url_rule("/", "index", lambda: "ok")
        FlaskMetrics(app, meter_provider=provider)
        client = app.test_client()
        for _ in range(50):
            assert client.get("/").status_code == 200
        assert threads == [], "registering and serving requests read nothing"
    finally:
        provider.shutdown()
    assert exporter.exported.is_set()
    # One read per instrument; shutdown() collects in the caller's thread, a
    # periodic collection in OtelPeriodicExportingMetricReader's.
    assert len(threads) == len(NAMES)


def test_the_periodic_reader_collects_them_in_its_export_thread(threads: list[str]) -> None:
    exporter = _KeepingExporter()
    provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=50)]
    )
    try:
        ProcessMetrics().register(provider)
        assert exporter.exported.wait(10)
        first = list(threads)
    finally:
        provider.shutdown()
    assert first and set(first) == {"OtelPeriodicExportingMetricReader"}


def test_uptime_grows_between_collections(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    ProcessMetrics().register(meter_provider)
    (first,) = metric_points(metric_reader, "process.uptime")
    threading.Event().wait(0.05)
    (second,) = metric_points(metric_reader, "process.uptime")
    assert second.value > first.value


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_reports_its_own_pid() -> None:
    """gunicorn forks workers from the configured arbiter: each must read itself."""
    process_metrics = ProcessMetrics()
    parent = process_metrics._current()
    assert parent.pid == os.getpid()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it reads, then leave without pytest's cleanup
        try:
            child = process_metrics._current()
            os.write(write_fd, f"{child.pid} {os.getpid()}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        seen = os.read(read_fd, 100).decode().split()
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    assert seen == [str(pid), str(pid)], "the child read its own process, not the parent's"
    assert process_metrics._current().pid == os.getpid(), "the parent still reads itself"


def _configure_in_memory(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> InMemoryMetricReader:
    """Run configure() in this process with an in-memory reader, leaving no global state."""
    from otel_flask_metrics import distro

    reader = InMemoryMetricReader()
    monkeypatch.setattr(distro, "_configured", None)
    monkeypatch.setattr(distro.log_throttle, "install", lambda: None)
    monkeypatch.setattr(distro.metrics, "set_meter_provider", lambda provider: None)
    monkeypatch.setattr(distro.trace, "set_tracer_provider", lambda provider: None)

    def setup_metrics(resource: Any, environ: Any, problems: Any) -> MeterProvider:
        return MeterProvider(resource=resource, metric_readers=[reader])

    monkeypatch.setattr(distro, "_setup_metrics", setup_metrics)
    providers = configure(
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", **env}
    )
    assert providers is not None
    return reader


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, set(NAMES)),
        ({"OTEL_FLASK_METRICS_PROCESS_METRICS": "true"}, set(NAMES)),
        ({"OTEL_FLASK_METRICS_PROCESS_METRICS": "false"}, set()),
    ],
    ids=["default-on", "on", "off"],
)
def test_configure_registers_them_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: set[str]
) -> None:
    reader = _configure_in_memory(monkeypatch, env)
    data = reader.get_metrics_data()
    names = (
        set()
        if data is None
        else {
            metric.name
            for resource_metrics in data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }
    )
    assert names & set(NAMES) == expected


def test_a_bad_value_is_a_problem_and_the_default_stays() -> None:
    settings, problems = resolve_settings({"OTEL_FLASK_METRICS_PROCESS_METRICS": "yes"})
    assert settings.process_metrics is True
    assert problems == [
        ConfigProblem(
            "OTEL_FLASK_METRICS_PROCESS_METRICS",
            "yes",
            "expected true or false; using the default True instead",
        )
    ]


def test_the_keyword_argument_turns_them_off() -> None:
    settings, problems = resolve_settings({}, process_metrics=False)
    assert problems == [] and settings.process_metrics is False
