"""Cascade settlement: the channel-counting termination detector.

See docs/settlement.md for the model and the proof. In short, per cascade
(= W3C trace id) the detector keeps the latest snapshot of every hop
incarnation and declares the cascade settled when

1. every incarnation it knows of reports passive,
2. for every sending hop p, the messages p sent (all incarnations) equal the
   messages received from p by all hops (all incarnations), compared as a
   count plus a 64-bit sum of the per-delivery message ids, and
3. at least one root request has been reported received.

Message ids are unique per delivery attempt and each delivery reaches exactly
one receiver, so comparing per sender is as strong as comparing per edge: an
id in p's sent set can only balance against a receipt of that same id.
Settled is terminal: late or duplicate snapshots never turn it back to open.

The rule itself is pure and lives in ``collector/rule.py``; this module is the
store it is applied to: one view per cascade, bounded, forgotten after the
retention period, and queried by the API and the metrics.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

from a2a_quiescence import names
from a2a_quiescence.collector.rule import awaiting_input, evaluate, verdict
from a2a_quiescence.wire import CascadeSnapshot

__all__ = ["Cascade", "Detector", "Tombstone", "awaiting_input", "evaluate", "verdict"]


# how much earlier than its first snapshot arrived a cascade's last hop may have gone
# passive and still count as seen while it ran (its first report can be that late)
LATENCY_SLACK = 1.0


def _changed(old: CascadeSnapshot, new: CascadeSnapshot) -> bool:
    return (
        old.active != new.active
        or old.roots != new.roots
        or old.sent != new.sent
        or old.received != new.received
    )


@dataclass
class Cascade:
    trace_id: str
    first_seen: float
    last_progress: float
    view: dict[str, CascadeSnapshot] = field(default_factory=dict)  # by incarnation
    settled_at: float | None = None
    settled_roots: int = 0
    detection_latency: float | None = None
    activity_after_settle: bool = False
    latency_observed: bool = False
    holders: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None  # once settled: completed, failed or lost (only ever worse)
    root_at: float | None = None  # earliest root receipt any hop reported (its clock); else first_seen
    awaiting: list[dict[str, Any]] | None = None  # open, held only by tasks waiting for their user
    heard: dict[str, float] = field(default_factory=dict)  # incarnation -> when its last snapshot arrived
    owner: str | None = None  # a shard of a mesh tier: the shard the ring gives it to, when not this one

    @property
    def settled(self) -> bool:
        return self.settled_at is not None

    def started(self) -> float:
        """When the cascade began: its first root receipt (the hop's clock), else when first seen."""
        return self.root_at if self.root_at is not None else self.first_seen

    def roots_in_view(self) -> int:
        return sum(s.roots.count for s in self.view.values())

    def done(self, roots: int = 1) -> bool:
        """Settled with respect to every root request in the view (and at least ``roots``)."""
        return self.settled and self.settled_roots >= max(roots, self.roots_in_view())


class Tombstone(NamedTuple):
    """What is kept of a settled cascade once forgotten."""

    forgotten_at: float
    outcome: str | None
    started: float  # when its first root request arrived (Cascade.started)


class Detector:
    """Per-cascade settlement state with bounded memory.

    ``on_change(cascade)`` is called after every ingest that changed a cascade;
    ``on_settle(cascade)`` once per settlement (and again if a later root wave
    settles too). A shard of a mesh tier is given ``owner_of(trace_id)``: the
    ring endpoint of the shard owning it when another one does (None: this one),
    and a new one by ``reassign`` at every membership change.
    """

    def __init__(
        self,
        *,
        stuck_after: float = 30.0,
        retention: float = 300.0,
        max_cascades: int = 100_000,
        max_tombstones: int = 200_000,
        clock: Callable[[], float] = time.time,
        on_settle: Callable[[Cascade], None] | None = None,
        on_change: Callable[[Cascade], None] | None = None,
        owner_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.stuck_after = stuck_after
        self.retention = retention
        self.max_cascades = max_cascades
        self.max_tombstones = max_tombstones
        self.clock = clock
        self.on_settle = on_settle
        self.on_change = on_change
        self.cascades: OrderedDict[str, Cascade] = OrderedDict()
        # forgotten settled cascades, by trace id
        self.tombstones: OrderedDict[str, Tombstone] = OrderedDict()
        self.evicted_open = 0
        self.late_after_forget = 0
        self.settled_total = 0
        self.settled_by_outcome: dict[str, int] = {v: 0 for v in names.VERDICTS}
        self.snapshots_total = 0
        self.stale_total = 0
        # a shard of a mesh tier: trace id -> the ring endpoint of the shard owning it
        # when that is another shard (None: this one); no rule: not sharded
        self._owner_of = owner_of
        self.expired_moved = 0

    def _owner(self, trace_id: str) -> str | None:
        """The shard owning ``trace_id`` when it is not this one (None: ours, or not sharded)."""
        return None if self._owner_of is None else self._owner_of(trace_id)

    def reassign(self, owner_of: Callable[[str], str | None]) -> int:
        """After a ring change: take its ownership rule (as ``owner_of`` above) and mark
        each cascade moved or ours again. Returns how many are moved."""
        self._owner_of = owner_of
        moved = 0
        for trace_id, cascade in self.cascades.items():
            cascade.owner = self._owner(trace_id)
            moved += cascade.owner is not None
        return moved

    # -- ingest ---------------------------------------------------------------
    def ingest(self, snap: CascadeSnapshot) -> Cascade | None:
        self.snapshots_total += 1
        if snap.trace_id in self.tombstones:
            self.late_after_forget += 1
            return None
        now = self.clock()
        cascade = self.cascades.get(snap.trace_id)
        if cascade is None:
            cascade = Cascade(snap.trace_id, first_seen=now, last_progress=now, owner=self._owner(snap.trace_id))
            self.cascades[snap.trace_id] = cascade
            self._bound()
        cascade.heard[snap.incarnation] = now
        current = cascade.view.get(snap.incarnation)
        if current is not None and current.seq >= snap.seq:
            self.stale_total += 1
            return cascade
        cascade.view[snap.incarnation] = snap
        if snap.root_at is not None and (cascade.root_at is None or snap.root_at < cascade.root_at):
            cascade.root_at = snap.root_at
        if current is None or _changed(current, snap):
            # a resent or refreshed snapshot that says nothing new is not progress
            cascade.last_progress = now
        self._decide(cascade, now)
        if self.on_change is not None:
            self.on_change(cascade)
        return cascade

    def _decide(self, cascade: Cascade, now: float) -> None:
        settled, holders = evaluate(cascade.view.values())
        cascade.holders = holders
        cascade.awaiting = None if settled else awaiting_input(cascade.view.values(), holders)
        roots = cascade.roots_in_view()
        if cascade.settled:
            if not settled:
                cascade.activity_after_settle = True
            elif roots > cascade.settled_roots:
                # a later root wave settled too: its endings count, the verdict only worsens
                cascade.settled_roots = roots
                cascade.outcome = names.worse_verdict(cascade.outcome, verdict(cascade.view.values())["outcome"])
                if self.on_settle is not None:
                    self.on_settle(cascade)
            return
        if settled:
            cascade.settled_at = now
            cascade.settled_roots = roots
            cascade.outcome = verdict(cascade.view.values())["outcome"]
            self.settled_by_outcome[cascade.outcome] += 1
            passive = [s.passive_since for s in cascade.view.values() if s.passive_since]
            # measured only for a cascade seen while it ran: one resent to this collector
            # (a restart, a shard taking it over) went passive long before it was first seen
            if passive and max(passive) >= cascade.first_seen - LATENCY_SLACK:
                cascade.detection_latency = max(0.0, now - max(passive))
            self.settled_total += 1
            if self.on_settle is not None:
                self.on_settle(cascade)

    def _bound(self) -> None:
        while len(self.cascades) > self.max_cascades:
            trace_id, old = self.cascades.popitem(last=False)
            if old.settled:
                self._tombstone(trace_id, old)
            else:
                self.evicted_open += 1

    def _tombstone(self, trace_id: str, cascade: Cascade) -> None:
        self.tombstones[trace_id] = Tombstone(self.clock(), cascade.outcome, cascade.started())
        while len(self.tombstones) > self.max_tombstones:
            self.tombstones.popitem(last=False)

    # -- queries --------------------------------------------------------------
    def get(self, trace_id: str) -> Cascade | None:
        """The cascade held for ``trace_id`` (None: never seen, evicted or forgotten)."""
        return self.cascades.get(trace_id)

    def held(self) -> Iterator[Cascade]:
        """Every cascade held here, least recently created first."""
        return iter(self.cascades.values())

    def forgotten(self, trace_id: str) -> Tombstone | None:
        """What is kept of ``trace_id`` once settled and forgotten (None: not forgotten)."""
        return self.tombstones.get(trace_id)

    def settled_counts(self) -> dict[str, int]:
        """Cascades settled here so far, by outcome (a copy)."""
        return dict(self.settled_by_outcome)

    def evicted_open_count(self) -> int:
        """Open cascades dropped to keep within ``max_cascades``."""
        return self.evicted_open

    def status(self, cascade: Cascade, now: float | None = None) -> str:
        if cascade.settled:
            return names.STATUS_SETTLED  # settled here is settled, whoever owns it now
        if cascade.owner is not None:
            return names.STATUS_MOVED
        if cascade.awaiting:
            return names.STATUS_AWAITING_INPUT  # waiting for a user is not being stuck
        now = self.clock() if now is None else now
        if now - cascade.last_progress >= self.stuck_after:
            return names.STATUS_STUCK
        return names.STATUS_OPEN

    def expire(self, now: float | None = None) -> int:
        """Forget settled cascades older than the retention period, and open ones
        another shard owns that have not changed for as long."""
        now = self.clock() if now is None else now
        gone = [
            t
            for t, c in self.cascades.items()
            if c.settled_at is not None and now - c.settled_at >= self.retention
        ]
        for trace_id in gone:
            self._tombstone(trace_id, self.cascades.pop(trace_id))
        moved = [t for t, c in self.cascades.items()
                 if c.owner is not None and not c.settled and now - c.last_progress >= self.retention]
        for trace_id in moved:
            del self.cascades[trace_id]
        self.expired_moved += len(moved)
        return len(gone) + len(moved)

    def counts(self, now: float | None = None) -> tuple[int, int]:
        """(open including stuck and awaiting input, stuck)."""
        now = self.clock() if now is None else now
        open_ = stuck = 0
        for c in self.cascades.values():
            if c.settled or c.owner is not None:
                continue
            open_ += 1
            if not c.awaiting and now - c.last_progress >= self.stuck_after:
                stuck += 1
        return open_, stuck

    def rooted_between(self, since: float, until: float) -> tuple[list[Cascade], list[tuple[str, str | None]]]:
        """Cascades whose first root request arrived in [since, until]: those still
        held, and (trace id, outcome) of those settled and since forgotten."""
        held = [c for c in self.cascades.values() if since <= c.started() <= until]
        forgotten = [(t, outcome) for t, (_when, outcome, started) in self.tombstones.items()
                     if since <= started <= until]
        return held, forgotten

    def awaiting_count(self) -> int:
        """Open cascades held only by tasks waiting for their user."""
        return sum(1 for c in self.cascades.values() if not c.settled and c.awaiting and c.owner is None)

    def moved_count(self) -> int:
        """Open cascades held here that the ring gives to another shard."""
        return sum(1 for c in self.cascades.values() if not c.settled and c.owner is not None)
