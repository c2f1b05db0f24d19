"""End to end: real agents -> real collector -> real Prometheus -> real Alertmanager.

One module-scoped stack: the collector (short --stuck-after / --agent-timeout),
Prometheus scraping it with the generated rule file (1 s scrape and
evaluation), Alertmanager routing every alert to a webhook receiver that runs
in this process, and two instrumented agents started the way users start
them (``opentelemetry-instrument python -m a2a_quiescence.demo.mesh``):

* ``clean`` -- default agent; it delegates to ``leaky`` and shuts down with
  ``handler.aclose()``: no A2AProducerLeakedAtShutdown may be sent for it;
* ``leaky`` -- started with ``--no-aclose`` and given a plan that hangs, then
  SIGTERMed: A2AProducerLeakedAtShutdown must arrive for it;
* ``drained`` -- default agent (its lifespan calls ``handler.aclose()``),
  SIGTERMed while it works on a root request: the drain cancels that work, so
  A2AWorkCancelledAtShutdown must arrive for it and, the cascade settling
  ``lost``, A2ACascadeSettledWithLostWork -- while its drain leaks nothing.

(``clean`` shuts down while that hanging cascade is still open on ``leaky``,
so A2AShutdownWithCascadeInFlight does fire for it -- a different alert. Its
clean shutdown cancels nothing and loses nothing: neither
A2AWorkCancelledAtShutdown nor A2ACascadeSettledWithLostWork may be sent then.)

The hanging cascade also makes no progress past --stuck-after, which must
fire A2ACascadeStuck; and every PromQL expression of the generated dashboard
must return data from this Prometheus once the mesh has run.

Nothing waits on a sleep: every step polls a readiness or a state with a
deadline. Every process started here is stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from datetime import datetime
from typing import Any, Callable, Iterator

import httpx
import pytest
from conftest import need_tool
from support import TIMED_OUT_AFTER_LAST, wait_until

from a2a_quiescence import names
from a2a_quiescence.dashboards import rules
from a2a_quiescence.dashboards.dashboard import promql_expressions
from a2a_quiescence.dashboards.deployment import COLLECTOR_JOB
from a2a_quiescence.dashboards.generate import DASHBOARD_NAME, GENERATED
from a2a_quiescence.demo.harness import Mesh, wait_http
from a2a_quiescence.demo.monitoring import ALERTMANAGER, PROMETHEUS, Monitoring, Prom, Receiver
from a2a_quiescence.demo.mesh import new_trace_id, send_plan

pytestmark = [pytest.mark.external, pytest.mark.timeout(180)]

CLEAN = "clean"
LEAKY = "leaky"
DRAINED = "drained"
STUCK_AFTER = 3.0
AGENT_TIMEOUT = 3.0
DEADLINE = 30.0  # per wait; everything normally happens within a few seconds


def poll(what: str, check: Callable[[], Any], timeout: float = DEADLINE, every: float = 0.1) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout``."""
    return wait_until(check, what, timeout=timeout, every=every, message=TIMED_OUT_AFTER_LAST)


def rfc3339(value: str) -> float:
    """Unix time of Prometheus' RFC 3339 timestamps (nanoseconds, any offset)."""
    value = re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")
    return datetime.fromisoformat(value).timestamp()


