"""Prometheus alerting and recording rules for the collector's metrics.

Everything is plain Python data; ``render_rules_yaml()`` turns it into a
Prometheus rule file (``groups:``). Metric and alert names come from
``a2a_quiescence.names``; recording rule names are defined here, once, and the
dashboard imports them. What depends on the deployment (the collectors' scrape
job, the runbooks' address) is built from a ``Deployment``: ``Queries`` holds
the PromQL over its job, ``recording_rules()``, ``alerts()`` and
``rule_groups()`` take one. The upper-case names (``JOB_MATCH``,
``MESH_SETTLED``, ``ALERTS``, ...) are the default deployment's.
"""

from __future__ import annotations

from dataclasses import dataclass

from a2a_quiescence import names as n
from a2a_quiescence.dashboards.deployment import DEFAULT, Deployment

# --- the cascade series, over every collector that decides settlement ---------
# A cascade is decided by one collector: the mesh collector, or in a mesh tier
# the shard the load-balancing exporter's ring gives it to (a shard reports only
# the cascades it owns; those it holds for another owner are "moved", not open).
# So the cascade series of the scrape job are summed over its instances, never
# read per instance: a stuck cascade on one of three shards is one stuck cascade
# of the mesh. (Pod sidecars forwarding to a mesh collector or a tier hold a
# partial view of each cascade; the Helm chart's PodMonitor drops their cascade
# series, so the sums are over the deciding collectors.)


@dataclass(frozen=True)
class Queries:
    """The PromQL over one deployment's scrape job that the rules, their promtool
    cases and the dashboard share."""

    deployment: Deployment = DEFAULT

    @property
    def job_match(self) -> str:
        return f'job="{self.deployment.job}"'

    @property
    def collector_up(self) -> str:
        return f"up{{{self.job_match}}}"

    def over_collectors(self, metric: str, matchers: str = "") -> str:
        """``metric`` of the collector job, with extra ``matchers`` (``a="b"``)."""
        return f"{metric}{{{self.job_match}{', ' + matchers if matchers else ''}}}"

    def summed(self, metric: str) -> str:
        """``metric`` summed over the job's collectors."""
        return f"sum({self.over_collectors(metric)})"

    @property
    def cascades_open(self) -> str:
        return self.summed(n.M_CASCADES_OPEN)

    @property
    def cascades_stuck(self) -> str:
        return self.summed(n.M_CASCADES_STUCK)

    @property
    def cascades_awaiting(self) -> str:
        return self.summed(n.M_CASCADES_AWAITING)

    @property
    def cascades_moved(self) -> str:
        return self.summed(n.M_CASCADES_MOVED)

    @property
    def mesh_settled(self) -> str:
        """1 when every collector says settled and every collector target is scraped: a
        shard that cannot be scraped may hold open cascades (as /v1/mesh's "quiet")."""
        return f"min({self.over_collectors(n.M_MESH_SETTLED)}) * min({self.collector_up})"


# the default deployment's, for callers that want those
DEFAULT_QUERIES = Queries()
JOB_MATCH = DEFAULT_QUERIES.job_match
COLLECTOR_UP = DEFAULT_QUERIES.collector_up
over_collectors = DEFAULT_QUERIES.over_collectors
CASCADES_OPEN = DEFAULT_QUERIES.cascades_open
CASCADES_STUCK = DEFAULT_QUERIES.cascades_stuck
CASCADES_AWAITING = DEFAULT_QUERIES.cascades_awaiting
CASCADES_MOVED = DEFAULT_QUERIES.cascades_moved
MESH_SETTLED = DEFAULT_QUERIES.mesh_settled
LOST_MATCH = f'outcome="{n.VERDICT_LOST}"'


# --- recording rules (level:metric:operations) -----------------------------
R_DETECTION_LATENCY_P50 = f"mesh:{n.M_DETECTION_LATENCY}:p50_rate5m"
R_DETECTION_LATENCY_P99 = f"mesh:{n.M_DETECTION_LATENCY}:p99_rate5m"
R_PRODUCERS_IN_FLIGHT = f"{n.LABEL_AGENT}:{n.M_PRODUCERS_IN_FLIGHT}:sum"

