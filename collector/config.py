"""The settings of our ``Collector`` (server.py; no server dependencies: the CLI validates them
before anything from the `collector` extra is imported)."""

from __future__ import annotations

from dataclasses import dataclass

from a2a_quiescence import environment_variables as env


@dataclass
class Config:
    """Defaults: the variables' (a2a_quiescence.environment_variables), defined once there."""

    otlp_listen: str | None = env.OTLP_LISTEN.default
    grpc_listen: str | None = env.OTLP_GRPC_LISTEN.default
    http_listen: str = env.HTTP_LISTEN.default
    token: str | None = None
    max_body_bytes: int = env.MAX_BODY_BYTES.default
    max_agents: int = env.MAX_AGENTS.default
    max_cascades: int = env.MAX_CASCADES.default
    stuck_after: float = env.STUCK_AFTER.default
    retention: float = env.RETENTION.default
    agent_timeout: float = env.AGENT_TIMEOUT.default
    forward: str | None = None
    forward_token: str | None = None
    forward_queue: int = env.FORWARD_QUEUE.default
    forward_retries: int = 3
    forward_concurrency: int = env.FORWARD_CONCURRENCY.default
    max_wait: float = 300.0
    # how long after a mesh wait's window ends a root request received in it may
    # still be on its way to the collector (agents report within milliseconds)
    root_grace: float = env.ROOT_GRACE.default
    # a mesh tier (collector/tier.py): the shard set, this shard's ring endpoint (None:
    # not a shard; a pod sidecar forwarding to the tier), the shards' OTLP/gRPC port
    # (the ring endpoint of a shard given by URL), how often the set is read again,
    # and how long a new membership must hold before agents are told to resend
    shards: str | None = None
    shard_name: str | None = None
    ring_port: int = env.RING_PORT.default
    ring_refresh: float = env.RING_REFRESH.default
    ring_settle: float = env.RING_SETTLE.default


def split_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)
