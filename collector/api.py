"""The HTTP API: the settlement API (/v1/cascades, /v1/mesh and their waits), the
status page, /metrics (prometheus_client's own ASGI app: content negotiation and
gzip), /healthz and /readyz."""

from __future__ import annotations

import asyncio
import heapq
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from a2a_quiescence import names
from a2a_quiescence.collector.config import Config
from a2a_quiescence.collector.settlement import Cascade, Detector
from a2a_quiescence.collector.state import MeshState
from a2a_quiescence.collector.views import cascade_view

if TYPE_CHECKING:
    from a2a_quiescence.collector.tier import Tier

STATUS_PAGE = Path(__file__).with_name("status_page.html")
MESH_LISTED = 100  # open, stuck and awaiting-input cascades described in /v1/mesh, each
MESH_SETTLED_LISTED = 50  # recently settled cascades listed in /v1/mesh


async def _woken(event: asyncio.Event, timeout: float) -> None:
    """Until ``event`` is set or ``timeout`` seconds pass. In the request's own task:
    ``asyncio.wait_for`` ran the wait as a task of its own, one more turn of a busy
    loop between the change and the answer."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass


class _AsgiEndpoint:
    """An ASGI app as a Starlette route endpoint (a plain function would be taken for a request handler)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Api:
    """``authorized(header)`` checks a bearer token; ``listening()`` says where the
    ``Collector`` (server.py) listens once it is ready (None before); ``tier``, on a shard of a mesh
    tier, answers for the cascades other shards own and for /v1/mesh over every shard."""

    def __init__(self, config: Config, detector: Detector, state: MeshState, registry: CollectorRegistry,
                 authorized: Callable[[str | None], bool], listening: Callable[[], dict[str, str] | None],
                 tier: Tier | None = None) -> None:
        self.config = config
        self.detector = detector
        self.state = state
        self.registry = registry
        self.authorized = authorized
        self.listening = listening
        self._changed: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}
        self._mesh_changed: asyncio.Event | None = None  # set on any cascade change, while someone waits
        self.tier = tier

    def changed(self, cascade: Cascade) -> None:
        """Wake the waits on this cascade, and the mesh waits."""
        event = self._changed.pop(cascade.trace_id, None)
        if event is not None:
            event.set()
        if self._mesh_changed is not None:
            self._mesh_changed.set()
            self._mesh_changed = None

    def describe(self, trace_id: str, refresh: bool = True) -> dict[str, Any]:
        if refresh:
            self.state.refresh()
        out = cascade_view(self.detector, trace_id)
        cascade = self.detector.get(trace_id)
        unsupported = None
        for holder in out.get("holders", []):
            if holder.get("kind") == "active_hop":
                holder["hop_state"] = self.state.incarnation_state(holder["hop"], holder["incarnation"], cascade)
            elif holder.get("kind") == "edge" and holder.get("to") is None and holder.get("destination"):
                # nobody reported receiving: a running hop we refused may be the one
                unsupported = self.state.unsupported_hops() if unsupported is None else unsupported
                if unsupported:
                    holder["detail"] += "; " + "; ".join(h["detail"] for h in unsupported)
        if out.get("owner") and self.tier is not None:
            out["owner_url"] = self.tier.owner_url(out["owner"])
        return out

    def mesh(self) -> dict[str, Any]:
        """The status page's view. Cheap whatever the number of open cascades: every
        cascade is only classified; only the ones listed are described."""
        self.state.refresh()
        now = time.time()
        listed: dict[str, list[str]] = {names.STATUS_OPEN: [], names.STATUS_STUCK: [], names.STATUS_AWAITING_INPUT: []}
        counts = dict.fromkeys(listed, 0)
        settled: list[tuple[float, str]] = []  # a min-heap of the most recently settled
        moved = 0
        for cascade in self.detector.held():
            trace_id = cascade.trace_id
            status = self.detector.status(cascade, now)
            if status == names.STATUS_SETTLED:
                item = (cascade.settled_at or 0.0, trace_id)
                if len(settled) < MESH_SETTLED_LISTED:
                    heapq.heappush(settled, item)
                elif item > settled[0]:
                    heapq.heapreplace(settled, item)
                continue
            if status == names.STATUS_MOVED:
                moved += 1
                continue
            counts[status] += 1
            if len(listed[status]) < MESH_LISTED:
                listed[status].append(trace_id)
        described = {status: [self.describe(t, refresh=False) for t in ids] for status, ids in listed.items()}
        recent = []
        for _at, trace_id in sorted(settled, reverse=True):
            cascade = self.detector.get(trace_id)
            assert cascade is not None
            recent.append({"trace_id": trace_id, "settled_at": cascade.settled_at, "outcome": cascade.outcome,
                           "detection_latency_seconds": cascade.detection_latency})
        unsupported = self.state.unsupported_hops()
        return {
            # a hop whose work cannot be seen is never quiet
            "quiet": not any(counts.values()) and not unsupported,
            "unsupported": unsupported,
            "open": sum(counts.values()),
            "stuck": counts[names.STATUS_STUCK],
            "awaiting_input": counts[names.STATUS_AWAITING_INPUT],
            "settled_total": self.detector.settled_total,
            "settled_by_outcome": self.detector.settled_counts(),
            "moved": moved,
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

    def _cascade_request(self, request: Request) -> tuple[str, None] | tuple[None, Response]:
        """The trace id a /v1/cascades request names, or the answer refusing it."""
        if (denied := self._api_auth(request)) is not None:
            return None, denied
        trace_id = _trace_id(request)
        if trace_id is None:
            return None, JSONResponse({"error": "trace id must be 32 hex digits"}, 400)
        return trace_id, None

    async def api_cascade(self, request: Request) -> Response:
        trace_id, refused = self._cascade_request(request)
        if refused is not None:
            return refused
        if self.tier is not None and request.query_params.get("local") != "1":
            # a shard: the owner's view (the status page asks whichever shard serves it)
            answer = await self.tier.describe_at_owner(trace_id)
            if answer is not None:
                return JSONResponse(answer)
        return JSONResponse(self.describe(trace_id))

    async def api_wait(self, request: Request) -> Response:
        trace_id, refused = self._cascade_request(request)
        if refused is not None:
            return refused
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
            cascade = self.detector.get(trace_id)
            if cascade is not None and cascade.done(roots):
                # a root wave reported after the settle (same trace id) must settle too
                return JSONResponse(self.describe(trace_id))
            if cascade is None and self.detector.forgotten(trace_id) is not None:
                return JSONResponse(self.describe(trace_id))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return JSONResponse(self.describe(trace_id), 408)
            event = self._changed.setdefault(trace_id, asyncio.Event())
            self._waiting[trace_id] = self._waiting.get(trace_id, 0) + 1
            try:
                await _woken(event, remaining)
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
            if cascade.owner is not None:
                # a shard of a mesh tier: its owner answers; here it holds until someone does
                item.update(owner=cascade.owner, owner_url=d.get("owner_url"))
            if not done:
                item["holders"] = d.get("holders", [])
                item["pending_roots"] = d.get("pending_roots", 0)
            items.append(item)
        items.extend({"trace_id": t, "status": "settled", "outcome": o, "forgotten": True} for t, o in forgotten)
        outcomes = [i["outcome"] for i in items if i.get("outcome")]
        worst = None
        for outcome in outcomes:
            worst = names.worse_verdict(worst, outcome)
        # a running hop that serves with a library we refused: its cascades are unseen
        unsupported = self.state.unsupported_hops()
        settled = waiting == 0 and not unsupported
        return settled, {
            "since": since, "until": until, "settled": settled, "cascades": items,
            "open": waiting, "outcome": worst if settled else None, "unsupported": unsupported,
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
            if self.tier is not None:
                answer["tier"] = self.tier.describe()  # a client merging the shards' answers reads it
            left = deadline - time.monotonic()
            if done and time.monotonic() >= reported_by:
                return JSONResponse(answer)
            if left <= 0:
                return JSONResponse(answer, 408)
            if self._mesh_changed is None:
                self._mesh_changed = asyncio.Event()
            wake = self._mesh_changed
            pause = left if not done else min(left, reported_by - time.monotonic())
            await _woken(wake, max(0.0, pause))

    async def api_mesh(self, request: Request) -> Response:
        if (denied := self._api_auth(request)) is not None:
            return denied
        if self.tier is not None and request.query_params.get("local") != "1":
            return JSONResponse({**await self.tier.mesh(self.mesh()), "tier": self.tier.describe()})
        return JSONResponse(self.mesh())

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        listening = self.listening()
        if listening is not None:
            return JSONResponse({"status": "ready", "listening": listening})
        return JSONResponse({"status": "starting"}, 503)

    async def status_page(self, _request: Request) -> Response:
        # a static shell: the data comes from /v1/mesh (which checks the token), so it carries none
        return HTMLResponse(STATUS_PAGE.read_text(encoding="utf-8"), headers={"cache-control": "no-cache"})

    def routes(self) -> list[Route]:
        return [
            Route("/", self.status_page),
            Route("/metrics", _AsgiEndpoint(make_asgi_app(self.registry))),
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/v1/mesh", self.api_mesh),
            Route("/v1/mesh/wait", self.api_mesh_wait),
            Route("/v1/cascades/{trace_id}", self.api_cascade),
            Route("/v1/cascades/{trace_id}/wait", self.api_wait),
        ]


def _trace_id(request: Request) -> str | None:
    value = request.path_params["trace_id"].lower()
    if len(value) == 32 and all(c in "0123456789abcdef" for c in value) and value != "0" * 32:
        return value
    return None
