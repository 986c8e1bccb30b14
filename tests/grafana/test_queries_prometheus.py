"""Every dashboard query, run against a real Prometheus holding known data.

A small data set shaped like what the Collector remote-writes (one series set
per worker process, counters born non-zero) is backfilled with
``promtool tsdb create-blocks-from openmetrics``; then ``prometheus`` serves it
and each substituted query is sent to ``/api/v1/query``. This catches PromQL
syntax errors (Grafana cannot run here) and checks the numbers of the key
panels exactly.
"""

from __future__ import annotations

import json
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
from stack import Service, free_port  # type: ignore[import-not-found]

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
    try:
        server.wait_ready(STARTUP_TIMEOUT)
        yield Prometheus(url, start + 60 * MINUTES)
    finally:
        server.stop()


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
