"""What each kind of telemetry costs on an A -> B -> C relay, measured side by side.

    python -m benchmarks.bench_overhead [--rounds 4] [--requests 150] [--concurrency 8] [--agent-cpu-ms 0]

Every kind runs in a fresh process (so nothing one installs leaks into the
next), in an order that rotates every round, against one live
`a2a-quiescence collector` process that the benchmark starts:

- ``bare``: no telemetry at all;
- ``sdk``: a2a-sdk's own tracing (``OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true``);
- ``contrib``: the OpenTelemetry contrib httpx and ASGI instrumentations (what
  ``opentelemetry-instrument`` gives a user without us);
- ``ours_local``: our instrumentation, snapshots kept in the process (``report=False``);
- ``ours``: our instrumentation exactly as deployed, snapshots shipped to the
  live collector (the headline).

Spans of every kind go through a BatchSpanProcessor and the OTLP/HTTP exporter
to the same collector, as deployed. Per kind it prints the throughput ratio to
``bare`` (median of the per-round ratios, and the worst round), our process's
CPU per hop per request in microseconds, spans per hop per request, and for
``ours`` the collector's own CPU per request. A -> B -> C run in one process
(three uvicorn servers), so CPU per hop is the process's CPU / (3 x requests).
The machine is shared and noisy: ratios, never a threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KINDS = ("bare", "sdk", "contrib", "ours_local", "ours")
HOPS = 3
ROOT = Path(__file__).resolve().parent.parent


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- child: one kind, one measurement -----------------------------------------------------
def child(kind: str, requests: int, concurrency: int, cpu_ms: float, collector: str) -> dict[str, Any]:
    # a2a-sdk decides at import whether it traces itself: import it with the setting
    # of this kind before anything else does (bench_instrumentation turns it off)
    os.environ["OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"] = "true" if kind == "sdk" else "false"
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
    if kind in ("ours_local", "ours"):
        from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor

        A2AQuiescenceInstrumentor().instrument(
            tracer_provider=provider, meter_provider=MeterProvider(), service_name=f"bench-{kind}",
            report=kind == "ours", endpoint=f"{collector}/v1/logs",
        )

    async def run() -> tuple[float, float, int]:
        async with relay_servers(wrap_asgi) as url:
            await drive(url, 10, concurrency, warmup=0, cpu_ms=cpu_ms)  # warm up, not counted
            spans_before, cpu_before = counting.ended, time.process_time()
            rate = await drive(url, requests, concurrency, warmup=0, cpu_ms=cpu_ms)
            return rate, time.process_time() - cpu_before, counting.ended - spans_before

    rate, cpu, spans = asyncio.run(run())
    if provider is not None:
        provider.force_flush()
    return {"kind": kind, "rate": rate, "cpu_us_per_hop_request": cpu * 1e6 / (HOPS * requests),
            "spans_per_hop_request": spans / (HOPS * requests)}


# --- parent: rounds of fresh processes ------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--agent-cpu-ms", type=float, default=0.0, help="CPU each hop spends per request (0: bare relay)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"which kinds (default: {','.join(KINDS)})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--collector", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.requests, args.concurrency, args.agent_cpu_ms, args.collector)))
        return
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown or "bare" not in kinds:
        parser.error(f"--kinds takes {', '.join(KINDS)} and must include bare")

    from a2a_quiescence.demo.harness import _bin, free_port, stop_process, wait_http

    http_port, otlp_port = free_port(), free_port()
    log = open(os.devnull, "wb")
    collector = subprocess.Popen([_bin("a2a-quiescence"), "collector", "--http-listen", f"127.0.0.1:{http_port}",
                                  "--otlp-listen", f"127.0.0.1:{otlp_port}", "--otlp-grpc-listen", "off",
                                  "--log-level", "error"], stdout=log, stderr=subprocess.STDOUT)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    collector_cpu_per_request: list[float] = []
    try:
        wait_http(f"http://127.0.0.1:{http_port}/readyz", proc=collector)
        print(f"# relay A -> B -> C, {args.rounds} rounds x {args.requests} requests, concurrency "
              f"{args.concurrency}, agent cpu {args.agent_cpu_ms:g} ms; each kind in a fresh process", flush=True)
        for r in range(args.rounds):
            order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
            for kind in order:
                before = _cpu_of(collector.pid)
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.bench_overhead", "--child", kind, "--requests",
                     str(args.requests), "--concurrency", str(args.concurrency), "--agent-cpu-ms",
                     str(args.agent_cpu_ms), "--collector", f"http://127.0.0.1:{otlp_port}"],
                    capture_output=True, text=True, timeout=900, cwd=ROOT,
                )
                lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
                if out.returncode != 0 or not lines:
                    raise RuntimeError(f"{kind} failed: {out.stderr[-2000:]}")
                result = json.loads(lines[-1])
                results[kind].append(result)
                if kind == "ours":
                    # spans and snapshots of this run (the collector idles otherwise)
                    collector_cpu_per_request.append((_cpu_of(collector.pid) - before) * 1e6 / (args.requests + 10))
                print(f"round {r + 1}: {kind:10s} {result['rate']:8.1f} req/s", flush=True)
    finally:
        stop_process(collector)

    print()
    print(f"{'kind':10s} {'req/s':>8s} {'ratio':>6s} {'worst':>6s} {'cpu us/hop/req':>15s} {'spans/hop/req':>14s}")
    for kind in kinds:
        rates = [x["rate"] for x in results[kind]]
        ratios = [x["rate"] / b["rate"] for x, b in zip(results[kind], results["bare"])]
        cpu = statistics.median(x["cpu_us_per_hop_request"] for x in results[kind])
        spans = statistics.median(x["spans_per_hop_request"] for x in results[kind])
        print(f"{kind:10s} {statistics.median(rates):8.1f} {statistics.median(ratios):6.3f} {min(ratios):6.3f} "
              f"{cpu:15.0f} {spans:14.2f}")
    if collector_cpu_per_request:
        print(f"collector CPU per request (spans and snapshots of `ours`): "
              f"{statistics.median(collector_cpu_per_request):.0f} us")


if __name__ == "__main__":
    main()
