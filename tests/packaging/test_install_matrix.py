"""The built wheel installs, imports and runs with every installer users have.

pip before 25.1 (resolvelib 1.0) stops with a false ``ResolutionImpossible``
on requirement sets that newer pip and uv solve (issue #12), so a green
``pip install -e .`` after ``pip install --upgrade pip`` proves nothing about
what users get. Here the sdist and the wheel are built once with the standard
front end (``python -m build``); then each installer, at an exact version,
installs the wheel into a fresh venv, and that venv imports the package,
records one request through an instrumented app, passes ``pip check`` and
runs ``otel-flask-metrics check`` with a clean environment.

The venvs are built two at a time (installs are mostly single-threaded), and
downloads go through pip's and uv's own persistent caches (``PIP_CACHE_DIR``
and ``UV_CACHE_DIR`` are honoured), so a warm run downloads nothing. When an
upstream release makes a case fail, read the installer's error in the
failure: it is printed whole.
"""

from __future__ import annotations

import email.message
import email.parser
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "otel_flask_metrics"

UV_VERSION = "0.13.9"
GRPC_EXPORTER = "opentelemetry-exporter-otlp-proto-grpc"
# Pinned exactly by a package we list (the SDK pins api and semantic-conventions,
# instrumentation-flask pins the rest): a range of our own on any of them lets
# pip < 25.1 pick a version that the pin rules out, and give up (issue #12).
PINNED_BY_OUR_DEPENDENCIES = {
    "opentelemetry-api",
    "opentelemetry-semantic-conventions",
    "opentelemetry-instrumentation",
    "opentelemetry-instrumentation-wsgi",
    "opentelemetry-util-http",
}

# Bounds on every subprocess, in seconds.
BUILD_TIMEOUT = 600
VENV_TIMEOUT = 180
INSTALL_TIMEOUT = 600
RUN_TIMEOUT = 120


@dataclass(frozen=True)
class Case:
    """One way a user installs the wheel."""

    id: str
    installer: str  # "pip" or "uv"
    version: str  # of the installer, exact
    extras: str = ""
    lower_bounds: bool = False  # constrain our direct requirements to their lower bounds

    def __str__(self) -> str:
        return self.id


CASES = [
    # What `python3 -m venv` gives with Python 3.11.7 (ensurepip); pip < 25.1 has resolvelib 1.0.
    Case("pip-23.2.1", "pip", "23.2.1"),
    Case("pip-24.0", "pip", "24.0"),
    Case("pip-25.3.post1", "pip", "25.3.post1"),  # newest 25.x (it calls itself 25.3)
    Case("pip-26.3", "pip", "26.3"),  # newest 26.x
    Case(f"uv-{UV_VERSION}", "uv", UV_VERSION),
    Case("pip-23.2.1-grpc", "pip", "23.2.1", extras="grpc"),
    # Our own lower bounds (flask's, the SDK's x.y.0, ...) still install and run.
    Case(f"uv-{UV_VERSION}-lower-bounds", "uv", UV_VERSION, lower_bounds=True),
]

# Run inside each venv: where the package came from, one request through an
# instrumented app, the installed distributions, and whether gRPC is there.
PROBE = """
import importlib.metadata, importlib.util, json
import otel_flask_metrics
from flask import Flask
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

reader = InMemoryMetricReader()
app = Flask("probe")

@app.get("/items/<int:item>")
def item(item):
    return {"item": item}

otel_flask_metrics.FlaskMetrics(
    app, tracer_provider=TracerProvider(), meter_provider=MeterProvider(metric_readers=[reader])
)
status = app.test_client().get("/items/7").status_code
data = reader.get_metrics_data()
print(json.dumps({
    "file": otel_flask_metrics.__file__,
    "status": status,
    "metrics": sorted(
        metric.name
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
    ),
    "versions": {
        dist.metadata["Name"].lower().replace("_", "-"): dist.version
        for dist in importlib.metadata.distributions()
    },
    "grpc_exporter": importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None,
}))
"""


