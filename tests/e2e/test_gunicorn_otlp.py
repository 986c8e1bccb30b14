"""A real ``opentelemetry-instrument gunicorn -w 2`` exporting to a real OTLP/HTTP endpoint.

The app in tests/apps has no instrumentation code. The test sends a known mix
of requests from several consumers (streamed and chunked bodies included) and
checks exactly what arrived: span attributes, counts per consumer summed over
the two workers, and exact payload sizes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.otlp_sink import OtlpSink

from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    Service,
    free_port,
    wait_until,
)

APPS = Path(__file__).resolve().parents[1] / "apps"
pytestmark = pytest.mark.e2e

KEYS = {"alpha": "key-alpha-0123456789", "beta": "key-beta-0123456789"}


def _concurrent_gets(url: str, count: int) -> list[requests.Response]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: requests.get(url, timeout=10), range(count)))


def _gunicorn(
    sink: OtlpSink, port: int, log_dir: Path, extra_env: dict[str, str], extra_args: list[str]
) -> Service:
    import os
    import shutil

    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "e2e-api",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
        "OTEL_FLASK_METRICS_CONSUMER_HASH_KEY": "e2e-test-key",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=e2e",
        **extra_env,
    }
    return Service(
        "gunicorn",
        [
            shutil.which("opentelemetry-instrument") or "opentelemetry-instrument",
            shutil.which("gunicorn") or "gunicorn",
            "--bind", f"{LOOPBACK}:{port}", "--chdir", str(APPS), *(extra_args or ["--workers", "2"]),
            "api:app",
        ],
        log_dir,
        env=env,
        ready_url=f"http://{LOOPBACK}:{port}/health",
    )


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as running:
        yield running


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
def test_gunicorn_two_workers_export_consumers_and_exact_sizes(
    sink: OtlpSink, tmp_path: Path, preload: bool
) -> None:
    port = free_port()
    app = _gunicorn(sink, port, tmp_path, {}, ["--workers", "2", *(["--preload"] if preload else [])]).start()
    base = f"http://{LOOPBACK}:{port}"
    try:
        app.wait_ready(60)
        session = requests.Session()
        sent: dict[tuple[str | None, str, int], int] = {}

        def send(method: str, path: str, consumer: str | None, route: str, **kwargs: object) -> requests.Response:
            headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
            if consumer in KEYS:
                headers["X-API-Key"] = KEYS[consumer]
            elif consumer is not None:
                headers["X-Customer"] = consumer
            # A fresh connection each time spreads requests over both workers.
            response = requests.request(method, base + path, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]
            key = (consumer, route, response.status_code)
            sent[key] = sent.get(key, 0) + 1
            return response

        item = {"name": "widget", "tags": ["a", "b"], "price": 12.5}
        item_bytes = len(json.dumps(item).encode())
        for i in range(6):
            assert send("GET", f"/items/{i}", "alpha", "/items/<int:item_id>").status_code == 200
        for _ in range(4):
            response = send("POST", "/items", "beta", "/items", json=item)
            assert response.status_code == 201
        for _ in range(3):
            response = send("GET", "/stream", "gamma", "/stream")
            assert len(response.content) == 5000
        # A chunked request body (no Content-Length): 3 chunks of 700 bytes.
        chunked = send("POST", "/upload", "gamma", "/upload", data=iter([b"y" * 700] * 3))
        assert chunked.json() == {"received": 2100}
        assert send("GET", "/fail", "alpha", "/fail").status_code == 500
        assert send("GET", "/items/5000", "beta", "/items/<int:item_id>").status_code == 404
        assert send("GET", "/no/such/path", None, "").status_code == 404
        session.close()
        # Concurrent slow requests make both sync workers serve some.
        pids = {r.headers["X-Worker-Pid"] for r in _concurrent_gets(base + "/slow", 6)}
        sent[("anonymous-burst", "/slow", 200)] = 6
        total = sum(sent.values())

        def all_counted() -> bool:
            totals = sink.histogram_totals("http.server.request.duration")
            return sum(count for count, _ in totals.values()) >= total

        wait_until(all_counted, 30, f"{total} requests in the exported metrics")
    finally:
        app.stop()

    # --- metrics: counts per consumer, route and status, summed over workers
    by_route_status = sink.histogram_totals(
        "http.server.request.duration", "http.route", "http.response.status_code"
    )
    assert by_route_status[("/items/<int:item_id>", 200)][0] == 6
    assert by_route_status[("/items", 201)][0] == 4
    assert by_route_status[("/stream", 200)][0] == 3
    assert by_route_status[("/slow", 200)][0] == 6
    assert by_route_status[("/upload", 200)][0] == 1
    assert by_route_status[("/fail", 500)][0] == 1
    assert by_route_status[("/items/<int:item_id>", 404)][0] == 1
    assert by_route_status[(None, 404)][0] == 1, "an unmatched request has no route label"

    by_consumer = sink.histogram_totals("http.server.request.duration", "api.consumer.id")
    consumer_ids = {c for (c,) in by_consumer}
    assert "gamma" in consumer_ids and by_consumer[("gamma",)][0] == 4
    hashed = consumer_ids - {"gamma", None}
    assert len(hashed) == 2, f"two pseudonymised header consumers, got {consumer_ids}"
    assert not any(key in str(consumer_ids) for key in KEYS.values())
    assert sorted(by_consumer[(c,)][0] for c in hashed) == [5, 7]  # beta: 4+1, alpha: 6+1
    anonymous = sink.histogram_totals("http.server.request.duration", "api.consumer.id", "http.route")
    assert anonymous[(None, None)][0] == 1, "only the unmatched request had no consumer"

    # --- exact payload sizes
    request_sizes = sink.histogram_totals("http.server.request.body.size", "http.route")
    assert request_sizes[("/items",)] == (4, 4 * item_bytes)
    assert request_sizes[("/upload",)] == (1, 2100), "chunked body counted as read"
    response_sizes = sink.histogram_totals("http.server.response.body.size", "http.route")
    assert response_sizes[("/stream",)] == (3, 15000)

    # --- errors: error.type on the metric
    errors = sink.histogram_totals("http.server.request.duration", "error.type")
    assert errors[("RuntimeError",)][0] == 1

    # --- the two workers exported as two instances
    instances = {
        resource["service.instance.id"]
        for resource, _, _ in sink.latest_points("http.server.request.duration")
    }
    assert len(pids) == 2, "both workers served requests"
    assert len(instances) == 2, f"each worker has its own service.instance.id: {instances}"

    # --- spans: one SERVER span per request, with consumer and sizes
    spans = [(r, s) for r, s in sink.spans() if s.kind == 2]  # SPAN_KIND_SERVER
    from tests.e2e.otlp_sink import attributes

    by_name: dict[str, list[dict[str, object]]] = {}
    for resource, span in spans:
        assert resource["service.name"] == "e2e-api"
        assert resource["deployment.environment.name"] == "e2e"
        by_name.setdefault(span.name, []).append(attributes(span.attributes))
    ready_checks = len(by_name.get("GET /health", []))
    assert len(spans) == total + ready_checks, "exactly one server span per request"
    stream_spans = by_name["GET /stream"]
    assert all(a["http.response.body.size"] == 5000 for a in stream_spans)
    assert all(a["api.consumer.id"] == "gamma" for a in stream_spans)
    post_spans = by_name["POST /items"]
    assert all(a["http.request.body.size"] == item_bytes for a in post_spans)
    assert {a["api.consumer.id"] for a in post_spans} <= hashed
    fail = by_name["GET /fail"][0]
    assert fail["error.type"] == "RuntimeError"
    assert fail["http.response.status_code"] == 500
    assert fail["http.route"] == "/fail"
    # No credential anywhere in what was exported.
    everything = b"".join(sink.raw_bytes)
    for key in KEYS.values():
        assert key.encode() not in everything


@pytest.mark.parametrize(
    "preload, metrics_delay",
    [(False, 0.0), (True, 0.0), (False, 0.45)],
    ids=["fork-then-load", "preload", "slow-collector"],
)
def test_four_workers_with_recycling_count_exactly(
    tmp_path: Path, preload: bool, metrics_delay: float
) -> None:
    """gunicorn -w 4 --max-requests: recycled workers flush on exit, ids never collide.

    With a Collector that takes 0.45 s per metrics export, the arbiter's own
    export (every 0.5 s) holds the reader's export lock most of the time, and
    workers forked while it is held must still export (without the renewal in
    fork_safety this failed about one run in three; tests/test_fork_safety.py
    is the deterministic check).
    """
    with OtlpSink(metrics_delay) as sink:
        _recycle_four_workers(sink, tmp_path, preload)


def _recycle_four_workers(sink: OtlpSink, tmp_path: Path, preload: bool) -> None:
    port = free_port()
    args = ["--workers", "4", "--max-requests", "15"] + (["--preload"] if preload else [])
    app = _gunicorn(
        sink, port, tmp_path, {"OTEL_PYTHON_FLASK_EXCLUDED_URLS": "/health"}, args
    ).start()
    base = f"http://{LOOPBACK}:{port}"
    sent = 0
    try:
        app.wait_ready(60)
        pids: set[str] = set()
        for _ in range(8):
            responses = _concurrent_gets(base + "/items/1", 10)
            assert all(r.status_code == 200 for r in responses)
            pids.update(r.headers["X-Worker-Pid"] for r in responses)
            sent += len(responses)
        assert len(pids) > 4, "workers were recycled"

        def all_counted() -> bool:
            totals = sink.histogram_totals("http.server.request.duration")
            return sum(count for count, _ in totals.values()) >= sent

        wait_until(all_counted, 30, f"{sent} requests in the exported metrics")
    finally:
        app.stop()
    totals = sink.histogram_totals("http.server.request.duration", "http.route")
    assert totals[("/items/<int:item_id>",)][0] == sent
    instances = {
        resource["service.instance.id"]
        for resource, _, _ in sink.latest_points("http.server.request.duration")
    }
    assert len(instances) == len(pids), "one service.instance.id per worker process, never shared"
