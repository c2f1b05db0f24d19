"""Waiting on a mesh tier (``--shards``): a cascade is asked of the shard the ring gives
it to, and of its new owner when that shard is lost; a mesh wait asks every shard and
merges their answers (``merge_window``), holding while a shard cannot be asked or the
membership has just changed (``tier_holds``). docs/scale-out.md describes the tier."""

from __future__ import annotations

import time
from typing import Any

import httpx

from a2a_quiescence import names
from a2a_quiescence.collector_client import (
    DEFAULT_GRACE, MeshNotQuiet, NotSettled, auth_headers, cascade_poll, poll_sync, sync_client,
)
from a2a_quiescence.shards import Membership, Shard, ShardSpec

TIER_SLICE = 5.0  # a wait on a mesh tier reads the shard set again at least this often (at once on a lost shard)


def shard_spec(shards: str | ShardSpec) -> ShardSpec:
    return shards if isinstance(shards, ShardSpec) else ShardSpec(shards)


def _settled_item(item: dict[str, Any]) -> bool:
    return item.get("status") == names.STATUS_SETTLED and not item.get("pending_roots")


def merge_window(membership: Membership, answers: list[tuple[str, dict[str, Any]]],
                 since: float, until: float) -> dict[str, Any]:
    """One mesh-wait answer from every shard's: a cascade is settled when any shard
    settled it (a settle on any shard's view is sound: docs/settlement.md); otherwise
    its owner's view says what holds it, or, when the owner has not reported it yet,
    the shard it moved from does."""
    from a2a_quiescence.names import worse_verdict as worse

    seen: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for url, answer in answers:
        for item in answer.get("cascades") or []:
            seen.setdefault(item["trace_id"], []).append((url, item))
    items = []
    waiting = 0
    worst = None
    for trace_id, entries in seen.items():
        settled = [(url, i) for url, i in entries if _settled_item(i)]
        if settled:
            outcome = None
            for _url, i in settled:
                if i.get("outcome"):
                    outcome = worse(outcome, i["outcome"])
            url, item = next(((u, i) for u, i in settled if i.get("outcome") == outcome), settled[0])
            items.append({**item, "shard": url})
            if outcome:
                worst = worse(worst, outcome)
            continue
        waiting += 1
        owner = membership.owner(trace_id)
        mine = [(u, i) for u, i in entries if owner is not None and u == owner.url]
        url, item = (mine or entries)[0]
        item = {**item, "shard": url}
        if not mine and owner is not None:
            item.update(status=names.STATUS_MOVED, owner=owner.endpoint, owner_url=owner.url, owner_reported=False)
        items.append(item)
    items.sort(key=lambda i: i.get("started_at") or 0)
    return {"since": since, "until": until, "settled": waiting == 0, "cascades": items, "open": waiting,
            "outcome": worst if waiting == 0 else None, "shards": [url for url, _ in answers]}


RETRY_FIRST = 0.05  # after a shard could not be asked: first pause, doubled up to RETRY_MAX
RETRY_MAX = 0.5
# after a membership change the shards' views are incomplete until the agents have resent what
# they hold: beyond the shard's --ring-settle and --ring-refresh (the pod sidecars use the same),
# a heartbeat (2 s) for the agents to see the sidecar's new id, and a second for the resend to land
RESEND_SLACK = 3.0


class TierWait:
    """What a wait on a mesh tier knows of it: the membership last read (kept when the shard
    set cannot be read for a moment, e.g. a file being rewritten), whether any shard ever
    answered, every shard seen during the wait, and when to ask again after a failure."""

    def __init__(self, spec: ShardSpec, timeout: float) -> None:
        self.spec = spec
        self.deadline = time.monotonic() + timeout
        self.membership: Membership | None = None
        self.answered = False
        self.seen: dict[str, str] = {}  # ring endpoint -> API URL of every shard listed during the wait
        self.pause = RETRY_FIRST

    def resolve(self) -> Membership:
        try:
            self.membership = self.spec.resolve()
        except (OSError, ValueError, LookupError):
            if self.membership is None:
                raise  # never read at all: a usage error
        for shard in self.membership.shards:
            self.seen.setdefault(shard.endpoint, shard.url)
        return self.membership

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def failed(self) -> None:
        """Pause before asking again (not past the deadline), longer each time."""
        time.sleep(max(0.0, min(self.pause, self.left())))
        self.pause = min(self.pause * 2, RETRY_MAX)

    def ok(self) -> None:
        self.answered = True
        self.pause = RETRY_FIRST


