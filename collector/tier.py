"""Our collector's part (``Collector``, server.py) in a mesh tier: mesh collectors sharded by trace id behind
the OpenTelemetry Collector's load-balancing exporter (docs/scale-out.md).

Two roles, both given the shard set (``--shards``) and re-reading it every
``--ring-refresh`` seconds:

- a **shard** (``--shard-name``, its own ring endpoint) computes the exporter's
  ring and marks every cascade the ring gives to another shard as *moved*: not
  counted as open or stuck here, forgotten once unchanged for the retention
  period (the owner answers for it). It ignores hop snapshots (they reach it at
  random) and aggregates ``/v1/mesh`` over every shard for the status page;
- a **pod sidecar** forwarding to the tier puts the membership's epoch in the
  collector id it answers agents with: at once when it reads a new membership,
  and again once that has held for ``--ring-settle`` seconds (longer than the
  exporter takes to see it). An agent that sees a new id resends every cascade
  it still holds, so the shard that took a cascade over completes its view:
  the first resend reaches it when the exporter saw the change before this
  sidecar did, the second in any case.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Protocol

import httpx

from a2a_quiescence import names
from a2a_quiescence.collector.config import Config
from a2a_quiescence.shards import Membership, ShardSpec

logger = logging.getLogger("a2a_quiescence.collector")


class Ownership(Protocol):
    """What a shard tells its detector at every membership change: the rule giving,
    for a trace id, the ring endpoint of the shard owning it when another shard does
    (None: this one). Returns how many cascades held here are moved."""

    def reassign(self, owner_of: Callable[[str], str | None]) -> int: ...


class Tier:
    """Given its settings, the collector id it was started with (``base_id``) and, on
    a shard, the detector's ``Ownership``. It owns the membership; the rest of the
    ``Collector`` (server.py) asks it: ``collector_id()`` (what agents are answered with),
    ``owner_elsewhere(trace_id)``, ``ring_seen()`` (for /metrics), ``owner_url``,
    ``describe``, and on a shard ``describe_at_owner`` and ``mesh``."""

    def __init__(self, config: Config, *, base_id: str, ownership: Ownership | None = None) -> None:
        assert config.shards
        self.config = config
        self.spec = ShardSpec(config.shards, config.ring_port)
        self.me = config.shard_name
        assert ownership is not None or not self.me, "a shard's tier needs the detector's ownership"
        self.ownership = ownership
        self.base_id = base_id
        self.membership: Membership | None = None
        self.changes = 0
        self.changed_at = 0.0
        self.adopted: str | None = None
        self._warned = False
        try:
            first = self.spec.resolve()
        except (OSError, ValueError, LookupError) as exc:
            # e.g. the shards' DNS name has no address yet: start empty, read it again while running
            logger.warning("cannot read the shard set %s yet: %s", self.spec, exc)
            self._warned = True
            first = Membership(())
        self.apply(first, time.monotonic())

    def collector_id(self) -> str:
        """The id agents are answered with: the base id, with the adopted epoch once there is one."""
        return self.base_id if self.adopted is None else f"{self.base_id}.{self.adopted}"

    def owner_elsewhere(self, trace_id: str) -> str | None:
        """The ring endpoint of the shard owning ``trace_id`` by the current membership,
        when it is not this one (None: this one, or an empty shard set)."""
        owner = self.membership.owner(trace_id) if self.membership is not None else None
        return None if owner is None or owner.endpoint == self.me else owner.endpoint

    def ring_seen(self) -> tuple[int, int]:
        """(shards in the ring as last read, membership changes seen)."""
        return (len(self.membership.shards) if self.membership is not None else 0), self.changes

    def owner_url(self, endpoint: str) -> str | None:
        membership = self.membership
        if membership is None:
            return None
        for shard in membership.shards:
            if shard.endpoint == endpoint:
                return shard.url
        return None

    def apply(self, membership: Membership, now: float) -> None:
        """Take a resolved membership: ownership at once; the sidecar's epoch once stable."""
        if self.membership is None or membership.endpoints() != self.membership.endpoints():
            first = self.membership is None
            self.membership = membership
            self.changed_at = now
            if not first:
                self.changes += 1
                logger.info("mesh tier membership changed: %s", ", ".join(membership.endpoints()))
            if self.me and membership.shards and self.me not in membership.endpoints():
                logger.warning("this shard (--shard-name %s) is not in the shard set (%s): it owns no cascade",
                               self.me, ", ".join(membership.endpoints()))
            if self.me and self.ownership is not None:
                self.ownership.reassign(self.owner_elsewhere)
            # at once: the exporter may route by the new ring already (its k8s resolver
            # watches; the DNS this sidecar reads lags behind it), and then the moved
            # cascades' new owners get the resends now
            self._adopt(membership.epoch)
        settled = f"{membership.epoch}s"
        if self.changes and self.adopted != settled and now - self.changed_at >= self.config.ring_settle:
            # and again once the membership has held for --ring-settle: an exporter slower
            # than this sidecar routed the first resends by the old ring
            self._adopt(settled)

    def _adopt(self, epoch: str) -> None:
        # agents resend what they hold when collector_id() changes (instrumentation/reporter.py)
        self.adopted = epoch

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.ring_refresh)
            try:
                membership = await asyncio.to_thread(self.spec.resolve)
            except (OSError, ValueError, LookupError) as exc:
                if not self._warned:
                    self._warned = True
                    logger.warning("cannot read the shard set %s (keeping the last one): %s", self.spec, exc)
                membership = self.membership
            else:
                self._warned = False
            if membership is not None:
                self.apply(membership, time.monotonic())

    def describe(self) -> dict[str, Any]:
        membership = self.membership
        return {
            "role": "shard" if self.me else "sidecar",
            "me": self.me,
            "epoch": membership.epoch if membership else None,
            "shards": [{"endpoint": s.endpoint, "url": s.url} for s in (membership.shards if membership else ())],
            "changes": self.changes,
            # what a client merging the shards' answers needs to know how long resends may take
            "stable_for": round(time.monotonic() - self.changed_at, 3) if self.changes else None,
            "ring_settle": self.config.ring_settle,
            "ring_refresh": self.config.ring_refresh,
        }

    async def describe_at_owner(self, trace_id: str) -> dict[str, Any] | None:
        """The owning shard's view of a cascade, when another shard owns it (None: this
        one does, or the owner cannot be asked: then this shard's own view answers)."""
        membership = self.membership
        owner = membership.owner(trace_id) if membership is not None else None
        if owner is None or owner.endpoint == self.me:
            return None
        headers = {"authorization": f"Bearer {self.config.token}"} if self.config.token else {}
        try:
            async with httpx.AsyncClient(headers=headers, timeout=2.0) as client:
                response = await client.get(f"{owner.url}/v1/cascades/{trace_id}", params={"local": "1"})
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return {**response.json(), "shard": owner.url}

    # -- /v1/mesh over every shard ----------------------------------------------------
    async def mesh(self, local: dict[str, Any]) -> dict[str, Any]:
        """The status page's view over the whole tier: this shard's, merged with every
        other shard's own (``/v1/mesh?local=1``); a shard that cannot be asked is listed."""
        membership = self.membership
        others = [s for s in (membership.shards if membership else ()) if s.endpoint != self.me]
        headers = {"authorization": f"Bearer {self.config.token}"} if self.config.token else {}
        async with httpx.AsyncClient(headers=headers, timeout=2.0) as client:
            answers = await asyncio.gather(
                *(client.get(f"{s.url}/v1/mesh", params={"local": "1"}) for s in others), return_exceptions=True
            )
        views = [(self.me, local)]
        shards = [{"endpoint": self.me, "reachable": True, "open": local["open"], "moved": local.get("moved", 0)}]
        for shard, answer in zip(others, answers):
            if isinstance(answer, httpx.Response) and answer.status_code == 200:
                view = answer.json()
                views.append((shard.endpoint, view))
                shards.append({"endpoint": shard.endpoint, "reachable": True, "open": view.get("open", 0),
                               "moved": view.get("moved", 0)})
            else:
                error = f"HTTP {answer.status_code}" if isinstance(answer, httpx.Response) else repr(answer)
                shards.append({"endpoint": shard.endpoint, "reachable": False, "error": error})
        return merge_mesh(views, shards)


