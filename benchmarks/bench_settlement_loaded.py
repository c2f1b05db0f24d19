"""Detection latency of the settlement signal under load, and where that time goes.

    .venv/bin/python -m benchmarks.bench_settlement_loaded [--cascades 200] [--concurrency 4]
        [--breakdown both|on|off] [--agent-env KEY=VALUE ...] [--json FILE]

Real mesh on 127.0.0.1, every part its own process: a collector, a push webhook
and four agents under opentelemetry-instrument, A -> {B, C}, B -> D. Each
cascade: the client sends a non-blocking root request to A; A delegates to B
(blocking) and to C (non-blocking, with a push webhook) at once; B delegates to
D (non-blocking, with a push webhook); C and D each work a random 20-200 ms.
``--concurrency`` cascades are in flight at any time (each worker starts its
next cascade as soon as the collector has answered its last one).

Per cascade the client long-polls GET /v1/cascades/{id}/wait, started before
the root request. Ground truth is what the agents and the webhook recorded
(work/call events, push_received), read after every process was stopped; true
settlement is a cascade's last ground-truth event. An answer before it is
*early* (must be 0); latency = the long-poll's answer at the client - true
settlement; also the collector's settled_at - true settlement.

The breakdown (``--breakdown on``) runs the same load with the agents exporting
through benchmarks/otlp_tap.py, which timestamps each request's arrival and the
collector's answer to it. For each cascade, from the last hop going passive
(P = the collector's settled_at - its detection latency, i.e. the latest
passive_since in its view) to:

* taken: the settling snapshot's ``at`` (the reporter woke, waited its
  gathering delay or coalescing window, took the snapshot);
* arrived: the whole POST carrying it reached the tap (encode and send);
* decided: the collector's settled_at (the tap's forward, the collector's
  event loop queue, HTTP, decode, apply, the rule);
* applied: the collector's answer to that POST was back at the tap;
* answered: the long-poll's answer reached the client (the wait's wake,
  the cascade's description, the response).

The collector has no timestamp of its own for "request read" or "apply
started", so "decided" is split by replaying every snapshot request the tap
saw through the collector's decode and apply code in this process: its own
work on the settling request, and the rest (queueing, HTTP, the tap's
forward). Also printed: last ground-truth event -> last hop passive (the
agent's side), snapshot POSTs per cascade per agent, and each process's CPU
per cascade; the load average and CPU pressure before and after each run.
With ``both`` (default) the direct run gives the headline figures and the
tapped run the breakdown; the tap's extra hop makes the tapped figures a
little later. ``--agent-env`` tries a reporter setting without editing code.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from a2a.client import ClientConfig, create_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from a2a_quiescence.demo.harness import Mesh, events_by_trace, free_port, read_events  # noqa: E402
from a2a_quiescence.demo.mesh import new_trace_id, start_plan  # noqa: E402
from benchmarks.bench_ingest import cpu_seconds  # noqa: E402
from benchmarks.bench_settlement import GOAL_P99_MS, long_poll, pct  # noqa: E402

AGENTS = ("A", "B", "C", "D")
STAGES = ("taken", "arrived", "decided", "applied", "answered")


def pressure() -> float | None:
    """The kernel's CPU pressure (share of the last 10 s some runnable task waited for a core), if it says."""
    try:
        return float(Path("/proc/pressure/cpu").read_text().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def plan(rng: random.Random) -> dict[str, Any]:
    return {"calls": [
        {"to": "B", "plan": {"calls": [{"to": "D", "blocking": False, "push": True,
                                        "plan": {"work_ms": rng.randint(20, 200)}}]}},
        {"to": "C", "blocking": False, "push": True, "plan": {"work_ms": rng.randint(20, 200)}},
    ]}


async def one_cascade(api: str, client: Any, http: httpx.AsyncClient, cascade_plan: dict[str, Any]) -> dict[str, Any]:
    trace_id = new_trace_id()
    out: dict[str, Any] = {"trace_id": trace_id}

    async def wait() -> None:
        answer = await long_poll(http, api, trace_id)
        out.update(answered=answer["returned"], status=answer["status"], settled_at=answer["settled_at"],
                   detection_latency=answer["detection_latency"])

    waiter = asyncio.create_task(wait())
    out["sent"] = time.time()
    await start_plan(client, cascade_plan, trace_id=trace_id)
    await waiter
    return out


async def drive(args: argparse.Namespace, mesh: Mesh) -> list[dict[str, Any]]:
    rng = random.Random(args.seed)
    total = args.warmup + args.cascades
    plans = [plan(rng) for _ in range(total)]
    results: list[dict[str, Any]] = []
    started = 0
    limits = httpx.Limits(max_connections=4 * args.concurrency, max_keepalive_connections=4 * args.concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        config = ClientConfig(streaming=False, httpx_client=http)
        client = await create_client(mesh.agents["A"].url, client_config=config)

        async def worker() -> None:
            nonlocal started
            while started < total:
                i = started
                started += 1
                r = await one_cascade(mesh.api, client, http, plans[i])
                r["warmup"] = i < args.warmup
                results.append(r)
                if len(results) % 50 == 0:
                    print(f"  {len(results)}/{total} cascades", file=sys.stderr)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return results


def start_tap(mesh: Mesh, out: Path) -> subprocess.Popen:
    """The tap between the agents and the collector; the agents started after this export to it."""
    port = free_port()
    tap = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.otlp_tap", "--listen", f"127.0.0.1:{port}",
         "--upstream", f"127.0.0.1:{mesh.otlp_port}", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=(mesh.workdir / "tap.log").open("ab"), text=True,
    )
    assert tap.stdout is not None
    if tap.stdout.readline().strip() != "tap ready":  # it prints this once it listens
        raise RuntimeError("the OTLP tap did not start (see tap.log)")
    mesh.otlp_port = port
    return tap


def run_mesh(args: argparse.Namespace, tapped: bool) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="a2a-quiescence-bench-loaded-"))
    mesh = Mesh(workdir)
    mesh.events = workdir / "events.jsonl"
    tap_out = workdir / "tap.jsonl"
    tap = None
    agent_env = dict(kv.split("=", 1) for kv in args.agent_env)
    load_before = (*os.getloadavg(), pressure())
    cpu: dict[str, float] = {}
    try:
        mesh.start_collector()
        if tapped:
            tap = start_tap(mesh, tap_out)
        mesh.start_webhook()
        mesh.start_agent("D", env=agent_env)
        mesh.start_agent("C", env=agent_env)
        mesh.start_agent("B", ["D"], env=agent_env)
        mesh.start_agent("A", ["B", "C"], env=agent_env)
        procs = {name: p.popen.pid for name, p in mesh.agents.items()}
        assert mesh.collector is not None
        procs["collector"] = mesh.collector.popen.pid
        cpu0 = {name: cpu_seconds(pid) for name, pid in procs.items()}
        t0 = time.monotonic()
        results = asyncio.run(drive(args, mesh))
        elapsed = time.monotonic() - t0
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in procs.items()}
    finally:
        for proc in mesh.agents.values():
            proc.stop()  # first: their last snapshots still go through the tap
        if tap is not None and tap.poll() is None:
            tap.send_signal(signal.SIGTERM)
            tap.wait(30)
        mesh.stop_all()  # by PID; afterwards the ground truth is final
    return {"results": results, "events": events_by_trace(read_events(mesh.events)), "elapsed": elapsed,
            "cpu": cpu, "load": (load_before, (*os.getloadavg(), pressure())), "tapped": tapped,
            "tap": read_tap(tap_out) if tapped else None}


