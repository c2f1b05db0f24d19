"""Cost of the instrumentation on an A -> B -> C relay, measured in one run.

    python -m benchmarks.bench_instrumentation [--rounds 6] [--requests 200] [--concurrency 8] [--agent-cpu-ms 0,1]

Rounds interleave uninstrumented and instrumented runs (the order flips every
round), each on fresh in-process uvicorn servers on 127.0.0.1, so drift of the
machine hits both sides alike. Prints requests/s for each side, the throughput
ratio (instrumented / uninstrumented), our spans per hop per request, and, for
comparison, the a2a-sdk's own spans per hop per request (measured in a child
process with ``OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true``; everywhere else
the SDK's tracing is off, as the design recommends).

The instrumented side runs the whole instrumentation (spans through a
BatchSpanProcessor into a counting exporter, metrics, hop tracker, loop hooks,
propagation) except shipping snapshots (``report=False``).

The comparison is made for each ``--agent-cpu-ms`` value: 0 is a bare relay
whose agents compute nothing (the worst case for any instrumentation: the
SDK's own request handling is all there is to compare with); 1 has every hop
spend 1 ms of CPU on its own work per request, still far less than an agent
that parses, builds prompts or calls a model.

Goals (reported, not asserted): ratio >= 0.97, <= 5 spans per hop per request.
"""

from __future__ import annotations

import argparse
import os
import sys

if "--sdk-spans" not in sys.argv:
    # must be decided before a2a is imported: the SDK reads it at import time
    os.environ["OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"] = "false"

import asyncio  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any, AsyncIterator, Callable, Sequence  # noqa: E402

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from a2a.helpers.proto_helpers import new_text_message  # noqa: E402
from a2a.types import a2a_pb2 as pb  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from a2a_quiescence import names  # noqa: E402
from a2a_quiescence.demo.harness import free_port  # noqa: E402
from a2a_quiescence.demo.mesh import build_app, plan_text  # noqa: E402

def relay_plan(cpu_ms: float, wait_ms: float = 0.0) -> dict[str, Any]:
    """A -> B -> C; every hop computes ``cpu_ms`` and waits ``wait_ms`` (as for a model's
    answer) of its own before answering (both 0: a bare relay)."""
    own = {"cpu_ms": cpu_ms} if cpu_ms else {}
    if wait_ms:
        own["work_ms"] = wait_ms
    return {**own, "calls": [{"to": "B", "plan": {**own, "calls": [{"to": "C", "plan": own}]}}]}


HOPS = 3


class CountingExporter(SpanExporter):
    def __init__(self) -> None:
        self.by_name: collections.Counter[str] = collections.Counter()

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        for s in spans:
            self.by_name[s.name] += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@contextlib.asynccontextmanager
async def relay_servers(wrap: Callable[[Any], Any] | None = None) -> AsyncIterator[str]:
    """Fresh A -> B -> C servers (each app passed through ``wrap``, e.g. an ASGI middleware); yields A's URL."""
    ports = {n: free_port() for n in "ABC"}
    urls = {n: f"http://127.0.0.1:{p}/" for n, p in ports.items()}
    servers: list[tuple[uvicorn.Server, asyncio.Task]] = []
    try:
        for name, peer in (("C", None), ("B", "C"), ("A", "B")):
            app, _handler, _executor = build_app(name, ports[name], {peer: urls[peer]} if peer else {})
            if wrap is not None:
                app = wrap(app)
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=ports[name], log_level="error", access_log=False)
            )
            task = asyncio.create_task(server.serve())
            servers.append((server, task))
            deadline = time.monotonic() + 30
            while not server.started:
                if task.done() or time.monotonic() > deadline:
                    raise RuntimeError(f"agent {name} did not start")
                await asyncio.sleep(0.01)
        yield urls["A"]
    finally:
        for server, _task in servers:
            server.should_exit = True
        for _server, task in servers:
            await task


async def drive(url: str, requests: int, concurrency: int, warmup: int = 10, cpu_ms: float = 0.0,
                wait_ms: float = 0.0) -> float:
    """Send ``requests`` relay plans to A with ``concurrency`` in flight; returns requests/s."""
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        # a plain JSON-RPC caller (not an a2a-sdk client): the load generator is
        # outside the mesh and must not carry instrumentation cost of its own
        headers = {"A2A-Version": "1.0"}

        async def one() -> None:
            plan = relay_plan(cpu_ms, wait_ms)
            request = pb.SendMessageRequest(message=new_text_message(plan_text(plan), role=pb.Role.ROLE_USER))
            body = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": "SendMessage",
                    "params": json_format.MessageToDict(request)}
            response = await http.post(url, json=body, headers=headers)
            state = (response.json().get("result") or {}).get("task", {}).get("status", {}).get("state")
            if state != "TASK_STATE_COMPLETED":
                raise RuntimeError(f"relay did not complete: {response.text[:500]}")

        for _ in range(warmup):
            await one()
        queue: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(requests):
            queue.put_nowait(None)

        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await one()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - start)


