"""``promtool test rules`` cases for the generated rule file, as Python data.

Every alert has a case where it fires, with its expected labels and rendered
annotations written out in full, and a case where it must not fire. The
descriptions are spelled out here rather than derived from the templates in
``rules.py``, so the test checks what the templates really render.
``AlertCases`` writes them for the rules of one ``Deployment`` (its scrape job
and runbook addresses); ``render_rules_test_yaml()`` gives
``generated/prometheus-rules-test.yaml`` (the default deployment's) or, given
another deployment, the cases for the rules rendered with it.
"""

from __future__ import annotations

from typing import Callable

from a2a_quiescence import names as n
from a2a_quiescence.dashboards import rules
from a2a_quiescence.dashboards.deployment import DEFAULT, Deployment

RULES_FILE = "prometheus-rules.yaml"
INSTANCE = "collector-0:9464"
# A mesh tier: three shards of the same scrape job (the chart names each by its pod).
SHARDS = tuple(f"rel-a2a-quiescence-shard-{i}" for i in range(3))


def silent(alert: str, at: str) -> dict[str, object]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def case(name: str, input_series: list[dict[str, str]], *alert_tests: dict[str, object],
         expr_tests: list[dict[str, object]] | None = None) -> dict[str, object]:
    test: dict[str, object] = {"name": name, "interval": "1m", "input_series": input_series}
    if alert_tests:
        test["alert_rule_test"] = list(alert_tests)
    if expr_tests:
        test["promql_expr_test"] = expr_tests
    return test


