"""A shard's bookkeeping, in process with a fake clock: which cascades it owns,
what it counts as open or stuck, how it judges a hop it only knows from cascade
snapshots, and how answers from several shards are merged."""

from __future__ import annotations

from typing import Callable

from a2a_quiescence import names
from a2a_quiescence.collector.config import Config
from a2a_quiescence.collector.settlement import Detector
from a2a_quiescence.collector.state import MeshState
from a2a_quiescence.collector.tier import Tier, merge_mesh
from a2a_quiescence.shards import Membership, Shard
from a2a_quiescence.wait import describe_holders, merge_window
from a2a_quiescence.wire import CascadeSnapshot, Tally

A, B = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elsewhere(owners: dict[str, str], me: str = "s0") -> Callable[[str], str | None]:
    """The ownership rule a shard's tier gives its detector: the owner, when it is not ``me``."""
    return lambda trace_id: None if owners.get(trace_id) in (None, me) else owners[trace_id]


def shard_state(owners: dict[str, str], me: str = "s0") -> tuple[Detector, MeshState, Clock]:
    clock = Clock()
    detector = Detector(stuck_after=5.0, retention=60.0, clock=clock, owner_of=elsewhere(owners, me))
    state = MeshState(detector=detector, agent_timeout=10.0, clock=clock, shard=True)
    return detector, state, clock


def active(trace_id: str, inc: str = "i1", seq: int = 1, **extra) -> CascadeSnapshot:
    return CascadeSnapshot(trace_id=trace_id, hop="A", incarnation=inc, seq=seq, active=1,
                           roots=Tally().with_id("root"), **extra)


def test_only_owned_cascades_count_as_open_or_stuck() -> None:
    detector, _state, clock = shard_state({A: "s0", B: "s1"})
    detector.ingest(active(A))
    detector.ingest(active(B))
    assert detector.status(detector.cascades[B]) == names.STATUS_MOVED
    assert detector.counts() == (1, 0) and detector.moved_count() == 1
    clock.now += 6  # past stuck_after, no progress on either
    assert detector.counts() == (1, 1)  # fires: the owned one is stuck
    assert detector.status(detector.cascades[B]) == names.STATUS_MOVED  # must not: the moved one is not
    # the ring changes back: B is ours again, and stuck
    assert detector.reassign(elsewhere({A: "s0", B: "s0"})) == 0
    assert detector.counts() == (2, 2)


def test_moved_open_cascades_are_forgotten_after_the_retention_owned_ones_are_not() -> None:
    detector, _state, clock = shard_state({A: "s0", B: "s1"})
    detector.ingest(active(A))
    detector.ingest(active(B))
    clock.now += 61
    assert detector.expire() == 1
    assert set(detector.cascades) == {A}
    assert detector.expired_moved == 1


def test_a_settled_cascade_stays_settled_when_it_moves() -> None:
    detector, _state, _clock = shard_state({A: "s0"})
    done = CascadeSnapshot(trace_id=A, hop="A", incarnation="i1", seq=1, active=0, roots=Tally().with_id("r"))
    detector.ingest(done)
    detector.reassign(elsewhere({A: "s1"}))
    assert detector.status(detector.cascades[A]) == names.STATUS_SETTLED


def test_a_hop_known_only_from_cascade_snapshots_is_judged_by_its_lease() -> None:
    detector, state, clock = shard_state({A: "s0"})
    detector.ingest(active(A))
    cascade = detector.cascades[A]
    assert state.incarnation_state("A", "i1", cascade) == "alive"
    clock.now += 9
    detector.ingest(active(A, seq=2))  # the heartbeat's resend renews the lease
    clock.now += 9
    assert state.incarnation_state("A", "i1", cascade) == "alive"  # must not fire
    clock.now += 2
    assert state.incarnation_state("A", "i1", cascade) == "lost"  # fires: silent past the agent timeout
    detector.ingest(active(A, seq=3, shutdown=True))
    assert state.incarnation_state("A", "i1", cascade) == "shut_down"


def test_a_shard_ignores_hop_snapshots() -> None:
    _detector, state, _clock = shard_state({})
    state.ingest_hop("A", {"v": 2, "incarnation": "i1", "seq": 1, "producers_in_flight": 3})
    assert state.agents == {} and state.snapshots["hop_ignored"] == 1


# --- merging the shards' answers ---------------------------------------------------------------
MEMBERS = Membership((Shard("s0:4317", "http://s0"), Shard("s1:4317", "http://s1")))


def window_item(trace_id: str, status: str, **extra) -> dict:
    return {"trace_id": trace_id, "status": status, "started_at": 1.0, **extra}


def test_settled_on_any_shard_is_settled_with_the_worse_outcome() -> None:
    merged = merge_window(MEMBERS, [
        ("http://s0", {"cascades": [window_item(A, "settled", outcome="completed")]}),
        ("http://s1", {"cascades": [window_item(A, "settled", outcome="lost")]}),
    ], 0, 1)
    assert merged["settled"] and merged["outcome"] == "lost" and merged["open"] == 0


