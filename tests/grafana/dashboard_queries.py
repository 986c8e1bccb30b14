"""Read the provisioned dashboards and turn their queries into runnable PromQL.

Used by the structural tests here and by the end-to-end test, which runs every
query against a real Prometheus. There are no tests in this module.

Example::

    for uid, dashboard in load_dashboards().items():
        for title, expr in iter_queries(dashboard):
            promql = substitute(expr, {"consumer": "acme"})
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
PROVISIONING_DIR = REPO / "grafana" / "provisioning"

# What Grafana puts in place of a multi-value variable whose "All" is selected
# (every dashboard variable has allValue ".*"); substitute() falls back to it.
ALL = ".*"
DEFAULT_VARIABLES: dict[str, str] = {
    "service": ALL,
    "environment": ALL,
    "consumer": ALL,
    "consumer_group": ALL,
    "route": ALL,
    "datasource": "prometheus",
}

# $name, ${name}, ${name:format}, ${name.field:format}, [[name]], [[name:format]]
VARIABLE_RE = re.compile(
    r"\$\{(?P<braced>\w+)(?:\.[^:}]+)?(?::(?P<bfmt>[^}]+))?\}"
    r"|\[\[(?P<bracketed>\w+)(?::(?P<kfmt>[^\]]+))?\]\]"
    r"|\$(?P<plain>\w+)"
)
LABEL_VALUES_RE = re.compile(
    r"^\s*label_values\(\s*(?:(?P<selector>.+),\s*)?(?P<label>\w+)\s*\)\s*$", re.S
)
QUERY_RESULT_RE = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.S)
# Characters Grafana escapes in the value of a multi-value/"All" variable
# before putting it in a Prometheus regex matcher (inside a PromQL string, so
# the backslash itself is doubled).
REGEX_SPECIAL_RE = re.compile(r"([\\^$*+?.()|{}\[\]])")


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    """Every dashboard JSON file in ``directory``, keyed by dashboard uid."""
    dashboards: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        model = json.loads(path.read_text(encoding="utf-8"))
        uid = model["uid"]
        if uid in dashboards:
            raise ValueError(f"{path.name}: duplicate dashboard uid {uid!r}")
        dashboards[uid] = model
    return dashboards


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows (rows excluded)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def variable_query(variable: Mapping[str, Any]) -> str:
    """The raw query string of a query variable (old string or new object form)."""
    query = variable.get("query")
    if isinstance(query, Mapping):
        query = query.get("query")
    if not query:
        query = variable.get("definition", "")
    return str(query)


def variable_to_promql(query: str) -> str:
    """Turn a variable query into an expression /api/v1/query can run.

    ``label_values(metric{...}, label)`` becomes
    ``group by (label) (metric{..., label!=""})``: the label's values are the
    result series' only label, and series lacking it (which Grafana does not
    list) are left out.
    """
    match = LABEL_VALUES_RE.match(query)
    if match:
        label = match["label"]
        present = f'{label}!=""'
        selector = (match["selector"] or "").strip()
        if selector.endswith("}"):
            head, _, matchers = selector[:-1].partition("{")
            matchers = f"{matchers}, {present}" if matchers.strip() else present
            selector = f"{head}{{{matchers}}}"
        else:
            selector = f"{selector}{{{present}}}"
        return f"group by ({label}) ({selector})"
    match = QUERY_RESULT_RE.match(query)
    if match:
        return match["expr"].strip()
    raise ValueError(f"unsupported variable query: {query!r}")


def iter_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title or ``"variable <name>"``, PromQL) for every panel target and
    query variable of ``dashboard``, variables first."""
    queries: list[tuple[str, str]] = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            queries.append(
                (f"variable {variable['name']}", variable_to_promql(variable_query(variable)))
            )
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr") and not _is_logs(target):
                queries.append((panel["title"], target["expr"]))
    return queries


def _is_logs(target: Mapping[str, Any]) -> bool:
    return target.get("datasource", {}).get("type") == "victoriametrics-logs-datasource"


def iter_log_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, LogsQL) for every log-store target of ``dashboard``."""
    return [
        (panel["title"], target["expr"])
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if _is_logs(target)
    ]


def referenced_variables(text: str) -> set[str]:
    """Names of the template variables ``text`` refers to (``$1`` is a regex
    group of label_replace, not a variable)."""
    names = set()
    for match in VARIABLE_RE.finditer(text):
        name = match["braced"] or match["bracketed"] or match["plain"]
        if not name.isdigit():
            names.add(name)
    return names


def _format_value(value: str | list[str] | tuple[str, ...]) -> str:
    """A variable value as Grafana writes it into a Prometheus regex matcher."""
    values = [value] if isinstance(value, str) else list(value)
    escaped = [v if v == ALL else REGEX_SPECIAL_RE.sub(r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(
    expr: str,
    variables: Mapping[str, str | list[str]],
    rate_interval: str = "1m",
    range_: str = "5m",
    interval: str = "15s",
) -> str:
    """Replace template variables and Grafana built-ins in ``expr`` as Grafana would.

    :param variables: values for dashboard variables; a list means several
        selected values. Dashboard variables not given default to "All"
        (``.*``) and ``datasource`` to ``prometheus``. Values other than ``.*``
        are regex-escaped, as Grafana does for multi-value variables.
    :param rate_interval: ``$__rate_interval``.
    :param range_: ``$__range``.
    :param interval: ``$__interval``.
    :raises KeyError: for a variable that is neither given nor known.
    """
    builtins = {
        "__rate_interval": rate_interval,
        "__range": range_,
        "__interval": interval,
    }

    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["bracketed"] or match["plain"]
        if name.isdigit():
            return match.group(0)
        if name in builtins:
            return builtins[name]
        if name in variables:
            return _format_value(variables[name])
        if name in DEFAULT_VARIABLES:
            return DEFAULT_VARIABLES[name]
        raise KeyError(f"unknown template variable ${name} in {expr!r}")

    return VARIABLE_RE.sub(replace, expr)
