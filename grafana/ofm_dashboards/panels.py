"""Panel builders (time series, stat, table, heatmap, alert list, row) and the
data links between dashboards.

Every panel and target reads the ``${datasource}`` variable (:data:`DATASOURCE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .promql import CONSUMER, DURATION, FILTERS, quantile_rate

JSON = dict[str, Any]

DATASOURCE: JSON = {"type": "prometheus", "uid": "${datasource}"}


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
    """A label column of a table, optionally linking to drill-downs and the request log."""

    label: str
    header: str
    links: tuple[JSON, ...] = ()


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
        if label.links:
            label_properties.append({"id": "links", "value": list(label.links)})
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


# The uid grafana/provisioning/datasources gives the VictoriaLogs datasource.
LOGS_DATASOURCE: JSON = {"type": "victoriametrics-logs-datasource", "uid": "victorialogs"}

# The app's log lines of the selected environment, service, consumer and
# route, in LogsQL. Streams are service and environment (the Collector's
# VL-Stream-Fields); consumer and route are fields of each line, matched
# anchored as PromQL's =~ is (a line outside any request has neither field,
# which "^.*$", the "All" value, matches).
REQUEST_LOG_LINES = (
    '_stream:{deployment.environment.name=~"$environment", service.name=~"$service"}'
    ' api.consumer.id:~"^$consumer$" http.route:~"^$route$"'
)


def log_lines(title: str, description: str, expr: str = REQUEST_LOG_LINES) -> JSON:
    """A logs panel over the log store, newest first, each line linking to its trace."""
    return {
        "type": "logs",
        "title": title,
        "description": description,
        "datasource": LOGS_DATASOURCE,
        "options": {
            "showTime": True,
            "wrapLogMessage": True,
            "sortOrder": "Descending",
            "enableLogDetails": True,
            "dedupStrategy": "none",
        },
        "targets": [
            {
                "datasource": LOGS_DATASOURCE,
                "editorMode": "code",
                "expr": expr,
                "queryType": "instant",
                "maxLines": 1000,
                "refId": "A",
            }
        ],
    }


def row(title: str) -> JSON:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


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


# The uid grafana/provisioning/datasources gives the Jaeger datasource.
JAEGER_UID = "jaeger"


def request_log(span_attribute: str) -> JSON:
    """A data link opening the request log in Explore: Jaeger's search for the
    selected service's traces whose ``span_attribute`` is the clicked cell.

    An internal link, so Grafana builds the Explore URL and the time range
    from the dashboard's. Jaeger searches one service at a time: with "All"
    services selected the search finds nothing until one is picked.
    """
    return {
        "title": "Request log (Jaeger)",
        "url": "",
        "internal": {
            "datasourceUid": JAEGER_UID,
            "datasourceName": "Jaeger",
            "query": {
                "refId": "A",
                "queryType": "search",
                "service": "${service}",
                # logfmt, as the Jaeger datasource's tags field takes them.
                "tags": f'{span_attribute}="${{__value.raw}}"',
                "limit": 100,
            },
        },
    }


def to_consumer() -> tuple[JSON, ...]:
    return (
        drill_down("ofm-consumers", "consumer", "Consumer drill-down"),
        request_log("api.consumer.id"),
    )


def to_route() -> tuple[JSON, ...]:
    return (
        drill_down("ofm-endpoints", "route", "Route drill-down"),
        request_log("http.route"),
    )


def to_group() -> tuple[JSON, ...]:
    return (drill_down("ofm-consumers", "consumer_group", "Consumer group view"),)
