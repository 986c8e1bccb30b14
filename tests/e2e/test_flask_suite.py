"""Flask's own test suite passes under ``opentelemetry-instrument`` as it passes without.

The suite comes from Flask's sdist on PyPI at the installed Flask version
(cached), and runs twice in the same interpreter and environment: plainly, and
as ``opentelemetry-instrument python -m pytest`` with our distro. Every test
that passes plainly must pass instrumented: a failure the distro adds is a
behaviour of Flask that our instrumentation changed, whatever our own tests
say. Failures Flask has without us (e.g. against a newer Werkzeug) are not
ours and do not fail this test.

Both summaries go to ``flask-suite-<version>.txt`` in the tool cache (and to
stdout, shown with ``-s``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import pytest
from stack_processes import tool_cache  # type: ignore[import-not-found]

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
RUN_TIMEOUT = 300  # seconds per run of the suite; one takes about 5
MIN_PASSED = 300  # Flask 3.1 has about 490 tests: fewer means the run went wrong

# Same for both runs, so the difference between them is only
# opentelemetry-instrument: traces and metrics off (nothing to wait for at
# exit); logs at the distro's default, exported, so OpenTelemetry's logging
# handler sits on the root logger while Flask's logging tests run. Their
# export goes to a closed loopback port and is refused at once.
SUITE_ENVIRONMENT = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
    # The extracted sdist is shared by every venv: no bytecode written into it.
    "PYTHONDONTWRITEBYTECODE": "1",
}

# A pytest plugin loaded in both runs (``-p``). It keeps Flask's tests
# importable under a newer pytest than the one Flask locked (Flask 3.1.3's
# tests import ``_pytest.monkeypatch.notset``, which pytest 9.2 no longer has), and it
# reports, from inside the suite's own process, whether otel-flask-metrics was
# active there: configured by the distro, with Flask apps set up by its
# instrumentor.
PROBE_PLUGIN = '''
import json

import _pytest.compat
import _pytest.monkeypatch

if not hasattr(_pytest.monkeypatch, "notset") and hasattr(_pytest.compat, "NOTSET"):
    _pytest.monkeypatch.notset = _pytest.compat.NOTSET


def pytest_terminal_summary(terminalreporter):
    import sys

    import flask

    distro = sys.modules.get("otel_flask_metrics.distro")
    probe = {
        "configured": distro is not None and distro.configured() is not None,
        "app_instrumented": "otel_flask_metrics" in flask.Flask("probe").extensions,
        "flask": flask.__file__,
    }
    terminalreporter.write_line("{marker}" + json.dumps(probe))
'''
PROBE_MARKER = "otel-flask-metrics probe: "


@dataclass
class SuiteRun:
    """One run of Flask's suite: outcomes by test id, and what pytest printed."""

    name: str
    command: list[str]
    returncode: int
    seconds: float
    output: str
    passed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # test id -> failure message
    skipped: set[str] = field(default_factory=set)
    probe: dict[str, object] = field(default_factory=dict)

    def summary(self) -> str:
        """pytest's short test summary (the failures) and final line, with the wall time."""
        lines = self.output.rstrip().splitlines()
        start = next(
            (i for i, line in enumerate(lines) if "short test summary info" in line),
            len(lines) - 1,
        )
        shown = [line for line in lines[start:] if not line.startswith(PROBE_MARKER)]
        return "\n".join(
            [
                f"== {self.name}: {len(self.passed)} passed, {len(self.failed)} failed or "
                f"errored, {len(self.skipped)} skipped in {self.seconds:.1f}s wall "
                f"(exit {self.returncode})",
                "$ " + " ".join(self.command),
                f"probe: {json.dumps(self.probe)}",
                *shown,
            ]
        )


@pytest.fixture(scope="module")
def flask_sdist() -> Path:
    """Flask's sdist at the installed version, extracted; downloaded once, then reused.

    Module scope: the tool cache is looked up before the autouse fixture
    clears ``OTEL_*`` variables (``OTEL_FLASK_METRICS_CACHE`` included).
    """
    flask_version = version("flask")
    home = Path(tool_cache()) / f"flask-sdist-{flask_version}"
    source = home / f"flask-{flask_version}"
    if (source / "tests" / "conftest.py").is_file():
        return source
    home.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--no-binary", ":all:", f"flask=={flask_version}", "--dest", str(home),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    archive = home / f"flask-{flask_version}.tar.gz"
    assert download.returncode == 0 and archive.is_file(), (
        f"could not download Flask {flask_version}'s sdist:\n{download.stdout}{download.stderr}"
    )
    # Extracted next to its final place and renamed: a run that was
    # interrupted never leaves a half-extracted tree that looks complete.
    staging = Path(tempfile.mkdtemp(dir=home, prefix=".extract-"))
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: no extraction filters
                tar.extractall(staging)  # the sdist PyPI serves
        shutil.rmtree(source, ignore_errors=True)
        (staging / source.name).rename(source)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return source


