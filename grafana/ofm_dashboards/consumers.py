"""The consumers dashboard with its consumer drill-down (``ofm-consumers``)."""

from __future__ import annotations

from .dashboard import dashboard
from .panels import (
    JSON,
    Column,
    LabelColumn,
    Query,
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
    STATUS_ERROR,
    consumers_with_traffic,
    last_seen,
    mean_rate,
    quantile_range,
    ratio_range,
    sum_range,
    sum_range_or_zero,
    sum_rate,
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
        (
            log_lines(
                "Log lines",
                "What the app logged while serving the selected consumer(s), redacted,"
                " newest first (the log store, VictoriaLogs); open a line for its trace.",
            ),
            24,
            10,
        ),
    ]
    return dashboard(
        "ofm-consumers",
        "otel-flask-metrics / Consumers",
        "Who calls the APIs: requests, errors, latency and payload per consumer and group.",
        panels,
    )
