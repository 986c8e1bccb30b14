"""Big file downloads under gunicorn and uWSGI: zero-copy kept, sizes exact (issue #16).

Werkzeug's ``send_file`` hands the server its own ``wsgi.file_wrapper``
object, and the server sends it with ``sendfile()`` only when the app returns
that very object. The middleware used to wrap every response body, so files
went through Python 8 KiB at a time (under uWSGI, a line at a time). Now it
hands the object back: these tests check, with a real server and a real OTLP
endpoint, that

* the worker spends about as much CPU in user mode on the downloads as an
  uninstrumented worker (only the worker process is measured, from
  ``/proc/<pid>/stat``): copying through Python is user time, ``sendfile()``
  is not;
* every download still ends its request once, with the size taken from
  Content-Length, after the transfer and not when the view returns;
* a generator body is still counted byte by byte.

Both servers use ``sendfile()`` in the worker with the options below (checked
by hand with ``strace -c``): uWSGI runs with ``--http-socket`` so that the
worker writes to the client itself (with ``--http`` a router process relays
every byte).
"""

from __future__ import annotations

import http.client
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    Service,
    free_port,
    wait_until,
)

from tests.e2e.otlp_sink import OtlpSink, attributes

pytestmark = pytest.mark.e2e

APPS = Path(__file__).resolve().parents[1] / "apps"
FILE_SIZE = 96 * 1024 * 1024  # bytes
DOWNLOADS = 24
GENERATED_DOWNLOADS = 2
READ_SIZE = 1024 * 1024  # bytes the client reads at a time
# The instrumented worker may spend this much more user CPU than the bare one.
# With sendfile() both spend 0-7 ticks on 24 x 96 MiB; the old wrapping (up
# to b83bf21) spent about 55 under gunicorn and 300 under uWSGI. System time is
# only reported: it includes the loopback network stack, charged to whichever
# process is on the CPU, and jumps between about 20 and 85 ticks from one
# identical bare run to the next.
CPU_FACTOR = 1.5
CPU_SLACK = 15  # clock ticks (os.sysconf("SC_CLK_TCK") a second: 100 on Linux)
# The documented uWSGI options (tests/e2e/test_uwsgi.py).
UWSGI_OPTIONS = ["--enable-threads", "--lazy-apps", "--py-call-osafterfork"]
SERVERS = ["gunicorn", "uwsgi"]
SPAN_KIND_SERVER = 2


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("downloads") / "big.bin"
    block = os.urandom(1024 * 1024)
    with path.open("wb") as stream:
        for _ in range(FILE_SIZE // len(block)):
            stream.write(block)
    assert path.stat().st_size == FILE_SIZE
    yield path
    # pytest keeps the last three runs' temporary directories: not this file.
    path.unlink()


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as running:
        yield running


def _server(server: str, port: int, log_dir: Path, file: Path, sink: OtlpSink | None) -> Service:
    """The app under ``server`` with one worker; instrumented when there is a sink."""
    env = {**os.environ, "DOWNLOADS_FILE": str(file)}
    if server == "gunicorn":
        binary = shutil.which("gunicorn")
        assert binary, "gunicorn is not installed"
        argv = [
            binary, "--bind", f"{LOOPBACK}:{port}", "--workers", "1",
            "--chdir", str(APPS), "downloads:app",
        ]  # fmt: skip
    else:
        binary = shutil.which("uwsgi")
        assert binary, "uWSGI is not installed: pip install uwsgi (the test extras include it)"
        argv = [
            binary, "--http-socket", f"{LOOPBACK}:{port}", "--master", "--processes", "1",
            "--die-on-term", "--chdir", str(APPS), "--module", "downloads:app", *UWSGI_OPTIONS,
        ]  # fmt: skip
    name = f"{server}-bare"
    if sink is not None:
        name = f"{server}-instrumented"
        argv = [shutil.which("opentelemetry-instrument") or "opentelemetry-instrument", *argv]
        env.update(
            OTEL_SERVICE_NAME="e2e-downloads",
            OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
            OTEL_METRIC_EXPORT_INTERVAL="1000",
            OTEL_BSP_SCHEDULE_DELAY="200",
            OTEL_PYTHON_FLASK_EXCLUDED_URLS="/health",
        )
    # Not started from the checkout: opentelemetry-instrument puts its working
    # directory first on PYTHONPATH, which would shadow the installed package.
    return Service(
        name, argv, log_dir, env=env, cwd=APPS, ready_url=f"http://{LOOPBACK}:{port}/health"
    )


def _download(port: int, path: str) -> tuple[int, int]:
    """GET ``path``, read and discard the body; (bytes received, worker pid)."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, response.status
        buffer = memoryview(bytearray(READ_SIZE))
        received = 0
        while read := response.readinto(buffer):
            received += read
        return received, int(response.getheader("X-Worker-Pid") or 0)
    finally:
        connection.close()


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of a process, in clock ticks (fields 14 and 15 of proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


@dataclass
class Downloads:
    count: int  # requests of the path, the warm-up included
    user_ticks: int  # the worker's CPU time for the measured ones, user mode
    system_ticks: int  # and in the kernel
    seconds: float  # their wall time, as the client saw it

    def __str__(self) -> str:
        return f"{self.user_ticks} user + {self.system_ticks} system ticks in {self.seconds:.1f} s"


def _measure(port: int, path: str, count: int) -> Downloads:
    # The warm-up puts the file in the page cache and gets first-request
    # costs (imports, the first export) out of the measurement.
    size, pid = _download(port, path)
    assert size == FILE_SIZE
    before = _cpu_ticks(pid)
    started = time.monotonic()
    for _ in range(count):
        assert _download(port, path) == (FILE_SIZE, pid), "one worker served every download"
    seconds = time.monotonic() - started
    # The only worker answers this once it is done with the last download.
    _download(port, "/health")
    after = _cpu_ticks(pid)
    return Downloads(count + 1, after[0] - before[0], after[1] - before[1], seconds)


def _run(
    server: str, log_dir: Path, file: Path, path: str, count: int, sink: OtlpSink | None = None
) -> Downloads:
    port = free_port()
    service = _server(server, port, log_dir, file, sink).start()
    try:
        service.wait_ready(60)
        downloads = _measure(port, path, count)
        if sink is not None:

            def exported() -> bool:
                spans = _server_spans(sink, path)
                sizes = sink.histogram_totals("http.server.response.body.size", "http.route")
                counted = sizes.get((path,), (0, 0.0))[0]
                return len(spans) >= downloads.count and counted >= downloads.count

            wait_until(exported, 30, f"{downloads.count} requests of {path} exported")
    finally:
        service.stop()
    return downloads


def _server_spans(sink: OtlpSink, route: str) -> list[tuple[Any, dict[str, Any]]]:
    found = [(span, attributes(span.attributes)) for _, span in sink.spans()]
    return [
        (span, a)
        for span, a in found
        if span.kind == SPAN_KIND_SERVER and a.get("http.route") == route
    ]


def _check_exported(sink: OtlpSink, route: str, count: int) -> None:
    """``count`` requests of ``route``, each ended once with the file's exact size."""
    spans = _server_spans(sink, route)
    assert len(spans) == count, f"one span per request, got {len(spans)} for {count}"
    for _, found in spans:
        assert found["http.response.status_code"] == 200
        assert found["http.response.body.size"] == FILE_SIZE
    sizes = sink.histogram_totals("http.server.response.body.size", "http.route")
    assert sizes[(route,)] == (count, count * FILE_SIZE)
    durations = sink.histogram_totals("http.server.request.duration", "http.route")
    assert durations[(route,)][0] == count
    active = [point.as_int for _, _, point in sink.latest_points("http.server.active_requests")]
    assert active and sum(active) == 0, f"every request left the in-flight count: {active}"


@pytest.mark.parametrize("server", SERVERS)
def test_send_file_keeps_zero_copy_and_reports_the_size(
    server: str, sink: OtlpSink, big_file: Path, tmp_path: Path
) -> None:
    bare = _run(server, tmp_path, big_file, "/file", DOWNLOADS)
    instrumented = _run(server, tmp_path, big_file, "/file", DOWNLOADS, sink)
    figures = (
        f"{server}, {DOWNLOADS} x {FILE_SIZE >> 20} MiB: bare {bare}; instrumented {instrumented}"
    )
    print(figures)
    assert instrumented.user_ticks <= bare.user_ticks * CPU_FACTOR + CPU_SLACK, (
        f"the instrumented worker copies the file itself: {figures}"
    )
    _check_exported(sink, "/file", instrumented.count)
    # The request ends when the server is done sending, not when the view
    # returns: most of each transfer happens inside the span (the rest sits
    # in the socket buffers when sendfile() returns).
    spans = _server_spans(sink, "/file")
    inside = sum(span.end_time_unix_nano - span.start_time_unix_nano for span, _ in spans) / 1e9
    per_download = instrumented.seconds / DOWNLOADS
    timing = f"spans last {inside / len(spans):.3f} s on average, a download {per_download:.3f} s"
    print(timing)
    assert inside >= 0.5 * per_download * len(spans), timing


@pytest.mark.parametrize("server", SERVERS)
def test_a_generated_body_is_counted_byte_by_byte(
    server: str, sink: OtlpSink, big_file: Path, tmp_path: Path
) -> None:
    downloads = _run(server, tmp_path, big_file, "/generated", GENERATED_DOWNLOADS, sink)
    _check_exported(sink, "/generated", downloads.count)
