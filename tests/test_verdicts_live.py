"""Verdicts as users get them: agents started with ``opentelemetry-instrument``
(subprocesses on 127.0.0.1), a real collector process, and its answers through
the HTTP API, ``/metrics``, ``a2a-quiescence wait`` and the pytest fixture.

Each verdict has a case where it must fire and one where it must not. The
drain case is the one this product exists for: every agent calls
``handler.aclose()`` in its lifespan (a2a-sdk PR #1105), nothing leaks, and
yet C's work is cancelled; the cascade must read ``lost``, never ``completed``.
"""

from __future__ import annotations

import asyncio
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types import a2a_pb2 as pb

from a2a_quiescence import names
from a2a_quiescence.demo.harness import Mesh, program_path, read_events
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.pytest_plugin import Quiescence
from support import metric, wait_until

pytestmark = pytest.mark.timeout(240)

DEADLINE = 60.0  # upper bound for polling; never a pass/fail threshold
STUCK_AFTER = 1.0  # the collector's --stuck-after here: short, so "not stuck" is observed past it
poll = partial(wait_until, timeout=DEADLINE, every=0.05)


def cascade(api: str, trace_id: str) -> dict[str, Any]:
    r = httpx.get(f"{api}/v1/cascades/{trace_id}", timeout=10)
    r.raise_for_status()
    return r.json()


def settled(api: str, trace_id: str) -> dict[str, Any]:
    return poll(lambda: (s := cascade(api, trace_id))["status"] == "settled" and s, f"{trace_id} settled")


def wait_cli(api: str, trace_id: str) -> subprocess.CompletedProcess:
    return subprocess.run([program_path("a2a-quiescence"), "wait", trace_id, "--endpoint", api, "--timeout", "30"],
                          capture_output=True, text=True, timeout=90)


def sample(mesh: Mesh, name: str, **labels: str) -> float | None:
    """One sample of the collector's /metrics (None when the series is absent)."""
    return metric(mesh.metrics(), name, **labels)


@pytest.fixture
def mesh(tmp_path: Path):
    with Mesh(tmp_path, events=tmp_path / "events.jsonl") as m:
        m.start_collector(stuck_after=STUCK_AFTER)
        yield m


def relay(last: dict[str, Any]) -> dict[str, Any]:
    return {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "plan": last}]}}]}


def start_relay(mesh: Mesh, *args: str) -> None:
    mesh.start_agent("C", args=args)
    mesh.start_agent("B", ["C"], args=args)
    mesh.start_agent("A", ["B"], args=args)


# --- the drain: lost, and the clean shutdown that is not --------------------------------
def test_aclose_drain_while_c_works_settles_lost_and_names_the_work(mesh: Mesh) -> None:
    start_relay(mesh)
    trace_id = new_trace_id()

    async def run() -> None:
        root = asyncio.create_task(send_plan(mesh.agents["A"].url, relay({"work_ms": 120_000}), trace_id=trace_id))
        assert mesh.events is not None
        await asyncio.to_thread(poll, lambda: any(e["event"] == "work_start" and e["agent"] == "C"
                                                  for e in read_events(mesh.events)), "C working")
        # every agent drains with aclose() in its lifespan: C first, while it works
        await asyncio.to_thread(mesh.agents["C"].stop)
        await root  # B's call to C ends (C went away); B and A finish their own tasks

    asyncio.run(run())
    state = settled(mesh.api, trace_id)
    assert state["outcome"] == names.VERDICT_LOST, state
    [loss] = [item for item in state["losses"] if item["kind"] == names.END_CANCELLED_BY_SHUTDOWN]
    assert loss["hop"] == "C" and loss["task_id"] and loss["detail"] == "executing"
    assert "mesh.py" in loss["parked_at"]
    # nothing leaked (the drain worked), and yet the work is gone: the gauges tell both
    poll(lambda: sample(mesh, names.M_SHUTDOWN_CANCELLED, agent="C") == 1, "C's cancelled producer")
    assert sample(mesh, names.M_SHUTDOWN_LEAKED, agent="C") == 0
    assert sample(mesh, names.M_CASCADES_SETTLED, outcome="lost") == 1
    r = wait_cli(mesh.api, trace_id)
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert "cancelled_by_shutdown" in r.stderr and "lost on C" in r.stderr
    with pytest.raises(pytest.fail.Exception, match="settled lost: lost on C"):
        Quiescence(mesh.api, timeout=30).assert_settled(trace_id)
    assert Quiescence(mesh.api, timeout=30).assert_settled(trace_id, allow={"lost"})["outcome"] == "lost"


