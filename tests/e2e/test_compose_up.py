"""The README's first command, run for real: compose.yaml, unchanged, on a Docker engine.

``docker compose up -d --build`` with Docker Compose itself (built by
scripts/build-compose.sh) on the engine scripts/docker-engine.sh starts, with
the images compose.yaml pins made here from the same software
(scripts/stack_images.py: no registry is reachable) and the demo image built
by compose from demo/Dockerfile. Every service runs but Grafana, which is AGPL
and cannot be built here: its provisioning is checked by tests/grafana.

What only a real run shows: user ids against volume permissions, healthchecks
whose commands the image must have, start order, mount paths the programs
read, service names resolving on the compose network, published ports. The
traffic stays on the network compose creates for this test's project and on
127.0.0.1.

The tests share one stack and run in order: counts, traces and logs first,
then the ports, an alert (which stops the demo API), a restart that must keep
the data, and ``down -v``, which must leave nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_images import build_all  # type: ignore[import-not-found]
from stack_processes import ROOT, MissingTool, wait_until  # type: ignore[import-not-found]

pytestmark = pytest.mark.e2e

PROJECT = "ofm-compose-e2e"
COMPOSE_SPEC: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
NOT_BUILDABLE = {"grafana": "AGPL: no image can be built here"}
SERVICES = [name for name in COMPOSE_SPEC["services"] if name not in NOT_BUILDABLE]
UP_TIMEOUT = 420  # seconds: a cold demo image build installs from PyPI
COMMAND_TIMEOUT = 300  # seconds, for any other compose command
#: Local CA certificates of this machine (Debian's place for them): a
#: TLS-inspecting proxy between the demo image's pip and PyPI needs its own.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
KNOWN_CONSUMERS = ("acme", "globex", "initech")
#: What the alert-webhook container prints for a firing ApiDown.
API_DOWN_LINE = re.compile(r"\[FIRING\] ApiDown severity=critical.*demo-api:8000/health")


@dataclass
class Compose:
    binary: str
    env: dict[str, str] = field(repr=False)

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
        result = subprocess.run(
            [self.binary, "--project-name", PROJECT, "--file", str(ROOT / "compose.yaml"),
             *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def up(self, *flags: str) -> None:
        # --wait: returns when every service with a healthcheck is healthy and
        # the others are running, or fails after --wait-timeout.
        self.run("up", "--detach", *flags, "--wait", "--wait-timeout", str(UP_TIMEOUT - 60),
                 *SERVICES, timeout=UP_TIMEOUT)

    def logs(self, service: str) -> str:
        return self.run("logs", "--no-color", "--no-log-prefix", service, check=False)

    def containers(self) -> list[dict[str, Any]]:
        out = self.run("ps", "--all", "--format", "json").strip()
        if not out:
            return []
        if out.startswith("["):
            return list(json.loads(out))
        return [json.loads(line) for line in out.splitlines()]


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60,
                            check=True)
    return result.stdout.strip()


def get_json(url: str, timeout: float = 10.0) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return json.load(response)


def http_status(url: str, timeout: float = 10.0) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return int(response.status)


def prometheus(query: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": query} | ({"time": f"{at:.3f}"} if at is not None else {})
    body = get_json("http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode(params))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def requests_by_consumer(at: float | None = None) -> dict[str, int]:
    """Requests counted in Prometheus per api_consumer_id ('' for no consumer)."""
    series = 'http_server_request_duration_seconds_count{service_name="demo-api"}'
    rows = prometheus(f"sum by (api_consumer_id) ({series})", at)
    return {row["metric"].get("api_consumer_id", ""): round(float(row["value"][1])) for row in rows}


def created_item_lines(until: float | None = None) -> dict[str, int]:
    """The demo's "created item" log lines in VictoriaLogs per api.consumer.id."""
    params = {"query": '_msg:"created item" | stats by (api.consumer.id) count() n'}
    if until is not None:
        params["end"] = f"{until:.3f}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = "http://127.0.0.1:9428/select/logsql/query?" + urllib.parse.urlencode(params)
    with opener.open(url, timeout=10) as response:
        rows = [json.loads(row) for row in response.read().decode().splitlines()]
    return {row.get("api.consumer.id", ""): int(row["n"]) for row in rows}


