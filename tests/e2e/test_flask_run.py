"""``flask run`` prints the same console lines with the distro as without it.

OpenTelemetry's logging handler on the root logger counts as a handler, so
without care Werkzeug's "Running on" address and request lines, Flask's 500
tracebacks and every library warning would vanish from the console of the
first command a new user runs.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

from stack_processes import Service, free_port, wait_until  # type: ignore[import-not-found]

from tests.e2e.otlp_sink import OtlpSink, attributes

APPS = Path(__file__).resolve().parents[1] / "apps"
SERVER_SPAN = 2
REQUESTS = ["/items/1", "/items/2", "/missing", "/boom"]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Werkzeug colours the request lines


def _serve(
    name: str, log_dir: Path, env: dict[str, str], *, instrument: bool
) -> tuple[Service, int]:
    port = free_port()
    argv = [sys.executable, "-m", "flask", "--app", "console", "run", "--port", str(port)]
    if instrument:
        argv.insert(0, str(Path(sys.executable).with_name("opentelemetry-instrument")))
    ready = f"http://127.0.0.1:{port}/ready"
    return Service(name, argv, log_dir, env=env, cwd=APPS, ready_url=ready), port


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _console(log: str, port: int) -> list[str]:
    """The lines, without timestamps, the port, and the readiness polls."""
    lines = []
    for line in log.splitlines():
        if "/ready" in line:
            continue
        line = _ANSI.sub("", line)
        line = re.sub(r"\[[^\]]*\d\d:\d\d:\d\d[^\]]*\]", "[TIME]", line)
        lines.append(line.replace(str(port), "PORT"))
    return lines


def test_flask_run_prints_what_it_prints_without_the_distro(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLASK_"))}
    with OtlpSink() as sink:
        instrumented_env = {
            **base,
            "OTEL_SERVICE_NAME": "console-api",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        bare, bare_port = _serve("bare", tmp_path, base, instrument=False)
        instrumented, port = _serve("instrumented", tmp_path, instrumented_env, instrument=True)
        try:
            for service in (bare, instrumented):
                service.start()
            bare.wait_ready(60)
            instrumented.wait_ready(60)
            statuses = [[_get(p, path) for path in REQUESTS] for p in (bare_port, port)]
            assert statuses == [[200, 200, 404, 500]] * 2

            def all_spans_exported() -> bool:
                paths = [
                    attributes(span.attributes).get("url.path")
                    for _, span in sink.spans() if span.kind == SERVER_SPAN
                ]
                return all(path in paths for path in REQUESTS)

            wait_until(all_spans_exported, 30, "the instrumented server's spans")

            def both_logged_the_last_request() -> bool:
                return all(
                    re.search(r"GET /boom HTTP/1.1\S*\" 500", _ANSI.sub("", s.log_path.read_text()))
                    for s in (bare, instrumented)
                )

            wait_until(both_logged_the_last_request, 10, "both servers' request lines")
        finally:
            instrumented.stop(sig=signal.SIGTERM)
            bare.stop(sig=signal.SIGTERM)
        bare_lines = _console(bare.log_path.read_text(), bare_port)
        instrumented_lines = _console(instrumented.log_path.read_text(), port)

    # What a user looks for first, then everything: same lines, same order.
    assert " * Running on http://127.0.0.1:PORT" in instrumented_lines, instrumented_lines
    assert any("item 1 is low on stock" == line for line in instrumented_lines), instrumented_lines
    assert any("RuntimeError: boom for the console" in line for line in instrumented_lines)
    assert instrumented_lines == bare_lines
