"""The endpoints dashboard with its route drill-down (``ofm-endpoints``)."""

from __future__ import annotations

from .dashboard import dashboard
from .panels import (
    JSON,
    Column,
    LabelColumn,
    Query,
    heatmap,
    latency_percentiles,
    log_lines,
    row,
    table,
    timeseries,
    to_consumer,
    to_group,
    to_route,
)
from .promql import (
    CONSUMER,
    DURATION,
    ENDPOINT,
    REQUEST_SIZE,
    RESPONSE_SIZE,
    STATUS_4XX,
    STATUS_5XX,
    STATUS_ERROR,
    mean_range,
    mean_rate,
    quantile_range,
    quantile_rate,
    ratio_range,
    sel,
    sum_range,
    sum_rate,
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
        (
            log_lines(
                "Log lines",
                "What the app logged while serving the selected route(s), redacted,"
                " newest first (the log store, VictoriaLogs); open a line for its trace.",
            ),
            24,
            10,
        ),
    ]
    return dashboard(
        "ofm-endpoints",
        "otel-flask-metrics / Endpoints",
        "Per-route traffic, errors, latency and payload sizes, with a route drill-down.",
        panels,
    )
