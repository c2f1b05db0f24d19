"""Forwarding what our ``Collector`` (server.py) receives to an upstream OTLP/HTTP
endpoint (Tempo, Jaeger, an OpenTelemetry Collector, the mesh tier's gateway).

A pod sidecar receives many small export requests from its agents (spans every
few hundred milliseconds, metrics, lifecycle snapshots) and must not fall
behind them: a sidecar that lags delays settlement by as much. So:

- at most ``forward_queue`` requests wait; beyond that a request is dropped at
  once and counted (``queue_full``): memory stays bounded whatever the upstream does;
- ``forward_concurrency`` requests are in flight at a time, on one kept-alive
  connection pool;
- when requests wait, a sender takes every waiting uncompressed protobuf request
  of the same signal (up to ``BATCH_BYTES``) and sends them as one: the
  serialised OTLP export requests are messages of one repeated field, so their
  concatenation is the one request that holds them all, in order. A sidecar
  that keeps up sends each request on its own, as soon as it came;
- a refused request (4xx other than 429) is dropped (``upstream_refused``), one
  the upstream could not take (429, 502-504, connection errors) is retried
  ``forward_retries`` times with backoff and then dropped (``upstream_unavailable``).

Forwarding never decides settlement: the ``Collector`` applied the request before
it was queued, and a shard behind the tier that misses a snapshot waits for the
next one (late, never early; docs/settlement.md)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping

import httpx

from a2a_quiescence import names
from a2a_quiescence.collector.config import Config
from a2a_quiescence.collector.state import MeshState

BATCH_BYTES = 1 << 20  # well under every OTLP receiver's default request limit (4 MiB and up)
PROTOBUF = "application/x-protobuf"
RETRYABLE = frozenset((429, 502, 503, 504))


class _Request:
    __slots__ = ("signal", "body", "headers", "parts")

    def __init__(self, signal: str, body: bytes, headers: dict[str, str]) -> None:
        self.signal = signal
        self.body = body
        self.headers = headers
        self.parts = 1  # export requests this one carries

    def joins(self, other: _Request) -> bool:
        return (
            other.signal == self.signal
            and self.headers.get("content-type") == PROTOBUF
            and other.headers == self.headers
            and "content-encoding" not in self.headers
            and len(self.body) + len(other.body) <= BATCH_BYTES
        )


class Forwarder:
    def __init__(self, config: Config, state: MeshState) -> None:
        self.config = config
        self.state = state
        self.waiting: deque[_Request] = deque()
        self.ready = asyncio.Event()
        self.in_flight = 0

    def put(self, signal: str, raw: bytes, headers: Mapping[str, str]) -> None:
        keep = {k: headers[k] for k in ("content-type", "content-encoding") if k in headers}
        if self.config.forward_token:
            # never pass the agent's own credentials upstream; use ours
            keep["authorization"] = "Bearer " + self.config.forward_token
        if len(self.waiting) >= self.config.forward_queue:
            self.state.drop(names.DROP_QUEUE_FULL)
            return
        self.waiting.append(_Request(signal, raw, keep))
        self.state.record_forward_waiting(len(self.waiting))
        self.ready.set()

    def _take(self) -> _Request:
        """The oldest waiting request, joined by the waiting ones that can travel with it."""
        first = self.waiting.popleft()
        joined: list[_Request] = []
        size = len(first.body)
        kept: deque[_Request] = deque()
        while self.waiting:
            item = self.waiting.popleft()
            if first.joins(item) and size + len(item.body) <= BATCH_BYTES:
                joined.append(item)
                size += len(item.body)
            else:
                kept.append(item)
        self.waiting = kept
        if joined:
            first.body = b"".join([first.body, *(item.body for item in joined)])
            first.parts += len(joined)
        if not self.waiting:
            self.ready.clear()
        self.state.record_forward_waiting(len(self.waiting))
        return first

    async def run(self) -> None:
        workers = max(1, self.config.forward_concurrency)
        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
        async with httpx.AsyncClient(timeout=5.0, limits=limits) as client:
            await asyncio.gather(*(self._send_loop(client) for _ in range(workers)))

    async def _send_loop(self, client: httpx.AsyncClient) -> None:
        base = (self.config.forward or "").rstrip("/")
        while True:
            await self.ready.wait()
            if not self.waiting:  # another sender took it
                continue
            request = self._take()
            self.in_flight += 1
            try:
                await self._send(client, f"{base}/v1/{request.signal}", request)
            finally:
                self.in_flight -= 1

    async def _send(self, client: httpx.AsyncClient, url: str, request: _Request) -> None:
        delay = 0.1
        for attempt in range(self.config.forward_retries + 1):
            try:
                response = await client.post(url, content=request.body, headers=request.headers)
            except httpx.HTTPError:
                status = None
            else:
                status = response.status_code
                if status < 300:
                    self.state.record_forwarded(request.parts)
                    return
                if status not in RETRYABLE:
                    self.state.drop(names.DROP_UPSTREAM_REFUSED, request.parts)
                    return
            if attempt == self.config.forward_retries:
                break
            await asyncio.sleep(delay)
            delay *= 2
        self.state.drop(names.DROP_UPSTREAM_UNAVAILABLE, request.parts)
