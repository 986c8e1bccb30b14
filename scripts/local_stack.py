"""The stack's processes on 127.0.0.1: :class:`LocalStack` and the demo app's service.

What scripts/stack.py starts for users and what the end-to-end tests start,
from the same code, so the stack they test is started exactly as users start
it: the shipped configuration files, with only addresses rewritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from stack_processes import (
    LOOPBACK,
    ROOT,
    Prometheus,
    Service,
    build_collector,
    build_victorialogs,
    find_binary,
    find_prometheus,
    free_port,
    venv_tool,
)

COLLECTOR_CONFIG = ROOT / "collector-config" / "otelcol-config.yaml"
PROMETHEUS_DIR = ROOT / "prometheus"
DEFAULT_LOG_DIR = ROOT / ".stack" / "logs"
DEFAULT_JAEGER_DATA = ROOT / ".stack" / "jaeger-data"
JAEGER_CONFIG = ROOT / "jaeger" / "jaeger-config.yaml"
COLLECTOR_THANOS_LAYER = ROOT / "collector-config" / "thanos.yaml"
# Two receivers in one hashring, replication factor 1: each series lives on
# one receiver (the store scales by sharding), Thanos Query merges them.
THANOS_RECEIVERS = 2

# Layered over the shipped Collector config: traces also go to a file
# (rotated, so a long run cannot fill the disk), readable without any tool;
# without Jaeger only there, rather than to an address where nothing, or the
# Collector itself, listens.
TRACES_TO_FILE = """\
exporters:
  file/stack-traces:
    path: ${env:OTELCOL_STACK_TRACES_FILE}
    rotation:
      max_megabytes: 20
      max_backups: 1
service:
  pipelines:
    traces:
      exporters: [%s]
