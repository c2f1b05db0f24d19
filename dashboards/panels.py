"""The pieces the "A2A mesh" dashboard is built from (dashboards/dashboard.py):
its variables, query and threshold helpers, trace-backend links, and the
node-graph queries."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from grafana_foundation_sdk.builders import bargauge, common
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from a2a_quiescence import names as n
from a2a_quiescence.dashboards import rules

# --- dashboard variables ---------------------------------------------------
VAR_PROMETHEUS = "datasource"
VAR_TRACES = "traces"
VAR_AGENT = "agent"
TRACE_BACKENDS = ("tempo", "jaeger")

PROM = dm.DataSourceRef(type_val="prometheus", uid=f"${{{VAR_PROMETHEUS}}}")
AGENT_MATCH = f'{n.LABEL_AGENT}=~"${VAR_AGENT}"'
# Grafana's own variables, with the values promql_expressions() puts in.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
}


def prom_query(expr: str, ref: str = "A", legend: str | None = None, *, instant: bool = False,
       table: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(PROM)
    if legend is not None:
        query = query.legend_format(legend)
    if instant:
        query = query.instant()
    if table:
        query = query.format(PromQueryFormat.TABLE)
    return query


def thresholds(*steps: tuple[float | None, str]) -> gd.ThresholdsConfig:
    return (
        gd.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for value, color in steps])
    )


GREEN_RED = thresholds((None, "green"), (1, "red"))
# the ring series exist only where collectors were given a shard set: 0 elsewhere
NO_TIER = " or on() vector(0)"
# how each settled outcome is drawn (names.VERDICTS)
OUTCOME_COLORS = {n.VERDICT_COMPLETED: "green", n.VERDICT_FAILED: "orange", n.VERDICT_LOST: "red"}


def fixed_color(color: str) -> list[dm.DynamicConfigValue]:
    return [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})]


def last_value() -> common.ReduceDataOptions:
    return common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def legend_options() -> common.VizLegendOptions:
    return (
        common.VizLegendOptions()
        .display_mode(cm.LegendDisplayMode.TABLE)
        .placement(cm.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
    )


# --- trace links -----------------------------------------------------------
def trace_query(backend: str, service: str, span: str | None = None,
                 stalled: bool = False) -> dict[str, object]:
    """One Explore query for the trace backend (Tempo TraceQL or Jaeger search)."""
    if backend == "tempo":
        conditions = [f'resource.service.name=~"{service}"']
        if span:
            conditions.append(f'name="{span}"')
        if stalled:
            conditions.append(f"span.{n.ATTR_STALLED}=true")
        return {"queryType": "traceql", "query": "{" + " && ".join(conditions) + "}"}
    query: dict[str, object] = {"queryType": "search", "service": service}
    if span:
        query["operation"] = span
    if stalled:
        query["tags"] = f"{n.ATTR_STALLED}=true"
    return query


def explore_url(backend: str, query: dict[str, object]) -> str:
    """Grafana Explore link running ``query`` on the ``$traces`` datasource."""
    ref = {"type": backend, "uid": f"${{{VAR_TRACES}}}"}
    pane = {
        "datasource": f"${{{VAR_TRACES}}}",
        "queries": [{"refId": "A", "datasource": ref, **query}],
        "range": {"from": "${__from}", "to": "${__to}"},
    }
    encoded = quote(json.dumps({"traces": pane}, separators=(",", ":")), safe="")
    # Grafana must still see its ${...} placeholders to interpolate them.
    encoded = re.sub(
        r"%24%7B([A-Za-z0-9_.]+(?:%3A[a-z]+)?)%7D",
        lambda m: "${" + m.group(1).replace("%3A", ":") + "}",
        encoded,
    )
    return f"/explore?schemaVersion=1&panes={encoded}"


def panel_link(backend: str, title: str, span: str | None = None,
                stalled: bool = False) -> gd.DashboardLink:
    service = f"${{{VAR_AGENT}:regex}}" if backend == "tempo" else f"${{{VAR_AGENT}}}"
    return (
        gd.DashboardLink(title)
        .url(explore_url(backend, trace_query(backend, service, span, stalled)))
        .target_blank(True)
        .tooltip("Opens the matching traces in Explore on the $traces datasource")
    )


def agent_data_link(backend: str, span: str | None = None,
                     stalled: bool = False) -> gd.DashboardLink:
    service = "${__field.labels.agent}"
    return (
        gd.DashboardLink("Traces of ${__field.labels.agent}")
        .url(explore_url(backend, trace_query(backend, service, span, stalled)))
        .target_blank(True)
    )


def shutdown_gauge(title: str, description: str, metric: str, link: gd.DashboardLink) -> bargauge.Panel:
    """A per-agent bar gauge of a value the agent's last shutdown left behind (red above 0)."""
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .with_target(prom_query(f"max by (agent) ({metric}{{{AGENT_MATCH}}})", "A", "{{agent}}", instant=True))
        .unit("short")
        .thresholds(GREEN_RED)
        .reduce_options(last_value())
        .orientation(cm.VizOrientation.HORIZONTAL)
        .data_links([link])
        .span(6).height(8)
    )


# --- node graph ------------------------------------------------------------
def _edge_increase() -> str:
    return f"increase({n.M_EDGE_MESSAGES}[$__range])"


def node_graph_queries() -> tuple[str, str]:
    """(nodes, edges) PromQL shaped for Grafana's node graph (id/source/target)."""
    edges = _edge_increase()
    endpoint = 'label_replace(sum by ({side}) ({edges}), "id", "$1", "{side}", "(.+)")'
    nodes = (
        f'sum by (id) (label_replace({rules.R_PRODUCERS_IN_FLIGHT}, "id", "$1", "{n.LABEL_AGENT}", "(.+)"))'
        # hops that only appear on an edge (no in-flight gauge, e.g. a plain client)
        f" or sum by (id) (0 * {endpoint.format(side='from', edges=edges)})"
        f" or sum by (id) (0 * {endpoint.format(side='to', edges=edges)})"
    )
    edge_query = (
        'label_join(label_replace(label_replace('
        f"sum by (from, to) ({edges}), "
        '"source", "$1", "from", "(.+)"), "target", "$1", "to", "(.+)"), '
        '"id", "->", "from", "to")'
    )
    return nodes, edge_query


