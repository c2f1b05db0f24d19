"""Detection latency of the settlement signal, against the usual ways of guessing "done".

    .venv/bin/python benchmarks/bench_settlement.py [--cascades 80] [--seed 1] [--poll-ms 5] [--json FILE]

Real mesh on 127.0.0.1: a collector, a push webhook and A -> B -> C, every agent
a subprocess under opentelemetry-instrument. Each cascade: the client sends a
non-blocking root request to A; A delegates to B (blocking); B delegates to C
non-blocking with a push webhook; C works a random 20-200 ms. Cascades run one
at a time. For each one, three answers to "is it done?" are taken at once:

* collector: GET /v1/cascades/{id}/wait (long-poll) -> its settled_at, and the
  time the long-poll returned to the client; plus the collector's own
  detection_latency_seconds (settle minus the last hop going passive);
* first push: the conformance kit's way, done on the first push webhook
  request (or failed after 15 s);
* root COMPLETED: polling A's root task (client get_task) until COMPLETED.

Ground truth is what the agents and the webhook recorded (work/call events,
push_received), read after every process was stopped. "True settlement" of a
cascade is its last ground-truth event; a method is *early* when it answers
before that; latency = answer - true settlement (negative = early).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as pb

from a2a_quiescence.demo.harness import Mesh, events_by_trace, read_events
from a2a_quiescence.demo.mesh import new_trace_id, start_plan

PUSH_GIVE_UP = 15.0  # the conformance kit's timeout
GOAL_P99_MS = 25.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))  # nearest rank
    return s[k]


async def long_poll(http: httpx.AsyncClient, api: str, trace_id: str) -> dict[str, Any]:
    """The collector's long-poll for one cascade, as a client sees it: when it returned,
    its HTTP status, the cascade's settled_at and the collector's detection latency."""
    r = await http.get(f"{api}/v1/cascades/{trace_id}/wait", params={"timeout": 30}, timeout=40)
    returned = time.time()
    state = r.json()
    return {"returned": returned, "status": r.status_code, "settled_at": state.get("settled_at"),
            "detection_latency": state.get("detection_latency_seconds")}


async def one_cascade(
    api: str, a_url: str, client: Any, http: httpx.AsyncClient, work_ms: int, poll_s: float
) -> dict[str, Any]:
    trace_id = new_trace_id()
    plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "blocking": False, "push": True,
                                                       "plan": {"work_ms": work_ms}}]}}]}
    out: dict[str, Any] = {"trace_id": trace_id, "work_ms": work_ms}

    async def collector() -> None:
        answer = await long_poll(http, api, trace_id)
        out.update(api_returned=answer["returned"], api_status=answer["status"], settled_at=answer["settled_at"],
                   detection_latency=answer["detection_latency"])

    waiter = asyncio.create_task(collector())
    out["sent"] = time.time()
    task_id = await start_plan(client, plan, trace_id=trace_id)
    assert task_id
    # "root task COMPLETED" polling
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = await client.get_task(pb.GetTaskRequest(id=task_id))
        if task.status.state == pb.TaskState.TASK_STATE_COMPLETED:
            out["root_completed"] = time.time()
            break
        await asyncio.sleep(poll_s)
    await waiter
    return out


async def run(args: argparse.Namespace, mesh: Mesh) -> list[dict[str, Any]]:
    rng = random.Random(args.seed)
    results = []
    async with httpx.AsyncClient(timeout=30) as http:
        client = await create_client(mesh.agents["A"].url, client_config=ClientConfig(streaming=False, httpx_client=http))
        for i in range(args.warmup + args.cascades):
            r = await one_cascade(mesh.api, mesh.agents["A"].url, client, http, rng.randint(20, 200), args.poll_ms / 1000)
            if i >= args.warmup:
                results.append(r)
            if (i + 1) % 20 == 0:
                print(f"  {i + 1}/{args.warmup + args.cascades} cascades", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cascades", type=int, default=80)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--poll-ms", type=float, default=5.0, help="get_task polling interval for the COMPLETED method")
    p.add_argument("--json", help="also write the raw per-cascade figures here")
    args = p.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="a2a-quiescence-bench-"))
    mesh = Mesh(workdir)
    mesh.events = workdir / "events.jsonl"
    try:
        mesh.start_collector()
        mesh.start_webhook()
        mesh.start_agent("C")
        mesh.start_agent("B", ["C"])
        mesh.start_agent("A", ["B"])
        t0 = time.monotonic()
        results = asyncio.run(run(args, mesh))
        elapsed = time.monotonic() - t0
    finally:
        mesh.stop_all()  # by PID; afterwards the ground truth is final

    events = events_by_trace(read_events(mesh.events))

    rows: dict[str, list[float]] = {"collector settled_at": [], "collector /wait returned": [],
                                    "first push webhook": [], "root task COMPLETED (poll)": []}
    failed: dict[str, int] = {k: 0 for k in rows}
    detection = []
    for r in results:
        evs = events.get(r["trace_id"], [])
        truth = max(e["t"] for e in evs)
        if r.get("api_status") == 200 and r.get("settled_at"):
            rows["collector settled_at"].append(r["settled_at"] - truth)
            rows["collector /wait returned"].append(r["api_returned"] - truth)
            if r.get("detection_latency") is not None:
                detection.append(r["detection_latency"])
        else:
            failed["collector settled_at"] += 1
            failed["collector /wait returned"] += 1
        pushes = [e["t"] for e in evs if e["event"] == "push_received"]
        if pushes and min(pushes) - r["sent"] <= PUSH_GIVE_UP:
            rows["first push webhook"].append(min(pushes) - truth)
        else:
            failed["first push webhook"] += 1
        if r.get("root_completed"):
            rows["root task COMPLETED (poll)"].append(r["root_completed"] - truth)
        else:
            failed["root task COMPLETED (poll)"] += 1

    n = len(results)
    print(f"\n{n} cascades A -> B -(non-blocking, push)-> C, C works 20-200 ms; {elapsed:.1f} s; seed {args.seed}")
    print("latency = answer - true settlement (last ground-truth event); negative = answered before the cascade was done\n")
    header = f"{'method':30} {'answers':>7} {'EARLY':>12} {'p50 ms':>9} {'p99 ms':>9} {'min ms':>9} {'max ms':>9}"
    print(header)
    print("-" * len(header))
    summary: dict[str, Any] = {}
    for name, lat in rows.items():
        early = sum(1 for x in lat if x < 0)
        ms = [x * 1000 for x in lat]
        summary[name] = {"answers": len(lat), "failed": failed[name], "early": early,
                         "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99),
                         "min_ms": min(ms) if ms else None, "max_ms": max(ms) if ms else None}
        print(f"{name:30} {len(lat):>7} {f'{early} ({100 * early / n:.0f}%)':>12} {pct(ms, 50):>9.1f} {pct(ms, 99):>9.1f}"
              f" {min(ms) if ms else float('nan'):>9.1f} {max(ms) if ms else float('nan'):>9.1f}"
              + (f"   ({failed[name]} no answer)" if failed[name] else ""))
    det = [x * 1000 for x in detection]
    print(f"\ncollector detection_latency_seconds (settle - last hop passive): p50 {pct(det, 50):.1f} ms, "
          f"p99 {pct(det, 99):.1f} ms, max {max(det) if det else float('nan'):.1f} ms, mean {statistics.fmean(det) if det else float('nan'):.1f} ms")
    p99 = summary["collector settled_at"]["p99_ms"]
    print(f"goal: collector p99 <= {GOAL_P99_MS:.0f} ms on loopback -> measured {p99:.1f} ms: "
          + ("met" if p99 <= GOAL_P99_MS else "NOT met"))
    print(f"early settles by the collector: {summary['collector settled_at']['early']} (must be 0)")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "detection_ms": det, "results": results}, indent=1))
    return 0 if summary["collector settled_at"]["early"] == 0 and not failed["collector settled_at"] else 1


if __name__ == "__main__":
    sys.exit(main())