def recording_rules(deployment: Deployment = DEFAULT) -> dict[str, str]:
    """Each recording rule's name and expression."""
    job_match = Queries(deployment).job_match
    return {
        # over every collector that decides settlement (every shard of a mesh tier)
        R_DETECTION_LATENCY_P50: (
            f"histogram_quantile(0.5, sum by (le) (rate({n.M_DETECTION_LATENCY}_bucket{{{job_match}}}[5m])))"
        ),
        R_DETECTION_LATENCY_P99: (
            f"histogram_quantile(0.99, sum by (le) (rate({n.M_DETECTION_LATENCY}_bucket{{{job_match}}}[5m])))"
        ),
        # One series per hop even when several collectors (or a restarted one)
        # report the same agent.
        R_PRODUCERS_IN_FLIGHT: f"sum by ({n.LABEL_AGENT}) ({n.M_PRODUCERS_IN_FLIGHT})",
    }


RECORDING_RULES = recording_rules()

RECORDING_GROUP = "a2a-quiescence.rules"
ALERT_GROUP = "a2a-quiescence.alerts"

# Windows of the increases the counter-based alerts look at; named in their descriptions.
DESTROYED_PENDING_WINDOW = "10m"
SETTLED_LOST_WINDOW = "10m"
PUSH_FAILED_WINDOW = "10m"


