"""The wire format module: what the tracker encodes, the collector decodes, and
the schema versions it accepts."""

from __future__ import annotations

import uuid

import pytest

from a2a_quiescence import names
from a2a_quiescence.instrumentation.tracker import HopTracker
from a2a_quiescence.wire import EMPTY, CascadeSnapshot, HopSnapshot, Tally, check_version, id_hash

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_tracker_snapshot_decodes_to_what_it_recorded() -> None:
    tracker = HopTracker()
    work = tracker.receive(TRACE, None, "root-1", "a:80")
    tracker.send(work, "b:80", "m-1")
    tracker.record_ending(TRACE, {"kind": names.END_PUSH_FAILED, "task_id": "t-1", "detail": "push to w:80"})
    tracker.release(work)
    hop, cascades = tracker.take_snapshots()
    [(trace_id, body)] = cascades
    snap = CascadeSnapshot.from_json(trace_id, "A", body)
    assert (snap.active, snap.roots, snap.sent, snap.aliases) == (0, EMPTY.with_id("root-1"), {"b:80": EMPTY.with_id("m-1")}, ("a:80",))
    assert (snap.lost, snap.failed) == (1, 0) and snap.losses[0]["kind"] == names.END_PUSH_FAILED
    assert snap.root_at is not None and snap.passive_since is not None
    decoded = HopSnapshot.from_json(hop)
    assert decoded.incarnation == tracker.incarnation and decoded.push_failed_total == 1
    assert decoded.to_json() == hop


def test_schema_1_snapshots_stay_readable_and_newer_ones_are_refused() -> None:
    v1 = {"v": 1, "incarnation": "i", "seq": 1, "active": 0, "roots": [1, id_hash("r")]}
    snap = CascadeSnapshot.from_json(TRACE, "A", v1)
    assert (snap.failed, snap.lost, snap.losses, snap.awaiting) == (0, 0, (), {})
    HopSnapshot.from_json({"incarnation": "i", "seq": 1})  # no v at all: schema 1
    for body in ({**v1, "v": names.SNAPSHOT_SCHEMA_VERSION + 1}, {**v1, "v": "2"}):
        with pytest.raises(ValueError, match="schema version"):
            CascadeSnapshot.from_json(TRACE, "A", body)
    with pytest.raises(ValueError, match="schema version"):
        check_version({"v": 0})


def test_an_ending_of_a_kind_the_collector_does_not_know_is_refused() -> None:
    body = {"incarnation": "i", "seq": 1, "active": 0, "lost": 1, "losses": [{"kind": "vanished"}]}
    with pytest.raises(ValueError, match="kind"):
        CascadeSnapshot.from_json(TRACE, "A", body)


def test_tallies_merge_by_addition_and_withdraw_exactly() -> None:
    ids = [uuid.uuid4().hex for _ in range(5)]
    a = EMPTY
    for i in ids:
        a = a.with_id(i)
    b = EMPTY.with_id(ids[0]).add(Tally(4, sum(id_hash(i) for i in ids[1:])))
    assert a == b and a.without_id(ids[2]) != a and a.without_id(ids[2]).with_id(ids[2]) == a
