"""Pod sidecar forwarding capacity: how many agents one sidecar forwards for
before it falls behind. One command, prints figures (asserts nothing).

    .venv/bin/python -m benchmarks.bench_sidecar [--agents 25,50,100,200,400] [--rate 1] [--seconds 12]

For each agent count, a fresh sidecar (`a2a-quiescence collector --forward`,
as the chart's pod sidecar runs, default forwarding settings) forwards to a
fresh real OpenTelemetry Collector built here (.tools/bin/otelcol-a2aq,
scripts/install-otelcol.sh; its OTLP/HTTP receiver into `nop`, so the upstream
is never the limit). Virtual agents in one load process send what an agent at
the default intervals sends:

- lifecycle snapshots over OTLP/HTTP, encoded by the agent's own encoder: one
  request per request the agent serves (docs/benchmarks.md measured 0.96), at
  ``--rate`` requests per second per agent (Poisson arrivals), and a heartbeat
  every 2 s (A2A_QUIESCENCE_HEARTBEAT_SECONDS' default);
- spans over OTLP/gRPC every 5 s (the batch span processor's default), five
  spans per request served, each with the attributes a server span carries;
- metrics over OTLP/gRPC every 60 s (the periodic reader's default);

each agent on its own kept-alive connection, at a random phase. Reported per
agent count: requests offered and forwarded per second, the most requests
waiting in the sidecar (``a2a_quiescence_forward_waiting`` sampled every
250 ms), how long the queue took to empty once the agents stopped, drops by
reason, the sidecar's CPU (share of one core) and the agents' POST latency.
A sidecar keeps up when the agents could send what they meant to (at least
95%: they wait for each answer, as exporters do), nothing is dropped or refused
and its queue empties within a second of the agents stopping: it is then less
than a second behind them (settlement is late by as much as forwarding is). The load process shares the
2 cores with the sidecar and the upstream; its CPU is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import httpx
import yaml
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from a2a_quiescence import names  # noqa: E402
from a2a_quiescence.demo.harness import free_port, program_path, stop_process, wait_http  # noqa: E402
from a2a_quiescence.instrumentation.reporter import encode  # noqa: E402
from benchmarks.bench_ingest import cpu_seconds  # noqa: E402

HEARTBEAT = 2.0
SPAN_EVERY = 5.0
METRICS_EVERY = 60.0
SPANS_PER_REQUEST = 5
SAMPLE_EVERY = 0.25
KEEPS_UP_DRAIN = 1.0
OTELCOL = ROOT / ".tools" / "bin" / "otelcol-a2aq"
READY = "Everything is ready. Begin running and processing data."


# -- what an agent sends ---------------------------------------------------------------------
def _attr(key: str, value: str | int) -> common_pb2.KeyValue:
    any_value = common_pb2.AnyValue(int_value=value) if isinstance(value, int) else common_pb2.AnyValue(string_value=value)
    return common_pb2.KeyValue(key=key, value=any_value)


def _resource(agent: str, incarnation: str) -> resource_pb2.Resource:
    return resource_pb2.Resource(attributes=[
        _attr("service.name", agent), _attr("service.instance.id", incarnation),
        _attr("telemetry.sdk.language", "python"), _attr("telemetry.sdk.name", "opentelemetry"),
    ])


def spans_request(agent: str, incarnation: str, count: int) -> bytes:
    now = time.time_ns()
    spans = []
    for _ in range(count):
        spans.append(trace_pb2.Span(
            trace_id=os.urandom(16), span_id=os.urandom(8), parent_span_id=os.urandom(8),
            name="SendMessage", kind=trace_pb2.Span.SPAN_KIND_SERVER,
            start_time_unix_nano=now - 40_000_000, end_time_unix_nano=now,
            attributes=[_attr("a2a.method.name", "SendMessage"), _attr("a2a.task.id", str(uuid.uuid4())),
                        _attr("a2a.message.id", str(uuid.uuid4())), _attr("a2a.task.state", "completed"),
                        _attr("gen_ai.conversation.id", str(uuid.uuid4())), _attr("gen_ai.agent.name", agent),
                        _attr("server.address", "127.0.0.1"), _attr("server.port", 8000)],
        ))
    request = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=_resource(agent, incarnation),
        scope_spans=[trace_pb2.ScopeSpans(scope=common_pb2.InstrumentationScope(name="a2a_quiescence"), spans=spans)],
    )])
    return request.SerializeToString()


def metrics_request(agent: str, incarnation: str) -> bytes:
    now = time.time_ns()
    metrics = [
        metrics_pb2.Metric(name=name, sum=metrics_pb2.Sum(
            aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE, is_monotonic=True,
            data_points=[metrics_pb2.NumberDataPoint(as_int=7, time_unix_nano=now, attributes=[_attr("agent", agent)])]))
        for name in (names.M_PRODUCERS_STARTED, names.M_PRODUCERS_FINISHED, names.M_STALLS, "http.server.duration")
    ]
    request = metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=_resource(agent, incarnation),
        scope_metrics=[metrics_pb2.ScopeMetrics(scope=common_pb2.InstrumentationScope(name="a2a_quiescence"),
                                                metrics=metrics)],
    )])
    return request.SerializeToString()


class Agent:
    """One virtual agent: its snapshots' sequence, its own connection."""

    def __init__(self, index: int, http_port: int, grpc_target: str, stats: Stats) -> None:
        self.name = f"agent-{index}"
        self.incarnation = uuid.uuid4().hex
        self.seq = 0
        self.started = 0
        self.served_since_spans = 0
        self.http_port = http_port
        self.grpc_target = grpc_target
        self.stats = stats

    def snapshot(self, cascade: bool) -> bytes:
        self.seq += 1
        now = time.time()
        hop = {"v": names.SNAPSHOT_SCHEMA_VERSION, "incarnation": self.incarnation, "seq": self.seq, "pid": 1,
               "started_at": now, "at": now, "producers_in_flight": 0, "producers_started": self.started,
               "producers_finished": {"completed": self.started}, "stalled_closes_in_flight": 0,
               "stalls_total": 0, "destroyed_pending_total": 0, "recent": [], "shutdown": None}
        cascades = []
        if cascade:
            trace = uuid.uuid4().hex
            cascades.append((trace, {"v": names.SNAPSHOT_SCHEMA_VERSION, "incarnation": self.incarnation,
                                     "seq": self.seq, "active": 0, "roots": [1, 7], "sent": {}, "received": {},
                                     "aliases": [], "passive_since": now, "at": now}))
        return encode(self.name, self.incarnation, hop, cascades)

    async def run(self, until: float) -> None:
        self.connection = await asyncio.open_connection("127.0.0.1", self.http_port)
        channel = grpc.aio.insecure_channel(self.grpc_target)
        traces = trace_service_pb2_grpc.TraceServiceStub(channel)
        metrics = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        loop = asyncio.get_running_loop()
        now = loop.time()
        rate = self.stats.rate
        next_request = now + random.expovariate(rate) if rate > 0 else float("inf")
        next_beat = now + random.uniform(0, HEARTBEAT)
        next_spans = now + random.uniform(0, self.stats.span_every)
        next_metrics = now + random.uniform(0, self.stats.metrics_every)
        try:
            while True:
                due = min(next_request, next_beat, next_spans, next_metrics)
                if due >= until:
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                if due == next_request:
                    self.started += 1
                    self.served_since_spans += 1
                    await self._post(self.snapshot(cascade=True))
                    next_request += random.expovariate(rate)
                elif due == next_beat:
                    await self._post(self.snapshot(cascade=False))
                    next_beat += HEARTBEAT
                elif due == next_spans:
                    count = self.served_since_spans * SPANS_PER_REQUEST
                    self.served_since_spans = 0
                    if count:
                        await self._export(traces.Export, trace_service_pb2.ExportTraceServiceRequest,
                                           spans_request(self.name, self.incarnation, count))
                    next_spans += self.stats.span_every
                else:
                    await self._export(metrics.Export, metrics_service_pb2.ExportMetricsServiceRequest,
                                       metrics_request(self.name, self.incarnation))
                    next_metrics += self.stats.metrics_every
        finally:
            self.connection[1].close()
            await channel.close()

    async def _post(self, body: bytes) -> None:
        """POST on the kept-alive connection; a connection the sidecar closed is opened
        again (as an agent's client would) and counted."""
        head = (f"POST /v1/logs HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-protobuf\r\n"
                f"content-length: {len(body)}\r\n\r\n").encode()
        start = time.perf_counter()
        try:
            await self._exchange(head + body, start)
        except (ConnectionError, asyncio.IncompleteReadError, IndexError):
            self.stats.reconnects += 1
            self.connection[1].close()
            self.connection = await asyncio.open_connection("127.0.0.1", self.http_port)
            await self._exchange(head + body, start)

    async def _exchange(self, request: bytes, start: float) -> None:
        reader, writer = self.connection
        writer.write(request)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        self.stats.latencies.append(time.perf_counter() - start)
        if status_line.split()[1:2] == [b"200"]:
            self.stats.accepted += 1
        else:
            self.stats.refused += 1

    async def _export(self, call: object, message_type: type, raw: bytes) -> None:
        request = message_type.FromString(raw)
        try:
            await call(request, timeout=10)  # type: ignore[operator]
            self.stats.accepted += 1
        except grpc.aio.AioRpcError:
            self.stats.refused += 1


