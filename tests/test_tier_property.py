"""The mesh tier under membership changes, by property (the simulator of
test_settlement_property.py, tests/meshsim.py, with its detector replaced by a
tier of shards).

Each snapshot goes to the shard the exporter's ring (a2a_quiescence.ring)
gives the cascade for the membership the exporter currently has; the
simulator already delivers any produced snapshot at any time, any number of
times or never (duplicates, reordering, losses). Added here, as steps drawn
among the execution's own:

- a membership change: a shard joins, or leaves with everything it held (a
  node lost); every shard then marks what it no longer owns as moved;
- the exporter lagging: until it catches up, it routes by the previous
  membership, and what it sends to a shard that left is lost;
- the agents' resend after a change: every live incarnation reports its
  current state again (instrumentation/reporter.py on a new collector id).

The tier is settled when any shard has settled the cascade (the merge rule of
`a2a-quiescence wait --mesh`), with the worst outcome among them. It must never
be early nor better than the truth, and once every final snapshot has arrived
the owner must have settled it. A weakening must be caught: an old owner that
"expires" a moved cascade by declaring it settled.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from a2a_quiescence.collector.settlement import Cascade, Detector, verdict
from a2a_quiescence.ring import Ring
from meshsim import SEVERITY, TRACE_ID, MeshSim, Variant, executions

QUICK = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))
POOL = ("mesh-0.m.ns:4317", "mesh-1.m.ns:4317", "mesh-2.m.ns:4317", "mesh-3.m.ns:4317")
MAX_CHANGES = 4

TIER = Variant("tier", strict=True, finish=True, balance=None)
TIER_EXPIRES_AS_SETTLED = Variant("tier_expire_as_settled", strict=True, balance=None)


class Tier:
    """Shards behind the exporter's ring; looks like one Detector to the simulator."""

    def __init__(self, sim: "TierSim", **kwargs) -> None:
        self.sim = sim
        self.kwargs = kwargs
        self.members = list(POOL[:3])
        self.shards: dict[str, Detector] = {}
        self.routing = Ring(sorted(self.members))  # the exporter's ring (may lag)
        for name in self.members:
            self._start(name)
        self.lost_deliveries = 0

    def _start(self, name: str) -> None:
        self.shards[name] = Detector(**self.kwargs)

    @staticmethod
    def elsewhere(ring: Ring, me: str):
        """The ownership rule a shard's tier gives its detector: the owner, when it is not ``me``."""
        def owner_of(trace_id: str) -> str | None:
            owner = ring.endpoint_for(trace_id)
            return None if owner is None or owner == me else owner
        return owner_of

    def change(self, join: str | None, leave: str | None, lag: bool) -> None:
        before = self.routing
        if leave is not None:
            self.members.remove(leave)
            del self.shards[leave]  # a node lost: whatever it held is gone
        if join is not None:
            self.members.append(join)
            self._start(join)
        ring = Ring(sorted(self.members))
        for name, detector in self.shards.items():
            detector.reassign(self.elsewhere(ring, name))
            if self.sim.variant is TIER_EXPIRES_AS_SETTLED:
                for cascade in detector.cascades.values():
                    if cascade.owner is not None and not cascade.settled:
                        cascade.settled_at = float(self.sim.clock)  # the weakening: "hand off" by settling
                        cascade.outcome = verdict(cascade.view.values())["outcome"]
        self.routing = before if lag else ring

    def catch_up(self) -> None:
        self.routing = Ring(sorted(self.members))

    @property
    def lagging(self) -> bool:
        return self.routing != Ring(sorted(self.members))

    def ingest(self, snap) -> Cascade | None:
        target = self.routing.endpoint_for(snap.trace_id)
        detector = self.shards.get(target) if target else None
        if detector is None:
            self.lost_deliveries += 1  # queued for a shard that left
            return None
        return detector.ingest(snap)

    @property
    def cascades(self) -> dict[str, Cascade]:
        found = [d.cascades[TRACE_ID] for d in self.shards.values() if TRACE_ID in d.cascades]
        settled = [c for c in found if c.settled]
        if settled:
            return {TRACE_ID: max(settled, key=lambda c: SEVERITY[c.outcome] if c.outcome else -1)}
        owner = Ring(sorted(self.members)).endpoint_for(TRACE_ID)
        mine = self.shards[owner].cascades.get(TRACE_ID) if owner in self.shards else None
        chosen = mine or (found[0] if found else None)
        return {TRACE_ID: chosen} if chosen is not None else {}


class TierSim(MeshSim):
    def __init__(self, variant, n_hops, features, seed, draw) -> None:
        super().__init__(variant, n_hops, features, seed, draw)
        self.detector = Tier(self, clock=lambda: float(self.clock), stuck_after=1e9, retention=1e9)  # type: ignore[assignment]
        self.changes = 0

    def categories(self) -> list[str]:
        cats = super().categories()
        if self.changes < MAX_CHANGES:
            cats.append("ring_change")
        if self.detector.lagging:
            cats.append("catch_up")
        if self._live():
            cats.append("resend")
        return cats

    def do_ring_change(self) -> None:
        tier = self.detector
        joinable = [n for n in POOL if n not in tier.members]
        options = ([("join", n) for n in joinable] + [("leave", n) for n in tier.members if len(tier.members) > 1])
        what, name = self._pick(options)
        lag = self.draw(st.booleans())
        tier.change(name if what == "join" else None, name if what == "leave" else None, lag)
        self.changes += 1
        self.log.append(f"ring: {name} {what}s{' (exporter lags)' if lag else ''}; members {sorted(tier.members)}")

    def do_catch_up(self) -> None:
        self.detector.catch_up()
        self.log.append("ring: the exporter catches up")

    def do_resend(self) -> None:
        self.log.append("agents resend what they hold")
        for inc in self._live():
            self.snapshot(inc, torn_ok=False)
            self.ingest(len(self.produced) - 1)

    def finish(self) -> None:
        self.detector.catch_up()
        super().finish()


def tier_executions(variant: Variant, **kw):
    return executions(variant, sim=TierSim, **kw)


@given(tier_executions(TIER))
@settings(max_examples=300, **QUICK)
def test_a_tier_never_settles_early_and_settles_once_final_snapshots_arrive(outcome):
    assert outcome.violation is None, repr(outcome)


@given(tier_executions(TIER, endings=True, restart=True, max_steps=50))
@settings(max_examples=150, **QUICK)
def test_a_tier_outcome_is_never_better_than_the_truth(outcome):
    assert outcome.violation is None, repr(outcome)


def test_membership_changes_really_move_the_cascade():
    """Not vacuous: executions exist where the cascade settles on a shard that
    took it over after its first owner left."""
    first_owner = Ring(sorted(POOL[:3])).endpoint_for(TRACE_ID)

    def moved_and_settled(outcome) -> bool:
        return (outcome.settled and outcome.liveness_checked
                and any(f"{first_owner} leaves" in line for line in outcome.log))

    found = find(tier_executions(TIER), moved_and_settled,
                 settings=settings(max_examples=3000, phases=[Phase.generate], **QUICK))
    assert found.violation is None


def test_an_old_owner_that_settles_what_it_no_longer_owns_is_caught():
    found = find(tier_executions(TIER_EXPIRES_AS_SETTLED), lambda o: o.violation is not None,
                 settings=settings(max_examples=4000, phases=[Phase.generate], **QUICK))
    assert "early settle" in found.violation or "settled" in found.violation
