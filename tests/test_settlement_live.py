"""Settlement on a real mesh: subprocess a2a-sdk agents under opentelemetry-instrument.

Ground truth comes from the agents themselves (``--events``: work_start/work_end,
call_start/call_end, hang, and the webhook's push_received, each with a wall
clock ``t`` and the cascade's trace id). The collector's ``settled_at`` is
compared with the last ground-truth event of the same cascade: a settle before
that event would be an early settle, which must never happen.

Everything listens on 127.0.0.1, is synchronised by polling with deadlines
(never by sleeping a guessed time) and is stopped by PID.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types import a2a_pb2 as pb

from a2a_quiescence.demo.harness import Mesh, read_events
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.wait import describe_holders

from support import cancel, relay_mesh, send_nonblocking, wait_until

pytestmark = pytest.mark.timeout(240)

DEADLINE = 60.0  # generous upper bound for anything we poll for; never a pass/fail threshold


# --- helpers -------------------------------------------------------------------
def events_for(path: Path, trace_id: str) -> list[dict[str, Any]]:
    return [e for e in read_events(path) if e.get("trace_id") == trace_id]


def balanced(events: list[dict[str, Any]]) -> bool:
    """Every work_start has its work_end and every call_start its call_end."""
    kinds = [e["event"] for e in events]
    return kinds.count("work_start") == kinds.count("work_end") and kinds.count("call_start") == kinds.count(
        "call_end"
    )


poll = partial(wait_until, timeout=DEADLINE, every=0.02)  # (check, what); pytest.fail at the deadline


def cascade(api: str, trace_id: str) -> dict[str, Any]:
    r = httpx.get(f"{api}/v1/cascades/{trace_id}", timeout=10)
    r.raise_for_status()
    return r.json()


def wait_api(api: str, trace_id: str, timeout: float, roots: int = 1) -> httpx.Response:
    return httpx.get(
        f"{api}/v1/cascades/{trace_id}/wait", params={"timeout": timeout, "roots": roots}, timeout=timeout + 10
    )


SETTLES: list[tuple[str, float]] = []  # (trace id, settled_at) of every settle seen in this module


def assert_not_early(events_path: Path, trace_id: str, settled_at: float) -> list[dict[str, Any]]:
    """The settle is not before the last ground-truth event of the cascade."""
    SETTLES.append((trace_id, settled_at))
    # the hops' own records of the work must be complete by now; wait for the writes to land
    evs = poll(lambda: (lambda e: e if e and balanced(e) else None)(events_for(events_path, trace_id)),
               f"balanced ground truth for {trace_id}")
    last = max(e["t"] for e in evs)
    assert settled_at >= last, f"EARLY settle of {trace_id}: settled_at {settled_at} < last event {last}: {evs}"
    return evs


def settle(mesh: Mesh, trace_id: str, roots: int = 1) -> dict[str, Any]:
    r = wait_api(mesh.api, trace_id, 30, roots)
    assert r.status_code == 200, f"not settled: {describe_holders(r.json())}"
    state = r.json()
    assert state["status"] == "settled" and state["settled_at"]
    assert mesh.events is not None
    assert_not_early(mesh.events, trace_id, state["settled_at"])
    return state


# --- the mesh ------------------------------------------------------------------
@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory):
    with relay_mesh(tmp_path_factory.mktemp("live")) as m:
        yield m


def chain(c_call: dict[str, Any], b_call: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"calls": [{"to": "B", **(b_call or {}), "plan": {"calls": [c_call]}}]}


def test_blocking_chain_settles_not_before_last_event(mesh: Mesh) -> None:
    trace_id = new_trace_id()
    asyncio.run(send_plan(mesh.agents["A"].url, chain({"to": "C", "plan": {"work_ms": 50}}), trace_id=trace_id))
    state = settle(mesh, trace_id)
    assert {h["hop"] for h in state["hops"]} == {"A", "B", "C"}
    assert state["detection_latency_seconds"] is not None and state["detection_latency_seconds"] >= 0


def test_nonblocking_with_push_settles_after_the_last_push(mesh: Mesh) -> None:
    trace_id = new_trace_id()
    plan = chain({"to": "C", "blocking": False, "push": True, "plan": {"work_ms": 120}})
    asyncio.run(send_plan(mesh.agents["A"].url, plan, trace_id=trace_id))
    # A has answered, B returned at once: C still works (non-blocking)
    state = settle(mesh, trace_id)
    evs = events_for(mesh.events, trace_id)
    pushes = [e for e in evs if e["event"] == "push_received"]
    assert pushes, "C delivered no push notification"
    assert state["settled_at"] >= max(e["t"] for e in pushes)
    c_end = [e for e in evs if e["agent"] == "C" and e["event"] == "work_end"]
    assert c_end and state["settled_at"] >= c_end[0]["t"]


def test_streaming_chain_settles_not_before_last_event(mesh: Mesh) -> None:
    trace_id = new_trace_id()
    plan = chain(
        {"to": "C", "stream": True, "plan": {"work_ms": 30, "stream_events": 3, "event_gap_ms": 20}},
        {"stream": True},
    )
    responses = asyncio.run(send_plan(mesh.agents["A"].url, plan, trace_id=trace_id, streaming=True))
    assert responses
    settle(mesh, trace_id)


def test_not_settled_while_a_hop_works(mesh: Mesh) -> None:
    """C hangs (non-blocking from B): the cascade is open, held by C, until C's task is cancelled."""
    trace_id = new_trace_id()
    plan = chain({"to": "C", "blocking": False, "push": True, "plan": {"outcome": "hang"}})
    asyncio.run(send_plan(mesh.agents["A"].url, plan, trace_id=trace_id))

    def held_by_c() -> dict[str, Any] | None:
        state = cascade(mesh.api, trace_id)
        assert not state.get("settled"), f"settled while C works: {state}"
        if any(h.get("kind") == "active_hop" and h.get("hop") == "C" for h in state.get("holders", [])):
            return state
        return None

    state = poll(held_by_c, "C to hold the cascade")
    assert state["status"] == "open"
    hang = poll(lambda: [e for e in events_for(mesh.events, trace_id) if e["event"] == "hang"], "C to hang")
    assert not [e for e in events_for(mesh.events, trace_id) if e["agent"] == "C" and e["event"] == "work_end"]
    r = wait_api(mesh.api, trace_id, 0.5)
    assert r.status_code == 408
    assert "hop C active" in describe_holders(r.json())
    # release C: cancel its task (a second root request into the cascade, at C)
    asyncio.run(cancel(mesh.agents["C"].url, hang[0]["task_id"], trace_id))
    state = settle(mesh, trace_id, roots=2)
    c_end = [e for e in events_for(mesh.events, trace_id) if e["agent"] == "C" and e["event"] == "work_end"]
    assert c_end and state["settled_at"] >= c_end[0]["t"]