def read_tap(path: Path) -> dict[str, Any]:
    requests: dict[int, dict[str, Any]] = {}
    snaps: dict[str, list[dict[str, Any]]] = {}
    spans: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if item["kind"] == "request":
            requests[item["n"]] = item
        else:
            (snaps if item["kind"] == "snapshot" else spans).setdefault(item["trace_id"], []).append(item)
    for trace in snaps.values():
        for s in trace:
            requests[s["n"]].setdefault("hop", s["hop"])
            requests[s["n"]].setdefault("traces", []).append(s["trace_id"])
    return {"requests": requests, "snaps": snaps, "spans": spans}


def replay(tap: dict[str, Any]) -> dict[str, float]:
    """The collector's own work on each cascade's settling request, without HTTP or
    queueing: every /v1/logs body the tap saw, in arrival order, decoded and applied
    in this process the way the collector's Ingest.apply does (the same modules).
    Seconds per trace id, for the request in which it settled."""
    from a2a_quiescence import names
    from a2a_quiescence.collector import otlp
    from a2a_quiescence.collector.settlement import Detector
    from a2a_quiescence.collector.state import MeshState

    detector = Detector()
    state = MeshState(detector=detector)
    out: dict[str, float] = {}
    for q in sorted(tap["requests"].values(), key=lambda q: q["arrived"]):
        if not q.get("body"):
            continue
        body = base64.b64decode(q["body"])
        began = time.perf_counter()
        for item in otlp.snapshots(otlp.decode("logs", body, otlp.PROTOBUF)):  # what Ingest.apply does
            if isinstance(item, otlp.PayloadError):
                continue
            if item.kind == names.EVENT_HOP_SNAPSHOT:
                state.ingest_hop(item.agent, item.body)
            else:
                state.ingest_cascade(item.agent, item.trace_id, item.body)
        took = time.perf_counter() - began
        for trace_id in q.get("traces", ()):
            cascade = detector.get(trace_id)
            if cascade is not None and cascade.settled and trace_id not in out:
                out[trace_id] = took
    return out