# --- fixtures -----------------------------------------------------------------
class Stack:
    def __init__(self, mesh: Mesh, monitoring: Monitoring) -> None:
        self.mesh = mesh
        self.monitoring = monitoring
        assert monitoring.prom is not None
        self.prom: Prom = monitoring.prom
        self.receiver: Receiver = monitoring.receiver

    def send(self, agent: str, plan: dict[str, Any], trace_id: str | None = None, *,
             return_immediately: bool = False) -> str:
        """Send ``plan`` to ``agent`` as a root request of cascade ``trace_id`` (new when None);
        with ``return_immediately``, return once the agent has created the task."""
        trace_id = trace_id or new_trace_id()
        asyncio.run(send_plan(self.mesh.agents[agent].url, plan, trace_id=trace_id, timeout=20.0,
                              return_immediately=return_immediately))
        return trace_id

    def describe(self, trace_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.mesh.api}/v1/cascades/{trace_id}", timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_settled(self, trace_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.mesh.api}/v1/cascades/{trace_id}/wait", params={"timeout": DEADLINE}, timeout=DEADLINE + 5)
        assert r.status_code == 200, r.text
        return r.json()

    def am_alerts(self) -> list[dict[str, Any]]:
        return self.monitoring.am_alerts()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = need_tool(*PROMETHEUS)
    need_tool("promtool")
    alertmanager = need_tool(*ALERTMANAGER)
    workdir = tmp_path_factory.mktemp("e2e-alerts")
    mesh = Mesh(workdir)
    receiver = Receiver()
    monitoring: Monitoring | None = None
    try:
        mesh.start_collector(stuck_after=STUCK_AFTER, agent_timeout=AGENT_TIMEOUT)
        assert mesh.collector is not None
        monitoring = Monitoring(workdir, mesh.collector.port, receiver, prometheus, alertmanager).start()
        # agents start while Prometheus and Alertmanager come up
        mesh.start_agent(LEAKY, no_aclose=True, wait=False)
        mesh.start_agent(DRAINED, wait=False)  # no_aclose=False: its lifespan drains with aclose()
        for name in (LEAKY, DRAINED):
            wait_http(f"{mesh.agents[name].url}/.well-known/agent-card.json", proc=mesh.agents[name].popen)
        mesh.start_agent(CLEAN, peers=[LEAKY])
        monitoring.wait_ready()
        prom = monitoring.prom
        assert prom is not None
        poll("Prometheus to scrape the collector", lambda: prom.query(f'up{{job="{COLLECTOR_JOB}"}} == 1'))
        poll("Prometheus to see the three agents up",
             lambda: len(prom.query(f"{names.M_AGENT_UP} == 1")) == 3)
        yield Stack(mesh, monitoring)
    finally:
        if monitoring is not None:
            monitoring.stop()
        mesh.stop_all()
        receiver.close()


@pytest.fixture(scope="module")
def cascades(stack: Stack) -> dict[str, str]:
    """The mesh's work: settled cascades clean -> leaky, then one that hangs on leaky."""
    done = {"work_ms": 20, "calls": [{"to": LEAKY, "blocking": True, "plan": {"work_ms": 20}}]}
    settled = []
    for _ in range(3):
        trace_id = stack.send(CLEAN, done)
        stack.wait_settled(trace_id)
        settled.append(trace_id)
    # a second batch after Prometheus scraped the first, so rates see an increase
    poll("Prometheus to scrape the first settled cascades",
         lambda: stack.prom.query(f"{names.M_CASCADES_SETTLED} >= 3"))
    trace_id = stack.send(CLEAN, done)
    stack.wait_settled(trace_id)
    # clean hands leaky a plan that never ends and returns at once
    hang = stack.send(CLEAN, {"calls": [{"to": LEAKY, "blocking": False, "plan": {"outcome": "hang"}}]})
    return {"hang": hang, "settled": settled[0]}


# --- tests ---------------------------------------------------------------------
def test_every_dashboard_query_returns_data(stack: Stack, cascades: dict[str, str]) -> None:
    exprs = promql_expressions((GENERATED / DASHBOARD_NAME).read_text())
    assert len(exprs) > 10
    pending = set(exprs)

    def remaining() -> bool:
        for expr in sorted(pending):
            if stack.prom.query(expr):
                pending.discard(expr)
        return not pending

    wait_until(remaining, "every dashboard query to return data", timeout=DEADLINE, every=0.5,
               fail=lambda _message: pytest.fail("dashboard queries that never returned data:\n" + "\n".join(sorted(pending))))


