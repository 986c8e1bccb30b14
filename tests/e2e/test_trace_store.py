"""The request log's trace store keeps its traces: across a Jaeger restart, and through an outage.

Real binaries on 127.0.0.1: the Collector built from the manifest and Jaeger
built at the version compose.yaml pins, both with the shipped configs
(collector-config/otelcol-config.yaml, jaeger/jaeger-config.yaml: Badger on
disk). Spans go in over OTLP as an app sends them and are counted back
through Jaeger's query API, the one Grafana's Jaeger datasource reads.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from local_stack import LocalStack  # type: ignore[import-not-found]
from stack_processes import build_jaeger, wait_until  # type: ignore[import-not-found]

pytestmark = pytest.mark.e2e

SERVICE = "trace-store-api"
# The Collector's in-memory sending queue retries with backoff (up to 30 s
# between tries), so the spans of an outage arrive within that after Jaeger is
# back; the promise is an outage of a minute.
OUTAGE_SECONDS = 60


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(tmp_path / "stack", with_alertmanager=False, jaeger=build_jaeger()) as running:
        yield running


def _tracer_provider(stack: LocalStack) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    exporter = OTLPSpanExporter(endpoint=f"{stack.otlp_http_endpoint}/v1/traces", timeout=10)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _send(provider: TracerProvider, batch: str, count: int, pause: float = 0.0) -> None:
    tracer = provider.get_tracer("test")
    for i in range(count):
        with tracer.start_as_current_span(f"GET /items/{batch}") as span:
            span.set_attribute("http.route", "/items/<int:item_id>")
            span.set_attribute("api.consumer.id", f"consumer-{batch}")
            span.set_attribute("batch.index", i)
        if pause:
            time.sleep(pause)  # spreads the batch over the outage: pacing, not waiting


def _found(stack: LocalStack, batch: str) -> int:
    """How many of ``batch``'s spans Jaeger finds by consumer, as the dashboards' links search."""
    search = urllib.parse.urlencode(
        {
            "service": SERVICE,
            "limit": 1000,
            "tags": json.dumps({"api.consumer.id": f"consumer-{batch}"}),
        }
    )
    try:
        with urllib.request.urlopen(
            f"{stack.jaeger_url}/api/traces?{search}", timeout=5
        ) as response:
            traces = json.load(response)["data"] or []
    except OSError:
        return 0  # Jaeger down or starting
    return sum(len(trace["spans"]) for trace in traces)


def test_traces_survive_a_jaeger_restart_and_an_outage_of_a_minute(stack: LocalStack) -> None:
    provider = _tracer_provider(stack)
    try:
        _send(provider, "before", 20)
        wait_until(lambda: _found(stack, "before") == 20, 30, "20 spans in Jaeger", 0.2)

        assert stack.jaeger is not None
        assert stack.jaeger.stop() == 0, "Jaeger stops cleanly on SIGTERM"
        # Sent while nothing stores traces: the app's export still succeeds
        # (the Collector accepts them) and the Collector holds them.
        _send(provider, "outage", 20, pause=OUTAGE_SECONDS / 20)
        stack.jaeger = stack.jaeger_service().start().wait_ready(60)
        stack.services.append(stack.jaeger)

        # Badger kept the traces written before the restart.
        wait_until(lambda: _found(stack, "before") == 20, 30, "the 20 spans after the restart", 0.2)
        wait_until(
            lambda: _found(stack, "outage") == 20, 90, "the 20 spans sent during the outage", 0.5
        )
    finally:
        provider.shutdown()
    # Nothing twice: a retried batch is not stored again.
    assert _found(stack, "before") == 20
    assert _found(stack, "outage") == 20
