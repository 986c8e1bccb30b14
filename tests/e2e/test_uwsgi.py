"""uWSGI: with the documented options every worker exports, under its own instance id.

uWSGI forks workers from C, so Python's after-fork hooks (which restart the
SDK's exporter threads and renew ``service.instance.id``) only run with
``--py-call-osafterfork``. Without it nothing is exported: the distro says so
in one log line at startup.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    Service,
    free_port,
    wait_until,
)
from tests.e2e.otlp_sink import OtlpSink

pytestmark = pytest.mark.e2e
APPS = Path(__file__).resolve().parents[1] / "apps"
DOCUMENTED = ["--enable-threads", "--lazy-apps", "--py-call-osafterfork"]


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as running:
        yield running


def _uwsgi(sink: OtlpSink, port: int, log_dir: Path, options: list[str]) -> Service:
    uwsgi = shutil.which("uwsgi")
    assert uwsgi, "uWSGI is not installed: pip install uwsgi (the test extras include it)"
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "e2e-uwsgi",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "/health",
    }
    return Service(
        "uwsgi",
        [
            shutil.which("opentelemetry-instrument") or "opentelemetry-instrument", uwsgi,
            "--http", f"{LOOPBACK}:{port}", "--master", "--processes", "2", "--die-on-term",
            "--chdir", str(APPS), "--module", "api:app", *options,
        ],
        log_dir,
        env=env,
        ready_url=f"http://{LOOPBACK}:{port}/health",
    )


def _slow_requests(base: str, count: int) -> set[str]:
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: requests.get(f"{base}/slow", timeout=10), range(count)))
    assert all(r.status_code == 200 for r in responses)
    return {r.headers["X-Worker-Pid"] for r in responses}


def test_uwsgi_with_the_documented_options_counts_exactly(sink: OtlpSink, tmp_path: Path) -> None:
    port = free_port()
    server = _uwsgi(sink, port, tmp_path, DOCUMENTED).start()
    try:
        server.wait_ready(60)
        pids = _slow_requests(f"http://{LOOPBACK}:{port}", 12)

        def counted() -> bool:
            totals = sink.histogram_totals("http.server.request.duration", "http.route")
            return totals.get(("/slow",), (0, 0.0))[0] >= 12

        wait_until(counted, 30, "12 requests in the exported metrics")
    finally:
        server.stop()
    assert sink.histogram_totals("http.server.request.duration", "http.route")[("/slow",)][0] == 12
    instances = {r["service.instance.id"] for r, _, _ in sink.latest_points("http.server.request.duration")}
    assert len(instances) == len(pids) == 2


def test_uwsgi_without_osafterfork_is_reported_at_startup(sink: OtlpSink, tmp_path: Path) -> None:
    port = free_port()
    server = _uwsgi(sink, port, tmp_path, ["--enable-threads", "--lazy-apps"]).start()
    try:
        server.wait_ready(60)
    finally:
        server.stop()
    lines = [line for line in server.log_path.read_text().splitlines() if "uWSGI options" in line]
    assert lines, server.log_tail()
    assert "--py-call-osafterfork" in lines[0]
