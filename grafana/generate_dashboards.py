#!/usr/bin/env python3
"""Generate the otel-flask-metrics Grafana dashboards (``grafana/dashboards/*.json``).

The JSON files Grafana provisions are build output: this module is the one
source of truth, and a test checks that the committed files equal what it
writes. Run it after every change::

    python grafana/generate_dashboards.py          # rewrite the JSON files
    python grafana/generate_dashboards.py --check  # exit 1 if they are stale

Conventions every panel follows (the tests in ``tests/grafana`` enforce them):

* every panel and target uses the ``${datasource}`` variable, whose default is
  the provisioned Prometheus uid ``prometheus``;
* every series selector carries the five template-variable matchers
  (:data:`FILTERS`); a label a series lacks still matches ``=~".*"``;
* one series set exists per worker process (``service_instance_id``), so every
  query aggregates with ``sum``/``max``/``count`` before it is shown;
* time series use ``rate(...[$__rate_interval])``; tables and stats that speak
  of "the selected range" use :func:`range_increase` (see there for why not
  ``increase()``).

Only the standard library is used, so the generator runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"

# The uid the datasource provisioning file gives Prometheus; the datasource
# variable defaults to it so a fresh Grafana shows data without any clicking.
PROMETHEUS_UID = "prometheus"
DATASOURCE: JSON = {"type": "prometheus", "uid": "${datasource}"}

SCHEMA_VERSION = 41  # Grafana 12.2
TAG = "otel-flask-metrics"

# Metric families (the authoritative list is
# otel_flask_metrics.metrics.prometheus_series_names()).
DURATION = "http_server_request_duration_seconds"
REQUEST_SIZE = "http_server_request_body_size_bytes"
RESPONSE_SIZE = "http_server_response_body_size_bytes"
ACTIVE_REQUESTS = "http_server_active_requests"

# Prometheus label -> template variable filtering it, in the order the
# variables are chained (each variable's options are narrowed by the ones
# before it).
FILTERS: tuple[tuple[str, str], ...] = (
    ("deployment_environment_name", "environment"),
    ("service_name", "service"),
    ("api_consumer_group", "consumer_group"),
    ("api_consumer_id", "consumer"),
    ("http_route", "route"),
)

STATUS_5XX = 'http_response_status_code=~"5.."'
STATUS_4XX = 'http_response_status_code=~"4.."'
STATUS_ERROR = 'http_response_status_code=~"[45].."'
STATUS_NOT_5XX = 'http_response_status_code!~"5.."'
HAS_CONSUMER = 'api_consumer_id!=""'

CONSUMER = ("api_consumer_id", "api_consumer_group")
ENDPOINT = ("http_route", "http_request_method")
SERVICE = ("service_name", "deployment_environment_name")


# --------------------------------------------------------------------------
# PromQL building blocks
# --------------------------------------------------------------------------


def sel(metric: str, *extra: str) -> str:
    """A selector for ``metric`` filtered on every template variable."""
    matchers = [f'{label}=~"${var}"' for label, var in FILTERS]
    matchers.extend(extra)
    return f"{metric}{{{', '.join(matchers)}}}"


def by(labels: Iterable[str]) -> str:
    return ", ".join(labels)


def rate(metric: str, *extra: str) -> str:
    return f"rate({sel(metric, *extra)}[$__rate_interval])"


def sum_rate(metric: str, labels: Sequence[str] = (), *extra: str) -> str:
    grouping = f" by ({by(labels)})" if labels else ""
    return f"sum{grouping} ({rate(metric, *extra)})"


def range_increase(metric: str, *extra: str) -> str:
    """Per series, how much a cumulative counter grew during ``$__range``.

    ``increase()`` is not used because it ignores a series' first sample: a
    worker that served its first requests between two exports is born with a
    non-zero value, and ``increase()`` would count none of them (and it
    extrapolates, so totals are not whole numbers). Every worker process has
    its own ``service_instance_id``, so a series never resets; its growth is
    exactly the last value in the range minus the last value before the range
    (zero when the series did not exist yet).
    """
    s = sel(metric, *extra)
    return (
        f"(last_over_time({s}[$__range])"
        f" - (last_over_time({s}[5m] offset $__range)"
        f" or 0 * last_over_time({s}[$__range])))"
    )


def sum_range(metric: str, labels: Sequence[str] = (), *extra: str) -> str:
    grouping = f" by ({by(labels)})" if labels else ""
    return f"sum{grouping} ({range_increase(metric, *extra)})"


def sum_range_or_zero(metric: str, labels: Sequence[str], *extra: str) -> str:
    """Like :func:`sum_range` but 0 (not absent) for groups that had traffic."""
    return f"({sum_range(metric, labels, *extra)} or 0 * {sum_range(metric, labels)})"


def ratio_range(metric: str, labels: Sequence[str], numerator_matcher: str) -> str:
    """Share of a group's requests in the range that match a status matcher."""
    return f"{sum_range_or_zero(metric, labels, numerator_matcher)} / {sum_range(metric, labels)}"


