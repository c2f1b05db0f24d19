"""Tasks a parent gathers and awaits ride on the parent's unit of work.

a2a-sdk's event queue hands every event to every sink in a task of its own,
gathered (``return_exceptions=True``) and awaited by the dispatcher before it
takes the next event: about ten such tasks per hop and request. The backend
names them (``backends.Awaited``); the task factory then counts them by the
dispatcher task's unit instead of one each. These tests check both sides: the
children are not counted where the shape holds, and are counted (as any task)
wherever it does not: another frame, another cascade, a parent that holds no
unit, a parent whose code no longer gathers them that way. And the cascade
never looks passive while a child is still pending.
"""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any, Iterator

import pytest
import uvloop

from a2a_quiescence.instrumentation import loop as loop_hooks
from a2a_quiescence.instrumentation.backends import Awaited, Backend, resolve_awaited
from a2a_quiescence.instrumentation.backends.a2a_sdk import V1
from a2a_quiescence.instrumentation.runtime import CASCADE
from support import instrumented

MODULE = "a2aq_test_awaited_shapes"
SOURCE = '''
import asyncio


class Source:
    def __init__(self):
        self.release = asyncio.Event()
        self.wound_down = asyncio.Event()
        self.children_started = 0
        self.children_cancelled = 0

    async def child(self, n):
        self.children_started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.children_cancelled += 1
            await self.wound_down.wait()  # a child that takes its time to wind down
            raise
        return n

    async def parent(self, k):
        return await asyncio.gather(*(self.child(n) for n in range(k)), return_exceptions=True)

    async def parent_without_keyword(self, k):
        return await asyncio.gather(*(self.child(n) for n in range(k)))

    async def parent_gathering_and_spawning(self, k):
        spare = asyncio.create_task(self.child(k))
        return await asyncio.gather(*(self.child(n) for n in range(k)), return_exceptions=True), spare

    async def parent_spawning(self, k):
        tasks = [asyncio.create_task(self.child(n)) for n in range(k)]
        return tasks

    async def parent_switching_cascade(self, k, other):
        import a2a_quiescence.instrumentation.runtime as runtime
        runtime.CASCADE.set(other)
        return await self.parent(k)
'''
CASCADE_A = "a" * 32
CASCADE_B = "b" * 32


@pytest.fixture()
def shapes() -> Iterator[types.ModuleType]:
    module = types.ModuleType(MODULE)
    exec(compile(SOURCE, f"<{MODULE}>", "exec"), module.__dict__)  # noqa: S102 - the test's own code
    sys.modules[MODULE] = module
    try:
        yield module
    finally:
        del sys.modules[MODULE]


def _backend(parent: str) -> Backend:
    return Backend("test", "none", ">=0", ("0",), hooks=list, awaited=(Awaited(MODULE, "Source.child", parent),))


def test_the_sdk_dispatcher_is_resolved() -> None:
    found = resolve_awaited(V1)
    assert set(found) & {"EventQueueSource._deliver_to_sink", "EventQueueSink._put_internal"}
    assert {code.co_qualname for code in found.values()} == {"EventQueueSource._dispatch_loop"}


def test_only_a_gather_with_return_exceptions_is_trusted(shapes: types.ModuleType) -> None:
    assert set(resolve_awaited(_backend("Source.parent"))) == {"Source.child"}
    # without return_exceptions the first failure lets the parent go on while the rest run
    assert resolve_awaited(_backend("Source.parent_without_keyword")) == {}
    # spawned and not awaited: the children may outlive the parent
    assert resolve_awaited(_backend("Source.parent_spawning")) == {}
    assert resolve_awaited(_backend("Source.parent_gathering_and_spawning")) == {}
    assert resolve_awaited(_backend("Source.missing")) == {}
    assert resolve_awaited(Backend("test", "none", ">=0", ("0",), hooks=list,
                                   awaited=(Awaited("a2aq_no_such_module", "A.b", "A.c"),))) == {}


def _held(rt: Any, cascade: str) -> int:
    record = rt.tracker.cascades.get(cascade)
    return record.active if record is not None else 0


