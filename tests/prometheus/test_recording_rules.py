"""Checks of ``prometheus/recording_rules.yml``, the uptime probe recordings.

``promtool`` validates the rules and runs their unit tests
(``recording_rules_test.yml``); a missing promtool fails instead of skipping.
The rules are also held to the naming convention ``level:metric:operations``,
to reading only the uptime job's series (the blackbox exporter's probes and
the scrape's ``up``), and to having a unit test that shows each recorded series
at 1 and below 1.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.prometheus.test_rules import PROMETHEUS_DIR, _load_yaml, _promtool, _run, metric_names

RULES = "recording_rules.yml"
UNIT_TESTS = "recording_rules_test.yml"

#: What a scrape of the uptime job (the blackbox exporter) brings.
PROBE_SERIES = frozenset(
    {"probe_success", "probe_duration_seconds", "probe_http_status_code", "up"}
)

_NAME = re.compile(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+")


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load_yaml(RULES)["groups"] for rule in group["rules"]]


RECORDED = [rule["record"] for rule in _rules()]


def test_recording_rules_are_valid() -> None:
    _run(_promtool(), "check", "rules", f"prometheus/{RULES}")


def test_recording_rule_unit_tests_pass() -> None:
    _run(_promtool(), "test", "rules", f"prometheus/{UNIT_TESTS}")


def test_only_recording_rules_each_defined_once() -> None:
    assert all("record" in rule and "alert" not in rule for rule in _rules())
    assert len(RECORDED) == len(set(RECORDED))
    assert {
        "instance:probe_success:max",
        "instance:probe_success:avg_over_time5m",
        "instance:probe_success:avg_over_time1h",
        "instance:probe_success:avg_over_time1d",
        "instance:probe_success:avg_over_time30d",
    } <= set(RECORDED)


@pytest.mark.parametrize("name", RECORDED)
def test_names_follow_level_metric_operations(name: str) -> None:
    assert _NAME.fullmatch(name), name


def test_rules_read_only_probe_series_and_earlier_recordings() -> None:
    seen: set[str] = set()
    for rule in _rules():
        used = metric_names(rule["expr"])
        assert used, rule["record"]
        assert used <= PROBE_SERIES | seen, f"{rule['record']} reads {used - seen}"
        seen.add(rule["record"])


def test_raw_series_are_read_from_the_uptime_job_only() -> None:
    """Other jobs' ``up`` (the Collector, Prometheus) is no probe failure."""
    for rule in _rules():
        for name in metric_names(rule["expr"]) & PROBE_SERIES:
            # The name as a metric, not inside a label value or another name.
            selectors = re.findall(rf'(?<![\w:"]){name}(?![\w:"])(\{{[^}}]*\}})?', rule["expr"])
            assert selectors and all('job="uptime"' in s for s in selectors), rule["record"]


def test_every_recording_is_shown_up_and_down() -> None:
    """Each recorded series has an expected sample of 1 and one below 1."""
    values: dict[str, set[float]] = {name: set() for name in RECORDED}
    for case in _load_yaml(UNIT_TESTS)["tests"]:
        for check in case.get("promql_expr_test", []):
            for sample in check.get("exp_samples", []):
                name = sample["labels"].split("{", 1)[0]
                values[name].add(float(sample["value"]))
    for name, seen in values.items():
        assert 1 in seen, f"{name} never shown at 1"
        assert any(value < 1 for value in seen), f"{name} never shown below 1"


def test_unit_tests_load_these_rules() -> None:
    assert _load_yaml(UNIT_TESTS)["rule_files"] == [RULES]
    assert (PROMETHEUS_DIR / RULES).is_file()