def ratio_rate(metric: str, labels: Sequence[str], numerator_matcher: str) -> str:
    """Share of a group's current request rate matching a status matcher."""
    if labels:
        numerator = (
            f"({sum_rate(metric, labels, numerator_matcher)} or 0 * {sum_rate(metric, labels)})"
        )
    else:
        numerator = f"({sum_rate(metric, (), numerator_matcher)} or vector(0))"
    return f"{numerator} / {sum_rate(metric, labels)}"


def quantile_rate(q: float, histogram: str, labels: Sequence[str] = ()) -> str:
    return (
        f"histogram_quantile({q}, sum by ({by(('le', *labels))}) ({rate(histogram + '_bucket')}))"
    )


def quantile_range(q: float, histogram: str, labels: Sequence[str] = ()) -> str:
    return (
        f"histogram_quantile({q}, sum by ({by(('le', *labels))})"
        f" ({range_increase(histogram + '_bucket')}))"
    )


def mean_range(histogram: str, labels: Sequence[str]) -> str:
    return f"{sum_range(histogram + '_sum', labels)} / {sum_range(histogram + '_count', labels)}"


def mean_rate(histogram: str, labels: Sequence[str] = ()) -> str:
    return f"{sum_rate(histogram + '_sum', labels)} / {sum_rate(histogram + '_count', labels)}"


def last_seen(labels: Sequence[str]) -> str:
    """Unix time in ms of the last step in the range where a request counter grew.

    Within the subquery, a series counts as "seen" at a step when its value is
    higher than one ``$__interval`` earlier, or when it did not exist one
    ``$__interval`` earlier (a worker's first export).
    """
    s = sel(DURATION + "_count")
    grew = f"({s} > {s} offset $__interval) or ({s} unless {s} offset $__interval)"
    return f"max by ({by(labels)}) (max_over_time(timestamp({grew})[$__range:$__interval])) * 1000"


def consumers_with_traffic(labels: Sequence[str] = ()) -> str:
    """How many identified consumers sent at least one request in the range."""
    inner = sum_range(DURATION + "_count", ("api_consumer_id", *labels), HAS_CONSUMER)
    grouping = f" by ({by(labels)})" if labels else ""
    tail = "" if labels else " or vector(0)"
    return f"count{grouping} ({inner} > 0){tail}"


