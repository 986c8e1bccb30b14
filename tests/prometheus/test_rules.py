"""Checks of the Prometheus and Alertmanager configuration in ``prometheus/``.

The real tools do the checking: ``promtool`` (Debian package ``prometheus``)
validates the configuration and the rules and runs the rule unit tests of
``alerts_test.yml``; ``amtool`` (Debian package ``prometheus-alertmanager``)
validates the Alertmanager configuration. A missing promtool fails these tests
instead of skipping them, so that a machine without it cannot pass silently.

The rules are also checked against the package: every series they read must be
one that :func:`otel_flask_metrics.metrics.prometheus_series_names` says the
instruments produce (or one of the few that Prometheus or the blackbox
exporter makes, listed below), so that renaming an instrument cannot leave an alert
watching a series that no longer exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_flask_metrics.metrics import prometheus_series_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "prometheus"
TOOL_TIMEOUT = 120  # seconds, for one promtool or amtool run

#: Series that Prometheus makes itself instead of receiving them by remote write.
PROMETHEUS_BUILTIN_SERIES = frozenset({"up"})

#: Series the blackbox exporter answers the uptime probes with (job "uptime" of
#: prometheus.yml, scraped by Prometheus): ApiDown reads probe_success.
BLACKBOX_SERIES = frozenset({"probe_success", "probe_duration_seconds", "probe_http_status_code"})

#: PromQL words that look like identifiers but are operators or modifiers.
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"}
    | {"by", "without", "on", "ignoring", "group_left", "group_right"}
)

_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# Not preceded by a word character, ':' or '.', so "5m" and "0.95" never match.
_IDENTIFIER = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects.

    Strings, label matchers, range and subquery brackets and grouping clauses
    are blanked first, so label names and label values never count; what is
    left is an identifier that is a metric name unless it is a keyword or is
    followed by ``(`` (a function call or an aggregation).
    """
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGE.sub("[]", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def _load_yaml(name: str) -> Any:
    with (PROMETHEUS_DIR / name).open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def _rules() -> Iterator[dict[str, Any]]:
    for group in _load_yaml("alerts.yml")["groups"]:
        yield from group["rules"]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _run(*command: str) -> str:
    """Run a tool from the repository root; fail with its output if it fails."""
    shown = " ".join(command)
    try:
        result = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{shown}` did not finish within {TOOL_TIMEOUT}s\n{exc.stdout!r}")
    assert result.returncode == 0, (
        f"`{shown}` exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    return result.stdout


def _promtool() -> str:
    """promtool's path; a missing promtool is a failure, never a skip."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool was not found on PATH: install Debian's `prometheus` package "
            "(apt-get install prometheus), which provides /usr/bin/promtool",
            pytrace=False,
        )
    return path


# ---- promtool ----------------------------------------------------------------


def test_prometheus_config_is_valid() -> None:
    # Also loads rule_files relative to the configuration file.
    _run(_promtool(), "check", "config", "prometheus/prometheus.yml")


def test_rules_are_valid() -> None:
    _run(_promtool(), "check", "rules", "prometheus/alerts.yml")


def test_rule_unit_tests_pass() -> None:
    _run(_promtool(), "test", "rules", "prometheus/alerts_test.yml")


# ---- the rules against the package ---------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        ('up{job="otel-collector"} == 0', {"up"}),
        (
            'sum by (le, http_route) (rate(a_bucket{http_route=~"/x/<id>"}[5m] offset 1h))',
            {"a_bucket"},
        ),
        (
            "histogram_quantile(0.95, rec:a_bucket:rate5m) > 1 and on (job) b",
            {"rec:a_bucket:rate5m", "b"},
        ),
        ("sum without (instance)(a) / ignoring(code) group_left b", {"a", "b"}),
        ('label_replace(a, "dst", "$1", "src", "(.*)") unless absent(c)', {"a", "c"}),
        ("max_over_time(a[1h:5m]) * 1e3 > bool 5", {"a"}),
    ],
)
def test_metric_name_extraction(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_rules_read_only_series_the_instruments_produce() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    known = (
        prometheus_series_names() | PROMETHEUS_BUILTIN_SERIES | BLACKBOX_SERIES | recorded
    )
    used: dict[str, set[str]] = {}
    for rule in _rules():
        name = rule.get("alert") or rule["record"]
        for metric in metric_names(rule["expr"]):
            used.setdefault(metric, set()).add(name)

    unknown = {metric: sorted(rules) for metric, rules in used.items() if metric not in known}
    assert not unknown, f"rules read series that nothing produces: {unknown}"
    # Guard against an extractor that finds nothing and so approves everything.
    assert "http_server_request_duration_seconds_count" in used
    assert "http_server_request_duration_seconds_bucket" in used
    assert recorded & used.keys()


def test_recording_rules_are_defined_once() -> None:
    recorded = [rule["record"] for rule in _rules() if "record" in rule]
    assert len(recorded) == len(set(recorded))


@pytest.mark.parametrize("alert", _alerts(), ids=lambda alert: str(alert["alert"]))
def test_alert_is_routable_and_explained(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"critical", "warning"}
    annotations = alert["annotations"]
    assert {"summary", "description", "runbook"} <= annotations.keys()
    # Whoever is paged must see what is affected without opening Prometheus.
    for key in ("summary", "description"):
        assert "$labels." in annotations[key], f"{key} names no service, route or consumer"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in _load_yaml("alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in _alerts()}
    assert names - firing == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


# ---- prometheus.yml wiring ---------------------------------------------------------


def test_prometheus_config_wiring() -> None:
    config = _load_yaml("prometheus.yml")
    assert config["rule_files"] == ["alerts.yml", "recording_rules.yml"]
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        name: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for name, job in jobs.items()
    }
    assert targets == {
        "prometheus": ["localhost:9090"],
        "otel-collector": ["otel-collector:8888"],
        "uptime": [],
    }
    alertmanagers = config["alerting"]["alertmanagers"]
    assert [t for am in alertmanagers for sc in am["static_configs"] for t in sc["targets"]] == [
        "alertmanager:9093"
    ]
    # OtelCollectorDown selects the Collector's scrape job by name.
    collector_down = next(a for a in _alerts() if a["alert"] == "OtelCollectorDown")
    assert 'job="otel-collector"' in collector_down["expr"]


def test_uptime_job_probes_the_targets_file_through_the_blackbox_exporter() -> None:
    """The contract the recording rules and dashboards build on."""
    jobs = _load_yaml("prometheus.yml")["scrape_configs"]
    (job,) = [j for j in jobs if j["job_name"] == "uptime"]
    assert job["scrape_interval"] == "15s"
    assert job["metrics_path"] == "/probe"
    assert job["params"] == {"module": ["http_2xx"]}
    assert job["file_sd_configs"] == [{"files": ["uptime-targets.yml"]}]
    assert job["relabel_configs"] == [
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": "blackbox-exporter:9115"},
    ]
    blackbox = _load_yaml("blackbox.yml")["modules"]["http_2xx"]
    assert blackbox["prober"] == "http"
    assert blackbox["timeout"] == "5s"
    assert "valid_status_codes" not in blackbox["http"], "the default: any 2xx"
    targets = [t for group in _load_yaml("uptime-targets.yml") for t in group["targets"]]
    assert targets == ["http://demo-api:8000/health"], "the demo API's health URL in compose"
    expressions = {a["alert"]: a["expr"] for a in _alerts()}
    assert expressions["ApiDown"] == 'probe_success{job="uptime"} == 0'
    assert expressions["BlackboxExporterDown"] == 'up{job="uptime"} == 0'


def test_blackbox_config_is_valid() -> None:
    exporter = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    if exporter is None:
        pytest.fail(
            "the blackbox exporter was not found on PATH: install Debian's "
            "`prometheus-blackbox-exporter` package",
            pytrace=False,
        )
    _run(exporter, "--config.check", "--config.file=prometheus/blackbox.yml")


# ---- alertmanager.yml --------------------------------------------------------------


def test_alertmanager_config_is_valid() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool not found: install Debian's `prometheus-alertmanager` package")
    _run(amtool, "check-config", "prometheus/alertmanager.yml")


def test_alertmanager_routes_every_severity() -> None:
    config = _load_yaml("alertmanager.yml")
    receivers = {receiver["name"] for receiver in config["receivers"]}
    route = config["route"]
    assert route["receiver"] in receivers
    routed: set[str] = set()
    for child in route["routes"]:
        assert child["receiver"] in receivers
        for matcher in child["matchers"]:
            found = re.fullmatch(r'severity="(\w+)"', matcher)
            if found:
                routed.add(found.group(1))
    severities = {alert["labels"]["severity"] for alert in _alerts()}
    assert severities <= routed
    default = next(r for r in config["receivers"] if r["name"] == route["receiver"])
    assert default["webhook_configs"][0]["url"] == "http://alert-webhook:8080/"
