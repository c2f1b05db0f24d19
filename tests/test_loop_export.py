"""Prompt exports on the agent's own event loop (instrumentation/loop_export.py):
they happen there and reach the collector; a refused, unanswered or orphaned
request loses nothing (the thread ships it again); wakes from elsewhere, and
``A2A_QUIESCENCE_LOOP_EXPORT=false``, keep to the thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from typing import Iterator

import pytest

from a2a_quiescence import environment_variables as variables
from a2a_quiescence import names
from a2a_quiescence.instrumentation.loop_export import LoopExport
from a2a_quiescence.instrumentation.reporter import Reporter
from a2a_quiescence.instrumentation.tracker import HopTracker
from tests.support import wait_until, wait_until_async
from tests.test_reporter import Sink


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink(keep_alive=True)  # connections kept open, as the collector keeps them
    yield s
    s.close()


def _reporter(tracker: HopTracker, port: int, start: bool = True, **kwargs: float) -> Reporter:
    """A reporter (``start``: with its thread; without, only the loop exports)."""
    rep = Reporter(tracker, "agent", endpoint=f"http://127.0.0.1:{port}/v1/logs", headers={},
                   heartbeat=60.0, **kwargs)
    if start:
        rep.start()
    return rep


def _cascades(sink: Sink) -> int:
    return sum(r.count(names.EVENT_CASCADE_SNAPSHOT) for r in sink.requests)


def _started(port: int) -> tuple[HopTracker, Reporter, LoopExport]:
    tracker = HopTracker()
    rep = _reporter(tracker, port)
    assert rep.loop_export is not None
    return tracker, rep, rep.loop_export


async def _first_wake(tracker: HopTracker, loop_export: LoopExport) -> None:
    """The first wake on a loop asks the thread for a socket (and is exported by it)."""
    _passive_cascade(tracker)
    await wait_until_async(lambda: loop_export.offered or loop_export.sock or loop_export.disabled,
                           "a socket for the loop", timeout=10, every=0.01)


def _passive_cascade(tracker: HopTracker) -> str:
    """A root receipt and its release (both wake the reporter; on the running loop, if any)."""
    trace_id = uuid.uuid4().hex
    tracker.release(tracker.receive(trace_id, None, uuid.uuid4().hex, None))
    return trace_id


async def _an_export_on_this_loop(tracker: HopTracker, loop_export: LoopExport) -> None:
    """Passive cascades until one is exported on the running loop: a wake whose export
    finds the thread busy exporting (its previous pass) is left to the thread."""
    before = loop_export.exports

    def exported() -> bool:
        if loop_export.exports > before:
            return True
        if not tracker.has_dirty() and loop_export.in_flight is None and loop_export.scheduled is None:
            _passive_cascade(tracker)
        return False

    await wait_until_async(exported, "an export answered on this loop", timeout=10, every=0.005)


def test_a_wake_on_the_loop_exports_on_the_loop(sink: Sink) -> None:
    tracker, rep, loop_export = _started(sink.port)

    async def body() -> None:
        await _first_wake(tracker, loop_export)
        before = loop_export.exports
        for _ in range(3):
            _passive_cascade(tracker)
            await wait_until_async(lambda: not tracker.has_dirty() and loop_export.in_flight is None,
                                   "the export answered", timeout=10, every=0.005)
        assert loop_export.exports > before

    try:
        asyncio.run(body())
        wait_until(lambda: _cascades(sink) >= 4, "every cascade delivered", timeout=10, every=0.01)
        assert rep.export_failures == 0
    finally:
        rep.stop()


def test_a_new_loop_after_the_first_closed_gets_its_own_connection(sink: Sink) -> None:
    tracker, rep, loop_export = _started(sink.port)  # its kept connection outlives the first loop

    async def exports_on_this_loop() -> None:
        await _first_wake(tracker, loop_export)
        await _an_export_on_this_loop(tracker, loop_export)

    try:
        asyncio.run(exports_on_this_loop())
        asyncio.run(exports_on_this_loop())  # as an agent that runs a second loop, or a test suite
        assert rep.export_failures == 0
    finally:
        rep.stop()


def test_a_run_the_closed_loop_never_got_to_does_not_hold_up_the_next_loop(sink: Sink) -> None:
    tracker, rep, loop_export = _started(sink.port)

    async def leaves_a_run_scheduled() -> None:
        await _first_wake(tracker, loop_export)
        await wait_until_async(lambda: not tracker.has_dirty(), "the first delivered", timeout=10, every=0.01)
        assert loop_export.schedule(60.0)  # still pending when this loop closes

    async def exports_on_this_loop() -> None:
        await _first_wake(tracker, loop_export)
        await _an_export_on_this_loop(tracker, loop_export)

    try:
        asyncio.run(leaves_a_run_scheduled())
        asyncio.run(exports_on_this_loop())
    finally:
        rep.stop()


def test_a_refused_export_on_the_loop_is_shipped_again_by_the_thread(sink: Sink) -> None:
    tracker, rep, loop_export = _started(sink.port)

    async def body() -> str:
        await _first_wake(tracker, loop_export)
        await wait_until_async(lambda: not tracker.has_dirty(), "the first delivered", timeout=10, every=0.01)
        sink.fail = {len(sink.requests)}  # the next request is refused
        refused_before = rep.export_failures
        trace_id = _passive_cascade(tracker)
        await wait_until_async(lambda: rep.export_failures > refused_before, "the refusal", timeout=10,
                               every=0.005)
        return trace_id

    try:
        asyncio.run(body())
        refused = sink.fail.pop()
        # the refused cascade's snapshot arrives after the refusal (the thread's resend; waiting
        # for the tracker to be clean is not enough: the thread takes it before it posts it)
        wait_until(lambda: any(names.EVENT_CASCADE_SNAPSHOT in r for r in sink.requests[refused + 1:]),
                   "the resend", timeout=10, every=0.01)
        assert not tracker.has_dirty()
    finally:
        rep.stop()


class Silent:
    """Accepts connections and reads, and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn: socket.socket) -> None:
        while True:
            try:
                if not conn.recv(65536):
                    return
            except OSError:
                return

    def close(self) -> None:
        self.stopping = True
        self.thread.join()
        self.listener.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def unanswered() -> Iterator[tuple[HopTracker, LoopExport]]:
    """A reporter without its thread whose collector never answers, and its loop export
    with a socket already connected (as the thread would connect it)."""
    silent = Silent()
    tracker = HopTracker()
    rep = _reporter(tracker, silent.port, start=False, timeout=30.0)
    assert rep.loop_export is not None
    rep.loop_export.want_socket = True
    rep.loop_export.offer(5.0)
    try:
        yield tracker, rep.loop_export
    finally:
        rep.stop(flush=False)
        silent.close()


