"""Collector ingest benchmark: one command, prints figures (asserts nothing).

    .venv/bin/python benchmarks/bench_ingest.py [--seconds 5] [--clients 2] [--batch 64]

1. Throughput: cascade snapshots (lifecycle events) posted over real OTLP/HTTP
   on loopback to an `a2a-quiescence collector` process, in batches like the
   reporter makes (one request = a hop snapshot + N cascade snapshots, protobuf,
   keep-alive). Reported per wall second and per collector CPU second (the
   collector is one Python process: events per CPU-second is events/s on one core).
2. Ingest cost as the number of agents grows (3 -> 30 -> 300).
3. Memory per tracked agent and per tracked cascade: RSS delta of the collector
   process, and tracemalloc deltas of an in-process `MeshState`.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from a2a_quiescence.demo.harness import free_port, program_path, wait_http  # noqa: E402
from a2a_quiescence.instrumentation import reporter  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def hop(inc: str, seq: int) -> dict:
    now = time.time()
    return {"v": 1, "incarnation": inc, "seq": seq, "pid": 1, "started_at": now - 100, "at": now,
            "producers_in_flight": seq % 3, "producers_started": seq, "producers_finished": {"completed": seq},
            "stalled_closes_in_flight": 0, "stalls_total": 0, "destroyed_pending_total": 0, "recent": [],
            "shutdown": None}


def cascade(inc: str, seq: int, active: int, peer: str) -> dict:
    now = time.time()
    return {"v": 1, "incarnation": inc, "seq": seq, "active": active, "roots": [1, 12345],
            "sent": {peer: [1, 777]}, "received": {}, "aliases": ["127.0.0.1:8000"],
            "passive_since": None if active else now, "at": now}


def make_batches(agents: int, batch: int, traces_per_agent: int, rounds: int) -> list[tuple[int, bytes]]:
    """Pre-encoded requests: each from one agent, a hop snapshot + `batch` cascade snapshots.
    Cascades progress (seq grows, active flips) across rounds, as a live agent's do."""
    out = []
    incs = {a: uuid.uuid4().hex for a in range(agents)}
    traces = {a: [uuid.uuid4().hex for _ in range(traces_per_agent)] for a in range(agents)}
    for r in range(rounds):
        for a in range(agents):
            inc = incs[a]
            ts = traces[a]
            start = (r * batch) % len(ts)
            chosen = [ts[(start + i) % len(ts)] for i in range(batch)]
            body = reporter.encode(
                f"agent-{a}", inc, hop(inc, r + 1),
                [(t, cascade(inc, r + 1, (r + i) % 2, f"agent-{(a + 1) % agents}")) for i, t in enumerate(chosen)],
            )
            out.append((batch, body))
    return out