def breakdown(r: dict[str, Any], tap: dict[str, Any]) -> dict[str, Any] | None:
    """Seconds from the last hop going passive (P) to each stage, for one settled cascade."""
    settled, latency = r.get("settled_at"), r.get("detection_latency")
    if settled is None or latency is None:
        return None
    passive = settled - latency
    # the settling snapshot: in the request the collector was handling when it decided
    for s in tap["snaps"].get(r["trace_id"], []):
        req = tap["requests"][s["n"]]
        if req["arrived"] <= settled <= req["answered"]:
            return {"taken": s["at"] - passive, "arrived": req["arrived"] - passive,
                    "decided": settled - passive, "applied": req["answered"] - passive,
                    "answered": r["answered"] - passive, "hop": s["hop"],
                    "settling_is_last_passive": abs((s["passive_since"] or 0) - passive) < 1e-6}
    return None


def ms(xs: list[float]) -> list[float]:
    return [x * 1000 for x in xs]


def report(args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
    results = [r for r in run["results"] if not r["warmup"]]
    events = run["events"]
    answered, decided, early, failed, truth_to_p = [], [], 0, 0, []
    for r in results:
        evs = events.get(r["trace_id"], [])
        truth = max(e["t"] for e in evs)
        r["truth"] = truth
        if r.get("status") != 200 or r.get("settled_at") is None:
            failed += 1
            continue
        answered.append(r["answered"] - truth)
        decided.append(r["settled_at"] - truth)
        early += r["settled_at"] < truth or r["answered"] < truth
        if r.get("detection_latency") is not None:
            truth_to_p.append(r["settled_at"] - r["detection_latency"] - truth)
    n = len(results)
    (l1, _, _, p1), (l2, _, _, p2) = run["load"]
    label = "through the tap" if run["tapped"] else "direct"
    print(f"\n== {label}: {n} cascades A -> {{B, C (push)}}, B -> D (push), {args.concurrency} in flight;"
          f" {run['elapsed']:.1f} s; load average {l1:.2f} before, {l2:.2f} after; CPU pressure (some, avg10)"
          f" {p1}% before, {p2}% after")
    a, d = ms(answered), ms(decided)
    print(f"long-poll answer - true settlement: p50 {pct(a, 50):.1f} ms, p99 {pct(a, 99):.1f} ms, max {max(a):.1f} ms")
    print(f"collector settled_at - true settlement: p50 {pct(d, 50):.1f} ms, p99 {pct(d, 99):.1f} ms")
    print(f"last ground-truth event -> last hop passive: p50 {pct(ms(truth_to_p), 50):.1f} ms,"
          f" p99 {pct(ms(truth_to_p), 99):.1f} ms")
    print(f"early: {early} (must be 0); no answer: {failed}")
    cpu = run["cpu"]
    per = {k: 1000 * v / max(1, len(run["results"])) for k, v in cpu.items()}
    print("CPU per cascade (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
    summary: dict[str, Any] = {
        "tapped": run["tapped"], "cascades": n, "early": early, "failed": failed, "load": run["load"],
        "answered_p50_ms": pct(a, 50), "answered_p99_ms": pct(a, 99), "answered_max_ms": max(a),
        "settled_p50_ms": pct(d, 50), "settled_p99_ms": pct(d, 99), "cpu_ms_per_cascade": per,
        "truth_to_passive_p50_ms": pct(ms(truth_to_p), 50), "truth_to_passive_p99_ms": pct(ms(truth_to_p), 99),
    }
    if run["tapped"]:
        summary.update(report_breakdown(results, run["tap"]))
    goal = pct(a, 99)
    print(f"goal: long-poll p99 <= {GOAL_P99_MS:.0f} ms under this load -> {goal:.1f} ms: "
          + ("met" if goal <= GOAL_P99_MS else "NOT met"))
    return summary


def report_breakdown(results: list[dict[str, Any]], tap: dict[str, Any]) -> dict[str, Any]:
    pairs = [(r["trace_id"], b) for r in results if (b := breakdown(r, tap)) is not None]
    matched, rows = [t for t, _ in pairs], [b for _, b in pairs]
    logs = [q for q in tap["requests"].values() if q["path"].endswith("/v1/logs") and q.get("hop")]
    posts: dict[str, int] = {}
    for q in logs:
        posts[q["hop"]] = posts.get(q["hop"], 0) + 1
    print(f"\nbreakdown ({len(rows)} of {len(results)} cascades matched to their settling POST), ms after the"
          " last hop went passive:")
    print(f"  {'stage':10} {'p50':>7} {'p99':>7} {'max':>7}   {'its own step: p50':>17} {'p99':>7}")
    out: dict[str, Any] = {"breakdown": {}}
    prev = None
    for stage in STAGES:
        total = ms([b[stage] for b in rows])
        step = ms([b[stage] - (b[prev] if prev else 0.0) for b in rows])
        out["breakdown"][stage] = {"p50": pct(total, 50), "p99": pct(total, 99), "max": max(total),
                                   "step_p50": pct(step, 50), "step_p99": pct(step, 99)}
        print(f"  {stage:10} {pct(total, 50):>7.1f} {pct(total, 99):>7.1f} {max(total):>7.1f}"
              f"   {pct(step, 50):>17.1f} {pct(step, 99):>7.1f}")
        prev = stage
    slow = sorted(rows, key=lambda b: b["answered"])[-max(1, len(rows) // 20):]
    steps = []
    prev = None
    for stage in STAGES:
        steps.append(f"{stage} {statistics.fmean(1000 * (b[stage] - (b[prev] if prev else 0.0)) for b in slow):.1f}")
        prev = stage
    print(f"  the slowest 5% ({len(slow)}), mean of each step: " + ", ".join(steps))
    own = replay(tap)
    work = ms([own[r["trace_id"]] for r in results if r["trace_id"] in own])
    queue = ms([b["decided"] - b["arrived"] - own[t] for t, b in zip(matched, rows) if t in own])
    print(f"  of 'decided': the collector's own work on the settling request (decode, apply, rule; replayed in"
          f" this process, {len(work)} cascades) p50 {pct(work, 50):.2f} ms, p99 {pct(work, 99):.2f} ms;"
          f" the rest (the tap's forward, HTTP, waiting for the collector's loop) p50 {pct(queue, 50):.1f} ms,"
          f" p99 {pct(queue, 99):.1f} ms")
    out["collector_work"] = {"p50": pct(work, 50), "p99": pct(work, 99)}
    out["collector_queue"] = {"p50": pct(queue, 50), "p99": pct(queue, 99)}
    last = sum(b["settling_is_last_passive"] for b in rows)
    print(f"  the settling snapshot is the last hop's passive one in {last} of {len(rows)};"
          " settling hop: " + ", ".join(f"{h} {sum(b['hop'] == h for b in rows)}" for h in AGENTS))
    cascades = max(1, len(tap["snaps"]))
    print("  snapshot POSTs per cascade: " + ", ".join(f"{h} {posts.get(h, 0) / cascades:.2f}" for h in AGENTS)
          + f"; all requests to the OTLP port: {len(tap['requests'])}")
    out["posts_per_cascade"] = {h: posts.get(h, 0) / cascades for h in AGENTS}
    out["slowest_5pct_steps"] = steps
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cascades", type=int, default=200)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=4, help="cascades in flight at a time")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--breakdown", choices=["both", "on", "off"], default="both",
                   help="off: direct only; on: through the timestamping tap only; both (default): one run each")
    p.add_argument("--agent-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the agents (e.g. A2A_QUIESCENCE_COALESCE_MS=5)")
    p.add_argument("--json", help="also write the summaries and raw per-cascade figures here")
    args = p.parse_args(argv)
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.breakdown]
    summaries, raw = [], []
    for tapped in modes:
        run = run_mesh(args, tapped)
        summaries.append(report(args, run))
        raw.append(run["results"])
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "summaries": summaries, "results": raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