def _run(
    command: Sequence[str | Path],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; on failure, fail with its whole output (the resolver's error)."""
    args = [str(part) for part in command]
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"timed out after {timeout:.0f}s: {' '.join(args)}") from exc
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}: {' '.join(args)}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def _install_env() -> dict[str, str]:
    """The caller's environment (proxies, certificates, caches) minus what would
    redirect or constrain the install, or reach the package under test."""
    dropped = {
        "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE",
        "PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_CONSTRAINT",
        "PIP_REQUIRE_VIRTUALENV", "PIP_NO_DEPS", "PIP_PRE",
        "UV_CONSTRAINT", "UV_OVERRIDE", "UV_PYTHON", "UV_SYSTEM_PYTHON", "UV_PRERELEASE",
        "UV_RESOLUTION",
    }
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in dropped and not name.startswith("OTEL_")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _clean_env(venv: Path, home: Path, **extra: str) -> dict[str, str]:
    """What ``check`` runs with: PATH and HOME, and no OTEL_* variable unless given."""
    return {"PATH": f"{venv / 'bin'}{os.pathsep}{os.defpath}", "HOME": str(home), **extra}


def _metadata(text: str) -> email.message.Message:
    return email.parser.Parser().parsestr(text)


def _core_requirements(metadata: email.message.Message) -> list[Requirement]:
    return [
        requirement
        for requirement in map(Requirement, metadata.get_all("Requires-Dist") or [])
        if requirement.marker is None
    ]


def _lower_bounds(metadata: email.message.Message) -> dict[str, str]:
    """``name -> version`` for each direct requirement's ``>=`` or ``~=`` bound."""
    bounds: dict[str, str] = {}
    for requirement in _core_requirements(metadata):
        for specifier in requirement.specifier:
            if specifier.operator in (">=", "~="):
                bounds[requirement.name.lower()] = specifier.version
    return bounds


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path
    wheel_metadata: email.message.Message
    wheel_names: frozenset[str]
    sdist_metadata: email.message.Message
    sdist_names: frozenset[str]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """The sdist, and the wheel ``python -m build`` makes from it, built once."""
    out = tmp_path_factory.mktemp("dist")
    try:
        import build  # noqa: F401
    except ImportError:
        pytest.fail("the build front end is missing: pip install -e '.[test]' (it lists build)")
    _run([sys.executable, "-m", "build", "--outdir", out, REPO], timeout=BUILD_TIMEOUT,
         env=_install_env())
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        wheel_names = frozenset(archive.namelist())
        (metadata_name,) = (n for n in wheel_names if n.endswith(".dist-info/METADATA"))
        wheel_metadata = _metadata(archive.read(metadata_name).decode())
    with tarfile.open(sdist) as archive:
        # Names relative to the sdist's top directory, name-version/.
        sdist_names = frozenset(n.partition("/")[2] for n in archive.getnames())
        top = archive.getnames()[0].partition("/")[0]
        member = archive.extractfile(f"{top}/PKG-INFO")
        assert member is not None
        sdist_metadata = _metadata(member.read().decode())
    return Dists(sdist, wheel, wheel_metadata, wheel_names, sdist_metadata, sdist_names)


@dataclass(frozen=True)
class Installed:
    case: Case
    venv: Path
    home: Path
    installer_version: str  # as the installer reports itself
    versions: dict[str, str]
    probe: dict[str, Any]
    seconds: float


