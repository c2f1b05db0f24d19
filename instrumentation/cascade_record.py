"""What one process knows of one cascade (``HopTracker.cascades``): the units of work it
holds for it, the messages it received and sent, its tasks waiting for their user, how
its work ended, and the snapshot body of all that. Read and changed only under the
tracker's lock (instrumentation/tracker.py says why)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from a2a_quiescence import names
from a2a_quiescence.wire import EMPTY, Tally, cascade_body

MAX_ENDINGS = 20  # failures and losses listed per cascade (all are counted)


@dataclass(slots=True)
class CascadeRecord:
    active: int = 0
    roots: Tally = EMPTY
    sent: dict[str, Tally] = field(default_factory=dict)
    received: dict[str, Tally] = field(default_factory=dict)
    aliases: set[str] = field(default_factory=set)
    passive_since: float | None = None
    changed: float = 0.0
    # units held by ActiveTask plumbing, by a2a task id; tasks waiting for their user
    owned: dict[str, int] = field(default_factory=dict)
    awaiting: dict[str, str] = field(default_factory=dict)  # a2a task id -> input_required | auth_required
    # endings are rare: empty until the first (a retained cascade is fewer objects for the
    # garbage collector to walk: thousands are kept for the tracker's PASSIVE_RETENTION_SECONDS)
    failures: list[dict[str, Any]] | tuple[()] = ()
    losses: list[dict[str, Any]] | tuple[()] = ()
    failed: int = 0
    lost: int = 0
    ended: set[tuple[bool, str]] | frozenset[tuple[bool, str]] = frozenset()  # (is loss, a2a task id) recorded
    root_at: float | None = None  # wall clock of the first root request received here

    def add_ending(self, ending: dict[str, Any], clock: Callable[[], float]) -> bool:
        """Count a failure or a loss (``HopTracker.record_ending`` describes ``ending``);
        one failure and one loss per a2a task, the first. True when it is a failed push
        delivery, which the hop counts as well."""
        loss = ending["kind"] in names.LOSS_KINDS
        task_id = ending.get("task_id")
        if task_id:
            key = (loss, task_id)
            if key in self.ended:
                return False
            if not self.ended:
                self.ended = set()
            self.ended.add(key)
        item = {k: v for k, v in ending.items() if v is not None}
        item.setdefault("at", clock())
        if loss:
            self.lost += 1
            if len(self.losses) < MAX_ENDINGS:
                if not self.losses:
                    self.losses = []
                self.losses.append(item)
            return ending["kind"] == names.END_PUSH_FAILED
        self.failed += 1
        if len(self.failures) < MAX_ENDINGS:
            if not self.failures:
                self.failures = []
            self.failures.append(item)
        return False

    def body(self, *, incarnation: str, seq: int, at: float, shutdown: bool) -> dict[str, Any]:
        """The cascade snapshot of this moment (a2a_quiescence.wire)."""
        return cascade_body(
            incarnation=incarnation,
            seq=seq,
            active=self.active,
            roots=self.roots,
            sent=self.sent,
            received=self.received,
            aliases=sorted(self.aliases),
            passive_since=self.passive_since,
            at=at,
            root_at=self.root_at,
            failed=self.failed,
            lost=self.lost,
            failures=self.failures,
            losses=self.losses,
            # units held only by tasks waiting for their user
            awaiting={t: (state, self.owned.get(t, 0)) for t, state in self.awaiting.items()},
            shutdown=shutdown,
        )