def test_a_moved_cascade_its_owner_has_not_reported_holds() -> None:
    owner = MEMBERS.owner(A)
    other = next(s for s in MEMBERS.shards if s != owner)
    merged = merge_window(MEMBERS, [(other.url, {"cascades": [window_item(A, "moved", holders=[])]}),
                                    (owner.url, {"cascades": []})], 0, 1)
    assert not merged["settled"] and merged["open"] == 1
    item = merged["cascades"][0]
    assert item["owner"] == owner.endpoint and item["owner_reported"] is False
    assert "has not reported it yet" in describe_holders(item)
    # once the owner reports it, the owner's view says what holds it
    merged = merge_window(MEMBERS, [(other.url, {"cascades": [window_item(A, "moved")]}),
                                    (owner.url, {"cascades": [window_item(A, "open", holders=[{"kind": "x"}])]})], 0, 1)
    assert merged["cascades"][0]["shard"] == owner.url and merged["cascades"][0]["status"] == "open"


def test_mesh_views_are_summed_and_an_unreachable_shard_is_not_quiet() -> None:
    view = {"open": 1, "stuck": 0, "awaiting_input": 0, "moved": 2, "settled_total": 3,
            "settled_by_outcome": {"completed": 3}, "cascades": {"open": [{"trace_id": A}], "recently_settled": []},
            "edges": [{"from": "A", "to": "B", "messages": 2}]}
    merged = merge_mesh([("s0", view), ("s1", view)], [{"reachable": True}, {"reachable": True}])
    assert (merged["open"], merged["moved"], merged["settled_total"]) == (2, 4, 6)
    assert merged["edges"] == [{"from": "A", "to": "B", "messages": 4}]
    assert not merged["quiet"]
    quiet = {**view, "open": 0, "cascades": {}}
    assert merge_mesh([("s0", quiet)], [{"reachable": True}])["quiet"]
    assert not merge_mesh([("s0", quiet)], [{"reachable": True}, {"reachable": False}])["quiet"]


# --- a pod sidecar's epoch ------------------------------------------------------------------------
def test_a_sidecar_tells_agents_to_resend_at_a_change_and_again_once_it_held(tmp_path) -> None:
    ring = tmp_path / "shards"
    ring.write_text("http://s0:9464\n")
    tier = Tier(Config(shards=f"@{ring}", ring_settle=15.0), base_id="base")
    first = tier.collector_id()
    assert first.startswith("base.")
    tier.apply(tier.spec.resolve(), now=50.0)
    assert tier.collector_id() == first  # an unchanged membership never asks for a resend
    ring.write_text("http://s0:9464\nhttp://s1:9464\n")
    tier.apply(tier.spec.resolve(), now=100.0)
    at_change = tier.collector_id()
    assert at_change != first and tier.ring_seen()[1] == 1  # at once: the exporter may route by it
    tier.apply(tier.spec.resolve(), now=114.0)
    assert tier.collector_id() == at_change  # not again before the membership held for --ring-settle
    tier.apply(tier.spec.resolve(), now=115.0)
    held = tier.collector_id()
    assert held not in (first, at_change)  # again: for an exporter that saw it later than this sidecar
    tier.apply(tier.spec.resolve(), now=200.0)
    assert tier.collector_id() == held  # and never a third time
    assert tier.describe()["stable_for"] is not None


def test_a_shard_set_whose_name_does_not_resolve_yet_starts_empty() -> None:
    """A pod sidecar may start before the shards have addresses: it must run, not crash-loop."""
    tier = Tier(Config(shards="dns+http://no-shards-yet.invalid:9464"), base_id="base")
    assert tier.membership is not None and tier.membership.shards == ()
    assert tier.ring_seen()[0] == 0


def test_wait_refuses_a_bad_shard_set_and_reports_one_it_cannot_resolve(capsys) -> None:
    from a2a_quiescence.cli import main

    assert main(["wait", A, "--shards", "ftp://nowhere"]) == 2
    assert "--shards" in capsys.readouterr().err
    assert main(["wait", A, "--shards", "dns+http://no-shards.invalid:9464", "--timeout", "1"]) == 2
    assert "no-shards.invalid" in capsys.readouterr().err


def test_a_cascade_resent_long_after_it_ended_gives_no_detection_latency() -> None:
    detector, _state, clock = shard_state({A: "s0", B: "s0"})
    root = Tally().with_id("r")
    ran = CascadeSnapshot(trace_id=A, hop="A", incarnation="i1", seq=1, active=0, roots=root,
                          passive_since=clock.now - 0.01)
    detector.ingest(ran)
    assert detector.cascades[A].detection_latency is not None  # seen while it ran (its report came late)
    resent = CascadeSnapshot(trace_id=B, hop="A", incarnation="i1", seq=2, active=0, roots=root,
                             passive_since=clock.now - 20)
    detector.ingest(resent)
    assert detector.cascades[B].settled and detector.cascades[B].detection_latency is None