async def run_round(instrumented: bool, requests: int, concurrency: int, exporter: CountingExporter,
                    cpu_ms: float = 0.0) -> float:
    inst = None
    provider = None
    if instrumented:
        from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=2048))
        meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
        inst = A2AQuiescenceInstrumentor()
        inst.instrument(tracer_provider=provider, meter_provider=meters, report=False)
    try:
        async with relay_servers() as url:
            rate = await drive(url, requests, concurrency, cpu_ms=cpu_ms)
    finally:
        if inst is not None:
            inst.uninstrument()
        if provider is not None:
            provider.force_flush()
            provider.shutdown()
    return rate


async def sdk_span_count(requests: int) -> None:
    """Child mode: the SDK's own spans per hop per request (no instrumentation of ours)."""
    from opentelemetry import trace

    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    async with relay_servers() as url:
        await drive(url, 5, 1, warmup=0)  # start-up spans are not per request
        exporter.by_name.clear()
        await drive(url, requests, 1, warmup=0)
    total = sum(exporter.by_name.values())
    print(json.dumps({"per_hop_per_request": total / (HOPS * requests), "total": total, "requests": requests}))


def measure_sdk_spans(requests: int) -> dict[str, Any] | None:
    env = dict(os.environ, OTEL_INSTRUMENTATION_A2A_SDK_ENABLED="true")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_instrumentation", "--sdk-spans", "--requests", str(requests)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    print(proc.stderr[-2000:], file=sys.stderr)
    return None


async def main_async(args: argparse.Namespace) -> None:
    exporter = CountingExporter()
    instrumented_requests = 0
    results = []
    for cpu_ms in args.agent_cpu_ms:
        rates: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for instrumented in order:
                rate = await run_round(instrumented, args.requests, args.concurrency, exporter, cpu_ms)
                rates[instrumented].append(rate)
                if instrumented:
                    instrumented_requests += args.requests + 10  # + warm-up requests
                print(f"agent cpu {cpu_ms:g} ms, round {r + 1}: "
                      f"{'instrumented  ' if instrumented else 'uninstrumented'} {rate:8.1f} req/s", flush=True)
        results.append((cpu_ms, rates))

    teardown = {names.SPAN_HANDLER_ACLOSE, names.SPAN_REGISTRY_ACLOSE, names.SPAN_TASK_ACLOSE}
    per_request = {n: c for n, c in exporter.by_name.items() if n not in teardown}
    total_spans = sum(per_request.values())
    per_hop = total_spans / (HOPS * instrumented_requests)
    print()
    print(f"relay A -> B -> C, {args.rounds} rounds x {args.requests} requests per side, concurrency {args.concurrency}")
    for cpu_ms, rates in results:
        off, on = statistics.median(rates[False]), statistics.median(rates[True])
        pairs = [b / a for a, b in zip(rates[False], rates[True])]
        what = "bare relay (agents compute nothing)" if not cpu_ms else f"each hop computes {cpu_ms:g} ms"
        print(f"{what}: uninstrumented median {off:.1f} req/s, instrumented median {on:.1f} req/s")
        print(f"    throughput ratio (instrumented/uninstrumented): median-of-medians {on / off:.3f}, "
              f"per-round {', '.join(f'{p:.3f}' for p in pairs)}   (goal >= 0.97)")
    print(f"our spans per hop per request: {per_hop:.2f}   (goal <= 5)")
    for name, count in sorted(per_request.items()):
        print(f"    {name:40s} {count / instrumented_requests:.2f} per request (all hops)")
    shutdowns = args.rounds * HOPS * len(results)
    for name in sorted(teardown & set(exporter.by_name)):
        print(f"    {name:40s} {exporter.by_name[name] / shutdowns:.2f} per server shutdown (not per request)")
    if not args.skip_sdk:
        sdk = measure_sdk_spans(args.sdk_requests)
        if sdk is not None:
            print(f"a2a-sdk's own spans per hop per request (OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true): "
                  f"{sdk['per_hop_per_request']:.1f}")


def _cpu_list(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of milliseconds >= 0, e.g. 0,1")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--agent-cpu-ms", type=_cpu_list, default=[0.0, 1.0], metavar="MS[,MS...]",
                        help="CPU each hop spends on its own work per request; one comparison per value "
                             "(default 0,1: the bare relay, the worst case, and agents doing a little work)")
    parser.add_argument("--sdk-requests", type=int, default=20)
    parser.add_argument("--skip-sdk", action="store_true", help="do not measure the SDK's own spans")
    parser.add_argument("--sdk-spans", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.sdk_spans:
        asyncio.run(sdk_span_count(args.requests))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
