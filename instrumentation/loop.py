"""Event loop hooks: the task factory by which spawned tasks hold units of
their cascade, the report of tasks destroyed while pending, and the stall
watchdog (fail-open, as every wrapper: see ``runtime``)."""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import weakref
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from a2a_quiescence import names
from a2a_quiescence.instrumentation.runtime import (
    CASCADE, OWNER, ActiveTaskState, Runtime, add_metric, current, end_span, guard, new_ending, report_internal_error, start_span,
)


# --- event loop hooks: spawned work, destroyed-pending tasks -------------------
class _TaskRef(weakref.ref):
    """A weak reference to a task holding a unit of work, and that unit's token
    itself (it has ``WorkToken``'s attributes: one object per task, not two). If
    the task is garbage collected while pending, its done-callbacks never run and
    the reference's callback releases the unit. Only ``_LIVE`` holds it while the
    task is pending (``state``: the ActiveTask whose plumbing the task is, if any:
    ``plumbing_units`` finds them there), so once the task is done it is freed at
    once and never calls back."""

    __slots__ = ("key", "tracker", "trace_id", "released", "owner", "state", "what", "plumbing")


# id(task) -> its _TaskRef, while the task holds its unit (this keeps the reference
# alive: a weak reference that is itself garbage never calls back)
_LIVE: dict[int, _TaskRef] = {}
# id(task) -> the token (its dead _TaskRef) of tasks collected while pending, for the
# finalizer's report (bounded)
_COLLECTED: dict[int, Any] = {}


def forget_inherited_units() -> None:
    """After a fork: the parent's tasks do not run here; their units were the parent's."""
    for ref in list(_LIVE.values()):
        ref.released = True
    _LIVE.clear()
    _COLLECTED.clear()


def _task_done(task: asyncio.Future) -> None:
    ref = _LIVE.pop(id(task), None)
    if ref is not None:
        ref.tracker.release(ref)


def plumbing_units(state: ActiveTaskState) -> list[_TaskRef]:
    """The units still held by tasks spawned as ActiveTask ``state``'s plumbing. Rare
    (an ActiveTask that never started): a scan of the live tasks. A garbage-collector
    callback may change ``_LIVE`` meanwhile: the copy is taken again then."""
    for _ in range(3):
        try:
            refs = list(_LIVE.values())
        except RuntimeError:
            continue
        return [ref for ref in refs if ref.state is state and not ref.released]
    return []  # the units stay held: late, never early


def _task_collected(ref: _TaskRef) -> None:
    # runs inside the garbage collector, in any thread: no locks (release_later)
    if _LIVE.get(ref.key) is ref:
        del _LIVE[ref.key]
    _COLLECTED[ref.key] = ref
    while len(_COLLECTED) > 256:
        del _COLLECTED[next(iter(_COLLECTED))]
    if not ref.released:
        ref.tracker.release_later(ref, new_ending(names.END_DESTROYED_PENDING, ref.owner, detail=ref.what))


def _rides_on_parent(parent: Any, loop: asyncio.AbstractEventLoop, cascade: str, owner: Any) -> bool:
    """Whether a task being created is a child the frame running code ``parent``
    gathers and awaits (``backends.Awaited``), in a task that holds a unit of the same
    cascade and ActiveTask: that unit then counts the child too. The child cannot
    outlive it: the parent's task is neither done nor collected while the child is
    pending (the gather it awaits refers to the child). Anything else is counted as
    any task: late, never early."""
    # the caller of gather, from here: this function, the factory, the loop's create_task
    # (a Python method in asyncio's loops, not in uvloop's), gather's _ensure_future, gather.
    # One frame looked up at each depth (walking f_back would build every frame object)
    try:
        if sys._getframe(5).f_code is not parent and sys._getframe(4).f_code is not parent:
            return False
    except ValueError:  # a shallower stack: not the parent's gather
        return False
    task = asyncio.current_task(loop)
    ref = _LIVE.get(id(task)) if task is not None else None
    return (ref is not None and not ref.released and ref.trace_id == cascade and ref() is task
            and ref.owner == (owner.task_id if owner is not None else None))


