"""A shard's bookkeeping with a detector and a ring alone (no Collector, no server):
which cascades it owns, which it holds as moved, what it counts as open or stuck,
and how it takes a membership change (ownership at once, the collector id's epoch
at once and again once the change held). The Tier is given the detector as its
``Ownership`` and a base id, as the collector wires them."""

from __future__ import annotations

import random
from pathlib import Path

from a2a_quiescence import names
from a2a_quiescence.collector.config import Config
from a2a_quiescence.collector.settlement import Detector
from a2a_quiescence.collector.tier import Tier
from a2a_quiescence.shards import Membership, ShardSpec
from a2a_quiescence.wire import CascadeSnapshot, Tally

ME = "s0:4317"
TWO = "http://s0:9464\nhttp://s1:9464\n"
THREE = TWO + "http://s2:9464\n"


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def trace_ids(n: int, seed: int = 3) -> list[str]:
    rnd = random.Random(seed)
    return ["%032x" % rnd.getrandbits(128) for _ in range(n)]


def active(trace_id: str, seq: int = 1, work: int = 1) -> CascadeSnapshot:
    return CascadeSnapshot(trace_id=trace_id, hop="A", incarnation="i1", seq=seq, active=work,
                           roots=Tally().with_id("root-" + trace_id))


def settled(trace_id: str) -> CascadeSnapshot:
    return CascadeSnapshot(trace_id=trace_id, hop="A", incarnation="i1", seq=1, active=0,
                           roots=Tally().with_id("root-" + trace_id))


def shard(tmp_path: Path, members: str, me: str = ME, **config) -> tuple[Tier, Detector, Clock, Path]:
    """A shard's detector and tier over a shard-set file (rewritten to change the membership)."""
    ring = tmp_path / "shards"
    ring.write_text(members)
    clock = Clock()
    detector = Detector(stuck_after=5.0, retention=60.0, clock=clock)
    tier = Tier(Config(shards=f"@{ring}", shard_name=me, **config), base_id="base", ownership=detector)
    return tier, detector, clock, ring


def ring_of(members: str) -> Membership:
    return ShardSpec(members.replace("\n", ",").strip(",")).resolve()


def owned_by_me(membership: Membership, ids: list[str]) -> set[str]:
    return {t for t in ids if membership.owner(t).endpoint == ME}


def test_a_shard_owns_what_the_ring_gives_it_and_holds_the_rest_as_moved(tmp_path) -> None:
    tier, detector, _clock, _ring = shard(tmp_path, TWO)
    ids = trace_ids(40)
    mine = owned_by_me(ring_of(TWO), ids)
    assert 0 < len(mine) < len(ids)  # the ring splits them: both kinds are checked below
    for t in ids:
        detector.ingest(active(t))
    for t in ids:
        cascade = detector.get(t)
        assert cascade is not None
        if t in mine:
            assert cascade.owner is None and tier.owner_elsewhere(t) is None
            assert detector.status(cascade) == names.STATUS_OPEN
        else:
            assert cascade.owner == "s1:4317" == tier.owner_elsewhere(t)
            assert detector.status(cascade) == names.STATUS_MOVED
    assert detector.counts() == (len(mine), 0)
    assert detector.moved_count() == len(ids) - len(mine)


def test_only_owned_cascades_go_stuck(tmp_path) -> None:
    _tier, detector, clock, _ring = shard(tmp_path, TWO)
    ids = trace_ids(30)
    mine = owned_by_me(ring_of(TWO), ids)
    for t in ids:
        detector.ingest(active(t))
    clock.now += 4.9
    assert detector.counts() == (len(mine), 0)  # must not fire yet: below stuck_after
    clock.now += 0.2
    assert detector.counts() == (len(mine), len(mine))  # fires: every owned one, no moved one
    stuck = {t for t in ids if detector.status(detector.get(t)) == names.STATUS_STUCK}
    assert stuck == mine


