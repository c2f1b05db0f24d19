"""What each kind of telemetry costs on an A -> B -> C relay, measured side by side.

    python -m benchmarks.bench_overhead [--rounds 4] [--requests 150] [--concurrency 8] [--shapes bare,agent]

Every kind runs in a fresh process (so nothing one installs leaks into the
next), in an order that rotates every round, against one live
`a2a-quiescence collector` process that the benchmark starts:

- ``bare``: no telemetry at all;
- ``sdk``: a2a-sdk's own tracing (``OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true``);
- ``contrib``: the OpenTelemetry contrib httpx and ASGI instrumentations (what
  ``opentelemetry-instrument`` gives a user without us);
- ``ours_local``: our instrumentation, snapshots kept in the process (``report=False``);
- ``ours``: our instrumentation exactly as the README deploys it (`pip install`,
  `opentelemetry-instrument`: a2a-sdk's own tracing off, which our instrumentation
  now makes the default), snapshots shipped to the live collector (the headline);
- ``ours_sdk``: the same with a2a-sdk's own tracing left on, which is what the
  README's two lines gave before that default (and what an explicit
  ``OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true`` gives now);
- ``ours_thread``: ``ours`` with ``A2A_QUIESCENCE_LOOP_EXPORT=false``: prompt
  exports through the reporter thread, as before they moved onto the agent's loop.

Two relay shapes, each with every kind (``--shapes``): ``bare``, where the agents
do nothing but delegate (every microsecond of telemetry shows), and ``agent``,
shaped like an agent that calls a model: each hop computes 5 ms and waits 50 ms
before answering (``--agent-cpu-ms`` / ``--agent-wait-ms`` set that shape), which
is the ratio a user will see.

Spans of every kind go through a BatchSpanProcessor and the OTLP/HTTP exporter
to the same collector, as deployed. Per kind it prints the throughput ratio to
``bare`` (median of the per-round ratios, and the worst round), our process's
CPU per hop per request in microseconds (also split by thread: event loop,
our snapshot reporter, the span exporter), spans per hop per request, for
every kind the collector's own CPU per request (spans; for ``ours`` also
snapshots), our snapshot POSTs per request, and the collector's detection
latency histogram over ``ours``' cascades (what the flush policy does under
this load). A -> B -> C run in one process
(three uvicorn servers), so CPU per hop is the process's CPU / (3 x requests).
The machine is shared and noisy: ratios, never a threshold.

``--instructions`` measures the same kinds in instructions instead of time:
each child runs under valgrind's callgrind (``apt-get install valgrind``), which
counts the instructions of every thread of the process from just before the
measured requests to just after them (``callgrind_control`` switches counting
on and off; the imports, servers' start and warm-up are not counted). A count
does not move with the machine's load, so two kinds' costs can be compared on a
noisy machine, where the throughput ratios cannot; what it leaves out is what
time adds: cache misses, the kernel's work (sockets), threads waiting for the
interpreter, and the collector. Valgrind runs the child some 50 times slower,
so time-driven behaviour changes under it (the reporter's windows gather fewer
changes per export: more snapshot POSTs per request than at full speed; the
table says how many), and only the bare relay is counted (the agent shape's
work and waits are a time). One round is enough; use fewer requests:

    python -m benchmarks.bench_overhead --instructions --rounds 1 --requests 60 --kinds bare,contrib,ours_local,ours
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KINDS = ("bare", "sdk", "contrib", "ours_local", "ours", "ours_sdk", "ours_thread")
OURS = ("ours_local", "ours", "ours_sdk", "ours_thread")
HOPS = 3
ROOT = Path(__file__).resolve().parent.parent


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by what it is (event loop,
    our reporter, the span exporter, anything else)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    main_id = threading.main_thread().native_id
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tid = int(task.name)
        name = names.get(tid, "")
        what = ("event loop" if tid == main_id else "reporter" if name.startswith("a2a-quiescence")
                else "span export" if "Otel" in name or "Batch" in name or "Processor" in name else "other")
        out[what] = out.get(what, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _switches() -> int:
    """Context switches (voluntary and not) of every thread of this process so far: each
    hand-over of the interpreter between threads is some of them."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


# --- child: one kind, one measurement -----------------------------------------------------
def _count_instructions(on: bool) -> None:
    """Switch callgrind's counting for this process (the child runs under valgrind)."""
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)