class AlertCases:
    """The cases for the rules of one ``Deployment``: its scrape job on every series
    Prometheus scrapes from a collector, its runbook addresses in every expected alert."""

    def __init__(self, deployment: Deployment = DEFAULT) -> None:
        self.deployment = deployment
        self.job = deployment.job
        self.queries = rules.Queries(deployment)
        # Labels Prometheus attaches to every series it scrapes from the collector.
        self.target = {"job": deployment.job, "instance": INSTANCE}
        self.by_name = {alert.name: alert for alert in rules.alerts(deployment)}

    def series(self, metric: str, values: str, **labels: str) -> dict[str, str]:
        all_labels = {**self.target, **labels}
        rendered = ", ".join(f'{key}="{value}"' for key, value in sorted(all_labels.items()))
        return {"series": f"{metric}{{{rendered}}}", "values": values}

    def shard_series(self, shard: int, metric: str, values: str, **labels: str) -> dict[str, str]:
        """A series of one shard of a mesh tier."""
        return self.series(metric, values, instance=SHARDS[shard], **labels)

    def up_series(self, instance: str, values: str) -> dict[str, str]:
        return {"series": f'up{{instance="{instance}", job="{self.job}"}}', "values": values}

    def fires(self, alert: str, at: str, description: str, **labels: str) -> dict[str, object]:
        rule = self.by_name[alert]
        return {
            "eval_time": at,
            "alertname": alert,
            "exp_alerts": [
                {
                    "exp_labels": {**labels, "severity": rule.severity},
                    "exp_annotations": {
                        "summary": rule.summary,
                        "description": description,
                        "runbook_url": self.deployment.runbook_url(alert),
                    },
                }
            ],
        }

    def stuck_description(self, count: int) -> str:
        return (
            f"{count} cascade(s) are open with no progress past the collectors' --stuck-after "
            f"threshold (scrape job {self.job}, summed over its mesh collector or the shards "
            "of its mesh tier); the mesh cannot settle until they finish. Cascades whose only "
            "remaining work is tasks waiting for their user (input or auth required) are not "
            "counted as stuck."
        )

    def leaked_producer_cases(self) -> list[dict[str, object]]:
        """ALERT_LEAKED: producers still in flight when an agent's shutdown completed."""
        description = (
            "Agent billing completed its last shutdown with 2 producer(s) still in "
            "flight; their work was abandoned and their callers may never get an answer."
        )
        return [
            case(
                "leaked producers at shutdown fire at once",
                [self.series(n.M_SHUTDOWN_LEAKED, "2x5", agent="billing")],
                self.fires(n.ALERT_LEAKED, "0m", description, agent="billing", **self.target),
                self.fires(n.ALERT_LEAKED, "5m", description, agent="billing", **self.target),
            ),
            case(
                "a clean shutdown, and an agent never shut down, do not fire",
                [
                    self.series(n.M_SHUTDOWN_LEAKED, "0x5", agent="search"),
                    self.series(n.M_AGENT_UP, "1x5", agent="planner"),
                ],
                silent(n.ALERT_LEAKED, "0m"),
                silent(n.ALERT_LEAKED, "5m"),
            ),
        ]

    def stuck_cascade_cases(self) -> list[dict[str, object]]:
        """ALERT_STUCK: open cascades without progress, on one collector or summed over a tier's
        shards; and when a tier's mesh is settled (a recording rule over its shards)."""
        return [
            case(
                "a stuck cascade fires",
                [self.series(n.M_CASCADES_STUCK, "1x5"), self.series(n.M_CASCADES_OPEN, "3x5")],
                self.fires(n.ALERT_STUCK, "1m", self.stuck_description(1), job=self.job),
            ),
            case(
                "mesh tier: a stuck cascade on one of three shards fires once, for the mesh",
                [
                    self.shard_series(0, n.M_CASCADES_STUCK, "0x5"),
                    self.shard_series(1, n.M_CASCADES_STUCK, "1x5"),
                    self.shard_series(2, n.M_CASCADES_STUCK, "0x5"),
                    self.shard_series(0, n.M_CASCADES_OPEN, "2x5"),
                    self.shard_series(1, n.M_CASCADES_OPEN, "3x5"),
                    self.shard_series(2, n.M_CASCADES_OPEN, "1x5"),
                ],
                self.fires(n.ALERT_STUCK, "1m", self.stuck_description(1), job=self.job),
                expr_tests=[
                    {"expr": self.queries.cascades_open, "eval_time": "1m", "exp_samples": [{"labels": "{}", "value": 6}]},
                    {"expr": self.queries.cascades_stuck, "eval_time": "1m", "exp_samples": [{"labels": "{}", "value": 1}]},
                ],
            ),
            case(
                "mesh tier: stuck cascades on two shards are summed into one alert",
                [
                    self.shard_series(0, n.M_CASCADES_STUCK, "2x5"),
                    self.shard_series(1, n.M_CASCADES_STUCK, "0x5"),
                    self.shard_series(2, n.M_CASCADES_STUCK, "1x5"),
                ],
                self.fires(n.ALERT_STUCK, "1m", self.stuck_description(3), job=self.job),
            ),
            case(
                "mesh tier: nothing stuck on any shard, and cascades moved to another owner, do not fire",
                [
                    self.shard_series(0, n.M_CASCADES_STUCK, "0x10"),
                    self.shard_series(1, n.M_CASCADES_STUCK, "0x10"),
                    self.shard_series(2, n.M_CASCADES_STUCK, "0x10"),
                    # shard 0 still holds 4 cascades the ring now gives to shard 2, which has them open
                    self.shard_series(0, n.M_CASCADES_MOVED, "4x10"),
                    self.shard_series(0, n.M_CASCADES_OPEN, "0x10"),
                    self.shard_series(2, n.M_CASCADES_OPEN, "4x10"),
                ],
                silent(n.ALERT_STUCK, "1m"),
                silent(n.ALERT_STUCK, "10m"),
                expr_tests=[
                    {"expr": self.queries.cascades_moved, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 4}]},
                    # moved cascades are not open twice: only their owner counts them
                    {"expr": self.queries.cascades_open, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 4}]},
                ],
            ),
            case(
                "mesh tier: the mesh is settled only when every shard is, and every shard is scraped",
                [
                    # shard 1 has a cascade open during the first 3 minutes
                    self.shard_series(0, n.M_MESH_SETTLED, "1x10"),
                    self.shard_series(1, n.M_MESH_SETTLED, "0 0 0 1x7"),
                    self.shard_series(2, n.M_MESH_SETTLED, "1x10"),
                    self.up_series(SHARDS[0], "1x10"),
                    self.up_series(SHARDS[1], "1x10"),
                    # shard 2 cannot be scraped from minute 6 on (its last value goes stale)
                    self.up_series(SHARDS[2], "1 1 1 1 1 1 0x4"),
                ],
                expr_tests=[
                    {"expr": self.queries.mesh_settled, "eval_time": "1m", "exp_samples": [{"labels": "{}", "value": 0}]},
                    {"expr": self.queries.mesh_settled, "eval_time": "4m", "exp_samples": [{"labels": "{}", "value": 1}]},
                    {"expr": self.queries.mesh_settled, "eval_time": "7m", "exp_samples": [{"labels": "{}", "value": 0}]},
                ],
            ),
            case(
                "open cascades that still progress do not fire",
                [self.series(n.M_CASCADES_STUCK, "0x5"), self.series(n.M_CASCADES_OPEN, "3x5")],
                silent(n.ALERT_STUCK, "1m"),
            ),
            case(
                "cascades only awaiting their user's input do not fire, however long they wait",
                [
                    self.series(n.M_CASCADES_AWAITING, "2x10"),
                    self.series(n.M_CASCADES_OPEN, "2x10"),
                    self.series(n.M_CASCADES_STUCK, "0x10"),
                ],
                silent(n.ALERT_STUCK, "1m"),
                silent(n.ALERT_STUCK, "10m"),
            ),
        ]

    def shutdown_in_flight_cases(self) -> list[dict[str, object]]:
        """ALERT_SHUTDOWN_IN_FLIGHT: a shutdown while a cascade the agent took part in was open."""
        return [
            case(
                "a shutdown with a cascade still open fires",
                [self.series(n.M_SHUTDOWN_CASCADES_OPEN, "1x5", agent="search")],
                self.fires(n.ALERT_SHUTDOWN_IN_FLIGHT, "1m",
                      "Agent search completed its last shutdown while 1 cascade(s) it "
                      "took part in were still open elsewhere in the mesh.", agent="search", **self.target),
            ),
            case(
                "a shutdown after every cascade settled does not fire",
                [self.series(n.M_SHUTDOWN_CASCADES_OPEN, "0x5", agent="search")],
                silent(n.ALERT_SHUTDOWN_IN_FLIGHT, "1m"),
            ),
        ]

    def close_stalled_cases(self) -> list[dict[str, object]]:
        """ALERT_CLOSE_STALLED: an EventQueue close stalled past the watchdog threshold."""
        return [
            case(
                "a stalled EventQueue close fires while it lasts",
                [
                    self.series(n.M_STALLED_CLOSES, "0 1 1 0 0", agent="billing"),
                    self.series(n.M_STALLS, "0 1 1 1 1", agent="billing"),
                ],
                silent(n.ALERT_CLOSE_STALLED, "0m"),
                self.fires(n.ALERT_CLOSE_STALLED, "2m",
                      "Agent billing has 1 EventQueue close call(s) stalled past the "
                      "watchdog threshold (the a2a-sdk #1101 hang); the producers "
                      "waiting on them will not finish on their own.", agent="billing", **self.target),
                # the stall resolved: the counter remembers it, the alert does not
                silent(n.ALERT_CLOSE_STALLED, "4m"),
            ),
        ]

    def destroyed_pending_cases(self) -> list[dict[str, object]]:
        """ALERT_DESTROYED_PENDING: a task destroyed while pending."""
        return [
            case(
                "a task destroyed while pending fires, then clears after the window",
                [self.series(n.M_DESTROYED_PENDING, "0 0 1+0x20", agent="planner")],
                silent(n.ALERT_DESTROYED_PENDING, "1m"),
                self.fires(n.ALERT_DESTROYED_PENDING, "3m",
                      "Agent planner reported \"Task was destroyed but it is pending!\" "
                      f"in the last {rules.DESTROYED_PENDING_WINDOW}: work was dropped "
                      "without finishing or being cancelled.", agent="planner", **self.target),
                silent(n.ALERT_DESTROYED_PENDING, "20m"),
            ),
        ]

    def cancelled_at_shutdown_cases(self) -> list[dict[str, object]]:
        """ALERT_CANCELLED_AT_SHUTDOWN: work a shutdown drain cancelled."""
        description = (
            "Agent billing cancelled 1 producer(s) that were still working when its last "
            "shutdown drained them with aclose(); nothing leaked, but their work was lost: "
            "the cascades they served settle as lost."
        )
        return [
            case(
                "work cancelled by a shutdown drain fires at once",
                [
                    self.series(n.M_SHUTDOWN_CANCELLED, "1x5", agent="billing"),
                    # the drain left nothing behind: the leak alert has nothing to say
                    self.series(n.M_SHUTDOWN_LEAKED, "0x5", agent="billing"),
                ],
                self.fires(n.ALERT_CANCELLED_AT_SHUTDOWN, "0m", description, agent="billing", **self.target),
                self.fires(n.ALERT_CANCELLED_AT_SHUTDOWN, "5m", description, agent="billing", **self.target),
                silent(n.ALERT_LEAKED, "5m"),
            ),
            case(
                "a drain that cancelled nothing, a shutdown without a drain, and a live agent do not fire",
                [
                    self.series(n.M_SHUTDOWN_CANCELLED, "0x5", agent="search"),
                    self.series(n.M_SHUTDOWN_LEAKED, "0x5", agent="search"),
                    # no aclose(): producers leaked (A2AProducerLeakedAtShutdown), none cancelled
                    self.series(n.M_SHUTDOWN_CANCELLED, "0x5", agent="billing"),
                    self.series(n.M_SHUTDOWN_LEAKED, "2x5", agent="billing"),
                    self.series(n.M_SHUTDOWN_CANCELLED, "0x5", agent="planner"),
                    self.series(n.M_AGENT_UP, "1x5", agent="planner"),
                ],
                silent(n.ALERT_CANCELLED_AT_SHUTDOWN, "0m"),
                silent(n.ALERT_CANCELLED_AT_SHUTDOWN, "5m"),
            ),
        ]

    def settled_lost_cases(self) -> list[dict[str, object]]:
        """ALERT_SETTLED_LOST: cascades settled with lost work."""
        description = (
            f"The collectors of scrape job {self.job} settled cascade(s) with outcome lost in the "
            f"last {rules.SETTLED_LOST_WINDOW}: work was cancelled by a shutdown, destroyed while "
            "pending, or a push delivery or outbound call failed; their callers got no complete answer."
        )
        return [
            case(
                "a cascade settled with lost work fires, then clears after the window",
                [
                    self.series(n.M_CASCADES_SETTLED, "0+5x20", outcome=n.VERDICT_COMPLETED),
                    self.series(n.M_CASCADES_SETTLED, "0+1x20", outcome=n.VERDICT_FAILED),
                    self.series(n.M_CASCADES_SETTLED, "0 0 1+0x20", outcome=n.VERDICT_LOST),
                ],
                silent(n.ALERT_SETTLED_LOST, "1m"),
                self.fires(n.ALERT_SETTLED_LOST, "3m", description, job=self.job),
                silent(n.ALERT_SETTLED_LOST, "20m"),
            ),
            case(
                "mesh tier: lost work settled on one of three shards fires once, for the mesh",
                [
                    self.shard_series(0, n.M_CASCADES_SETTLED, "0+5x20", outcome=n.VERDICT_COMPLETED),
                    self.shard_series(0, n.M_CASCADES_SETTLED, "0x20", outcome=n.VERDICT_LOST),
                    self.shard_series(1, n.M_CASCADES_SETTLED, "0+4x20", outcome=n.VERDICT_COMPLETED),
                    self.shard_series(1, n.M_CASCADES_SETTLED, "0x20", outcome=n.VERDICT_LOST),
                    self.shard_series(2, n.M_CASCADES_SETTLED, "0+6x20", outcome=n.VERDICT_COMPLETED),
                    self.shard_series(2, n.M_CASCADES_SETTLED, "0 0 1+0x20", outcome=n.VERDICT_LOST),
                ],
                silent(n.ALERT_SETTLED_LOST, "1m"),
                self.fires(n.ALERT_SETTLED_LOST, "3m", description, job=self.job),
                silent(n.ALERT_SETTLED_LOST, "20m"),
            ),
            case(
                "cascades settled completed or failed do not fire",
                [
                    self.series(n.M_CASCADES_SETTLED, "0+5x20", outcome=n.VERDICT_COMPLETED),
                    # the agents reported these failures themselves: nothing was lost
                    self.series(n.M_CASCADES_SETTLED, "0+1x20", outcome=n.VERDICT_FAILED),
                    self.series(n.M_CASCADES_SETTLED, "0x20", outcome=n.VERDICT_LOST),
                ],
                silent(n.ALERT_SETTLED_LOST, "5m"),
                silent(n.ALERT_SETTLED_LOST, "20m"),
            ),
        ]

    def push_failed_cases(self) -> list[dict[str, object]]:
        """ALERT_PUSH_FAILED: push notifications that could not be delivered."""
        return [
            case(
                "failed push deliveries fire, then clear after the window",
                [self.series(n.M_PUSH_FAILED, "0 0 2+0x20", agent="planner")],
                silent(n.ALERT_PUSH_FAILED, "1m"),
                self.fires(n.ALERT_PUSH_FAILED, "3m",
                      "Agent planner failed to deliver push notification(s) in the last "
                      f"{rules.PUSH_FAILED_WINDOW}; a2a-sdk logs and drops a failed delivery, "
                      "so the receiving webhook never learned of those task updates.", agent="planner"),
                silent(n.ALERT_PUSH_FAILED, "20m"),
            ),
            case(
                "push deliveries that stopped failing before the window do not fire",
                [
                    self.series(n.M_PUSH_FAILED, "3x20", agent="planner"),
                    self.series(n.M_PUSH_FAILED, "0x20", agent="search"),
                ],
                silent(n.ALERT_PUSH_FAILED, "5m"),
                silent(n.ALERT_PUSH_FAILED, "20m"),
            ),
        ]

    def collector_down_cases(self) -> list[dict[str, object]]:
        """ALERT_COLLECTOR_DOWN: the collector's scrape failing, or no scrape of it at all."""
        down_tail = " is down or has no targets; leaked producers and stuck cascades go unseen while it is."
        return [
            case(
                "a failing scrape of the collector fires",
                [{"series": f'up{{instance="{INSTANCE}", job="{self.job}"}}', "values": "0x5"}],
                silent(n.ALERT_COLLECTOR_DOWN, "0m"),
                self.fires(n.ALERT_COLLECTOR_DOWN, "2m", f"Scrape job {self.job} at {INSTANCE}{down_tail}", **self.target),
            ),
            case(
                "a collector missing from Prometheus altogether fires",
                [{"series": 'up{instance="localhost:9090", job="prometheus"}', "values": "1x5"}],
                self.fires(n.ALERT_COLLECTOR_DOWN, "2m", f"Scrape job {self.job}{down_tail}", job=self.job),
            ),
            case(
                "a healthy collector does not fire",
                [{"series": f'up{{instance="{INSTANCE}", job="{self.job}"}}', "values": "1x5"}],
                silent(n.ALERT_COLLECTOR_DOWN, "2m"),
            ),
        ]

    def collector_rejecting_cases(self) -> list[dict[str, object]]:
        """ALERT_COLLECTOR_REJECTING: OTLP payloads the collector rejects."""
        return [
            case(
                "steady rejections fire",
                [self.series(n.M_REJECTED, "0+6x10", reason=n.REJECT_UNAUTHORIZED)],
                self.fires(n.ALERT_COLLECTOR_REJECTING, "8m",
                      f"Collector {INSTANCE} is rejecting OTLP payloads (reason "
                      f"{n.REJECT_UNAUTHORIZED}, 100m/s); the per-hop state and "
                      "settlement answers are missing those events.", reason=n.REJECT_UNAUTHORIZED, **self.target),
            ),
            case(
                "old rejections that stopped do not fire",
                [self.series(n.M_REJECTED, "5x10", reason=n.REJECT_MALFORMED)],
                silent(n.ALERT_COLLECTOR_REJECTING, "8m"),
            ),
        ]

    def recording_rule_cases(self) -> list[dict[str, object]]:
        """The detection-latency and producers-in-flight recording rules."""
        return [
            case(
                "recording rules",
                [
                    # one detection per second, all between 0.5 s and 1 s
                    self.series(f"{n.M_DETECTION_LATENCY}_bucket", "0x10", le="0.5"),
                    self.series(f"{n.M_DETECTION_LATENCY}_bucket", "0+60x10", le="1"),
                    self.series(f"{n.M_DETECTION_LATENCY}_bucket", "0+60x10", le="+Inf"),
                    self.series(n.M_PRODUCERS_IN_FLIGHT, "2x10", agent="billing"),
                    {
                        "series": (
                            f'{n.M_PRODUCERS_IN_FLIGHT}{{agent="billing", '
                            f'instance="collector-1:9464", job="{self.job}"}}'
                        ),
                        "values": "1x10",
                    },
                ],
                expr_tests=[
                    {
                        "expr": rules.R_DETECTION_LATENCY_P50,
                        "eval_time": "5m",
                        "exp_samples": [{"labels": rules.R_DETECTION_LATENCY_P50, "value": 0.75}],
                    },
                    {
                        "expr": rules.R_DETECTION_LATENCY_P99,
                        "eval_time": "5m",
                        "exp_samples": [{"labels": rules.R_DETECTION_LATENCY_P99, "value": 0.995}],
                    },
                    {
                        "expr": rules.R_PRODUCERS_IN_FLIGHT,
                        "eval_time": "5m",
                        "exp_samples": [
                            {"labels": f'{rules.R_PRODUCERS_IN_FLIGHT}{{agent="billing"}}', "value": 3}
                        ],
                    },
                ],
            ),
        ]


