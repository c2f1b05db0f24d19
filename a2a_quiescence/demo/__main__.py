"""The demo: a live A -> B -> C mesh with the sidecar, Prometheus, Alertmanager and alerts.

    python -m a2a_quiescence.demo [--short] [--cascades N] [--keep-running] [--summary-json FILE]

Runs a live A -> B -> C mesh with the sidecar, Prometheus, Alertmanager and alerts.
What it starts, all on 127.0.0.1 and all stopped at the end (or on Ctrl-C):
the collector (`a2a-quiescence collector`), Prometheus with the project's rules
scraping it, Alertmanager sending every alert to a receiver in this process
(each delivery is printed), a push webhook, and agents A, B and C, each under
`opentelemetry-instrument` the way users start them.

What it does: clean cascades A -> B -> C, each waited on with the settlement
API; a non-blocking delegation whose pushes outlive A's answer; a multi-turn
task C parks waiting for its user's input (awaiting_input, never stuck) and
completes once answered; the a2a-sdk #1101 hang (a stream subscriber that
stops reading, so C's producer parks in `EventQueue.close(immediate=False)`:
reported while it hangs, with its alert); then C shuts down without draining
while it still works on a long job, so that producer is leaked, the sidecar
keeps the record after C is gone, and the leak alert fires. C starts again,
draining at shutdown this time, and A, B and C all shut down cleanly with
aclose() while C works on another long job: nothing leaks, but the cascade
settles with its outcome `lost` (C's work cancelled by the drain) and its
alerts fire. A summary table ends it, with every cascade's outcome.
Prometheus and Alertmanager are optional: without them the demo says so and
shows everything the collector knows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as pb

from a2a_quiescence import environment_variables as env
from a2a_quiescence import names
from a2a_quiescence.dashboards.generate import DASHBOARD_NAME, GENERATED
from a2a_quiescence.demo.harness import Mesh, Proc, read_events, wait_http
from a2a_quiescence.demo.mesh import HANG_PLAN, SMALL_BUFFER, new_trace_id, send_plan, small_buffer_stream
from a2a_quiescence.demo.monitoring import ALERTMANAGER, PROMETHEUS, Monitoring, Receiver, find_tool
from a2a_quiescence.wait import EXIT_BY_OUTCOME, NotSettled, describe_endings, describe_holders, wait_for_quiescence

STALL_SECONDS = 1.0  # the agents' stall watchdog (default 5 s; shorter so the demo shows it soon)
STUCK_AFTER = 3.0  # the collector's --stuck-after
DEADLINE = 45.0  # for every wait on something that normally takes a second or two


class DemoError(RuntimeError):
    """Something the demo waited for did not happen (the message says what)."""


@dataclass
class Cascade:
    trace_id: str
    kind: str
    status: str = "open"  # open | awaiting_input | stuck | settled
    outcome: str | None = None  # once settled: completed | failed | lost
    detection_latency_seconds: float | None = None
    answered_ms: float | None = None
    settled_ms: float | None = None
    held_by: str = ""
    losses: list[dict[str, Any]] = field(default_factory=list)  # as the settlement API lists them
    failures: list[dict[str, Any]] = field(default_factory=list)
    # seconds it was seen waiting for its user's input (status awaiting_input), never stuck
    awaiting_input_seconds: float | None = None

    def endings(self) -> str:
        return describe_endings({"losses": self.losses, "failures": self.failures})


@dataclass
class Summary:
    """What the demo saw; printed as a table and written as JSON with --summary-json."""

    workdir: str
    monitoring: bool = False
    cascades: list[Cascade] = field(default_factory=list)
    hops: list[dict[str, Any]] = field(default_factory=list)  # one per agent process (incarnation)
    alerts: list[dict[str, str]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    completed: bool = False
    error: str | None = None



class Progress:
    """Timestamped progress lines on the terminal."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()  # alerts are printed from the receiver's threads

    def __call__(self, text: str) -> None:
        with self.lock:
            print(f"[{time.monotonic() - self.t0:5.1f}s] {text}", flush=True)


def _tries(what: str, timeout: float) -> Iterator[None]:
    """One step per try until ``timeout`` s have passed, then DemoError (the deadline of ``until``)."""
    deadline = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() > deadline:
            raise DemoError(f"gave up after {timeout:.0f}s waiting for {what}")