def _environment(plugin_dir: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        # The outer pytest's own variables (PYTEST_ADDOPTS, PYTEST_CURRENT_TEST)
        # must not reach the inner one; OTEL_* are the runs' to set.
        if not name.startswith(("OTEL_", "PYTEST_"))
    }
    env.update(SUITE_ENVIRONMENT)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_dir), env.get("PYTHONPATH")]))
    return env


def _test_id(source: Path, classname: str, name: str) -> str:
    """A pytest node id from JUnit's names.

    ``tests.test_helpers.TestStreaming`` and ``test_x`` become
    ``tests/test_helpers.py::TestStreaming::test_x``: the longest dotted
    prefix that is a file of the suite is the module.
    """
    parts = classname.split(".") if classname else []
    for cut in range(len(parts), 0, -1):
        module = Path(*parts[:cut]).with_suffix(".py")
        if (source / module).is_file():
            return "::".join([module.as_posix(), *parts[cut:], name])
    return "::".join([*parts, name])  # a collection error names the module itself


def _run_suite(name: str, prefix: list[str], source: Path, tmp_path: Path) -> SuiteRun:
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "_otel_flask_suite_probe.py").write_text(
        PROBE_PLUGIN.replace("{marker}", PROBE_MARKER)
    )
    report = tmp_path / f"{name}.xml"
    command = [
        *prefix, sys.executable, "-m", "pytest", "-q", "-rfE",
        "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "_otel_flask_suite_probe",
        f"--junitxml={report}", f"--basetemp={tmp_path / f'{name}-tmp'}",
    ]
    started = time.monotonic()
    completed = subprocess.run(
        command,
        cwd=source,
        env=_environment(plugin_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    run = SuiteRun(
        name, command, completed.returncode, time.monotonic() - started, completed.stdout
    )
    # 0: all passed, 1: some failed; anything else (usage error, internal
    # error, nothing collected) means the suite did not really run.
    assert run.returncode in (0, 1) and report.is_file(), (
        f"the {name} run of Flask's suite did not complete (exit {run.returncode}):\n{run.output}"
    )
    for case in ET.parse(report).getroot().iter("testcase"):
        test = _test_id(source, case.get("classname", ""), case.get("name", ""))
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            run.failed[test] = problem.get("message") or (problem.text or "").strip()[-500:]
        elif case.find("skipped") is not None:
            run.skipped.add(test)
        else:
            run.passed.add(test)
    for line in run.output.splitlines():
        if line.startswith(PROBE_MARKER):
            run.probe = json.loads(line.removeprefix(PROBE_MARKER))
    return run


def test_flask_suite_passes_under_the_distro(flask_sdist: Path, tmp_path: Path) -> None:
    instrument = BIN / "opentelemetry-instrument"
    assert instrument.is_file(), f"no opentelemetry-instrument next to {sys.executable}"

    plain = _run_suite("plain", [], flask_sdist, tmp_path)
    instrumented = _run_suite("instrumented", [str(instrument)], flask_sdist, tmp_path)

    flask_version = version("flask")
    report = "\n\n".join(
        [f"Flask {flask_version}'s test suite", plain.summary(), instrumented.summary()]
    ) + "\n"
    # Next to the sdist's folder, in the tool cache, for whoever runs the tests.
    (flask_sdist.parents[1] / f"flask-suite-{flask_version}.txt").write_text(report)
    print(report)

    for run in (plain, instrumented):
        assert len(run.passed) > MIN_PASSED, f"too few tests ran:\n{report}"
        # The installed Flask is tested, not the sdist's copy of its source.
        assert not str(run.probe.get("flask", "")).startswith(str(flask_sdist)), run.probe
    assert plain.probe.get("configured") is False, plain.output
    assert plain.probe.get("app_instrumented") is False, plain.output
    assert instrumented.probe.get("configured") is True, (
        f"the distro did not configure the instrumented run:\n{instrumented.output}"
    )
    assert instrumented.probe.get("app_instrumented") is True, (
        f"Flask apps were not instrumented in the instrumented run:\n{instrumented.output}"
    )

    # Failures the plain run does not have, and tests that no longer pass
    # (skipped or not collected under the distro).
    added = {test: message for test, message in instrumented.failed.items()
             if test not in plain.failed}
    for test in sorted(plain.passed - instrumented.passed - set(added)):
        added[test] = "passes plainly; skipped or not collected under the distro"
    assert not added, (
        f"{len(added)} of Flask's tests fail only under the distro:\n"
        + "\n".join(f"  {test}: {message}" for test, message in sorted(added.items()))
        + f"\n\n{report}"
    )