def child(kind: str, requests: int, concurrency: int, cpu_ms: float, wait_ms: float, collector: str,
          instructions: bool = False) -> dict[str, Any]:
    # a2a-sdk decides at import whether it traces itself: import it with the setting
    # of this kind before anything else does (bench_instrumentation turns it off)
    os.environ["OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"] = "true" if kind in ("sdk", "ours_sdk") else "false"
    import a2a.utils.telemetry  # noqa: F401
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from benchmarks.bench_instrumentation import drive, relay_servers

    class Counting(SpanProcessor):
        def __init__(self) -> None:
            self.ended = 0

        def on_end(self, span: Any) -> None:
            self.ended += 1

    counting = Counting()
    provider = None
    if kind != "bare":
        provider = TracerProvider(resource=Resource.create({"service.name": f"bench-{kind}"}))
        provider.add_span_processor(counting)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{collector}/v1/traces")))
        trace.set_tracer_provider(provider)
    wrap_asgi = None
    if kind == "contrib":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        wrap_asgi = lambda app: OpenTelemetryMiddleware(app, tracer_provider=provider)  # noqa: E731
    inst = None
    if kind in OURS:
        from a2a_quiescence import environment_variables as env
        from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor

        os.environ[env.LOOP_EXPORT.name] = "false" if kind == "ours_thread" else "true"

        inst = A2AQuiescenceInstrumentor()
        inst.instrument(
            tracer_provider=provider, meter_provider=MeterProvider(), service_name=f"bench-{kind}",
            report=kind != "ours_local", endpoint=f"{collector}/v1/logs",
        )

    async def run() -> tuple[float, float, int]:
        async with relay_servers(wrap_asgi) as url:
            await drive(url, 10, concurrency, warmup=0, cpu_ms=cpu_ms, wait_ms=wait_ms)  # warm up, not counted
            spans_before, cpu_before, threads_before = counting.ended, time.process_time(), _thread_cpu()
            posts_before, switches_before = _posts(), _switches()
            if instructions:
                _count_instructions(True)
            rate = await drive(url, requests, concurrency, warmup=0, cpu_ms=cpu_ms, wait_ms=wait_ms)
            if instructions:
                _count_instructions(False)
            threads_after = _thread_cpu()
            threads["posts"] = _posts() - posts_before
            threads["switches"] = _switches() - switches_before
            threads.update({k: v - threads_before.get(k, 0.0) for k, v in threads_after.items()})
            return rate, time.process_time() - cpu_before, counting.ended - spans_before

    def _posts() -> int:
        reporter = getattr(inst, "reporter", None)
        return reporter.exports if reporter is not None else 0

    threads: dict[str, float] = {}
    rate, cpu, spans = asyncio.run(run())
    posts = threads.pop("posts")
    switches = threads.pop("switches")
    if provider is not None:
        provider.force_flush()
    return {"kind": kind, "rate": rate, "cpu_us_per_hop_request": cpu * 1e6 / (HOPS * requests),
            "spans_per_hop_request": spans / (HOPS * requests), "snapshot_posts_per_request": posts / requests,
            "switches_per_request": switches / requests,
            "threads_us_per_hop_request": {k: v * 1e6 / (HOPS * requests) for k, v in sorted(threads.items())}}


