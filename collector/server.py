"""The sidecar process: OTLP/HTTP and OTLP/gRPC in; /metrics, the settlement
API and a status page out; optional forwarding upstream."""

from __future__ import annotations

import asyncio
import heapq
import hmac
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from a2a_quiescence import names
from a2a_quiescence.collector import otlp
from a2a_quiescence.collector.config import Config, split_hostport
from a2a_quiescence.collector.metrics import LatencyHistogram, StateCollector
from a2a_quiescence.collector.settlement import Cascade, Detector, worse
from a2a_quiescence.collector.state import MeshState

STATUS_PAGE = Path(__file__).with_name("status_page.html")
MESH_LISTED = 100  # open, stuck and awaiting-input cascades described in /v1/mesh, each
MESH_SETTLED_LISTED = 50  # recently settled cascades listed in /v1/mesh

logger = logging.getLogger("a2a_quiescence.collector")


class Collector:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.id = uuid.uuid4().hex
        self.latency = LatencyHistogram()
        self._changed: dict[str, asyncio.Event] = {}
        self._mesh_changed: asyncio.Event | None = None  # set on any cascade change, while someone waits
        self._waiting: dict[str, int] = {}
        self.detector = Detector(
            stuck_after=config.stuck_after,
            retention=config.retention,
            max_cascades=config.max_cascades,
            on_change=self._on_change,
            on_settle=self._on_settle,
        )
        self.state = MeshState(detector=self.detector, agent_timeout=config.agent_timeout, max_agents=config.max_agents)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StateCollector(self.state, self.latency))
        self.ready = False
        self.bound: dict[str, tuple[str, int]] = {}
        self._forward_queue: asyncio.Queue[tuple[str, bytes, dict[str, str]]] | None = None
        self._stop = asyncio.Event()

    # -- settlement notifications ------------------------------------------------
    def _on_change(self, cascade: Cascade) -> None:
        event = self._changed.pop(cascade.trace_id, None)
        if event is not None:
            event.set()
        if self._mesh_changed is not None:
            self._mesh_changed.set()
            self._mesh_changed = None

    def _on_settle(self, cascade: Cascade) -> None:
        # observed once per cascade (a later root wave settling again is not a new detection)
        if cascade.detection_latency is not None and not cascade.latency_observed:
            self.latency.observe(cascade.detection_latency)
            cascade.latency_observed = True

    # -- ingest ------------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        if not self.config.token:
            return True
        if not header or not header.lower().startswith("bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.config.token.encode())

    def ingest(self, signal: str, message: Any) -> int:
        """Apply a decoded export request; returns how many snapshots were rejected."""
        self.state.received[signal] = self.state.received.get(signal, 0) + 1
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
        headers = {names.HEADER_COLLECTOR_ID: self.id}
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
        bad = self.ingest(signal, message)
        self._forward(signal, raw, request.headers)
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

    # -- forwarding --------------------------------------------------------------
    def _forward(self, signal: str, raw: bytes, headers: Any) -> None:
        if self._forward_queue is None:
            return
        keep = {k: headers[k] for k in ("content-type", "content-encoding") if k in headers}
        if self.config.forward_token:
            # never pass the agent's own credentials upstream; use ours
            keep["authorization"] = "Bearer " + self.config.forward_token
        try:
            self._forward_queue.put_nowait((signal, raw, keep))
        except asyncio.QueueFull:
            self.state.dropped += 1

    async def _forwarder(self) -> None:
        assert self._forward_queue is not None
        base = (self.config.forward or "").rstrip("/")
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                signal, raw, headers = await self._forward_queue.get()
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

    # -- API -----------------------------------------------------------------------
    def describe(self, trace_id: str, refresh: bool = True) -> dict[str, Any]:
        if refresh:
            self.state.refresh()
        out = self.detector.describe(trace_id)
        for holder in out.get("holders", []):
            if holder.get("kind") == "active_hop":
                holder["hop_state"] = self.state.incarnation_state(holder["hop"], holder["incarnation"])
        return out

    def mesh(self) -> dict[str, Any]:
        """The status page's view. Cheap whatever the number of open cascades: every
        cascade is only classified; only the ones listed are described."""
        self.state.refresh()
        now = time.time()
        listed: dict[str, list[str]] = {names.STATUS_OPEN: [], names.STATUS_STUCK: [], names.STATUS_AWAITING_INPUT: []}
        counts = dict.fromkeys(listed, 0)
        settled: list[tuple[float, str]] = []  # a min-heap of the most recently settled
        for trace_id, cascade in self.detector.cascades.items():
            status = self.detector.status(cascade, now)
            if status == names.STATUS_SETTLED:
                item = (cascade.settled_at or 0.0, trace_id)
                if len(settled) < MESH_SETTLED_LISTED:
                    heapq.heappush(settled, item)
                elif item > settled[0]:
                    heapq.heapreplace(settled, item)
                continue
            counts[status] += 1
            if len(listed[status]) < MESH_LISTED:
                listed[status].append(trace_id)
        described = {status: [self.describe(t, refresh=False) for t in ids] for status, ids in listed.items()}
        recent = []
        for _at, trace_id in sorted(settled, reverse=True):
            cascade = self.detector.cascades[trace_id]
            recent.append({"trace_id": trace_id, "settled_at": cascade.settled_at, "outcome": cascade.outcome,
                           "detection_latency_seconds": cascade.detection_latency})
        return {
            "quiet": not any(counts.values()),
            "open": sum(counts.values()),
            "stuck": counts[names.STATUS_STUCK],
            "awaiting_input": counts[names.STATUS_AWAITING_INPUT],
            "settled_total": self.detector.settled_total,
            "settled_by_outcome": dict(self.detector.settled_by_outcome),
            "cascades": {"open": described[names.STATUS_OPEN], "stuck": described[names.STATUS_STUCK],
                         "awaiting_input": described[names.STATUS_AWAITING_INPUT], "recently_settled": recent},
            "agents": self.state.describe_agents(),
            "edges": [{"from": src, "to": dst, "messages": n} for (src, dst), n in sorted(self.state.edges.items())],
        }

    def _api_auth(self, request: Request) -> Response | None:
        if self.authorized(request.headers.get("authorization")):
            return None
        self.state.reject(names.REJECT_UNAUTHORIZED)
        return JSONResponse({"error": "missing or wrong bearer token"}, 401, headers={"www-authenticate": "Bearer"})

    async def api_cascade(self, request: Request) -> Response:
        if (denied := self._api_auth(request)) is not None:
            return denied
        trace_id = _trace_id(request)
        if trace_id is None:
            return JSONResponse({"error": "trace id must be 32 hex digits"}, 400)
        return JSONResponse(self.describe(trace_id))

    async def api_wait(self, request: Request) -> Response:
        if (denied := self._api_auth(request)) is not None:
            return denied
        trace_id = _trace_id(request)
        if trace_id is None:
            return JSONResponse({"error": "trace id must be 32 hex digits"}, 400)
        try:
            timeout = float(request.query_params.get("timeout", "30"))
            roots = int(request.query_params.get("roots", "1"))
            if not 0 <= timeout <= self.config.max_wait or roots < 1:
                raise ValueError
        except ValueError:
            return JSONResponse(
                {"error": f"timeout must be 0..{self.config.max_wait} seconds and roots a positive integer"}, 400
            )
        deadline = time.monotonic() + timeout
        while True:
            cascade = self.detector.cascades.get(trace_id)
            if cascade is not None and cascade.done(roots):
                # a root wave reported after the settle (same trace id) must settle too
                return JSONResponse(self.describe(trace_id))
            if cascade is None and trace_id in self.detector.tombstones:
                return JSONResponse(self.describe(trace_id))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return JSONResponse(self.describe(trace_id), 408)
            event = self._changed.setdefault(trace_id, asyncio.Event())
            self._waiting[trace_id] = self._waiting.get(trace_id, 0) + 1
            try:
                await asyncio.wait_for(event.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                # the last waiter for an id that never changed takes its event away (bounded memory)
                left = self._waiting.pop(trace_id) - 1
                if left:
                    self._waiting[trace_id] = left
                elif self._changed.get(trace_id) is event:
                    del self._changed[trace_id]

    def mesh_window(self, since: float, until: float) -> tuple[bool, dict[str, Any]]:
        """(every cascade rooted in [since, until] done?, the answer listing each)."""
        held, forgotten = self.detector.rooted_between(since, until)
        self.state.refresh()
        items = []
        waiting = 0
        for cascade in sorted(held, key=lambda c: c.started()):
            d = self.describe(cascade.trace_id, refresh=False)
            done = cascade.done()
            waiting += not done
            item = {k: d.get(k) for k in ("trace_id", "status", "outcome", "started_at", "settled_at",
                                            "losses", "failures", "lost", "failed", "awaiting")}
            if not done:
                item["holders"] = d.get("holders", [])
                item["pending_roots"] = d.get("pending_roots", 0)
            items.append(item)
        items.extend({"trace_id": t, "status": "settled", "outcome": o, "forgotten": True} for t, o in forgotten)
        outcomes = [i["outcome"] for i in items if i.get("outcome")]
        worst = None
        for outcome in outcomes:
            worst = worse(worst, outcome)
        return waiting == 0, {
            "since": since, "until": until, "settled": waiting == 0, "cascades": items,
            "open": waiting, "outcome": worst if waiting == 0 else None,
        }

    async def api_mesh_wait(self, request: Request) -> Response:
        """Wait until every cascade whose root request arrived in [since, until] has
        settled; roots reported up to ``grace`` seconds after ``until`` count too."""
        if (denied := self._api_auth(request)) is not None:
            return denied
        now = time.time()
        q = request.query_params
        try:
            since = float(q["since"])
            until = float(q.get("until", now))
            timeout = float(q.get("timeout", "30"))
            grace = float(q.get("grace", str(self.config.root_grace)))
            if not (0 <= timeout <= self.config.max_wait and 0 <= grace <= 60 and since <= until):
                raise ValueError
        except (KeyError, ValueError):
            return JSONResponse({"error": "since (unix seconds) is required; until >= since; "
                                          f"timeout 0..{self.config.max_wait}; grace 0..60 seconds"}, 400)
        deadline = time.monotonic() + timeout
        # a root received before `until` may still be on its way to us: not before `until + grace`
        reported_by = time.monotonic() + max(0.0, until + grace - now)
        while True:
            done, answer = self.mesh_window(since, until)
            left = deadline - time.monotonic()
            if done and time.monotonic() >= reported_by:
                return JSONResponse(answer)
            if left <= 0:
                return JSONResponse(answer, 408)
            if self._mesh_changed is None:
                self._mesh_changed = asyncio.Event()
            wake = self._mesh_changed
            pause = left if not done else min(left, reported_by - time.monotonic())
            try:
                await asyncio.wait_for(wake.wait(), timeout=max(0.0, pause))
            except asyncio.TimeoutError:
                pass

    async def api_mesh(self, request: Request) -> Response:
        if (denied := self._api_auth(request)) is not None:
            return denied
        return JSONResponse(self.mesh())

    async def metrics(self, _request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        if self.ready:
            return JSONResponse({"status": "ready", "listening": {k: f"{h}:{p}" for k, (h, p) in self.bound.items()}})
        return JSONResponse({"status": "starting"}, 503)

    async def status_page(self, _request: Request) -> Response:
        # a static shell: the data comes from /v1/mesh (which checks the token), so it carries none
        return HTMLResponse(STATUS_PAGE.read_text(encoding="utf-8"), headers={"cache-control": "no-cache"})

    # -- wiring ----------------------------------------------------------------------
    def otlp_app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/{signal}", self.otlp_http, methods=["POST"])])

    def api_app(self) -> Starlette:
        routes = [
            Route("/", self.status_page),
            Route("/metrics", self.metrics),
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/v1/mesh", self.api_mesh),
            Route("/v1/mesh/wait", self.api_mesh_wait),
            Route("/v1/cascades/{trace_id}", self.api_cascade),
            Route("/v1/cascades/{trace_id}/wait", self.api_wait),
        ]
        if self.config.otlp_listen and self.config.otlp_listen == self.config.http_listen:
            routes.append(Route("/v1/{signal}", self.otlp_http, methods=["POST"]))
        return Starlette(routes=routes)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.detector.expire()
            self.state.refresh()

    async def serve(self) -> None:
        """Run until ``stop()`` (or SIGTERM/SIGINT via the CLI)."""
        import uvicorn

        servers: list[uvicorn.Server] = []
        listens = [("http", self.config.http_listen, self.api_app())]
        if self.config.otlp_listen and self.config.otlp_listen != self.config.http_listen:
            listens.append(("otlp_http", self.config.otlp_listen, self.otlp_app()))
        for name, listen, app in listens:
            host, port = split_hostport(listen)
            server = uvicorn.Server(
                uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
            )
            server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            servers.append(server)
        grpc_server = None
        tasks = [asyncio.create_task(s.serve(), name=f"uvicorn:{i}") for i, s in enumerate(servers)]
        if self.config.forward:
            self._forward_queue = asyncio.Queue(maxsize=self.config.forward_queue)
            tasks.append(asyncio.create_task(self._forwarder(), name="forwarder"))
        tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        try:
            if self.config.grpc_listen:
                from a2a_quiescence.collector.grpc_receiver import start_grpc

                grpc_server, port = await start_grpc(self, self.config.grpc_listen)
                self.bound["otlp_grpc"] = (split_hostport(self.config.grpc_listen)[0], port)
            while not all(s.started for s in servers):
                if any(t.done() for t in tasks[: len(servers)]):
                    raise OSError(f"could not bind: {[listen for _, listen, _ in listens]}")
                await asyncio.sleep(0.01)
            for (name, _listen, _app), server in zip(listens, servers):
                sock = server.servers[0].sockets[0].getsockname()
                self.bound[name] = (sock[0], sock[1])
            if "otlp_http" not in self.bound and self.config.otlp_listen:
                self.bound["otlp_http"] = self.bound["http"]
            self.ready = True
            logger.info("a2a-quiescence collector listening: %s", self.bound)
            await self._stop.wait()
        finally:
            self.ready = False
            for server in servers:
                server.should_exit = True
            if grpc_server is not None:
                await grpc_server.stop(grace=1.0)
            await asyncio.gather(*tasks[: len(servers)], return_exceptions=True)
            for task in tasks[len(servers) :]:
                task.cancel()
            await asyncio.gather(*tasks[len(servers) :], return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()


def _trace_id(request: Request) -> str | None:
    value = request.path_params["trace_id"].lower()
    if len(value) == 32 and all(c in "0123456789abcdef" for c in value) and value != "0" * 32:
        return value
    return None