class Stats:
    def __init__(self, rate: float, span_every: float = SPAN_EVERY, metrics_every: float = METRICS_EVERY) -> None:
        self.rate = rate
        self.span_every = span_every
        self.metrics_every = metrics_every
        self.accepted = 0
        self.refused = 0
        self.reconnects = 0
        self.latencies: list[float] = []


# -- the processes -----------------------------------------------------------------------------
def start_upstream(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = workdir / "otelcol.yaml"
    config.write_text(yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {"nop": {}},
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {signal: {"receivers": ["otlp"], "exporters": ["nop"]}
                          for signal in ("logs", "traces", "metrics")},
        },
    }))
    log = workdir / "otelcol.log"
    popen = subprocess.Popen([str(OTELCOL), f"--config=file:{config}"], stdout=subprocess.DEVNULL,
                             stderr=log.open("ab"))
    deadline = time.monotonic() + 30
    while READY not in log.read_text(errors="replace"):
        if popen.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the OpenTelemetry Collector did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return popen, port


def start_sidecar(workdir: Path, upstream: int, concurrency: int | None) -> tuple[subprocess.Popen, int, int, int]:
    http, otlp, grpc_port = free_port(), free_port(), free_port()
    extra = ["--forward-concurrency", str(concurrency)] if concurrency else []
    popen = subprocess.Popen(
        [program_path("a2a-quiescence"), "collector", "--http-listen", f"127.0.0.1:{http}",
         "--otlp-listen", f"127.0.0.1:{otlp}", "--otlp-grpc-listen", f"127.0.0.1:{grpc_port}",
         "--forward", f"http://127.0.0.1:{upstream}", "--agent-timeout", "3600", "--max-agents", "100000",
         "--log-level", "warning", *extra],
        stdout=(workdir / "sidecar.log").open("ab"), stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{http}/readyz", proc=popen)
    return popen, http, otlp, grpc_port


_SAMPLE = re.compile(r"^(a2a_quiescence_\w+?)(?:\{reason=\"(\w+)\"\})? ([0-9.e+-]+)$", re.M)


def forwarding_state(client: httpx.Client, api: str) -> dict[str, float]:
    text = client.get(f"{api}/metrics").text
    out: dict[str, float] = {}
    for name, reason, value in _SAMPLE.findall(text):
        key = f"{name}:{reason}" if reason else name
        out[key] = float(value)
    return out


def dropped(state: dict[str, float]) -> dict[str, int]:
    return {reason: int(state.get(f"{names.M_DROPPED}:{reason}", 0)) for reason in names.DROP_REASONS}


async def sample(api: str, until: float, samples: list[float]) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            text = (await client.get(f"{api}/metrics")).text
            match = re.search(rf"^{names.M_FORWARD_WAITING} ([0-9.e+-]+)$", text, re.M)
            samples.append(float(match.group(1)) if match else 0.0)
            await asyncio.sleep(SAMPLE_EVERY)


async def load(agents: int, rate: float, seconds: float, otlp: int, grpc_port: int, api: str,
               stats: Stats, samples: list[float]) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    fleet = [Agent(i, otlp, f"127.0.0.1:{grpc_port}", stats) for i in range(agents)]
    await asyncio.gather(sample(api, until, samples), *(a.run(until) for a in fleet))


def one_run(agents: int, rate: float, seconds: float, concurrency: int | None,
            span_every: float, metrics_every: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-sidecar-") as tmp:
        workdir = Path(tmp)
        upstream, upstream_port = start_upstream(workdir)
        sidecar, http, otlp, grpc_port = start_sidecar(workdir, upstream_port, concurrency)
        api = f"http://127.0.0.1:{http}"
        try:
            stats, samples = Stats(rate, span_every, metrics_every), []
            cpu0, load_cpu0 = cpu_seconds(sidecar.pid), time.process_time()
            t0 = time.monotonic()
            asyncio.run(load(agents, rate, seconds, otlp, grpc_port, api, stats, samples))
            elapsed = time.monotonic() - t0
            cpu = cpu_seconds(sidecar.pid) - cpu0
            load_cpu = time.process_time() - load_cpu0
            stopped = time.monotonic()
            with httpx.Client(timeout=5) as client:
                while True:
                    state = forwarding_state(client, api)
                    done = state.get(names.M_FORWARDED, 0) + sum(dropped(state).values())
                    if done >= stats.accepted or time.monotonic() - stopped > 60:
                        break
                    time.sleep(0.02)
            drain = time.monotonic() - stopped
        finally:
            stop_process(sidecar)
            stop_process(upstream)
    latencies = sorted(stats.latencies) or [0.0]
    drops = dropped(state)
    # what the agents meant to send (they wait for each answer, as exporters do: a sidecar
    # that cannot keep up slows them down rather than piling up requests)
    intended = agents * (rate + 1 / HEARTBEAT + (1 / span_every if rate > 0 else 0) + 1 / metrics_every)
    offered = stats.accepted / elapsed
    return {
        "agents": agents, "intended": intended, "offered": offered, "forwarded": state.get(names.M_FORWARDED, 0) / elapsed,
        "most_waiting": max(samples or [0.0]), "drain": drain, "drops": drops, "cpu": cpu / elapsed,
        "load_cpu": load_cpu / elapsed, "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], "refused": stats.refused, "reconnects": stats.reconnects,
        "keeps_up": (sum(drops.values()) == 0 and stats.refused == 0 and drain <= KEEPS_UP_DRAIN
                     and offered >= 0.95 * intended),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="25,50,100,200,400", help="agent counts, comma-separated")
    parser.add_argument("--rate", type=float, default=1.0, help="requests each agent serves per second")
    parser.add_argument("--seconds", type=float, default=12.0, help="how long the agents send, per count")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="--forward-concurrency for the sidecar (default: the sidecar's own default)")
    parser.add_argument("--span-every", type=float, default=SPAN_EVERY, help="seconds between span exports")
    parser.add_argument("--metrics-every", type=float, default=METRICS_EVERY, help="seconds between metrics exports")
    args = parser.parse_args()
    if not OTELCOL.exists():
        print(f"{OTELCOL} is missing: run bash scripts/setup.sh (it builds the collector)", file=sys.stderr)
        return 2
    print(f"agents at {args.rate:g} requests/s each, heartbeats every {HEARTBEAT:g} s, spans every "
          f"{args.span_every:g} s, metrics every {args.metrics_every:g} s; {args.seconds:g} s per count; forward concurrency "
          f"{args.concurrency or 'default'}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"{'agents':>6} {'meant/s':>7} {'offered/s':>9} {'fwd/s':>7} {'waiting':>7} {'drain s':>7} {'drops':>6} "
          f"{'sidecar cpu':>11} {'load cpu':>8} {'post p50 ms':>11} {'p99 ms':>7}  keeps up")
    for count in [int(x) for x in args.agents.split(",")]:
        r = one_run(count, args.rate, args.seconds, args.concurrency, args.span_every, args.metrics_every)
        print(f"{r['agents']:>6} {r['intended']:>7.0f} {r['offered']:>9.0f} {r['forwarded']:>7.0f} {r['most_waiting']:>7.0f} "
              f"{r['drain']:>7.2f} {sum(r['drops'].values()):>6} {r['cpu']:>11.2f} {r['load_cpu']:>8.2f} "
              f"{r['p50'] * 1000:>11.1f} {r['p99'] * 1000:>7.1f}  {'yes' if r['keeps_up'] else 'NO'}"
              f"{'' if not r['refused'] else ' (%d refused)' % r['refused']}"
              f"{'' if not r['reconnects'] else ' (%d reconnects)' % r['reconnects']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