# --------------------------------------------------------------------------
# Panels
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One panel target."""

    expr: str
    legend: str = "__auto"
    exemplar: bool = False
    instant: bool = False


@dataclass(frozen=True)
class Column:
    """A value column of a table: its query, header and unit."""

    header: str
    expr: str
    unit: str
    decimals: int | None = None


@dataclass(frozen=True)
class LabelColumn:
    """A label column of a table, optionally linking to a drill-down."""

    label: str
    header: str
    link: JSON | None = None


ANONYMOUS: JSON = {
    "type": "special",
    "options": {"match": "empty", "result": {"text": "(anonymous)", "index": 0}},
}


def _ref(i: int) -> str:
    return chr(ord("A") + i)


def _target(query: Query, i: int, fmt: str = "time_series") -> JSON:
    target: JSON = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": query.expr,
        "format": fmt,
        "instant": query.instant,
        "legendFormat": query.legend,
        "range": not query.instant,
        "refId": _ref(i),
    }
    if query.exemplar:
        target["exemplar"] = True
    return target


def _base(kind: str, title: str, description: str, unit: str) -> JSON:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
    }


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    stack: bool = False,
    max_value: float | None = None,
) -> JSON:
    panel = _base("timeseries", title, description, unit)
    defaults = panel["fieldConfig"]["defaults"]
    defaults["min"] = 0
    if max_value is not None:
        defaults["max"] = max_value
    defaults["custom"] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 15 if stack else 5,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    panel["options"] = {
        "legend": {
            "displayMode": "table",
            "placement": "bottom",
            "showLegend": True,
            "calcs": ["mean", "max", "lastNotNull"],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    panel["targets"] = [_target(q, i) for i, q in enumerate(queries)]
    return panel


def stat(
    title: str,
    description: str,
    unit: str,
    query: Query,
    *,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    mappings: Sequence[JSON] = (),
    decimals: int | None = None,
    no_value: str | None = None,
) -> JSON:
    panel = _base("stat", title, description, unit)
    defaults = panel["fieldConfig"]["defaults"]
    defaults["thresholds"] = {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in thresholds],
    }
    defaults["mappings"] = list(mappings)
    if decimals is not None:
        defaults["decimals"] = decimals
    if no_value is not None:
        defaults["noValue"] = no_value
    panel["options"] = {
        "colorMode": "value",
        "graphMode": "none" if query.instant else "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": "auto",
        "wideLayout": True,
    }
    panel["targets"] = [_target(query, 0)]
    return panel


def table(
    title: str,
    description: str,
    labels: Sequence[LabelColumn],
    columns: Sequence[Column],
    *,
    sort_by: str | None = None,
    limit: int | None = None,
) -> JSON:
    """A table of instant queries merged on their labels, one column per query."""
    panel = _base("table", title, description, "short")
    panel["fieldConfig"]["defaults"]["custom"] = {
        "align": "auto",
        "cellOptions": {"type": "auto"},
        "filterable": True,
    }
    overrides: list[JSON] = []
    rename: dict[str, str] = {}
    index: dict[str, int] = {}
    for position, label in enumerate(labels):
        rename[label.label] = label.header
        index[label.label] = position
        label_properties: list[JSON] = []
        if label.label in CONSUMER:
            # Requests without an identified consumer lack the label.
            label_properties.append({"id": "mappings", "value": [ANONYMOUS]})
        if label.link is not None:
            label_properties.append({"id": "links", "value": [label.link]})
        if label_properties:
            overrides.append(
                {
                    "matcher": {"id": "byName", "options": label.header},
                    "properties": label_properties,
                }
            )
    if len(columns) == 1:
        # A lone instant query's value column is called "Value", not "Value #A".
        rename["Value"] = columns[0].header
        index["Value"] = len(labels)
    for i, column in enumerate(columns):
        value_field = f"Value #{_ref(i)}"
        rename[value_field] = column.header
        index[value_field] = len(labels) + i
        properties: list[JSON] = [{"id": "unit", "value": column.unit}]
        if column.decimals is not None:
            properties.append({"id": "decimals", "value": column.decimals})
        overrides.append(
            {"matcher": {"id": "byName", "options": column.header}, "properties": properties}
        )
    panel["fieldConfig"]["overrides"] = overrides
    panel["options"] = {
        "cellHeight": "sm",
        "footer": {"show": False, "countRows": False, "fields": "", "reducer": ["sum"]},
        "showHeader": True,
        "sortBy": [{"desc": True, "displayName": sort_by or columns[0].header}],
    }
    panel["targets"] = [
        _target(Query(c.expr, legend="__auto", instant=True), i, fmt="table")
        for i, c in enumerate(columns)
    ]
    transformations: list[JSON] = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True},
                "indexByName": index,
                "renameByName": rename,
            },
        },
        {
            "id": "sortBy",
            "options": {
                "fields": {},
                "sort": [{"desc": True, "field": sort_by or columns[0].header}],
            },
        },
    ]
    if limit is not None:
        transformations.append({"id": "limit", "options": {"limitField": limit}})
    panel["transformations"] = transformations
    return panel


def heatmap(title: str, description: str, unit: str, expr: str) -> JSON:
    """A heatmap of a Prometheus histogram's buckets (``le`` rows)."""
    panel = _base("heatmap", title, description, "short")
    panel["options"] = {
        "calculate": False,
        "cellGap": 1,
        "color": {
            "mode": "scheme",
            "scheme": "Oranges",
            "steps": 64,
            "exponent": 0.5,
            "fill": "dark-orange",
            "reverse": False,
            "scale": "exponential",
        },
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": True},
        "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
    }
    panel["targets"] = [_target(Query(expr, legend="{{le}}", exemplar=True), 0, fmt="heatmap")]
    return panel


def alert_list(title: str, description: str) -> JSON:
    """Grafana's alert list; it shows the Prometheus rules because the
    provisioned datasource has ``manageAlerts: true``. It has no fields, so no
    unit."""
    return {
        "type": "alertlist",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "options": {
            "alertInstanceLabelFilter": "",
            "alertName": "",
            "dashboardAlerts": False,
            "datasource": "Prometheus",
            "groupBy": [],
            "groupMode": "default",
            "maxItems": 20,
            "showInstances": True,
            "sortOrder": 1,
            "stateFilter": {
                "error": True,
                "firing": True,
                "noData": True,
                "normal": False,
                "pending": True,
            },
            "viewMode": "list",
        },
    }


def row(title: str) -> JSON:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


# --------------------------------------------------------------------------
# Links between dashboards
# --------------------------------------------------------------------------