"""


# --- the stack -----------------------------------------------------------------


class LocalStack:
    """Collector + Prometheus + VictoriaLogs + blackbox exporter (+ Alertmanager, Jaeger)
    on free loopback ports.

    :param work_dir: where data and rewritten configs go; removed by
        :meth:`stop` when the stack created it.
    :param log_dir: where each process logs (``<name>.log``) and the Collector
        writes traces (``traces.jsonl``); ``work_dir/logs`` by default. Never
        removed by the stack, so a directory outside ``work_dir`` keeps the
        logs after :meth:`stop`.
    :param extra_collector_configs: more config files layered over the shipped
        one (the tests add a file exporter this way).
    :param prometheus: the Prometheus to run; :func:`find_prometheus` by default.
    :param probe_urls: the URLs the uptime probes ask (the blackbox exporter,
        job ``uptime``), in place of the shipped uptime-targets.yml, whose
        compose service names mean nothing here.
    :param alertmanager_group_interval: replaces the shipped ``group_interval``
        (5m), which also paces resolved notifications; for tests that wait for one.
    :param jaeger: the Jaeger binary to run with jaeger/jaeger-config.yaml;
        None runs no trace store (traces go only to :attr:`traces_path`).
    :param jaeger_data: Jaeger's Badger directory; ``work_dir/jaeger-data`` by
        default. A directory outside ``work_dir`` keeps the traces across runs.
    :param thanos: the Thanos binary: runs two ``thanos receive`` in one
        hashring and ``thanos query`` over them, and layers
        collector-config/thanos.yaml so that the Collector remote-writes to
        them as well as to Prometheus. None runs no Thanos.
    """

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        log_dir: Path | None = None,
        extra_collector_configs: Sequence[Path] = (),
        collector_env: Mapping[str, str] | None = None,
        with_alertmanager: bool = True,
        alert_webhook_url: str | None = None,
        prometheus: Prometheus | None = None,
        probe_urls: Sequence[str] = (),
        alertmanager_group_interval: str | None = None,
        jaeger: Path | None = None,
        jaeger_data: Path | None = None,
        thanos: Path | None = None,
    ) -> None:
        self._owns_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="ofm-stack-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.work_dir / "logs" if log_dir is None else log_dir
        self.extra_collector_configs = list(extra_collector_configs)
        self.extra_collector_env = dict(collector_env or {})
        self.alert_webhook_url = alert_webhook_url
        self.with_alertmanager = with_alertmanager
        self.prometheus_binary = prometheus
        self.probe_urls = list(probe_urls)
        self.alertmanager_group_interval = alertmanager_group_interval
        self.jaeger_binary = jaeger
        self.jaeger_data = self.work_dir / "jaeger-data" if jaeger_data is None else jaeger_data
        self.ports = {
            name: free_port()
            for name in (
                "otlp_grpc", "otlp_http", "health", "collector_metrics", "prometheus",
                "alertmanager", "alertmanager_cluster", "blackbox",
                "jaeger_otlp_grpc", "jaeger_otlp_http", "jaeger_query", "jaeger_query_grpc",
                "jaeger_health", "jaeger_metrics", "victorialogs",
            )
        }
        self.thanos_binary = thanos
        # Each receiver: StoreAPI gRPC, HTTP (readiness), remote write, and the
        # Cap'n Proto replication listener (0.0.0.0:19391 by default).
        self.receiver_ports = [
            {name: free_port() for name in ("grpc", "http", "remote_write", "capnproto")}
            for _ in range(THANOS_RECEIVERS if thanos is not None else 0)
        ]
        self.ports.update(
            {name: free_port() for name in ("thanos_query", "thanos_query_grpc")}
            if thanos is not None else {}
        )
        self.services: list[Service] = []
        self.thanos_services: list[Service] = []
        self.collector: Service | None = None
        self.prometheus: Service | None = None
        self.jaeger: Service | None = None
        self.victorialogs: Service | None = None

    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['otlp_http']}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['otlp_grpc']}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['prometheus']}"

    @property
    def thanos_query_url(self) -> str:
        """Thanos Query's Prometheus HTTP API (PromQL over every receiver)."""
        return f"http://{LOOPBACK}:{self.ports['thanos_query']}"

    @property
    def thanos_remote_write_url(self) -> str:
        """Where the Collector remote-writes into the hashring (the first receiver)."""
        return f"http://{LOOPBACK}:{self.receiver_ports[0]['remote_write']}/api/v1/receive"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['alertmanager']}"

    @property
    def blackbox_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['blackbox']}"

    @property
    def victorialogs_url(self) -> str:
        """The log store: LogsQL under /select/logsql, its UI on /select/vmui/."""
        return f"http://{LOOPBACK}:{self.ports['victorialogs']}"

    @property
    def jaeger_url(self) -> str:
        """Jaeger's query service (its API under /api; the UI only in its image)."""
        return f"http://{LOOPBACK}:{self.ports['jaeger_query']}"

    @property
    def traces_path(self) -> Path:
        """Where the Collector writes traces, unless an extra config sends them elsewhere."""
        return self.log_dir / "traces.jsonl"

    def endpoints(self) -> list[tuple[str, str]]:
        """(service, address) for every endpoint the stack serves, as the README's port table."""
        rows = [("Prometheus", self.prometheus_url)]
        if self.thanos_binary is not None:
            rows.append(("Thanos Query (PromQL)", self.thanos_query_url))
            rows += [
                (f"Thanos Receive {number} remote write",
                 f"http://{LOOPBACK}:{ports['remote_write']}/api/v1/receive")
                for number, ports in enumerate(self.receiver_ports, 1)
            ]
        if self.with_alertmanager:
            rows.append(("Alertmanager", self.alertmanager_url))
        rows.append(("Collector OTLP gRPC", self.otlp_grpc_endpoint))
        rows.append(("Collector OTLP HTTP", self.otlp_http_endpoint))
        rows.append(("Collector health check", f"http://{LOOPBACK}:{self.ports['health']}/"))
        metrics = f"http://{LOOPBACK}:{self.ports['collector_metrics']}/metrics"
        rows.append(("Collector metrics", metrics))
        rows.append(("blackbox exporter", self.blackbox_url))
        rows.append(("VictoriaLogs (log lines)", f"{self.victorialogs_url}/select/vmui/"))
        if self.jaeger_binary is not None:
            rows.append(("Jaeger query API", f"{self.jaeger_url}/api/services"))
        rows.append(("traces file", str(self.traces_path)))
        return rows

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
            # Without Jaeger, TRACES_TO_FILE drops the exporter that reads
            # this, but the shipped config must still resolve it.
            "TRACES_OTLP_ENDPOINT": f"{LOOPBACK}:{self.ports['jaeger_otlp_grpc']}",
            "OTELCOL_STACK_TRACES_FILE": str(self.traces_path),
            # Read only when collector-config/thanos.yaml is layered.
            "THANOS_REMOTE_WRITE_ENDPOINT": (
                self.thanos_remote_write_url if self.receiver_ports else ""
            ),
            "LOGS_OTLP_HTTP_ENDPOINT": (
                f"{self.victorialogs_url}/insert/opentelemetry/v1/logs"
            ),
            **self.extra_collector_env,
        }

    def jaeger_env(self) -> dict[str, str]:
        """The variables jaeger/jaeger-config.yaml reads, for a loopback run."""
        return {
            **os.environ,
            "JAEGER_BADGER_DIR": str(self.jaeger_data),
            "JAEGER_OTLP_GRPC_ENDPOINT": f"{LOOPBACK}:{self.ports['jaeger_otlp_grpc']}",
            "JAEGER_OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{self.ports['jaeger_otlp_http']}",
            "JAEGER_QUERY_HTTP_ENDPOINT": f"{LOOPBACK}:{self.ports['jaeger_query']}",
            "JAEGER_QUERY_GRPC_ENDPOINT": f"{LOOPBACK}:{self.ports['jaeger_query_grpc']}",
            "JAEGER_HEALTH_ENDPOINT": f"{LOOPBACK}:{self.ports['jaeger_health']}",
            "JAEGER_METRICS_HOST": LOOPBACK,
            "JAEGER_METRICS_PORT": str(self.ports["jaeger_metrics"]),
        }

    def jaeger_service(self) -> Service:
        """Jaeger as the stack runs it; the tests stop and start it again with this."""
        assert self.jaeger_binary is not None
        return Service(
            "jaeger",
            [str(self.jaeger_binary), f"--config={JAEGER_CONFIG}"],
            self.log_dir,
            env=self.jaeger_env(),
            ready_url=f"http://{LOOPBACK}:{self.ports['jaeger_health']}/status",
        )

    def thanos_service_list(self) -> list[Service]:
        """The receivers of one hashring, then Thanos Query over them."""
        assert self.thanos_binary is not None
        thanos = str(self.thanos_binary)
        endpoints = [f"{LOOPBACK}:{ports['grpc']}" for ports in self.receiver_ports]
        hashrings = self.work_dir / "thanos-hashrings.json"
        hashrings.write_text(json.dumps([{"hashring": "default", "endpoints": endpoints}]))
        services = []
        for number, ports in enumerate(self.receiver_ports, 1):
            services.append(Service(
                f"thanos-receive-{number}",
                [
                    thanos, "receive",
                    f"--tsdb.path={self.work_dir / f'thanos-receive-{number}'}",
                    f"--grpc-address={LOOPBACK}:{ports['grpc']}",
                    f"--http-address={LOOPBACK}:{ports['http']}",
                    f"--remote-write.address={LOOPBACK}:{ports['remote_write']}",
                    f"--receive.capnproto-address={LOOPBACK}:{ports['capnproto']}",
                    f"--receive.hashrings-file={hashrings}",
                    f"--receive.local-endpoint={LOOPBACK}:{ports['grpc']}",
                    "--receive.replication-factor=1",
                    f'--label=receive_replica="{number}"',
                ],
                self.log_dir,
                ready_url=f"http://{LOOPBACK}:{ports['http']}/-/ready",
            ))
        services.append(Service(
            "thanos-query",
            [
                thanos, "query",
                f"--http-address={LOOPBACK}:{self.ports['thanos_query']}",
                f"--grpc-address={LOOPBACK}:{self.ports['thanos_query_grpc']}",
                *[f"--endpoint={endpoint}" for endpoint in endpoints],
                # The labels each receiver adds to every series (its own and
                # the tenant's) are dropped from answers, so that a query
                # returns the series the Collector wrote, as Prometheus does.
                "--query.replica-label=receive_replica",
                "--query.replica-label=tenant_id",
            ],
            self.log_dir,
            ready_url=f"{self.thanos_query_url}/-/ready",
        ))
        return services

    def prometheus_config(self) -> Path:
        """The shipped prometheus.yml with only its target addresses rewritten.

        Beside it go the shipped rule files and an uptime-targets.yml listing
        :attr:`probe_urls` instead of the shipped one.
        """
        config_dir = self.work_dir / "prometheus-config"
        config_dir.mkdir(exist_ok=True)
        text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
        for old, new in {
            "alertmanager:9093": f"{LOOPBACK}:{self.ports['alertmanager']}",
            "otel-collector:8888": f"{LOOPBACK}:{self.ports['collector_metrics']}",
            "localhost:9090": f"{LOOPBACK}:{self.ports['prometheus']}",
            "blackbox-exporter:9115": f"{LOOPBACK}:{self.ports['blackbox']}",
        }.items():
            text = text.replace(old, new)
        (config_dir / "prometheus.yml").write_text(text)
        for rules in ("alerts.yml", "recording_rules.yml"):
            shutil.copy(PROMETHEUS_DIR / rules, config_dir / rules)
        self._write_probe_targets(config_dir / "uptime-targets.yml")
        return config_dir / "prometheus.yml"

    def _write_probe_targets(self, path: Path) -> None:
        """The uptime probes' targets file (file_sd): one GET per URL every 15s."""
        targets = [{"targets": self.probe_urls}] if self.probe_urls else []
        # JSON is YAML: no YAML library needed.
        path.write_text(json.dumps(targets, indent=2) + "\n")

    def alertmanager_config(self) -> Path:
        """The shipped alertmanager.yml, with the webhook pointed at ``alert_webhook_url``."""
        text = (PROMETHEUS_DIR / "alertmanager.yml").read_text()
        if self.alert_webhook_url:
            text = text.replace("http://alert-webhook:8080/", self.alert_webhook_url)
        if self.alertmanager_group_interval:
            text = re.sub(
                r"^(\s*group_interval:).*$", rf"\1 {self.alertmanager_group_interval}", text,
                flags=re.MULTILINE,
            )
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
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.prometheus_binary is None:
            self.prometheus_binary = find_prometheus()
        # The prober first, so that Prometheus' first uptime scrapes find it.
        blackbox = Service(
            "blackbox-exporter",
            [
                find_binary("prometheus-blackbox-exporter", "blackbox_exporter"),
                f"--config.file={PROMETHEUS_DIR / 'blackbox.yml'}",
                f"--web.listen-address={LOOPBACK}:{self.ports['blackbox']}",
            ],
            self.log_dir,
            ready_url=f"{self.blackbox_url}/-/healthy",
        ).start()
        self.services.append(blackbox)
        prometheus_data = self.work_dir / "prometheus-data"
        self.prometheus = Service(
            "prometheus",
            [
                self.prometheus_binary.path,
                f"--config.file={self.prometheus_config()}",
                f"--storage.tsdb.path={prometheus_data}",
                f"--web.listen-address={LOOPBACK}:{self.ports['prometheus']}",
                "--web.enable-remote-write-receiver",
                # As in compose: exemplars link latency panels to traces.
                "--enable-feature=exemplar-storage",
                "--web.enable-lifecycle",
            ],
            self.log_dir,
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
                self.log_dir,
                ready_url=f"{self.alertmanager_url}/-/ready",
            ).start()
            self.services.append(alertmanager)
        # The stores before the Collector, so that its first exports find them.
        self.victorialogs = Service(
            "victorialogs",
            [
                str(build_victorialogs()),
                f"-storageDataPath={self.work_dir / 'victorialogs-data'}",
                "-retentionPeriod=7d",
                f"-httpListenAddr={LOOPBACK}:{self.ports['victorialogs']}",
            ],
            self.log_dir,
            ready_url=f"{self.victorialogs_url}/health",
        ).start()
        self.services.append(self.victorialogs)
        if self.jaeger_binary is not None:
            self.jaeger = self.jaeger_service().start()
            self.services.append(self.jaeger)
        if self.thanos_binary is not None:
            self.thanos_services = self.thanos_service_list()
            for service in self.thanos_services:
                self.services.append(service.start())
        exporters = ["file/stack-traces", "debug"]
        if self.jaeger_binary is not None:
            exporters.insert(0, "otlp_grpc/traces")
        traces_to_file = self.work_dir / "collector-traces-to-file.yaml"
        traces_to_file.write_text(TRACES_TO_FILE % ", ".join(exporters))
        argv = [str(collector_binary), f"--config={COLLECTOR_CONFIG}", f"--config={traces_to_file}"]
        if self.thanos_binary is not None:
            argv.append(f"--config={COLLECTOR_THANOS_LAYER}")
        argv += [f"--config={path}" for path in self.extra_collector_configs]
        self.collector = Service(
            "otel-collector",
            argv,
            self.log_dir,
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
    instrument = venv_tool("opentelemetry-instrument")
    gunicorn = venv_tool("gunicorn")
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


# --- the command ---------------------------------------------------------------

# Every file a run writes in its log directory (replaced by the next run).
