"""Shard processes of a mesh tier for the tests: a shard collector per process on
loopback, its shard set in a file the test rewrites as a ConfigMap update would."""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from a2a_quiescence.demo.harness import Mesh, program_path, wait_http
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.shards import Membership, ShardSpec
from a2a_quiescence.wait import wait_sync


@dataclass
class ShardProc:
    grpc_port: int
    http_port: int
    popen: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def line(self) -> str:
        return f"{self.endpoint}={self.url}"


def start_shard(shard: ShardProc, ring_file: Path, workdir: Path, *extra: str) -> None:
    log = workdir / f"shard-{shard.grpc_port}.log"
    shard.popen = subprocess.Popen(
        [program_path("a2a-quiescence"), "collector", "--otlp-listen", "off",
         "--otlp-grpc-listen", shard.endpoint, "--http-listen", f"127.0.0.1:{shard.http_port}",
         "--shards", f"@{ring_file}", "--shard-name", shard.endpoint, "--ring-refresh", "0.2",
         # what the tests' pod sidecars use: a shard tells clients how long resends may take
         "--ring-settle", "1",
         # short, so a cascade held here by mistake would show as stuck within the run
         "--stuck-after", "2", "--log-level", "warning", *extra],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    wait_http(f"{shard.url}/readyz", proc=shard.popen)


def write_ring(ring_file: Path, shards: list[ShardProc]) -> None:
    tmp = ring_file.with_suffix(".tmp")
    tmp.write_text("\n".join(s.line() for s in shards) + "\n", encoding="utf-8")
    tmp.replace(ring_file)  # atomic, as a ConfigMap update is


def owned_by(spec: ShardSpec, shard: ShardProc, new_id) -> str:
    """A fresh trace id the ring gives to ``shard`` (``new_id()`` draws one)."""
    membership = spec.resolve()
    while True:
        trace_id = new_id()
        owner = membership.owner(trace_id)
        if owner is not None and owner.endpoint == shard.endpoint:
            return trace_id


def run_cascades(mesh: Mesh, n: int) -> list[str]:
    """n cascades through A -> B -> C, all at once: blocking relays and non-blocking ones whose C pushes."""
    async def one(i: int) -> str:
        trace_id = new_trace_id()
        c_call = {"to": "C", "plan": {"work_ms": 30}}
        if i % 2:
            c_call = {"to": "C", "blocking": False, "push": True, "plan": {"work_ms": 80}}
        await send_plan(mesh.agents["A"].url, {"calls": [{"to": "B", "plan": {"calls": [c_call]}}]}, trace_id=trace_id)
        return trace_id

    async def all_() -> list[str]:
        return list(await asyncio.gather(*(one(i) for i in range(n))))

    return asyncio.run(all_())


@dataclass(frozen=True)
class Takeover:
    """One cascade after a membership change: whether the ring gave it a new owner, how
    long after the change its owner (by the new ring) answered it settled, and who answered."""

    trace_id: str
    moved: bool
    seconds: float
    shard: str | None
    owner: str | None
    status: str


def measure_takeover(spec: ShardSpec, before: Membership, trace_ids: Iterable[str], changed_at: float,
                     timeout: float = 60.0) -> list[Takeover]:
    """Wait on every cascade at once, as clients would (``wait_sync`` through the shard set,
    the owner asked by the new ring), from ``changed_at`` (``time.monotonic()`` when the
    change was published). A cascade that kept its owner answers at once; a moved one
    when the agents' resends have reached its new owner and it settled there."""
    after = spec.resolve()
    ids = list(trace_ids)

    def one(trace_id: str) -> Takeover:
        old, new = before.owner(trace_id), after.owner(trace_id)
        state = wait_sync(trace_id, shards=spec, timeout=timeout)
        return Takeover(trace_id, moved=(old and old.endpoint) != (new and new.endpoint),
                        seconds=time.monotonic() - changed_at, shard=state.get("shard"),
                        owner=new.url if new else None, status=str(state.get("status")))

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(ids)))) as pool:
        return list(pool.map(one, ids))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (of a few dozen values, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def describe_takeover(results: list[Takeover]) -> str:
    parts = []
    for label, group in (("moved", [r for r in results if r.moved]), ("kept", [r for r in results if not r.moved])):
        if group:
            secs = [r.seconds for r in group]
            parts.append(f"{label} {len(group)}: p50 {percentile(secs, 50):.2f} s, p99 {percentile(secs, 99):.2f} s")
        else:
            parts.append(f"{label} 0")
    return "; ".join(parts)
