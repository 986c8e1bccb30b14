"""Every dashboard query, run against a real Prometheus holding known data.

A small data set shaped like what the Collector remote-writes (one series set
per worker process, counters born non-zero; worker process metrics) and like
what Prometheus scrapes from the blackbox exporter (uptime probes of a few
URLs) is backfilled with
``promtool tsdb create-blocks-from openmetrics``; the recording rules of
``prometheus/recording_rules.yml`` are evaluated over it and backfilled with
``promtool tsdb create-blocks-from rules``; then ``prometheus`` serves it all
and each substituted query is sent to ``/api/v1/query``. This catches PromQL
syntax errors (Grafana cannot run here) and checks the numbers of the key
panels exactly.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_processes import Service, free_port  # type: ignore[import-not-found]

from tests.grafana import dashboard_queries as dq

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True, scope="module")
def _binaries_installed() -> None:
    # Never skipped: a machine without Prometheus fails here with the fix.
    missing = [name for name in ("prometheus", "promtool") if not shutil.which(name)]
    assert not missing, f"{missing} not installed: apt-get install prometheus"


STARTUP_TIMEOUT = 30.0  # seconds
QUERY_TIMEOUT = 10.0  # seconds
MINUTES = 30  # length of the data set, one sample per minute per series

# Panels whose queries may rightly return nothing on this data set: no alert
# rules are loaded, so there are no ALERTS series.
MAY_BE_EMPTY = {"Active alerts (ALERTS)", "Alerts over time"}
RECORDING_RULES = dq.REPO / "prometheus" / "recording_rules.yml"

DURATION_LE = (
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.075",
    "0.1",
    "0.25",
    "0.5",
    "0.75",
    "1",
    "2.5",
    "5",
    "7.5",
    "10",
    "+Inf",
)
SIZE_LE = (
    "0",
    "64",
    "256",
    "1024",
    "4096",
    "16384",
    "65536",
    "262144",
    "1048576",
    "4194304",
    "16777216",
    "+Inf",
)


@dataclass(frozen=True)
class Series:
    """One worker's request counter for one label set: minute -> cumulative count."""

    labels: dict[str, str]
    steps: dict[int, int]  # first key is the minute the series is born
    duration: float = 0.02  # seconds per request
    request_size: int = 100  # bytes per request
    response_size: int = 1000  # bytes per request

    def count_at(self, minute: int) -> int | None:
        known = [m for m in self.steps if m <= minute]
        return self.steps[max(known)] if known else None


SERVICE = {
    "service_name": "shop",
    "deployment_environment_name": "test",
    "job": "shop",
    "url_scheme": "http",
}
USERS_ROUTE = "/users/<int:user_id>"


def _worker(instance: str) -> dict[str, str]:
    return {**SERVICE, "service_instance_id": instance, "instance": instance}


C1 = {"api_consumer_id": "c1", "api_consumer_group": "g1"}
C2 = {"api_consumer_id": "c2", "api_consumer_group": "g2"}
DATA = (
    Series(
        {
            **_worker("i1"),
            **C1,
            "http_route": USERS_ROUTE,
            "http_request_method": "GET",
            "http_response_status_code": "200",
        },
        {5: 3, 12: 5, 28: 8},
    ),
    Series(
        {
            **_worker("i2"),
            **C1,
            "http_route": USERS_ROUTE,
            "http_request_method": "GET",
            "http_response_status_code": "200",
        },
        {0: 2, 24: 4},
    ),
    Series(
        {
            **_worker("i1"),
            **C1,
            "http_route": "/orders",
            "http_request_method": "POST",
            "http_response_status_code": "500",
            "error_type": "500",
        },
        {10: 1},
    ),
    Series(
        {
            **_worker("i1"),
            **C2,
            "http_route": "/orders",
            "http_request_method": "POST",
            "http_response_status_code": "404",
        },
        {15: 2},
        duration=0.3,
    ),
    Series(
        {
            **_worker("i1"),
            "http_route": "/health",
            "http_request_method": "GET",
            "http_response_status_code": "200",
        },
        {0: 5},
    ),
)


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def _histogram_lines(
    name: str, labels: dict[str, str], bounds: tuple[str, ...], count: int, value: float, ts: int
) -> list[str]:
    lines = []
    for le in bounds:
        in_bucket = count if le == "+Inf" or value <= float(le) else 0
        lines.append(f"{name}_bucket{{{_labels({**labels, 'le': le})}}} {in_bucket} {ts}")
    lines.append(f"{name}_sum{{{_labels(labels)}}} {count * value} {ts}")
    lines.append(f"{name}_count{{{_labels(labels)}}} {count} {ts}")
    return lines