def _transient(exc: httpx.HTTPError) -> bool:
    """A shard that is gone, restarting or cut off mid-answer: ask again. A 4xx is the caller's."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def _unreachable(shard: Shard, exc: Exception) -> dict[str, Any]:
    return {"shard": shard.url, "endpoint": shard.endpoint, "error": str(exc) or type(exc).__name__}


def _ask_mesh(client: httpx.Client, shard: Shard, query: dict[str, Any]) -> dict[str, Any]:
    response = client.get(f"{shard.url}/v1/mesh/wait", params=query)
    if response.status_code not in (200, 408):
        response.raise_for_status()
    return response.json()


def tier_holds(tier: TierWait, membership: Membership, views: list[tuple[Shard, dict[str, Any]]],
               unreachable: list[dict[str, Any]]) -> list[str]:
    """Why a tier's merged window cannot be called settled yet, one clause each (empty: it can).
    A shard that cannot be asked may hold cascades of the window; after a membership change
    the shards hold only part of what moved until the agents' resends have landed."""
    holds = [f"shard {u['endpoint']} ({u['shard']}) cannot be asked: {u['error']}" for u in unreachable]
    gone = sorted(set(tier.seen) - set(membership.endpoints()))
    for shard, view in views:
        info = view.get("tier") or {}
        epoch, stable_for = info.get("epoch"), info.get("stable_for")
        if epoch is not None and epoch != membership.epoch:
            holds.append(f"shard {shard.endpoint} has not read the shard set this wait reads yet")
        elif stable_for is not None:
            needed = float(info.get("ring_settle") or 0) + float(info.get("ring_refresh") or 0) + RESEND_SLACK
            if stable_for < needed:
                left = f" (shards {', '.join(gone)} left)" if gone else ""
                holds.append(f"the tier's membership changed {stable_for:.1f} s ago{left}: waiting "
                             f"{needed - stable_for:.1f} s more for the agents' resends")
    return list(dict.fromkeys(holds))


def tier_mesh_sync(spec: ShardSpec, since: float, until: float | None, timeout: float, grace: float | None,
                    token: str | None) -> dict[str, Any]:
    until = time.time() if until is None else until
    grace = DEFAULT_GRACE if grace is None else grace
    tier = TierWait(spec, timeout)
    query = {"since": f"{since:.6f}", "until": f"{until:.6f}", "grace": grace, "timeout": 0}
    with httpx.Client(headers=auth_headers(token), timeout=10.0) as client:
        while True:
            membership = tier.resolve()
            views: list[tuple[Shard, dict[str, Any]]] = []
            unreachable: list[dict[str, Any]] = []
            first_error: httpx.HTTPError | None = None
            for shard in membership.shards:
                try:
                    views.append((shard, _ask_mesh(client, shard, query)))
                except httpx.HTTPError as exc:
                    if not _transient(exc):
                        raise
                    first_error = first_error or exc
                    unreachable.append(_unreachable(shard, exc))
            if views:
                tier.answered = True
            elif first_error is not None and not tier.answered:
                raise first_error  # no shard of the set has ever answered: not a tier we can ask
            merged = merge_window(membership, [(s.url, v) for s, v in views], since, until)
            holds = tier_holds(tier, membership, views, unreachable)
            if holds:
                merged.update(settled=False, outcome=None, held_by=holds, unreachable=unreachable)
            if merged["settled"] and time.time() >= until + grace:
                return merged
            if tier.left() <= 0:
                raise MeshNotQuiet(merged)
            # shards answer at once (timeout 0): ask again, less often the longer it takes
            tier.failed()


def tier_wait_sync(spec: ShardSpec, trace_id: str, timeout: float, roots: int, token: str | None) -> dict[str, Any]:
    """Long-poll the shard the ring gives the cascade to, reading the shard set again
    every ``TIER_SLICE`` seconds (the owner may change during the wait) and at once
    when the owner cannot be asked (it may have been lost): then the new owner is asked,
    until the timeout. A tier none of whose shards ever answered raises ``httpx.HTTPError``."""
    tier = TierWait(spec, timeout)
    last: dict[str, Any] = {"status": names.STATUS_UNKNOWN}
    while True:
        membership = tier.resolve()
        owner = membership.owner(trace_id)
        if owner is None:
            last = {"status": names.STATUS_UNKNOWN, "unreachable": [{"shard": str(spec), "endpoint": str(spec),
                                                          "error": "the shard set is empty"}]}
        else:
            poll = cascade_poll(trace_id, owner.url, max(0.0, min(tier.left(), TIER_SLICE)), roots)
            try:
                state = poll_sync(poll, token)
            except httpx.HTTPError as exc:
                if not _transient(exc):
                    raise
                if not tier.answered and not _any_answers(membership, token):
                    raise  # no shard of the set answers at all
                tier.answered = True
                last = {"status": names.STATUS_UNKNOWN, "shard": owner.url, "unreachable": [_unreachable(owner, exc)]}
            else:
                tier.ok()
                if state is not None:
                    return {**state, "shard": owner.url}
                last = {**poll.state, "shard": owner.url}
                if tier.left() > 0:
                    continue  # a slice ran out: read the set again and ask its owner
        if tier.left() <= 0:
            raise NotSettled(trace_id, last)
        tier.failed()


def _any_answers(membership: Membership, token: str | None) -> bool:
    """Whether any shard of the set answers at all (its health endpoint)."""
    client = sync_client(token)
    for shard in membership.shards:
        try:
            client.get(f"{shard.url}/healthz", timeout=2.0)
            return True
        except httpx.HTTPError:
            continue
    return False