def test_detection_latency_is_recorded(stack: Stack, cascades: dict[str, str]) -> None:
    """The latency panels show numbers, not NaN: settled cascades reached the histogram."""
    count = poll("the latency histogram to count settled cascades",
                 lambda: stack.prom.query(f"{names.M_DETECTION_LATENCY}_count >= 4"))
    assert count
    p99 = poll("the p99 recording rule to be a number",
               lambda: [s for s in stack.prom.query(rules.R_DETECTION_LATENCY_P99) if s["value"][1] != "NaN"])
    assert float(p99[0]["value"][1]) >= 0


def test_node_graph_has_the_edge(stack: Stack, cascades: dict[str, str]) -> None:
    edges = poll("the clean -> leaky edge",
                 lambda: stack.prom.query(f'{names.M_EDGE_MESSAGES}{{from="{CLEAN}",to="{LEAKY}"}} >= 4'))
    assert edges


def test_stuck_cascade_fires_alert(stack: Stack, cascades: dict[str, str]) -> None:
    alerts = poll(f"{names.ALERT_STUCK} at the receiver", lambda: stack.receiver.alerts(names.ALERT_STUCK))
    assert alerts[0]["status"] == "firing"
    assert alerts[0]["labels"]["severity"] == "warning"
    status = httpx.get(f"{stack.mesh.api}/v1/cascades/{cascades['hang']}", timeout=5).json()
    assert status["status"] == "stuck", status


def test_leaked_producer_alerts_and_clean_shutdown_does_not(stack: Stack, cascades: dict[str, str]) -> None:
    prom, receiver = stack.prom, stack.receiver
    leaky_proc = stack.mesh.agents[LEAKY]
    clean_proc = stack.mesh.agents[CLEAN]
    poll("leaky's producer in flight",
         lambda: prom.query(f'{names.M_PRODUCERS_IN_FLIGHT}{{agent="{LEAKY}"}} == 1'))

    # 1. clean shuts down with aclose(): nothing leaked, nothing cancelled
    assert clean_proc.stop(signal.SIGTERM) is not None
    clean_down = (
        f'{names.M_SHUTDOWN_LEAKED}{{agent="{CLEAN}"}} == 0 '
        f'and on (agent) {names.M_SHUTDOWN_CANCELLED}{{agent="{CLEAN}"}} == 0 '
        f'and on (agent) {names.M_AGENT_UP}{{agent="{CLEAN}"}} == 0'
    )
    poll("Prometheus to see clean's completed shutdown", lambda: prom.query(clean_down))
    seen_at = time.time()

    # 2. leaky shuts down with its hanging producer still running
    assert leaky_proc.stop(signal.SIGTERM) is not None
    leaked = poll(f"{names.ALERT_LEAKED} for {LEAKY} at the receiver",
                  lambda: receiver.alerts(names.ALERT_LEAKED, agent=LEAKY))
    assert leaked[0]["status"] == "firing"
    assert leaked[0]["labels"]["severity"] == "warning"
    assert leaked[0]["annotations"]["runbook_url"].endswith(f"{names.ALERT_LEAKED}.md")

    # 3. the alert rules ran several times on data that shows clean's shutdown
    evaluations: set[float] = set()

    def evaluated_after() -> bool:
        last = rfc3339(prom.rule_group(rules.ALERT_GROUP)["lastEvaluation"])
        if last > seen_at:
            evaluations.add(last)
        return len(evaluations) >= 3

    poll("three rule evaluations after clean's shutdown was visible", evaluated_after, every=0.25)

    # ... and none of them produced an alert for clean, anywhere along the way
    assert prom.query(clean_down), "clean's shutdown record stayed clean"
    for alertname in (names.ALERT_LEAKED, names.ALERT_CANCELLED_AT_SHUTDOWN):
        assert not [a for a in prom.alerts()
                    if a["labels"].get("alertname") == alertname and a["labels"].get("agent") == CLEAN]
        assert not [a for a in stack.am_alerts()
                    if a["labels"].get("alertname") == alertname and a["labels"].get("agent") == CLEAN]
        assert receiver.alerts(alertname, agent=CLEAN) == []
    # no shutdown so far lost work: clean's drain had none to cancel, and leaky's leaked
    # producer keeps its cascade open (stuck), never settled
    assert prom.query(f'{names.M_CASCADES_SETTLED}{{outcome="{names.VERDICT_LOST}"}} == 0')
    assert not [a for a in prom.alerts() if a["labels"].get("alertname") == names.ALERT_SETTLED_LOST]
    assert not [a for a in stack.am_alerts() if a["labels"].get("alertname") == names.ALERT_SETTLED_LOST]
    assert receiver.alerts(names.ALERT_SETTLED_LOST) == []
    assert receiver.alerts(names.ALERT_CANCELLED_AT_SHUTDOWN) == []
    # the leaky notification carried every A2AProducerLeakedAtShutdown alert
    # Alertmanager held (group_by alertname), and only leaky's
    assert {a["labels"]["agent"] for a in receiver.alerts(names.ALERT_LEAKED)} == {LEAKY}
    # clean did shut down while the hanging cascade it delegated was open on leaky
    poll(f"{names.ALERT_SHUTDOWN_IN_FLIGHT} for {CLEAN}",
         lambda: receiver.alerts(names.ALERT_SHUTDOWN_IN_FLIGHT, agent=CLEAN))


