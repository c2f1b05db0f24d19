"""Per-process state: producers in flight, and per-cascade work and messages (each
cascade's record: ``CascadeRecord``, instrumentation/cascade_record.py).

One ``HopTracker`` per process incarnation. Every mutation happens under one
lock and marks what changed as dirty; the reporter takes atomic
snapshots of the dirty parts under the same lock (docs/settlement.md: a snapshot
must never mix fields from different moments).

Ordering rules that make settlement sound, enforced here:
- ``receive`` records the receipt and the new unit of work in one critical
  section, so no snapshot shows the receipt without the activity;
- ``send`` may only be called by code that holds a unit of work for the
  cascade (``WorkToken``), so a send is recorded before the hop can look
  passive;
- the reporter is woken (to ship within its flush interval) only by what can
  settle a cascade or that a waiter must see at once: a cascade going passive,
  a withdrawn send, a root receipt, a shutdown; those cascades are ``urgent``.
  Everything else is shipped when it is due (kept lazily for most of the
  reporter's lazy interval, see ``take_snapshots``) or with the cascade's next
  urgent snapshot. Snapshots stay atomic and the latest per incarnation wins,
  so a later report is late, never wrong;
- how work ended (a failure or a loss, ``record_ending``) is recorded while a
  unit of the cascade is still held, or in the same critical section that
  releases it (``release(token, ending=...)``), so no snapshot can show the
  hop passive without the ending: a verdict is never better than the truth.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable

from a2a_quiescence import names
from a2a_quiescence.instrumentation.cascade_record import CascadeRecord
from a2a_quiescence.wire import EMPTY, HopSnapshot

MAX_LOCAL_CASCADES = 20_000
PASSIVE_RETENTION_SECONDS = 600.0
MAX_RECENT_EVENTS = 16
_monotonic = time.monotonic


class WorkToken:
    """One unit of work held for a cascade; release exactly once.

    ``owner`` is the a2a task id of the ActiveTask whose plumbing (producer,
    consumer, queue dispatchers) this unit is, or None for anything else."""

    __slots__ = ("trace_id", "released", "owner", "what", "plumbing")

    def __init__(self, trace_id: str, owner: str | None = None, what: str | None = None) -> None:
        self.trace_id = trace_id
        self.released = False
        self.owner = owner
        self.what = what  # the coroutine it runs, when known
        self.plumbing = False  # released as SDK plumbing that never carried work


class HopTracker:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.wake: Callable[[], None] = lambda: None
        # libraries this hop runs that the version guard refused (kept across a fork)
        self.unsupported: list[dict[str, str]] = []
        self._fresh()

    def set_unsupported(self, refused: list[dict[str, str]]) -> None:
        """The version guard refused these libraries: every snapshot says so."""
        with self.lock:
            self.unsupported = list(refused)
            self.hop_dirty = True

    def add_unsupported(self, refused: dict[str, str]) -> None:
        """A library refused after start (fasta2a's broker, seen when its app starts)."""
        with self.lock:
            if refused not in self.unsupported:
                self.unsupported.append(refused)
                self.hop_dirty = True

    def after_fork(self) -> None:
        """In a forked child (prefork servers): a new incarnation, empty. What the
        parent held is the parent's to report; the child's lock is new (the parent's
        may have been held by a thread that does not exist here)."""
        self._fresh()

    def _fresh(self) -> None:
        clock = self.clock
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
        self.push_failed = 0
        self.cancelled_by_shutdown = 0  # producers a drain cancelled while they worked
        self.recent: list[dict[str, Any]] = []  # last stalls / destroyed-pending, for humans
        self.shutdown: dict[str, Any] | None = None
        self.cascades: OrderedDict[str, CascadeRecord] = OrderedDict()
        self.dirty: set[str] = set()
        # when each dirty cascade was first marked since it was last shipped (monotonic;
        # a dirty cascade missing here is due at once), and the dirty ones whose change
        # can settle them (passive, a withdrawn send, a root receipt): see take_snapshots
        self.dirty_since: dict[str, float] = {}
        self.urgent: set[str] = set()
        self.hop_dirty = True
        self.hop_shipped_at = -1e18
        self.shutdown_shipped: dict[str, Any] | None = None
        # work handed over from places that must not take the lock: the garbage
        # collector runs weakref callbacks and task finalizers in whatever thread
        # allocates, possibly this one inside ``with self.lock`` (not reentrant)
        self.deferred: collections.deque[Callable[[], None]] = collections.deque()

    # -- per-hop counters -------------------------------------------------------
    def _touch_hop(self) -> None:
        self.hop_dirty = True

    def producer_started(self) -> None:
        with self.lock:
            self.producers_in_flight += 1
            self.producers_started += 1
            self._touch_hop()

    def producer_finished(self, outcome: str) -> None:
        with self.lock:
            self.producers_in_flight -= 1
            self.producers_finished[outcome] = self.producers_finished.get(outcome, 0) + 1
            self._touch_hop()

    def stall_began(self, detail: dict[str, Any]) -> None:
        with self.lock:
            self.stalled_in_flight += 1
            self.stalls_total += 1
            self._remember({"kind": "stall", **detail})
            self._touch_hop()

    def stall_ended(self) -> None:
        with self.lock:
            self.stalled_in_flight -= 1
            self._touch_hop()

    def destroyed_pending_seen(self, detail: dict[str, Any]) -> None:
        """A task destroyed while pending (``detail[ATTR_SDK_PLUMBING]``: SDK plumbing
        that carried no work: listed, not counted). Called from a task finalizer,
        so deferred like ``release_later``."""

        def apply() -> None:
            if not detail.get(names.ATTR_SDK_PLUMBING):
                self.destroyed_pending += 1
            self._remember({"kind": "destroyed_pending", **detail})
            self._touch_hop()

        self.deferred.append(apply)

    def shutdown_completed(self, reason: str, parked: dict[str, str] | None = None) -> int:
        """Record the end of a shutdown; returns the producers still in flight.
        ``parked`` maps each leaked producer's task name to where it waits."""
        with self.lock:
            open_cascades = sorted(t for t, c in self.cascades.items() if c.active > 0)
            self.shutdown = {
                "reason": reason,
                "at": self.clock(),
                "leaked_producers": self.producers_in_flight,
                "cancelled_producers": self.cancelled_by_shutdown,
                "active_cascades": open_cascades[:50],
                "parked": dict(list((parked or {}).items())[:50]),
            }
            self._touch_hop()
            # the cascades it still holds say so themselves (a shard of a mesh tier
            # that owns one may never see this hop's own snapshot)
            self.dirty.update(open_cascades)
            leaked = self.producers_in_flight
        self.wake()
        return leaked

    def _remember(self, item: dict[str, Any]) -> None:
        item.setdefault("at", self.clock())
        self.recent.append(item)
        del self.recent[:-MAX_RECENT_EVENTS]

    # -- cascades -----------------------------------------------------------------
    def _cascade(self, trace_id: str) -> CascadeRecord:
        c = self.cascades.get(trace_id)
        if c is None:
            c = self.cascades[trace_id] = CascadeRecord(changed=self.clock())
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

    def _mark(self, trace_id: str, c: CascadeRecord) -> None:
        c.changed = self.clock()
        if trace_id not in self.dirty:
            self.dirty.add(trace_id)
            self.dirty_since[trace_id] = _monotonic()

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
                if c.root_at is None:
                    c.root_at = self.clock()
            if alias:
                c.aliases.add(alias)
            c.active += 1
            c.passive_since = None
            self._mark(trace_id, c)
            if not sender:
                self.urgent.add(trace_id)
        if not sender:
            self.wake()  # a root receipt: a mesh wait must hear of it within the flush interval
        return WorkToken(trace_id)

    def start_root(self, trace_id: str) -> WorkToken:
        """This process starts a new cascade itself (an instrumented client)."""
        return self.receive(trace_id, None, uuid.uuid4().hex, None)

    def acquire(self, trace_id: str, owner: str | None = None, what: str | None = None) -> WorkToken:
        """More work for a cascade this process already holds work for."""
        token = WorkToken(trace_id, owner, what)
        self.hold(token)
        return token

    def hold(self, token: Any) -> None:
        """``acquire`` for a token the caller built: anything with ``WorkToken``'s
        attributes, not yet released (the loop's weak references to tasks are their
        own tokens: one object per task). Release it with ``release``."""
        trace_id, owner = token.trace_id, token.owner
        with self.lock:
            c = self.cascades.get(trace_id) or self._cascade(trace_id)
            c.active += 1
            if owner is not None:
                c.owned[owner] = c.owned.get(owner, 0) + 1
            if c.active == 1 or c.awaiting:
                # only the passive -> active edge matters to the detector (and every count
                # while tasks wait for their user); otherwise the count rides along with
                # the next snapshot that is sent
                c.passive_since = None
                self._mark(trace_id, c)

    def release(self, token: WorkToken, ending: dict[str, Any] | None = None) -> None:
        """Release a unit; ``ending`` (see ``record_ending``) is recorded in the same
        critical section, so no snapshot shows the release without it."""
        if token.released:
            return
        token.released = True
        with self.lock:
            last = self._release_locked(token, ending)
        if last:
            self.wake()  # the hop went passive: this can settle the cascade

    def release_later(self, token: WorkToken, ending: dict[str, Any] | None = None) -> None:
        """``release`` for garbage-collector callbacks: takes no lock, applied at
        the next snapshot (the unit looks held until then: late, never early)."""
        if not token.released:
            token.released = True
            self.deferred.append(lambda: self._release_locked(token, ending))

    def _apply_deferred(self) -> None:
        while self.deferred:
            self.deferred.popleft()()

    def _release_locked(self, token: WorkToken, ending: dict[str, Any] | None) -> bool:
        c = self.cascades.get(token.trace_id) or self._cascade(token.trace_id)
        if ending is not None:
            self._end(c, ending)
        c.active -= 1
        if token.owner is not None:
            left = c.owned.get(token.owner, 0) - 1
            if left > 0:
                c.owned[token.owner] = left
            else:
                c.owned.pop(token.owner, None)
                c.awaiting.pop(token.owner, None)
        last = c.active <= 0
        if last:
            c.active = 0
            c.passive_since = self.clock()
            self.urgent.add(token.trace_id)
        # while tasks wait for their user, every count matters: all units parked is awaiting_input
        if last or ending is not None or c.awaiting:
            self._mark(token.trace_id, c)
        return last

    # -- how work ended -------------------------------------------------------------
    def record_ending(self, trace_id: str, ending: dict[str, Any]) -> None:
        """Record a failure or a loss for a cascade. The caller must hold a unit of
        work for it (or use ``release(token, ending)``): recorded before the hop can
        look passive. ``ending``: ``kind`` (names.END_*), and where known
        ``task_id``, ``detail``, ``parked_at``. One failure and one loss per a2a
        task are kept (the first says most); every one without a task id is kept."""
        with self.lock:
            self._end(self._cascade(trace_id), ending)
            self._mark(trace_id, self.cascades[trace_id])

    def _end(self, c: CascadeRecord, ending: dict[str, Any]) -> None:
        if c.add_ending(ending, self.clock):
            self.push_failed += 1
            self._touch_hop()

    def task_state(self, trace_id: str, task_id: str, awaiting: str | None) -> None:
        """The a2a task ``task_id`` now waits for its user (``awaiting``:
        input_required / auth_required) or no longer does (None)."""
        with self.lock:
            c = self.cascades.get(trace_id)
            if c is None:
                return
            before = c.awaiting.get(task_id)
            if awaiting is None:
                c.awaiting.pop(task_id, None)
            elif task_id in c.owned:
                c.awaiting[task_id] = awaiting
            if c.awaiting.get(task_id) == before:
                return
            self._mark(trace_id, c)

    def shutdown_cancelled(self) -> None:
        """A drain cancelled a producer that was still working."""
        with self.lock:
            self.cancelled_by_shutdown += 1
            self._touch_hop()

    def send(self, token: WorkToken, destination: str, message_id: str) -> None:
        """Record a message about to leave, while ``token`` holds work."""
        if token.released:
            raise RuntimeError("a send must be recorded while holding work")
        with self.lock:
            c = self._cascade(token.trace_id)
            c.sent[destination] = c.sent.get(destination, EMPTY).with_id(message_id)
            self._mark(token.trace_id, c)

    def withdraw(self, token: WorkToken, destination: str, message_id: str) -> None:
        """Take back a send that provably never left (connection refused)."""
        with self.lock:
            c = self._cascade(token.trace_id)
            c.sent[destination] = c.sent.get(destination, EMPTY).without_id(message_id)
            self._mark(token.trace_id, c)
            self.urgent.add(token.trace_id)
        self.wake()

    # -- snapshots ----------------------------------------------------------------
    def take_snapshots(
        self, everything: bool = False, lazy: float | None = None
    ) -> tuple[dict[str, Any] | None, list[tuple[str, dict[str, Any]]]]:
        """Atomic snapshots of what changed (or of everything retained).

        With ``lazy`` (seconds), only what is due: the cascades whose change can
        settle them (``urgent``), those changed ``lazy`` ago or earlier (or marked
        dirty from outside, e.g. a heartbeat or a resend), and the hop snapshot
        when a shutdown is new or it was last taken ``lazy`` ago. The rest stays
        dirty: a cascade still working is shipped once when it goes passive (its
        snapshot then holds every receipt and send before it), or after ``lazy``.
        Each snapshot is still the whole state of one moment: late, never wrong."""
        with self.lock:
            self._apply_deferred()
            now = self.clock()
            mono = _monotonic()
            hop = None
            if everything or (self.hop_dirty and (
                lazy is None or self.shutdown is not self.shutdown_shipped or mono - self.hop_shipped_at >= lazy
            )):
                self.seq += 1
                hop = self._hop_body(now)
                self.hop_dirty = False
                self.hop_shipped_at = mono
                self.shutdown_shipped = self.shutdown
            dirty, since = self.dirty, self.dirty_since
            if everything:
                ids = list(self.cascades)
                dirty.clear()
                since.clear()
            elif lazy is None or len(dirty) == len(self.urgent):
                ids = list(dirty)
                dirty.clear()
                since.clear()
            else:
                cutoff = mono - lazy
                urgent = self.urgent
                ids = [t for t in dirty if t in urgent or since.get(t, cutoff) <= cutoff]
                dirty.difference_update(ids)
                for t in ids:
                    since.pop(t, None)
            self.urgent.clear()
            cascades = []
            for trace_id in ids:
                c = self.cascades.get(trace_id)
                if c is None:
                    continue
                self.seq += 1
                body = c.body(incarnation=self.incarnation, seq=self.seq, at=now, shutdown=self.shutdown is not None)
                cascades.append((trace_id, body))
            return hop, cascades

    def heartbeat(self) -> None:
        """Resend the hop snapshot, and the snapshot of every cascade this hop still
        works on: the latter is the hop's liveness lease where only cascade
        snapshots arrive (a shard of a mesh tier), and completes the view of a
        shard that took the cascade over. Unchanged resends are not progress."""
        with self.lock:
            self.hop_dirty = True
            self.dirty.update(t for t, c in self.cascades.items() if c.active > 0)

    def _hop_body(self, now: float) -> dict[str, Any]:
        return HopSnapshot(
            incarnation=self.incarnation,
            seq=self.seq,
            pid=self.pid,
            started_at=self.started_at,
            at=now,
            producers_in_flight=self.producers_in_flight,
            producers_started=self.producers_started,
            producers_finished=dict(self.producers_finished),
            stalled_closes_in_flight=self.stalled_in_flight,
            stalls_total=self.stalls_total,
            destroyed_pending_total=self.destroyed_pending,
            push_failed_total=self.push_failed,
            shutdown_cancelled_total=self.cancelled_by_shutdown,
            recent=list(self.recent),
            shutdown=self.shutdown,
            unsupported=list(self.unsupported),
        ).to_json()

    def requeue(self, hop: bool, trace_ids: list[str]) -> None:
        """Snapshots taken but not delivered: ship them again (their latest state) later."""
        with self.lock:
            self.hop_dirty = self.hop_dirty or hop
            self.dirty.update(trace_ids)

    def has_dirty(self) -> bool:
        return self.hop_dirty or bool(self.dirty) or bool(self.deferred)

    def next_due(self, lazy: float) -> float | None:
        """Monotonic time at which the oldest change kept lazily has waited ``lazy`` (a
        cascade's, the hop snapshot's; now for one that is due at once: a requeue, a
        resend, a new shutdown, a release handed over by the garbage collector), or
        None when nothing is kept."""
        with self.lock:
            dues = [first + lazy for first in itertools.islice(self.dirty_since.values(), 1)]  # the oldest
            if self.hop_dirty:
                dues.append(self.hop_shipped_at + lazy if self.shutdown is self.shutdown_shipped else -1e18)
            if self.deferred or len(self.dirty) > len(self.dirty_since):
                dues.append(-1e18)
            return min(dues) if dues else None

    def settle_deferred(self) -> None:
        """Apply what garbage-collector callbacks handed over (snapshots do this too)."""
        with self.lock:
            self._apply_deferred()

    def holds(self, trace_id: str, owner: str) -> bool:
        """Whether ActiveTask ``owner`` still holds units of cascade ``trace_id``."""
        with self.lock:
            c = self.cascades.get(trace_id)
            return c is not None and owner in c.owned

    def mark_all_dirty(self) -> None:
        with self.lock:
            self.hop_dirty = True
            self.dirty.update(self.cascades)