# Worker process metrics: (resident bytes, CPU seconds per minute); i3 is a
# worker started at minute 25 (a restart), exporting process metrics only.
WORKERS = {"i1": (50_000_000, 6.0), "i2": (60_000_000, 3.0), "i3": (40_000_000, 1.5)}
I3_BORN = 25  # minute

# Uptime probes: the blackbox exporter scraped as job "uptime" every 15
# seconds (SCRAPE), the URL as the instance label. URL -> (minute -> status
# code of the answer, 0 for none, None for a failed scrape: up 0 and no probe
# series). A state holds for all the scrapes of its minute.
SCRAPE = 15  # seconds
HEALTH_URL = "http://shop:8000/health"
ORDERS_URL = "http://shop:8000/orders"
BILLING_URL = "http://billing:9000/"
SEARCH_URL = "http://search:7000/health"
PROBES: dict[str, dict[int, int | None]] = {
    HEALTH_URL: dict.fromkeys(range(MINUTES + 1), 200),
    # 500s from minute 20 to minute 24.
    ORDERS_URL: {m: 500 if 20 <= m <= 24 else 200 for m in range(MINUTES + 1)},
    # Never answers.
    BILLING_URL: dict.fromkeys(range(MINUTES + 1), 0),
    # Its scrapes fail from minute 10 to minute 14. Backfilled data has no
    # staleness markers, so the last probe_success (1) stays in the lookback:
    # the recording rules must still count those minutes as down.
    SEARCH_URL: {m: None if 10 <= m <= 14 else 200 for m in range(MINUTES + 1)},
}
PROBE_SECONDS = {HEALTH_URL: 0.012, ORDERS_URL: 0.03, BILLING_URL: 5.0, SEARCH_URL: 0.02}


def _probe_lines(minute: int, ts: int) -> list[str]:
    """The scrapes of the uptime job in the minute from ``ts`` (only the first
    at the last minute, so that no sample lies after the data set's end)."""
    lines = []
    for scrape_ts in range(ts, ts + 60 if minute < MINUTES else ts + 1, SCRAPE):
        for url, answers in PROBES.items():
            code = answers[minute]
            target = _labels({"job": "uptime", "instance": url})
            lines.append(f"up{{{target}}} {int(code is not None)} {scrape_ts}")
            if code is None:
                continue
            lines.append(f"probe_success{{{target}}} {int(200 <= code <= 299)} {scrape_ts}")
            lines.append(f"probe_http_status_code{{{target}}} {code} {scrape_ts}")
            lines.append(f"probe_duration_seconds{{{target}}} {PROBE_SECONDS[url]} {scrape_ts}")
    return lines


def _process_lines(minute: int, ts: int) -> list[str]:
    lines = []
    for instance, (rss, cpu_per_minute) in WORKERS.items():
        born = I3_BORN if instance == "i3" else 0
        if minute < born:
            continue
        worker = _worker(instance)
        lines.append(f"process_memory_usage_bytes{{{_labels(worker)}}} {rss} {ts}")
        for mode, share in (("user", 2 / 3), ("system", 1 / 3)):
            seconds = (minute - born + 1) * cpu_per_minute * share
            labels = _labels({**worker, "cpu_mode": mode})
            lines.append(f"process_cpu_time_seconds_total{{{labels}}} {seconds} {ts}")
    return lines


def openmetrics(start: int) -> str:
    """The data set as OpenMetrics text, samples at ``start + 60 * minute``."""
    lines: list[str] = []
    for minute in range(MINUTES + 1):
        ts = start + 60 * minute
        for series in DATA:
            count = series.count_at(minute)
            if count is None:
                continue
            lines += _histogram_lines(
                "http_server_request_duration_seconds",
                series.labels,
                DURATION_LE,
                count,
                series.duration,
                ts,
            )
            lines += _histogram_lines(
                "http_server_request_body_size_bytes",
                series.labels,
                SIZE_LE,
                count,
                series.request_size,
                ts,
            )
            lines += _histogram_lines(
                "http_server_response_body_size_bytes",
                series.labels,
                SIZE_LE,
                count,
                series.response_size,
                ts,
            )
        for instance in ("i1", "i2"):
            gauge = {**_worker(instance), "http_request_method": "GET"}
            lines.append(f"http_server_active_requests{{{_labels(gauge)}}} 0 {ts}")
        lines += _probe_lines(minute, ts)
        lines += _process_lines(minute, ts)
    # OpenMetrics wants each metric family's samples together.
    lines.sort(key=lambda line: line.split("{", 1)[0])
    return "\n".join(lines) + "\n# EOF\n"


