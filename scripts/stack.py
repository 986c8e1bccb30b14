"""Run the otel-flask-metrics stack without Docker, on 127.0.0.1.

    .venv/bin/python scripts/stack.py                  # everything, demo API and traffic included
    .venv/bin/python scripts/stack.py --no-demo        # only the stack: point your own app at it
    .venv/bin/python scripts/stack.py --demo-port 8001 --no-traffic
    .venv/bin/python scripts/stack.py --no-demo --probe http://127.0.0.1:8000/health
                                                       # the stack, probing your app

Starts the Collector built from collector-config/builder-manifest.yaml,
Prometheus (the version compose.yaml pins when scripts/build-prometheus.sh has
built it, else the one on PATH), Alertmanager with the demo webhook receiver,
the blackbox exporter for the uptime probes, VictoriaLogs (the log store, built
by scripts/build-victorialogs.sh; its UI on /select/vmui/), Jaeger (the version compose.yaml
pins, built by scripts/build-jaeger.sh, with its traces in Badger under
.stack/jaeger-data, kept across runs for 7 days), the demo API under
``opentelemetry-instrument gunicorn`` and its traffic generator, all with the
shipped configuration files (only addresses are rewritten, and the probed URLs
are the demo API's health URL and those given with --probe). It waits for each
to be ready, prints every endpoint, and stops them all on Ctrl-C; the logs stay
in the directory it prints.

The Collector sends traces to Jaeger and also writes them to traces.jsonl next
to the logs. Jaeger built from the Go module proxy has no UI assets (they ship
only in its image): its query API answers on the printed address, e.g.
/api/traces?service=demo-api&tags={"api.consumer.id":"..."}.

The processes themselves are :class:`local_stack.LocalStack`, which the
end-to-end tests start too.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from local_stack import DEFAULT_JAEGER_DATA, DEFAULT_LOG_DIR, LocalStack, app_service
from stack_processes import (
    LOOPBACK,
    ROOT,
    MissingTool,
    Service,
    build_collector,
    build_jaeger,
    build_thanos,
    find_binary,
    find_prometheus,
    free_port,
    venv_tool,
)

RUN_LOGS = (
    "prometheus.log", "alertmanager.log", "otel-collector.log", "alert-webhook.log",
    "blackbox-exporter.log", "jaeger.log", "victorialogs.log",
    "demo-api.log", "traffic.log", "traces.jsonl",
    "thanos-receive-1.log", "thanos-receive-2.log", "thanos-query.log",
)


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return port


def _probe_url(value: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stack.py",
        # The module docstring, up to what only concerns the tests.
        description=(__doc__ or "").split("\n\nThe end-to-end")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo = parser.add_argument_group("demo API and traffic")
    demo.add_argument(
        "--demo-port", "--app-port", dest="demo_port", type=_port, default=0, metavar="PORT",
        help="the demo API's port (default: a free one, printed at start)",
    )
    demo.add_argument(
        "--no-demo", action="store_true",
        help="start neither the demo API nor the traffic: only the stack, for your own app",
    )
    demo.add_argument(
        "--no-traffic", action="store_true", help="start the demo API without traffic"
    )
    demo.add_argument(
        "--rate", type=float, default=5.0, help="traffic requests per second (default: 5)"
    )
    parser.add_argument(
        "--probe", type=_probe_url, action="append", default=[], metavar="URL",
        help="also probe URL (e.g. your app's health URL) for uptime and ApiDown; "
        "repeatable (the demo API's /health is probed whenever it runs)",
    )
    parser.add_argument(
        "--no-jaeger", action="store_true",
        help="run no trace store (skips building Jaeger): traces go only to traces.jsonl",
    )
    parser.add_argument(
        "--jaeger-data", type=Path, default=DEFAULT_JAEGER_DATA, metavar="DIR",
        help="Jaeger's Badger directory, kept across runs (default: "
        f"{DEFAULT_JAEGER_DATA.relative_to(ROOT)}/ in the repository)",
    )
    parser.add_argument(
        "--store", choices=("prometheus", "thanos"), default="prometheus",
        help="thanos: also run two Thanos receivers in one hashring and Thanos Query over "
        "them (built by scripts/build-thanos.sh), written to beside Prometheus",
    )
    parser.add_argument(
        "--logs", type=Path, default=DEFAULT_LOG_DIR, metavar="DIR",
        help="where the logs and traces go, kept after the stack stops and replaced by "
        f"the next run (default: {DEFAULT_LOG_DIR.relative_to(ROOT)}/ in the repository)",
    )
    return parser.parse_args(argv)


def endpoint_table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [f"{'service':<{width}}  address (127.0.0.1 only)"]
    lines += [f"{name:<{width}}  {address}" for name, address in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    log_dir: Path = args.logs.resolve()
    # Everything a user would otherwise learn only after the Collector build.
    demo = not args.no_demo
    if demo:
        venv_tool("opentelemetry-instrument")
        venv_tool("gunicorn")
    prometheus = find_prometheus()
    find_binary("prometheus-alertmanager", "alertmanager")
    find_binary("prometheus-blackbox-exporter", "blackbox_exporter")

    log_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_LOGS:
        (log_dir / name).unlink(missing_ok=True)
    for backup in log_dir.glob("traces-*.jsonl"):  # the file exporter's rotated files
        backup.unlink()
    print(prometheus.describe())
    print(f"logs: {log_dir}")
    print("building/locating the Collector ...", flush=True)
    collector = build_collector()
    jaeger = None
    if not args.no_jaeger:
        print("building/locating Jaeger ...", flush=True)
        jaeger = build_jaeger()
    thanos = None
    if args.store == "thanos":
        print("building/locating Thanos ...", flush=True)
        thanos = build_thanos()
    webhook_port = free_port()
    demo_port = args.demo_port or free_port()
    demo_health = f"http://{LOOPBACK}:{demo_port}/health"
    stack = LocalStack(
        log_dir=log_dir,
        alert_webhook_url=f"http://{LOOPBACK}:{webhook_port}/",
        prometheus=prometheus,
        probe_urls=[demo_health, *args.probe] if demo else args.probe,
        jaeger=jaeger,
        jaeger_data=args.jaeger_data.resolve(),
        thanos=thanos,
    )
    try:
        stack.start(collector)
        # Alerts are printed by the demo webhook receiver (see its log).
        stack.add(
            Service(
                "alert-webhook",
                [sys.executable, str(ROOT / "demo" / "alert_webhook.py"),
                 "--bind", LOOPBACK, "--port", str(webhook_port)],
                log_dir,
                ready_url=f"http://{LOOPBACK}:{webhook_port}/health",
            )
        )
        rows = [*stack.endpoints(), ("alert webhook", f"http://{LOOPBACK}:{webhook_port}/")]
        if demo:
            stack.add(
                app_service(
                    stack, log_dir, app="app:app", chdir=ROOT / "demo", port=demo_port,
                    env={
                        "OTEL_SERVICE_NAME": "demo-api",
                        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=local",
                        "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
                        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
                        # As in compose: the uptime probes are not traffic.
                        "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "/health",
                    },
                    name="demo-api",
                )
            )
            rows.append(("demo API", f"http://{LOOPBACK}:{demo_port}"))
            if not args.no_traffic:
                stack.add(
                    Service(
                        "traffic",
                        [sys.executable, str(ROOT / "demo" / "traffic.py"), "--target",
                         f"http://{LOOPBACK}:{demo_port}", "--rate", str(args.rate)],
                        log_dir,
                    )
                )
        print()
        print(endpoint_table(rows))
        print()
        print(
            "Your own app: OTEL_EXPORTER_OTLP_ENDPOINT="
            f"{stack.otlp_http_endpoint} opentelemetry-instrument <your command>"
        )
        probed = ", ".join(stack.probe_urls) or "none (--probe URL adds one)"
        print(f"Uptime probes (ApiDown): {probed}")
        print("Ctrl-C stops everything.", flush=True)
        while True:
            for service in stack.services:
                if service.process is not None and service.process.poll() is not None:
                    print(f"{service.name} exited:\n{service.log_tail()}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not cut the stop short and orphan a process.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping ...", flush=True)
        stack.stop()
        print(f"stopped; the logs are in {log_dir}", flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM stops the stack as Ctrl-C does, even during the Collector build.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except MissingTool as exc:
        print(f"stack.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
