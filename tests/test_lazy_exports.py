"""Changes that can wait (a cascade still working, the hop's counters): what is due
when (``HopTracker.next_due``, ``take_snapshots(lazy=...)``), and the reporter's lazy
timer, which ships such a change once it has waited the whole lazy interval and not
before, where no export came by to take it along."""

from __future__ import annotations

import time
import uuid
from typing import Iterator

import pytest

from a2a_quiescence import environment_variables as variables
from a2a_quiescence import names
from a2a_quiescence.instrumentation.reporter import Reporter
from a2a_quiescence.instrumentation.tracker import HopTracker
from tests.support import wait_until
from tests.test_reporter import Sink

LAZY = 0.4


def _clean() -> HopTracker:
    tracker = HopTracker()
    tracker.take_snapshots(everything=True)
    assert tracker.next_due(LAZY) is None  # nothing kept: no timer needed
    return tracker


def _working(tracker: HopTracker) -> str:
    """A cascade received from another hop and still worked on: a change that can wait."""
    trace_id = uuid.uuid4().hex
    tracker.receive(trace_id, "upstream", uuid.uuid4().hex, None)
    return trace_id


def _age(tracker: HopTracker, trace_id: str, seconds: float) -> None:
    """Pretend the cascade was marked ``seconds`` earlier than it was (no sleeping)."""
    tracker.dirty_since[trace_id] -= seconds


def test_next_due_is_the_oldest_kept_change_plus_the_interval() -> None:
    tracker = _clean()
    first = _working(tracker)
    _working(tracker)
    assert tracker.next_due(LAZY) == tracker.dirty_since[first] + LAZY
    tracker.take_snapshots(everything=True)
    tracker.producer_started()  # a counter: the hop snapshot is kept from its last shipping
    assert tracker.next_due(LAZY) == tracker.hop_shipped_at + LAZY


@pytest.mark.parametrize("what", ["requeued", "deferred release", "shutdown"])
def test_next_due_is_now_for_what_cannot_wait(what: str) -> None:
    tracker = _clean()
    if what == "requeued":
        tracker.requeue(False, [uuid.uuid4().hex])
    elif what == "deferred release":
        token = tracker.acquire(_working(tracker))
        tracker.take_snapshots(everything=True)
        tracker.release_later(token)
    else:
        tracker.shutdown_completed("test")
    due = tracker.next_due(LAZY)
    assert due is not None and due <= time.monotonic()


def test_a_change_that_can_wait_is_kept_until_half_the_interval_then_taken() -> None:
    tracker = _clean()
    trace_id = _working(tracker)
    hop, cascades = tracker.take_snapshots(lazy=LAZY / 2)
    assert hop is None and cascades == []  # kept: a prompt export does not take it yet
    _age(tracker, trace_id, LAZY / 2)
    _, cascades = tracker.take_snapshots(lazy=LAZY / 2)
    assert [t for t, _ in cascades] == [trace_id]
    assert tracker.next_due(LAZY) is None


def test_an_urgent_change_is_taken_at_once() -> None:
    tracker = _clean()
    working = _working(tracker)
    passive = uuid.uuid4().hex
    tracker.release(tracker.receive(passive, "upstream", uuid.uuid4().hex, None))
    _, cascades = tracker.take_snapshots(lazy=LAZY / 2)
    assert [t for t, _ in cascades] == [passive]  # the working one stays kept
    assert working in tracker.dirty


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink(keep_alive=True)
    yield s
    s.close()


def test_the_lazy_timer_ships_a_kept_change_when_due_and_not_before(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing wakes the reporter here (no urgent change, no loop): the thread's lazy
    timer alone must ship the working cascade, and only once it has waited the whole
    interval (an earlier pass would be a request the next prompt export makes anyway)."""
    monkeypatch.setenv(variables.LAZY_MS.name, str(LAZY * 1000))
    tracker = HopTracker()
    rep = Reporter(tracker, "agent", endpoint=f"http://127.0.0.1:{sink.port}/v1/logs", headers={},
                   heartbeat=60.0)
    rep.start()
    try:
        # the first pass ships the hop snapshot at once (never shipped); then nothing is kept
        wait_until(lambda: sink.requests and not tracker.has_dirty(), "the first hop snapshot",
                   timeout=10, every=0.01)
        # the change is made mid-interval after the thread's last pass (placed in time, not
        # a synchronisation): a pass at the end of that interval finds it kept 0.6 of it
        time.sleep(max(0.0, sink.arrived[0] + 0.4 * LAZY - time.monotonic()))
        marked = time.monotonic()
        trace_id = _working(tracker)
        wait_until(lambda: any(names.EVENT_CASCADE_SNAPSHOT in r for r in sink.requests),
                   "the kept cascade shipped by the lazy timer", timeout=10, every=0.01)
        shipped = next(at for at, r in zip(sink.arrived, sink.requests) if names.EVENT_CASCADE_SNAPSHOT in r)
        assert shipped - marked >= LAZY, "the lazy timer shipped a change before it was due"
        assert trace_id not in tracker.dirty
    finally:
        rep.stop()