def test_clean_cascade_then_clean_shutdown_is_completed(mesh: Mesh) -> None:
    start_relay(mesh)
    trace_id = new_trace_id()
    asyncio.run(send_plan(mesh.agents["A"].url, relay({"work_ms": 20}), trace_id=trace_id))
    r = wait_cli(mesh.api, trace_id)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "(completed" in r.stdout
    for name in ("A", "B", "C"):
        mesh.agents[name].stop()
    poll(lambda: sample(mesh, names.M_SHUTDOWN_CANCELLED, agent="C") == 0, "C's clean shutdown reported")
    assert sample(mesh, names.M_SHUTDOWN_LEAKED, agent="C") == 0
    assert cascade(mesh.api, trace_id)["outcome"] == names.VERDICT_COMPLETED
    assert sample(mesh, names.M_CASCADES_SETTLED, outcome="lost") == 0
    Quiescence(mesh.api, timeout=30).assert_settled(trace_id)


# --- failed, on both request handlers ---------------------------------------------------
@pytest.mark.parametrize("handler", ["v2", "legacy"])
def test_executor_that_raises_is_failed_exit_3(mesh: Mesh, handler: str) -> None:
    start_relay(mesh, *(["--legacy-handler"] if handler == "legacy" else []))
    failing, fine = new_trace_id(), new_trace_id()
    asyncio.run(send_plan(mesh.agents["A"].url, relay({"outcome": "fail"}), trace_id=failing))
    asyncio.run(send_plan(mesh.agents["A"].url, relay({}), trace_id=fine))
    r = wait_cli(mesh.api, failing)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "executor_failed" in r.stderr and "failed on C" in r.stderr
    assert wait_cli(mesh.api, fine).returncode == 0
    with pytest.raises(pytest.fail.Exception, match="settled failed"):
        Quiescence(mesh.api, timeout=30).assert_settled(failing)
    Quiescence(mesh.api, timeout=30).assert_settled(failing, allow={"failed"})
    assert sample(mesh, names.M_CASCADES_SETTLED, outcome="failed") == 1
    assert sample(mesh, names.M_CASCADES_SETTLED, outcome="completed") == 1


# --- pushes ------------------------------------------------------------------------------
@pytest.mark.parametrize("webhook", ["refuses", "accepts"])
def test_push_delivery_that_fails_is_lost(mesh: Mesh, webhook: str) -> None:
    if webhook == "accepts":
        mesh.start_webhook()
    else:
        mesh.webhook = None
    extra = [] if webhook == "accepts" else ["--webhook", "http://127.0.0.1:9/push"]  # discard port: refused
    mesh.start_agent("C")
    mesh.start_agent("A", ["C"], args=extra)
    trace_id = new_trace_id()
    plan = {"calls": [{"to": "C", "blocking": False, "push": True, "plan": {"work_ms": 10}}]}
    asyncio.run(send_plan(mesh.agents["A"].url, plan, trace_id=trace_id))
    state = settled(mesh.api, trace_id)
    if webhook == "refuses":
        assert state["outcome"] == names.VERDICT_LOST, state
        assert {item["kind"] for item in state["losses"]} == {names.END_PUSH_FAILED}
        assert {item["hop"] for item in state["losses"]} == {"C"}
        poll(lambda: (sample(mesh, names.M_PUSH_FAILED, agent="C") or 0) >= 1, "failed pushes counted")
    else:
        assert state["outcome"] == names.VERDICT_COMPLETED, state
        assert sample(mesh, names.M_PUSH_FAILED, agent="C") == 0


