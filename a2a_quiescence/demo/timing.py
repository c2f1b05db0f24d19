"""How long the demo waits for what it expects, and how it tells its progress."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Iterator

STALL_SECONDS = 1.0  # the agents' stall watchdog (default 5 s; shorter so the demo shows it soon)
STUCK_AFTER = 3.0  # the collector's --stuck-after
DEADLINE = 45.0  # for every wait on something that normally takes a second or two


class DemoError(RuntimeError):
    """Something the demo waited for did not happen (the message says what)."""


class Progress:
    """Timestamped progress lines on the terminal."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()  # alerts are printed from the receiver's threads

    def __call__(self, text: str) -> None:
        with self.lock:
            print(f"[{time.monotonic() - self.t0:5.1f}s] {text}", flush=True)


def _tries(what: str, timeout: float) -> Iterator[None]:
    """One step per try until ``timeout`` s have passed, then DemoError (the deadline of ``until``)."""
    deadline = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() > deadline:
            raise DemoError(f"gave up after {timeout:.0f}s waiting for {what}")


def until(what: str, check: Callable[[], Any], timeout: float = DEADLINE, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; DemoError after ``timeout`` s."""
    for _ in _tries(what, timeout):
        if value := check():
            return value
        time.sleep(every)


async def until_async(what: str, check: Callable[[], Any], timeout: float = DEADLINE, every: float = 0.1) -> Any:
    """``until`` from the event loop: the check runs in a thread, the pauses on the loop (cancellable)."""
    for _ in _tries(what, timeout):
        if value := await asyncio.to_thread(check):
            return value
        await asyncio.sleep(every)
