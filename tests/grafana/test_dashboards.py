"""Structural checks of the Grafana provisioning and the generated dashboards.

Grafana itself is not run here; these tests hold the dashboards to the rules a
provisioned, read-only Grafana needs (resolvable datasources, defined
variables, known metric names) and to the conventions of the generator.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml

from otel_flask_metrics.metrics import prometheus_series_names
from tests.grafana import dashboard_queries as dq

EXPECTED_UIDS = {"ofm-overview", "ofm-endpoints", "ofm-consumers", "ofm-uptime"}
FILTER_VARIABLES = ("service", "environment", "consumer", "consumer_group", "route")
# Series Prometheus makes itself rather than receiving from the Collector.
PROMETHEUS_SERIES = {"ALERTS", "ALERTS_FOR_STATE", "up"}
# Each worker's process metrics (opentelemetry-instrumentation-system-metrics):
# they have the service's labels but no route or consumer.
PROCESS_SERIES = {"process_memory_usage_bytes", "process_cpu_time_seconds_total"}
# The blackbox exporter's probes, scraped as job "uptime": one series set per
# probed URL (label instance), no service.
PROBE_SERIES = {"probe_success", "probe_duration_seconds", "probe_http_status_code"}
RECORDING_RULES = dq.REPO / "prometheus" / "recording_rules.yml"
RECORDED_SERIES = {
    rule["record"]
    for group in yaml.safe_load(RECORDING_RULES.read_text(encoding="utf-8"))["groups"]
    for rule in group["rules"]
}
# Which variables the selectors of a series must filter on (the API metrics:
# all of FILTER_VARIABLES).
SELECTOR_VARIABLES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(PROCESS_SERIES, ("service", "environment")),
    **dict.fromkeys(PROBE_SERIES | RECORDED_SERIES, ()),
}
# Grafana's global variables and data-link variables.
GRAFANA_BUILTINS = {
    "__rate_interval",
    "__range",
    "__range_s",
    "__range_ms",
    "__interval",
    "__interval_ms",
    "__all",
    "__url_time_range",
    "__value",
    "__data",
    "__field",
    "__series",
    "__dashboard",
    "__from",
    "__to",
}
# Panels without fields (nothing to give a unit to).
FIELDLESS_PANELS = {"alertlist", "text", "dashlist", "news", "logs"}
LOGS_REF = {"type": "victoriametrics-logs-datasource", "uid": "victorialogs"}

DASHBOARDS = dq.load_dashboards()


def _generator() -> ModuleType:
    path = dq.REPO / "grafana" / "generate_dashboards.py"
    spec = importlib.util.spec_from_file_location("generate_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _provisioned_datasources() -> list[dict[str, Any]]:
    path = dq.PROVISIONING_DIR / "datasources" / "datasources.yaml"
    return list(yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"])


PROVISIONED_UIDS = {ds["uid"] for ds in _provisioned_datasources()}


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(dq.iter_panels(dashboard))


by_dashboard = pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))


# ---------------------------------------------------------------------------
# Provisioning
# ---------------------------------------------------------------------------


def test_datasources_have_fixed_uids_and_prometheus_is_default() -> None:
    datasources = {ds["uid"]: ds for ds in _provisioned_datasources()}
    assert set(datasources) == {"prometheus", "jaeger", "victorialogs"}
    prometheus, jaeger = datasources["prometheus"], datasources["jaeger"]
    assert (prometheus["type"], prometheus["url"]) == ("prometheus", "http://prometheus:9090")
    assert (jaeger["type"], jaeger["url"]) == ("jaeger", "http://jaeger:16686")
    assert prometheus["isDefault"] is True
    assert not jaeger.get("isDefault", False)
    destinations = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert {"name": "trace_id", "datasourceUid": "jaeger"}.items() <= destinations[0].items()


def test_traces_and_log_lines_link_both_ways() -> None:
    """A span opens its log lines in VictoriaLogs; a log line opens its trace in Jaeger.

    trace_id is the field VictoriaLogs gives an OTLP record's trace id
    (tests/e2e/test_log_store.py finds the app's lines by it).
    """
    datasources = {ds["uid"]: ds for ds in _provisioned_datasources()}
    logs = datasources["victorialogs"]
    assert (logs["type"], logs["url"]) == (
        "victoriametrics-logs-datasource", "http://victorialogs:9428"
    )
    to_logs = datasources["jaeger"]["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "victorialogs"
    # $$ is provisioning's escape for a literal $ (Grafana expands ${...} from its env).
    assert to_logs["query"] == 'trace_id:="$${__span.traceId}"'
    (to_trace,) = logs["jsonData"]["derivedFields"]
    assert (to_trace["matcherType"], to_trace["matcherRegex"]) == ("label", "trace_id")
    assert to_trace["datasourceUid"] == "jaeger"


def test_dashboard_provider_loads_the_mounted_directory_read_only() -> None:
    path = dq.PROVISIONING_DIR / "dashboards" / "dashboards.yaml"
    (provider,) = yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "otel-flask-metrics"
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# ---------------------------------------------------------------------------
# Files and generator
# ---------------------------------------------------------------------------


def test_dashboards_parse_with_the_stable_uids() -> None:
    assert set(DASHBOARDS) == EXPECTED_UIDS
    files = sorted(dq.DASHBOARD_DIR.glob("*.json"))
    assert len(files) == len(EXPECTED_UIDS), "one file per dashboard, uids unique"


def test_committed_dashboards_equal_generator_output() -> None:
    generator = _generator()
    generated = {name: generator.render(model) for name, model in generator.dashboards().items()}
    committed = {p.name: p.read_text(encoding="utf-8") for p in dq.DASHBOARD_DIR.glob("*.json")}
    assert set(committed) == set(generated)
    stale = [name for name in generated if committed[name] != generated[name]]
    assert not stale, f"run python grafana/generate_dashboards.py; stale: {stale}"


@by_dashboard
def test_schema_version_matches_grafana_12(uid: str) -> None:
    assert DASHBOARDS[uid]["schemaVersion"] == 41


# ---------------------------------------------------------------------------
# Panels
# ---------------------------------------------------------------------------


@by_dashboard
def test_every_panel_has_title_description_and_unit(uid: str) -> None:
    for panel in _panels(DASHBOARDS[uid]):
        where = f"{uid}: panel {panel.get('title')!r}"
        assert panel.get("title"), where
        assert panel.get("description"), where
        if panel["type"] in FIELDLESS_PANELS:
            continue
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
        if panel["type"] == "heatmap":
            assert panel["options"]["yAxis"].get("unit"), f"{where} has no y-axis unit"


@by_dashboard
def test_panel_ids_are_unique_and_grid_positions_do_not_overlap(uid: str) -> None:
    panels = DASHBOARDS[uid]["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"{uid}: {panel['title']!r} overlaps another panel"
        cells |= area


@by_dashboard
def test_every_datasource_resolves_to_a_provisioned_uid(uid: str) -> None:
    dashboard = DASHBOARDS[uid]
    ds_variable = _variables(dashboard)["datasource"]
    assert ds_variable["type"] == "datasource" and ds_variable["query"] == "prometheus"
    assert ds_variable["current"]["value"] in PROVISIONED_UIDS

    def resolves(ref: dict[str, Any]) -> bool:
        return ref.get("uid") == "${datasource}" or ref.get("uid") in PROVISIONED_UIDS

    refs = [
        (f"variable {v['name']}", v["datasource"])
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]
    for panel in _panels(dashboard):
        refs.append((panel["title"], panel["datasource"]))
        refs.extend((panel["title"], t["datasource"]) for t in panel.get("targets", []))
    for where, ref in refs:
        # Log panels read the log store; every other panel the ${datasource} Prometheus.
        assert ref in ({"type": "prometheus", "uid": "${datasource}"}, LOGS_REF), where
        assert resolves(ref), where


@by_dashboard
def test_filter_variables_are_multi_value_with_all(uid: str) -> None:
    variables = _variables(DASHBOARDS[uid])
    assert set(variables) == {"datasource", *FILTER_VARIABLES}
    for name in FILTER_VARIABLES:
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["includeAll"] is True
        assert variable["allValue"] == ".*"
        assert dq.variable_query(variable).startswith("label_values(")


@by_dashboard
def test_every_referenced_variable_is_defined(uid: str) -> None:
    dashboard = DASHBOARDS[uid]
    defined = set(_variables(dashboard)) | GRAFANA_BUILTINS
    texts = [(where, expr) for where, expr in dq.iter_queries(dashboard)]
    for panel in _panels(dashboard):
        texts.append((panel["title"], panel["title"]))
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "links":
                    for link in prop["value"]:
                        texts.append((panel["title"], link["url"]))
                        query = link.get("internal", {}).get("query", {})
                        texts.extend((panel["title"], str(v)) for v in query.values())
    texts.extend((panel["title"], panel["title"]) for panel in dashboard["panels"])
    for where, text in texts:
        undefined = dq.referenced_variables(text) - defined
        assert not undefined, f"{uid} / {where}: undefined {sorted(undefined)}"


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_BRACES = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"offset", "bool", "and", "or", "unless", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    stripped = _STRING.sub('""', expr)
    stripped = _CLAUSE.sub(" ", stripped)
    stripped = _BRACES.sub(" ", stripped)
    stripped = _RANGE.sub(" ", stripped)
    stripped = re.sub(r"\$\w+", " ", stripped)
    return {name for name in _IDENT.findall(stripped) if name not in _KEYWORDS}


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (le) (rate(a_bucket{x=~"$v", y="by(z)"}[$__rate_interval] offset 5m))'
        " / on (x) group_left (y) b or vector(0) > bool 1 unless c"
        ' + label_replace(d, "t", "${1}xx", "l", "([1-5])..")'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "d"}


@by_dashboard
def test_every_metric_name_is_emitted(uid: str) -> None:
    known = (
        prometheus_series_names()
        | PROMETHEUS_SERIES
        | PROCESS_SERIES
        | PROBE_SERIES
        | RECORDED_SERIES
    )
    for where, expr in dq.iter_queries(DASHBOARDS[uid]):
        names = metric_names(expr)
        assert names, f"{uid} / {where}: no metric in {expr!r}"
        assert names <= known, f"{uid} / {where}: unknown {sorted(names - known)}"


_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\{([^}]*)\}")


@by_dashboard
def test_every_panel_selector_filters_on_every_variable(uid: str) -> None:
    label_of = {
        "service": "service_name",
        "environment": "deployment_environment_name",
        "consumer": "api_consumer_id",
        "consumer_group": "api_consumer_group",
        "route": "http_route",
    }
    for panel in _panels(DASHBOARDS[uid]):
        for target in panel.get("targets", []):
            if target["datasource"] == LOGS_REF:
                continue  # LogsQL: test_log_panels_filter_on_the_variables_log_lines_carry
            selectors = _SELECTOR.findall(target["expr"])
            # Series without filters (probes) may be selected by bare name.
            unfiltered = {
                m for m in metric_names(target["expr"]) if not SELECTOR_VARIABLES.get(m, 1)
            }
            assert selectors or unfiltered, f"{panel['title']}: no selector"
            for metric, matchers in selectors:
                required = SELECTOR_VARIABLES.get(metric, FILTER_VARIABLES)
                for var, label in label_of.items():
                    if var not in required:
                        continue
                    assert f'{label}=~"${var}"' in matchers, (
                        f"{panel['title']}: {metric} lacks ${var}"
                    )


@by_dashboard
def test_rates_and_percentiles_follow_the_conventions(uid: str) -> None:
    for panel in _panels(DASHBOARDS[uid]):
        for target in panel.get("targets", []):
            expr = _STRING.sub('""', target["expr"])
            for window in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", f"{panel['title']}: rate over {window}"
            for call in re.findall(r"histogram_quantile\(([^,]+), (\w+)", expr):
                assert call[1] == "sum", f"{panel['title']}: quantile of an unsummed histogram"
            latency_chart = panel["type"] in {"timeseries", "heatmap"}
            if latency_chart and "http_server_request_duration_seconds_bucket" in expr:
                assert target.get("exemplar") is True, f"{panel['title']}: no exemplars"


@by_dashboard
def test_drill_down_links_open_existing_dashboards(uid: str) -> None:
    link_var = {"ofm-consumers": {"consumer", "consumer_group"}, "ofm-endpoints": {"route"}}
    seen = 0
    for panel in _panels(DASHBOARDS[uid]):
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] != "links":
                    continue
                for link in prop["value"]:
                    if "internal" in link:
                        continue  # a request-log link: test_request_log_links_...
                    match = re.match(r"/d/([\w-]+)/[\w-]+\?(.*)$", link["url"])
                    assert match, link["url"]
                    target, query = match.groups()
                    assert target in DASHBOARDS
                    set_vars = set(re.findall(r"var-(\w+)=\$\{__value\.raw", query))
                    assert set_vars and set_vars <= link_var[target], link["url"]
                    assert "${__url_time_range}" in query
                    seen += 1
    if uid != "ofm-uptime":
        assert seen, f"{uid} has no drill-down links"


@by_dashboard
def test_log_panels_filter_on_the_variables_log_lines_carry(uid: str) -> None:
    """Environment and service are the streams; consumer and route fields of each line.

    A log line carries no consumer group (the distro adds the consumer id and
    the route), so the group variable does not filter log panels.
    """
    queries = dq.iter_log_queries(DASHBOARDS[uid])
    for where, expr in queries:
        assert expr.startswith(
            '_stream:{deployment.environment.name=~"$environment", service.name=~"$service"}'
        ), where
        assert 'api.consumer.id:~"^$consumer$"' in expr, where
        assert 'http.route:~"^$route$"' in expr, where
    if uid in ("ofm-consumers", "ofm-endpoints"):
        assert queries, f"{uid} has no log panel"


@by_dashboard
def test_request_log_links_search_jaeger_by_the_clicked_consumer_or_route(uid: str) -> None:
    """Every consumer and route cell opens Jaeger's search on the span attribute the distro sets."""
    jaeger_uids = {
        ds["uid"]
        for path in (dq.PROVISIONING_DIR / "datasources").glob("*.y*ml")
        for ds in yaml.safe_load(path.read_text())["datasources"]
        if ds["type"] == "jaeger"
    }
    span_attribute = {"Consumer": "api.consumer.id", "Route": "http.route"}
    seen = 0
    for panel in _panels(DASHBOARDS[uid]):
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            header = override["matcher"]["options"]
            links = [p["value"] for p in override["properties"] if p["id"] == "links"]
            if header not in span_attribute or not links:
                continue
            internal = [link["internal"] for link in links[0] if "internal" in link]
            assert len(internal) == 1, f"{panel['title']} / {header}: one request-log link"
            assert internal[0]["datasourceUid"] in jaeger_uids
            query = internal[0]["query"]
            assert query["queryType"] == "search" and query["service"] == "${service}"
            assert query["tags"] == f'{span_attribute[header]}="${{__value.raw}}"'
            seen += 1
    if uid != "ofm-uptime":
        assert seen, f"{uid} has no request-log links"


# ---------------------------------------------------------------------------
# The query helper used by the end-to-end test
# ---------------------------------------------------------------------------


def test_iter_queries_converts_label_values() -> None:
    dashboard = {
        "templating": {
            "list": [
                {"name": "ds", "type": "datasource"},
                {"name": "svc", "type": "query", "query": 'label_values(m{a=~"$x"}, service_name)'},
                {
                    "name": "r",
                    "type": "query",
                    "query": {"qryType": 1, "query": "label_values(http_route)"},
                },
                {"name": "e", "type": "query", "query": "label_values(m{}, env)"},
                {"name": "f", "type": "query", "definition": "label_values(m, env)", "query": {}},
            ]
        },
        "panels": [
            {
                "type": "row",
                "title": "r",
                "panels": [{"title": "inner", "targets": [{"expr": "sum(m)"}]}],
            },
            {"title": "outer", "targets": [{"expr": "rate(m[1m])"}, {"refId": "B"}]},
        ],
    }
    assert dq.iter_queries(dashboard) == [
        ("variable svc", 'group by (service_name) (m{a=~"$x", service_name!=""})'),
        ("variable r", 'group by (http_route) ({http_route!=""})'),
        ("variable e", 'group by (env) (m{env!=""})'),
        ("variable f", 'group by (env) (m{env!=""})'),
        ("inner", "sum(m)"),
        ("outer", "rate(m[1m])"),
    ]


def test_substitute_replaces_variables_and_builtins() -> None:
    expr = (
        'sum(rate(m{a=~"$consumer", b=~"${route}", c=~"[[service]]"}[$__rate_interval]))'
        ' [$__range:$__interval] "${1}xx" ${datasource}'
    )
    out = dq.substitute(
        expr,
        {"consumer": "acme", "route": ["/a.b", "/c"]},
        rate_interval="2m",
        range_="1h",
        interval="30s",
    )
    assert out == (
        'sum(rate(m{a=~"acme", b=~"(/a\\\\.b|/c)", c=~".*"}[2m])) [1h:30s] "${1}xx" prometheus'
    )
    with pytest.raises(KeyError):
        dq.substitute("$nope", {})


def test_every_dashboard_query_substitutes_completely() -> None:
    for dashboard in DASHBOARDS.values():
        for where, expr in dq.iter_queries(dashboard):
            out = dq.substitute(expr, {})
            assert not dq.referenced_variables(out), where