def ensure_loop_hooks(rt: Runtime) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if loop in rt.loops:
        return
    previous_factory = loop.get_task_factory()
    previous_handler = loop.get_exception_handler()
    rt.loops[loop] = (previous_factory, previous_handler)
    done_context = contextvars.Context()  # one per loop: a context is entered by one thread at a time

    def factory(loop_: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future:
        if previous_factory is not None:
            task = previous_factory(loop_, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop_, **kwargs)
        runtime = current()
        if runtime is not None:
            # hot path (every task the agent creates), written out in one function: a
            # plain try, not guard
            try:
                ctx = kwargs.get("context")
                if ctx is None:
                    cascade = CASCADE.get()
                    owner = OWNER.get() if cascade else None
                else:
                    cascade = ctx.get(CASCADE)
                    owner = ctx.get(OWNER) if cascade else None
                if cascade:
                    what = getattr(coro, "__qualname__", None)
                    parent = runtime.awaited.get(what) if runtime.awaited else None
                    if parent is not None and _rides_on_parent(parent, loop_, cascade, owner):
                        return task
                    # ``task`` holds a unit of ``cascade`` until it is done (or collected)
                    ref = _TaskRef(task, _task_collected)
                    ref.trace_id, ref.owner, ref.what = cascade, owner.task_id if owner is not None else None, what
                    ref.released = ref.plumbing = False
                    ref.state = owner
                    ref.tracker = tracker = runtime.tracker
                    # counted first: should that fail, the reference is dropped unpublished
                    # and never calls back (nothing to release)
                    tracker.hold(ref)
                    ref.key = key = id(task)
                    _LIVE[key] = ref
                    # _task_done reads no context variable: run it in the loop's own empty
                    # context rather than a copy of the task's (one allocation fewer per task)
                    task.add_done_callback(_task_done, context=done_context)
            except Exception as exc:  # noqa: BLE001 - fail-open
                report_internal_error("task_factory", exc)
        return task

    def handler(loop_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        runtime = current()
        if runtime is not None:
            with guard("exception_handler"):
                _maybe_destroyed_pending(runtime, context, loop_)
        # chain: never swallow what the loop reports
        if previous_handler is not None:
            previous_handler(loop_, context)
        else:
            loop_.default_exception_handler(context)

    loop.set_task_factory(factory)
    loop.set_exception_handler(handler)


def remove_loop_hooks(rt: Runtime) -> None:
    for loop, (factory, handler) in list(rt.loops.items()):
        with guard("remove_loop_hooks"):
            if not loop.is_closed():
                loop.set_task_factory(factory)
                loop.set_exception_handler(handler)
    rt.loops.clear()


def task_location(task: asyncio.Task) -> str:
    try:
        frames = task.get_stack()
    except Exception:  # noqa: BLE001
        return "unknown"
    if not frames:
        return "unknown"
    f = frames[-1]
    return f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"


def innermost_location(task: asyncio.Task) -> str:
    """Where a task's work waits: the innermost frame of its await chain outside
    asyncio itself (``Task.get_stack`` stops at the task's own coroutine)."""
    try:
        frame = None
        coro: Any = task.get_coro()
        for _ in range(100):
            f = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or getattr(coro, "gi_frame", None)
            if f is None:
                break
            if frame is None or _ASYNCIO_DIR not in f.f_code.co_filename:
                frame = f
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or getattr(coro, "gi_yieldfrom", None)
        if frame is None:
            return "unknown"
        return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    except Exception:  # noqa: BLE001
        return "unknown"


_ASYNCIO_DIR = os.sep + "asyncio" + os.sep


def _maybe_destroyed_pending(rt: Runtime, context: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
    message = str(context.get("message", ""))
    task = context.get("task")
    if "destroyed but it is pending" not in message or task is None:
        return
    name = task.get_name() if hasattr(task, "get_name") else repr(task)
    # the unit it held names its cascade and ActiveTask (still listed when the task is
    # freed by reference counting; already moved to _COLLECTED by a collector pass)
    ref = _LIVE.get(id(task))
    token = ref if ref is not None else _COLLECTED.pop(id(task), None)
    task_id = (token.owner if token is not None else None) or (name.split(":", 1)[1] if ":" in name else "")
    trace_id = token.trace_id if token is not None else rt.task_trace.get(task_id, "")
    plumbing = bool(token is not None and token.plumbing)
    detail = {
        names.ATTR_ASYNCIO_TASK: name,
        names.ATTR_TASK_ID: task_id,
        names.ATTR_DESTROYED_TRACE_ID: trace_id,
        names.ATTR_PARKED_AT: where if (where := task_location(task)) != "unknown" else rt.parked.get(name, where),
    }
    if plumbing:
        detail[names.ATTR_SDK_PLUMBING] = True
    rt.tracker.destroyed_pending_seen(detail)
    add_metric(rt.destroyed, 1, {names.ATTR_ASYNCIO_TASK: name.split(":", 1)[0], names.ATTR_SDK_PLUMBING: plumbing})
    span = start_span(rt, names.SPAN_DESTROYED_PENDING, attributes={k: v for k, v in detail.items() if v})
    with guard("destroyed_pending span"):
        span.set_status(Status(StatusCode.ERROR, message))
    end_span(span)
    if loop.is_closed() or not loop.is_running():
        # the loop is gone (shutdown): this may be the last chance to report.
        # While it runs, the reporter thread sends it; never block the agent here.
        rt.flush()


# --- stall watchdog ------------------------------------------------------------
class StallWatch:
    """Reports a close/aclose that has not returned after the stall threshold."""

    def __init__(self, rt: Runtime, span: trace.Span, what: str, task_id: str) -> None:
        self.rt = rt
        self.span = span
        self.what = what
        self.task_id = task_id
        self.stalled = False
        self.handle: asyncio.TimerHandle | None = None
        self.waiter = asyncio.current_task()
        if rt.stall_seconds > 0:
            self.handle = asyncio.get_running_loop().call_later(rt.stall_seconds, self._fire)

    def _fire(self) -> None:
        with guard("watchdog"):
            self.stalled = True
            parked = task_location(self.waiter) if self.waiter is not None else "unknown"
            attrs = {names.ATTR_TASK_ID: self.task_id, names.ATTR_PARKED_AT: parked, "a2a.stall.operation": self.what}
            self.rt.tracker.stall_began(attrs | {"threshold_seconds": self.rt.stall_seconds})
            add_metric(self.rt.stalled, 1)
            self.span.add_event(names.EVENT_STALL, attrs)
            self.span.set_attribute(names.ATTR_STALLED, True)

    def done(self) -> None:
        with guard("watchdog"):
            if self.handle is not None:
                self.handle.cancel()
            if self.stalled:
                self.rt.tracker.stall_ended()
                add_metric(self.rt.stalled, -1)
                self.span.add_event(names.EVENT_STALL_RESOLVED)
