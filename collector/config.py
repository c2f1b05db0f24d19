"""The collector's settings (no server dependencies: the CLI validates them
before anything from the `collector` extra is imported)."""

from __future__ import annotations

from dataclasses import dataclass

from a2a_quiescence import names


@dataclass
class Config:
    otlp_listen: str | None = names.DEFAULT_OTLP_HTTP
    grpc_listen: str | None = names.DEFAULT_OTLP_GRPC
    http_listen: str = names.DEFAULT_HTTP
    token: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_agents: int = 1000
    max_cascades: int = 100_000
    stuck_after: float = 30.0
    retention: float = 300.0
    agent_timeout: float = 10.0
    forward: str | None = None
    forward_token: str | None = None
    forward_queue: int = 1000
    forward_retries: int = 3
    forward_concurrency: int = 4
    max_wait: float = 300.0
    # how long after a mesh wait's window ends a root request received in it may
    # still be on its way to the collector (agents report within milliseconds)
    root_grace: float = 0.05
    # a mesh tier (collector/tier.py): the shard set, this shard's ring endpoint (None:
    # not a shard; a pod sidecar forwarding to the tier), the shards' OTLP/gRPC port
    # (the ring endpoint of a shard given by URL), how often the set is read again,
    # and how long a new membership must hold before agents are told to resend
    shards: str | None = None
    shard_name: str | None = None
    ring_port: int = 4317
    ring_refresh: float = 2.0
    ring_settle: float = 6.0


def split_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)