def merge_mesh(views: list[tuple[str | None, dict[str, Any]]], shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the shards' /v1/mesh views (each counts only the cascades it owns)."""
    out: dict[str, Any] = {
        "open": 0, "stuck": 0, "awaiting_input": 0, "moved": 0, "settled_total": 0,
        "settled_by_outcome": dict.fromkeys(names.VERDICTS, 0),
        "cascades": {"open": [], "stuck": [], "awaiting_input": [], "recently_settled": []},
        "agents": [], "edges": [],
    }
    edges: dict[tuple[str, str], int] = {}
    for endpoint, view in views:
        for key in ("open", "stuck", "awaiting_input", "moved", "settled_total"):
            out[key] += int(view.get(key) or 0)
        for outcome, n in (view.get("settled_by_outcome") or {}).items():
            out["settled_by_outcome"][outcome] = out["settled_by_outcome"].get(outcome, 0) + int(n)
        for status, items in (view.get("cascades") or {}).items():
            out["cascades"].setdefault(status, []).extend({**item, "shard": endpoint} for item in items)
        for edge in view.get("edges") or []:
            key = (edge["from"], edge["to"])
            edges[key] = edges.get(key, 0) + int(edge.get("messages") or 0)
        out["agents"].extend(view.get("agents") or [])
    out["cascades"]["recently_settled"].sort(key=lambda c: c.get("settled_at") or 0, reverse=True)
    out["edges"] = [{"from": a, "to": b, "messages": n} for (a, b), n in sorted(edges.items())]
    # a shard that cannot be asked may hold open cascades: the tier is not known quiet
    out["quiet"] = out["open"] == 0 and all(s["reachable"] for s in shards)
    out["shards"] = shards
    return out