# the suite: one method per alert (and one for the recording rules), in this order
CASE_GROUPS: tuple[Callable[[AlertCases], list[dict[str, object]]], ...] = (
    AlertCases.leaked_producer_cases,
    AlertCases.stuck_cascade_cases,
    AlertCases.shutdown_in_flight_cases,
    AlertCases.close_stalled_cases,
    AlertCases.destroyed_pending_cases,
    AlertCases.cancelled_at_shutdown_cases,
    AlertCases.settled_lost_cases,
    AlertCases.push_failed_cases,
    AlertCases.collector_down_cases,
    AlertCases.collector_rejecting_cases,
    AlertCases.recording_rule_cases,
)


def promtool_cases(deployment: Deployment = DEFAULT) -> list[dict[str, object]]:
    """Every case of ``CASE_GROUPS``, for the rules of ``deployment``."""
    cases = AlertCases(deployment)
    return [one for group in CASE_GROUPS for one in group(cases)]


def rules_test_file(deployment: Deployment = DEFAULT) -> dict[str, object]:
    return {
        "rule_files": [RULES_FILE],
        "evaluation_interval": "1m",
        "tests": promtool_cases(deployment),
    }


def render_rules_test_yaml(deployment: Deployment = DEFAULT) -> str:
    """Text of ``generated/prometheus-rules-test.yaml`` (with ``DEFAULT``)."""
    return rules.HEADER.format(source="alert_cases.py") + rules.to_yaml(rules_test_file(deployment))