def drill_down(uid: str, variable: str, title: str) -> JSON:
    """A data link opening dashboard ``uid`` with ``var-<variable>`` set to the
    clicked cell, keeping the time range and the other variables."""
    kept = "&".join(
        f"${{{name}:queryparam}}"
        for name in ("datasource", *(v for _, v in FILTERS))
        if name != variable
    )
    return {
        "title": title,
        "url": f"/d/{uid}/{uid}?{kept}&var-{variable}=${{__value.raw:percentencode}}"
        "&${__url_time_range}",
        "targetBlank": False,
    }


def to_consumer() -> JSON:
    return drill_down("ofm-consumers", "consumer", "Consumer drill-down")


def to_route() -> JSON:
    return drill_down("ofm-endpoints", "route", "Route drill-down")


def to_group() -> JSON:
    return drill_down("ofm-consumers", "consumer_group", "Consumer group view")


# --------------------------------------------------------------------------
# Dashboards
# --------------------------------------------------------------------------


def variables() -> list[JSON]:
    """The template variables every dashboard has, chained in FILTERS order."""
    result: list[JSON] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"selected": True, "text": "Prometheus", "value": PROMETHEUS_UID},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
        }
    ]
    labels = {
        "environment": "Environment",
        "service": "Service",
        "consumer_group": "Consumer group",
        "consumer": "Consumer",
        "route": "Route",
    }
    # Which earlier variables narrow each variable's options. The route list is
    # deliberately not narrowed by consumer: a route drill-down should offer
    # every route of the service.
    chained_on = {
        "environment": (),
        "service": ("environment",),
        "consumer_group": ("environment", "service"),
        "consumer": ("environment", "service", "consumer_group"),
        "route": ("environment", "service"),
    }
    label_of = {var: label for label, var in FILTERS}
    for label, var in FILTERS:
        matchers = ", ".join(f'{label_of[v]}=~"${v}"' for v in chained_on[var])
        query = f"label_values({DURATION}_count{{{matchers}}}, {label})"
        result.append(
            {
                "name": var,
                "label": labels[var],
                "type": "query",
                "datasource": DATASOURCE,
                "definition": query,
                "query": {
                    "qryType": 1,
                    "query": query,
                    "refId": "PrometheusVariableQueryEditor-VariableQuery",
                },
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "hide": 0,
                "options": [],
                "refresh": 2,
                "regex": "",
                "skipUrlSync": False,
                "sort": 1,
            }
        )
    return result


def layout(panels: Sequence[tuple[JSON, int, int]]) -> list[JSON]:
    """Place (panel, width, height) left to right, wrapping at 24 columns."""
    placed: list[JSON] = []
    x = y = line_height = 0
    for panel_id, (panel, width, height) in enumerate(panels, start=1):
        if panel["type"] == "row":
            width, height = 24, 1
        if x + width > 24 or panel["type"] == "row":
            if x > 0:
                y += line_height
            x, line_height = 0, 0
        placed.append(
            {**panel, "id": panel_id, "gridPos": {"h": height, "w": width, "x": x, "y": y}}
        )
        x += width
        line_height = max(line_height, height)
        if panel["type"] == "row":
            y += 1
            x, line_height = 0, 0
    return placed


def dashboard(
    uid: str, title: str, description: str, panels: Sequence[tuple[JSON, int, int]]
) -> JSON:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": [TAG],
                "targetBlank": False,
                "title": "otel-flask-metrics",
                "type": "dashboards",
            }
        ],
        "panels": layout(panels),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": [TAG],
        "templating": {"list": variables()},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
    }


def latency_percentiles(title: str, description: str, labels: Sequence[str] = ()) -> JSON:
    suffix = "".join(f" {{{{{label}}}}}" for label in labels)
    return timeseries(
        title,
        description,
        "s",
        [
            Query(
                quantile_rate(q, DURATION, labels), legend=f"p{int(q * 100)}{suffix}", exemplar=True
            )
            for q in (0.5, 0.95, 0.99)
        ],
    )


