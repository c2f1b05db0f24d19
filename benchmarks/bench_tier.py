"""Mesh tier benchmark: does the tier split the load? One command, prints
figures (asserts nothing).

    .venv/bin/python -m benchmarks.bench_tier [--cascades 6000] [--shards 1,2,3,4]

For each tier size, fresh shard processes (`a2a-quiescence collector
--shard-name ...`) receive the same workload over OTLP/gRPC, routed the way
the load-balancing exporter routes it (the pinned v0.161.0 ring, one record per trace id,
``a2a_quiescence.ring``): every cascade is A -> B -> C, six snapshots (each hop
active, then passive with its tallies), so every cascade settles. Sent from
this process, one shard after another, in requests of 200 records.

Reported per tier size: events per shard (min-max), each shard's CPU per event
(from /proc, user + system; the shards share 2 cores, so CPU per event is the
figure that must stay flat, not wall throughput), the tier's total CPU, and
cascades settled (which must equal the workload). Then, for sizing, one
shard's resident memory per open cascade and its /metrics scrape time.

Then takeover, at the defaults a user runs (sidecar and shards: --ring-refresh 2 s,
--ring-settle 6 s; agents: heartbeat 2 s): real agents A -> B -> C under
opentelemetry-instrument, their pod sidecar forwarding to the real OpenTelemetry
Collector built here (tests/otelcol.py: its load_balancing exporter, static resolver
reloaded on SIGHUP) in front of three shards. Each round runs cascades until they have
settled, then kills a shard and later adds one; from each change on, every cascade of the
round is waited on through the shard set, and the time until its owner under the new ring
answers it settled is taken (moved: the ring gave it a new owner; kept: it did not). The
agents are idle then, so they learn of the change at their next heartbeat: the worst case.
With --exporter-lag the exporter sees each change that much later than the shard set
(its dns resolver re-resolves every 5 s): the first resends go by the old ring, and the
second, once the membership has held for --ring-settle, brings the cascades over.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc
import httpx
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' shard processes and real collector

from a2a_quiescence.demo.harness import program_path, free_port, stop_process, wait_http  # noqa: E402
from benchmarks.bench_ingest import cpu_seconds, rss_bytes  # noqa: E402
from a2a_quiescence.instrumentation.reporter import encode  # noqa: E402
from a2a_quiescence.shards import ShardSpec  # noqa: E402
from a2a_quiescence.wire import Tally, cascade_body  # noqa: E402
from a2a_quiescence import environment_variables as env  # noqa: E402
from a2a_quiescence.demo.harness import Mesh  # noqa: E402
from a2a_quiescence.wait import wait_sync  # noqa: E402

BATCH = 200


def cascade_records(trace_id: str, incs: dict[str, str], settle: bool = True) -> list[tuple[str, str, dict]]:
    """(hop, trace id, body) of one A -> B -> C cascade: each hop active, then passive."""
    now = time.time()
    root, ab, bc = Tally().with_id(trace_id + "r"), Tally().with_id(trace_id + "ab"), Tally().with_id(trace_id + "bc")
    hops = [("A", {"roots": root, "sent": {"b:1": ab}, "received": {}}),
            ("B", {"roots": Tally(), "sent": {"c:1": bc}, "received": {"A": ab}}),
            ("C", {"roots": Tally(), "sent": {}, "received": {"B": bc}})]
    out = []
    for seq, active in ((1, 1), (2, 0)) if settle else ((1, 1),):
        for hop, t in hops:
            body = cascade_body(incarnation=incs[hop], seq=seq, active=active, roots=t["roots"], sent=t["sent"],
                                received=t["received"], aliases=[hop.lower() + ":1"],
                                passive_since=None if active else now, at=now, root_at=now if hop == "A" else None)
            out.append((hop, trace_id, body))
    return out


class Shard:
    def __init__(self, ring_file: Path, extra: tuple[str, ...] = ()) -> None:
        self.grpc, self.http = free_port(), free_port()
        self.endpoint = f"127.0.0.1:{self.grpc}"
        self.url = f"http://127.0.0.1:{self.http}"
        self.ring_file = ring_file
        self.extra = extra
        self.popen: subprocess.Popen | None = None
        self.log = ring_file.with_name(f"shard-{self.grpc}.log")

    def start(self) -> None:
        self.popen = subprocess.Popen(
            [program_path("a2a-quiescence"), "collector", "--otlp-listen", "off", "--otlp-grpc-listen", self.endpoint,
             "--http-listen", f"127.0.0.1:{self.http}", "--shards", f"@{self.ring_file}",
             "--shard-name", self.endpoint, "--agent-timeout", "3600", "--log-level", "warning", *self.extra],
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"),
        )
        try:
            wait_http(f"{self.url}/readyz", proc=self.popen)
        except RuntimeError as exc:
            raise RuntimeError(f"shard {self.endpoint} did not start: {self.log.read_text()[-500:]}") from exc

    def stop(self) -> None:
        if self.popen is not None:
            stop_process(self.popen)


def settled(url: str) -> int:
    return int(httpx.get(f"{url}/v1/mesh", params={"local": "1"}, timeout=30).json()["settled_total"])


def run_tier(n: int, cascades: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ring_file = Path(tmp) / "shards"
        shards = [Shard(ring_file) for _ in range(n)]
        ring_file.write_text("\n".join(f"{s.endpoint}={s.url}" for s in shards) + "\n")
        membership = ShardSpec(f"@{ring_file}").resolve()
        try:
            for s in shards:
                s.start()
            incs = {h: uuid.uuid4().hex for h in "ABC"}
            per_shard: dict[str, list[tuple[str, str, dict]]] = {s.endpoint: [] for s in shards}
            for _ in range(cascades):
                trace_id = uuid.uuid4().hex
                owner = membership.owner(trace_id)
                assert owner is not None
                per_shard[owner.endpoint].extend(cascade_records(trace_id, incs))
            requests = {}
            for endpoint, records in per_shard.items():
                bodies = []
                for i in range(0, len(records), BATCH):
                    chunk = records[i:i + BATCH]
                    for hop in "ABC":
                        mine = [(t, b) for h, t, b in chunk if h == hop]
                        if mine:
                            raw = encode(hop, incs[hop], None, mine)
                            bodies.append(logs_service_pb2.ExportLogsServiceRequest.FromString(raw))
                requests[endpoint] = bodies
            cpu0 = {s.endpoint: cpu_seconds(s.popen.pid) for s in shards}  # type: ignore[union-attr]
            for s in shards:
                with grpc.insecure_channel(s.endpoint) as channel:
                    stub = logs_service_pb2_grpc.LogsServiceStub(channel)
                    for request in requests[s.endpoint]:
                        stub.Export(request, timeout=30)
            done = sum(settled(s.url) for s in shards)
            cpu = {s.endpoint: cpu_seconds(s.popen.pid) - cpu0[s.endpoint] for s in shards}  # type: ignore[union-attr]
        finally:
            for s in shards:
                s.stop()
    events = {e: len(r) for e, r in per_shard.items()}
    per_event = [cpu[e] / events[e] * 1e6 for e in events if events[e]]
    return {"shards": n, "events": events, "cpu_us_per_event": per_event, "cpu_total": sum(cpu.values()),
            "settled": done, "cascades": cascades}


def sizing(open_cascades: int) -> dict:
    """One shard: RSS per open cascade and /metrics scrape time with that many held."""
    with tempfile.TemporaryDirectory() as tmp:
        ring_file = Path(tmp) / "shards"
        shard = Shard(ring_file, ("--max-cascades", str(open_cascades * 2)))
        ring_file.write_text(f"{shard.endpoint}={shard.url}\n")
        try:
            shard.start()
            assert shard.popen is not None
            time.sleep(0.5)  # let the freshly started process reach its idle size (a measurement, not a sync)
            rss0 = rss_bytes(shard.popen.pid)
            incs = {h: uuid.uuid4().hex for h in "ABC"}
            with grpc.insecure_channel(shard.endpoint) as channel:
                stub = logs_service_pb2_grpc.LogsServiceStub(channel)
                records = []
                for _ in range(open_cascades):
                    records.extend(cascade_records(uuid.uuid4().hex, incs, settle=False))
                for i in range(0, len(records), BATCH):
                    chunk = records[i:i + BATCH]
                    for hop in "ABC":
                        mine = [(t, b) for h, t, b in chunk if h == hop]
                        if mine:
                            stub.Export(logs_service_pb2.ExportLogsServiceRequest.FromString(
                                encode(hop, incs[hop], None, mine)), timeout=30)
            rss = rss_bytes(shard.popen.pid) - rss0
            scrapes = []
            for _ in range(5):
                t0 = time.perf_counter()
                text = httpx.get(f"{shard.url}/metrics", timeout=60).text
                scrapes.append(time.perf_counter() - t0)
            series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        finally:
            shard.stop()
    return {"open": open_cascades, "bytes_per_cascade": rss / open_cascades, "scrape_ms": min(scrapes) * 1000,
            "series": series}


DEFAULTS = ("--ring-refresh", str(env.RING_REFRESH.default), "--ring-settle", str(env.RING_SETTLE.default))


def takeover(rounds: int, cascades: int, lag: float) -> dict[str, list]:
    """Takeover times (see the module's doc) by change: {"shard killed": [...], "shard added": [...]}."""
    from otelcol import RealCollector
    from tierkit import ShardProc, measure_takeover, run_cascades, start_shard, write_ring

    out: dict[str, list] = {"shard killed": [], "shard added": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ring_file = work / "shards"
        live = [ShardProc(free_port(), free_port()) for _ in range(3)]
        every = list(live)
        write_ring(ring_file, live)
        spec = ShardSpec(f"@{ring_file}")
        gateway = RealCollector([s.endpoint for s in live], work, free_port())
        try:
            for shard in live:
                start_shard(shard, ring_file, work, *DEFAULTS, "--stuck-after", "60")
            with Mesh(work) as mesh:
                mesh.start_collector("--forward", gateway.url, "--shards", f"@{ring_file}", *DEFAULTS)
                mesh.start_webhook()
                heartbeat = {env.HEARTBEAT_SECONDS.name: str(env.HEARTBEAT_SECONDS.default)}
                mesh.start_agent("C", env=heartbeat)
                mesh.start_agent("B", ["C"], env=heartbeat)
                mesh.start_agent("A", ["B"], env=heartbeat)
                for r in range(rounds):
                    ids = run_cascades(mesh, cascades)
                    for trace_id in ids:
                        wait_sync(trace_id, shards=spec, timeout=60)
                    for change in out:
                        if change == "shard killed":
                            gone = live.pop(r % len(live))
                            gone.popen.kill()  # type: ignore[union-attr]
                            gone.popen.wait(10)  # type: ignore[union-attr]
                        else:
                            new = ShardProc(free_port(), free_port())
                            every.append(new)
                            live.append(new)
                            start_shard(new, ring_file, work, *DEFAULTS, "--stuck-after", "60")
                        old, changed = spec.resolve(), time.monotonic()
                        write_ring(ring_file, live)
                        # the exporter sees it now (SIGHUP) or --exporter-lag later, as a dns resolver would
                        seen = threading.Timer(lag, gateway.set_endpoints, args=([s.endpoint for s in live],))
                        seen.start()
                        out[change] += measure_takeover(spec, old, ids, changed, timeout=60)
                        seen.join()
        finally:
            gateway.close()
            for shard in every:
                if shard.popen is not None and shard.popen.poll() is None:
                    stop_process(shard.popen)
    return out


def print_takeover(rounds: int, cascades: int, lags: list[float]) -> None:
    from tierkit import percentile

    print(f"takeover: {rounds} rounds x {cascades} cascades, a shard killed then one added per round; "
          f"defaults (ring refresh {env.RING_REFRESH.default:g} s, settle {env.RING_SETTLE.default:g} s, "
          f"heartbeat {env.HEARTBEAT_SECONDS.default:g} s); seconds from the change to the owner's answer")
    print(f"{'exporter lag':>12} {'change':>13} {'moved':>6} {'p50':>6} {'p99':>6} {'kept':>5} {'p50':>6} {'p99':>6} "
          f"{'by owner':>9}")
    for lag in lags:
        for change, results in takeover(rounds, cascades, lag).items():
            moved = [t.seconds for t in results if t.moved]
            kept = [t.seconds for t in results if not t.moved]
            right = sum(1 for t in results if t.status == "settled" and t.shard == t.owner)

            def cell(values: list[float], q: float) -> str:
                return f"{percentile(values, q):.2f}" if values else "-"
            print(f"{lag:>10g} s {change:>13} {len(moved):>6} {cell(moved, 50):>6} {cell(moved, 99):>6} "
                  f"{len(kept):>5} {cell(kept, 50):>6} {cell(kept, 99):>6} {right:>4}/{len(results)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cascades", type=int, default=6000, help="cascades per tier size (6 snapshots each)")
    parser.add_argument("--shards", default="1,2,3,4", help="tier sizes to run, comma-separated")
    parser.add_argument("--sizing-open", type=int, default=10_000, help="open cascades held for the sizing figures")
    parser.add_argument("--takeover-rounds", type=int, default=3, help="takeover rounds (0: skip takeover)")
    parser.add_argument("--takeover-cascades", type=int, default=12, help="cascades per takeover round")
    parser.add_argument("--exporter-lag", default="0,5",
                        help="seconds after the shard set the exporter sees each change, comma-separated runs")
    parser.add_argument("--only-takeover", action="store_true", help="skip the load and sizing figures")
    args = parser.parse_args()
    if args.only_takeover:
        print_takeover(args.takeover_rounds, args.takeover_cascades, [float(x) for x in args.exporter_lag.split(",")])
        return
    print(f"mesh tier: {args.cascades} cascades x 6 snapshots, routed by the exporter's ring, over OTLP/gRPC")
    print(f"{'shards':>6} {'events/shard (min-max)':>24} {'CPU us/event per shard':>28} {'tier CPU s':>10} {'settled':>9}")
    for n in (int(x) for x in args.shards.split(",")):
        r = run_tier(n, args.cascades)
        ev = sorted(r["events"].values())
        per = ", ".join(f"{x:.0f}" for x in r["cpu_us_per_event"])
        print(f"{n:>6} {f'{ev[0]}-{ev[-1]}':>24} {per:>28} {r['cpu_total']:>10.2f} {r['settled']:>5}/{r['cascades']}")
    s = sizing(args.sizing_open)
    print(f"sizing (one shard, {s['open']} open cascades of 3 hops): {s['bytes_per_cascade'] / 1024:.1f} KiB RSS per "
          f"cascade; /metrics scrape {s['scrape_ms']:.1f} ms for {s['series']} series")
    if args.takeover_rounds:
        print_takeover(args.takeover_rounds, args.takeover_cascades, [float(x) for x in args.exporter_lag.split(",")])


if __name__ == "__main__":
    main()
