"""The scalable metrics store, end to end: the Collector writes to Prometheus and Thanos.

``LocalStack(thanos=...)`` (what ``scripts/stack.py --store thanos`` runs)
starts two ``thanos receive`` in one hashring (replication factor 1: each
series lives on one receiver) and ``thanos query`` over them, and layers
collector-config/thanos.yaml over the shipped Collector config, so the one
Collector remote-writes the same series to Prometheus and to the first
receiver, which forwards each series to the receiver that owns it. Real
traffic (the known mix of tests/e2e/test_stack.py, from the app under
``opentelemetry-instrument gunicorn -w 2``) goes in; once both stores hold
every request and the app has stopped, every shipped dashboard query and every
rule expression is evaluated at one instant on both, and the answers must be
the same series with the same values.

Thanos Query evaluates no rules. Rather than run ``thanos rule``, each rule's
expression is sent to both as an instant query, with the recordings it reads
replaced by their own expressions, so both sides compute it from the same raw
series. What only Prometheus can hold is left out and listed: the series it
scrapes itself (the uptime probes, ``up``, the Collector's own metrics),
recordings read with matchers, ranges or ``offset``, and ``ALERTS``.

The last test runs ``scripts/stack.py --store thanos`` as a user does and
finds the demo's traffic through Thanos Query.
"""

from __future__ import annotations

import json
import math
import re
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from local_stack import LocalStack, app_service  # type: ignore[import-not-found]
from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    build_thanos,
    free_port,
    wait_until,
)

from tests.e2e.test_stack import (  # noqa: F401 (run_stack is a fixture)
    APPS,
    StackRun,
    known_mix,
    run_stack,
    send,
)
from tests.grafana import dashboard_queries as dq

pytestmark = pytest.mark.e2e

SERVICE = "e2e-thanos"
RULE_FILES = (dq.REPO / "prometheus" / "alerts.yml", dq.REPO / "prometheus" / "recording_rules.yml")
# Windows wide enough to hold the whole run (about a minute of exports).
SETTINGS = {"rate_interval": "1m", "range_": "10m", "interval": "15s"}
# Series only Prometheus holds: what it scrapes (job uptime, prometheus,
# otel-collector) and what it writes itself (ALERTS).
PROMETHEUS_ONLY = re.compile(
    r"(?<![\w:])(probe_\w+|up|ALERTS|otelcol_\w+|prometheus_\w+|scrape_\w+)(?![\w:])"
)


def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    ]


RULES = _rules()
RECORDED = {rule["record"]: rule["expr"] for rule in RULES if "record" in rule}


def expand_recordings(expr: str) -> str | None:
    """``expr`` with every recording it reads replaced by its expression, or
    None when one is read with matchers, a range, ``offset`` or ``@`` (no plain
    substitution)."""
    for _ in range(10):
        changed = False
        for name, definition in RECORDED.items():
            pattern = re.compile(
                rf"(?<![\w:]){re.escape(name)}(?![\w:])(?P<after>\s*(?:[{{\[@]|offset\b)?)"
            )
            for match in pattern.finditer(expr):
                if match["after"].strip():
                    return None
            new = pattern.sub(lambda m, d=definition: f"({d}){m['after']}", expr)
            changed |= new != expr
            expr = new
        if not changed:
            return expr
    raise AssertionError(f"recordings nested too deep in {expr!r}")


@dataclass
class Stores:
    stack: LocalStack
    at: float  # the instant every comparison is evaluated at
    total: int

    def query(self, base: str, promql: str) -> list[dict[str, Any]]:
        body = urllib.parse.urlencode({"query": promql, "time": f"{self.at:.3f}"}).encode()
        try:
            with urllib.request.urlopen(f"{base}/api/v1/query", body, timeout=30) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            answer = json.load(error)
        assert answer["status"] == "success", (promql, answer)
        assert answer["data"]["resultType"] == "vector", (promql, answer["data"]["resultType"])
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def both(self, promql: str) -> tuple[dict[str, float], dict[str, float]]:
        return (
            _by_series(self.query(self.stack.prometheus_url, promql)),
            _by_series(self.query(self.stack.thanos_query_url, promql)),
        )


def _by_series(result: list[dict[str, Any]]) -> dict[str, float]:
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in result}


def _total(stores: Stores, base: str) -> float:
    samples = stores.query(
        base, f'sum(http_server_request_duration_seconds_count{{service_name="{SERVICE}"}})'
    )
    return float(samples[0]["value"][1]) if samples else 0.0


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    work = tmp_path_factory.mktemp("thanos")
    stack = LocalStack(work, with_alertmanager=False, thanos=build_thanos())
    stack.start()
    try:
        port = free_port()
        app = stack.add(
            app_service(
                stack, work, app="api:app", chdir=APPS, port=port, name="api",
                env={
                    "OTEL_SERVICE_NAME": SERVICE,
                    "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=e2e",
                    "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
                    "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "/health",
                },
            ),
            ready_timeout=60,
        )
        mix = known_mix()
        base = f"http://{LOOPBACK}:{port}"
        result = Stores(stack, 0.0, len(mix))
        result.at = time.time()
        # Two interleaved waves, a few exports apart, so rate() sees series grow.
        send(base, mix[::2])
        time.sleep(5)
        send(base, mix[1::2])
        time.sleep(5)
        # Stopped, the app flushes its last export; then nothing changes.
        app.stop()

        def complete() -> bool:
            result.at = time.time()
            return all(
                _total(result, url) == len(mix)
                for url in (stack.prometheus_url, stack.thanos_query_url)
            )

        wait_until(complete, 90, f"{len(mix)} requests in Prometheus and in Thanos", 1.0)
        # The Collector's last remote-write batches are in by now (its
        # exports go to both stores at once); evaluated a little later.
        time.sleep(3)
        result.at = time.time()
        yield result
    finally:
        stack.stop()