# --- the V2 handler: a message to a finished task; a task waiting for its user ----------------
def test_message_to_a_terminal_task_settles(mesh: Mesh) -> None:
    mesh.start_agent("C")
    first, second = new_trace_id(), new_trace_id()
    events = asyncio.run(send_plan(mesh.agents["C"].url, {}, trace_id=first))
    task = next(e.task for e in reversed(events) if e.HasField("task"))
    assert task.status.state == pb.TaskState.TASK_STATE_COMPLETED
    with pytest.raises(Exception):
        asyncio.run(send_plan(mesh.agents["C"].url, {}, trace_id=second, task=task))
    state = settled(mesh.api, second)
    assert state["outcome"] == names.VERDICT_FAILED and state["losses"] == [], state
    assert [f["kind"] for f in state["failures"]] == [names.END_REQUEST_FAILED]
    assert settled(mesh.api, first)["outcome"] == names.VERDICT_COMPLETED


def test_task_awaiting_input_is_not_stuck_and_completes_on_the_answer(mesh: Mesh) -> None:
    start_relay(mesh)
    trace_id, answer = new_trace_id(), new_trace_id()
    asyncio.run(send_plan(mesh.agents["A"].url, relay({"outcome": "input"}), trace_id=trace_id))
    # past --stuck-after with no progress: waiting for its user is not being stuck
    state = poll(lambda: (s := cascade(mesh.api, trace_id))["seconds_without_progress"] > 2 * STUCK_AFTER and s,
                 "time past the stuck threshold")
    assert state["status"] == names.STATUS_AWAITING_INPUT, state
    [waiting] = state["awaiting"]
    assert waiting["hop"] == "C" and waiting["state"] == "input_required"
    assert sample(mesh, names.M_CASCADES_STUCK) == 0
    assert sample(mesh, names.M_CASCADES_AWAITING) == 1
    r = subprocess.run([program_path("a2a-quiescence"), "wait", trace_id, "--endpoint", mesh.api, "--timeout", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "awaiting_input" in r.stderr and waiting["task_id"] in r.stderr

    # the user answers C's question: C's task completes, and the cascade that waited on it settles
    context_id = asyncio.run(_context_of(mesh.agents["C"].url, waiting["task_id"]))
    asyncio.run(send_plan(mesh.agents["C"].url, {}, trace_id=answer,
                          task=pb.Task(id=waiting["task_id"], context_id=context_id)))
    assert settled(mesh.api, trace_id)["outcome"] == names.VERDICT_COMPLETED
    assert settled(mesh.api, answer)["outcome"] == names.VERDICT_COMPLETED
    assert sample(mesh, names.M_CASCADES_AWAITING) == 0


def test_a_working_hop_past_the_threshold_is_stuck_not_awaiting(mesh: Mesh) -> None:
    mesh.start_agent("C")
    trace_id = new_trace_id()
    asyncio.run(send_plan(mesh.agents["C"].url, {"outcome": "hang"}, trace_id=trace_id, return_immediately=True))
    state = poll(lambda: (s := cascade(mesh.api, trace_id))["seconds_without_progress"] > 2 * STUCK_AFTER and s,
                 "time past the stuck threshold")
    assert state["status"] == names.STATUS_STUCK and state["awaiting"] == []
    assert sample(mesh, names.M_CASCADES_STUCK) == 1 and sample(mesh, names.M_CASCADES_AWAITING) == 0


async def _context_of(url: str, task_id: str) -> str:
    from a2a.client import ClientConfig, create_client

    async with httpx.AsyncClient(timeout=30) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=False, httpx_client=http))
        return (await client.get_task(pb.GetTaskRequest(id=task_id))).context_id
