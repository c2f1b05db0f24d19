"""The Grafana "A2A mesh" dashboard, built with grafana-foundation-sdk.

``build_dashboard()`` returns the SDK object, one row per function below,
and ``dashboard_json()`` the JSON text that is committed. The panels' pieces
are in ``panels``; ``reading`` reads a dashboard back (``promql_expressions()``
lists every PromQL query with Grafana's variables substituted, so a test
against a real Prometheus can run each panel query).
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import nodegraph, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from a2a_quiescence import names as n
from a2a_quiescence.dashboards import rules
from a2a_quiescence.dashboards.deployment import DASHBOARD_TITLE, DASHBOARD_UID, DEFAULT, Deployment
from a2a_quiescence.dashboards.panels import (
    AGENT_MATCH, GREEN_RED, NO_TIER, OUTCOME_COLORS, PROM, TRACE_BACKENDS, VAR_AGENT, VAR_PROMETHEUS, VAR_TRACES,
    agent_data_link, explore_url, fixed_color, last_value, legend_options, node_graph_queries, panel_link, prom_query,
    shutdown_gauge, thresholds, trace_query,
)
# also read from here: what reads a dashboard back
from a2a_quiescence.dashboards.reading import iter_panels, promql_expressions, substitute_variables  # noqa: F401


def _settled_by_outcome(queries: rules.Queries) -> timeseries.Panel:
    """Cascades settled per second, one line per outcome in its own colour."""
    panel = (
        timeseries.Panel()
        .title("Cascades settled by outcome")
        .description(
            "Cascades settled per second by outcome: completed (nothing failed or lost), failed (the "
            "agents reported a failure), lost (some work never got to finish: cancelled by a shutdown "
            "drain, destroyed while pending, a failed push or call). Any lost fires "
            "A2ACascadeSettledWithLostWork; GET /v1/cascades/{trace_id} lists the losses."
        )
        .with_target(prom_query(
            f"sum by (outcome) (rate({queries.over_collectors(n.M_CASCADES_SETTLED)}[$__rate_interval]))",
            "A", "{{outcome}}"))
        .unit("ops")
        .legend(legend_options())
        .span(12).height(7)
    )
    for outcome, color in OUTCOME_COLORS.items():
        panel = panel.override_by_name(outcome, fixed_color(color))
    return panel


def _row_quiescence(tb: str, queries: rules.Queries) -> tuple[str, list[Any]]:
    """The "Quiescence" row."""
    latency_p50 = rules.R_DETECTION_LATENCY_P50
    latency_p99 = rules.R_DETECTION_LATENCY_P99
    stuck_link = panel_link(tb, "Open cascades in traces")
    settled_by_outcome = _settled_by_outcome(queries)

    return (
        ("Quiescence", [
            stat.Panel()
            .title("Mesh settled")
            .description(
                "1 when no delegation cascade is open anywhere in the mesh. With several "
                "collectors (the shards of a mesh tier, each deciding the cascades it owns) the mesh "
                "is settled only when every one of them says so and every one can be scraped: a "
                "shard that cannot be asked may hold open cascades."
            )
            .with_target(prom_query(queries.mesh_settled, instant=True))
            .unit("bool_yes_no")
            .mappings([dm.ValueMap(options={
                "0": dm.ValueMappingResult(text="Not settled", color="orange"),
                "1": dm.ValueMappingResult(text="Settled", color="green"),
            })])
            .reduce_options(last_value())
            .color_mode(cm.BigValueColorMode.BACKGROUND)
            .span(3).height(6),
            stat.Panel()
            .title("Open cascades")
            .description(
                "Cascades (root trace ids) with work still in flight on some hop; includes stuck ones "
                "and those awaiting their user's input. Summed over the collectors that decide settlement "
                "(every shard of a mesh tier counts the cascades it owns)."
            )
            .with_target(prom_query(queries.cascades_open, instant=True))
            .unit("short")
            .reduce_options(last_value())
            .thresholds(thresholds((None, "green"), (1, "blue")))
            .span(3).height(6),
            stat.Panel()
            .title("Stuck cascades")
            .description(
                "Open cascades with no progress for longer than the collector's --stuck-after. Cascades "
                "only awaiting their user's input are not stuck. Anything above 0 fires A2ACascadeStuck."
            )
            .with_target(prom_query(queries.cascades_stuck, instant=True))
            .unit("short")
            .reduce_options(last_value())
            .thresholds(GREEN_RED)
            .color_mode(cm.BigValueColorMode.BACKGROUND)
            .links([stuck_link])
            .span(3).height(6),
            stat.Panel()
            .title("Cascades awaiting input")
            .description(
                "Open cascades whose only remaining work is tasks waiting for their user (a2a tasks in "
                "INPUT_REQUIRED or AUTH_REQUIRED). They are not stuck, however long the user takes, and "
                "continue when the user answers."
            )
            .with_target(prom_query(queries.cascades_awaiting, instant=True))
            .unit("short")
            .reduce_options(last_value())
            .thresholds(thresholds((None, "green"), (1, "blue")))
            .span(3).height(6),
            timeseries.Panel()
            .title("Settlement detection latency")
            .description(
                "Time from a cascade's last hop finishing to the collector declaring it settled, "
                "p50 and p99 over 5 minutes (recording rules), and the mean."
            )
            .with_target(prom_query(latency_p50, "A", "p50"))
            .with_target(prom_query(latency_p99, "B", "p99"))
            .with_target(prom_query(
                f"sum(rate({queries.over_collectors(n.M_DETECTION_LATENCY + '_sum')}[$__rate_interval]))"
                f" / sum(rate({queries.over_collectors(n.M_DETECTION_LATENCY + '_count')}[$__rate_interval]))",
                "C", "mean"))
            .unit("s")
            .legend(legend_options())
            .span(12).height(6),
            timeseries.Panel()
            .title("Cascades over time")
            .description("Open cascades, the stuck ones, and those awaiting their user's input (not stuck).")
            .with_target(prom_query(queries.cascades_open, "A", "open"))
            .with_target(prom_query(queries.cascades_stuck, "B", "stuck"))
            .with_target(prom_query(queries.cascades_awaiting, "C", "awaiting input"))
            .unit("short")
            .legend(legend_options())
            .span(12).height(7),
            settled_by_outcome,
        ])
    )


def _row_producers(tb: str) -> tuple[str, list[Any]]:
    """The "Producers" row."""
    return (
        ("Producers", [
            timeseries.Panel()
            .title("In-flight producers per hop")
            .description(
                "AgentExecutor producers running now on each hop (agent = OTEL_SERVICE_NAME). "
                "A line that never returns to 0 is a producer that never ends."
            )
            .with_target(prom_query(f"{rules.R_PRODUCERS_IN_FLIGHT}{{{AGENT_MATCH}}}", "A", "{{agent}}"))
            .unit("short")
            .legend(legend_options())
            .links([panel_link(tb, "Producer spans of $agent", n.SPAN_PRODUCER)])
            .data_links([agent_data_link(tb, n.SPAN_PRODUCER)])
            .span(12).height(8),
            timeseries.Panel()
            .title("Producers started and finished")
            .description("Producers started per second, and finished per second by outcome (completed, failed, cancelled).")
            .with_target(prom_query(
                f"sum by (agent) (rate({n.M_PRODUCERS_STARTED}{{{AGENT_MATCH}}}[$__rate_interval]))",
                "A", "{{agent}} started"))
            .with_target(prom_query(
                f"sum by (agent, outcome) (rate({n.M_PRODUCERS_FINISHED}{{{AGENT_MATCH}}}[$__rate_interval]))",
                "B", "{{agent}} {{outcome}}"))
            .unit("ops")
            .legend(legend_options())
            .span(12).height(8),
        ])
    )


def _row_shutdown(tb: str) -> tuple[str, list[Any]]:
    """The "Shutdown" row."""
    return (
        ("Shutdown", [
            shutdown_gauge(
                "Producers leaked at last shutdown",
                "Producers still in flight when each agent's last shutdown completed. 0 is a clean "
                "shutdown; agents that never shut down show 0. Above 0 fires A2AProducerLeakedAtShutdown.",
                n.M_SHUTDOWN_LEAKED, agent_data_link(tb, n.SPAN_PRODUCER),
            ),
            shutdown_gauge(
                "Producers cancelled at last shutdown",
                "Producers each agent's last shutdown drain (aclose()) cancelled while they still worked: "
                "nothing leaked, but their work was lost. 0 is a drain with nothing left to do; agents that "
                "never shut down show 0. Above 0 fires A2AWorkCancelledAtShutdown.",
                n.M_SHUTDOWN_CANCELLED, agent_data_link(tb, n.SPAN_PRODUCER),
            ),
            shutdown_gauge(
                "Cascades open at last shutdown",
                "Cascades each agent took part in that were still open elsewhere in the mesh when its "
                "last shutdown completed. Above 0 fires A2AShutdownWithCascadeInFlight.",
                n.M_SHUTDOWN_CASCADES_OPEN, agent_data_link(tb),
            ),
            timeseries.Panel()
            .title("Agents up and restarts")
            .description(
                "1 while an agent's latest incarnation is heard from and not shut down; "
                "restarts counts new incarnations in the interval."
            )
            .with_target(prom_query(f"max by (agent) ({n.M_AGENT_UP}{{{AGENT_MATCH}}})", "A", "{{agent}} up"))
            .with_target(prom_query(
                f"sum by (agent) (increase({n.M_AGENT_INCARNATIONS}{{{AGENT_MATCH}}}[$__rate_interval]))",
                "B", "{{agent}} restarts"))
            .with_target(prom_query(
                f"time() - max by (agent) ({n.M_AGENT_LAST_SEEN}{{{AGENT_MATCH}}})",
                "C", "{{agent}} seconds since last heard")).unit("short")
            .override_by_query("C", [dm.DynamicConfigValue(id_val="unit", value="s")])
            .legend(legend_options())
            .span(6).height(8),
        ])
    )


def _row_event_queues_tasks_and_push_deliveries(tb: str) -> tuple[str, list[Any]]:
    """The "Event queues, tasks and push deliveries" row."""
    return (
        ("Event queues, tasks and push deliveries", [
            timeseries.Panel()
            .title("Stalled EventQueue closes")
            .description(
                "EventQueue.close(immediate=False) / aclose calls stalled past the watchdog threshold "
                "right now: the a2a-sdk #1101 hang while it happens. Above 0 fires A2AEventQueueCloseStalled."
            )
            .with_target(prom_query(f"sum by (agent) ({n.M_STALLED_CLOSES}{{{AGENT_MATCH}}})", "A", "{{agent}} stalled now"))
            .with_target(prom_query(
                f"sum by (agent) (increase({n.M_STALLS}{{{AGENT_MATCH}}}[$__rate_interval]))",
                "B", "{{agent}} new stalls"))
            .unit("short")
            .legend(legend_options())
            .links([panel_link(tb, "Stalled close spans of $agent", n.SPAN_QUEUE_CLOSE, stalled=True)])
            .data_links([agent_data_link(tb, n.SPAN_QUEUE_CLOSE, stalled=True)])
            .span(8).height(8),
            timeseries.Panel()
            .title("Tasks destroyed while pending")
            .description(
                "asyncio tasks garbage-collected while still pending (\"Task was destroyed but it is "
                "pending!\"), per interval. Any fires A2ATaskDestroyedPending."
            )
            .with_target(prom_query(
                f"sum by (agent) (increase({n.M_DESTROYED_PENDING}{{{AGENT_MATCH}}}[$__rate_interval]))",
                "A", "{{agent}}"))
            .unit("short")
            .legend(legend_options())
            .data_links([agent_data_link(tb)])
            .span(8).height(8),
            timeseries.Panel()
            .title("Push deliveries failed")
            .description(
                "Push notification deliveries that failed, per agent and interval (refused, timed out, "
                "answered with an error). a2a-sdk logs and drops them: the webhook never gets that update, "
                "and the cascade settles lost. Any fires A2APushDeliveriesFailing."
            )
            .with_target(prom_query(
                f"sum by (agent) (increase({n.M_PUSH_FAILED}{{{AGENT_MATCH}}}[$__rate_interval]))",
                "A", "{{agent}}"))
            .unit("short")
            .legend(legend_options())
            .links([panel_link(tb, "Push delivery spans of $agent", n.SPAN_PUSH_SEND)])
            .data_links([agent_data_link(tb, n.SPAN_PUSH_SEND)])
            .span(8).height(8),
        ])
    )


def _row_mesh_topology() -> tuple[str, list[Any]]:
    """The "Mesh topology" row."""
    nodes_expr, edges_expr = node_graph_queries()
    return (
        ("Mesh topology", [
            nodegraph.Panel()
            .title("Hops and edges")
            .description(
                "Every hop (node, main stat = producers in flight) and the A2A messages sent along each "
                "edge over the dashboard's time range."
            )
            .with_target(prom_query(nodes_expr, "nodes", instant=True, table=True))
            .with_target(prom_query(edges_expr, "edges", instant=True, table=True))
            .with_transformation(dm.DataTransformerConfig(id_val="organize", options={
                "excludeByName": {"Time": True, "from": True, "to": True},
                "renameByName": {"Value #nodes": "mainstat", "Value #edges": "mainstat"},
            }))
            .unit("short")
            .nodes(nodegraph.NodeOptions().main_stat_unit("short"))
            .edges(nodegraph.EdgeOptions().main_stat_unit("short"))
            .span(24).height(10),
        ])
    )


def _row_mesh_tier(queries: rules.Queries) -> tuple[str, list[Any]]:
    """The "Mesh tier" row."""
    return (
        ("Mesh tier", [
            timeseries.Panel()
            .title("Cascades per shard")
            .description(
                "A mesh tier (shards behind the OpenTelemetry Collector's load_balancing exporter): the "
                "open cascades each shard owns, and the moved ones it still holds that the exporter's ring "
                "now gives to another shard (not counted as open or stuck there; the new owner answers for "
                "them once the agents resend). Open cascades spread evenly when the ring does; moved ones "
                "appear after a membership change and are forgotten after the retention period. A single "
                "mesh collector shows one line and no moved cascades."
            )
            .with_target(prom_query(f"sum by (instance) ({queries.over_collectors(n.M_CASCADES_OPEN)})", "A", "{{instance}} open"))
            .with_target(prom_query(f"sum by (instance) ({queries.over_collectors(n.M_CASCADES_MOVED)})", "B", "{{instance}} moved"))
            .with_target(prom_query(queries.cascades_moved, "C", "moved, all shards"))
            .unit("short")
            .legend(legend_options())
            .span(14).height(8),
            timeseries.Panel()
            .title("Ring membership")
            .description(
                "Shards in the mesh tier's ring as the collectors read it (the shards from their shard "
                "list, the pod sidecars from the headless Service's DNS): the fewest and the most any "
                "collector sees (they differ while a change propagates), and membership changes seen. "
                "After a change, cascades move to their new owner; agents resend what they hold at once and "
                "again once the new membership has held for --ring-settle. 0 shards: no mesh tier (no collector was "
                "given a shard set)."
            )
            .with_target(prom_query(f"min({queries.over_collectors(n.M_RING_SHARDS)}){NO_TIER}", "A", "shards (fewest seen)"))
            .with_target(prom_query(f"max({queries.over_collectors(n.M_RING_SHARDS)}){NO_TIER}", "B", "shards (most seen)"))
            .with_target(prom_query(
                f"max(increase({queries.over_collectors(n.M_RING_CHANGES)}[$__rate_interval])){NO_TIER}",
                "C", "membership changes"))
            .unit("short")
            .legend(legend_options())
            .span(10).height(8),
        ])
    )


def _row_collector(queries: rules.Queries) -> tuple[str, list[Any]]:
    """The "Collector" row."""
    return (
        ("Collector", [
            stat.Panel()
            .title("Collectors up")
            .description(
                f"Collector targets Prometheus scrapes successfully (job {queries.deployment.job}) out of all of them."
            )
            .with_target(prom_query(f"sum({queries.collector_up})", "A", "up", instant=True))
            .with_target(prom_query(f"count({queries.collector_up})", "B", "targets", instant=True))
            .unit("short")
            .reduce_options(last_value())
            .span(4).height(8),
            timeseries.Panel()
            .title("Telemetry received and rejected")
            .description("OTLP payloads the collector accepted per second by signal, and rejected by reason.")
            .with_target(prom_query(f"sum by (signal) (rate({n.M_RECEIVED}[$__rate_interval]))", "A", "received {{signal}}"))
            .with_target(prom_query(f"sum by (reason) (rate({n.M_REJECTED}[$__rate_interval]))", "B", "rejected {{reason}}"))
            .unit("ops")
            .legend(legend_options())
            .span(7).height(8),
            timeseries.Panel()
            .title("Forwarding, evictions and snapshots")
            .description(
                "Payloads forwarded upstream (the trace backend, the mesh tier's gateway) or dropped by "
                "reason (queue_full: the upstream did not keep up), state evicted by kind, and snapshots "
                "taken by kind, per second."
            )
            .with_target(prom_query(f"sum(rate({n.M_FORWARDED}[$__rate_interval]))", "A", "forwarded"))
            .with_target(prom_query(f"sum by (reason) (rate({n.M_DROPPED}[$__rate_interval]))", "B", "dropped {{reason}}"))
            .with_target(prom_query(f"sum by (kind) (rate({n.M_EVICTED}[$__rate_interval]))", "C", "evicted {{kind}}"))
            .with_target(prom_query(f"sum by (kind) (rate({n.M_SNAPSHOTS}[$__rate_interval]))", "D", "snapshots {{kind}}"))
            .unit("ops")
            .legend(legend_options())
            .span(7).height(8),
            timeseries.Panel()
            .title("Forward queue")
            .description(
                "Requests waiting to be forwarded upstream, per collector: a forwarding sidecar whose queue "
                "stays up is behind its agents, and settlement is late by as much."
            )
            .with_target(prom_query(f"max by (instance) ({n.M_FORWARD_WAITING})", "A", "{{instance}}"))
            .unit("short")
            .legend(legend_options())
            .span(6).height(8),
        ])
    )


# --- the dashboard ---------------------------------------------------------
def build_dashboard(trace_backend: str = "tempo", deployment: Deployment = DEFAULT) -> gd.Dashboard:
    """The "A2A mesh" dashboard; ``trace_backend`` is ``tempo`` or ``jaeger``, ``deployment``
    gives the scrape job its queries over the collectors select."""
    if trace_backend not in TRACE_BACKENDS:
        raise ValueError(f"trace_backend must be one of {TRACE_BACKENDS}")
    tb = trace_backend
    queries = rules.Queries(deployment)
    rows = [
        _row_quiescence(tb, queries), _row_producers(tb), _row_shutdown(tb), _row_event_queues_tasks_and_push_deliveries(tb),
        _row_mesh_topology(), _row_mesh_tier(queries), _row_collector(queries),
    ]
    board = (
        gd.Dashboard(DASHBOARD_TITLE)
        .uid(DASHBOARD_UID)
        .description(
            "What is in flight on every hop of the A2A mesh, what was left behind at shutdown, "
            "and whether every delegation cascade has settled."
        )
        .tags(["a2a", "a2a-quiescence"])
        .refresh("30s")
        .time("now-1h", "now")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            gd.DatasourceVariable(VAR_PROMETHEUS).label("Prometheus").type("prometheus")
            .description("Prometheus that scrapes the a2a-quiescence collectors.")
        )
        .with_variable(
            gd.DatasourceVariable(VAR_TRACES).label("Traces").type(tb)
            .description("Trace backend the collector forwards spans to; used by the trace links.")
        )
        .with_variable(
            gd.QueryVariable(VAR_AGENT).label("Agent")
            .description("Hops (OTEL_SERVICE_NAME) to show.")
            .datasource(PROM)
            .query(f"label_values({rules.R_PRODUCERS_IN_FLIGHT}, {n.LABEL_AGENT})")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .link(
            gd.DashboardLink("Traces of the selected agents")
            .url(explore_url(tb, trace_query(
                tb, f"${{{VAR_AGENT}:regex}}" if tb == "tempo" else f"${{{VAR_AGENT}}}")))
            .target_blank(True)
        )
    )
    panel_id = 0
    for row_title, row_panels in rows:
        panel_id += 1
        board = board.with_row(gd.Row(row_title).id(panel_id))
        for panel in row_panels:
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))
    return board


def dashboard_dict(trace_backend: str = "tempo", deployment: Deployment = DEFAULT) -> dict[str, Any]:
    return json.loads(JSONEncoder().encode(build_dashboard(trace_backend, deployment).build()))


def dashboard_json(trace_backend: str = "tempo", deployment: Deployment = DEFAULT) -> str:
    """Text of ``generated/a2a-mesh.json`` (Tempo, the default deployment)."""
    return json.dumps(dashboard_dict(trace_backend, deployment), indent=2, sort_keys=True) + "\n"


