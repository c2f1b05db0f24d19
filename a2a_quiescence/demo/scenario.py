"""The demo's steps, in order (``Demo.run``): what the module docstring of
a2a_quiescence.demo.__main__ tells."""

from __future__ import annotations

import asyncio
import time

import httpx
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as pb

from a2a_quiescence import names
from a2a_quiescence.demo.harness import read_events
from a2a_quiescence.demo.mesh import HANG_PLAN, new_trace_id, send_plan, small_buffer_stream
from a2a_quiescence.demo.report import Cascade
from a2a_quiescence.demo.stack import Stack
from a2a_quiescence.demo.timing import STUCK_AFTER, until_async
from a2a_quiescence.wait import EXIT_BY_OUTCOME, describe_holders


class Demo(Stack):
    """The processes of ``Stack``, and what the demo shows with them."""

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