def _comparable(expr: str) -> bool:
    return PROMETHEUS_ONLY.search(expr) is None


def _compare(stores: Stores, promql: str) -> tuple[int, str | None]:
    """(series compared, what differs or None)."""
    prometheus, thanos = stores.both(promql)
    if prometheus.keys() != thanos.keys():
        return 0, (
            f"series differ: only in Prometheus {sorted(prometheus.keys() - thanos.keys())}, "
            f"only in Thanos {sorted(thanos.keys() - prometheus.keys())}"
        )
    for series, value in prometheus.items():
        other = thanos[series]
        same = (math.isnan(value) and math.isnan(other)) or value == other
        if not same:
            return 0, f"{series}: Prometheus {value!r}, Thanos {other!r}"
    return len(prometheus), None


def test_the_series_are_spread_over_both_receivers(stores: Stores) -> None:
    # The receivers' own label, asked of each receiver through Query's
    # dedup-free view: with replication factor 1 a series is on one only.
    promql = f'count by (receive_replica) ({{service_name="{SERVICE}"}})'  # no recordings there
    body = urllib.parse.urlencode(
        {"query": promql, "time": f"{stores.at:.3f}", "dedup": "false"}
    ).encode()
    url = f"{stores.stack.thanos_query_url}/api/v1/query"
    try:
        with urllib.request.urlopen(url, body, timeout=30) as response:
            result = json.load(response)["data"]["result"]
    except urllib.error.HTTPError as error:
        raise AssertionError(error.read().decode()) from None
    per_receiver = {r["metric"].get("receive_replica"): int(r["value"][1]) for r in result}
    assert set(per_receiver) == {"1", "2"}, per_receiver
    (total,) = stores.query(
        stores.stack.prometheus_url, f'count({{service_name="{SERVICE}", __name__!~".*:.*"}})'
    )
    assert sum(per_receiver.values()) == int(total["value"][1])
    print(f"\nseries per receiver: {per_receiver}")


DASHBOARD_QUERIES = [
    (uid, where, dq.substitute(expr, {}, **SETTINGS))
    for uid, dashboard in sorted(dq.load_dashboards().items())
    for where, expr in dq.iter_queries(dashboard)
]


def test_every_dashboard_query_answers_the_same(stores: Stores) -> None:
    compared, series, left_out, empty, differ = 0, 0, [], [], []
    for uid, where, promql in DASHBOARD_QUERIES:
        expanded = expand_recordings(promql)
        if expanded is None or not _comparable(expanded):
            left_out.append(f"{uid} / {where}")
            continue
        count, difference = _compare(stores, expanded)
        if difference:
            differ.append(f"{uid} / {where}: {difference}\n  {expanded}")
        compared += 1
        series += count
        if not count:
            empty.append(f"{uid} / {where}")
    print(
        f"\ndashboard queries: {compared} compared ({series} series, equal), "
        f"{len(left_out)} Prometheus-only left out: {left_out}; empty on both: {empty}"
    )
    assert not differ, "\n".join(differ)
    assert compared > len(left_out)


def test_every_rule_expression_answers_the_same(stores: Stores) -> None:
    compared, series, left_out, differ = 0, 0, [], []
    for rule in RULES:
        name = rule.get("record") or rule["alert"]
        expanded = expand_recordings(rule["expr"])
        if expanded is None or not _comparable(expanded):
            left_out.append(name)
            continue
        count, difference = _compare(stores, expanded)
        if difference:
            differ.append(f"{name}: {difference}\n  {expanded}")
        compared += 1
        series += count
    print(
        f"\nrule expressions: {compared} compared ({series} series, equal), "
        f"{len(left_out)} Prometheus-only left out: {left_out}"
    )
    assert not differ, "\n".join(differ)
    assert compared


def test_the_raw_series_are_the_same(stores: Stores) -> None:
    """Every series the Collector wrote, with its latest value, in both stores."""
    # Recordings (names with a colon) are Prometheus' own.
    count, difference = _compare(stores, f'{{service_name="{SERVICE}", __name__!~".*:.*"}}')
    assert difference is None, difference
    assert count > 0


def test_stack_script_store_thanos_fills_thanos_with_the_demo_traffic(
    run_stack: Callable[..., StackRun],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    run = run_stack("--store", "thanos", "--no-jaeger")
    endpoints = run.endpoints()
    query = endpoints["Thanos Query (PromQL)"]
    assert {"Thanos Receive 1 remote write", "Thanos Receive 2 remote write"} <= set(endpoints)
    promql = urllib.parse.urlencode(
        {"query": 'sum(http_server_request_duration_seconds_count{service_name="demo-api"})'}
    )

    def counted() -> bool:
        with urllib.request.urlopen(f"{query}/api/v1/query?{promql}", timeout=5) as response:
            result = json.load(response)["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) > 0

    wait_until(counted, 90, "the demo's requests in Thanos Query", 0.5)
    assert run.stop(signal.SIGINT) == 0
    for name in ("thanos-receive-1.log", "thanos-receive-2.log", "thanos-query.log"):
        assert (tmp_path / "logs" / name).stat().st_size > 0, name
