"""a2a-sdk #1101 against the real SDK: an abandoned stream subscriber parks the
producer in its ``finally`` (``_event_queue_subscribers.close(immediate=False)``)
forever. The instrumentation must report the stall while it hangs, count the
producer as leaked when the agent shuts down without ``aclose()``, and see it
gone when ``aclose()`` runs.

How the hang is made, deterministically: the client reads the first streamed
event and then stops reading, keeping the connection open. With small socket
buffers (client SO_RCVBUF, server SO_SNDBUF) the server's SSE writer blocks
after a few hundred events, so the subscriber generator stays suspended at its
``yield`` holding one event it has not acknowledged (``task_done``). The
executor finishes all its events (fewer than the subscriber sink's 1024 limit
remain queued, so the sink is never evicted) and its producer's ``finally``
then waits in ``close(immediate=False)`` for that sink to drain: forever.
"""

from __future__ import annotations

import contextlib
import linecache
import socket
from functools import partial
from typing import Any, AsyncIterator

import pytest
import uvicorn
from a2a.types import a2a_pb2 as pb

from a2a_quiescence import names
from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.demo.mesh import HANG_PLAN, SMALL_BUFFER, build_app
from a2a_quiescence.demo.mesh import small_buffer_stream as stream
from a2a_quiescence.instrumentation import lifecycle

from support import TIMED_OUT, Telemetry, instrumented, raise_assertion, serve, wait_until_async

DEADLINE = 20.0
STALL_SECONDS = 0.3


poll = partial(wait_until_async, timeout=DEADLINE, every=0.01, message=TIMED_OUT, fail=raise_assertion)  # (condition, what)


@pytest.fixture
def otel() -> Any:
    with instrumented(stall_seconds=STALL_SECONDS) as o:
        yield o


class Agent:
    def __init__(self, url: str, handler: Any, server: uvicorn.Server) -> None:
        self.url = url
        self.handler = handler
        self.server = server


@contextlib.asynccontextmanager
async def agent(*, aclose_on_shutdown: bool = False) -> AsyncIterator[Agent]:
    port = free_port()
    app, handler, _executor = build_app("A", port, {}, aclose_on_shutdown=aclose_on_shutdown)
    # our own listening socket only to make its send buffer small (see module doc)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    sock.bind(("127.0.0.1", port))
    try:
        async with serve(app, port, sockets=[sock]) as server:
            yield Agent(f"http://127.0.0.1:{port}/", handler, server)
    finally:
        sock.close()


def _stall_detail(otel: Telemetry) -> dict[str, Any]:
    stalls = [r for r in otel.runtime.tracker.recent if r.get("kind") == "stall"]
    assert stalls, "no stall recorded"
    return stalls[-1]


def _assert_parked_in_subscribers_close(detail: dict[str, Any]) -> None:
    parked = detail[names.ATTR_PARKED_AT]
    assert parked.endswith(" in _run_producer"), parked
    filename, line = parked.rsplit(" in ", 1)[0].rsplit(":", 1)
    source = linecache.getline(filename, int(line))
    assert "_event_queue_subscribers.close(immediate=False)" in source, (parked, source)
    assert detail["a2a.stall.operation"] == "event_queue.close"


async def test_abandoned_subscriber_stall_reported_while_hanging_and_leak_at_shutdown(otel: Telemetry) -> None:
    tracker = otel.runtime.tracker
    async with agent(aclose_on_shutdown=False) as a, stream(a.url, HANG_PLAN) as events:
        first = await events.__anext__()
        assert first.HasField("task")
        # ... and the subscriber reads nothing more: the producer parks in its finally
        await poll(lambda: tracker.stalled_in_flight >= 1, "stall reported while hanging")
        await poll(lambda: (otel.metric(names.OTEL_STALLED_CLOSES) or 0) >= 1, "stalled_closes metric >= 1")
        detail = _stall_detail(otel)
        _assert_parked_in_subscribers_close(detail)
        assert detail[names.ATTR_TASK_ID] == first.task.id
        # still hanging: the close span (carrying the a2a.stall event) is open, so not exported
        assert tracker.producers_in_flight == 1
        assert otel.spans(names.SPAN_PRODUCER) == []
        assert not [s for s in otel.spans(names.SPAN_QUEUE_CLOSE) if s.attributes.get(names.ATTR_STALLED)]

        # the agent shuts down without aclose(): the producer is leaked
        leaked = lifecycle.record_shutdown(otel.runtime, "test")
        assert leaked == 1
        assert tracker.shutdown["leaked_producers"] >= 1
        assert tracker.shutdown["reason"] == "test"
        otel.meter_provider.force_flush()
        assert (otel.metric(names.OTEL_SHUTDOWN_LEAKED) or 0) >= 1

        # cleanup (not part of the scenario): aclose() lets everything go
        await a.handler.aclose()
        await poll(lambda: tracker.producers_in_flight == 0, "producer gone after aclose")