def until(what: str, check: Callable[[], Any], timeout: float = DEADLINE, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; DemoError after ``timeout`` s."""
    for _ in _tries(what, timeout):
        if value := check():
            return value
        time.sleep(every)


async def until_async(what: str, check: Callable[[], Any], timeout: float = DEADLINE, every: float = 0.1) -> Any:
    """``until`` from the event loop: the check runs in a thread, the pauses on the loop (cancellable)."""
    for _ in _tries(what, timeout):
        if value := await asyncio.to_thread(check):
            return value
        await asyncio.sleep(every)


class Demo:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.say = Progress()
        self.mesh = Mesh(workdir, events=workdir / "events.jsonl")
        self.receiver: Receiver | None = None
        self.monitoring: Monitoring | None = None
        self.summary = Summary(str(workdir))
        self.agent_env = {env.STALL_SECONDS.name: str(STALL_SECONDS)}
        self.drains = {"A": True, "B": True, "C": False}  # whether each agent's lifespan calls aclose()
        self.replaced: list[Proc] = []  # agent processes a restart replaced (already stopped)

    # -- the sidecar's view ------------------------------------------------------
    def mesh_state(self) -> dict[str, Any]:
        return httpx.get(f"{self.mesh.api}/v1/mesh", timeout=5).json()

    def agent(self, name: str) -> dict[str, Any]:
        return next((a for a in self.mesh_state()["agents"] if a["agent"] == name), {})

    def cascade_state(self, trace_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.mesh.api}/v1/cascades/{trace_id}", timeout=5).json()

    def hop_row(self, a: dict[str, Any]) -> dict[str, Any]:
        """One agent process as the sidecar last saw it (its latest incarnation)."""
        return {
            "agent": a["agent"],
            "incarnation": a.get("incarnation"),
            "aclose": self.drains.get(a["agent"]),
            "producers_in_flight": a["producers_in_flight"],
            "shutdown_leaked_producers": a["shutdown_leaked_producers"],
            "shutdown_cancelled_producers": a.get("shutdown_cancelled_producers"),
            "state": "up" if a["up"] else ("shut down" if a.get("shutdown") else "lost"),
        }

    def in_flight_line(self) -> str:
        agents = {a["agent"]: a for a in self.mesh_state()["agents"]}
        return " · ".join(f"{n} {agents.get(n, {}).get('producers_in_flight', '-')}" for n in ("A", "B", "C"))

    # -- alerts ------------------------------------------------------------------
    def on_alert(self, post: dict[str, Any]) -> None:
        for alert in post.get("alerts", []):
            labels = alert.get("labels", {})
            entry = {"alertname": labels.get("alertname", "?"), "agent": labels.get("agent", ""),
                     "status": alert.get("status", "?")}
            self.summary.alerts.append(entry)
            who = f" agent={entry['agent']}" if entry["agent"] else ""
            self.say(f"ALERT delivered by Alertmanager: {entry['alertname']}{who} ({entry['status']}): "
                     f"{alert.get('annotations', {}).get('summary', '')}")

    async def wait_alert(self, alertname: str, **labels: str) -> None:
        receiver = self.receiver
        if receiver is not None:
            await until_async(f"{alertname} at Alertmanager's receiver", lambda: receiver.alerts(alertname, **labels))

    # -- steps -------------------------------------------------------------------
    def start(self) -> None:
        say = self.say
        prometheus, alertmanager = find_tool(*PROMETHEUS), find_tool(*ALERTMANAGER)
        self.mesh.start_collector(stuck_after=STUCK_AFTER, agent_timeout=10.0)
        assert self.mesh.collector is not None
        say(f"collector up: status page {self.mesh.api}/ , metrics {self.mesh.api}/metrics")
        if prometheus and alertmanager:
            self.receiver = Receiver(self.on_alert)
            self.monitoring = Monitoring(self.workdir, self.mesh.collector.port, self.receiver,
                                         prometheus, alertmanager).start()
            self.summary.monitoring = True
        else:
            missing = " and ".join(n for n, p in (("prometheus", prometheus), ("prometheus-alertmanager", alertmanager)) if not p)
            say(f"NOTE: {missing} not installed, so no alerts in this run (as root: apt-get install "
                "prometheus prometheus-alertmanager, or bash scripts/setup.sh). Everything else runs.")
        self.mesh.start_webhook()
        env = self.agent_env
        # C drains nothing at shutdown (no aclose) and has a small send buffer (the #1101 hang)
        self.mesh.start_agent("C", no_aclose=True, env=env, wait=False, args=["--send-buffer", str(SMALL_BUFFER)])
        self.mesh.start_agent("B", ["C"], env=env, wait=False)
        self.mesh.start_agent("A", ["B"], env=env, wait=False)
        for proc in self.mesh.agents.values():
            wait_http(f"{proc.url}/.well-known/agent-card.json", proc=proc.popen)
        say("agents up under opentelemetry-instrument: " + ", ".join(f"{n} {p.url}" for n, p in self.mesh.agents.items())
            + f"; C pushes to the webhook {self.mesh.webhook.url if self.mesh.webhook else '-'}")
        if self.monitoring is not None:
            self.monitoring.wait_ready()
            prom = self.monitoring.prom
            assert prom is not None
            until("Prometheus to load the rules", lambda: prom.http.get("/api/v1/rules").json()["data"]["groups"])
            until("Prometheus to scrape the collector", lambda: prom.query(f"{names.M_AGENT_UP} == 1"))
            say(f"Prometheus {prom.url} (rules loaded, scraping every 1 s), Alertmanager {self.monitoring.am.url}")  # type: ignore[union-attr]

    def pids(self) -> list[int]:
        procs: list[Proc] = self.replaced + list(self.mesh.agents.values()) + [
            p for p in (self.mesh.webhook, self.mesh.collector) if p]
        return [p.popen.pid for p in procs] + (self.monitoring.pids if self.monitoring else [])

    async def settle(self, cascade: Cascade, t0: float, quiet: bool = False) -> None:
        try:
            state = await wait_for_quiescence(cascade.trace_id, endpoint=self.mesh.api, timeout=DEADLINE)
        except NotSettled as exc:
            cascade.status, cascade.held_by = exc.state.get("status", "open"), describe_holders(exc.state)
            self.say(f"  {cascade.kind} {cascade.trace_id[:12]}…: NOT settled: {cascade.held_by}")
            return
        cascade.status = "settled"
        cascade.outcome = state.get("outcome")
        cascade.losses, cascade.failures = state.get("losses") or [], state.get("failures") or []
        cascade.settled_ms = (time.monotonic() - t0) * 1000
        cascade.detection_latency_seconds = state.get("detection_latency_seconds")
        if cascade.outcome != names.VERDICT_COMPLETED and not quiet:
            self.say(f"  {cascade.kind} {cascade.trace_id[:12]}… settled {cascade.outcome}: {cascade.endings()}")

    async def clean_cascades(self) -> None:
        plan = {"work_ms": 30, "calls": [{"to": "B", "plan": {"work_ms": 30, "calls": [
            {"to": "C", "plan": {"work_ms": self.args.work_ms}}]}}]}
        self.say(f"{self.args.cascades} clean cascades A -> B -> C (blocking), each waited on with "
                 "GET /v1/cascades/{id}/wait")
        for _ in range(self.args.cascades):
            cascade = Cascade(new_trace_id(), "clean A->B->C")
            self.summary.cascades.append(cascade)
            t0 = time.monotonic()
            await send_plan(self.mesh.agents["A"].url, plan, trace_id=cascade.trace_id)
            cascade.answered_ms = (time.monotonic() - t0) * 1000
            await self.settle(cascade, t0)
            if cascade.status == "settled":
                self.say(f"  {cascade.trace_id[:12]}…: A answered in {cascade.answered_ms:.0f} ms; settled, "
                         f"detected {cascade.detection_latency_seconds * 1000:.1f} ms after the last hop went passive")

    async def nonblocking_with_pushes(self) -> None:
        work = max(600, self.args.work_ms * 3)
        plan = {"calls": [{"to": "B", "plan": {"calls": [
            {"to": "C", "blocking": False, "push": True, "plan": {"work_ms": work, "stream_events": 3}}]}}]}
        cascade = Cascade(new_trace_id(), "non-blocking B->C, pushes")
        self.summary.cascades.append(cascade)
        self.say(f"a non-blocking delegation: B hands C {work} ms of work and returns at once; C pushes its updates")
        t0 = time.monotonic()
        await send_plan(self.mesh.agents["A"].url, plan, trace_id=cascade.trace_id)
        cascade.answered_ms = (time.monotonic() - t0) * 1000
        self.say(f"  A answered in {cascade.answered_ms:.0f} ms; producers in flight now: {self.in_flight_line()}")
        await self.settle(cascade, t0)
        pushes = [e for e in read_events(self.workdir / "events.jsonl") if e.get("event") == "push_received" and e.get("trace_id") == cascade.trace_id]
        if cascade.status == "settled":
            self.say(f"  settled {cascade.settled_ms:.0f} ms after the request, once C finished and its "
                     f"{len(pushes)} push deliveries were done (a closed stream on A said nothing about them)")

    async def ask_for_input(self) -> tuple[Cascade, float]:
        """A -> B -> C where C asks its user for more input: left waiting while the next step runs."""
        cascade = Cascade(new_trace_id(), "multi-turn: C asks for input")
        self.summary.cascades.append(cascade)
        plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "plan": {"outcome": "input"}}]}}]}
        self.say("a multi-turn task: C asks its user for more input (INPUT_REQUIRED); we leave it waiting meanwhile")
        t0 = time.monotonic()
        await send_plan(self.mesh.agents["A"].url, plan, trace_id=cascade.trace_id)
        cascade.answered_ms = (time.monotonic() - t0) * 1000
        state = await until_async("the cascade to be awaiting_input", lambda: (
            s := self.cascade_state(cascade.trace_id))["status"] == names.STATUS_AWAITING_INPUT and s)
        cascade.status = state["status"]
        self.say(f"  the cascade is {describe_holders(state)}")
        return cascade, t0

    async def answer_input(self, cascade: Cascade, t0: float) -> None:
        """The cascade ``ask_for_input`` left waiting: past --stuck-after and not stuck; then the user answers."""
        state = await until_async(f"the waiting cascade to go {STUCK_AFTER:g} s (--stuck-after) without progress",
                                  lambda: (s := self.cascade_state(cascade.trace_id)).get("seconds_without_progress", 0)
                                  >= STUCK_AFTER and s)
        cascade.status = state["status"]
        if state["status"] != names.STATUS_AWAITING_INPUT:
            cascade.held_by = describe_holders(state)
            self.say(f"  back to the task waiting for input: the cascade is {cascade.held_by}")
            return
        cascade.awaiting_input_seconds = state["seconds_without_progress"]
        self.say(f"  back to the task waiting for input: {cascade.awaiting_input_seconds:.1f} s without progress "
                 f"(--stuck-after is {STUCK_AFTER:g} s) and still {state['status']}: waiting for a user is not "
                 f"being stuck, so {names.ALERT_STUCK} does not count it")
        if self.monitoring is not None and self.monitoring.prom is not None:
            prom = self.monitoring.prom
            await until_async("Prometheus to see it awaiting input and nothing stuck", lambda: prom.query(
                f"{names.M_CASCADES_AWAITING} == 1 and {names.M_CASCADES_STUCK} == 0"))
            self.say(f"  Prometheus: {names.M_CASCADES_AWAITING} = 1, {names.M_CASCADES_STUCK} = 0")
        [waiting] = state["awaiting"]
        c_url = self.mesh.agents["C"].url
        async with httpx.AsyncClient(timeout=30) as http:
            client = await create_client(c_url, client_config=ClientConfig(streaming=False, httpx_client=http))
            task = await client.get_task(pb.GetTaskRequest(id=waiting["task_id"]))
        self.say(f"  the answer comes: a second message to C's task {waiting['task_id'][:8]}…, which then completes")
        await send_plan(c_url, {}, trace_id=new_trace_id(), task=task)
        await self.settle(cascade, t0)
        if cascade.status == "settled":
            self.say(f"  and the cascade that waited for it settled {cascade.outcome}")

    async def issue_1101(self) -> None:
        cascade = Cascade(new_trace_id(), "#1101 abandoned stream on C")
        self.summary.cascades.append(cascade)
        self.say("the #1101 hang: a client streams from C, reads one event, then stops reading (keeps the connection)")
        t0 = time.monotonic()
        async with small_buffer_stream(self.mesh.agents["C"].url, HANG_PLAN, trace_id=cascade.trace_id) as events:
            await events.__anext__()
            c = await until_async("C's stall watchdog to report the parked close",
                                  lambda: (a := self.agent("C")).get("stalled_closes_in_flight") and a)
            stall = next((r for r in reversed(c.get("recent", [])) if r.get("kind") == "stall"), {})
            self.say(f"  C reports EventQueue.close(immediate=False) stalled while it hangs; the producer is parked at "
                     f"{stall.get(names.ATTR_PARKED_AT, '?')}")
            state = httpx.get(f"{self.mesh.api}/v1/cascades/{cascade.trace_id}", timeout=5).json()
            self.say(f"  meanwhile the cascade is {describe_holders(state)}")
            await self.wait_alert(names.ALERT_CLOSE_STALLED, agent="C")
        self.say("  the client goes away: its subscriber is torn down, the producer finishes")
        await self.settle(cascade, t0)
        if cascade.status == "settled":
            self.say("  and only now the cascade settled")

    async def leak_at_shutdown(self) -> Cascade:
        cascade = Cascade(new_trace_id(), "C busy when shut down")
        self.summary.cascades.append(cascade)
        plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "blocking": False, "plan": {"outcome": "hang"}}]}}]}
        self.say("a long job: B hands C work that is still running when C is told to stop")
        await send_plan(self.mesh.agents["A"].url, plan, trace_id=cascade.trace_id)
        await until_async("C's producer to be in flight", lambda: self.agent("C").get("producers_in_flight"))
        self.say(f"  producers in flight: {self.in_flight_line()}")
        if self.monitoring is not None and self.monitoring.prom is not None:
            prom = self.monitoring.prom
            seen = await until_async("Prometheus to scrape C's producer in flight", lambda: prom.query(
                f'{names.M_PRODUCERS_IN_FLIGHT}{{agent="C"}} >= 1'))
            self.say(f"  Prometheus: {names.M_PRODUCERS_IN_FLIGHT}{{agent=\"C\"}} = {seen[0]['value'][1]}")
        self.say("C shuts down (SIGTERM) without draining: its lifespan does not call aclose()")
        await asyncio.to_thread(self.mesh.agents["C"].stop)
        c = await until_async("C's shutdown record at the sidecar",
                              lambda: (a := self.agent("C")).get("shutdown") and not a.get("up") and a)
        self.summary.hops.append(self.hop_row(c))  # a restart of C replaces it at the sidecar: keep it now
        self.say(f"  C is gone; the sidecar keeps its shutdown record: {c['shutdown_leaked_producers']} producer(s) "
                 f"leaked, still scrapeable as {names.M_SHUTDOWN_LEAKED}{{agent=\"C\"}}")
        await self.wait_alert(names.ALERT_LEAKED, agent="C")
        return cascade

    async def leaked_cascade_stuck(self, cascade: Cascade) -> None:
        state = await until_async("the abandoned cascade to be reported stuck", lambda: (
            s := self.cascade_state(cascade.trace_id))["status"] == names.STATUS_STUCK and s)
        cascade.status, cascade.held_by = state["status"], describe_holders(state)
        self.say(f"  the cascade is {cascade.held_by} -- the work was lost, and it is never settled by a timeout")
        await self.wait_alert(names.ALERT_STUCK)

    async def restart_c(self) -> None:
        """A new C process on the old one's port (B's peer URL), draining at shutdown this time.

        Only once the leak alert has arrived: a new incarnation resets C's shutdown record."""
        old = self.mesh.agents["C"]
        gone = self.agent("C").get("incarnation")
        self.say("C starts again on the same port, this time draining at shutdown (its lifespan calls aclose())")
        self.replaced.append(old)
        self.drains["C"] = True
        await asyncio.to_thread(self.mesh.start_agent, "C", port=old.port, env=self.agent_env)
        await until_async("the new C at the sidecar", lambda: (
            a := self.agent("C")).get("up") and a.get("incarnation") != gone)
        self.say("  the new C is up: a new incarnation at the sidecar; the old one still holds its stuck cascade")

    async def lost_at_clean_shutdown(self) -> None:
        cascade = Cascade(new_trace_id(), "C busy at aclose() shutdown")
        self.summary.cascades.append(cascade)
        ten_minutes = {"work_ms": 600_000}
        plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "blocking": False, "plan": ten_minutes}]}}]}
        self.say("another long job: B hands C ten minutes of work and returns")
        t0 = time.monotonic()
        await send_plan(self.mesh.agents["A"].url, plan, trace_id=cascade.trace_id)
        cascade.answered_ms = (time.monotonic() - t0) * 1000
        await until_async("C's producer to be in flight", lambda: self.agent("C").get("producers_in_flight"))
        self.say(f"  producers in flight: {self.in_flight_line()}")
        self.say("A, B and C shut down cleanly (SIGTERM; each lifespan calls aclose(), whose drain cancels what "
                 "still works)")
        incarnations = {n: self.agent(n).get("incarnation") for n in ("A", "B", "C")}
        await asyncio.gather(*(asyncio.to_thread(self.mesh.agents[n].stop) for n in ("A", "B", "C")))
        await self.settle(cascade, t0, quiet=True)
        if cascade.outcome is not None:
            self.say(f"  the cascade settled, outcome {cascade.outcome} (a2a-quiescence wait exits "
                     f"{EXIT_BY_OUTCOME.get(cascade.outcome, '?')}): {cascade.endings() or 'nothing lost'}")
        hops = await until_async("the shutdown records of A, B and C", lambda: self.shut_down(incarnations))
        c = hops["C"]
        leaked = ", ".join(f"{n} {hops[n]['shutdown_leaked_producers']}" for n in ("A", "B", "C"))
        self.say(f"  producers leaked: {leaked}; C's drain cancelled {c['shutdown_cancelled_producers']} producer(s), "
                 f"kept as {names.M_SHUTDOWN_CANCELLED}{{agent=\"C\"}}")
        await self.wait_alert(names.ALERT_CANCELLED_AT_SHUTDOWN, agent="C")
        await self.wait_alert(names.ALERT_SETTLED_LOST)

    def shut_down(self, incarnations: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
        """The agents by name once each of these incarnations has its shutdown record, else None."""
        agents = {a["agent"]: a for a in self.mesh_state()["agents"]}
        done = all((a := agents.get(n, {})).get("shutdown") and not a.get("up") and a.get("incarnation") == inc
                   for n, inc in incarnations.items())
        return agents if done else None

    def collect_hops(self) -> None:
        """The agents' latest incarnations, after the ones a restart replaced (kept when they shut down)."""
        latest = [self.hop_row(a) for a in self.mesh_state()["agents"]]
        self.summary.hops = sorted(self.summary.hops + latest, key=lambda h: h["agent"])  # stable: C before C

    def print_summary(self) -> None:
        s = self.summary
        print("\nSummary")
        print(f"  {'hop':<5}{'at shutdown':<12}{'producers in flight':>21}{'leaked at shutdown':>20}"
              f"{'cancelled at shutdown':>23}  state")
        for h in s.hops:
            drain = {True: "aclose()", False: "no drain"}.get(h["aclose"], "-")
            leaked, cancelled = ("-" if v is None else v for v in (h["shutdown_leaked_producers"],
                                                                   h["shutdown_cancelled_producers"]))
            print(f"  {h['agent']:<5}{drain:<12}{h['producers_in_flight']:>21}{leaked:>20}{cancelled:>23}"
                  f"  {h['state']}")
        print(f"\n  {'cascade':<14}{'what':<31}{'status':<9}{'outcome':<11}{'detection latency':>18}")
        for c in s.cascades:
            latency = "-" if c.detection_latency_seconds is None else f"{c.detection_latency_seconds * 1000:.1f} ms"
            print(f"  {c.trace_id[:12] + '…':<14}{c.kind:<31}{c.status:<9}{c.outcome or '-':<11}{latency:>18}")
        for c in s.cascades:
            if c.awaiting_input_seconds is not None:
                print(f"  {c.trace_id[:12]}… was awaiting_input for {c.awaiting_input_seconds:.1f} s, never stuck, "
                      "until its user answered")
            if c.status != "settled":
                print(f"  {c.trace_id[:12]}… is held by: {c.held_by.split('; ', 1)[-1]}")
            elif c.outcome != names.VERDICT_COMPLETED:
                print(f"  {c.trace_id[:12]}… {c.endings() or c.outcome}")
        if s.monitoring:
            seen = sorted({f"{a['alertname']}{'(' + a['agent'] + ')' if a['agent'] else ''}" for a in s.alerts})
            print(f"\n  alerts that reached Alertmanager's receiver: {', '.join(seen) or 'none'}")
        else:
            print("\n  alerts: not run (Prometheus/Alertmanager not installed)")

    def print_next(self, running: bool) -> None:
        if running:
            print("\nWhere to look now (the agents have shut down; the sidecar keeps what they reported):")
            print(f"  status page        {self.mesh.api}/")
            print(f"  settlement API     {self.mesh.api}/v1/mesh")
            if self.monitoring is not None and self.monitoring.prom is not None:
                print(f"  Prometheus alerts  {self.monitoring.prom.url}/alerts")
        else:
            print("\nWhere to look next: run it with --keep-running to browse the status page and Prometheus' alerts.")
        print(f"  Grafana dashboard  {GENERATED / DASHBOARD_NAME} (import it, or: a2a-quiescence dashboards push)")
        print(f"  logs and configs   {self.workdir}")

    async def run(self) -> None:
        await self.clean_cascades()
        await self.nonblocking_with_pushes()
        waiting, t0 = await self.ask_for_input()
        await self.issue_1101()  # the task waiting for input waits through it
        await self.answer_input(waiting, t0)
        leaked = await self.leak_at_shutdown()
        # the new C starts while the abandoned cascade goes stuck (C's leak alert has arrived by now)
        await asyncio.gather(self.leaked_cascade_stuck(leaked), self.restart_c())
        await self.lost_at_clean_shutdown()

    def stop(self) -> None:
        if self.monitoring is not None:
            self.monitoring.stop()
        for proc in self.replaced:
            proc.stop()
        self.mesh.stop_all()
        if self.receiver is not None:
            self.receiver.close()


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # stop everything the same way as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m a2a_quiescence.demo",
        description=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Everything listens on 127.0.0.1; everything started is stopped at the end or on Ctrl-C.",
    )
    parser.add_argument("--cascades", type=int, default=5, help="clean cascades to send (default %(default)s)")
    parser.add_argument("--work-ms", type=int, default=150, help="how long C works per clean cascade (default %(default)s)")
    parser.add_argument("--short", action="store_true", help="a quicker run (2 clean cascades, little work): for CI")
    parser.add_argument("--keep-running", action="store_true",
                        help="after the summary, keep the collector, Prometheus and Alertmanager up until Ctrl-C")
    parser.add_argument("--summary-json", type=Path, metavar="FILE", help="also write the summary to FILE as JSON")
    args = parser.parse_args(argv)
    if args.cascades < 1 or args.work_ms < 0:
        parser.error("--cascades must be at least 1 and --work-ms not negative")
    if args.short:
        args.cascades, args.work_ms = min(args.cascades, 2), min(args.work_ms, 50)

    signal.signal(signal.SIGTERM, _sigterm)
    demo = Demo(args, Path(tempfile.mkdtemp(prefix="a2a-quiescence-demo-")))
    code = 0
    try:
        demo.start()
        asyncio.run(demo.run())
        demo.collect_hops()
        demo.summary.completed = True
        demo.print_summary()
        demo.print_next(running=args.keep_running)
        if args.keep_running:
            print("\nmesh data kept up; Ctrl-C to stop", flush=True)
            _wait_forever()
    except KeyboardInterrupt:
        print("\nstopping everything", flush=True)
        code = 0 if demo.summary.completed else 130
    except DemoError as exc:
        demo.summary.error = str(exc)
        print(f"demo failed: {exc} (logs in {demo.workdir})", file=sys.stderr)
        code = 1
    finally:
        demo.summary.pids = demo.pids()  # every process it started, for whoever checks that none is left
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        demo.stop()
        if args.summary_json:
            args.summary_json.write_text(json.dumps(asdict(demo.summary), indent=1))
    return code


def _wait_forever() -> None:
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