@dataclass(frozen=True)
class Prometheus:
    url: str
    end: int  # unix seconds of the last sample; queries are evaluated there

    def query(self, expr: str, at: int | None = None) -> dict[str, Any]:
        body = urllib.parse.urlencode({"query": expr, "time": at or self.end}).encode()
        try:
            with urllib.request.urlopen(
                f"{self.url}/api/v1/query", body, timeout=QUERY_TIMEOUT
            ) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as error:
            return dict(json.load(error))


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    tmp: Path = tmp_path_factory.mktemp("prometheus")
    # Recent enough to be within retention, whole minutes so subquery steps
    # line up with samples.
    start = (int(time.time()) // 3600) * 3600 - 2 * 3600
    data = tmp / "data.om"
    data.write_text(openmetrics(start), encoding="utf-8")
    storage = tmp / "tsdb"
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(data), str(storage)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  evaluation_interval: 1m\n", encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Service(
        "prometheus",
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp,
        ready_url=f"{url}/-/ready",
    ).start()
    end = start + 60 * MINUTES
    try:
        server.wait_ready(STARTUP_TIMEOUT)
        # Blocks written next to a running Prometheus are read at its start.
        for number, rules in enumerate(_rule_passes()):
            _backfill_rules(url, start, end, rules, tmp / f"blocks-{number}", tmp, storage)
            server.stop()
            server.start().wait_ready(STARTUP_TIMEOUT)
        yield Prometheus(url, end)
    finally:
        server.stop()


