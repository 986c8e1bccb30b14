"""PromQL building blocks: metric families, filters and query builders.

Every builder returns a string; :func:`sel` puts the five template-variable
matchers (:data:`FILTERS`) on every selector of the API metrics, and
:func:`service_sel` the service's two on the worker process metrics, which have
no route or consumer. The probe series (one per URL, from the blackbox
exporter) are not filtered: a probed URL belongs to no service label.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Metric families (the authoritative list is
# otel_flask_metrics.metrics.prometheus_series_names()).
DURATION = "http_server_request_duration_seconds"
REQUEST_SIZE = "http_server_request_body_size_bytes"
RESPONSE_SIZE = "http_server_response_body_size_bytes"
ACTIVE_REQUESTS = "http_server_active_requests"

# Each worker's process metrics, from opentelemetry-instrumentation-system-metrics
# (resource labels service_name, service_instance_id, deployment_environment_name).
PROCESS_MEMORY = "process_memory_usage_bytes"  # resident set size, bytes
PROCESS_CPU = "process_cpu_time_seconds_total"  # CPU seconds, per cpu mode

# The uptime probes: the blackbox exporter, scraped by Prometheus as job
# "uptime" (label instance: the probed URL), and the recordings of
# prometheus/recording_rules.yml made from it.
PROBE_DURATION = 'probe_duration_seconds{job="uptime"}'  # seconds, up to the timeout
PROBE_STATUS_CODE = 'probe_http_status_code{job="uptime"}'  # 0 when nothing answered
PROBE_SUCCESS = "instance:probe_success:max"  # 1 when the latest probe got a 2xx
PROBE_AVAILABILITY_5M = "instance:probe_success:avg_over_time5m"
PROBE_AVAILABILITY_30D = "instance:probe_success:avg_over_time30d"

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
WORKER = ("service_name", "service_instance_id")
URL = ("instance",)  # the probed URL, on the uptime job's series


def sel(metric: str, *extra: str) -> str:
    """A selector for ``metric`` filtered on every template variable."""
    matchers = [f'{label}=~"${var}"' for label, var in FILTERS]
    matchers.extend(extra)
    return f"{metric}{{{', '.join(matchers)}}}"


def service_sel(metric: str, *extra: str) -> str:
    """A selector for ``metric`` filtered on the environment and service variables."""
    matchers = [f'{label}=~"${var}"' for label, var in FILTERS if var in ("environment", "service")]
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