def client(port: int, batches: list[tuple[int, bytes]], seconds: float, start_at: float, q: mp.Queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/x-protobuf"}
    while time.time() < start_at:
        time.sleep(0.001)
    end = time.monotonic() + seconds
    events = requests = errors = 0
    i = 0
    while time.monotonic() < end:
        n, body = batches[i % len(batches)]
        i += 1
        conn.request("POST", "/v1/logs", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        requests += 1
        if resp.status == 200:
            events += n + 1  # the cascade snapshots and the hop snapshot
        else:
            errors += 1
    conn.close()
    q.put((events, requests, errors, i > len(batches)))


class CollectorProc:
    def __init__(self, *extra: str) -> None:
        self.http, self.otlp = free_port(), free_port()
        self.popen = subprocess.Popen(
            [program_path("a2a-quiescence"), "collector", "--http-listen", f"127.0.0.1:{self.http}",
             "--otlp-listen", f"127.0.0.1:{self.otlp}", "--otlp-grpc-listen", "off", "--log-level", "warning",
             "--agent-timeout", "3600", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{self.http}/readyz", proc=self.popen)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def throughput(agents: int, batch: int, clients: int, seconds: float) -> dict:
    c = CollectorProc()
    try:
        # enough distinct requests that no client replays one (a replay is a stale duplicate: cheaper)
        rounds = int(seconds * 60_000 / clients / (batch + 1) / agents) + 2
        per_client = [make_batches(agents, batch, traces_per_agent=max(batch, 6000 // agents), rounds=rounds)
                      for _ in range(clients)]
        q: mp.Queue = mp.Queue()
        start_at = time.time() + 0.5
        procs = [mp.Process(target=client, args=(c.otlp, b, seconds, start_at, q)) for b in per_client]
        for p in procs:
            p.start()
        while time.time() < start_at:
            time.sleep(0.001)
        cpu0, t0 = cpu_seconds(c.pid), time.monotonic()
        results = [q.get(timeout=seconds + 60) for _ in procs]
        cpu1, t1 = cpu_seconds(c.pid), time.monotonic()
        for p in procs:
            p.join()
        events = sum(r[0] for r in results)
        requests = sum(r[1] for r in results)
        errors = sum(r[2] for r in results)
        replayed = any(r[3] for r in results)
        wall = t1 - t0
        cpu = max(cpu1 - cpu0, 1e-9)
        t_scrape = time.perf_counter()
        import httpx

        scrape = httpx.get(f"http://127.0.0.1:{c.http}/metrics", timeout=30)
        scrape_s = time.perf_counter() - t_scrape
        return {"agents": agents, "batch": batch, "events": events, "requests": requests, "errors": errors, "replayed": replayed,
                "wall_s": wall, "events_per_s": events / wall, "collector_cpu_s": cpu,
                "events_per_cpu_s": events / cpu, "us_per_event_cpu": cpu / max(events, 1) * 1e6,
                "scrape_ms": scrape_s * 1000, "scrape_bytes": len(scrape.content)}
    finally:
        c.stop()


def rss_per_item(kind: str, n: int) -> float:
    """RSS growth of the collector process per tracked agent or cascade."""
    c = CollectorProc("--max-agents", str(n * 2), "--max-cascades", str(n * 2))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", c.otlp, timeout=30)
        headers = {"content-type": "application/x-protobuf"}

        def post(body: bytes) -> None:
            conn.request("POST", "/v1/logs", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status

        # warm up (allocator, code paths) before the baseline
        inc = uuid.uuid4().hex
        post(reporter.encode("warm", inc, hop(inc, 1), [(uuid.uuid4().hex, cascade(inc, 1, 1, "x"))]))
        before = rss_bytes(c.pid)
        if kind == "agent":
            for i in range(n):
                inc = uuid.uuid4().hex
                post(reporter.encode(f"agent-{i}", inc, hop(inc, 1), []))
        else:
            inc = uuid.uuid4().hex
            for start in range(0, n, 200):
                post(reporter.encode("one-agent", inc, None,
                                     [(uuid.uuid4().hex, cascade(inc, 1, 1, "peer")) for _ in range(min(200, n - start))]))
        conn.close()
        return (rss_bytes(c.pid) - before) / n
    finally:
        c.stop()


def tracemalloc_per_item(n: int) -> tuple[float, float]:
    """Python heap growth of MeshState per tracked agent and per open cascade (one hop each)."""
    from a2a_quiescence.collector.settlement import Detector
    from a2a_quiescence.collector.state import MeshState

    state = MeshState(detector=Detector(max_cascades=n * 2), max_agents=n * 2, agent_timeout=3600)
    agents = [(f"agent-{i}", uuid.uuid4().hex) for i in range(n)]
    bodies = [hop(inc, 1) for _, inc in agents]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for (name, _), body in zip(agents, bodies):
        state.ingest_hop(name, body)
    per_agent = (tracemalloc.get_traced_memory()[0] - base) / n
    inc = uuid.uuid4().hex
    snaps = [(uuid.uuid4().hex, cascade(inc, 1, 1, "peer")) for _ in range(n)]
    base = tracemalloc.get_traced_memory()[0]
    for trace_id, body in snaps:
        state.ingest_cascade("one-agent", trace_id, body)
    per_cascade = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    return per_agent, per_cascade


def mesh_ms(n_open: int, repeat: int = 5) -> float:
    """Median time of one /v1/mesh answer (what the status page asks for every
    second), computed in-process, with ``n_open`` open cascades over 30 agents."""
    import statistics

    from a2a_quiescence.collector.config import Config
    from a2a_quiescence.collector.server import Collector

    c = Collector(Config(otlp_listen=None, grpc_listen=None, max_cascades=n_open * 2, agent_timeout=3600))
    incs = [uuid.uuid4().hex for _ in range(30)]
    for i, inc in enumerate(incs):
        c.state.ingest_hop(f"agent-{i}", hop(inc, 1))
    for k in range(n_open):
        i = k % len(incs)
        c.state.ingest_cascade(f"agent-{i}", uuid.uuid4().hex, cascade(incs[i], 2 + k, 1, "peer"))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        c.mesh()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2, help="client processes posting in parallel")
    parser.add_argument("--batch", type=int, default=64, help="cascade snapshots per request")
    parser.add_argument("--memory-n", type=int, default=20_000)
    args = parser.parse_args()

    print(f"# a2a-quiescence collector ingest benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    print(f"# events = lifecycle snapshots (cascade + hop) via OTLP/HTTP protobuf on loopback; "
          f"{args.clients} client processes, keep-alive")
    print(f"{'agents':>6} {'batch':>5} {'events/s':>10} {'events/cpu-s':>13} {'cpu us/event':>12} "
          f"{'req/s':>8} {'errors':>6} {'scrape ms':>9}")
    for batch in sorted({1, 16, 64, 256, args.batch}):
        r = throughput(3, batch, args.clients, args.seconds)
        _row(r)
    for agents in (30, 300):
        r = throughput(agents, args.batch, args.clients, args.seconds)
        _row(r)

    print()
    print("# /v1/mesh (the status page's poll), in-process, median of 5")
    for n_open in (100, 10_000):
        print(f"open cascades {n_open:>6}: {mesh_ms(n_open):8.1f} ms")

    print()
    print("# memory per tracked item")
    n = args.memory_n
    print(f"collector RSS per agent   ({n:>6} agents):   {rss_per_item('agent', n):8.0f} B")
    print(f"collector RSS per cascade ({n:>6} cascades): {rss_per_item('cascade', n):8.0f} B")
    per_agent, per_cascade = tracemalloc_per_item(n)
    print(f"tracemalloc per agent   (MeshState, {n} agents):   {per_agent:8.0f} B")
    print(f"tracemalloc per cascade (MeshState, {n} cascades): {per_cascade:8.0f} B")


def _row(r: dict) -> None:
    print(f"{r['agents']:>6} {r['batch']:>5} {r['events_per_s']:>10.0f} {r['events_per_cpu_s']:>13.0f} "
          f"{r['us_per_event_cpu']:>12.1f} {r['requests'] / r['wall_s']:>8.0f} {r['errors']:>6} "
          f"{r['scrape_ms']:>9.1f}" + ("  (replayed batches: duplicates)" if r["replayed"] else ""), flush=True)


if __name__ == "__main__":
    main()
