"""Shared fixtures: in-memory telemetry passed in explicitly, and a clean environment."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# scripts/stack.py manages the real processes tests start (readiness, logs, stop).
_SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees OTEL_* variables from the machine or from another test."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _no_logging_handler_left_behind() -> Iterator[None]:
    """A test that sets up log export in-process must not leave it running for the next.

    (A forgotten exporter retrying in the background also moves the ``random``
    state under Hypothesis' feet.)
    """
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    left = [h for h in root.handlers if h not in before]
    for handler in left:
        root.removeHandler(handler)
    assert not left, f"handlers left on the root logger: {left}"


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(metric_reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[metric_reader])
    yield provider
    provider.shutdown()


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """Every data point of the metric ``name`` collected so far."""
    data = reader.get_metrics_data()
    points: list[Any] = []
    if data is None:
        return points
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


@pytest.fixture
def sdk_functions() -> Iterator[None]:
    """The SDK's own functions for the test (the fast path off), as it found them afterwards."""
    from otel_flask_metrics import fast_attributes

    was_installed = fast_attributes.is_installed()
    fast_attributes.uninstall()
    yield
    fast_attributes.uninstall()
    if was_installed:
        fast_attributes.install()