@dataclass(frozen=True)
class Alert:
    """One alerting rule. ``for_`` is Prometheus' ``for:``."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def to_rule(self, deployment: Deployment = DEFAULT) -> dict[str, object]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": deployment.runbook_url(self.name),
            },
        }


LEAKED_AT_SHUTDOWN = Alert(
    name=n.ALERT_LEAKED,
    expr=f"{n.M_SHUTDOWN_LEAKED} > 0",
    # A completed shutdown is a one-off fact: there is nothing to wait for.
    for_="0m",
    severity="warning",
    summary="An agent shut down with producers still running.",
    description=(
        "Agent {{ $labels.agent }} completed its last shutdown with "
        "{{ $value }} producer(s) still in flight; their work was abandoned "
        "and their callers may never get an answer."
    ),
)


def cascade_stuck(queries: Queries) -> Alert:
    return Alert(
        name=n.ALERT_STUCK,
        # summed over the job's collectors: every shard of a mesh tier counts only its own
        expr=f"sum by (job) ({queries.over_collectors(n.M_CASCADES_STUCK)}) > 0",
        # The collector already waited --stuck-after before calling it stuck.
        for_="0m",
        severity="warning",
        summary="A delegation cascade stopped making progress.",
        description=(
            "{{ $value }} cascade(s) are open with no progress past the "
            "collectors' --stuck-after threshold (scrape job {{ $labels.job }}, summed "
            "over its mesh collector or the shards of its mesh tier); "
            "the mesh cannot settle until they finish. Cascades whose only remaining "
            "work is tasks waiting for their user (input or auth required) are not "
            "counted as stuck."
        ),
    )


SHUTDOWN_IN_FLIGHT = Alert(
    name=n.ALERT_SHUTDOWN_IN_FLIGHT,
    expr=f"{n.M_SHUTDOWN_CASCADES_OPEN} > 0",
    for_="0m",
    severity="warning",
    summary="An agent shut down while a cascade it took part in was still open.",
    description=(
        "Agent {{ $labels.agent }} completed its last shutdown while "
        "{{ $value }} cascade(s) it took part in were still open elsewhere "
        "in the mesh."
    ),
)

CLOSE_STALLED = Alert(
    name=n.ALERT_CLOSE_STALLED,
    expr=f"{n.M_STALLED_CLOSES} > 0",
    # The in-agent watchdog already waited its threshold.
    for_="0m",
    severity="warning",
    summary="EventQueue.close(immediate=False) is hanging.",
    description=(
        "Agent {{ $labels.agent }} has {{ $value }} EventQueue close call(s) "
        "stalled past the watchdog threshold (the a2a-sdk #1101 hang); the "
        "producers waiting on them will not finish on their own."
    ),
)

DESTROYED_PENDING = Alert(
    name=n.ALERT_DESTROYED_PENDING,
    expr=(
        f"increase({n.M_DESTROYED_PENDING}[{DESTROYED_PENDING_WINDOW}]) > 0"
    ),
    for_="0m",
    severity="warning",
    summary="asyncio tasks were destroyed while still pending.",
    description=(
        "Agent {{ $labels.agent }} reported \"Task was destroyed but it is "
        f"pending!\" in the last {DESTROYED_PENDING_WINDOW}: work was dropped "
        "without finishing or being cancelled."
    ),
)

CANCELLED_AT_SHUTDOWN = Alert(
    name=n.ALERT_CANCELLED_AT_SHUTDOWN,
    # written like A2AProducerLeakedAtShutdown: one series per agent and collector
    expr=f"{n.M_SHUTDOWN_CANCELLED} > 0",
    # like a leak, a completed shutdown is a one-off fact
    for_="0m",
    severity="warning",
    summary="An agent's shutdown drain cancelled work still in progress.",
    description=(
        "Agent {{ $labels.agent }} cancelled {{ $value }} producer(s) that were "
        "still working when its last shutdown drained them with aclose(); nothing "
        "leaked, but their work was lost: the cascades they served settle as lost."
    ),
)


def settled_lost(queries: Queries) -> Alert:
    return Alert(
        name=n.ALERT_SETTLED_LOST,
        # summed over the job's collectors (each shard settles the cascades it owns)
        expr=(
            f"sum by (job) "
            f"(increase({queries.over_collectors(n.M_CASCADES_SETTLED, LOST_MATCH)}[{SETTLED_LOST_WINDOW}])) > 0"
        ),
        for_="0m",
        severity="warning",
        summary="Cascades settled with work that never got to finish.",
        description=(
            "The collectors of scrape job {{ $labels.job }} settled cascade(s) with outcome lost in "
            f"the last {SETTLED_LOST_WINDOW}: work was cancelled by a shutdown, destroyed "
            "while pending, or a push delivery or outbound call failed; their callers "
            "got no complete answer."
        ),
    )


PUSH_FAILED = Alert(
    name=n.ALERT_PUSH_FAILED,
    expr=(
        f"sum by ({n.LABEL_AGENT}) (increase({n.M_PUSH_FAILED}[{PUSH_FAILED_WINDOW}])) > 0"
    ),
    for_="0m",
    severity="warning",
    summary="Push notification deliveries are failing.",
    description=(
        "Agent {{ $labels.agent }} failed to deliver push notification(s) in the "
        f"last {PUSH_FAILED_WINDOW}; a2a-sdk logs and drops a failed delivery, so "
        "the receiving webhook never learned of those task updates."
    ),
)


def collector_down(queries: Queries) -> Alert:
    up = queries.collector_up
    return Alert(
        name=n.ALERT_COLLECTOR_DOWN,
        expr=f"{up} == 0 or absent({up})",
        for_="1m",
        severity="critical",
        summary="Prometheus cannot scrape the a2a-quiescence collector.",
        description=(
            f"Scrape job {queries.deployment.job}"
            "{{ with $labels.instance }} at {{ . }}{{ end }} is down or has no "
            "targets; leaked producers and stuck cascades go unseen while it is."
        ),
    )


COLLECTOR_REJECTING = Alert(
    name=n.ALERT_COLLECTOR_REJECTING,
    expr=(
        f"sum by (job, instance, reason) (rate({n.M_REJECTED}[5m])) > 0"
    ),
    for_="2m",
    severity="warning",
    summary="The collector is rejecting telemetry.",
    description=(
        "Collector {{ $labels.instance }} is rejecting OTLP payloads "
        "(reason {{ $labels.reason }}, {{ $value | humanize }}/s); the "
        "per-hop state and settlement answers are missing those events."
    ),
)


def alerts(deployment: Deployment = DEFAULT) -> tuple[Alert, ...]:
    """Every alerting rule, in the rule file's order; three select the deployment's job."""
    queries = Queries(deployment)
    return (
        LEAKED_AT_SHUTDOWN,
        cascade_stuck(queries),
        SHUTDOWN_IN_FLIGHT,
        CLOSE_STALLED,
        DESTROYED_PENDING,
        CANCELLED_AT_SHUTDOWN,
        settled_lost(queries),
        PUSH_FAILED,
        collector_down(queries),
        COLLECTOR_REJECTING,
    )


ALERTS = alerts()


def rule_groups(deployment: Deployment = DEFAULT) -> dict[str, object]:
    """The whole rule file as Python data."""
    return {
        "groups": [
            {
                "name": RECORDING_GROUP,
                "rules": [
                    {"record": record, "expr": expr}
                    for record, expr in recording_rules(deployment).items()
                ],
            },
            {"name": ALERT_GROUP, "rules": [alert.to_rule(deployment) for alert in alerts(deployment)]},
        ]
    }


def to_yaml(data: object) -> str:
    """YAML text for generated files: keys in written order, no line wrapping."""
    import yaml  # only the generators and tests need PyYAML

    return yaml.safe_dump(data, sort_keys=False, width=1_000_000, allow_unicode=True)


HEADER = (
    "# Generated by `python -m a2a_quiescence.dashboards.generate` from "
    "dashboards/{source}. Do not edit.\n"
)


def render_rules_yaml(deployment: Deployment = DEFAULT) -> str:
    """Text of ``generated/prometheus-rules.yaml`` (with ``DEFAULT``)."""
    return HEADER.format(source="rules.py") + to_yaml(rule_groups(deployment))
