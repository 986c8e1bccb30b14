"""The processes and programs of scripts/stack.py: finding, building, starting, stopping.

Kept apart from the stack's topology so that tests which run a single program
(a gunicorn worker, a Collector) use the same start, readiness and stop code
as the stack does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
LOOPBACK = "127.0.0.1"


#: Debian's packages for the binaries find_binary() looks for.
DEBIAN_PACKAGES = "prometheus prometheus-alertmanager prometheus-blackbox-exporter"


class MissingTool(FileNotFoundError):
    """A program the stack needs is not there; the message (one line) says how to get it."""


#: Ports free_port() has handed out in this process.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, never one handed out before.

    The kernel may give the same ephemeral port to two binds in a row once the
    first socket is closed. Two servers told to use it then share one port: the
    second retries its bind while the first answers its readiness check (a CI
    run failed so).
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status ``url`` answers with, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Service:
    """One child process with a log file, a readiness URL and a clean stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_url: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.ready_url = ready_url
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> Service:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            return self.ready_url is None or http_status(self.ready_url, 1.0) == 200

        try:
            wait_until(ready, timeout, f"{self.name} at {self.ready_url}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None
        return self

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
        """Stop gracefully (so exporters flush), then kill; returns the exit code."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# --- the programs the stack runs ---------------------------------------------


def _run_build(script: str, what: str, timeout: float) -> str:
    """What a build script prints last on stdout (the binary or its directory)."""
    try:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / script)], check=True, stdout=subprocess.PIPE,
            timeout=timeout,
        )
    except subprocess.CalledProcessError:
        # The build script has already said why on stderr.
        raise MissingTool(f"{what} could not be built: see the message above") from None
    return result.stdout.decode().strip().splitlines()[-1]


def build_collector() -> Path:
    """The Collector binary for the manifest, built (and cached) by the build script."""
    return Path(_run_build("build-collector.sh", "the Collector", 3600))


def build_victorialogs() -> Path:
    """The VictoriaLogs binary at the version compose.yaml pins, built and cached by its script."""
    return Path(_run_build("build-victorialogs.sh", "VictoriaLogs", 1800)) / "victoria-logs"


def build_jaeger() -> Path:
    """The Jaeger binary at the version compose.yaml pins, built (and cached) by its script."""
    return Path(_run_build("build-jaeger.sh", "Jaeger", 3600)) / "jaeger"


def build_thanos() -> Path:
    """Thanos (receive, query) at the version compose.thanos.yaml pins, built and cached."""
    return Path(_run_build("build-thanos.sh", "Thanos", 3600))


def find_binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise MissingTool(
        f"none of {', '.join(names)} is on PATH (Debian: apt-get install {DEBIAN_PACKAGES})"
    )


def venv_tool(name: str) -> str:
    """``name`` from the environment whose Python runs this script, else from PATH.

    pip installs console scripts next to the interpreter, so
    ``.venv/bin/python scripts/stack.py`` finds the venv's gunicorn without the
    venv being activated.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    install = f"{shlex.quote(sys.executable)} -m pip install -e {shlex.quote(f'{ROOT}[test]')}"
    raise MissingTool(
        f"{name} is not installed next to {sys.executable} nor on PATH: run {install}"
    )


def tool_cache() -> Path:
    """Where scripts/build-collector.sh and build-prometheus.sh cache what they build.

    The same variables in the same order as the scripts (an empty one counts as
    unset, as ``${VAR:-default}`` does); tests check that the two agree.
    """
    explicit = os.environ.get("OTEL_FLASK_METRICS_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "otel-flask-metrics"


def pinned_prometheus_version() -> str:
    """The Prometheus version compose.yaml pins, read as build-prometheus.sh reads it."""
    match = re.search(r"image: *prom/prometheus:v([0-9.]+)", COMPOSE.read_text())
    if match is None:
        raise ValueError(f"no prom/prometheus image in {COMPOSE}")
    return match.group(1)


def program_version(path: str) -> str:
    """``--version``'s version number (e.g. ``3.7.3``, ``2.42.0+ds``), or ``unknown``."""
    try:
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r"version (\S+)", result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


@dataclass(frozen=True)
class Prometheus:
    """The Prometheus binary a stack runs, and where it came from."""

    path: str
    version: str
    pinned: str  # the version compose.yaml pins
    source: str  # "OFM_PROMETHEUS", "build cache" or "PATH"

    @property
    def is_pinned(self) -> bool:
        return self.version.split("+")[0] == self.pinned

    def describe(self) -> str:
        """One line for the user: which Prometheus, and how to get the pinned one if not it."""
        line = f"Prometheus {self.version} ({self.source}: {self.path})"
        if self.is_pinned:
            return f"{line}, the version compose.yaml pins"
        return (
            f"{line}, not the {self.pinned} compose.yaml pins: scripts/build-prometheus.sh "
            "(or scripts/test.sh) builds it, and the next run uses it"
        )


def find_prometheus() -> Prometheus:
    """OFM_PROMETHEUS if set, else the pinned build in the cache, else PATH's prometheus."""
    pinned = pinned_prometheus_version()
    explicit = os.environ.get("OFM_PROMETHEUS")
    cached = tool_cache() / f"prometheus-{pinned}" / "bin" / "prometheus"
    if explicit:
        path, source = explicit, "OFM_PROMETHEUS"
    elif cached.is_file() and os.access(cached, os.X_OK):
        path, source = str(cached), "build cache"
    else:
        found = shutil.which("prometheus")
        if found is None:
            raise MissingTool(
                f"no Prometheus: scripts/build-prometheus.sh builds the {pinned} compose.yaml "
                "pins (needs Go), or install one on PATH (Debian: apt-get install prometheus)"
            )
        path, source = found, "PATH"
    return Prometheus(path, program_version(path), pinned, source)
