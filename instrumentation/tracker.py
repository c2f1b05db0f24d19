"""Per-process state: producers in flight, and per-cascade work and messages.

One ``HopTracker`` per process incarnation. Every mutation happens under one
lock and marks what changed as dirty; the reporter thread takes atomic
snapshots of the dirty parts under the same lock (SETTLEMENT.md: a snapshot
must never mix fields from different moments).

Ordering rules that make settlement sound, enforced here:
- ``receive`` records the receipt and the new unit of work in one critical
  section, so no snapshot shows the receipt without the activity;
- ``send`` may only be called by code that holds a unit of work for the
  cascade (``WorkToken``), so a send is recorded before the hop can look
  passive.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from a2a_quiescence import names
from a2a_quiescence.collector.settlement import EMPTY, Tally

MAX_LOCAL_CASCADES = 20_000
PASSIVE_RETENTION_SECONDS = 600.0
MAX_RECENT_EVENTS = 16


@dataclass
class _Cascade:
    active: int = 0
    roots: Tally = EMPTY
    sent: dict[str, Tally] = field(default_factory=dict)
    received: dict[str, Tally] = field(default_factory=dict)
    aliases: set[str] = field(default_factory=set)
    passive_since: float | None = None
    changed: float = 0.0


class WorkToken:
    """One unit of work held for a cascade; release exactly once."""

    __slots__ = ("trace_id", "released")

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id
        self.released = False


class HopTracker:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.incarnation = uuid.uuid4().hex
        self.pid = os.getpid()
        self.started_at = clock()
        self.seq = 0
        self.producers_in_flight = 0
        self.producers_started = 0
        self.producers_finished: dict[str, int] = {o: 0 for o in names.OUTCOMES}
        self.stalled_in_flight = 0
        self.stalls_total = 0
        self.destroyed_pending = 0
        self.recent: list[dict[str, Any]] = []  # last stalls / destroyed-pending, for humans
        self.shutdown: dict[str, Any] | None = None
        self.cascades: OrderedDict[str, _Cascade] = OrderedDict()
        self.dirty: set[str] = set()
        self.hop_dirty = True
        self.wake: Callable[[], None] = lambda: None

    # -- per-hop counters -------------------------------------------------------
    def _touch_hop(self) -> None:
        self.hop_dirty = True

    def producer_started(self) -> None:
        with self.lock:
            self.producers_in_flight += 1
            self.producers_started += 1
            self._touch_hop()
        self.wake()

    def producer_finished(self, outcome: str) -> None:
        with self.lock:
            self.producers_in_flight -= 1
            self.producers_finished[outcome] = self.producers_finished.get(outcome, 0) + 1
            self._touch_hop()
        self.wake()

    def stall_began(self, detail: dict[str, Any]) -> None:
        with self.lock:
            self.stalled_in_flight += 1
            self.stalls_total += 1
            self._remember({"kind": "stall", **detail})
            self._touch_hop()
        self.wake()

    def stall_ended(self) -> None:
        with self.lock:
            self.stalled_in_flight -= 1
            self._touch_hop()
        self.wake()

    def destroyed_pending_seen(self, detail: dict[str, Any]) -> None:
        with self.lock:
            self.destroyed_pending += 1
            self._remember({"kind": "destroyed_pending", **detail})
            self._touch_hop()
        self.wake()

    def shutdown_completed(self, reason: str, parked: dict[str, str] | None = None) -> int:
        """Record the end of a shutdown; returns the producers still in flight.
        ``parked`` maps each leaked producer's task name to where it waits."""
        with self.lock:
            open_cascades = sorted(t for t, c in self.cascades.items() if c.active > 0)
            self.shutdown = {
                "reason": reason,
                "at": self.clock(),
                "leaked_producers": self.producers_in_flight,
                "active_cascades": open_cascades[:50],
                "parked": dict(list((parked or {}).items())[:50]),
            }
            self._touch_hop()
            leaked = self.producers_in_flight
        self.wake()
        return leaked

    def _remember(self, item: dict[str, Any]) -> None:
        item.setdefault("at", self.clock())
        self.recent.append(item)
        del self.recent[:-MAX_RECENT_EVENTS]

    # -- cascades -----------------------------------------------------------------
    def _cascade(self, trace_id: str) -> _Cascade:
        c = self.cascades.get(trace_id)
        if c is None:
            c = self.cascades[trace_id] = _Cascade(changed=self.clock())
            if len(self.cascades) > MAX_LOCAL_CASCADES:
                self._forget_passive()
        return c

    def _forget_passive(self) -> None:
        now = self.clock()
        for trace_id in list(self.cascades):
            c = self.cascades[trace_id]
            if len(self.cascades) <= MAX_LOCAL_CASCADES // 2:
                break
            if c.active == 0 and trace_id not in self.dirty:
                del self.cascades[trace_id]
        # also forget passive cascades nobody has touched for long
        for trace_id in list(self.cascades):
            c = self.cascades[trace_id]
            if c.active == 0 and now - c.changed > PASSIVE_RETENTION_SECONDS and trace_id not in self.dirty:
                del self.cascades[trace_id]

    def _mark(self, trace_id: str, c: _Cascade) -> None:
        c.changed = self.clock()
        self.dirty.add(trace_id)

    def receive(
        self, trace_id: str, sender: str | None, message_id: str, alias: str | None
    ) -> WorkToken:
        """Record a receipt (from hop ``sender``, or a root request when None)
        and the work it starts, atomically."""
        with self.lock:
            c = self._cascade(trace_id)
            if sender:
                c.received[sender] = c.received.get(sender, EMPTY).with_id(message_id)
            else:
                c.roots = c.roots.with_id(message_id)
            if alias:
                c.aliases.add(alias)
            c.active += 1
            c.passive_since = None
            self._mark(trace_id, c)
        self.wake()
        return WorkToken(trace_id)

    def start_root(self, trace_id: str) -> WorkToken:
        """This process starts a new cascade itself (an instrumented client)."""
        return self.receive(trace_id, None, uuid.uuid4().hex, None)

    def acquire(self, trace_id: str) -> WorkToken:
        """More work for a cascade this process already holds work for."""
        with self.lock:
            c = self.cascades.get(trace_id) or self._cascade(trace_id)
            c.active += 1
            first = c.active == 1
            if first:
                # only the passive -> active edge matters to the detector; the
                # count itself rides along with the next snapshot that is sent
                c.passive_since = None
                self._mark(trace_id, c)
        if first:
            self.wake()
        return WorkToken(trace_id)

    def release(self, token: WorkToken) -> None:
        if token.released:
            return
        token.released = True
        with self.lock:
            c = self.cascades.get(token.trace_id) or self._cascade(token.trace_id)
            c.active -= 1
            last = c.active <= 0
            if last:
                c.active = 0
                c.passive_since = self.clock()
                self._mark(token.trace_id, c)
        if last:
            self.wake()

    def release_on_done(self, token: WorkToken) -> Callable[[Any], None]:
        """A done-callback for an asyncio task that holds ``token``."""
        return lambda _task: self.release(token)

    def send(self, token: WorkToken, destination: str, message_id: str) -> None:
        """Record a message about to leave, while ``token`` holds work."""
        if token.released:
            raise RuntimeError("a send must be recorded while holding work")
        with self.lock:
            c = self._cascade(token.trace_id)
            c.sent[destination] = c.sent.get(destination, EMPTY).with_id(message_id)
            self._mark(token.trace_id, c)
        self.wake()

    def withdraw(self, token: WorkToken, destination: str, message_id: str) -> None:
        """Take back a send that provably never left (connection refused)."""
        with self.lock:
            c = self._cascade(token.trace_id)
            c.sent[destination] = c.sent.get(destination, EMPTY).without_id(message_id)
            self._mark(token.trace_id, c)
        self.wake()

    # -- snapshots ----------------------------------------------------------------
    def take_snapshots(self, everything: bool = False) -> tuple[dict[str, Any] | None, list[tuple[str, dict[str, Any]]]]:
        """Atomic snapshots of what changed (or of everything retained)."""
        with self.lock:
            now = self.clock()
            hop = None
            if self.hop_dirty or everything:
                self.seq += 1
                hop = self._hop_body(now)
                self.hop_dirty = False
            ids = list(self.cascades) if everything else list(self.dirty)
            self.dirty.clear()
            cascades = []
            for trace_id in ids:
                c = self.cascades.get(trace_id)
                if c is None:
                    continue
                self.seq += 1
                cascades.append(
                    (
                        trace_id,
                        {
                            "v": names.SNAPSHOT_SCHEMA_VERSION,
                            "incarnation": self.incarnation,
                            "seq": self.seq,
                            "active": c.active,
                            "roots": c.roots.to_json(),
                            "sent": {k: v.to_json() for k, v in c.sent.items()},
                            "received": {k: v.to_json() for k, v in c.received.items()},
                            "aliases": sorted(c.aliases),
                            "passive_since": c.passive_since,
                            "at": now,
                        },
                    )
                )
            return hop, cascades

    def heartbeat(self) -> None:
        with self.lock:
            self.hop_dirty = True

    def _hop_body(self, now: float) -> dict[str, Any]:
        return {
            "v": names.SNAPSHOT_SCHEMA_VERSION,
            "incarnation": self.incarnation,
            "seq": self.seq,
            "pid": self.pid,
            "started_at": self.started_at,
            "at": now,
            "producers_in_flight": self.producers_in_flight,
            "producers_started": self.producers_started,
            "producers_finished": dict(self.producers_finished),
            "stalled_closes_in_flight": self.stalled_in_flight,
            "stalls_total": self.stalls_total,
            "destroyed_pending_total": self.destroyed_pending,
            "recent": list(self.recent),
            "shutdown": self.shutdown,
        }

    def has_dirty(self) -> bool:
        return self.hop_dirty or bool(self.dirty)

    def mark_all_dirty(self) -> None:
        with self.lock:
            self.hop_dirty = True
            self.dirty.update(self.cascades)