async def _until(condition: Any, turns: int = 10_000) -> None:
    """Let the loop run until ``condition`` holds: turns of the loop, not a clock (what is
    waited for happens within a few)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("not reached within the loop's turns")


# asyncio's own loop (its create_task is Python code, one frame more) and uvloop's, which
# uvicorn picks where it is installed
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def loop_factory(request: pytest.FixtureRequest) -> Any:
    return LOOPS[request.param]


def _run(tel: Any, shapes: types.ModuleType, body: Any, loop_factory: Any = asyncio.new_event_loop) -> Any:
    rt = tel.runtime
    rt.awaited = resolve_awaited(_backend("Source.parent"))

    async def main() -> Any:
        loop_hooks.ensure_loop_hooks(rt)
        return await body(rt, shapes.Source())

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def test_gathered_children_ride_on_the_parent_and_hold_the_cascade_open(shapes: types.ModuleType,
                                                                        loop_factory: Any) -> None:
    with instrumented(stall_seconds=0) as tel:
        async def body(rt: Any, source: Any) -> list[int]:
            CASCADE.set(CASCADE_A)
            parent = asyncio.create_task(source.parent(4))  # the parent's unit
            await _until(lambda: source.children_started == 4)
            counts = [_held(rt, CASCADE_A)]
            source.release.set()
            assert await parent == [0, 1, 2, 3]
            counts.append(_held(rt, CASCADE_A))
            return counts

        pending, after = _run(tel, shapes, body, loop_factory)
        assert pending == 1, "four children pending, counted by their parent's one unit"
        assert after == 0


def test_a_cancelled_parent_holds_the_cascade_until_its_children_wound_down(shapes: types.ModuleType) -> None:
    with instrumented(stall_seconds=0) as tel:
        async def body(rt: Any, source: Any) -> dict[str, Any]:
            CASCADE.set(CASCADE_A)
            parent = asyncio.create_task(source.parent(3))
            await _until(lambda: source.children_started == 3)
            parent.cancel()
            await _until(lambda: source.children_cancelled == 3)
            for _ in range(50):  # the children are still winding down: nothing may end
                await asyncio.sleep(0)
            seen = {"parent done": parent.done(), "held": _held(rt, CASCADE_A)}
            source.wound_down.set()
            results = await asyncio.gather(parent, return_exceptions=True)
            seen.update(cancelled=isinstance(results[0], asyncio.CancelledError), after=_held(rt, CASCADE_A))
            return seen

        seen = _run(tel, shapes, body)
        assert seen == {"parent done": False, "held": 1, "cancelled": True, "after": 0}


def test_children_are_counted_wherever_the_shape_does_not_hold(shapes: types.ModuleType) -> None:
    with instrumented(stall_seconds=0) as tel:
        async def body(rt: Any, source: Any) -> dict[str, int]:
            seen: dict[str, int] = {}
            # the same coroutine, spawned by another frame: it may outlive whoever spawned it
            CASCADE.set(CASCADE_A)
            children = await asyncio.create_task(source.parent_spawning(2))
            seen["spawned"] = _held(rt, CASCADE_A)

            # the gathering frame, in a task that holds no unit (created outside any cascade)
            async def gather_in_cascade() -> Any:
                CASCADE.set(CASCADE_B)
                return await source.parent(2)

            CASCADE.set(None)
            unheld = asyncio.create_task(gather_in_cascade())
            await _until(lambda: source.children_started == 4)
            seen["no parent unit"] = _held(rt, CASCADE_B)
            # the gathering frame, in a task of cascade A that switched to B before gathering
            CASCADE.set(CASCADE_A)
            switching = asyncio.create_task(source.parent_switching_cascade(2, CASCADE_B))
            await _until(lambda: source.children_started == 6)
            seen["switched"] = _held(rt, CASCADE_B) - seen["no parent unit"]
            source.release.set()
            await asyncio.gather(*children, unheld, switching)
            seen["after A"], seen["after B"] = _held(rt, CASCADE_A), _held(rt, CASCADE_B)
            return seen

        seen = _run(tel, shapes, body)
        # the spawner is done; its two children are each counted
        assert seen == {"spawned": 2, "no parent unit": 2, "switched": 2, "after A": 0, "after B": 0}


def test_the_sdk_dispatchers_children_are_not_counted_one_by_one(loop_factory: Any) -> None:
    """A real a2a-sdk event queue: one event to two sinks, the default sink full, so the
    dispatcher waits in its gather; the cascade stays held by the dispatcher's unit
    alone, and is released once the sink drains and the queue closes."""
    from a2a.server.events.event_queue_v2 import EventQueueSource
    from a2a.types import Message, Part, Role

    with instrumented(stall_seconds=0) as tel:
        rt = tel.runtime
        assert rt.awaited, "the backend resolved the dispatcher's children"

        async def main() -> tuple[int, int, int]:
            loop_hooks.ensure_loop_hooks(rt)
            CASCADE.set(CASCADE_A)
            queue = EventQueueSource(max_queue_size=1)
            tap = await queue.tap()
            message = Message(message_id="m", role=Role.ROLE_AGENT, parts=[Part(text="x")])
            await queue.enqueue_event(message)  # dispatched into both sinks
            await _until(lambda: tap.queue.qsize() == 1 and queue.queue.qsize() == 1)
            await queue.enqueue_event(message)  # the dispatcher now waits for room in its gather
            await _until(lambda: queue._incoming_queue.qsize() == 0)  # noqa: SLF001
            live = [r for r in loop_hooks._LIVE.values() if r.trace_id == CASCADE_A]  # noqa: SLF001
            kinds = sorted(r.what or "" for r in live)
            held = _held(rt, CASCADE_A)
            delivering = sum("_deliver_to_sink" in k or "_put_internal" in k for k in kinds)
            await queue.close(immediate=True)  # cancels the dispatcher, which cancels its gather
            await asyncio.gather(queue._dispatcher_task, return_exceptions=True)  # noqa: SLF001
            return held, delivering, _held(rt, CASCADE_A)

        with asyncio.Runner(loop_factory=loop_factory) as runner:
            held, delivering, after = runner.run(main())
        assert delivering == 0, "no delivering child holds a unit of its own"
        assert held == 1, "the dispatcher's unit alone holds the cascade while its children wait"
        assert after == 0
