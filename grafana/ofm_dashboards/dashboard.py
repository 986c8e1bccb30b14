"""A dashboard around its panels: template variables, grid layout, links."""

from __future__ import annotations

from collections.abc import Sequence

from .panels import DATASOURCE, JSON
from .promql import DURATION, FILTERS

# The uid the datasource provisioning file gives Prometheus; the datasource
# variable defaults to it so a fresh Grafana shows data without any clicking.
PROMETHEUS_UID = "prometheus"

SCHEMA_VERSION = 41  # Grafana 12.2
TAG = "otel-flask-metrics"


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
