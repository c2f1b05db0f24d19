"""Ingest: OTLP export requests in (OTLP/HTTP here, OTLP/gRPC in grpc_receiver),
checked and decoded, their lifecycle snapshots applied to the mesh state."""

from __future__ import annotations

import hmac
import logging
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
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

    async def otlp_http(self, request: Request) -> Response:
        signal = request.path_params["signal"]
        headers = {names.HEADER_COLLECTOR_ID: self.collector_id()}
        if signal not in otlp.SIGNALS:
            self.state.reject(names.REJECT_NOT_FOUND)
            return JSONResponse({"error": f"unknown signal {signal!r}"}, 404, headers=headers)
        if not self.authorized(request.headers.get("authorization")):
            self.state.reject(names.REJECT_UNAUTHORIZED)
            return JSONResponse(
                {"error": "missing or wrong bearer token"}, 401, headers={**headers, "www-authenticate": "Bearer"}
            )
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            self.state.reject(names.REJECT_TOO_LARGE)
            return JSONResponse({"error": f"body larger than {limit} bytes"}, 413, headers=headers)
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                self.state.reject(names.REJECT_TOO_LARGE)
                return JSONResponse({"error": f"body larger than {limit} bytes"}, 413, headers=headers)
            chunks.append(chunk)
        raw = b"".join(chunks)
        content_type = request.headers.get("content-type")
        try:
            kind = otlp.media_type(content_type)
            if kind not in (otlp.PROTOBUF, otlp.JSON):
                raise otlp.PayloadError(415, names.REJECT_CONTENT_TYPE, f"unsupported content-type {kind!r}")
            body = otlp.decompress(raw, request.headers.get("content-encoding"), limit)
            message = otlp.decode(signal, body, content_type)
        except otlp.PayloadError as exc:
            self.state.reject(exc.reason)
            return JSONResponse({"error": str(exc), "reason": exc.reason}, exc.status, headers=headers)
        bad = self.apply(signal, message)
        if self.forward is not None:
            self.forward(signal, raw, request.headers)
        if bad:
            # OTLP partial success: accepted, with the count of records refused
            return JSONResponse(
                {"partialSuccess": {"rejectedLogRecords": bad, "errorMessage": "malformed a2a-quiescence snapshot(s)"}},
                200,
                headers=headers,
            )
        if kind == otlp.PROTOBUF:
            return Response(b"", 200, media_type=otlp.PROTOBUF, headers=headers)
        return JSONResponse({}, 200, headers=headers)

    def route(self) -> Route:
        return Route("/v1/{signal}", self.otlp_http, methods=["POST"])

    def app(self) -> Starlette:
        return Starlette(routes=[self.route()])
