"""Run the otel-flask-metrics stack without Docker, on 127.0.0.1.

    python scripts/stack.py            # Collector, Prometheus, Alertmanager, demo API, traffic
    python scripts/stack.py --no-traffic --app-port 8000

Starts the Collector built from collector-config/builder-manifest.yaml, Prometheus
and Alertmanager from the system (Debian: prometheus, prometheus-alertmanager),
the demo API under ``opentelemetry-instrument gunicorn`` and its traffic
generator, all with the shipped configuration files (only addresses are
rewritten), waits for each to be ready, and stops them all on Ctrl-C.

The end-to-end tests import :class:`LocalStack` from here, so the stack they
test is started exactly as users start it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_CONFIG = ROOT / "collector-config" / "otelcol-config.yaml"
PROMETHEUS_DIR = ROOT / "prometheus"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


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


def build_collector() -> Path:
    """The Collector binary for the manifest, built (and cached) by the build script."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-collector.sh")],
        check=True,
        stdout=subprocess.PIPE,
        timeout=3600,
    )
    return Path(result.stdout.decode().strip().splitlines()[-1])


def find_binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(
        f"none of {', '.join(names)} is installed (Debian: apt-get install prometheus "
        "prometheus-alertmanager)"
    )


class LocalStack:
    """Collector + Prometheus (+ Alertmanager) on free loopback ports.

    :param work_dir: where data, rewritten configs and logs go; removed by
        :meth:`stop` when the stack created it.
    :param extra_collector_configs: more config files layered over the shipped
        one (the tests add a file exporter this way).
    """

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        extra_collector_configs: Sequence[Path] = (),
        collector_env: Mapping[str, str] | None = None,
        with_alertmanager: bool = True,
        alert_webhook_url: str | None = None,
    ) -> None:
        self._owns_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="ofm-stack-")) if work_dir is None else work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.extra_collector_configs = list(extra_collector_configs)
        self.extra_collector_env = dict(collector_env or {})
        self.alert_webhook_url = alert_webhook_url
        self.with_alertmanager = with_alertmanager
        self.ports = {
            name: free_port()
            for name in (
                "otlp_grpc", "otlp_http", "health", "collector_metrics", "prometheus",
                "alertmanager", "alertmanager_cluster",
            )
        }
        self.services: list[Service] = []
        self.collector: Service | None = None
        self.prometheus: Service | None = None

    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['otlp_http']}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['prometheus']}"

    def collector_env(self) -> dict[str, str]:
        """The variables the shipped Collector config reads, for a loopback run."""
        return {
            **os.environ,
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"{LOOPBACK}:{self.ports['otlp_grpc']}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{self.ports['otlp_http']}",
            "OTELCOL_HEALTH_ENDPOINT": f"{LOOPBACK}:{self.ports['health']}",
            "OTELCOL_METRICS_HOST": LOOPBACK,
            "OTELCOL_METRICS_PORT": str(self.ports["collector_metrics"]),
            "PROMETHEUS_REMOTE_WRITE_ENDPOINT": f"{self.prometheus_url}/api/v1/write",
            # No trace store runs here; the tests read traces from a file exporter.
            "TRACES_OTLP_ENDPOINT": f"{LOOPBACK}:{self.ports['otlp_grpc']}",
            **self.extra_collector_env,
        }

    def prometheus_config(self) -> Path:
        """The shipped prometheus.yml with only its target addresses rewritten."""
        config_dir = self.work_dir / "prometheus-config"
        config_dir.mkdir(exist_ok=True)
        text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
        for old, new in {
            "alertmanager:9093": f"{LOOPBACK}:{self.ports['alertmanager']}",
            "otel-collector:8888": f"{LOOPBACK}:{self.ports['collector_metrics']}",
            "localhost:9090": f"{LOOPBACK}:{self.ports['prometheus']}",
        }.items():
            text = text.replace(old, new)
        (config_dir / "prometheus.yml").write_text(text)
        shutil.copy(PROMETHEUS_DIR / "alerts.yml", config_dir / "alerts.yml")
        return config_dir / "prometheus.yml"

    def alertmanager_config(self) -> Path:
        """The shipped alertmanager.yml, with the webhook pointed at ``alert_webhook_url``."""
        text = (PROMETHEUS_DIR / "alertmanager.yml").read_text()
        if self.alert_webhook_url:
            text = text.replace("http://alert-webhook:8080/", self.alert_webhook_url)
        path = self.work_dir / "alertmanager.yml"
        path.write_text(text)
        return path

    def start(self, collector_binary: Path | None = None) -> LocalStack:
        try:
            self._start(collector_binary or build_collector())
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, collector_binary: Path) -> None:
        logs = self.work_dir / "logs"
        logs.mkdir(exist_ok=True)
        prometheus_data = self.work_dir / "prometheus-data"
        self.prometheus = Service(
            "prometheus",
            [
                # OFM_PROMETHEUS runs another build (e.g. the Prometheus 3 that
                # compose pins) with the same config and tests.
                os.environ.get("OFM_PROMETHEUS") or find_binary("prometheus"),
                f"--config.file={self.prometheus_config()}",
                f"--storage.tsdb.path={prometheus_data}",
                f"--web.listen-address={LOOPBACK}:{self.ports['prometheus']}",
                "--web.enable-remote-write-receiver",
                # As in compose: exemplars link latency panels to traces.
                "--enable-feature=exemplar-storage",
                "--web.enable-lifecycle",
            ],
            logs,
            ready_url=f"{self.prometheus_url}/-/ready",
        ).start()
        self.services.append(self.prometheus)
        if self.with_alertmanager:
            alertmanager = Service(
                "alertmanager",
                [
                    find_binary("prometheus-alertmanager", "alertmanager"),
                    f"--config.file={self.alertmanager_config()}",
                    f"--storage.path={self.work_dir / 'alertmanager-data'}",
                    f"--web.listen-address={LOOPBACK}:{self.ports['alertmanager']}",
                    f"--cluster.listen-address={LOOPBACK}:{self.ports['alertmanager_cluster']}",
                ],
                logs,
                ready_url=f"http://{LOOPBACK}:{self.ports['alertmanager']}/-/ready",
            ).start()
            self.services.append(alertmanager)
        argv = [str(collector_binary), f"--config={COLLECTOR_CONFIG}"]
        argv += [f"--config={path}" for path in self.extra_collector_configs]
        self.collector = Service(
            "otel-collector",
            argv,
            logs,
            env=self.collector_env(),
            ready_url=f"http://{LOOPBACK}:{self.ports['health']}/",
        ).start()
        self.services.append(self.collector)
        for service in self.services:
            service.wait_ready(90)

    def add(self, service: Service, ready_timeout: float = 60.0) -> Service:
        """Start one more process (an app, a traffic generator) owned by the stack."""
        self.services.append(service)
        service.start().wait_ready(ready_timeout)
        return service

    def stop(self) -> None:
        """Stop every process, newest first, and remove the work dir if ours."""
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        if self._owns_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def app_service(
    stack: LocalStack,
    log_dir: Path,
    *,
    app: str,
    chdir: Path,
    port: int,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    name: str = "app",
    health_path: str = "/health",
) -> Service:
    """An app under ``opentelemetry-instrument gunicorn`` exporting to the stack."""
    instrument = shutil.which("opentelemetry-instrument") or "opentelemetry-instrument"
    gunicorn = shutil.which("gunicorn") or "gunicorn"
    app_env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp_http_endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "500",
        **(env or {}),
    }
    return Service(
        name,
        [
            instrument, gunicorn, "--bind", f"{LOOPBACK}:{port}", "--workers", str(workers),
            "--chdir", str(chdir), *extra_args, app,
        ],
        log_dir,
        env=app_env,
        ready_url=f"http://{LOOPBACK}:{port}{health_path}",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-port", type=int, default=8000)
    parser.add_argument("--no-traffic", action="store_true")
    parser.add_argument("--rate", type=float, default=5.0, help="traffic requests per second")
    args = parser.parse_args(argv)

    webhook_port = free_port()
    stack = LocalStack(alert_webhook_url=f"http://{LOOPBACK}:{webhook_port}/")
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        print("building/locating the Collector ...", flush=True)
        stack.start()
        logs = stack.work_dir / "logs"
        # Alerts are printed by the demo webhook receiver (see its log).
        stack.add(
            Service(
                "alert-webhook",
                [sys.executable, str(ROOT / "demo" / "alert_webhook.py"),
                 "--bind", LOOPBACK, "--port", str(webhook_port)],
                logs,
                ready_url=f"http://{LOOPBACK}:{webhook_port}/health",
            )
        )
        stack.add(
            app_service(
                stack, logs, app="app:app", chdir=ROOT / "demo", port=args.app_port,
                env={
                    "OTEL_SERVICE_NAME": "demo-api",
                    "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=local",
                    "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
                    "OTEL_METRIC_EXPORT_INTERVAL": "5000",
                },
                name="demo-api",
            )
        )
        if not args.no_traffic:
            stack.add(
                Service(
                    "traffic",
                    [sys.executable, str(ROOT / "demo" / "traffic.py"), "--target",
                     f"http://{LOOPBACK}:{args.app_port}", "--rate", str(args.rate)],
                    logs,
                )
            )
        print(f"demo API:      http://{LOOPBACK}:{args.app_port}")
        print(f"Prometheus:    {stack.prometheus_url}")
        print(f"OTLP (HTTP):   {stack.otlp_http_endpoint}")
        print(f"logs:          {logs}")
        print("Ctrl-C stops everything.", flush=True)
        while not stopping:
            for service in stack.services:
                if service.process is not None and service.process.poll() is not None:
                    print(f"{service.name} exited:\n{service.log_tail()}", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
