"""Chaos on real a2a-sdk agents: random plans, cancels, and a hop SIGKILLed mid-run.

Five agents (A..E, each may delegate to the ones after it) run seeded random
plans: fan-out, delays, blocking and non-blocking sends, push notifications,
streaming, planned failures; some cascades hang at their root and are
cancelled by the client; some are parked on D, which is then SIGKILLed while
other cascades are still running (later calls to D are refused).

Ground truth is what the agents wrote to their events file. Asserted:
* zero early settles: every settled cascade has settled_at >= the last
  ground-truth event of its trace id (read after every agent was stopped, so
  the record is final), and none had a work_start without a work_end;
* a cascade in which the killed hop was working never settles;
* every cascade either settles, or is reported stuck with a holder naming the
  killed hop (active and lost) or an edge into it.

Seed: A2A_QUIESCENCE_CHAOS_SEED (default 20240611). Everything on 127.0.0.1,
synchronised by polling with deadlines, stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from a2a_quiescence.demo.harness import Mesh, events_by_trace, read_events
from a2a_quiescence.demo.mesh import new_trace_id, send_plan

from support import cancel, send_nonblocking, wait_until_async

pytestmark = pytest.mark.timeout(180)

SEED = int(os.environ.get("A2A_QUIESCENCE_CHAOS_SEED", "20240611"))
ORDER = ["A", "B", "C", "D", "E"]
PEERS = {name: ORDER[i + 1 :] for i, name in enumerate(ORDER)}
VICTIM = "D"
DEADLINE = 60.0


def unfinished_work(evs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(agent, task id) of every work_start without its work_end."""
    started = {(e["agent"], e["task_id"]) for e in evs if e["event"] == "work_start"}
    ended = {(e["agent"], e["task_id"]) for e in evs if e["event"] == "work_end"}
    return sorted(started - ended)


def random_plan(rng: random.Random, agent: str, depth: int = 0) -> dict[str, Any]:
    plan: dict[str, Any] = {"work_ms": rng.choice([0, 5, 20, 50, 100, 150])}
    peers = PEERS[agent]
    if peers and depth < 3:
        calls = []
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            to = rng.choice(peers)
            calls.append(
                {
                    "to": to,
                    "blocking": rng.random() < 0.6,
                    "stream": rng.random() < 0.3,
                    "push": rng.random() < 0.4,
                    "plan": random_plan(rng, to, depth + 1),
                }
            )
        if calls:
            plan["calls"] = calls
            plan["parallel"] = rng.random() < 0.7
    if rng.random() < 0.25:
        plan["stream_events"] = rng.randint(1, 3)
        plan["event_gap_ms"] = rng.choice([0, 10, 30])
    if rng.random() < 0.1:
        plan["outcome"] = "fail"
    return plan


until = partial(wait_until_async, timeout=DEADLINE, every=0.02)  # (check, what); pytest.fail at the deadline


