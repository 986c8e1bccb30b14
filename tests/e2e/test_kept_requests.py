"""Under ``opentelemetry-instrument gunicorn`` at 0 % and 10 % head sampling, every failed or slow request is exported.

With it go the app's log lines, tied to their request and redacted.

The sampler comes from the standard ``OTEL_TRACES_SAMPLER`` variables, as a
production deployment sets it; the spans are decoded from what reached a real
OTLP/HTTP endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.otlp_sink import OtlpSink, attributes
from tests.e2e.test_gunicorn_otlp import KEYS, _gunicorn

from stack_processes import LOOPBACK, free_port, wait_until  # type: ignore[import-not-found]

pytestmark = pytest.mark.e2e

OK_REQUESTS = 60
FAILED_REQUESTS = 7
SLOW_REQUESTS = 2  # /slow sleeps 300 ms; the threshold is 250 ms
CARD = "4111 1111 1111 1111"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"


def _request_logs(sink: OtlpSink) -> list[Any]:
    """The log records written while a request was served (they carry its route)."""
    return [r for _, r in sink.log_records() if "http.route" in attributes(r.attributes)]


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as running:
        yield running


@pytest.mark.parametrize("ratio", ["0.0", "0.1"])
def test_every_failed_and_slow_request_is_exported_at_any_ratio(
    sink: OtlpSink, tmp_path: Path, ratio: str
) -> None:
    port = free_port()
    env = {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": ratio,
        "OTEL_FLASK_METRICS_KEEP_SLOW_MS": "250",
        "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "/health",
    }
    app = _gunicorn(sink, port, tmp_path, env, ["--workers", "2"]).start()
    base = f"http://{LOOPBACK}:{port}"
    headers = {"X-API-Key": KEYS["alpha"]}
    try:
        app.wait_ready(60)
        for i in range(OK_REQUESTS):
            assert requests.get(f"{base}/items/{i}", headers=headers, timeout=10).status_code == 200
        for _ in range(FAILED_REQUESTS):
            assert requests.get(f"{base}/fail", headers=headers, timeout=10).status_code == 500
        for _ in range(SLOW_REQUESTS):
            assert requests.get(f"{base}/slow", headers=headers, timeout=10).status_code == 200
        secret_headers = {**headers, "Authorization": BEARER}
        charged = requests.get(f"{base}/charge", params={"card": CARD}, headers=secret_headers, timeout=10)
        assert charged.status_code == 200
        total = OK_REQUESTS + FAILED_REQUESTS + SLOW_REQUESTS + 1

        def counted() -> bool:
            totals = sink.histogram_totals("http.server.request.duration")
            return sum(count for count, _ in totals.values()) >= total

        wait_until(counted, 30, f"{total} requests in the exported metrics")

        def kept() -> list[dict[str, object]]:
            return [attributes(s.attributes) for _, s in sink.spans() if s.kind == 2]

        wait_until(
            lambda: sum(1 for a in kept() if a.get("http.route") in ("/fail", "/slow"))
            >= FAILED_REQUESTS + SLOW_REQUESTS,
            30,
            "every failed and slow request's span",
        )
    finally:
        app.stop()

    spans = [s for _, s in sink.spans() if s.kind == 2]
    by_route: dict[object, list[dict[str, object]]] = {}
    for span in spans:
        by_route.setdefault(attributes(span.attributes).get("http.route"), []).append(
            attributes(span.attributes)
        )
    failed = by_route["/fail"]
    assert len(failed) == FAILED_REQUESTS, "each failed request exactly once"
    for attrs in failed:
        assert attrs["http.response.status_code"] == 500
        assert attrs["error.type"] == "RuntimeError"
        assert isinstance(attrs["api.consumer.id"], str) and attrs["api.consumer.id"]
        assert attrs["http.response.body.size"] > 0
    fail_spans = [s for s in spans if s.name == "GET /fail"]
    assert all([e.name for e in s.events] == ["exception"] for s in fail_spans)
    assert len(by_route["/slow"]) == SLOW_REQUESTS
    # Under each worker's own resource, as renewed after the fork.
    workers = {r["service.instance.id"] for r, _, _ in sink.latest_points("http.server.request.duration")}
    span_workers = {r["service.instance.id"] for r, s in sink.spans() if s.kind == 2}
    assert span_workers <= workers and len(workers) == 2, (span_workers, workers)
    ok = len(by_route.get("/items/<int:item_id>", []))
    if ratio == "0.0":
        assert ok == 0, "a fast, successful request is not kept"
    else:
        assert ok < OK_REQUESTS / 2, f"about 10 % of the fast requests, got {ok}"

    # The app's log lines: Flask's "Exception on /fail" line of each failed
    # request carries the ids of that request's (kept) span, its route and its
    # consumer; the line with secrets left the process redacted.
    wait_until(
        lambda: len(_request_logs(sink)) >= FAILED_REQUESTS + 1, 30, "the requests' log lines"
    )
    logs = _request_logs(sink)
    span_ids = {(s.trace_id, s.span_id): s for s in fail_spans}
    fail_logs = [r for r in logs if attributes(r.attributes).get("http.route") == "/fail"]
    assert len(fail_logs) == FAILED_REQUESTS
    assert {(r.trace_id, r.span_id) for r in fail_logs} == set(span_ids)
    for record in fail_logs:
        attrs = attributes(record.attributes)
        assert record.severity_text == "ERROR"
        assert attrs["exception.type"] == "RuntimeError"
        assert attrs["api.consumer.id"] == failed[0]["api.consumer.id"]
    (charge,) = [r for r in logs if attributes(r.attributes).get("http.route") == "/charge"]
    assert "charging card" in charge.body.string_value
    for secret in (CARD, BEARER, "eyJhbGciOiJIUzI1NiJ9"):
        assert secret.encode() not in b"".join(sink.raw_bytes)
    outside = [r for r in sink.log_records() if "http.route" not in attributes(r[1].attributes)]
    assert all(r.trace_id == b"" for _, r in outside), "lines outside a request have no trace"

    # Metrics unchanged: every request counted once, whatever was kept.
    by_route_status = sink.histogram_totals(
        "http.server.request.duration", "http.route", "http.response.status_code"
    )
    assert by_route_status[("/items/<int:item_id>", 200)][0] == OK_REQUESTS
    assert by_route_status[("/fail", 500)][0] == FAILED_REQUESTS
    assert by_route_status[("/slow", 200)][0] == SLOW_REQUESTS
    everything = b"".join(sink.raw_bytes)
    assert KEYS["alpha"].encode() not in everything
