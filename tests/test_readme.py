"""The README documents every variable the code reads, and the test command CI runs."""

from __future__ import annotations

from pathlib import Path

from otel_flask_metrics.config import OPTIONS
from otel_flask_metrics.distro import ENVIRONMENT_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_option_is_in_the_readme_table() -> None:
    missing = [o.variable for o in OPTIONS if f"| `{o.variable}` |" not in README]
    assert not missing, f"add to the README's configuration table: {missing}"


def test_every_distro_default_is_documented() -> None:
    for name, value in ENVIRONMENT_DEFAULTS.items():
        assert f"`{name}`" in README and f"`{value}`" in README, name


def test_ci_runs_the_readme_test_command() -> None:
    assert "scripts/test.sh" in README
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
