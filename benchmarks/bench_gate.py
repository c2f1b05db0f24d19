"""What the drain gate adds per test, in front of a conformance-style suite.

    python -m benchmarks.bench_gate [--tests 60] [--rounds 3]

A collector and two demo agents (A delegating to B, each under
`opentelemetry-instrument`, as subprocesses), then an inner pytest run whose
tests do what a conformance kit's do: most send one message to A through an
a2a-sdk client and check the answer (one non-blocking: it returns before B has
finished), and some call no agent at all. The same suite runs three ways, each
in a fresh pytest process, rounds interleaved:

- ``off``: no gate (the suite's own time);
- ``gate``: `--a2a-quiescence-gate` as the README gives it (the test process's own
  clients instrumented, so no root grace for its roots);
- ``gate_no_client``: `--a2a-quiescence-gate --a2a-quiescence-no-client` (what the
  gate was before: only what the agents report, with the collector's root grace).

Printed per way: the suite's wall time, and the gate's own summary line (median
and worst added per test); per test kind, the median the gate added, read from
the gate's `--durations`-style report below. Also: every gated run must pass
(no false alarm), and the non-blocking test must have been held until B's work
ended (no early release), checked against the agents' own event log.
The machine is shared and noisy: read ratios and medians, never a threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

INNER = textwrap.dedent('''
    import asyncio, json, os, time

    import pytest

    from a2a_quiescence.demo.mesh import new_trace_id, send_plan

    A = os.environ["BENCH_A"]
    MARKS = os.environ["BENCH_MARKS"]


    @pytest.fixture(autouse=True)
    def mark(request):
        yield
        with open(MARKS, "a") as f:  # fixtures are finalized after the gate
            f.write(json.dumps({"test": request.node.name, "t": time.time()}) + "\\n")


    @pytest.mark.parametrize("i", range(int(os.environ["BENCH_CALLS"])))
    def test_send_message(i):
        out = asyncio.run(send_plan(A, {"calls": [{"to": "B", "plan": {"work_ms": 2}}]}))
        assert out


    @pytest.mark.parametrize("i", range(int(os.environ["BENCH_NONBLOCKING"])))
    def test_non_blocking_returns_first(i):
        trace_id = new_trace_id()
        with open(MARKS, "a") as f:
            f.write(json.dumps({"test": f"test_non_blocking_returns_first[{i}]", "trace_id": trace_id}) + "\\n")
        asyncio.run(send_plan(A, {"calls": [{"to": "B", "blocking": False, "plan": {"work_ms": 150}}]},
                              trace_id=trace_id))


    @pytest.mark.parametrize("i", range(int(os.environ["BENCH_NOCALLS"])))
    def test_no_agent_call(i):
        assert i >= 0
''')

WAYS = {"off": [], "gate": ["--a2a-quiescence-gate"],
        "gate_no_client": ["--a2a-quiescence-gate", "--a2a-quiescence-no-client"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=60, help="tests per suite (default 60)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agent-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for both agents (e.g. A2A_QUIESCENCE_COALESCE_MS=5); repeatable")
    args = parser.parse_args()
    calls = max(1, int(args.tests * 0.7))
    nonblocking = max(1, args.tests // 10)
    nocalls = max(1, args.tests - calls - nonblocking)

    from a2a_quiescence.demo.harness import Mesh, read_events

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        events = work / "events.jsonl"
        (work / "suite").mkdir()
        (work / "suite" / "test_suite.py").write_text(INNER)
        results: dict[str, list[dict]] = {w: [] for w in WAYS}
        with Mesh(work, events=events) as mesh:
            mesh.start_collector()
            agent_env = dict(item.split("=", 1) for item in args.agent_env)
            mesh.start_agent("B", env=agent_env)
            mesh.start_agent("A", ["B"], env=agent_env)
            print(f"# {calls} send-message tests, {nonblocking} non-blocking, {nocalls} with no agent call; "
                  f"{args.rounds} rounds, each way in a fresh pytest process", flush=True)
            for r in range(args.rounds):
                ways = list(WAYS)[r % len(WAYS):] + list(WAYS)[:r % len(WAYS)]
                for way in ways:
                    marks = work / f"marks-{way}-{r}.jsonl"
                    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "A2A_QUIESCENCE_"))},
                           "BENCH_A": mesh.agents["A"].url + "/", "BENCH_MARKS": str(marks),
                           "BENCH_CALLS": str(calls), "BENCH_NONBLOCKING": str(nonblocking),
                           "BENCH_NOCALLS": str(nocalls),
                           "A2A_QUIESCENCE_ENDPOINT": f"http://127.0.0.1:{mesh.otlp_port}/v1/logs"}
                    began = time.monotonic()
                    out = subprocess.run(
                        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                         f"--a2a-quiescence-endpoint={mesh.api}", "--a2a-quiescence-timeout=10", *WAYS[way],
                         "test_suite.py"], cwd=work / "suite", env=env, capture_output=True, text=True, timeout=900)
                    wall = time.monotonic() - began
                    summary = next((line for line in out.stdout.splitlines()
                                    if line.startswith("a2a-quiescence gate:")), "")
                    results[way].append({"wall": wall, "ok": out.returncode == 0, "summary": summary,
                                         "marks": marks, "stdout": out.stdout[-2000:]})
                    print(f"round {r + 1}: {way:15s} {wall:6.2f} s  {'passed' if out.returncode == 0 else 'FAILED'}"
                          f"  {summary}", flush=True)
        truth = read_events(events)

    print()
    print(f"{'way':15s} {'suite s':>8s} {'per test ms':>12s}  gate summary (last round)")
    base = statistics.median(x["wall"] for x in results["off"])
    for way, runs in results.items():
        wall = statistics.median(x["wall"] for x in runs)
        added = (wall - base) * 1000 / args.tests if way != "off" else 0.0
        print(f"{way:15s} {wall:8.2f} {added:12.1f}  {runs[-1]['summary']}")
    false_alarms = sum(not x["ok"] for way in ("gate", "gate_no_client") for x in results[way])
    early = 0
    for way in ("gate", "gate_no_client"):
        for run in results[way]:
            notes = [json.loads(line) for line in run["marks"].read_text().splitlines()] if run["marks"].exists() else []
            for note in notes:
                if "trace_id" not in note:
                    continue
                released = next(n["t"] for n in notes if n.get("test") == note["test"] and "t" in n)
                ended = [e["t"] for e in truth if e.get("trace_id") == note["trace_id"] and e["agent"] == "B"
                         and e["event"] == "work_end"]
                if not ended or released < max(ended):
                    early += 1
    print(f"gated runs that failed (false alarms): {false_alarms}; non-blocking tests released before B's work "
          f"ended (early releases): {early}")
    print("per test ms: (suite time - the ungated suite's) / tests, median over rounds")


if __name__ == "__main__":
    main()