async def test_chaos_no_early_settle_and_the_killed_hop_is_named(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    mesh = Mesh(tmp_path)
    mesh.events = tmp_path / "events.jsonl"
    events = mesh.events
    roots: dict[str, int] = {}  # trace id -> root requests sent into it (a cancel is one more)
    kinds: dict[str, str] = {}
    answers: dict[str, str] = {}  # root requests that ended in an error (planned failures)
    try:
        mesh.start_collector(stuck_after=3.0, agent_timeout=2.0)
        mesh.start_webhook()
        for name in reversed(ORDER):
            mesh.start_agent(name, PEERS[name])
        victim_authority = f"127.0.0.1:{mesh.agents[VICTIM].port}"
        url = {name: mesh.agents[name].url for name in ORDER}

        async def root(kind: str, entry: str, plan: dict[str, Any], streaming: bool = False) -> str:
            trace_id = new_trace_id()
            roots[trace_id], kinds[trace_id] = 1, kind
            try:
                await send_plan(url[entry], plan, trace_id=trace_id, streaming=streaming)
            except Exception as exc:  # noqa: BLE001 - planned failures reach the client as A2A errors
                answers[trace_id] = repr(exc)
            return trace_id

        def random_root(kind: str) -> Any:
            entry = rng.choice(["A", "A", "B", "C"])
            return root(kind, entry, random_plan(rng, entry), streaming=rng.random() < 0.3)

        async def cancelled(entry: str, plan: dict[str, Any]) -> str:
            trace_id = new_trace_id()
            roots[trace_id], kinds[trace_id] = 1, "cancel"
            task_id = await send_nonblocking(url[entry], {**plan, "outcome": "hang"}, trace_id)
            await until(
                lambda: any(e["event"] == "hang" and e["agent"] == entry for e in events_by_trace(read_events(events)).get(trace_id, [])),
                f"{entry} to hang in {trace_id}",
            )
            roots[trace_id] = 2
            await cancel(url[entry], task_id, trace_id)
            return trace_id

        # wave 1: random cascades, cascades parked on D, cascades that hang until cancelled
        hang_d = {"calls": [{"to": "E", "plan": {"work_ms": 10}}], "outcome": "hang"}
        parked = [
            asyncio.create_task(root("victim", "A", {"calls": [{"to": "D", "blocking": True, "plan": hang_d}]})),
            asyncio.create_task(root("victim", "A", {"calls": [{"to": "B", "plan": {"calls": [
                {"to": "D", "blocking": False, "push": True, "plan": hang_d}]}}]})),
            asyncio.create_task(root("victim", "C", {"calls": [{"to": "D", "stream": True, "plan": hang_d}]}, streaming=True)),
        ]
        wave1 = [asyncio.create_task(random_root("random")) for _ in range(9)]
        cancels = [asyncio.create_task(cancelled(rng.choice(["A", "B", "C"]), random_plan(rng, "B", 1))) for _ in range(3)]

        def victims_parked() -> bool:
            grouped = events_by_trace(read_events(events))
            victims = [t for t, k in kinds.items() if k == "victim"]
            return len(victims) == 3 and all(
                any(e["event"] == "hang" and e["agent"] == VICTIM for e in grouped.get(t, [])) for t in victims
            )

        await until(victims_parked, "D to hang in all three parked cascades")
        mesh.agents[VICTIM].kill()  # SIGKILL mid-run, while wave 1 is still running

        # wave 2: more random cascades with D gone (calls to it are refused)
        wave2 = [asyncio.create_task(random_root("random-after-kill")) for _ in range(8)]
        done = await asyncio.wait_for(asyncio.gather(*parked, *wave1, *cancels, *wave2, return_exceptions=True), 120)
        failures = [d for d in done if isinstance(d, BaseException)]
        assert not failures, failures
        traces = list(roots)
        assert 20 <= len(traces) <= 25

        # every cascade settles, or is stuck naming the killed hop
        def holds_victim(state: dict[str, Any]) -> bool:
            for h in state.get("holders", []):
                if h.get("kind") == "active_hop" and h.get("hop") == VICTIM and h.get("hop_state") == "lost":
                    return True
                if h.get("kind") == "edge" and (h.get("to") == VICTIM or h.get("destination") == victim_authority):
                    return True
            return False

        verdict: dict[str, dict[str, Any]] = {}
        seen: dict[str, dict[str, Any]] = {}

        def decided() -> bool:
            for t in traces:
                if t in verdict:
                    continue
                state = seen[t] = httpx.get(f"{mesh.api}/v1/cascades/{t}", timeout=10).json()
                if state.get("settled") and state.get("settled_roots", 0) >= roots[t]:
                    verdict[t] = state
                elif state.get("status") == "stuck" and holds_victim(state):
                    verdict[t] = state
            return len(verdict) == len(traces)

        def undecided(_message: str) -> None:
            pending = {t: s for t, s in seen.items() if t not in verdict}
            pytest.fail(f"cascades neither settled nor stuck on {VICTIM}: {json.dumps(pending, indent=1)}")

        await wait_until_async(decided, "every cascade settled or stuck on the killed hop", timeout=DEADLINE,
                               every=0.05, fail=undecided)
        async with httpx.AsyncClient(timeout=10) as http:
            final = {t: (await http.get(f"{mesh.api}/v1/cascades/{t}")).json() for t in traces}

        # stop every agent (and the webhook): the ground truth is final after this
        for proc in [mesh.agents[n] for n in ORDER] + [mesh.webhook]:
            assert proc is not None
            proc.stop()
        grouped = events_by_trace(read_events(events))

        early, bad_stuck = [], []
        for t in traces:
            evs = grouped.get(t, [])
            assert evs, f"no ground truth for {t}"
            last = max(e["t"] for e in evs)
            state = final[t]
            if state.get("settled"):
                if state["settled_at"] < last or unfinished_work(evs):
                    early.append((t, kinds[t], state["settled_at"], last, unfinished_work(evs)))
            else:
                touched = any(e["agent"] == VICTIM or e.get("to") == VICTIM for e in evs)
                if not (touched and holds_victim(state)):
                    bad_stuck.append((t, kinds[t], state))
            if any(agent == VICTIM for agent, _ in unfinished_work(evs)):
                assert not state.get("settled"), f"{t}: settled though {VICTIM} was killed while working on it"
        assert not early, f"EARLY settles: {early}"
        assert not bad_stuck, f"unsettled without naming {VICTIM}: {bad_stuck}"
        for t, k in kinds.items():
            if k == "victim":
                assert not final[t].get("settled"), f"victim cascade {t} settled"
        untouched = [t for t in traces if not any(e["agent"] == VICTIM or e.get("to") == VICTIM for e in grouped[t])]
        assert all(final[t]["settled"] for t in untouched)
        settled = sum(1 for t in traces if final[t]["settled"])
        print(f"chaos seed {SEED}: {len(traces)} cascades, {settled} settled, {len(traces) - settled} stuck on {VICTIM}, "
              f"{len(untouched)} never touched {VICTIM}, {len(answers)} answered with an error; early settles: {len(early)}")
    finally:
        mesh.stop_all()