# --- parent: rounds of fresh processes ------------------------------------------------------
def _latency_buckets(http_url: str) -> dict[float, float]:
    """The collector's detection-latency histogram (cumulative count per upper bound)."""
    import urllib.request

    from a2a_quiescence import names

    text = urllib.request.urlopen(f"{http_url}/metrics", timeout=10).read().decode()
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(names.M_DETECTION_LATENCY + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return out


def _quantile(delta: dict[float, float], q: float) -> float:
    """Upper bound of the bucket holding quantile ``q`` of a cumulative histogram."""
    total = delta.get(float("inf"), 0.0)
    for bound in sorted(delta):
        if total and delta[bound] >= q * total:
            return bound
    return float("nan")


SHAPES = {"bare": (0.0, 0.0), "agent": (5.0, 50.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--shapes", default=None,
                        help="relay shapes, each with every kind: bare (agents only delegate), agent (each hop "
                             "computes --agent-cpu-ms and waits --agent-wait-ms); default: both (with "
                             "--instructions: bare)")
    parser.add_argument("--agent-cpu-ms", type=float, default=SHAPES["agent"][0],
                        help="the agent shape: CPU each hop spends per request (default 5)")
    parser.add_argument("--agent-wait-ms", type=float, default=SHAPES["agent"][1],
                        help="the agent shape: time each hop waits per request, as for a model (default 50)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"which kinds (default: {','.join(KINDS)})")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per hop and request under valgrind's callgrind instead of timing "
                             "(steady on a noisy machine; see above)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--collector", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shapes is None:
        args.shapes = "bare" if args.instructions else "bare,agent"
    if args.child:
        print(json.dumps(child(args.child, args.requests, args.concurrency, args.agent_cpu_ms, args.agent_wait_ms,
                               args.collector, args.instructions)))
        return
    if args.instructions and not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        parser.error("--instructions needs valgrind and callgrind_control on PATH (apt-get install valgrind)")
    if args.instructions and args.shapes != "bare":
        # the agent shape's work and waits are measured in time, which valgrind stretches
        parser.error("--instructions counts the bare relay only (--shapes bare): the agent shape computes and "
                     "waits for a time, not for a number of instructions")
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown or "bare" not in kinds:
        parser.error(f"--kinds takes {', '.join(KINDS)} and must include bare")
    shapes = [s for s in args.shapes.split(",") if s]
    if not shapes or set(shapes) - set(SHAPES):
        parser.error(f"--shapes takes {', '.join(SHAPES)}")

    from a2a_quiescence.demo.harness import free_port, program_path, stop_process, wait_http

    http_port, otlp_port = free_port(), free_port()
    log = open(os.devnull, "wb")
    collector = subprocess.Popen([program_path("a2a-quiescence"), "collector", "--http-listen", f"127.0.0.1:{http_port}",
                                  "--otlp-listen", f"127.0.0.1:{otlp_port}", "--otlp-grpc-listen", "off",
                                  "--log-level", "error"], stdout=log, stderr=subprocess.STDOUT)
    tables = []
    try:
        wait_http(f"http://127.0.0.1:{http_port}/readyz", proc=collector)
        for shape in shapes:
            cpu_ms, wait_ms = (0.0, 0.0) if shape == "bare" else (args.agent_cpu_ms, args.agent_wait_ms)
            what = ("bare relay: the agents only delegate" if shape == "bare"
                    else f"agent-shaped relay: each hop computes {cpu_ms:g} ms and waits {wait_ms:g} ms")
            print(f"# {what}; A -> B -> C, {args.rounds} rounds x {args.requests} requests, concurrency "
                  f"{args.concurrency}; each kind in a fresh process", flush=True)
            tables.append((what, *_measure(args, kinds, cpu_ms, wait_ms, collector, http_port, otlp_port)))
    finally:
        stop_process(collector)
    for what, results, collector_cpu_per_request, latency in tables:
        print()
        print(f"## {what}")
        if args.instructions:
            _report_instructions(kinds, results)
        else:
            _report(kinds, results, collector_cpu_per_request, latency)


def _measure(args: Any, kinds: list[str], cpu_ms: float, wait_ms: float, collector: Any, http_port: int,
             otlp_port: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[float]], dict[float, float]]:
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    collector_cpu_per_request: dict[str, list[float]] = {k: [] for k in kinds}
    latency: dict[float, float] = {}  # detection latency of `ours`' cascades under load (histogram deltas)
    for r in range(args.rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        for kind in order:
            before = _cpu_of(collector.pid)
            buckets_before = _latency_buckets(f"http://127.0.0.1:{http_port}") if kind == "ours" else {}
            command = [sys.executable, "-m", "benchmarks.bench_overhead", "--child", kind, "--requests",
                       str(args.requests), "--concurrency", str(args.concurrency), "--agent-cpu-ms", str(cpu_ms),
                       "--agent-wait-ms", str(wait_ms), "--collector", f"http://127.0.0.1:{otlp_port}"]
            with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
                if args.instructions:
                    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--log-file={tmp}/valgrind.log",
                               f"--callgrind-out-file={tmp}/callgrind.out", *command, "--instructions"]
                out = subprocess.run(command, capture_output=True, text=True, timeout=3600 if args.instructions else 900,
                                     cwd=ROOT)
                lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
                if out.returncode != 0 or not lines:
                    raise RuntimeError(f"{kind} failed: {out.stderr[-2000:]}")
                result = json.loads(lines[-1])
                if args.instructions:
                    result["instructions_per_hop_request"] = _collected(Path(tmp) / "valgrind.log") / (
                        HOPS * args.requests)
            results[kind].append(result)
            # spans (and for `ours` snapshots) of this run: the collector idles otherwise
            collector_cpu_per_request[kind].append((_cpu_of(collector.pid) - before) * 1e6 / (args.requests + 10))
            if kind == "ours":
                for bound, count in _latency_buckets(f"http://127.0.0.1:{http_port}").items():
                    latency[bound] = latency.get(bound, 0.0) + count - buckets_before.get(bound, 0.0)
            counted = (f", {result['instructions_per_hop_request'] / 1e6:.3f} M instructions/hop/req"
                       if args.instructions else "")
            print(f"round {r + 1}: {kind:10s} {result['rate']:8.1f} req/s{counted}", flush=True)
    return results, collector_cpu_per_request, latency


def _report(kinds: list[str], results: dict[str, list[dict[str, Any]]], collector_cpu_per_request: dict[str, list[float]],
            latency: dict[float, float]) -> None:
    print(f"{'kind':10s} {'req/s':>8s} {'ratio':>6s} {'worst':>6s} {'cpu us/hop/req':>15s} {'spans/hop/req':>14s} "
          f"{'collector us/req':>16s}  cpu us/hop/req by thread")
    for kind in kinds:
        rates = [x["rate"] for x in results[kind]]
        ratios = [x["rate"] / b["rate"] for x, b in zip(results[kind], results["bare"])]
        cpu = statistics.median(x["cpu_us_per_hop_request"] for x in results[kind])
        spans = statistics.median(x["spans_per_hop_request"] for x in results[kind])
        coll = statistics.median(collector_cpu_per_request[kind])
        threads = sorted({t for x in results[kind] for t in x.get("threads_us_per_hop_request", {})})
        by_thread = ", ".join(
            f"{t} {statistics.median(x.get('threads_us_per_hop_request', {}).get(t, 0.0) for x in results[kind]):.0f}"
            for t in threads
        )
        posts = statistics.median(x.get("snapshot_posts_per_request", 0.0) for x in results[kind])
        if posts:
            by_thread += f"; snapshot POSTs/request {posts:.2f}"
        switches = statistics.median(x.get("switches_per_request", 0.0) for x in results[kind])
        by_thread += f"; context switches/request {switches:.0f}"
        print(f"{kind:10s} {statistics.median(rates):8.1f} {statistics.median(ratios):6.3f} {min(ratios):6.3f} "
              f"{cpu:15.0f} {spans:14.2f} {coll:16.0f}  {by_thread}")
    print("collector us/req: the collector's CPU per request while that kind ran (its spans, and for `ours` "
          "its snapshots); it shares the machine's cores with the agents. Context switches: every thread of "
          "the process (three agents and the load generator), per request")
    if latency.get(float("inf")):
        print(f"`ours` under this load: {latency[float('inf')]:.0f} cascades settled; detection latency (settle - last "
              f"hop passive, the collector's histogram) p50 <= {_quantile(latency, 0.5) * 1000:g} ms, "
              f"p99 <= {_quantile(latency, 0.99) * 1000:g} ms (bucket upper bounds)")


def _collected(log: Path) -> int:
    """The instructions callgrind counted while counting was on (its log's "Collected")."""
    for line in log.read_text().splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip().replace(",", ""))
    raise RuntimeError(f"no instruction count in {log}")


def _report_instructions(kinds: list[str], results: dict[str, list[dict[str, Any]]]) -> None:
    """Instructions per hop and request (every thread of the process), and what each kind adds to ``bare``."""
    counts = {k: statistics.median(x["instructions_per_hop_request"] for x in results[k]) for k in kinds}
    added = {k: counts[k] - counts["bare"] for k in kinds}
    print(f"{'kind':10s} {'M instr/hop/req':>16s} {'added M':>8s} {'of bare':>8s} {'vs contrib':>11s} "
          f"{'spans/hop/req':>14s} {'POSTs/req':>10s}")
    for kind in kinds:
        spans = statistics.median(x["spans_per_hop_request"] for x in results[kind])
        posts = statistics.median(x.get("snapshot_posts_per_request", 0.0) for x in results[kind])
        versus = f"{added[kind] / added['contrib']:11.3f}" if added.get("contrib", 0) > 0 else f"{'-':>11s}"
        print(f"{kind:10s} {counts[kind] / 1e6:16.3f} {added[kind] / 1e6:8.3f} {counts[kind] / counts['bare']:8.3f} "
              f"{versus} {spans:14.2f} {posts:10.2f}")
    print("every thread of the agents' process, counting switched on for the measured requests only; 'vs contrib': "
          "what the kind adds to bare, over what contrib adds. Under valgrind the reporter's windows see some 50 "
          "times fewer requests each: POSTs/request is higher than at full speed")


if __name__ == "__main__":
    main()