def published_ports() -> set[int]:
    ports = set()
    for name in SERVICES:
        for spec in COMPOSE_SPEC["services"][name].get("ports", []):
            ports.add(int(str(spec).rsplit(":", 1)[0].rsplit(":", 1)[-1].split("-")[0]))
    return ports


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def compose() -> Iterator[Compose]:
    unavailable = os.environ.get("OFM_DOCKER_UNAVAILABLE")
    if unavailable:
        pytest.skip(f"no Docker engine can run here: {unavailable}")
    if shutil.which("docker") is None:
        pytest.skip("no Docker engine can run here: the docker CLI is not installed")
    if subprocess.run(["docker", "version"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no Docker engine answers: run `bash scripts/docker-engine.sh start` and set "
                    "DOCKER_HOST to what it prints (scripts/test.sh does both)")
    binary = os.environ.get("OFM_DOCKER_COMPOSE") or subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-compose.sh")], check=True, stdout=subprocess.PIPE,
        text=True, timeout=3600,
    ).stdout.strip()
    try:
        for _ in build_all():  # at once when scripts/test.sh has built them
            pass
    except MissingTool as error:
        pytest.fail(f"the stack's images could not be built: {error}")
    env = dict(os.environ, GRAFANA_ADMIN_PASSWORD=secrets.token_urlsafe(16))
    if "BUILD_CA_CERTS" not in env and LOCAL_CAS.is_dir():
        env["BUILD_CA_CERTS"] = "".join(p.read_text() for p in sorted(LOCAL_CAS.glob("*.crt")))
    stack = Compose(binary, env)
    stack.run("down", "--volumes", "--remove-orphans", check=False)  # an interrupted run's
    busy = sorted(port for port in published_ports() if port_in_use(port))
    assert not busy, f"127.0.0.1 ports {busy} are taken (another stack?): compose.yaml needs them"
    try:
        stack.up("--build")
        yield stack
    finally:
        # Shown only when a test failed: what each service said.
        print(stack.run("ps", "--all", check=False))
        for name in SERVICES:
            print(f"--- {name}\n{stack.logs(name)[-2000:]}")
        stack.run("down", "--volumes", "--remove-orphans", check=False)


@pytest.fixture(scope="module")
def traffic_summary(compose: Compose) -> dict[str, int]:
    """Lets the traffic service send a while, stops it, and reads its own counts."""
    wait_until(lambda: sum(requests_by_consumer().values()) >= 100, 180,
               "100 requests of the traffic service in Prometheus", interval=2)
    compose.run("stop", "traffic")
    # The summary it prints when stopped: the last one, should it have printed others.
    line = [line for line in compose.logs("traffic").splitlines() if "by caller:" in line][-1]
    counts = {name: int(count) for name, count in re.findall(r"(\w+)=(\d+)", line)}
    total = re.search(r"traffic: (\d+) requests", line)
    assert total is not None, line
    return counts | {"requests": int(total.group(1))}


def test_every_service_runs_and_every_healthcheck_is_healthy(compose: Compose) -> None:
    states = {c["Service"]: c for c in compose.containers()}
    assert set(states) == set(SERVICES)
    for name, container in states.items():
        assert container["State"] == "running", (name, container["Status"])
        if "healthcheck" in COMPOSE_SPEC["services"][name]:
            assert container["Health"] == "healthy", (name, container["Status"])


def test_prometheus_has_exact_counts_for_each_consumer(
    compose: Compose, traffic_summary: dict[str, int]
) -> None:
    assert traffic_summary["errors"] == 0, traffic_summary
    # /health is kept out of the demo's metrics (OTEL_PYTHON_FLASK_EXCLUDED_URLS).
    total = traffic_summary["requests"] - traffic_summary["health"]
    # Each gunicorn worker exports every 5 s: wait for the last points.
    wait_until(lambda: sum(requests_by_consumer().values()) == total, 90,
               f"all {total} requests of the traffic service in Prometheus", interval=2)
    counted = requests_by_consumer()
    for consumer in KNOWN_CONSUMERS:
        assert counted.pop(consumer) == traffic_summary[consumer], consumer
    assert counted.pop("", 0) == traffic_summary["anonymous"]
    # The revoked key is refused (401) but still attributed, to an id derived from it.
    assert sum(counted.values()) == traffic_summary["revoked"], counted
    assert len(counted) <= 1, counted


