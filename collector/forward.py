"""Forwarding what the collector receives to an upstream OTLP/HTTP endpoint
(Tempo, Jaeger, an OpenTelemetry Collector): a bounded queue, bounded retries,
and every request dropped on the way counted."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from a2a_quiescence.collector.config import Config
from a2a_quiescence.collector.state import MeshState


class Forwarder:
    def __init__(self, config: Config, state: MeshState) -> None:
        self.config = config
        self.state = state
        self.queue: asyncio.Queue[tuple[str, bytes, dict[str, str]]] = asyncio.Queue(maxsize=config.forward_queue)

    def put(self, signal: str, raw: bytes, headers: Any) -> None:
        keep = {k: headers[k] for k in ("content-type", "content-encoding") if k in headers}
        if self.config.forward_token:
            # never pass the agent's own credentials upstream; use ours
            keep["authorization"] = "Bearer " + self.config.forward_token
        try:
            self.queue.put_nowait((signal, raw, keep))
        except asyncio.QueueFull:
            self.state.dropped += 1

    async def run(self) -> None:
        base = (self.config.forward or "").rstrip("/")
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                signal, raw, headers = await self.queue.get()
                delay = 0.1
                for attempt in range(self.config.forward_retries + 1):
                    try:
                        response = await client.post(f"{base}/v1/{signal}", content=raw, headers=headers)
                        if response.status_code < 300:
                            self.state.forwarded += 1
                            break
                        retryable = response.status_code in (429, 502, 503, 504)
                    except httpx.HTTPError:
                        retryable = True
                    if not retryable or attempt == self.config.forward_retries:
                        self.state.dropped += 1
                        break
                    await asyncio.sleep(delay)
                    delay *= 2