def _rule_passes() -> list[list[dict[str, Any]]]:
    """The recording rules in the order they can be backfilled.

    Backfilling evaluates each rule against what Prometheus already holds, so a
    rule reading another recording can only run once that one's blocks are in.
    """
    rules = [
        rule
        for group in yaml.safe_load(RECORDING_RULES.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    ]

    def reads(rule: dict[str, Any]) -> set[str]:
        return {
            other["record"]
            for other in rules
            if re.search(rf"(?<![\w:]){re.escape(other['record'])}(?![\w:])", rule["expr"])
        }

    passes: list[list[dict[str, Any]]] = []
    done: set[str] = set()
    pending = rules
    while pending:
        ready = [rule for rule in pending if reads(rule) <= done]
        assert ready, f"recording rules read each other in a cycle: {pending}"
        passes.append(ready)
        done |= {rule["record"] for rule in ready}
        pending = [rule for rule in pending if rule not in ready]
    return passes


def _backfill_rules(
    url: str,
    start: int,
    end: int,
    rules: list[dict[str, Any]],
    blocks: Path,
    tmp: Path,
    storage: Path,
) -> None:
    """Evaluate ``rules`` once a minute over the data set and add the blocks to ``storage``.

    A rule group is evaluated at an offset into each minute taken from a hash
    of its name and file path. Every pass uses the same name and path, so all
    the recordings share one evaluation grid, as the rules of one group do: a
    window of a later pass then holds a fixed number of an earlier pass'
    samples (with a grid per pass, 29 or 30 of them, by the tmp path's hash).
    """
    rule_file = tmp / "rules.yml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": "backfill", "rules": rules}]}), encoding="utf-8"
    )
    subprocess.run(
        [
            "promtool",
            "tsdb",
            "create-blocks-from",
            "rules",
            f"--url={url}",
            f"--start={start}",
            f"--end={end}",
            "--eval-interval=1m",
            f"--output-dir={blocks}",
            str(rule_file),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    made = [block for block in blocks.iterdir() if block.is_dir()]
    assert made, f"no blocks recorded from {rule_file}"
    for block in made:
        block.rename(storage / block.name)


ALL_QUERIES = [
    (uid, where, expr)
    for uid, dashboard in sorted(dq.load_dashboards().items())
    for where, expr in dq.iter_queries(dashboard)
]
# Minute-spaced samples: a rate window needs at least two of them.
SETTINGS = {"rate_interval": "5m", "range_": "1h", "interval": "1m"}


def _run(
    prometheus: Prometheus, expr: str, variables: dict[str, str] | None = None, **settings: str
) -> list[dict[str, Any]]:
    promql = dq.substitute(expr, variables or {}, **{**SETTINGS, **settings})
    answer = prometheus.query(promql)
    assert answer["status"] == "success", f"{answer.get('error')}\n{promql}"
    return list(answer["data"]["result"])


def test_every_query_runs_and_returns_data(prometheus: Prometheus) -> None:
    empty = []
    for uid, where, expr in ALL_QUERIES:
        if not _run(prometheus, expr) and where not in MAY_BE_EMPTY:
            empty.append(f"{uid} / {where}")
    assert not empty, f"no data: {empty}"


@pytest.mark.parametrize(
    "variables",
    [
        {"consumer": "c1", "route": USERS_ROUTE},
        {"service": "shop", "environment": "test", "consumer_group": "g2"},
        {"route": ["/orders", USERS_ROUTE], "consumer": ["c1", "c2"]},
    ],
)
def test_every_query_parses_with_selected_values(
    prometheus: Prometheus, variables: dict[str, str]
) -> None:
    for _uid, _where, expr in ALL_QUERIES:
        _run(prometheus, expr, variables)


def _panel_query(uid: str, title: str, column: int = 0) -> str:
    matches = [expr for u, where, expr in ALL_QUERIES if u == uid and where == title]
    return matches[column]


def _by(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(r["metric"].get(label, "") for label in labels): float(r["value"][1]) for r in result
    }


def _scalar(result: list[dict[str, Any]]) -> float:
    (only,) = result
    return float(only["value"][1])


def test_overview_totals(prometheus: Prometheus) -> None:
    assert _scalar(_run(prometheus, _panel_query("ofm-overview", "Requests in range"))) == 20
    assert _scalar(_run(prometheus, _panel_query("ofm-overview", "5xx ratio in range"))) == 0.05
    assert _scalar(_run(prometheus, _panel_query("ofm-overview", "4xx ratio in range"))) == 0.1
    assert _scalar(_run(prometheus, _panel_query("ofm-overview", "Active consumers"))) == 2


def test_consumers_table(prometheus: Prometheus) -> None:
    def column(
        index: int, variables: dict[str, str] | None = None, **settings: str
    ) -> dict[tuple[str, ...], float]:
        expr = _panel_query("ofm-consumers", "Consumers", index)
        return _by(
            _run(prometheus, expr, variables, **settings), "api_consumer_id", "api_consumer_group"
        )

    # Requests without a consumer form a row with empty labels ("(anonymous)").
    c1, c2, anonymous = ("c1", "g1"), ("c2", "g2"), ("", "")
    assert column(0) == {c1: 13, c2: 2, anonymous: 5}  # requests
    assert column(1) == {c1: 1, c2: 2, anonymous: 0}  # errors (4xx and 5xx)
    assert column(2) == {c1: 1 / 13, c2: 1, anonymous: 0}  # error ratio
    assert column(4) == {c1: 1300, c2: 200, anonymous: 500}  # bytes in
    assert column(5) == {c1: 13000, c2: 2000, anonymous: 5000}  # bytes out
    end_ms = prometheus.end * 1000
    minute = 60_000
    assert column(6) == {
        c1: end_ms - 2 * minute,
        c2: end_ms - 15 * minute,
        anonymous: end_ms - 30 * minute,
    }  # last seen
    # Only the last 10 minutes: c1 grew 5 -> 8 and 2 -> 4; c2 did not grow.
    assert column(0, range_="10m") == {c1: 5, c2: 0, anonymous: 0}
    assert column(0, {"consumer": "c2"}) == {c2: 2}
    p95 = column(3)
    assert 0.01 < p95[c1] <= 0.025 and 0.25 < p95[c2] <= 0.5


def test_consumer_errors_by_route_and_status(prometheus: Prometheus) -> None:
    expr = _panel_query("ofm-consumers", "Errors by route and status in range")
    result = _by(
        _run(prometheus, expr), "http_route", "http_request_method", "http_response_status_code"
    )
    assert result == {("/orders", "POST", "500"): 1, ("/orders", "POST", "404"): 2}
    only_c2 = _by(_run(prometheus, expr, {"consumer": "c2"}), "http_response_status_code")
    assert only_c2 == {("404",): 2}


def test_endpoints_and_availability(prometheus: Prometheus) -> None:
    requests = _by(
        _run(prometheus, _panel_query("ofm-endpoints", "Endpoints")),
        "http_route",
        "http_request_method",
    )
    assert requests == {(USERS_ROUTE, "GET"): 12, ("/orders", "POST"): 3, ("/health", "GET"): 5}
    route_only = _run(
        prometheus, _panel_query("ofm-endpoints", "Endpoints"), {"route": USERS_ROUTE}
    )
    assert _by(route_only, "http_route") == {(USERS_ROUTE,): 12}
    availability = _by(
        _run(prometheus, _panel_query("ofm-uptime", "Availability in range")), "service_name"
    )
    assert availability == {("shop",): 0.95}
    status = _by(_run(prometheus, _panel_query("ofm-uptime", "Service status")), "service_name")
    assert status == {("shop",): 1}


def test_variable_queries_list_the_label_values(prometheus: Prometheus) -> None:
    def values(name: str, variables: dict[str, str] | None = None) -> set[str]:
        expr = _panel_query("ofm-overview", f"variable {name}")
        label = expr.split("(", 2)[1].split(")")[0]
        return {r["metric"][label] for r in _run(prometheus, expr, variables)}

    assert values("service") == {"shop"}
    assert values("consumer") == {"c1", "c2"}
    assert values("consumer", {"consumer_group": "g2"}) == {"c2"}
    assert values("route") == {USERS_ROUTE, "/orders", "/health"}


def test_probed_urls_from_the_recording_rules(prometheus: Prometheus) -> None:
    def column(index: int) -> dict[tuple[str, ...], float]:
        return _by(_run(prometheus, _panel_query("ofm-uptime", "Probed URLs", index)), "instance")

    health, orders, billing, search = (HEALTH_URL,), (ORDERS_URL,), (BILLING_URL,), (SEARCH_URL,)
    # The latest probes: orders and search answer 200 again, billing never answered.
    assert column(0) == {health: 1, orders: 1, billing: 0, search: 1}
    # The rules are backfilled once a minute, a little after each minute (the
    # group's evaluation offset), so minutes 0..29 are recorded, not minute
    # 30. Orders failed at 20..24; search's scrapes failed at 10..14.
    availability = {health: 1, orders: 25 / 30, billing: 0, search: 25 / 30}
    assert column(1) == pytest.approx(availability)  # in the range (1h: all of it)
    # 30 days: its last evaluation (after minute 29) reads all 30 recordings.
    assert column(2) == pytest.approx(availability)
    minute_ms = 60_000
    # Last failure, to the step: the subquery step at minute 25 still sees the
    # failure recorded just after minute 24 (at 15: after 14). None for health.
    end_ms = prometheus.end * 1000
    assert column(3) == {
        orders: end_ms - 5 * minute_ms,
        billing: end_ms,
        search: end_ms - 15 * minute_ms,
    }
    assert column(4) == {health: 200, orders: 200, billing: 0, search: 200}  # status code
    seconds = {(url,): duration for url, duration in PROBE_SECONDS.items()}
    assert column(5) == seconds
    latency = _by(_run(prometheus, _panel_query("ofm-uptime", "Probe latency")), "instance")
    assert latency == seconds
    # Recorded after minute 29, the 5-minute window holds minutes 25..29: all
    # of orders' probes succeeded.
    recent = _by(_run(prometheus, _panel_query("ofm-uptime", "Probe availability")), "instance")
    assert recent == {health: 1, orders: 1, billing: 0, search: 1}
    # At minute 25, the window recorded just after minute 24 holds minutes
    # 20..24: none of orders' probes succeeded.
    at_25 = prometheus.end - 60 * (MINUTES - 25)
    answer = prometheus.query(
        dq.substitute(_panel_query("ofm-uptime", "Probe availability"), {}, **SETTINGS), at=at_25
    )
    assert answer["status"] == "success", answer
    assert _by(answer["data"]["result"], "instance")[orders] == 0


def test_worker_health(prometheus: Prometheus) -> None:
    def workers(title: str) -> dict[tuple[str, ...], float]:
        result = _run(prometheus, _panel_query("ofm-uptime", title))
        return _by(result, "service_name", "service_instance_id")

    assert workers("Worker memory (RSS)") == {
        ("shop", instance): rss for instance, (rss, _) in WORKERS.items()
    }
    cpu = workers("Worker CPU")
    assert cpu == pytest.approx(
        {("shop", instance): per_minute / 60 for instance, (_, per_minute) in WORKERS.items()}
    )
    assert _by(_run(prometheus, _panel_query("ofm-uptime", "Worker starts")), "service_name") == {
        ("shop",): 0
    }
    # At the minute i3 began exporting, one worker started.
    starts = dq.substitute(_panel_query("ofm-uptime", "Worker starts"), {}, **SETTINGS)
    born_at = prometheus.end - 60 * (MINUTES - I3_BORN)
    answer = prometheus.query(starts, at=born_at)
    assert answer["status"] == "success", answer
    assert _by(answer["data"]["result"], "service_name") == {("shop",): 1}