def test_a_membership_change_is_adopted_by_the_bookkeeping_both_ways(tmp_path) -> None:
    tier, detector, clock, ring = shard(tmp_path, TWO)
    ids = trace_ids(60)
    for t in ids:
        detector.ingest(active(t))
    before = owned_by_me(ring_of(TWO), ids)
    after = owned_by_me(ring_of(THREE), ids)
    assert after < before  # a third shard takes some of this shard's cascades, gives it none

    ring.write_text(THREE)
    tier.apply(tier.spec.resolve(), now=100.0)
    assert {t for t in ids if detector.get(t).owner is None} == after
    assert detector.moved_count() == len(ids) - len(after)
    assert detector.counts() == (len(after), 0)
    assert tier.ring_seen() == (3, 1)

    ring.write_text("http://s0:9464\n")  # alone: every cascade held here is its own again
    tier.apply(tier.spec.resolve(), now=200.0)
    assert detector.moved_count() == 0 and detector.counts() == (len(ids), 0)
    assert tier.ring_seen() == (1, 2)
    # a cascade first seen now is owned by the current ring too
    (late,) = trace_ids(1, seed=99)
    detector.ingest(active(late))
    assert detector.get(late).owner is None


def test_a_membership_change_changes_the_collector_id_at_once_and_once_it_held(tmp_path) -> None:
    tier, _detector, _clock, ring = shard(tmp_path, TWO, ring_settle=10.0)
    first = tier.collector_id()
    assert first == f"base.{ring_of(TWO).epoch}"
    tier.apply(tier.spec.resolve(), now=1.0)
    assert tier.collector_id() == first  # an unchanged membership: no resend asked
    ring.write_text(THREE)
    tier.apply(tier.spec.resolve(), now=50.0)
    at_change = tier.collector_id()
    assert at_change == f"base.{ring_of(THREE).epoch}"
    tier.apply(tier.spec.resolve(), now=59.9)
    assert tier.collector_id() == at_change  # must not: the change has not held for --ring-settle
    tier.apply(tier.spec.resolve(), now=60.0)
    assert tier.collector_id() == f"base.{ring_of(THREE).epoch}s"  # fires: it held


def test_a_settled_cascade_stays_settled_when_the_ring_gives_it_away(tmp_path) -> None:
    tier, detector, _clock, ring = shard(tmp_path, "http://s0:9464\n")
    ids = trace_ids(20)
    for t in ids:
        detector.ingest(settled(t))
    ring.write_text(TWO)
    tier.apply(tier.spec.resolve(), now=10.0)
    given_away = [t for t in ids if detector.get(t).owner is not None]
    assert given_away  # the ring now gives some to s1
    assert all(detector.status(detector.get(t)) == names.STATUS_SETTLED for t in ids)
    assert detector.moved_count() == 0 and detector.counts() == (0, 0)


def test_moved_cascades_unchanged_for_the_retention_are_forgotten_owned_ones_are_not(tmp_path) -> None:
    _tier, detector, clock, _ring = shard(tmp_path, TWO)
    ids = trace_ids(30)
    mine = owned_by_me(ring_of(TWO), ids)
    moved = [t for t in ids if t not in mine]
    for t in ids:
        detector.ingest(active(t))
    clock.now += 30
    detector.ingest(active(moved[0], seq=2))  # a resend saying nothing new is no progress
    detector.ingest(active(moved[0], seq=3, work=2))  # progress: its retention starts again
    clock.now += 30
    assert detector.expire() == len(moved) - 1
    assert {c.trace_id for c in detector.held()} == mine | {moved[0]}
    assert detector.expired_moved == len(moved) - 1


def test_a_shard_outside_the_shard_set_owns_nothing(tmp_path) -> None:
    _tier, detector, _clock, _ring = shard(tmp_path, TWO, me="s9:4317")
    ids = trace_ids(10)
    for t in ids:
        detector.ingest(active(t))
    assert detector.counts() == (0, 0) and detector.moved_count() == len(ids)


def test_before_the_shard_set_is_read_a_shard_counts_every_cascade_as_its_own() -> None:
    """A shard whose shard set does not resolve yet starts with an empty ring: nothing
    is moved until it reads one (what it counts is then corrected at once)."""
    detector = Detector(stuck_after=5.0, retention=60.0, clock=Clock())
    tier = Tier(Config(shards="dns+http://no-shards-yet.invalid:9464", shard_name=ME), base_id="base",
                ownership=detector)
    ids = trace_ids(5)
    for t in ids:
        detector.ingest(active(t))
    assert tier.ring_seen() == (0, 0)
    assert detector.counts() == (5, 0) and detector.moved_count() == 0