async def _sent_unanswered(tracker: HopTracker, loop_export: LoopExport) -> str:
    trace_id = _passive_cascade(tracker)
    await wait_until_async(lambda: loop_export.in_flight is not None, "a request in flight", timeout=10, every=0.005)
    return trace_id


def test_an_export_left_in_flight_by_a_closed_loop_is_given_back(
        unanswered: tuple[HopTracker, LoopExport]) -> None:
    tracker, loop_export = unanswered

    async def body() -> None:
        trace_id = await _sent_unanswered(tracker, loop_export)
        assert loop_export.in_flight is not None and trace_id in loop_export.in_flight[1]

    asyncio.run(body())  # the loop closes with the request unanswered
    assert not tracker.has_dirty()  # taken: only the loop's request holds it
    loop_export.abandon()
    assert loop_export.in_flight is None and tracker.has_dirty()  # given back to the thread


def test_an_unanswered_export_is_given_back_after_the_timeout(unanswered: tuple[HopTracker, LoopExport]) -> None:
    tracker, loop_export = unanswered

    async def body() -> None:
        await _sent_unanswered(tracker, loop_export)
        loop_export.abandon(timeout=60.0)  # the loop runs and it has not waited that long
        assert loop_export.in_flight is not None and not tracker.has_dirty()
        loop_export.abandon(timeout=0.0)
        assert loop_export.in_flight is None and tracker.has_dirty()

    asyncio.run(body())


def test_wakes_off_the_loop_and_the_switch_keep_to_the_thread(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = HopTracker()
    rep = _reporter(tracker, sink.port)
    try:
        assert rep.loop_export is not None
        _passive_cascade(tracker)  # no loop here
        wait_until(lambda: not tracker.has_dirty(), "delivered by the thread", timeout=10, every=0.01)
        assert rep.loop_export.exports == 0 and rep.loop_export.loop is None
    finally:
        rep.stop()
    monkeypatch.setenv(variables.LOOP_EXPORT.name, "false")
    assert Reporter(HopTracker(), "agent", endpoint=f"http://127.0.0.1:{sink.port}/v1/logs",
                    headers={}).loop_export is None


class NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch sockets (as some alternative loops)."""

    def add_reader(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError


def test_a_loop_that_cannot_watch_sockets_leaves_the_exports_to_the_thread(sink: Sink) -> None:
    tracker, rep, loop_export = _started(sink.port)

    async def body() -> None:
        await _first_wake(tracker, loop_export)
        _passive_cascade(tracker)  # scheduled on the loop, which then finds it cannot
        await wait_until_async(lambda: loop_export.disabled, "the loop path given up", timeout=10, every=0.005)
        # delivered by the thread (a clean tracker is not enough: it takes before it posts)
        await wait_until_async(lambda: _cascades(sink) >= 2, "delivered by the thread", timeout=10, every=0.01)

    loop = NoReaderLoop()
    try:
        loop.run_until_complete(body())
        assert loop_export.exports == 0 and rep.export_failures == 0
    finally:
        loop.close()
        rep.stop()
