"""How a cascade ended, on real a2a-sdk agents served in-process.

Each scenario runs real agents (uvicorn on 127.0.0.1, the V2 request handler
a2a-sdk ships as ``DefaultRequestHandler`` and, where the two differ, the
legacy one) under the instrumentation, then hands the process's snapshots to
a real ``Detector``, exactly what the collector does with them. Every verdict
has a case where it must fire and one where it must not: a clean cascade is
``completed``; a raising executor or a task the agent ends FAILED is
``failed``; work cancelled by the ``aclose()`` drain, a push the webhook
refuses and an ActiveTask destroyed while pending are ``lost``; a task
waiting for its user is ``awaiting_input``, never ``stuck``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from functools import partial
from typing import Any, AsyncIterator

import pytest
from a2a.types import a2a_pb2 as pb

from a2a_quiescence import names
from a2a_quiescence.collector.settlement import Detector
from a2a_quiescence.collector.views import cascade_view
from a2a_quiescence.wire import CascadeSnapshot
from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.demo.mesh import build_app, new_trace_id, send_plan
from a2a_quiescence.instrumentation import client as client_wrappers, lifecycle
from support import TIMED_OUT_LAST, Telemetry, cancel, instrumented, raise_assertion, serve, wait_until_async

pytestmark = pytest.mark.timeout(120)

DEADLINE = 30.0  # an upper bound for polling, never a pass/fail threshold
poll = partial(wait_until_async, timeout=DEADLINE, every=0.02, message=TIMED_OUT_LAST, fail=raise_assertion)


class View:
    """The collector's verdict on this process's snapshots (one hop, every cascade)."""

    def __init__(self, tel: Telemetry) -> None:
        self.tracker = tel.runtime.tracker
        self.hop = tel.runtime.service_name  # every agent here is one hop (one process)
        self.now = 0.0
        # stuck after one second of the test's own clock: a cascade that is awaiting input
        # must stay awaiting_input however long it waits
        self.detector = Detector(stuck_after=1.0, clock=lambda: self.now)

    def state(self, trace_id: str) -> dict[str, Any]:
        _hop, cascades = self.tracker.take_snapshots()
        for tid, body in cascades:
            self.detector.ingest(CascadeSnapshot.from_json(tid, self.hop, body))
        return cascade_view(self.detector, trace_id)

    async def settled(self, trace_id: str) -> dict[str, Any]:
        return await poll(lambda: (s := self.state(trace_id))["status"] == "settled" and s, f"{trace_id} settled")


@contextlib.asynccontextmanager
async def agents(*names_: str, legacy: bool = False, webhook: str | None = None) -> AsyncIterator[dict[str, Any]]:
    """Agents in a chain (each may call the next); their URLs and handlers by name."""
    ports = {n: free_port() for n in names_}
    urls = {n: f"http://127.0.0.1:{ports[n]}/" for n in names_}
    handlers: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        for i, n in enumerate(names_):
            peers = {m: urls[m] for m in names_[i + 1 : i + 2]}
            app, handler, _ = build_app(n, ports[n], peers, legacy=legacy, webhook=webhook)
            handlers[n] = handler
            await stack.enter_async_context(serve(app, ports[n]))
        yield {"urls": urls, "handlers": handlers}


def relay(*hops: str, last: dict[str, Any] | None = None) -> dict[str, Any]:
    plan: dict[str, Any] = dict(last or {})
    for hop in reversed(hops):
        plan = {"calls": [{"to": hop, "plan": plan}]}
    return plan


@pytest.fixture
def view() -> Any:
    with instrumented(stall_seconds=30) as tel:
        yield View(tel)


def kinds(items: list[dict[str, Any]]) -> list[str]:
    return sorted(i["kind"] for i in items)


# --- completed / failed -------------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True], ids=["v2", "legacy"])
async def test_clean_cascade_is_completed(view: View, legacy: bool) -> None:
    trace_id = new_trace_id()
    async with agents("A", "B", "C", legacy=legacy) as mesh:
        await send_plan(mesh["urls"]["A"], relay("B", "C"), trace_id=trace_id)
        state = await view.settled(trace_id)
    assert state["outcome"] == names.VERDICT_COMPLETED
    assert state["losses"] == [] and state["failures"] == []


@pytest.mark.parametrize("legacy", [False, True], ids=["v2", "legacy"])
async def test_executor_that_raises_is_failed(view: View, legacy: bool) -> None:
    trace_id = new_trace_id()
    async with agents("A", "B", "C", legacy=legacy) as mesh:
        await send_plan(mesh["urls"]["A"], relay("B", "C", last={"outcome": "fail"}), trace_id=trace_id)
        state = await view.settled(trace_id)
    assert state["outcome"] == names.VERDICT_FAILED, state
    assert names.END_EXECUTOR_FAILED in kinds(state["failures"])
    assert state["losses"] == []


@pytest.mark.parametrize("ending", ["failed", "rejected"])
async def test_task_the_agent_ends_failed_or_rejected_is_failed(view: View, ending: str) -> None:
    trace_id = new_trace_id()
    async with agents("C") as mesh:
        await send_plan(mesh["urls"]["C"], {"outcome": ending}, trace_id=trace_id)
        state = await view.settled(trace_id)
    assert state["outcome"] == names.VERDICT_FAILED, state
    expected = names.END_TASK_FAILED if ending == "failed" else names.END_TASK_REJECTED
    assert [f["kind"] for f in state["failures"]] == [expected]


async def test_client_cancel_is_failed_not_lost(view: View) -> None:
    trace_id = new_trace_id()
    async with agents("C") as mesh:
        task_id = await send_plan(mesh["urls"]["C"], {"outcome": "hang"}, trace_id=trace_id, return_immediately=True)
        await poll(lambda: view.tracker.producers_in_flight == 1, "the producer to hang")
        await cancel(mesh["urls"]["C"], task_id, trace_id)
        state = await view.settled(trace_id)
    assert state["outcome"] == names.VERDICT_FAILED, state
    assert [(f["kind"], f["task_id"]) for f in state["failures"] if f["kind"] == names.END_TASK_CANCELLED][:1] == [
        (names.END_TASK_CANCELLED, task_id)
    ]
    assert state["losses"] == []


# --- lost ---------------------------------------------------------------------------
async def test_aclose_drain_while_a_hop_works_is_lost(view: View) -> None:
    """A -> B -> C; C's handler is drained with aclose() while C works: C's work is
    cancelled and the cascade, which does settle, says so."""
    trace_id = new_trace_id()
    async with agents("A", "B", "C") as mesh:
        root = asyncio.create_task(send_plan(mesh["urls"]["A"], relay("B", "C", last={"work_ms": 60_000}),
                                             trace_id=trace_id))
        # A and B wait on their calls, C sleeps: all three executors run and their tasks
        # are stored (an aclose() before C's task is stored leaves C's request waiting for
        # it for ever: an a2a-sdk 1.3.0 hang this test is not about)
        await poll(lambda: [t._task_created.is_set() for t, s in list(lifecycle._TASK_STATE.items())
                            if s.executing] == [True] * 3, "C to be working")
        await mesh["handlers"]["C"].aclose()
        await root
        state = await view.settled(trace_id)
        assert view.tracker.shutdown is not None and view.tracker.shutdown["cancelled_producers"] == 1
    assert state["outcome"] == names.VERDICT_LOST, state
    cancelled = [loss for loss in state["losses"] if loss["kind"] == names.END_CANCELLED_BY_SHUTDOWN]
    assert cancelled and cancelled[0]["task_id"] and cancelled[0]["detail"] == "executing"
    # where C's executor was when the drain cancelled it: the plan's wait in the demo agent
    assert cancelled[0]["parked_at"].split(os.sep)[-1].startswith("mesh.py:"), cancelled


async def test_aclose_after_the_work_finished_loses_nothing(view: View) -> None:
    trace_id = new_trace_id()
    async with agents("A", "B", "C") as mesh:
        await send_plan(mesh["urls"]["A"], relay("B", "C"), trace_id=trace_id)
        await view.settled(trace_id)
        for handler in mesh["handlers"].values():
            await handler.aclose()
        state = view.state(trace_id)
    assert state["outcome"] == names.VERDICT_COMPLETED and state["losses"] == []
    assert view.tracker.shutdown["cancelled_producers"] == 0


def _refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/push"


async def test_push_to_a_webhook_that_refuses_is_lost(view: View) -> None:
    trace_id = new_trace_id()
    async with agents("A", "C", webhook=_refused_url()) as mesh:
        plan = {"calls": [{"to": "C", "blocking": False, "push": True, "plan": {"work_ms": 10}}]}
        await send_plan(mesh["urls"]["A"], plan, trace_id=trace_id)
        state = await view.settled(trace_id)
    assert state["outcome"] == names.VERDICT_LOST, state
    assert {loss["kind"] for loss in state["losses"]} == {names.END_PUSH_FAILED}
    assert view.tracker.push_failed == len(state["losses"]) >= 1


async def test_push_to_a_webhook_that_accepts_is_completed(view: View) -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def accept(_request: Any) -> JSONResponse:
        return JSONResponse({"ok": True})

    port = free_port()
    trace_id = new_trace_id()
    async with serve(Starlette(routes=[Route("/push", accept, methods=["POST"])]), port):
        async with agents("A", "C", webhook=f"http://127.0.0.1:{port}/push") as mesh:
            plan = {"calls": [{"to": "C", "blocking": False, "push": True, "plan": {"work_ms": 10}}]}
            await send_plan(mesh["urls"]["A"], plan, trace_id=trace_id)
            state = await view.settled(trace_id)
    assert state["outcome"] == names.VERDICT_COMPLETED, state
    assert view.tracker.push_failed == 0


async def test_call_to_a_peer_that_went_away_is_lost(view: View) -> None:
    """B goes away after A learnt its card: A's next delegation is refused by the
    network and never happens, though A's executor swallows the error and completes
    its own task. The delegation that worked before it is completed."""
    before, after = new_trace_id(), new_trace_id()
    port_a, port_b = free_port(), free_port()
    app_a, _, _ = build_app("A", port_a, {"B": f"http://127.0.0.1:{port_b}/"})
    app_b, _, _ = build_app("B", port_b, {})
    plan = {"calls": [{"to": "B"}]}
    async with serve(app_a, port_a):
        async with serve(app_b, port_b):
            await send_plan(f"http://127.0.0.1:{port_a}/", plan, trace_id=before)
            assert (await view.settled(before))["outcome"] == names.VERDICT_COMPLETED
        await send_plan(f"http://127.0.0.1:{port_a}/", plan, trace_id=after)
        state = await view.settled(after)
    assert state["outcome"] == names.VERDICT_LOST, state
    assert kinds(state["losses"]) == [names.END_CALL_FAILED]
    assert state["losses"][0][names.ATTR_ERROR_TYPE]


# --- the V2 handler's own corners -----------------------------------------------------
async def test_message_to_a_terminal_task_holds_nothing_and_is_linked(view: View) -> None:
    """V2 builds a throwaway ActiveTask for a SendMessage to a finished task; its
    queue dispatchers are never closed and end up destroyed while pending. The
    cascade still settles (failed: the agent refused the message), and the
    destroyed-pending records name it."""
    first, second = new_trace_id(), new_trace_id()
    async with agents("C") as mesh:
        events = await send_plan(mesh["urls"]["C"], {}, trace_id=first)
        task = next(e.task for e in reversed(events) if e.HasField("task"))
        assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED
        with pytest.raises(Exception):
            await send_plan(mesh["urls"]["C"], {}, trace_id=second, task=task)
        state = await view.settled(second)
        assert state["outcome"] == names.VERDICT_FAILED, state
        assert state["losses"] == []
        gc.collect()
        await poll(lambda: (view.tracker.settle_deferred(), [
            r for r in view.tracker.recent if r["kind"] == "destroyed_pending" and r["trace_id"] == second])[1],
            "the destroyed dispatchers linked to the cascade")
    linked = [r for r in view.tracker.recent if r["kind"] == "destroyed_pending" and r["trace_id"] == second]
    assert all(r[names.ATTR_TASK_ID] == task.id and r[names.ATTR_SDK_PLUMBING] for r in linked), linked
    assert view.tracker.destroyed_pending == 0  # SDK plumbing: listed, not counted as lost work
    assert view.state(second)["outcome"] == names.VERDICT_FAILED


@pytest.mark.parametrize("state_name", ["input", "auth"])
async def test_task_waiting_for_its_user_is_awaiting_input_then_completed(view: View, state_name: str) -> None:
    trace_id, follow_up = new_trace_id(), new_trace_id()
    async with agents("A", "C") as mesh:
        events = await send_plan(mesh["urls"]["A"], {"calls": [{"to": "C", "plan": {"outcome": state_name}}]},
                                 trace_id=trace_id)
        assert events
        state = await poll(lambda: (s := view.state(trace_id))["status"] == names.STATUS_AWAITING_INPUT and s,
                           "awaiting_input")
        view.now += 3600  # an hour with no progress: still waiting for the user, not stuck
        state = view.state(trace_id)
        assert state["status"] == names.STATUS_AWAITING_INPUT, state
        assert view.detector.counts()[1] == 0 and view.detector.awaiting_count() == 1
        [waiting] = state["awaiting"]
        assert waiting["state"] == {"input": "input_required", "auth": "auth_required"}[state_name]
        # the user answers: the task completes, and so does the cascade that waited on it
        c_task = pb.Task(id=waiting["task_id"], context_id=await _context_of(mesh["urls"]["C"], waiting["task_id"]))
        await send_plan(mesh["urls"]["C"], {}, trace_id=follow_up, task=c_task)
        state = await view.settled(trace_id)
        assert state["outcome"] == names.VERDICT_COMPLETED, state
        assert (await view.settled(follow_up))["outcome"] == names.VERDICT_COMPLETED


async def test_legacy_handler_settles_an_input_required_exchange_at_once(view: View) -> None:
    trace_id = new_trace_id()
    async with agents("C", legacy=True) as mesh:
        await send_plan(mesh["urls"]["C"], {"outcome": "input"}, trace_id=trace_id)
        state = await view.settled(trace_id)
    assert state["outcome"] == names.VERDICT_COMPLETED and state["awaiting"] == []


async def test_running_work_is_not_awaiting_input(view: View) -> None:
    """A cascade whose hop still works is open, then stuck past the threshold, never awaiting_input."""
    trace_id = new_trace_id()
    async with agents("C") as mesh:
        await send_plan(mesh["urls"]["C"], {"outcome": "hang"}, trace_id=trace_id, return_immediately=True)
        await poll(lambda: view.tracker.producers_in_flight == 1, "the producer to hang")
        assert view.state(trace_id)["status"] == names.STATUS_OPEN
        view.now += 3600
        assert view.state(trace_id)["status"] == names.STATUS_STUCK


async def _context_of(url: str, task_id: str) -> str:
    import httpx
    from a2a.client import ClientConfig, create_client

    async with httpx.AsyncClient(timeout=30) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=False, httpx_client=http))
        return (await client.get_task(pb.GetTaskRequest(id=task_id))).context_id



# --- fail-open: an error while preparing a call holds nothing -----------------------------
async def test_header_building_that_raises_leaves_the_answer_and_settlement_intact(
    view: View, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the outbound headers fails: the guard swallows it, the call goes out
    without our headers (so B starts a trace of its own), the answer is the one an
    uninstrumented agent gives, and nothing (no unit, no send, no context) is left
    behind to hold A's cascade."""
    def broken(*_args: Any, **_kwargs: Any) -> dict[str, str]:
        raise RuntimeError("header building broke")

    trace_id = new_trace_id()
    async with agents("A", "B") as mesh:
        reference = await send_plan(mesh["urls"]["A"], relay("B"))
        monkeypatch.setattr(client_wrappers, "_outbound_headers", broken)
        answer = await send_plan(mesh["urls"]["A"], relay("B"), trace_id=trace_id)
        state = await view.settled(trace_id)
    assert [e.task.status.state for e in answer if e.HasField("task")] == \
        [e.task.status.state for e in reference if e.HasField("task")]
    assert state["outcome"] == names.VERDICT_COMPLETED, state
    assert [h for h in state["hops"] if h["sent"]] == []  # no send recorded for the call that had no headers