async def test_abandoned_subscriber_aclose_drains_and_records_no_leak(otel: Telemetry) -> None:
    tracker = otel.runtime.tracker
    async with agent(aclose_on_shutdown=False) as a, stream(a.url, HANG_PLAN) as events:
        first = await events.__anext__()
        await poll(lambda: tracker.stalled_in_flight >= 1, "stall reported while hanging")
        _assert_parked_in_subscribers_close(_stall_detail(otel))

        await a.handler.aclose()

        assert tracker.producers_in_flight == 0
        assert tracker.shutdown["reason"] == "request_handler.aclose"
        assert tracker.shutdown["leaked_producers"] == 0
        assert tracker.stalled_in_flight == 0
        await poll(lambda: otel.metric(names.OTEL_STALLED_CLOSES) == 0, "stalled_closes metric back to 0")
        [producer] = otel.spans(names.SPAN_PRODUCER)
        assert producer.attributes[names.ATTR_TASK_ID] == first.task.id
        assert producer.attributes[names.ATTR_OUTCOME] == names.OUTCOME_CANCELLED
        # the parked close is now exported, with its stall event and the resolution
        [stalled] = [s for s in otel.spans(names.SPAN_QUEUE_CLOSE) if s.attributes.get(names.ATTR_STALLED)]
        assert stalled.attributes[names.ATTR_QUEUE_ROLE] == names.ROLE_SUBSCRIBERS
        assert stalled.attributes[names.ATTR_CLOSE_IMMEDIATE] is False
        assert [e.name for e in stalled.events] == [names.EVENT_STALL, names.EVENT_STALL_RESOLVED]
        _assert_parked_in_subscribers_close(dict(stalled.events[0].attributes))
        # the aclose spans nest: handler -> registry -> active task
        [handler] = otel.spans(names.SPAN_HANDLER_ACLOSE)
        [registry] = otel.spans(names.SPAN_REGISTRY_ACLOSE)
        [task] = otel.spans(names.SPAN_TASK_ACLOSE)
        assert registry.parent.span_id == handler.context.span_id
        assert task.parent.span_id == registry.context.span_id
        assert task.attributes[names.ATTR_TASK_ID] == first.task.id

        # a later shutdown record agrees: nothing leaked
        assert lifecycle.record_shutdown(otel.runtime, "test") == 0


async def test_completed_stream_has_no_stall(otel: Telemetry) -> None:
    tracker = otel.runtime.tracker
    plan = {"stream_events": 5, "event_gap_ms": 10}
    async with agent(aclose_on_shutdown=True) as a, stream(a.url, plan) as events:
        got = [e async for e in events]
    assert got[-1].status_update.status.state == pb.TaskState.TASK_STATE_COMPLETED
    assert len([e for e in got if e.HasField("artifact_update")]) == plan["stream_events"]
    # the server (stopped above, lifespan aclose) has finished everything
    assert tracker.producers_in_flight == 0
    assert tracker.producers_finished[names.OUTCOME_COMPLETED] == 1
    assert tracker.stalls_total == 0 and tracker.stalled_in_flight == 0
    assert not (otel.metric(names.OTEL_STALLED_CLOSES) or 0)
    closes = otel.spans(names.SPAN_QUEUE_CLOSE)
    assert closes and not [s for s in closes if s.attributes.get(names.ATTR_STALLED) or s.events]
    assert tracker.shutdown["leaked_producers"] == 0
