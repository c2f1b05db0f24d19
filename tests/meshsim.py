"""A simulator of one cascade through a random mesh of instrumented A2A hops.

Used by ``test_settlement_property.py``. Hypothesis drives every choice
(through the ``draw`` of a composite strategy): which hop does what, when
snapshots are taken, and which produced snapshot reaches the detector next
(any of them, any number of times, or never: reordering, duplicates, drops and
delays). Execution and delivery are interleaved, so after every step the
detector's verdict can be compared with the ground truth *at that moment of
the execution*.

What is recorded follows the model in docs/settlement.md and how the
instrumentation records things:

* a hop process is an *incarnation* (random id, never reused); a restart kills
  the current incarnation (its last reported snapshot stays wherever it was
  delivered) and starts a new, empty one;
* ``active`` is the number of work units an incarnation holds: the task a
  receipt started, spawned background work, an outbound call in progress, a
  push POST in progress, a cancel handler;
* a send records ``sent[<destination authority>]`` with a fresh id (one per
  delivery attempt) before the message leaves, while the sender holds a call
  unit; a send that provably never left is withdrawn (``Tally.without_id``);
  a message that left may be lost (outcome unknown, the id stays);
* a delivery records ``received[<sender hop>]`` and adds a work unit in the
  same step; the root request records ``roots`` the same way on H0;
* a cancel is a message; it starts a cancel handler at the receiver and marks
  one producer there cancelled, which still holds its unit until it finishes;
* pushes to an (uninstrumented) webhook are only a work unit on the sender
  for the duration of the POST;
* a snapshot is all fields of one incarnation at one instant, with an
  increasing ``seq``;
* a unit of work may end badly (when the ``endings`` feature is drawn): the
  agents report a failure (``names.FAILURE_KINDS``) or the work is lost
  (``names.LOSS_KINDS``: a call that failed in transport, a push that failed,
  a task destroyed while pending, work cancelled by a shutdown drain). The
  incarnation records the ending (``failed``/``lost`` counts and the
  ``failures``/``losses`` lists) in the same step that releases the unit, or
  while it still holds the unit (a client's cancel), like the tracker; a task
  destroyed while pending is released, with its loss, at the incarnation's
  next snapshot (``release_later``). A restart may drain first: every unit it
  holds is released with a loss, then it reports and exits. The simulator
  keeps the ground truth: every ending that happened, plus work that died
  with a killed incarnation or a message lost on the wire.

``Variant`` switches in the weakenings of the docs/settlement.md table, either in
the detector's rule, in the instrumentation (torn snapshots, receipt before
becoming active, send recorded after going passive, counters reset under the
same key on restart), in the execution (a second root request) or in the
oracle (``root task COMPLETED``); and the weakenings of the verdict: an
ending recorded in a later step than the release, a snapshot whose endings
are from an earlier instant than its flag, a detector that reads endings
only from snapshots showing the hop active, or one that recomputes the
outcome after dropping a restarted hop's old incarnation.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from hypothesis import strategies as st

from a2a_quiescence import names
from a2a_quiescence.collector.settlement import Detector, evaluate, verdict
from a2a_quiescence.wire import EMPTY, MASK64, CascadeSnapshot, Tally

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
ROOT_HOP = "H0"

PENDING = "pending"  # send recorded, not yet left the sender
FLIGHT = "flight"  # on the wire
DELIVERED = "delivered"
LOST = "lost"  # left, never delivered (outcome unknown at the sender: id kept)
WITHDRAWN = "withdrawn"  # provably never left; the sender withdrew the id

MAX_RESTARTS = 3
OBSERVER_LIMIT = 4000
MAX_ROOTS = 3


COMPLETED, FAILED, LOST_WORK = names.VERDICT_COMPLETED, names.VERDICT_FAILED, names.VERDICT_LOST
SEVERITY = {COMPLETED: 0, FAILED: 1, LOST_WORK: 2}
BY_SEVERITY = (COMPLETED, FAILED, LOST_WORK)

# how each kind of unit may end badly (drawn when the ``endings`` feature is on)
BAD_ENDINGS = {
    "root": (names.END_EXECUTOR_FAILED, names.END_TASK_FAILED, names.END_TASK_REJECTED,
             names.END_CANCELLED, names.END_DESTROYED_PENDING),
    "task": (names.END_EXECUTOR_FAILED, names.END_TASK_FAILED, names.END_TASK_REJECTED,
             names.END_CANCELLED, names.END_DESTROYED_PENDING),
    "bg": (names.END_EXECUTOR_FAILED, names.END_CANCELLED, names.END_DESTROYED_PENDING),
    "cancel": (names.END_REQUEST_FAILED,),
    "call": (names.END_CALL_REJECTED, names.END_CALL_FAILED),
    "push": (names.END_PUSH_FAILED,),
}
# what a shutdown drain records for each unit it cancels
DRAIN_ENDING = {"call": names.END_CALL_FAILED, "push": names.END_PUSH_FAILED}
assert all(k in names.FAILURE_KINDS | names.LOSS_KINDS for ks in BAD_ENDINGS.values() for k in ks)


def severity_of(failed: int, lost: int) -> int:
    return 2 if lost else 1 if failed else 0


def authority(hop: str) -> str:
    return f"{hop.lower()}:80"


# --------------------------------------------------------------------------
# settle rules (the real one and the weakened ones), each: view -> bool
# --------------------------------------------------------------------------
Rule = Callable[[list[CascadeSnapshot]], bool]


def rule_real(view: list[CascadeSnapshot]) -> bool:
    return evaluate(view)[0]


def rule_totals(view: list[CascadeSnapshot]) -> bool:
    """Weakening: one global sent count against one global received count."""
    if any(s.active > 0 for s in view) or sum(s.roots.count for s in view) < 1:
        return False
    sent = sum(s.sent_total().count for s in view)
    received = sum(t.count for s in view for t in s.received.values())
    return sent == received


def rule_flags_only(view: list[CascadeSnapshot]) -> bool:
    """Weakening: every incarnation passive (and a root seen); tallies ignored."""
    return all(s.active == 0 for s in view) and sum(s.roots.count for s in view) >= 1


def rule_no_root(view: list[CascadeSnapshot]) -> bool:
    """Weakening: the real rule without condition 3."""
    _, holders = evaluate(view)
    return not [h for h in holders if h["kind"] != "root_not_reported"]


def rule_counts(view: list[CascadeSnapshot]) -> bool:
    """Weakening: per-*edge* counts (no ids), the count form the design calls
    sound without restarts (Mattern). Edge p->q: what p's incarnations sent to
    q's authority against what the incarnations listing that authority
    received from p."""
    if any(s.active > 0 for s in view) or sum(s.roots.count for s in view) < 1:
        return False
    edges: dict[tuple[str, str], int] = {}
    for s in view:
        for dest, t in s.sent.items():
            edges[(s.hop, dest)] = edges.get((s.hop, dest), 0) + t.count
        for alias in s.aliases:
            for src, t in s.received.items():
                edges[(src, alias)] = edges.get((src, alias), 0) - t.count
    return all(v == 0 for v in edges.values())


def rule_sender_counts(view: list[CascadeSnapshot]) -> bool:
    """Per-*sender* counts (the real detector's aggregation, without ids)."""
    if any(s.active > 0 for s in view) or sum(s.roots.count for s in view) < 1:
        return False
    sent: dict[str, int] = {}
    got: dict[str, int] = {}
    for s in view:
        sent[s.hop] = sent.get(s.hop, 0) + s.sent_total().count
        for src, t in s.received.items():
            got[src] = got.get(src, 0) + t.count
    return all(sent.get(h, 0) == got.get(h, 0) for h in set(sent) | set(got))


def rule_totals_ids(view: list[CascadeSnapshot]) -> bool:
    """Global Tally (count + id sum) totals: equivalent to per sender with ids."""
    if any(s.active > 0 for s in view) or sum(s.roots.count for s in view) < 1:
        return False
    sent = EMPTY
    got = EMPTY
    for s in view:
        sent = sent.add(s.sent_total())
        for t in s.received.values():
            got = got.add(t)
    return sent == got


class RuleDetector(Detector):
    """The real Detector (same ingest, same seq handling, settled is sticky)
    with the settle rule swapped for ``rule``."""

    def __init__(self, rule: Rule, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rule = rule

    def _decide(self, cascade, now):  # type: ignore[override]
        if cascade.settled:
            return
        if self.rule(list(cascade.view.values())):
            cascade.settled_at = now
            self.settled_total += 1


# --------------------------------------------------------------------------
# verdicts (the real one and the weakened ones), each: (detector, cascade) -> outcome
# --------------------------------------------------------------------------
def outcome_from_active_snapshots(detector: "VerdictDetector", cascade) -> str:
    """Weakening: endings read only from snapshots that show the hop active
    ("endings are recorded while work is held"), which misses the ending
    recorded in the same critical section as the last release."""
    snaps = detector.last_active.get(cascade.trace_id, {}).values()
    return verdict(snaps)["outcome"]


def outcome_from_latest_incarnations(detector: "VerdictDetector", cascade) -> str:
    """Weakening: the view compacted to the newest incarnation of each hop (a
    restarted hop's old incarnation dropped), the outcome recomputed from it."""
    newest: dict[str, float] = {}
    for s in cascade.view.values():
        newest[s.hop] = max(newest.get(s.hop, s.at), s.at)
    return verdict([s for s in cascade.view.values() if s.at == newest[s.hop]])["outcome"]


OUTCOME_RULES = {
    "active_snapshots": outcome_from_active_snapshots,
    "latest_incarnations": outcome_from_latest_incarnations,
}


class VerdictDetector(Detector):
    """The real Detector (same rule, same sticky settled flag) with the
    outcome taken from ``outcome_of`` when it settles, and, if ``recompute``,
    again after every later ingest."""

    def __init__(self, outcome_of, recompute: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcome_of = outcome_of
        self.recompute = recompute
        # per cascade, per incarnation: its latest snapshot that showed it active
        self.last_active: dict[str, dict[str, CascadeSnapshot]] = {}

    def _decide(self, cascade, now):  # type: ignore[override]
        for s in cascade.view.values():
            if s.active > 0:
                self.last_active.setdefault(cascade.trace_id, {})[s.incarnation] = s
        was_settled = cascade.settled
        super()._decide(cascade, now)
        if cascade.settled and (not was_settled or self.recompute):
            cascade.outcome = self.outcome_of(self, cascade)


@dataclass(frozen=True)
class Variant:
    name: str
    rule: Rule | None = None  # None: the real Detector, unmodified
    # "detector": the detector's sticky settled flag;
    # "root_completed": settled once the root hop's root task has finished;
    # "registered_roots": evaluate(view) and the view holds every root request
    #                     the client has sent so far (register before sending)
    oracle: str = "detector"
    torn: bool = False  # instrumentation: flag from an older instant than the tallies
    receipt_before_active: bool = False  # instrumentation: two steps
    send_after_passive: bool = False  # instrumentation: send recorded after it left
    same_key_reset: bool = False  # instrumentation: new process, same key, counters reset
    second_root: bool = False  # execution: more root requests on the same trace
    strict: bool = False  # also: never settle when a dead incarnation lost a receipt
    finish: bool = False  # drain, deliver every final snapshot, require settled
    # The exhaustive observer (see MeshSim.observe): how the rule balances the
    # books ("ids" per sender, "counts" per sender, "total_count", "none") and
    # whether it needs a root receipt. None: no observer.
    balance: str | None = "ids"
    needs_root: bool = True
    # endings (the verdict on a settled cascade)
    ending_after_release: bool = False  # instrumentation: the ending recorded in a later step
    torn_endings: bool = False  # instrumentation: endings from an earlier instant than the flag
    outcome_of: str | None = None  # detector: a weakened verdict (OUTCOME_RULES); None: the real one
    recompute_outcome: bool = False  # detector: outcome recomputed on every ingest once settled


REAL = Variant("real", strict=True, finish=True)
# per-edge counts without counter resets: sound (Mattern), a control
EDGE_COUNTS = Variant("edge_counts", rule=rule_counts, balance="edge_counts", finish=True)
# per-sender counts: the detector's aggregation without ids: NOT sound
SENDER_COUNTS = Variant("sender_counts", rule=rule_sender_counts, balance="counts")

REAL_MULTI_ROOT_REGISTERED = Variant(
    "real, several roots, settled w.r.t. registered roots",
    oracle="registered_roots",
    second_root=True,
    strict=True,
    finish=True,
    balance=None,
)

WEAKENINGS = {
    "per-sender counts (no ids)": SENDER_COUNTS,
    "totals instead of per-sender": Variant("totals", rule=rule_totals, balance="total_count"),
    "no root condition": Variant("no_root", rule=rule_no_root, needs_root=False),
    "active flags only": Variant("flags_only", rule=rule_flags_only, balance="none"),
    "torn snapshot": Variant("torn", torn=True),
    "receipt recorded before becoming active": Variant("receipt_first", receipt_before_active=True),
    "send recorded after the hop went passive": Variant("send_late", send_after_passive=True),
    "counts, restart resets counters under the same key": Variant(
        "counts_reset", rule=rule_counts, same_key_reset=True, balance="edge_counts"
    ),
    "root task COMPLETED": Variant("root_completed", oracle="root_completed", balance=None),
    "second root request into a settled cascade": Variant(
        "second_root", second_root=True, balance=None
    ),
}

# weakenings of the verdict: the generator must find a settled cascade whose
# outcome is better than the truth (an early ``completed``)
OUTCOME_WEAKENINGS = {
    "ending recorded after the release": Variant("ending_late", ending_after_release=True),
    "endings from an earlier instant than the flag (torn snapshot)": Variant(
        "torn_endings", torn_endings=True, balance=None
    ),
    "endings read only from snapshots showing the hop active": Variant(
        "active_only_endings", outcome_of="active_snapshots", balance=None
    ),
    "outcome recomputed without a restarted hop's old incarnation": Variant(
        "latest_incarnations", outcome_of="latest_incarnations", recompute_outcome=True, balance=None
    ),
}


# --------------------------------------------------------------------------
# execution state
# --------------------------------------------------------------------------
@dataclass
class Unit:
    uid: int
    kind: str  # root | task | bg | cancel | call | push
    counted: bool = True  # included in the reported ``active``
    cancelled: bool = False
    blocked_on: str | None = None  # a task waiting for its blocking call
    msg: str | None = None  # the message of a call unit
    doomed: str | None = None  # destroyed while pending: released with this loss at the next snapshot


@dataclass
class Message:
    mid: str
    kind: str  # root | msg | cancel
    src_hop: str | None
    src: "Incarnation | None"
    dst_hop: str
    blocking: bool
    state: str
    call_uid: int | None = None


@dataclass
class Incarnation:
    hop: str
    iid: str
    key: str  # what its snapshots report as ``incarnation``
    alive: bool = True
    units: dict[int, Unit] = field(default_factory=dict)
    roots: Tally = EMPTY
    sent: dict[str, Tally] = field(default_factory=dict)
    received: dict[str, Tally] = field(default_factory=dict)
    seq: int = 0
    history: list[int] = field(default_factory=lambda: [0])  # reported active over time
    passive_since: float | None = None
    snapshots: list[CascadeSnapshot] = field(default_factory=list)
    deferred: list[Message] = field(default_factory=list)  # send_after_passive only
    died_active: bool = False
    died_unreported: bool = False
    # how its work ended, as recorded (cumulative, like the tracker's)
    failed: int = 0
    lost: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)
    endings_history: list[tuple] = field(default_factory=lambda: [(0, 0, (), ())])  # torn_endings only
    late_endings: list[dict[str, Any]] = field(default_factory=list)  # ending_after_release only

    def reported_active(self) -> int:
        return sum(1 for u in self.units.values() if u.counted)

    def endings(self) -> tuple:
        return (self.failed, self.lost, tuple(self.failures), tuple(self.losses))

    def tallies(self) -> tuple:
        return (self.roots, dict(self.sent), dict(self.received))

    def name(self) -> str:
        return f"{self.hop}#{self.iid[:4]}"


@dataclass
class Features:
    restart: bool
    loss: bool
    push: bool
    cancel: bool
    report_on_passive: bool  # the instrumentation reports whenever an incarnation goes passive
    ship_at_once: bool  # ... and the report reaches the detector straight away
    spawn: bool  # background work
    slow_sends: bool  # sends may wait before leaving (and may be refused: withdrawn)
    random_snapshots: bool  # snapshots at random times, delivered at random
    handlers: bool  # a delivery may run a short handler at once: a few sends, maybe finish
    endings: bool = False  # units may end failed or lost; a restart may drain first


@dataclass
class Outcome:
    variant: str
    hops: int
    features: Features
    log: list[str]
    violation: str | None
    settled: bool  # the verdict at the end of the run
    terminated: bool  # the ground truth at the end of the run
    restarts: int
    messages: int
    snapshots: int
    ingests: int
    liveness_checked: bool
    outcome: str | None = None  # the detector's outcome at the end of the run
    truth: str = COMPLETED  # how the execution's work ended, as the simulator knows it
    bad_outcome: tuple[str, str] | None = None  # (outcome, truth) when the violation is about the verdict
    improved: bool = False  # the violation is an outcome that got better after the settle

    def __repr__(self) -> str:
        head = f"<{self.variant}: {self.violation or 'no violation'}; {self.hops} hops, {self.features}>"
        return head + "\n  " + "\n  ".join(self.log)


class MeshSim:
    def __init__(self, variant: Variant, n_hops: int, features: Features, seed: int, draw) -> None:
        self.variant = variant
        self.features = features
        self.draw = draw
        self.rng = random.Random(seed)
        self.hops = [f"H{i}" for i in range(n_hops)]
        self.clock = 0
        self.uid = 0
        self.incs: list[Incarnation] = []
        self.went_passive: list[Incarnation] = []
        self.current: dict[str, Incarnation] = {}
        self.hop_seq: dict[str, int] = {h: 0 for h in self.hops}
        for h in self.hops:
            self._start(h)
        self.messages: list[Message] = []
        self.produced: list[CascadeSnapshot] = []
        self.log: list[str] = []
        self.violation: str | None = None
        self.roots_sent = 0
        self.root_finished = False
        self.latched = False  # the execution has terminated (since the last root was sent)
        self.restarts = 0
        self.ingests = 0
        self.liveness_checked = False
        self.happened: list[tuple[str, str]] = []  # every ending of the execution: (hop, kind)
        self.outcome_seen: str | None = None  # the worst outcome the detector has given so far
        self.bad_outcome: tuple[str, str] | None = None
        self.improved = False
        kwargs = dict(clock=lambda: float(self.clock), stuck_after=1e9, retention=1e9)
        if variant.rule is not None:
            self.detector: Detector = RuleDetector(variant.rule, **kwargs)
        elif variant.outcome_of is not None:
            self.detector = VerdictDetector(
                OUTCOME_RULES[variant.outcome_of], variant.recompute_outcome, **kwargs
            )
        else:
            self.detector = Detector(**kwargs)
        # the exhaustive observer: per snapshot key, every distinct state a
        # snapshot could have shown with active == 0, and when it first existed
        self.cands: dict[str, list[Candidate]] = {}
        self.cand_seen: set = set()
        self.observer_truncated = 0
        self.observer_searches = 0
        self._send_root()
        self.observe("start")

    # ---- helpers -------------------------------------------------------------
    def _new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _start(self, hop: str) -> Incarnation:
        iid = self._new_id()
        inc = Incarnation(hop, iid, key=hop if self.variant.same_key_reset else iid)
        inc.passive_since = float(self.clock)
        self.incs.append(inc)
        self.current[hop] = inc
        return inc

    def _add_unit(self, inc: Incarnation, kind: str, *, counted: bool = True, msg: str | None = None) -> Unit:
        self.uid += 1
        unit = Unit(self.uid, kind, counted=counted, msg=msg)
        inc.units[unit.uid] = unit
        self._note(inc)
        return unit

    def _remove_unit(self, inc: Incarnation, unit: Unit, ending: str | None = None, *, now: bool = True) -> None:
        """Release ``unit``; a bad ``ending`` is recorded in the same step (or,
        weakened, in a later one). ``now``: the ending happens now (not
        earlier, as for a task destroyed while pending)."""
        if ending is not None:
            if now:
                self.happened.append((inc.hop, ending))
            item = {"kind": ending, "task_id": f"u{unit.uid}", "detail": unit.kind}
            if self.variant.ending_after_release:
                inc.late_endings.append(item)
            else:
                self._record_ending(inc, item)
        del inc.units[unit.uid]
        self._note(inc)

    def _record_ending(self, inc: Incarnation, item: dict[str, Any]) -> None:
        if item["kind"] in names.LOSS_KINDS:
            inc.lost += 1
            inc.losses.append(item)
        else:
            inc.failed += 1
            inc.failures.append(item)
        inc.endings_history.append(inc.endings())
        self.log.append(f"{inc.name()} records {item['kind']} ({item.get('detail')})")

    def _draw_ending(self, kind: str) -> str | None:
        """How a unit of ``kind`` ends: None (completed) or a bad ending."""
        if not self.features.endings or not self.draw(st.booleans()):
            return None
        return self.draw(st.sampled_from(BAD_ENDINGS[kind]))

    def _collect(self, inc: Incarnation) -> None:
        """Units destroyed while pending are released, with their loss, when
        the incarnation next takes a snapshot (the tracker's ``release_later``)."""
        for unit in [u for u in inc.units.values() if u.doomed]:
            self.log.append(f"{inc.name()} releases u{unit.uid}, destroyed while pending")
            self._remove_unit(inc, unit, unit.doomed, now=False)

    def _note(self, inc: Incarnation) -> None:
        active = inc.reported_active()
        if active != inc.history[-1]:
            inc.history.append(active)
            if active == 0:
                inc.passive_since = float(self.clock)
                self.went_passive.append(inc)

    def _pick(self, items: list):
        if len(items) == 1:
            return items[0]
        return items[self.draw(st.integers(0, len(items) - 1))]

    def _live(self) -> list[Incarnation]:
        return [inc for inc in self.incs if inc.alive]

    def _send_root(self) -> None:
        self.roots_sent += 1
        self.latched = False
        m = Message(self._new_id(), "root", None, None, ROOT_HOP, False, FLIGHT)
        self.messages.append(m)
        self.log.append(f"client sends root request #{self.roots_sent} to {ROOT_HOP}")

    # ---- ground truth --------------------------------------------------------
    def terminated_now(self) -> bool:
        if any(m.state in (PENDING, FLIGHT, LOST) for m in self.messages):
            return False
        if any(inc.units for inc in self.incs if inc.alive):
            return False
        if any(inc.died_active for inc in self.incs):
            return False
        return True

    def truth(self) -> str:
        """How the execution's work has ended so far: lost when a unit was lost
        (an ending, work that died with a killed incarnation, a message lost on
        the wire), else failed when the agents reported a failure."""
        if (
            any(kind in names.LOSS_KINDS for _hop, kind in self.happened)
            or any(inc.died_active for inc in self.incs)
            or any(m.state == LOST for m in self.messages)
        ):
            return LOST_WORK
        return FAILED if self.happened else COMPLETED

    def detector_outcome(self) -> str | None:
        if self.variant.oracle == "root_completed":
            return None
        cascade = self.detector.cascades.get(TRACE_ID)
        return cascade.outcome if cascade is not None else None

    def strict_ok(self) -> bool:
        return not any(inc.died_unreported for inc in self.incs)

    def why_not_terminated(self) -> str:
        reasons = []
        for m in self.messages:
            if m.state in (PENDING, FLIGHT, LOST):
                reasons.append(f"{m.kind} {m.src_hop or 'client'}->{m.dst_hop} {m.state}")
        for inc in self.incs:
            if inc.alive and inc.units:
                kinds = ",".join(sorted(u.kind for u in inc.units.values()))
                reasons.append(f"{inc.name()} holds work [{kinds}]")
            if inc.died_active:
                reasons.append(f"{inc.name()} died active")
        return "; ".join(reasons)

    def verdict(self) -> bool:
        oracle = self.variant.oracle
        if oracle == "root_completed":
            return self.root_finished
        cascade = self.detector.cascades.get(TRACE_ID)
        if oracle == "registered_roots":
            if cascade is None:
                return False
            view = list(cascade.view.values())
            return evaluate(view)[0] and sum(s.roots.count for s in view) == self.roots_sent
        return cascade is not None and cascade.settled

    def check(self, where: str) -> None:
        if self.terminated_now():
            self.latched = True
        if self.violation or not self.verdict():
            return
        if not self.latched:
            self.violation = f"early settle after {where}: {self.why_not_terminated()}"
        elif self.variant.strict and not self.strict_ok():
            dead = [i.name() for i in self.incs if i.died_unreported]
            self.violation = f"settled after {where} although {dead} died holding unreported state"
        else:
            self.check_outcome(where)
        if self.violation:
            self.log.append("!! " + self.violation)

    def check_outcome(self, where: str) -> None:
        """Settled: the outcome is never better than the truth, nor worse (it
        names only endings that happened): it is the truth."""
        outcome = self.detector_outcome()
        if outcome is None:  # a weakened settle rule, or an oracle without a verdict
            return
        truth = self.truth()
        if SEVERITY[outcome] < SEVERITY[truth]:
            self.bad_outcome = (outcome, truth)
            self.violation = f"settled {outcome} after {where}, but work {truth}: {self.happened_text()}"
        elif SEVERITY[outcome] > SEVERITY[truth]:
            self.violation = f"settled {outcome} after {where}, worse than the truth ({truth})"

    def happened_text(self) -> str:
        parts = [f"{hop} {kind}" for hop, kind in self.happened]
        parts += [f"{inc.name()} died holding work" for inc in self.incs if inc.died_active]
        parts += [f"{m.src_hop}->{m.dst_hop} lost on the wire" for m in self.messages if m.state == LOST]
        return ", ".join(parts)

    # ---- the exhaustive observer ---------------------------------------------
    # Whatever hypothesis chose, *any* instant of an incarnation could have been
    # snapshotted, and *any* one snapshot per incarnation key (or none) can be
    # the detector's view, by dropping the others. After every step this asks:
    # does some such view satisfy the rule while the execution has not
    # terminated? Only views holding the newest candidate need a search.
    def observe(self, where: str) -> None:
        if self.variant.balance is None or self.violation:
            return
        for inc in self._live():
            if inc.reported_active() != 0 and not self.variant.torn:
                continue
            ident = (inc.key, _norm(inc.tallies()), inc.failed, inc.lost)  # endings only grow
            if ident in self.cand_seen:
                continue
            self.cand_seen.add(ident)
            cand = Candidate(inc, inc.roots, dict(inc.sent), dict(inc.received), self.clock,
                             self._vec(inc), inc.endings())
            found = self._search(cand)
            self.cands.setdefault(inc.key, []).append(cand)
            if found is not None:
                self._observer_violation(found, where)
                return

    def _vec(self, inc: Incarnation) -> tuple:
        how = self.variant.balance
        if how == "none":
            return ()
        if how == "edge_counts":
            out = []
            for p in self.hops:
                for q in self.hops:
                    sent = inc.sent.get(authority(q), EMPTY).count if p == inc.hop else 0
                    got = inc.received.get(p, EMPTY).count if q == inc.hop else 0
                    out.append(sent - got)
            return tuple(out)
        if how == "total_count":
            return (sum(t.count for t in inc.sent.values()) - sum(t.count for t in inc.received.values()),)
        sent = EMPTY
        for t in inc.sent.values():
            sent = sent.add(t)
        out = []
        for hop in self.hops:
            got = inc.received.get(hop, EMPTY)
            mine = sent if hop == inc.hop else EMPTY
            out.append(mine.count - got.count)
            if how == "ids":
                out.append((mine.total - got.total) & MASK64)
        return tuple(out)

    def _add(self, v: tuple, w: tuple) -> tuple:
        if self.variant.balance == "ids":
            return tuple((a + b) & MASK64 if i % 2 else a + b for i, (a, b) in enumerate(zip(v, w)))
        return tuple(a + b for a, b in zip(v, w))

    def _search(self, cand: "Candidate") -> list["Candidate"] | None:
        """A view holding ``cand`` that satisfies the rule while the execution
        has not terminated, or (the real verdict) whose endings make its
        outcome better than the truth; None if there is none."""
        self.observer_searches += 1
        need_root = self.variant.needs_root
        zero = tuple(0 for _ in cand.vec)
        start = self._add(zero, cand.vec)
        # reachable (sum of vectors, has a root, worst ending shown) -> one choice of candidates
        states: dict[tuple, list[Candidate]] = {(start, cand.roots.count > 0, cand.severity()): [cand]}
        for key, cands in self.cands.items():
            if key == cand.inc.key:
                continue
            new = dict(states)  # this key not in the view
            for (v, r, sev), chosen in states.items():
                for c in cands:
                    state = (self._add(v, c.vec), r or c.roots.count > 0, max(sev, c.severity()))
                    if state not in new:
                        new[state] = chosen + [c]
            if len(new) > OBSERVER_LIMIT:
                self.observer_truncated += 1
                new = dict(list(new.items())[:OBSERVER_LIMIT])
            states = new
        early = not self.latched and not self.terminated_now()
        # the verdict on a view is the real one unless the detector's is weakened
        real_verdict = self.variant.outcome_of is None and self.variant.rule is None
        truth = SEVERITY[self.truth()] if real_verdict and not early else 0
        for root in (True, False) if not need_root else (True,):
            for sev in range(3):
                if (zero, root, sev) in states and (early or sev < truth):
                    return states[(zero, root, sev)]
        return None

    def _observer_violation(self, chosen: list["Candidate"], where: str) -> None:
        view = [c.snapshot(i) for i, c in enumerate(chosen)]
        rule = self.variant.rule or rule_real
        assert rule(view), f"observer and rule disagree on {view}"  # the model's own check
        parts = ", ".join(
            f"{c.inc.name()} as at t={c.at} (roots={c.roots.count} sent={_count(c.sent)} recv={_count(c.received)}"
            f" failed={c.endings[0]} lost={c.endings[1]})"
            for c in chosen
        )
        if not self.latched and not self.terminated_now():
            self.violation = (
                f"early settle possible after {where}: a view of {parts} satisfies the rule"
                f" while {self.why_not_terminated()}"
            )
        else:
            outcome, truth = verdict(view)["outcome"], self.truth()
            self.bad_outcome = (outcome, truth)
            self.violation = (
                f"settle {outcome} possible after {where}: a view of {parts} satisfies the rule"
                f" while work {truth}: {self.happened_text()}"
            )
        self.log.append("!! " + self.violation)

    # ---- the step ------------------------------------------------------------
    def actable(self) -> list[tuple[Incarnation, Unit]]:
        return [
            (inc, u)
            for inc in self._live()
            for u in inc.units.values()
            if u.kind in ("root", "task", "bg") and u.counted and u.blocked_on is None and not u.cancelled
            and not u.doomed
        ]

    def finishable(self) -> list[tuple[Incarnation, Unit]]:
        return [
            (inc, u)
            for inc in self._live()
            for u in inc.units.values()
            if u.kind in ("root", "task", "bg", "cancel") and u.counted and u.blocked_on is None
            and not u.doomed
        ]

    def units_of(self, kind: str, pred=lambda inc, u: True) -> list[tuple[Incarnation, Unit]]:
        return [(inc, u) for inc in self._live() for u in inc.units.values() if u.kind == kind and pred(inc, u)]

    def msgs(self, state: str, pred=lambda m: True) -> list[Message]:
        return [m for m in self.messages if m.state == state and pred(m)]

    def _msg(self, mid: str) -> Message:
        return next(m for m in self.messages if m.mid == mid)

    def categories(self) -> list[str]:
        cats = []
        if self.actable():
            cats.append("send")
            if self.features.spawn:
                cats.append("spawn")
            if self.features.push:
                cats.append("push_start")
        if self.msgs(PENDING, lambda m: m.src.alive):
            cats += ["leave", "refuse"]
        if self.msgs(FLIGHT, lambda m: m.kind != "root"):
            cats.append("deliver")
            if self.features.loss:
                cats.append("lose")
        if self.msgs(FLIGHT, lambda m: m.kind == "root"):
            cats.append("deliver_root")
        if self.units_of("call", lambda inc, u: self._msg(u.msg).state != PENDING):
            cats.append("call_end")
        if self.finishable():
            cats.append("finish")
        if self.units_of("push"):
            cats.append("push_end")
        if self.features.restart and self.restarts < MAX_RESTARTS:
            cats.append("restart")
        if any(not u.counted for inc in self._live() for u in inc.units.values()):
            cats.append("activate")
        if any(inc.deferred for inc in self._live()):
            cats.append("record_send")
        if self.variant.ending_after_release and any(inc.late_endings for inc in self._live()):
            cats.append("record_ending")
        if self.features.endings and any(u.doomed for inc in self._live() for u in inc.units.values()):
            cats.append("collect")
        if (
            self.variant.second_root
            and self.roots_sent < MAX_ROOTS
            and not self.msgs(FLIGHT, lambda m: m.kind == "root")
        ):
            cats.append("second_root")
        if self.features.random_snapshots or not self.features.report_on_passive:
            cats.append("snapshot")
            if self.produced:
                cats.append("ingest")
        elif self.produced and not self.features.ship_at_once:
            cats.append("ingest")
        return cats

    def step(self) -> bool:
        """One step; False when nothing is left to do."""
        self.clock += 1
        self.went_passive: list[Incarnation] = []
        cats = self.categories()
        if not cats:
            return False
        cat = self.draw(st.sampled_from(cats))
        getattr(self, "do_" + cat)()
        if self.features.report_on_passive:
            for inc in self.went_passive:
                if inc.alive:
                    self.snapshot(inc)
                    if self.features.ship_at_once:
                        self.ingest(len(self.produced) - 1)
        self.went_passive = []
        self.check(cat)
        self.observe(cat)
        return True

    # ---- execution actions ---------------------------------------------------
    def do_send(self) -> None:
        inc, unit = self._pick(self.actable())
        dest = self._pick(self.hops)
        blocking = self.draw(st.booleans())
        kind = self.draw(st.sampled_from(["msg", "cancel"])) if self.features.cancel else "msg"
        m = self.send(inc, unit, dest, blocking, kind)
        if m.state == PENDING and (not self.features.slow_sends or self.draw(st.booleans())):
            m.state = FLIGHT  # leaves straight away (the usual case)

    def send(self, inc: Incarnation, unit: Unit, dest: str, blocking: bool, kind: str) -> Message:
        mid = self._new_id()
        call = self._add_unit(inc, "call", msg=mid)
        if blocking:
            unit.blocked_on = mid
        m = Message(mid, kind, inc.hop, inc, dest, blocking, PENDING, call.uid)
        self.messages.append(m)
        if self.variant.send_after_passive:
            # weakened: it leaves at once; the instrumentation records it later
            m.state = FLIGHT
            inc.deferred.append(m)
        else:
            inc.sent[authority(dest)] = inc.sent.get(authority(dest), EMPTY).with_id(mid)
        how = "blocking" if blocking else "non-blocking"
        self.log.append(f"{inc.name()} sends {kind} {how} to {dest} ({mid[:6]})")
        return m

    def do_leave(self) -> None:
        m = self._pick(self.msgs(PENDING, lambda m: m.src.alive))
        m.state = FLIGHT
        self.log.append(f"{m.src_hop}->{m.dst_hop} ({m.mid[:6]}) leaves")

    def do_refuse(self) -> None:
        m = self._pick(self.msgs(PENDING, lambda m: m.src.alive))
        self.refuse(m)

    def refuse(self, m: Message) -> None:
        inc = m.src
        m.state = WITHDRAWN
        auth = authority(m.dst_hop)
        inc.sent[auth] = inc.sent[auth].without_id(m.mid)
        self.log.append(f"{m.src_hop}->{m.dst_hop} ({m.mid[:6]}) refused before leaving; id withdrawn")
        self._end_call(inc, inc.units[m.call_uid], names.END_CALL_FAILED)

    def do_lose(self) -> None:
        m = self._pick(self.msgs(FLIGHT, lambda m: m.kind != "root"))
        m.state = LOST
        self.log.append(f"{m.src_hop}->{m.dst_hop} ({m.mid[:6]}) lost on the wire (outcome unknown)")

    def do_deliver(self) -> None:
        m = self._pick(self.msgs(FLIGHT, lambda m: m.kind != "root"))
        unit = self.deliver(m, choose=True)
        call = m.src.units.get(m.call_uid) if m.src.alive else None
        if call is not None and self.draw(st.booleans()):
            self.log.append(f"{m.src.name()} call ({m.mid[:6]}) returns")
            self._end_call(m.src, call, self._draw_ending("call"))  # the response comes straight back
        self._handler(unit)

    def do_deliver_root(self) -> None:
        unit = self.deliver(self._pick(self.msgs(FLIGHT, lambda m: m.kind == "root")), choose=True)
        self._handler(unit)

    def _handler(self, unit: Unit) -> None:
        """A short handler run straight after the receipt (one interleaving
        among many, drawn only when the ``handlers`` feature is on)."""
        if not self.features.handlers or unit.kind == "cancel" or not unit.counted:
            return
        inc = next(i for i in self._live() if unit.uid in i.units)
        for _ in range(self.draw(st.integers(0, 2))):
            m = self.send(inc, unit, self._pick(self.hops), False, "msg")
            if m.state == PENDING:
                m.state = FLIGHT
        if self.draw(st.booleans()):
            self.finish_unit(inc, unit, self._draw_ending(unit.kind))

    def deliver(self, m: Message, choose: bool) -> Unit:
        inc = self.current[m.dst_hop]
        counted = not self.variant.receipt_before_active
        if m.kind == "root":
            inc.roots = inc.roots.with_id(m.mid)
            unit = self._add_unit(inc, "root", counted=counted)
            if self.roots_sent == 1:
                self.first_root_uid = unit.uid
        else:
            inc.received[m.src_hop] = inc.received.get(m.src_hop, EMPTY).with_id(m.mid)
            unit = self._add_unit(inc, "task" if m.kind == "msg" else "cancel", counted=counted)
        m.state = DELIVERED
        what = f"{m.kind} from {m.src_hop or 'client'} ({m.mid[:6]})"
        self.log.append(f"{inc.name()} receives {what}" + ("" if counted else ", not yet active"))
        if m.kind == "cancel":
            targets = [u for u in inc.units.values() if u.kind in ("root", "task", "bg") and not u.cancelled]
            if targets:
                target = self._pick(targets) if choose else targets[0]
                target.cancelled = True  # still work until its producer finishes
                self.log.append(f"{inc.name()} producer u{target.uid} cancelled (still running)")
                # the client's cancel is a failure the agents report, recorded now,
                # while the producer still holds its unit (lifecycle.active_task_cancel)
                self.happened.append((inc.hop, names.END_TASK_CANCELLED))
                self._record_ending(inc, {"kind": names.END_TASK_CANCELLED, "task_id": f"u{target.uid}"})
        return unit

    def do_call_end(self) -> None:
        inc, unit = self._pick(self.units_of("call", lambda inc, u: self._msg(u.msg).state != PENDING))
        self.log.append(f"{inc.name()} call ({unit.msg[:6]}) returns")
        if self._msg(unit.msg).state == LOST:
            # its request never arrived: the caller times out (a transport failure)
            ending = names.END_CALL_FAILED if self.features.endings else None
        else:
            ending = self._draw_ending("call")
        self._end_call(inc, unit, ending)

    def _end_call(self, inc: Incarnation, unit: Unit, ending: str | None = None) -> None:
        for u in inc.units.values():
            if u.blocked_on == unit.msg:
                u.blocked_on = None
        self._remove_unit(inc, unit, ending)

    def do_finish(self) -> None:
        inc, unit = self._pick(self.finishable())
        self.finish_unit(inc, unit, self._draw_ending(unit.kind))

    def finish_unit(self, inc: Incarnation, unit: Unit, ending: str | None = None) -> None:
        if ending == names.END_DESTROYED_PENDING:
            # garbage-collected while pending: lost now; its unit is released
            # (with the loss) at the next snapshot, looking held until then
            unit.doomed = ending
            self.happened.append((inc.hop, ending))
            self.log.append(f"{inc.name()} {unit.kind} u{unit.uid} destroyed while pending")
            return
        self._remove_unit(inc, unit, ending)
        if unit.kind == "root" and getattr(self, "first_root_uid", None) == unit.uid:
            self.root_finished = True
        how = f" {ending}" if ending else ""
        self.log.append(f"{inc.name()} {unit.kind} u{unit.uid} finishes{how} (active={inc.reported_active()})")

    def do_spawn(self) -> None:
        inc, _ = self._pick(self.actable())
        self._add_unit(inc, "bg")
        self.log.append(f"{inc.name()} spawns background work")

    def do_push_start(self) -> None:
        inc, _ = self._pick(self.actable())
        self._add_unit(inc, "push")
        self.log.append(f"{inc.name()} starts a push POST to an uninstrumented webhook")

    def do_push_end(self) -> None:
        inc, unit = self._pick(self.units_of("push"))
        ending = self._draw_ending("push")
        self.log.append(f"{inc.name()} push POST {'fails' if ending else 'completes'}")
        self._remove_unit(inc, unit, ending)

    def do_record_ending(self) -> None:
        inc = self._pick([inc for inc in self._live() if inc.late_endings])
        self._record_ending(inc, inc.late_endings.pop(0))

    def do_collect(self) -> None:
        # the reporter's next pass over an incarnation holding a destroyed task
        self.snapshot(self._pick([inc for inc in self._live() if any(u.doomed for u in inc.units.values())]))

    def do_activate(self) -> None:
        inc, unit = self._pick(
            [(inc, u) for inc in self._live() for u in inc.units.values() if not u.counted]
        )
        unit.counted = True
        self._note(inc)
        self.log.append(f"{inc.name()} becomes active for u{unit.uid}")

    def do_record_send(self) -> None:
        inc = self._pick([inc for inc in self._live() if inc.deferred])
        self.record_send(inc, self._pick(inc.deferred))

    def record_send(self, inc: Incarnation, m: Message) -> None:
        inc.deferred.remove(m)
        auth = authority(m.dst_hop)
        inc.sent[auth] = inc.sent.get(auth, EMPTY).with_id(m.mid)
        self.log.append(f"{inc.name()} records its send to {m.dst_hop} ({m.mid[:6]}) late")

    def do_restart(self) -> None:
        hop = self._pick(self.hops)
        graceful = self.draw(st.booleans())
        drain = graceful and self.features.endings and self.draw(st.booleans())
        old = self.current[hop]
        if drain:
            # the shutdown drain cancels every unit still held: each one lost,
            # recorded as it is released
            self._collect(old)
            for unit in list(old.units.values()):
                self._remove_unit(old, unit, DRAIN_ENDING.get(unit.kind, names.END_CANCELLED_BY_SHUTDOWN))
        if graceful:
            self.snapshot(old)
        old.alive = False
        old.died_active = bool(old.units)
        last = old.snapshots[-1] if old.snapshots else None
        reported = (last.roots, dict(last.sent), dict(last.received)) if last else (EMPTY, {}, {})
        reported_endings = (last.failed, last.lost) if last else (0, 0)
        # also "unreported" when its last report still says active: it went
        # passive and died before saying so (the detector cannot know)
        old.died_unreported = (
            _norm(old.tallies()) != _norm(reported)
            or bool(last and last.active)
            or reported_endings != (old.failed, old.lost)
        )
        self.restarts += 1
        new = self._start(hop)
        self.log.append(
            f"{old.name()} {'drains and exits' if drain else 'exits' if graceful else 'is killed'}"
            f"{' ACTIVE' if old.died_active else ''}"
            f"{' with unreported state' if old.died_unreported else ''}; {new.name()} starts"
        )

    def do_second_root(self) -> None:
        self._send_root()

    # ---- snapshots and delivery to the detector ------------------------------
    def do_snapshot(self) -> None:
        self.snapshot(self._pick(self._live()))

    def snapshot(self, inc: Incarnation, *, torn_ok: bool = True) -> CascadeSnapshot:
        self._collect(inc)
        active = inc.reported_active()
        if self.variant.torn and torn_ok:
            active = self._pick(inc.history)  # the flag read at some earlier instant
        failed, lost, failures, losses = inc.endings()
        if self.variant.torn_endings and torn_ok:
            # the endings read at some earlier instant than the flag
            failed, lost, failures, losses = self._pick(inc.endings_history)
        if self.variant.same_key_reset:
            self.hop_seq[inc.hop] += 1
            seq = self.hop_seq[inc.hop]
        else:
            inc.seq += 1
            seq = inc.seq
        snap = CascadeSnapshot(
            trace_id=TRACE_ID,
            hop=inc.hop,
            incarnation=inc.key,
            seq=seq,
            active=active,
            roots=inc.roots,
            sent=dict(inc.sent),
            received=dict(inc.received),
            aliases=(authority(inc.hop),),
            passive_since=inc.passive_since if active == 0 else None,
            at=float(self.clock),
            failed=failed,
            lost=lost,
            failures=tuple(dict(f) for f in failures),
            losses=tuple(dict(f) for f in losses),
        )
        inc.snapshots.append(snap)
        self.produced.append(snap)
        self.log.append(
            f"snapshot s{len(self.produced) - 1} of {inc.name()} seq={seq} active={active}"
            f" roots={inc.roots.count} sent={sum(t.count for t in inc.sent.values())}"
            f" recv={sum(t.count for t in inc.received.values())}"
            + (f" failed={failed} lost={lost}" if failed or lost else "")
        )
        return snap

    def do_ingest(self) -> None:
        i = self.draw(st.integers(0, len(self.produced) - 1))
        self.ingest(i)

    def ingest(self, i: int) -> None:
        self.ingests += 1
        self.detector.ingest(self.produced[i])
        outcome = self.detector_outcome()
        self.log.append(f"detector ingests s{i} -> verdict {self.verdict()}" + (f", {outcome}" if outcome else ""))
        if outcome is None:
            return
        seen = self.outcome_seen
        if seen is not None and SEVERITY[outcome] < SEVERITY[seen] and not self.violation:
            self.improved = True
            self.bad_outcome = (outcome, self.truth())
            self.violation = f"outcome improved from {seen} to {outcome} after ingesting s{i}"
            self.log.append("!! " + self.violation)
        self.outcome_seen = outcome if seen is None else BY_SEVERITY[max(SEVERITY[seen], SEVERITY[outcome])]

    # ---- the end: drain, deliver final snapshots, require settled ------------
    def drain(self) -> None:
        """Let everything finish without new sends (deterministic)."""
        while True:
            moved = False
            for inc in self._live():
                for m in list(inc.deferred):
                    self.record_send(inc, m)
                    moved = True
                while inc.late_endings:
                    self._record_ending(inc, inc.late_endings.pop(0))
                    moved = True
                if any(u.doomed for u in inc.units.values()):
                    self._collect(inc)
                    moved = True
                for u in inc.units.values():
                    if not u.counted:
                        u.counted = True
                        self._note(inc)
                        moved = True
            for m in self.msgs(PENDING, lambda m: m.src.alive):
                m.state = FLIGHT
                moved = True
            for m in self.msgs(FLIGHT):
                self.deliver(m, choose=False)
                moved = True
            for inc, u in self.units_of("call", lambda inc, u: self._msg(u.msg).state != PENDING):
                self._end_call(inc, u)
                moved = True
            for inc, u in self.units_of("push"):
                self._remove_unit(inc, u)
                moved = True
            for inc, u in self.finishable():
                self.finish_unit(inc, u)
                moved = True
            self.clock += 1
            self.check("drain")
            self.observe("drain")
            if not moved:
                return

    def finish(self) -> None:
        self.log.append("-- drain --")
        self.drain()
        finals = []
        for inc in self.incs:
            if inc.alive:
                self.snapshot(inc, torn_ok=False)
            if inc.snapshots:
                finals.append(self.produced.index(inc.snapshots[-1]))
        order = self.draw(st.permutations(finals))
        stale = self.draw(
            st.lists(
                st.tuples(st.integers(0, len(self.produced) - 1), st.integers(0, len(order))),
                max_size=6,
            )
        )
        plan = list(order)
        for idx, pos in sorted(stale, key=lambda t: -t[1]):
            plan.insert(pos, idx)
        self.log.append("-- deliver final snapshots (with stale ones mixed in) --")
        for i in plan:
            self.clock += 1
            self.ingest(i)
            self.check("final delivery")
            if self.violation:
                return
        if self.terminated_now() and self.strict_ok():
            self.liveness_checked = True
            if not self.verdict():
                cascade = self.detector.cascades.get(TRACE_ID)
                holders = cascade.holders if cascade else "no cascade"
                self.violation = f"not settled after every final snapshot arrived: {holders}"
            else:
                self.check_outcome("every final snapshot arrived")  # the outcome is the truth
            if self.violation:
                self.log.append("!! " + self.violation)

    def outcome(self) -> Outcome:
        return Outcome(
            variant=self.variant.name,
            hops=len(self.hops),
            features=self.features,
            log=self.log,
            violation=self.violation,
            settled=self.verdict(),
            terminated=self.terminated_now(),
            restarts=self.restarts,
            messages=sum(1 for m in self.messages if m.kind != "root"),
            snapshots=len(self.produced),
            ingests=self.ingests,
            liveness_checked=self.liveness_checked,
            outcome=self.detector_outcome(),
            truth=self.truth(),
            bad_outcome=self.bad_outcome,
            improved=self.improved,
        )


@dataclass
class Candidate:
    inc: Incarnation
    roots: Tally
    sent: dict[str, Tally]
    received: dict[str, Tally]
    at: int
    vec: tuple
    endings: tuple = (0, 0, (), ())  # failed, lost, failures, losses

    def severity(self) -> int:
        return severity_of(self.endings[0], self.endings[1])

    def snapshot(self, seq: int) -> CascadeSnapshot:
        failed, lost, failures, losses = self.endings
        return CascadeSnapshot(
            trace_id=TRACE_ID,
            hop=self.inc.hop,
            incarnation=self.inc.key,
            seq=seq + 1,
            active=0,
            roots=self.roots,
            sent=self.sent,
            received=self.received,
            aliases=(authority(self.inc.hop),),
            failed=failed,
            lost=lost,
            failures=failures,
            losses=losses,
        )


def _count(tallies: dict[str, Tally]) -> int:
    return sum(t.count for t in tallies.values())


def _norm(t: tuple) -> tuple:
    roots, sent, received = t
    return (
        roots,
        tuple(sorted((k, v) for k, v in sent.items() if v.count)),
        tuple(sorted((k, v) for k, v in received.items() if v.count)),
    )


@st.composite
def executions(
    draw, variant: Variant, max_steps: int = 60, hops: tuple[int, int] = (2, 6), sim: type = None, **force: bool
) -> Outcome:
    """One execution of a random mesh under ``variant``, checked as it runs.

    ``hops`` bounds the mesh size; ``force`` pins features (e.g. restart=True);
    ``sim``: a MeshSim subclass (test_tier_property.py's sharded tier).
    """
    n_hops = draw(st.integers(*hops))
    # drawn unless pinned (pinning it leaves the other draws as they were)
    endings = force["endings"] if "endings" in force else draw(st.booleans())
    features = Features(
        restart=draw(st.booleans()),
        loss=draw(st.booleans()),
        push=draw(st.booleans()),
        cancel=draw(st.booleans()),
        report_on_passive=draw(st.booleans()),
        ship_at_once=draw(st.booleans()),
        spawn=draw(st.booleans()),
        slow_sends=draw(st.booleans()),
        random_snapshots=draw(st.booleans()),
        handlers=draw(st.booleans()),
        endings=endings,
    )
    for name, value in force.items():
        setattr(features, name, value)
    seed = draw(st.integers(0, 2**32 - 1))
    sim = (sim or MeshSim)(variant, n_hops, features, seed, draw)
    steps = draw(st.integers(1, max_steps))
    for _ in range(steps):
        if not sim.step() or sim.violation:
            break
    if not sim.violation and variant.finish:
        sim.finish()
    return sim.outcome()
