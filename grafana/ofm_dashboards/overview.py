"""The API overview dashboard (``ofm-overview``)."""

from __future__ import annotations

from .dashboard import dashboard
from .panels import (
    JSON,
    Column,
    LabelColumn,
    Query,
    latency_percentiles,
    size_percentiles,
    stat,
    table,
    timeseries,
    to_consumer,
    to_group,
    to_route,
)
from .promql import (
    ACTIVE_REQUESTS,
    CONSUMER,
    DURATION,
    ENDPOINT,
    HAS_CONSUMER,
    REQUEST_SIZE,
    RESPONSE_SIZE,
    SERVICE,
    STATUS_4XX,
    STATUS_5XX,
    STATUS_ERROR,
    consumers_with_traffic,
    quantile_range,
    quantile_rate,
    rate,
    ratio_range,
    ratio_rate,
    sel,
    sum_range,
    sum_rate,
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