def test_jaeger_has_the_demo_apis_traces_with_their_consumer(compose: Compose) -> None:
    services = get_json("http://127.0.0.1:16686/api/services")["data"]
    assert "demo-api" in services
    for consumer in KNOWN_CONSUMERS:
        tags = urllib.parse.quote(json.dumps({"api.consumer.id": consumer}))
        traces = get_json(
            f"http://127.0.0.1:16686/api/traces?service=demo-api&limit=5&tags={tags}"
        )["data"]
        assert traces, f"no trace of {consumer} in Jaeger"


def test_victorialogs_has_a_log_line_for_each_item_created_with_its_consumer(
    compose: Compose, traffic_summary: dict[str, int]
) -> None:
    """The demo logs one line per item created (201): as many as Prometheus counted."""

    series = ('http_server_request_duration_seconds_count{service_name="demo-api",'
              'http_route="/api/items",http_response_status_code="201"}')

    def created() -> dict[str, int]:
        return {
            row["metric"].get("api_consumer_id", ""): round(float(row["value"][1]))
            for row in prometheus(f"sum by (api_consumer_id) ({series})")
        }

    assert sum(created().values()) > 0, "the traffic service created no item"
    # The batch log processor and the metric reader each export every 5 s:
    # both are read again until they agree.
    seen: list[tuple[dict[str, int], dict[str, int]]] = []

    def agree() -> bool:
        seen.append((created(), created_item_lines()))
        return seen[-1][0] == seen[-1][1]

    try:
        wait_until(agree, 60, "as many log lines as items created", interval=1)
    except TimeoutError as error:
        raise AssertionError(f"{error}: (Prometheus 201s, log lines) {seen[-1]}") from None


def test_every_published_port_answers_on_loopback_and_nowhere_else(compose: Compose) -> None:
    seen = set()
    for container in compose.containers():
        for publisher in container.get("Publishers") or []:
            if publisher.get("PublishedPort"):
                assert publisher["URL"] == "127.0.0.1", (container["Service"], publisher)
                seen.add(int(publisher["PublishedPort"]))
    # The engine's own view: every binding of every container has a loopback host.
    ids = [c["ID"] for c in compose.containers()]
    out = docker("inspect", "--format", "{{json .HostConfig.PortBindings}}", *ids)
    for bindings in map(json.loads, out.splitlines()):
        for host in (binding for port in (bindings or {}).values() for binding in port):
            assert host["HostIp"] == "127.0.0.1", bindings
    assert seen == published_ports()
    for port in sorted(seen):  # OTLP gRPC and HTTP among them
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    ready = {9090: "/-/ready", 9093: "/-/ready", 16686: "/api/services", 9428: "/health",
             13133: "/"}
    for port, path in ready.items():
        assert port in seen
        assert http_status(f"http://127.0.0.1:{port}{path}") == 200, (port, path)


def test_an_alert_reaches_the_webhook_container_through_alertmanager(compose: Compose) -> None:
    def firing() -> int:
        return len(API_DOWN_LINE.findall(compose.logs("alert-webhook")))

    before = firing()  # only a notification sent after the stop counts
    compose.run("stop", "demo-api")
    started = time.monotonic()
    try:
        # Probe failures for 1 minute (ApiDown's for:), evaluation and
        # Alertmanager's group_wait: about 90 s in tests/e2e/test_uptime.py.
        wait_until(lambda: firing() > before, 240,
                   "ApiDown printed by the alert-webhook container", interval=3)
    finally:
        compose.run("start", "demo-api")
    print(f"ApiDown reached the webhook {time.monotonic() - started:.0f}s after the stop")


def test_down_and_up_keep_the_data_and_down_v_leaves_nothing(compose: Compose) -> None:
    # Points written before down, read at that time after up.
    at = time.time() - 15
    before = requests_by_consumer(at)
    lines_before = created_item_lines(at)
    trace_ids = {t["traceID"] for t in get_json(
        "http://127.0.0.1:16686/api/traces?service=demo-api&limit=10")["data"]}
    assert before and lines_before and trace_ids
    compose.run("down")
    assert compose.containers() == []
    compose.up()
    assert requests_by_consumer(at) == before
    assert created_item_lines(at) == lines_before
    for trace_id in trace_ids:
        assert get_json(f"http://127.0.0.1:16686/api/traces/{trace_id}")["data"], trace_id

    compose.run("down", "--volumes")
    label = f"label=com.docker.compose.project={PROJECT}"
    assert docker("ps", "--all", "--quiet", "--filter", label) == ""
    assert docker("volume", "ls", "--quiet", "--filter", label) == ""
    assert docker("network", "ls", "--quiet", "--filter", label) == ""
