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
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import httpx
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from a2a_quiescence.demo.harness import _bin, free_port, stop_process, wait_http  # noqa: E402
from benchmarks.bench_ingest import cpu_seconds, rss_bytes  # noqa: E402
from a2a_quiescence.instrumentation.reporter import encode  # noqa: E402
from a2a_quiescence.shards import ShardSpec  # noqa: E402
from a2a_quiescence.wire import Tally, cascade_body  # noqa: E402

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
            [_bin("a2a-quiescence"), "collector", "--otlp-listen", "off", "--otlp-grpc-listen", self.endpoint,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cascades", type=int, default=6000, help="cascades per tier size (6 snapshots each)")
    parser.add_argument("--shards", default="1,2,3,4", help="tier sizes to run, comma-separated")
    parser.add_argument("--sizing-open", type=int, default=10_000, help="open cascades held for the sizing figures")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