def test_cancelled_task_settles_only_after_its_producer_finished(mesh: Mesh) -> None:
    trace_id = new_trace_id()
    plan = {"calls": [{"to": "B", "plan": {"work_ms": 10}}], "outcome": "hang"}
    task_id = asyncio.run(send_nonblocking(mesh.agents["A"].url, plan, trace_id))
    poll(lambda: [e for e in events_for(mesh.events, trace_id) if e["event"] == "hang"], "A to hang")
    r = wait_api(mesh.api, trace_id, 0.3)
    assert r.status_code == 408, r.json()
    assert any(h.get("kind") == "active_hop" and h["hop"] == "A" for h in r.json()["holders"])
    task = asyncio.run(cancel(mesh.agents["A"].url, task_id, trace_id))
    assert task.status.state == pb.TaskState.TASK_STATE_CANCELED
    state = settle(mesh, trace_id, roots=2)
    a_end = [e for e in events_for(mesh.events, trace_id) if e["agent"] == "A" and e["event"] == "work_end"]
    assert a_end, "A's producer never finished"
    assert state["settled_at"] >= a_end[0]["t"]


def test_uninstrumented_hop_keeps_the_cascade_open(mesh: Mesh) -> None:
    trace_id = new_trace_id()
    asyncio.run(send_plan(mesh.agents["A"].url, chain({"to": "U", "plan": {"work_ms": 10}}), trace_id=trace_id))
    # everything the instrumented hops did is over (A answered after B, B after U)
    poll(lambda: balanced(e := events_for(mesh.events, trace_id)) and e, "A and B to finish")
    u_authority = f"127.0.0.1:{mesh.agents['U'].port}"
    r = wait_api(mesh.api, trace_id, 1.0)
    assert r.status_code == 408
    state = r.json()
    assert state["status"] == "open" and not state["settled"]
    edges = [h for h in state["holders"] if h.get("kind") == "edge"]
    assert edges and edges[0]["from"] == "B" and edges[0]["destination"] == u_authority
    text = describe_holders(state)
    assert f"edge B->{u_authority}" in text and f"no reports from {u_authority}" in text
    # and it stays that way: A and B are passive, only the edge into U holds it
    assert all(h["kind"] == "edge" for h in cascade(mesh.api, trace_id)["holders"])
    assert wait_api(mesh.api, trace_id, 0.5).status_code == 408


