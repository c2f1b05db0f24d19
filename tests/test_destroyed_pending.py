"""'Task was destroyed but it is pending!' on a real agent.

An event loop that is closed while an agent's producer still hangs (no
aclose, no cancellation) leaves pending tasks for the garbage collector;
CPython then reports each through the loop's exception handler. The
instrumentation must record it (task name, a2a task id, trace id of the
request that spawned the producer, the frame it was parked in) and must
still pass it on to the handler that was there before. A loop whose agent
was drained with aclose() must record nothing.

These tests drive their own event loop (not asyncio.run, which would cancel
the leftover tasks and hide the very thing under test).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from a2a_quiescence import names
from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.demo.mesh import build_app, new_trace_id, send_plan
from support import instrumented, serve, wait_until_async

# the abandoned coroutines are the point of these tests: their "never awaited"
# and unraisable-exception warnings at garbage collection are expected
pytestmark = pytest.mark.filterwarnings(
    "ignore::RuntimeWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)


def _run_agent_and_close_loop(tel: Any, *, drain: bool) -> tuple[str, list[dict[str, Any]]]:
    """Serve one agent on a fresh loop, leave a hanging producer, close the loop."""
    seen_by_previous: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, context: seen_by_previous.append(context))
    trace_id = new_trace_id()

    async def main() -> None:
        port = free_port()
        app, handler, _executor = build_app("solo", port, {}, aclose_on_shutdown=False)
        async with serve(app, port):
            await send_plan(f"http://127.0.0.1:{port}", {"outcome": "hang"}, trace_id=trace_id, return_immediately=True)
            await wait_until_async(lambda: tel.runtime.tracker.producers_in_flight >= 1, "the producer to hang",
                                   timeout=30, every=0.01)
            if drain:
                await handler.aclose()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()  # pending tasks are left to the garbage collector
        del loop
    gc.collect()
    return trace_id, seen_by_previous


def test_destroyed_pending_producer_is_recorded_and_passed_on() -> None:
    with instrumented(stall_seconds=30) as tel:
        trace_id, seen_by_previous = _run_agent_and_close_loop(tel, drain=False)
        tracker = tel.runtime.tracker
        tracker.settle_deferred()  # finalizer reports are applied at the next snapshot
        assert tracker.destroyed_pending >= 1
        recorded = [r for r in tracker.recent if r["kind"] == "destroyed_pending"]
        producers = [r for r in recorded if r["asyncio.task.name"].startswith("producer:")]
        assert producers, recorded
        producer = producers[0]
        assert producer["a2a.task.id"] == producer["asyncio.task.name"].split(":", 1)[1]
        assert producer["trace_id"] == trace_id
        assert "active_task.py" in producer["a2a.parked_at"]
        # the span and the metric say the same
        spans = tel.spans(names.SPAN_DESTROYED_PENDING)
        assert any(s.attributes.get("asyncio.task.name", "").startswith("producer:") for s in spans)
        assert tel.metric("a2a.tasks.destroyed_pending") >= 1
    # chained, never swallowed: the previous handler got every report too
    assert any("destroyed but it is pending" in str(c.get("message")) for c in seen_by_previous)


def test_drained_agent_leaves_nothing_destroyed_pending() -> None:
    with instrumented(stall_seconds=30) as tel:
        _trace_id, seen_by_previous = _run_agent_and_close_loop(tel, drain=True)
        tel.runtime.tracker.settle_deferred()
        assert tel.runtime.tracker.destroyed_pending == 0
        assert not tel.spans(names.SPAN_DESTROYED_PENDING)
    assert not any("destroyed but it is pending" in str(c.get("message")) for c in seen_by_previous)


@pytest.fixture(autouse=True)
def _no_stray_loop() -> Any:
    yield
    asyncio.set_event_loop(None)
