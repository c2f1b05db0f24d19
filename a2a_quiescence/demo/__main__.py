"""The demo: a sidecar collector and an A -> B -> C mesh, a few cascades, settlement.

    python -m a2a_quiescence.demo [--cascades N] [--keep-running]

Starts `a2a-quiescence collector` on loopback, a push webhook and three agents
(each under `opentelemetry-instrument`), sends cascades through A (A delegates
to B, B to C, C pushes task updates to the webhook), waits on the collector's
settlement signal for each and prints what it saw; then shuts the agents down
and shows the shutdown record (leaked producers) the sidecar kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from a2a_quiescence.demo.harness import Mesh
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.wait import NotSettled, describe_holders, wait_sync


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m a2a_quiescence.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cascades", type=int, default=5, help="cascades to send (default %(default)s)")
    parser.add_argument("--work-ms", type=int, default=150, help="how long C works per cascade")
    parser.add_argument("--keep-running", action="store_true", help="leave the mesh up until Ctrl-C (status page)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="a2a-quiescence-demo-"))
    mesh = Mesh(workdir)
    mesh.events = workdir / "events.jsonl"
    try:
        mesh.start_collector()
        print(f"collector: {mesh.api}  (status page {mesh.api}/, metrics {mesh.api}/metrics)")
        mesh.start_webhook()
        mesh.start_agent("C")
        mesh.start_agent("B", ["C"])
        mesh.start_agent("A", ["B"])
        print("agents:", ", ".join(f"{n} {p.url}" for n, p in mesh.agents.items()), f"(logs in {workdir})")
        plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "push": True, "blocking": False,
                                                         "plan": {"work_ms": args.work_ms}}]}}]}
        for i in range(args.cascades):
            trace_id = new_trace_id()
            t0 = time.monotonic()
            asyncio.run(send_plan(mesh.agents["A"].url, plan, trace_id=trace_id))
            answered = time.monotonic() - t0
            try:
                state = wait_sync(trace_id, endpoint=mesh.api, timeout=30)
            except NotSettled as exc:
                print(f"cascade {i + 1} {trace_id}: NOT settled: {describe_holders(exc.state)}")
                continue
            settled = time.monotonic() - t0
            print(
                f"cascade {i + 1} {trace_id}: A answered after {answered * 1000:.0f} ms "
                f"(B's non-blocking call to C still running); settled after {settled * 1000:.0f} ms, "
                f"detected {state['detection_latency_seconds'] * 1000:.1f} ms after the last hop went passive"
            )
        if args.keep_running:
            print("mesh running; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        for name in ("A", "B", "C"):
            mesh.agents[name].stop()
        mesh_state = httpx.get(f"{mesh.api}/v1/mesh", timeout=5).json()
        print("after shutdown, the sidecar still knows:")
        for agent in mesh_state["agents"]:
            print(f"  {agent['agent']}: leaked producers at shutdown = {agent['shutdown_leaked_producers']}")
        metrics = [line for line in mesh.metrics().splitlines() if line.startswith(("a2a_shutdown_leaked", "a2a_mesh_settled", "a2a_cascades_settled"))]
        print("\n".join("  " + m for m in metrics))
        print(json.dumps({"quiet": mesh_state["quiet"], "settled_total": mesh_state["settled_total"]}))
        return 0
    finally:
        mesh.stop_all()


if __name__ == "__main__":
    sys.exit(main())
