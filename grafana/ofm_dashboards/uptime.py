"""The uptime and alerts dashboard (``ofm-uptime``)."""

from __future__ import annotations

from .dashboard import dashboard
from .panels import JSON, Column, LabelColumn, Query, alert_list, row, stat, table, timeseries
from .promql import (
    DURATION,
    PROBE_AVAILABILITY_5M,
    PROBE_AVAILABILITY_30D,
    PROBE_DURATION,
    PROBE_STATUS_CODE,
    PROBE_SUCCESS,
    PROCESS_CPU,
    PROCESS_MEMORY,
    SERVICE,
    STATUS_5XX,
    STATUS_NOT_5XX,
    URL,
    WORKER,
    by,
    ratio_rate,
    sel,
    service_sel,
    sum_range,
    sum_range_or_zero,
    sum_rate,
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
        *probe_panels(),
        *worker_panels(),
    ]
    return dashboard(
        "ofm-uptime",
        "otel-flask-metrics / Uptime and alerts",
        "Whether each service is up and receiving traffic, availability and alerts;"
        " URL probes and the health of every worker process.",
        panels,
    )


def probe_panels() -> list[tuple[JSON, int, int]]:
    """The probed URLs: the blackbox exporter's probes (job ``uptime``), through
    the recordings of prometheus/recording_rules.yml (one series per URL, not
    per service). A failed scrape of the exporter counts as a failed probe."""
    url = by(URL)
    success = f"max by ({url}) ({PROBE_SUCCESS})"
    # The step of the subquery is the step at which the failure was recorded.
    last_failure = (
        f"max by ({url}) (max_over_time(timestamp({PROBE_SUCCESS} == 0)[$__range:$__interval]))"
        " * 1000"
    )
    return [
        (row("URL probes (blackbox exporter)"), 24, 1),
        (
            table(
                "Probed URLs",
                "Each URL the blackbox exporter probes: whether its latest probe got a 2xx"
                " answer, the share of successful probes in the selected range and in the"
                " last 30 days, when a probe last failed in the selected range, and the"
                " latest probe's status code (0: no answer) and duration. A URL that does"
                " not answer counts as failed, and so does a probe the exporter did not"
                " deliver.",
                [LabelColumn("instance", "URL")],
                [
                    Column("Up", success, "bool_yes_no"),
                    Column(
                        "Availability in range",
                        f"max by ({url}) (avg_over_time({PROBE_SUCCESS}[$__range]))",
                        "percentunit",
                        3,
                    ),
                    Column(
                        "Availability 30d",
                        f"max by ({url}) ({PROBE_AVAILABILITY_30D})",
                        "percentunit",
                        3,
                    ),
                    Column("Last failure", last_failure, "dateTimeFromNow"),
                    Column("Status code", f"max by ({url}) ({PROBE_STATUS_CODE})", "none"),
                    Column("Probe duration", f"max by ({url}) ({PROBE_DURATION})", "s"),
                ],
                sort_by="Last failure",
            ),
            24,
            8,
        ),
        (
            timeseries(
                "Probe availability",
                "Share of successful probes of each URL over the preceding 5 minutes.",
                "percentunit",
                [Query(f"max by ({url}) ({PROBE_AVAILABILITY_5M})", legend="{{instance}}")],
                max_value=1,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Probe latency",
                "How long each URL's probe took to get its answer (or to give up).",
                "s",
                [Query(f"max by ({url}) ({PROBE_DURATION})", legend="{{instance}}")],
            ),
            12,
            8,
        ),
    ]


def worker_panels() -> list[tuple[JSON, int, int]]:
    """Memory, CPU and starts of every worker process (``service_instance_id``)."""
    worker = by(WORKER)
    legend = "{{service_name}} {{service_instance_id}}"
    alive = f"group by ({worker}) ({service_sel(PROCESS_MEMORY)})"
    alive_before = f"group by ({worker}) ({service_sel(PROCESS_MEMORY)} offset $__interval)"
    starts = (
        f"count by (service_name) ({alive} unless {alive_before})"
        f" or 0 * count by (service_name) ({alive})"
    )
    return [
        (row("Workers"), 24, 1),
        (
            timeseries(
                "Worker memory (RSS)",
                "Resident memory of each worker process.",
                "bytes",
                [Query(f"max by ({worker}) ({service_sel(PROCESS_MEMORY)})", legend=legend)],
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Worker CPU",
                "CPU time each worker process used per second, all CPU modes summed"
                " (100% is one core).",
                "percentunit",
                [
                    Query(
                        f"sum by ({worker}) (rate({service_sel(PROCESS_CPU)}[$__rate_interval]))",
                        legend=legend,
                    )
                ],
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Worker starts",
                "Worker processes that began exporting (a new service_instance_id) per"
                " service and step: a restart or a re-spawned worker shows as a start.",
                "short",
                [Query(starts, legend="{{service_name}}")],
                stack=True,
            ),
            8,
            8,
        ),
    ]
