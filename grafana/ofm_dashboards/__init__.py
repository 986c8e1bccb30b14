"""The otel-flask-metrics Grafana dashboards, as code.

``grafana/generate_dashboards.py`` writes :func:`dashboards` to
``grafana/dashboards/*.json``; the modules here are split by responsibility:

* :mod:`.promql`: metric families, the template-variable filters and the PromQL
  builders;
* :mod:`.panels`: panel builders and the drill-down links between dashboards;
* :mod:`.dashboard`: template variables, grid layout and the dashboard frame;
* one module per dashboard: :mod:`.overview`, :mod:`.endpoints`,
  :mod:`.consumers`, :mod:`.uptime`.

Conventions every panel follows (the tests in ``tests/grafana`` enforce them):

* every panel and target uses the ``${datasource}`` variable, whose default is
  the provisioned Prometheus uid ``prometheus``;
* every selector of the API metrics carries the five template-variable
  matchers (:data:`.promql.FILTERS`); a label a series lacks still matches
  ``=~".*"``;
* one series set exists per worker process (``service_instance_id``), so every
  query aggregates with ``sum``/``max``/``count`` before it is shown;
* time series use ``rate(...[$__rate_interval])``; tables and stats that speak
  of "the selected range" use :func:`.promql.range_increase` (see there for why
  not ``increase()``).

Only the standard library is used, so the generator runs anywhere.
"""

from __future__ import annotations

import json

from .consumers import consumers
from .endpoints import endpoints
from .overview import overview
from .panels import JSON
from .uptime import uptime

__all__ = ["dashboards", "render"]


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
