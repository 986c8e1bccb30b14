"""A client inventing consumer ids and paths cannot explode series or memory.

100,000 requests, each with a new consumer id and a new unmatched path: the
number of metric series stays under the documented cap, paths never become
labels, spans keep the real consumer id, and memory stays flat.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest
from flask import Flask
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from otel_flask_metrics import FlaskMetrics
from otel_flask_metrics.consumers import OVERFLOW_CONSUMER_ID
from tests.conftest import metric_points

REQUESTS = 100_000
CAP = 200
MEMORY_BOUND = 8 * 1024 * 1024  # bytes of RSS growth allowed after warm-up


def rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def sampled_spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    # 1 % of traces are kept, so the exporter itself does not grow memory.
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=TraceIdRatioBased(0.01))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_invented_consumers_and_paths_stay_bounded(
    sampled_spans: tuple[TracerProvider, InMemorySpanExporter],
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tracer_provider, exporter = sampled_spans
    app = Flask(__name__)
    app.get("/items/<int:item_id>")(lambda item_id: {"id": item_id})
    FlaskMetrics(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider,
        consumer_header="X-API-Key", consumer_header_raw=True, max_consumers=CAP,
    )
    wsgi = app.wsgi_app
    environ_base = {
        "REQUEST_METHOD": "GET", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": None,
        "wsgi.errors": None, "REMOTE_ADDR": "127.0.0.1",
    }

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        return None

    def send(i: int) -> None:
        import io

        environ = dict(environ_base)
        environ["PATH_INFO"] = f"/no/such/{i}"
        environ["HTTP_X_API_KEY"] = f"consumer-{i}"
        environ["wsgi.input"] = io.BytesIO()
        body = wsgi(environ, start_response)
        for _ in body:
            pass
        body.close()  # type: ignore[attr-defined]

    warm_up = 10_000
    for i in range(warm_up):
        send(i)
    metric_reader.collect()
    gc.collect()
    before = rss()
    for i in range(warm_up, REQUESTS):
        send(i)
    gc.collect()
    growth = rss() - before

    points = metric_points(metric_reader, "http.server.request.duration")
    with capsys.disabled():
        print(f"\n[cardinality] {REQUESTS} invented consumers and paths: {len(points)} series "
              f"(cap {CAP}), RSS growth after warm-up {growth / 2**20:.1f} MiB")
    consumer_labels = {p.attributes.get("api.consumer.id") for p in points}
    assert len(points) <= CAP + 1, f"{len(points)} series for {REQUESTS} invented consumers"
    assert OVERFLOW_CONSUMER_ID in consumer_labels, "the fold is visible"
    assert sum(p.count for p in points) == REQUESTS, "every request is still counted"
    assert not any("http.route" in p.attributes for p in points), "unmatched paths are never labels"
    for point in points:
        assert not any("/no/such/" in str(v) for v in point.attributes.values())
    spans = exporter.get_finished_spans()
    assert spans, "some traces were sampled"
    assert all(s.attributes["api.consumer.id"].startswith("consumer-") for s in spans)
    assert any(int(s.attributes["api.consumer.id"].split("-")[1]) >= CAP for s in spans), (
        "spans keep the real id past the cap"
    )
    assert growth < MEMORY_BOUND, f"RSS grew {growth / 2**20:.1f} MiB over {REQUESTS - warm_up} requests"