def test_zz_no_settle_before_the_final_ground_truth(mesh: Mesh) -> None:
    """Re-check every settle of this module against the agents' final records:
    stop the agents (and the webhook) first, so no event can still be on its way."""
    assert SETTLES
    for proc in list(mesh.agents.values()) + [mesh.webhook]:
        assert proc is not None
        proc.stop()
    assert mesh.events is not None
    all_events = read_events(mesh.events)
    early = []
    for trace_id, settled_at in SETTLES:
        last = max(e["t"] for e in all_events if e.get("trace_id") == trace_id)
        if settled_at < last:
            early.append((trace_id, settled_at, last))
    assert not early, f"early settles: {early}"


# --- a hop killed mid-cascade --------------------------------------------------
def test_killed_hop_makes_the_cascade_stuck(tmp_path: Path) -> None:
    m = Mesh(tmp_path)
    m.events = tmp_path / "events.jsonl"
    try:
        m.start_collector(stuck_after=2.0, agent_timeout=2.0)
        m.start_agent("C")
        m.start_agent("B", ["C"])
        m.start_agent("A", ["B"])
        trace_id = new_trace_id()
        plan = chain({"to": "C", "blocking": False, "plan": {"outcome": "hang"}})
        asyncio.run(send_plan(m.agents["A"].url, plan, trace_id=trace_id))
        poll(lambda: [e for e in events_for(m.events, trace_id) if e["event"] == "hang"], "C to hang")
        poll(
            lambda: any(h.get("kind") == "active_hop" and h["hop"] == "C" for h in cascade(m.api, trace_id)["holders"]),
            "the collector to see C active",
        )
        m.agents["C"].kill()  # SIGKILL: C never reports again

        def stuck_and_lost() -> dict[str, Any] | None:
            state = cascade(m.api, trace_id)
            assert not state.get("settled"), f"a cascade with a killed hop settled: {state}"
            held = [h for h in state["holders"] if h.get("kind") == "active_hop" and h["hop"] == "C"]
            if state["status"] == "stuck" and held and held[0].get("hop_state") == "lost":
                return state
            return None

        state = poll(stuck_and_lost, "the cascade to be reported stuck, held by the lost hop C")
        assert [h["hop"] for h in state["holders"] if h["kind"] == "active_hop"] == ["C"]
        assert "hop C active" in describe_holders(state) and "lost" in describe_holders(state)
        mesh_view = httpx.get(f"{m.api}/v1/mesh", timeout=10).json()
        assert mesh_view["stuck"] >= 1 and not mesh_view["quiet"]
        assert trace_id in [c["trace_id"] for c in mesh_view["cascades"]["stuck"]]
        assert wait_api(m.api, trace_id, 0.5).status_code == 408  # never settled by timeout
        assert "a2a_cascades_stuck 1.0" in m.metrics()
    finally:
        m.stop_all()