class _Uv:
    """uv at ``UV_VERSION``, installed from PyPI once per run (and only if a case needs it)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._binary: Path | None = None

    def binary(self) -> Path:
        with self._lock:
            if self._binary is None:
                _run([sys.executable, "-m", "pip", "install", "--target", self._root,
                      f"uv=={UV_VERSION}"], timeout=INSTALL_TIMEOUT, env=_install_env())
                binary = self._root / "bin" / "uv"
                assert binary.is_file(), f"uv=={UV_VERSION} did not install a uv binary"
                self._binary = binary
            return self._binary


def _install(case: Case, dists: Dists, uv: _Uv, root: Path) -> Installed:
    started = time.monotonic()
    venv, home = root / "venv", root / "home"
    home.mkdir()
    python = venv / "bin" / "python"
    env = _install_env()
    target = f"{dists.wheel}[{case.extras}]" if case.extras else str(dists.wheel)
    constraints: list[str] = []
    if case.lower_bounds:
        pins = root / "lower-bounds.txt"
        pins.write_text(
            "".join(f"{name}=={version}\n"
                    for name, version in _lower_bounds(dists.wheel_metadata).items())
        )
        constraints = ["--constraint", str(pins)]
    # Without ensurepip's pip (twice as slow as putting the exact pip in).
    _run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=VENV_TIMEOUT, env=env)
    if case.installer == "pip":
        # An exact pip, never "the newest": the newest is what hid issue #12.
        _run([sys.executable, "-m", "pip", "--python", python, "install", f"pip=={case.version}"],
             timeout=INSTALL_TIMEOUT, env=env)
        reported = _run([python, "-m", "pip", "--version"], timeout=RUN_TIMEOUT, env=env).stdout
        reported = reported.partition(" from ")[0]  # "pip 25.3 from /path (python 3.11)"
        # --no-compile: uv does not compile either, and the imports below compile what they use.
        _run([python, "-m", "pip", "install", "--no-compile", *constraints, target],
             timeout=INSTALL_TIMEOUT, env=env)
        _run([python, "-m", "pip", "check"], timeout=RUN_TIMEOUT, env=env)
    else:
        binary = uv.binary()
        reported = _run([binary, "--version"], timeout=RUN_TIMEOUT, env=env).stdout
        _run([binary, "pip", "install", "--python", python, *constraints, target],
             timeout=INSTALL_TIMEOUT, env=env)
        _run([binary, "pip", "check", "--python", python], timeout=RUN_TIMEOUT, env=env)
    # From an empty directory, so the import can only find the installed copy.
    _run([python, "-c", f"import {PACKAGE}"], timeout=RUN_TIMEOUT, env=_clean_env(venv, home),
         cwd=home)
    probe = json.loads(
        _run([python, "-c", PROBE], timeout=RUN_TIMEOUT, env=_clean_env(venv, home),
             cwd=home).stdout
    )
    return Installed(case, venv, home, reported.strip(), probe["versions"], probe,
                     time.monotonic() - started)


@pytest.fixture(scope="module")
def installs(
    request: pytest.FixtureRequest, dists: Dists, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Installed]]]:
    """Every selected case installing, two at a time; each test waits for its own."""
    wanted: dict[str, Case] = {}  # only the cases this run selected (-k, node ids)
    for item in request.session.items:
        if isinstance(item, pytest.Function) and item.module is request.module:
            case = item.callspec.params.get("case") if hasattr(item, "callspec") else None
            if isinstance(case, Case):
                wanted[case.id] = case
    uv = _Uv(tmp_path_factory.mktemp("uv"))
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        futures = {
            name: pool.submit(_install, case, dists, uv, tmp_path_factory.mktemp(name))
            for name, case in wanted.items()
        }
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_wheel_installs_and_runs(
    case: Case, dists: Dists, installs: dict[str, Future[Installed]]
) -> None:
    installed = installs[case.id].result()
    versions, probe = installed.versions, installed.probe

    if case.installer == "pip":
        assert versions["pip"] == case.version, installed.installer_version
    else:
        assert installed.installer_version.split()[:2] == ["uv", case.version]

    # The installed copy, not the source tree.
    assert Path(probe["file"]).is_relative_to(installed.venv / "lib"), probe["file"]
    assert probe["status"] == 200
    assert "http.server.request.duration" in probe["metrics"], probe["metrics"]

    if case.extras == "grpc":
        assert probe["grpc_exporter"] and "grpcio" in versions
    else:
        assert not probe["grpc_exporter"] and "grpcio" not in versions, (
            "gRPC is an extra: the core install must not pull in grpcio"
        )
    if case.lower_bounds:
        bounds = _lower_bounds(dists.wheel_metadata)
        assert {name: Version(versions[name]) for name in bounds} == {
            name: Version(version) for name, version in bounds.items()
        }

    check = _run([installed.venv / "bin" / "otel-flask-metrics", "check"], timeout=RUN_TIMEOUT,
                 env=_clean_env(installed.venv, installed.home), cwd=installed.home, check=False)
    # No OTEL_* variable: http/protobuf to localhost:4318, which need not answer.
    assert check.returncode == 0, check.stdout + check.stderr
    assert "OTLP endpoint: http://localhost:4318/v1/metrics" in check.stdout, check.stdout
    assert check.stdout.rstrip().endswith("configuration OK"), check.stdout

    grpc = _run([installed.venv / "bin" / "otel-flask-metrics", "check"], timeout=RUN_TIMEOUT,
                env=_clean_env(installed.venv, installed.home, OTEL_EXPORTER_OTLP_PROTOCOL="grpc"),
                cwd=installed.home, check=False)
    if case.extras == "grpc":
        # The gRPC exporters load (and are shut down again) without a Collector.
        assert grpc.returncode == 0, grpc.stdout + grpc.stderr
        assert "(grpc; not probed)" in grpc.stdout
    else:
        # One clear problem that names the extra, not a traceback.
        assert grpc.returncode == 1, grpc.stdout + grpc.stderr
        assert "otel-flask-metrics[grpc]" in grpc.stdout, grpc.stdout

    print(
        f"\n{case.id}: {installed.installer_version}; opentelemetry-sdk "
        f"{versions['opentelemetry-sdk']}, opentelemetry-instrumentation-flask "
        f"{versions['opentelemetry-instrumentation-flask']}, flask {versions['flask']}, "
        f"{GRPC_EXPORTER} {versions.get(GRPC_EXPORTER, '-')}; {installed.seconds:.0f}s"
    )


def test_wheel_metadata(dists: Dists) -> None:
    metadata = dists.wheel_metadata
    core = _core_requirements(metadata)
    names = {requirement.name.lower() for requirement in core}
    assert GRPC_EXPORTER not in names and "grpcio" not in names
    assert "grpc" in (metadata.get_all("Provides-Extra") or [])
    grpc_extra = {
        requirement.name
        for requirement in map(Requirement, metadata.get_all("Requires-Dist") or [])
        if requirement.marker is not None and requirement.marker.evaluate({"extra": "grpc"})
    }
    assert GRPC_EXPORTER in grpc_extra
    assert not names & PINNED_BY_OUR_DEPENDENCIES, names & PINNED_BY_OUR_DEPENDENCIES
    for requirement in core:
        operators = {specifier.operator for specifier in requirement.specifier}
        assert operators & {">=", "~="}, f"{requirement}: a lower bound"
        assert not operators & {"==", "==="}, f"{requirement}: a range, not a pin"
    assert metadata["Requires-Python"] == ">=3.10"
    # Contrib packages pin opentelemetry-instrumentation exactly: one shared
    # range, or pip < 25.1 gives up when one has a release the other lacks.
    contrib = {
        str(requirement.specifier)
        for requirement in core
        if requirement.name.lower().startswith("opentelemetry-instrumentation-")
    }
    assert len(contrib) == 1, contrib

    modules = {f"{PACKAGE}/{path.name}" for path in (REPO / PACKAGE).glob("*.py")}
    assert f"{PACKAGE}/py.typed" in dists.wheel_names
    assert modules <= dists.wheel_names, modules - dists.wheel_names
    (entry_points,) = (n for n in dists.wheel_names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(dists.wheel) as archive:
        groups = archive.read(entry_points).decode()
    for group in ("console_scripts", "opentelemetry_distro", "opentelemetry_configurator",
                  "opentelemetry_instrumentor"):
        assert f"[{group}]" in groups


def test_sdist_metadata(dists: Dists) -> None:
    """The sdist says what the wheel says, and holds what building the wheel needs."""
    for field in ("Name", "Version", "Requires-Python", "Provides-Extra", "Requires-Dist"):
        assert dists.sdist_metadata.get_all(field) == dists.wheel_metadata.get_all(field), field
    modules = {f"{PACKAGE}/{path.name}" for path in (REPO / PACKAGE).glob("*.py")}
    assert {"pyproject.toml", "README.md", f"{PACKAGE}/py.typed"} <= dists.sdist_names
    assert modules <= dists.sdist_names, modules - dists.sdist_names
