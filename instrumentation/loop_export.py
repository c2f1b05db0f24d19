"""Prompt snapshot exports on the agent's own event loop.

A wake (a hop going passive, a root receipt, a withdrawn send) used to set an
event for the reporter thread, which then took the GIL from the event loop about
six times per export (the wake, the gathering sleep, the socket's polls, send and
receive): each time a timed wait for the busy loop thread and a forced switch,
some 75 futex calls per export, more CPU than the export itself
(docs/benchmarks.md). Where the wake comes from a thread running an event loop,
the export is now a callback on that loop instead: after the same gathering delay
it takes the due snapshots (``take``, under the tracker's lock as before), writes
the request to a non-blocking kept-alive socket, and reads the answer when it
arrives, with no thread switch at all. The reporter thread keeps everything else:
the lazy timer, heartbeats, retries after a failure, exports woken from other
threads, HTTPS, and flushes at shutdown.

What this changes for soundness: nothing. Each snapshot is still the whole state
of one cascade at one moment, numbered by the incarnation's ``seq``, and the
collector keeps only the newest of each; the two paths use separate connections,
so a later snapshot may overtake an earlier one, which the collector then ignores
as stale. A request that is refused, broken, unanswered within the timeout, or
left behind by a loop that closed is given back to the tracker (``requeue``) and
shipped again by the thread: late, never lost. Never more than one request is in
flight here (no pipelining); a wake meanwhile exports once the answer is in.

Fail-open: any error here falls back to the thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Callable

from a2a_quiescence import names
from a2a_quiescence.instrumentation.connection import PlainConnection, parse_response
from a2a_quiescence.instrumentation.runtime import report_internal_error

# (request bytes, hop snapshot included, cascade trace ids) or None: nothing due
Taken = tuple[bytes, bool, list[str]]


class LoopExport:
    """One kept-alive connection used from one event loop (the first that wakes it;
    another loop's wakes go to the thread)."""

    def __init__(self, conn: PlainConnection, take: Callable[[], Taken | None],
                 result: Callable[[bool, bool, list[str], str | None, str], None],
                 fallback: Callable[[], None]) -> None:
        self.conn = conn  # the request head and the address; its own socket stays the thread's
        self.take = take
        self.result = result  # (ok, hop, trace ids, collector id, why)
        self.fallback = fallback  # wake the thread instead (a scheduled export that cannot run here)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sock: socket.socket | None = None  # in use on the loop (non-blocking)
        self.offered: socket.socket | None = None  # connected by the thread, not yet adopted
        self.want_socket = False
        self.scheduled: asyncio.TimerHandle | None = None
        self.again = False
        self.buf = b""
        self.lock = threading.Lock()  # guards in_flight between the loop and the thread
        self.in_flight: tuple[bool, list[str], float] | None = None
        self.exports = 0  # requests answered on the loop (for benchmarks and tests)
        self.disabled = False  # a loop that cannot watch sockets (no add_reader): the thread's job

    # -- from any thread ----------------------------------------------------------------
    def schedule(self, delay: float) -> bool:
        """Run a prompt export ``delay`` seconds from now on the calling thread's loop;
        False where that cannot be done here (no loop, another loop, no socket yet)."""
        if self.disabled:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if loop is not self.loop:
            if self.loop is not None and not self.loop.is_closed():
                return False  # another loop has it: this one's wakes go to the thread
            self.abandon()
            self.close()  # the closed loop's socket: this loop never watched it
            # a run the closed loop never got to: left set, it would make every wake here
            # look scheduled, and nothing would export on this loop again
            self.scheduled = None
            self.again = False
            self.loop = loop
        if self.sock is None and self.offered is None:
            self.want_socket = True  # the thread connects one (a blocking connect has no place here)
            return False
        if self.scheduled is None:
            self.scheduled = loop.call_later(delay, self.run)
        return True

    def offer(self, timeout: float) -> None:
        """The thread: connect the socket the loop will use."""
        if not self.want_socket:
            return
        self.want_socket = False
        sock = socket.create_connection(self.conn.address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.offered = sock

    def abandon(self, timeout: float | None = None, force: bool = False) -> None:
        """Give back what is in flight if the loop is gone, if it has waited ``timeout``
        seconds for its answer, or (``force``: at shutdown) anyway: the thread ships it
        again (a snapshot sent twice is harmless: the collector keeps the newest)."""
        loop = self.loop
        with self.lock:
            flight = self.in_flight
            if flight is None or not (force or loop is None or loop.is_closed()
                                      or (timeout is not None and time.monotonic() - flight[2] > timeout)):
                return
            self.in_flight = None
        self.result(False, flight[0], flight[1], None, "no answer")
        if loop is None or loop.is_closed():
            self.close()
        else:
            loop.call_soon_threadsafe(self.close)

    # -- on the loop ------------------------------------------------------------------
    def run(self) -> None:
        self.scheduled = None
        try:
            if self.in_flight is not None:
                self.again = True  # one request at a time: this one follows the answer
                return
            if self.sock is None:
                if self.offered is None:  # the connection broke since: the thread exports
                    self.fallback()
                    return
                sock, self.offered = self.offered, None
                self.buf = b""
                try:
                    asyncio.get_running_loop().add_reader(sock, self.readable)
                except Exception:  # noqa: BLE001 - e.g. NotImplementedError: this loop cannot
                    self.disabled = True
                    sock.close()
                    self.fallback()
                    return
                self.sock = sock
            taken = self.take()
            if taken is None:
                return
            body, hop, ids = taken
            data = self.conn.request(body)
            with self.lock:
                self.in_flight = (hop, ids, time.monotonic())
            try:
                sent = self.sock.send(data)
            except OSError:
                sent = -1
            if sent != len(data):  # a full socket buffer or a broken connection: the thread's job
                self.fail("could not write the request")
        except Exception as exc:  # noqa: BLE001 - fail-open
            report_internal_error("loop export", exc)
            self.fail("internal error")

    def readable(self) -> None:
        try:
            sock = self.sock
            if sock is None:
                return
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.fail("the collector closed the connection")
                return
            self.buf += chunk
            answer = parse_response(self.buf)
            if answer is None:
                return
            status, reason, headers, keep, rest = answer
            self.buf = b""
            with self.lock:
                flight, self.in_flight = self.in_flight, None
            if flight is None or not keep or rest:
                self.close()
            if flight is not None:
                if status < 300:
                    self.exports += 1
                self.result(status < 300, flight[0], flight[1], headers.get(names.HEADER_COLLECTOR_ID),
                            f"collector answered {status} {reason}")
            if self.again and status < 300:
                self.again = False
                asyncio.get_running_loop().call_soon(self.run)
        except Exception as exc:  # noqa: BLE001 - fail-open
            report_internal_error("loop export answer", exc)
            self.fail("internal error")

    def fail(self, why: str) -> None:
        with self.lock:
            flight, self.in_flight = self.in_flight, None
        self.close()
        self.again = False
        if flight is not None:
            self.result(False, flight[0], flight[1], None, why)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self.buf = b""
        if sock is None:
            return
        loop = self.loop
        try:
            if loop is not None and not loop.is_closed():
                loop.remove_reader(sock)
        except Exception:  # noqa: BLE001 - closing regardless
            pass
        sock.close()

    def after_fork(self) -> None:
        """In a forked child: the parent's loop and sockets are not ours (not closed here)."""
        self.loop = self.sock = self.offered = self.scheduled = None
        self.in_flight = None
        self.want_socket = self.again = False
        self.buf = b""
        self.lock = threading.Lock()
