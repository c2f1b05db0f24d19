"""Ingest: OTLP export requests in (OTLP/HTTP here, OTLP/gRPC in grpc_receiver),
checked and decoded, their lifecycle snapshots applied to the mesh state."""

from __future__ import annotations

import hmac
import logging
import json
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from a2a_quiescence import names
from a2a_quiescence.collector import otlp
from a2a_quiescence.collector.config import Config
from a2a_quiescence.collector.state import MeshState

logger = logging.getLogger("a2a_quiescence.collector")


class Ingest:
    """``collector_id()`` is the id every answer carries (a mesh tier's epoch in it tells
    agents when to resend); ``forward(signal, raw, headers)`` passes what was accepted
    on (upstream; None: not forwarding)."""

    def __init__(self, config: Config, state: MeshState, collector_id: Callable[[], str],
                 forward: Callable[[str, bytes, Any], None] | None) -> None:
        self.config = config
        self.state = state
        self.collector_id = collector_id
        self.forward = forward

    def authorized(self, header: str | None) -> bool:
        if not self.config.token:
            return True
        if not header or not header.lower().startswith("bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.config.token.encode())

    def apply(self, signal: str, message: Any) -> int:
        """Apply a decoded export request; returns how many snapshots were rejected."""
        self.state.record_received(signal)
        if signal != "logs":
            return 0
        bad = 0
        for item in otlp.snapshots(message):
            if isinstance(item, otlp.PayloadError):
                self.state.reject(item.reason)
                bad += 1
                continue
            try:
                if item.kind == names.EVENT_HOP_SNAPSHOT:
                    self.state.ingest_hop(item.agent, item.body)
                else:
                    assert item.trace_id is not None
                    self.state.ingest_cascade(item.agent, item.trace_id, item.body)
            except ValueError as exc:
                logger.debug("rejected snapshot from %s: %s", item.agent, exc)
                self.state.reject(names.REJECT_MALFORMED)
                bad += 1
        return bad

    async def receive_export(self, signal: str, headers: Mapping[str, str],
                             body: AsyncIterator[bytes]) -> tuple[int, bytes, str, dict[str, str]]:
        """One OTLP/HTTP export request, whatever server carries it: ``headers``
        lower-cased, ``body`` its chunks. Returns (status, body, media type, headers)."""
        out = {names.HEADER_COLLECTOR_ID: self.collector_id()}
        if signal not in otlp.SIGNALS:
            self.state.reject(names.REJECT_NOT_FOUND)
            return _json(404, {"error": f"unknown signal {signal!r}"}, out)
        if not self.authorized(headers.get("authorization")):
            self.state.reject(names.REJECT_UNAUTHORIZED)
            return _json(401, {"error": "missing or wrong bearer token"}, {**out, "www-authenticate": "Bearer"})
        limit = self.config.max_body_bytes
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            self.state.reject(names.REJECT_TOO_LARGE)
            return _json(413, {"error": f"body larger than {limit} bytes"}, out)
        chunks = []
        size = 0
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                self.state.reject(names.REJECT_TOO_LARGE)
                return _json(413, {"error": f"body larger than {limit} bytes"}, out)
            chunks.append(chunk)
        raw = b"".join(chunks)
        content_type = headers.get("content-type")
        try:
            kind = otlp.media_type(content_type)
            if kind not in (otlp.PROTOBUF, otlp.JSON):
                raise otlp.PayloadError(415, names.REJECT_CONTENT_TYPE, f"unsupported content-type {kind!r}")
            decoded = otlp.decompress(raw, headers.get("content-encoding"), limit)
            message = otlp.decode(signal, decoded, content_type)
        except otlp.PayloadError as exc:
            self.state.reject(exc.reason)
            return _json(exc.status, {"error": str(exc), "reason": exc.reason}, out)
        bad = self.apply(signal, message)
        if self.forward is not None:
            self.forward(signal, raw, headers)
        if bad:
            # OTLP partial success: accepted, with the count of records refused
            return _json(200, {"partialSuccess": {"rejectedLogRecords": bad,
                                                  "errorMessage": "malformed a2a-quiescence snapshot(s)"}}, out)
        if kind == otlp.PROTOBUF:
            return 200, b"", otlp.PROTOBUF, out
        return _json(200, {}, out)

    async def otlp_http(self, request: Request) -> Response:
        """The Starlette route (where OTLP shares the API's port)."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, body, media_type, out = await self.receive_export(request.path_params["signal"], headers,
                                                                  request.stream())
        return Response(body, status, media_type=media_type, headers=out)

    async def asgi(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                   send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """The OTLP port's whole application: ``POST /v1/{signal}`` and nothing else,
        without a framework's routing and middleware (a third of the collector's CPU per
        snapshot request went there)."""
        if scope["type"] != "http":
            return  # lifespan is off; anything else is not ours
        path, method = scope["path"], scope["method"]
        if not path.startswith("/v1/") or "/" in path[4:]:
            status, body, media_type, out = 404, b"Not Found", "text/plain", {}
        elif method != "POST":
            status, body, media_type, out = 405, b"Method Not Allowed", "text/plain", {"allow": "POST"}
        else:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

            async def chunks() -> AsyncIterator[bytes]:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    yield message.get("body", b"")
                    if not message.get("more_body", False):
                        return

            status, body, media_type, out = await self.receive_export(path[4:], headers, chunks())
        raw_headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
        raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})

    def route(self) -> Route:
        return Route("/v1/{signal}", self.otlp_http, methods=["POST"])

    def app(self) -> Callable[..., Awaitable[None]]:
        """The OTLP port's ASGI application (see ``asgi``)."""
        return self.asgi


def _json(status: int, value: Any, headers: dict[str, str]) -> tuple[int, bytes, str, dict[str, str]]:
    return status, json.dumps(value, separators=(",", ":")).encode(), "application/json", headers