def size_percentiles(title: str, description: str, histogram: str) -> JSON:
    return timeseries(
        title,
        description,
        "bytes",
        [Query(quantile_rate(q, histogram), legend=f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
    )


def overview() -> JSON:
    count = DURATION + "_count"
    status_class = (
        f'sum by (status_class) (label_replace({rate(count)}, "status_class", "${{1}}xx",'
        ' "http_response_status_code", "([1-5])..")) '
    ).strip()
    panels: list[tuple[JSON, int, int]] = [
        (
            stat(
                "Request rate",
                "Requests per second over the last $__rate_interval, all workers summed.",
                "reqps",
                Query(sum_rate(count)),
            ),
            4,
            4,
        ),
        (
            stat(
                "Requests in range",
                "Requests served during the selected time range.",
                "short",
                Query(sum_range(count), instant=True),
            ),
            4,
            4,
        ),
        (
            stat(
                "5xx ratio in range",
                "Share of requests in the selected range answered with a 5xx status.",
                "percentunit",
                Query(
                    f"({sum_range(count, (), STATUS_5XX)} or vector(0)) / {sum_range(count)}",
                    instant=True,
                ),
                thresholds=((None, "green"), (0.01, "orange"), (0.05, "red")),
                decimals=2,
            ),
            4,
            4,
        ),
        (
            stat(
                "4xx ratio in range",
                "Share of requests in the selected range answered with a 4xx status"
                " (client errors).",
                "percentunit",
                Query(
                    f"({sum_range(count, (), STATUS_4XX)} or vector(0)) / {sum_range(count)}",
                    instant=True,
                ),
                thresholds=((None, "green"), (0.1, "orange"), (0.25, "red")),
                decimals=2,
            ),
            4,
            4,
        ),
        (
            stat(
                "p95 latency",
                "95th percentile of the request duration over the last $__rate_interval.",
                "s",
                Query(quantile_rate(0.95, DURATION)),
                thresholds=((None, "green"), (0.5, "orange"), (1, "red")),
            ),
            4,
            4,
        ),
        (
            stat(
                "Active consumers",
                "Identified API consumers that sent at least one request in the selected range.",
                "short",
                Query(consumers_with_traffic(), instant=True),
            ),
            4,
            4,
        ),
        (
            timeseries(
                "Requests per second by service",
                "Request rate of each service and environment.",
                "reqps",
                [
                    Query(
                        sum_rate(count, SERVICE),
                        legend="{{service_name}} ({{deployment_environment_name}})",
                    )
                ],
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Traffic by status class",
                "Request rate split by HTTP status class (2xx, 3xx, 4xx, 5xx), stacked.",
                "reqps",
                [Query(status_class, legend="{{status_class}}")],
                stack=True,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Error ratio (5xx and 4xx)",
                "Share of requests answered with a server error (5xx) and, separately,"
                " a client error (4xx).",
                "percentunit",
                [
                    Query(ratio_rate(count, (), STATUS_5XX), legend="5xx"),
                    Query(ratio_rate(count, (), STATUS_4XX), legend="4xx"),
                ],
                max_value=1,
            ),
            12,
            8,
        ),
        (
            latency_percentiles(
                "Latency percentiles",
                "p50, p95 and p99 of the request duration from the histogram buckets; "
                "exemplars link to traces in Jaeger.",
            ),
            12,
            8,
        ),
        (
            size_percentiles(
                "Request payload size percentiles",
                "p50, p95 and p99 of request body sizes.",
                REQUEST_SIZE,
            ),
            8,
            8,
        ),
        (
            size_percentiles(
                "Response payload size percentiles",
                "p50, p95 and p99 of response body sizes, as sent.",
                RESPONSE_SIZE,
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Payload throughput",
                "Request and response body bytes per second.",
                "Bps",
                [
                    Query(sum_rate(REQUEST_SIZE + "_sum"), legend="request bytes/s"),
                    Query(sum_rate(RESPONSE_SIZE + "_sum"), legend="response bytes/s"),
                ],
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Active consumers over time",
                "Identified consumers with a non-zero request rate at each point in time.",
                "short",
                [
                    Query(
                        f"count ({sum_rate(count, ('api_consumer_id',), HAS_CONSUMER)} > 0)",
                        legend="consumers",
                    )
                ],
            ),
            8,
            8,
        ),
        (
            timeseries(
                "In-flight requests",
                "Requests being served right now (http.server.active_requests), by service.",
                "short",
                [
                    Query(
                        f"sum by (service_name) ({sel(ACTIVE_REQUESTS)})", legend="{{service_name}}"
                    )
                ],
            ),
            16,
            8,
        ),
        (
            table(
                "Top routes",
                "The 10 busiest routes in the selected range; click a route for its drill-down.",
                [
                    LabelColumn("http_route", "Route", to_route()),
                    LabelColumn("http_request_method", "Method"),
                ],
                [
                    Column("Requests", sum_range(count, ENDPOINT), "short"),
                    Column("5xx %", ratio_range(count, ENDPOINT, STATUS_5XX), "percentunit", 2),
                    Column("p95 latency", quantile_range(0.95, DURATION, ENDPOINT), "s"),
                ],
                limit=10,
            ),
            12,
            10,
        ),
        (
            table(
                "Top consumers",
                "The 10 API consumers with most requests in the selected range; "
                "click a consumer for its drill-down. Names are on the traces, not in metrics.",
                [
                    LabelColumn("api_consumer_id", "Consumer", to_consumer()),
                    LabelColumn("api_consumer_group", "Group", to_group()),
                ],
                [
                    Column("Requests", sum_range(count, CONSUMER), "short"),
                    Column("Error %", ratio_range(count, CONSUMER, STATUS_ERROR), "percentunit", 2),
                    Column("Bytes in", sum_range(REQUEST_SIZE + "_sum", CONSUMER), "bytes"),
                    Column("Bytes out", sum_range(RESPONSE_SIZE + "_sum", CONSUMER), "bytes"),
                ],
                limit=10,
            ),
            12,
            10,
        ),
    ]
    return dashboard(
        "ofm-overview",
        "otel-flask-metrics / API overview",
        "Traffic, errors, latency and payload sizes of the Flask APIs.",
        panels,
    )


def endpoints() -> JSON:
    count = DURATION + "_count"
    panels: list[tuple[JSON, int, int]] = [
        (
            table(
                "Endpoints",
                "One row per route and method over the selected range;"
                " click a route to drill down below.",
                [
                    LabelColumn("http_route", "Route", to_route()),
                    LabelColumn("http_request_method", "Method"),
                ],
                [
                    Column("Requests", sum_range(count, ENDPOINT), "short"),
                    Column("5xx %", ratio_range(count, ENDPOINT, STATUS_5XX), "percentunit", 2),
                    Column("4xx %", ratio_range(count, ENDPOINT, STATUS_4XX), "percentunit", 2),
                    Column("p50", quantile_range(0.5, DURATION, ENDPOINT), "s"),
                    Column("p95", quantile_range(0.95, DURATION, ENDPOINT), "s"),
                    Column("p99", quantile_range(0.99, DURATION, ENDPOINT), "s"),
                    Column("Mean request size", mean_range(REQUEST_SIZE, ENDPOINT), "bytes"),
                    Column(
                        "p95 request size", quantile_range(0.95, REQUEST_SIZE, ENDPOINT), "bytes"
                    ),
                    Column("Mean response size", mean_range(RESPONSE_SIZE, ENDPOINT), "bytes"),
                    Column(
                        "p95 response size", quantile_range(0.95, RESPONSE_SIZE, ENDPOINT), "bytes"
                    ),
                ],
            ),
            24,
            10,
        ),
        (row("Route drill-down: $route"), 24, 1),
        (
            timeseries(
                "Requests by status code",
                "Request rate of the selected route(s) by method and status code.",
                "reqps",
                [
                    Query(
                        sum_rate(count, ("http_request_method", "http_response_status_code")),
                        legend="{{http_request_method}} {{http_response_status_code}}",
                    )
                ],
                stack=True,
            ),
            12,
            8,
        ),
        (
            heatmap(
                "Latency heatmap",
                "Request durations of the selected route(s) per histogram bucket; "
                "exemplars link to traces.",
                "s",
                f"sum by (le) (increase({sel(DURATION + '_bucket')}[$__rate_interval]))",
            ),
            12,
            8,
        ),
        (
            latency_percentiles(
                "Latency percentiles by route",
                "p50, p95 and p99 request duration per route; exemplars link to traces.",
                ("http_route",),
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Payload sizes over time",
                "Mean and p95 request and response body sizes of the selected route(s).",
                "bytes",
                [
                    Query(mean_rate(REQUEST_SIZE), legend="mean request"),
                    Query(quantile_rate(0.95, REQUEST_SIZE), legend="p95 request"),
                    Query(mean_rate(RESPONSE_SIZE), legend="mean response"),
                    Query(quantile_rate(0.95, RESPONSE_SIZE), legend="p95 response"),
                ],
            ),
            12,
            8,
        ),
        (
            table(
                "Top consumers of the route",
                "API consumers of the selected route(s) in the selected range;"
                " click a consumer for its drill-down.",
                [
                    LabelColumn("api_consumer_id", "Consumer", to_consumer()),
                    LabelColumn("api_consumer_group", "Group", to_group()),
                ],
                [
                    Column("Requests", sum_range(count, CONSUMER), "short"),
                    Column("Error %", ratio_range(count, CONSUMER, STATUS_ERROR), "percentunit", 2),
                    Column("p95 latency", quantile_range(0.95, DURATION, CONSUMER), "s"),
                    Column("Bytes in", sum_range(REQUEST_SIZE + "_sum", CONSUMER), "bytes"),
                    Column("Bytes out", sum_range(RESPONSE_SIZE + "_sum", CONSUMER), "bytes"),
                ],
                limit=20,
            ),
            24,
            8,
        ),
    ]
    return dashboard(
        "ofm-endpoints",
        "otel-flask-metrics / Endpoints",
        "Per-route traffic, errors, latency and payload sizes, with a route drill-down.",
        panels,
    )


def consumers() -> JSON:
    count = DURATION + "_count"
    group = ("api_consumer_group",)
    panels: list[tuple[JSON, int, int]] = [
        (
            table(
                "Consumers",
                "One row per API consumer over the selected range; errors are 4xx and 5xx answers. "
                "Click a consumer to drill down below; names are on the traces, not in metrics.",
                [
                    LabelColumn("api_consumer_id", "Consumer", to_consumer()),
                    LabelColumn("api_consumer_group", "Group", to_group()),
                ],
                [
                    Column("Requests", sum_range(count, CONSUMER), "short"),
                    Column("Errors", sum_range_or_zero(count, CONSUMER, STATUS_ERROR), "short"),
                    Column("Error %", ratio_range(count, CONSUMER, STATUS_ERROR), "percentunit", 2),
                    Column("p95 latency", quantile_range(0.95, DURATION, CONSUMER), "s"),
                    Column("Bytes in", sum_range(REQUEST_SIZE + "_sum", CONSUMER), "bytes"),
                    Column("Bytes out", sum_range(RESPONSE_SIZE + "_sum", CONSUMER), "bytes"),
                    Column("Last seen", last_seen(CONSUMER), "dateTimeFromNow"),
                ],
            ),
            24,
            10,
        ),
        (row("Consumer drill-down: $consumer"), 24, 1),
        (
            timeseries(
                "Traffic by route",
                "Request rate of the selected consumer(s) per route and method.",
                "reqps",
                [Query(sum_rate(count, ENDPOINT), legend="{{http_request_method}} {{http_route}}")],
                stack=True,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Errors by route and status",
                "4xx and 5xx answers per second to the selected consumer(s).",
                "reqps",
                [
                    Query(
                        sum_rate(count, ("http_route", "http_response_status_code"), STATUS_ERROR),
                        legend="{{http_response_status_code}} {{http_route}}",
                    )
                ],
                stack=True,
            ),
            12,
            8,
        ),
        (
            table(
                "Errors by route and status in range",
                "4xx and 5xx answers to the selected consumer(s) in the selected range,"
                " per route, method and status.",
                [
                    LabelColumn("http_route", "Route", to_route()),
                    LabelColumn("http_request_method", "Method"),
                    LabelColumn("http_response_status_code", "Status"),
                ],
                [
                    Column(
                        "Errors",
                        sum_range(count, (*ENDPOINT, "http_response_status_code"), STATUS_ERROR),
                        "short",
                    )
                ],
            ),
            12,
            8,
        ),
        (
            latency_percentiles(
                "Consumer latency",
                "p50, p95 and p99 request duration seen by the selected "
                "consumer(s); exemplars link to traces.",
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Consumer payload sizes",
                "Mean request and response body sizes of the selected consumer(s).",
                "bytes",
                [
                    Query(mean_rate(REQUEST_SIZE), legend="mean request"),
                    Query(mean_rate(RESPONSE_SIZE), legend="mean response"),
                ],
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Consumer payload throughput",
                "Request and response body bytes per second of the selected consumer(s).",
                "Bps",
                [
                    Query(sum_rate(REQUEST_SIZE + "_sum"), legend="bytes in/s"),
                    Query(sum_rate(RESPONSE_SIZE + "_sum"), legend="bytes out/s"),
                ],
            ),
            12,
            8,
        ),
        (row("Consumer groups"), 24, 1),
        (
            table(
                "Consumer groups",
                "One row per consumer group over the selected range;"
                " click a group to filter the dashboard on it.",
                [LabelColumn("api_consumer_group", "Group", to_group())],
                [
                    Column("Requests", sum_range(count, group), "short"),
                    Column("Consumers", consumers_with_traffic(group), "short"),
                    Column("Error %", ratio_range(count, group, STATUS_ERROR), "percentunit", 2),
                    Column("p95 latency", quantile_range(0.95, DURATION, group), "s"),
                    Column("Bytes in", sum_range(REQUEST_SIZE + "_sum", group), "bytes"),
                    Column("Bytes out", sum_range(RESPONSE_SIZE + "_sum", group), "bytes"),
                ],
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Requests per second by consumer group",
                "Request rate of each consumer group.",
                "reqps",
                [Query(sum_rate(count, group), legend="{{api_consumer_group}}")],
                stack=True,
            ),
            12,
            8,
        ),
    ]
    return dashboard(
        "ofm-consumers",
        "otel-flask-metrics / Consumers",
        "Who calls the APIs: requests, errors, latency and payload per consumer and group.",
        panels,
    )


def uptime() -> JSON:
    count = DURATION + "_count"
    reporting = (
        f"clamp_max(count by ({by(SERVICE)}) ({sel(count)}), 1)"
        f" or 0 * count by ({by(SERVICE)}) (last_over_time({sel(count)}[$__range]))"
    )
    availability = (
        f"{sum_range_or_zero(count, SERVICE, STATUS_NOT_5XX)} / {sum_range(count, SERVICE)}"
    )
    alert_labels = "alertname, alertstate, severity, service_name, deployment_environment_name"
    panels: list[tuple[JSON, int, int]] = [
        (
            stat(
                "Service status",
                "UP while a service's workers export metrics; DOWN when a service that"
                " reported during the selected range"
                " has gone quiet for more than Prometheus' 5 minute lookback.",
                "none",
                Query(reporting, legend="{{service_name}} ({{deployment_environment_name}})"),
                thresholds=((None, "red"), (1, "green")),
                mappings=[
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": "DOWN", "color": "red", "index": 0},
                            "1": {"text": "UP", "color": "green", "index": 1},
                        },
                    }
                ],
            ),
            8,
            5,
        ),
        (
            stat(
                "Receiving traffic",
                "Current request rate per service; red when a service gets no requests.",
                "reqps",
                Query(
                    sum_rate(count, SERVICE),
                    legend="{{service_name}} ({{deployment_environment_name}})",
                ),
                thresholds=((None, "red"), (0.001, "green")),
            ),
            8,
            5,
        ),
        (
            stat(
                "Availability in range",
                "Share of requests in the selected range that were not answered with a 5xx status.",
                "percentunit",
                Query(
                    availability,
                    legend="{{service_name}} ({{deployment_environment_name}})",
                    instant=True,
                ),
                thresholds=((None, "red"), (0.99, "orange"), (0.999, "green")),
                decimals=3,
            ),
            8,
            5,
        ),
        (
            timeseries(
                "Availability over time",
                "Share of requests not answered with a 5xx status, per service.",
                "percentunit",
                [
                    Query(
                        f"1 - ({ratio_rate(count, ('service_name',), STATUS_5XX)})",
                        legend="{{service_name}}",
                    )
                ],
                max_value=1,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Reporting workers",
                "Worker processes (service_instance_id) exporting metrics, per service.",
                "short",
                [
                    Query(
                        f"count by (service_name) (group by (service_name, service_instance_id) "
                        f"({sel(count)}))",
                        legend="{{service_name}}",
                    )
                ],
            ),
            12,
            8,
        ),
        (
            alert_list(
                "Alert list",
                "Firing and pending alert rules from prometheus/alerts.yml, "
                "as Grafana reads them from Prometheus.",
            ),
            12,
            9,
        ),
        (
            table(
                "Active alerts (ALERTS)",
                "Firing and pending alerts as Prometheus records them in the ALERTS series.",
                [
                    LabelColumn("alertname", "Alert"),
                    LabelColumn("alertstate", "State"),
                    LabelColumn("severity", "Severity"),
                    LabelColumn("service_name", "Service"),
                    LabelColumn("deployment_environment_name", "Environment"),
                ],
                [
                    Column("Active", f"max by ({alert_labels}) ({sel('ALERTS')})", "short"),
                    Column(
                        "Active for",
                        f"max by ({alert_labels}) (time() - {sel('ALERTS_FOR_STATE')})",
                        "s",
                    ),
                ],
                sort_by="Active for",
            ),
            12,
            9,
        ),
        (
            timeseries(
                "Alerts over time",
                "Number of firing and pending alerts over time, per alert.",
                "short",
                [
                    Query(
                        f"sum by (alertname, alertstate) ({sel('ALERTS')})",
                        legend="{{alertname}} {{alertstate}}",
                    )
                ],
                stack=True,
            ),
            24,
            8,
        ),
    ]
    return dashboard(
        "ofm-uptime",
        "otel-flask-metrics / Uptime and alerts",
        "Whether each service is up and receiving traffic, availability and alerts.",
        panels,
    )


def dashboards() -> dict[str, JSON]:
    """File name -> dashboard JSON model."""
    return {
        "overview.json": overview(),
        "endpoints.json": endpoints(),
        "consumers.json": consumers(),
        "uptime.json": uptime(),
    }


def render(model: JSON) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    for name, model in dashboards().items():
        path = args.out / name
        text = render(model)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale dashboards (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