def test_work_cancelled_by_a_drain_alerts(stack: Stack, cascades: dict[str, str]) -> None:
    """drained works on a root request when SIGTERM comes: its lifespan's aclose() cancels
    the work. Nothing leaks, yet the work is lost, and both alerts say so."""
    prom, receiver = stack.prom, stack.receiver
    # nothing was lost before: the alerts below are this cascade's
    assert receiver.alerts(names.ALERT_SETTLED_LOST) == []
    assert receiver.alerts(names.ALERT_CANCELLED_AT_SHUTDOWN) == []

    trace_id = stack.send(DRAINED, {"work_ms": 60000}, return_immediately=True)
    poll(f"{DRAINED} to hold the cascade's work",
         lambda: [h for h in stack.describe(trace_id).get("holders", [])
                  if h.get("kind") == "active_hop" and h.get("hop") == DRAINED])
    assert stack.mesh.agents[DRAINED].stop(signal.SIGTERM) is not None

    # the cascade settles, and says what was lost where
    state = stack.wait_settled(trace_id)
    assert state["outcome"] == names.VERDICT_LOST, state
    losses = [loss for loss in state["losses"] if loss["kind"] == names.END_CANCELLED_BY_SHUTDOWN]
    assert losses and losses[0]["hop"] == DRAINED and losses[0]["task_id"], state

    cancelled = poll(f"{names.ALERT_CANCELLED_AT_SHUTDOWN} for {DRAINED} at the receiver",
                     lambda: receiver.alerts(names.ALERT_CANCELLED_AT_SHUTDOWN, agent=DRAINED))
    assert cancelled[0]["status"] == "firing"
    assert cancelled[0]["labels"]["severity"] == "warning"
    assert cancelled[0]["annotations"]["runbook_url"].endswith(f"{names.ALERT_CANCELLED_AT_SHUTDOWN}.md")
    lost = poll(f"{names.ALERT_SETTLED_LOST} at the receiver", lambda: receiver.alerts(names.ALERT_SETTLED_LOST))
    assert lost[0]["status"] == "firing"
    assert lost[0]["annotations"]["runbook_url"].endswith(f"{names.ALERT_SETTLED_LOST}.md")
    # only drained's drain cancelled anything
    assert {a["labels"]["agent"] for a in receiver.alerts(names.ALERT_CANCELLED_AT_SHUTDOWN)} == {DRAINED}

    # the drain itself was clean: the shutdown record Prometheus alerted on leaked nothing,
    # and the rules evaluated on it (the same evaluation) did not call it a leak
    assert prom.query(
        f'{names.M_SHUTDOWN_LEAKED}{{agent="{DRAINED}"}} == 0 '
        f'and on (agent) {names.M_SHUTDOWN_CANCELLED}{{agent="{DRAINED}"}} == 1'
    )
    assert not [a for a in prom.alerts()
                if a["labels"].get("alertname") == names.ALERT_LEAKED and a["labels"].get("agent") == DRAINED]
