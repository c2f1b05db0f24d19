"""Shard processes of a mesh tier for the tests: a shard collector per process on
loopback, its shard set in a file the test rewrites as a ConfigMap update would."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from a2a_quiescence.demo.harness import _bin, wait_http
from a2a_quiescence.shards import ShardSpec


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
        [_bin("a2a-quiescence"), "collector", "--otlp-listen", "off",
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
