"""The wrappers around an ActiveTask's life: build, start, cancel and aclose,
its executor, its queues' closes, the states its task reaches, the legacy
handler's producer, and the shutdown record (fail-open, as every wrapper: see
``runtime``)."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Callable

from opentelemetry import context as otel_context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from a2a_quiescence import names
from a2a_quiescence.instrumentation.loop import (
    StallWatch, ensure_loop_hooks, innermost_location, plumbing_units, task_location,
)
from a2a_quiescence.instrumentation.runtime import (
    ActiveTaskState,
    CASCADE, OWNER, Runtime, client_cancel_requested, current, current_cascade, end_span, guard,
    new_ending, note_task_state, record_ending, run_executor, start_span,
)


# --- ActiveTask ----------------------------------------------------------------
# queue -> (role, task id). The value must not reference the ActiveTask: it holds
# the queue, so a strong reference here would keep key and task alive forever.
_QUEUE_ROLES: "weakref.WeakKeyDictionary[Any, tuple[str, str]]" = weakref.WeakKeyDictionary()
_TASK_STATE: "weakref.WeakKeyDictionary[Any, ActiveTaskState]" = weakref.WeakKeyDictionary()
# an ActiveTask's TaskManager -> the ActiveTask's state (task states are saved through it)
_TASK_MANAGER_STATE: "weakref.WeakKeyDictionary[Any, ActiveTaskState]" = weakref.WeakKeyDictionary()


class _ExecutorProxy:
    """Stands in for an ActiveTask's AgentExecutor to learn how execute ended."""

    def __init__(self, executor: Any, state: ActiveTaskState) -> None:
        self._a2aq_executor = executor
        self._a2aq_state = state

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        state = self._a2aq_state
        rt = current()
        try:
            coro = self._a2aq_executor.execute(*args, **kwargs)
            task_id = None
            if rt is not None:
                with guard("execute"):
                    request = args[0] if args else kwargs.get("context")
                    task_id = str(getattr(request, "task_id", "") or state.task_id)
            if task_id is None:
                return await coro
            return await run_executor(rt, task_id, state, coro)
        except asyncio.CancelledError:
            state.end(names.OUTCOME_CANCELLED)
            raise
        except BaseException:
            state.end(names.OUTCOME_FAILED)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._a2aq_executor, name)


def _owner_state(args: Any, kwargs: Any) -> ActiveTaskState:
    """The state of an ActiveTask about to be built: its task id, its cascade."""
    task_id = kwargs.get("task_id", args[1] if len(args) > 1 else None)
    return ActiveTaskState(task_id=str(task_id or ""), cascade=CASCADE.get())


def active_task_init(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = current()
    state = owner_token = None
    if rt is not None:
        with guard("ActiveTask.__init__/owner"):
            state = _owner_state(args, kwargs)
            owner_token = OWNER.set(state)  # its queues' dispatcher tasks are its plumbing
    try:
        result = wrapped(*args, **kwargs)
    finally:
        if owner_token is not None:
            OWNER.reset(owner_token)
    if rt is not None and state is not None:
        with guard("ActiveTask.__init__"):
            _TASK_STATE[instance] = state
            _TASK_MANAGER_STATE[instance._task_manager] = state
            task_id = str(getattr(instance, "task_id", "") or "")
            _QUEUE_ROLES[instance._event_queue_agent] = (names.ROLE_AGENT, task_id)
            _QUEUE_ROLES[instance._event_queue_subscribers] = (names.ROLE_SUBSCRIBERS, task_id)
            instance._agent_executor = _ExecutorProxy(instance._agent_executor, state)
    return result


async def active_task_start(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = current()
    span = None
    token = owner_token = None
    if rt is not None and (state := _TASK_STATE.get(instance)) is not None:
        with guard("ActiveTask.start/owner"):
            owner_token = OWNER.set(state)  # producer and consumer are its plumbing
    if rt is not None and getattr(instance, "_producer_task", None) is None:
        with guard("ActiveTask.start"):
            ensure_loop_hooks(rt)
            tm = getattr(instance, "_task_manager", None)
            attrs = producer_attributes(rt, str(instance.task_id), getattr(tm, "context_id", None))
            span = start_span(rt, names.SPAN_PRODUCER, kind=SpanKind.INTERNAL, attributes=attrs)
            # spawned tasks copy this context: the producer's own spans nest under it
            token = otel_context.attach(trace.set_span_in_context(span))
    try:
        return await wrapped(*args, **kwargs)
    finally:
        if owner_token is not None:
            with guard("ActiveTask.start/owner"):
                OWNER.reset(owner_token)
        if token is not None:
            with guard("ActiveTask.start/detach"):
                otel_context.detach(token)
        if rt is not None:
            with guard("ActiveTask.start/unstarted"):
                _release_unstarted(rt, instance)
        if rt is not None and span is not None:
            with guard("ActiveTask.start/after"):
                producer = getattr(instance, "_producer_task", None)
                known = _TASK_STATE.get(instance)
                if producer is not None and not (known is not None and known.tracked):
                    _track_producer(rt, instance, producer, span)
                # else: no producer was spawned; the span is never ended, so never exported


def producer_attributes(rt: Runtime, task_id: str, context_id: Any) -> dict[str, Any]:
    """A producer span's task and context (the conventions' names; under ``a2a/dup`` the
    context also as before, ``a2a.context.id``)."""
    attrs: dict[str, Any] = {names.ATTR_TASK_ID: task_id}
    if context_id:
        attrs[names.ATTR_CONVERSATION_ID] = str(context_id)
        if rt.semconv_dup:
            attrs[names.LEGACY_ATTR_CONTEXT_ID] = str(context_id)
    return attrs


def _release_unstarted(rt: Runtime, instance: Any) -> None:
    """An ActiveTask that finished without ever spawning a producer (a2a-sdk's V2
    handler builds one for a SendMessage to a task already terminal) never closes its
    queues: their dispatcher tasks wait forever and are garbage-collected while
    pending. They never carried work and nothing will ever feed them, so their
    units are released now, as SDK plumbing, instead of holding the cascade until
    the collector runs."""
    state = _TASK_STATE.get(instance)
    if state is None or getattr(instance, "_producer_task", None) is not None or not instance.is_finished:
        return
    for token in plumbing_units(state):
        token.plumbing = True
        rt.tracker.release(token)


def _track_producer(rt: Runtime, instance: Any, producer: asyncio.Task, span: trace.Span) -> None:
    state = _TASK_STATE.get(instance)
    if state is None:
        state = _TASK_STATE[instance] = ActiveTaskState(task_id=str(instance.task_id))
    state.tracked = True
    producer_started(rt, str(instance.task_id), producer)

    def finished(task: asyncio.Task) -> None:
        with guard("producer done"):
            outcome = state.outcome
            if task.cancelled():
                outcome = names.OUTCOME_CANCELLED
            elif outcome is None:
                exc = task.exception()
                outcome = names.OUTCOME_FAILED if exc is not None else names.OUTCOME_COMPLETED
            producer_finished(rt, span, outcome, state=rt.task_states.get(str(instance.task_id)))

    producer.add_done_callback(finished)


def producer_started(rt: Runtime, task_id: str, producer: asyncio.Task, key: str | None = None) -> None:
    """A producer (the task running the agent for task ``task_id``) was spawned.
    ``key``: the producer runs in a longer-lived task (a fasta2a worker's loop) and
    is listed under this name until ``producer_finished`` is given it."""
    cascade = current_cascade()
    if cascade:
        rt.task_trace[task_id] = cascade
        if len(rt.task_trace) > 10_000:
            rt.task_trace.pop(next(iter(rt.task_trace)))
    rt.producers[key or producer.get_name()] = producer
    rt.tracker.producer_started()  # the producer metrics read the tracker's counts (Runtime)


def producer_finished(rt: Runtime, span: trace.Span | None, outcome: str, key: str | None = None,
                       state: str | None = None) -> None:
    """``state``: the last state its task reached (``a2a.task.state`` on the span)."""
    if key is not None:
        rt.producers.pop(key, None)
    rt.tracker.producer_finished(outcome)
    with guard("producer span"):
        span.set_attribute(names.ATTR_OUTCOME, outcome)
        if state:
            span.set_attribute(names.ATTR_TASK_STATE, state)
        if outcome == names.OUTCOME_FAILED:
            span.set_status(Status(StatusCode.ERROR, "agent executor failed"))
    end_span(span)


def _producer_working(instance: Any, state: ActiveTaskState) -> bool:
    """The producer still runs the agent's work (or waits for its user's next message)."""
    producer = getattr(instance, "_producer_task", None)
    return (
        producer is not None
        and not producer.done()
        and not instance.is_finished
        and bool(state.executing or state.awaiting)
    )


def _parked_where(instance: Any, state: ActiveTaskState) -> str:
    ref = state.exec_task
    task = ref() if ref is not None else None
    if task is None or task.done():
        task = getattr(instance, "_producer_task", None)
    return innermost_location(task) if task is not None else "unknown"


async def active_task_cancel(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = current()
    with guard("ActiveTask.cancel"):
        state = _TASK_STATE.get(instance)
        if state is not None and rt is not None:
            if _producer_working(instance, state):
                # recorded now, while the producer still holds its unit
                client_cancel_requested(rt, state.task_id)
                record_ending(rt, state.cascade, new_ending(names.END_TASK_CANCELLED, state.task_id))
            state.end(names.OUTCOME_CANCELLED)
    return await wrapped(*args, **kwargs)


def _aclose_wrapper(span_name: str, on_start: Callable[[Runtime, Any], None] | None = None,
                    on_end: Callable[[Runtime], None] | None = None) -> Callable:
    """A wrapper for an ``aclose`` coroutine method: a span named ``span_name`` around
    it, watched for stalls; ``on_start(rt, instance)`` runs before it, ``on_end(rt)`` after."""
    async def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        rt = current()
        span = watch = token = None
        if rt is not None:
            with guard(span_name):
                task_id = str(getattr(instance, "task_id", "") or "")
                attrs = {names.ATTR_TASK_ID: task_id} if task_id else {}
                if on_start is not None:
                    on_start(rt, instance)
                span = start_span(rt, span_name, attributes=attrs)
                token = otel_context.attach(trace.set_span_in_context(span))
                watch = StallWatch(rt, span, span_name, task_id)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            if rt is not None and span is not None:
                with guard(span_name + "/end"):
                    if watch is not None:
                        watch.done()
                    if token is not None:
                        otel_context.detach(token)
                    task_id = str(getattr(instance, "task_id", "") or "")
                    if task_id and rt.task_states.get(task_id):
                        span.set_attribute(names.ATTR_TASK_STATE, rt.task_states[task_id])
                end_span(span)  # before on_end: its flush must include this span
                if on_end is not None:
                    with guard(span_name + "/on_end"):
                        on_end(rt)

    return wrapper


def _drain_task(rt: Runtime, instance: Any) -> None:
    """``ActiveTask.aclose`` is about to cancel this task's producer: if it still
    ran the agent's work (or waited for its user), that work is lost. Recorded
    before the cancel, while the producer holds its unit."""
    state = _TASK_STATE.get(instance)
    producer = getattr(instance, "_producer_task", None)
    if state is None or producer is None or producer.done():
        return
    state.end(names.OUTCOME_CANCELLED)
    if _producer_working(instance, state) and state.cause is None:
        state.cause = "shutdown"
        state.parked_at = _parked_where(instance, state)
        detail = "waiting for its user's input" if state.awaiting and not state.executing else "executing"
        record_ending(
            rt, state.cascade,
            new_ending(names.END_CANCELLED_BY_SHUTDOWN, state.task_id, detail=detail, parked_at=state.parked_at),
        )
        rt.tracker.shutdown_cancelled()


def _shutdown_completed(reason: str) -> Callable[[Runtime], None]:
    def record(rt: Runtime) -> None:
        record_shutdown(rt, reason)

    return record


def record_shutdown(rt: Runtime, reason: str) -> int:
    parked = {}
    for name, task in list(rt.producers.items()):
        if not task.done():
            # taken now: once the loop is gone, a leaked coroutine may be closed
            # before its task is reported destroyed, and its frames with it
            parked[name] = rt.parked[name] = task_location(task)
    while len(rt.parked) > 1000:
        rt.parked.pop(next(iter(rt.parked)))
    leaked = rt.tracker.shutdown_completed(reason, parked)
    rt.flush()
    return leaked


def _shutting_down(rt: Runtime, instance: Any) -> None:
    rt.shutting_down = True


handler_aclose = _aclose_wrapper(names.SPAN_HANDLER_ACLOSE, _shutting_down, _shutdown_completed("request_handler.aclose"))
registry_aclose = _aclose_wrapper(names.SPAN_REGISTRY_ACLOSE)
task_aclose = _aclose_wrapper(names.SPAN_TASK_ACLOSE, _drain_task)


async def queue_close(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = current()
    span = watch = None
    if rt is not None:
        with guard("EventQueue.close"):
            owner = _QUEUE_ROLES.get(instance)
            if owner is not None and not getattr(instance, "_is_closed", False):
                role, task_id = owner
                immediate = bool(kwargs.get("immediate", args[0] if args else False))
                span = start_span(
                    rt,
                    names.SPAN_QUEUE_CLOSE,
                    attributes={
                        names.ATTR_QUEUE_ROLE: role,
                        names.ATTR_CLOSE_IMMEDIATE: immediate,
                        names.ATTR_TASK_ID: task_id,
                    },
                )
                watch = StallWatch(rt, span, "event_queue.close", task_id)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        if span is not None:
            with guard("EventQueue.close/end"):
                if watch is not None:
                    watch.done()
                span.end()


# --- task states: failed, rejected, cancelled, waiting for the user -------------
_TERMINAL_ENDINGS = {
    "TASK_STATE_FAILED": names.END_TASK_FAILED,
    "TASK_STATE_REJECTED": names.END_TASK_REJECTED,
    "TASK_STATE_CANCELED": names.END_TASK_CANCELLED,
}


def task_saved(state_name: Callable[[Any], str]) -> Callable:
    """``TaskManager._save_task(task)``: every state a task reaches, in every handler;
    ``state_name`` gives the state's protobuf-style name (``TASK_STATE_FAILED``)."""

    async def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        result = await wrapped(*args, **kwargs)
        rt = current()
        if rt is not None:
            with guard("TaskManager._save_task"):
                task = args[0] if args else kwargs.get("task")
                _task_state_seen(rt, instance, str(task.id), state_name(task.status.state))
        return result

    return wrapper


def _task_state_seen(rt: Runtime, manager: Any, task_id: str, state_name: str) -> None:
    note_task_state(rt, task_id, state_name)
    owner = _TASK_MANAGER_STATE.get(manager)
    # an ActiveTask's state belongs to the cascade that started it while that still
    # holds the task's plumbing; anything else to the request that wrote it
    if owner is not None and owner.cascade and rt.tracker.holds(owner.cascade, task_id):
        cascade = owner.cascade
    else:
        cascade = CASCADE.get()
    if not cascade:
        return
    awaiting = names.AWAITING_STATES.get(state_name)
    if owner is not None:
        owner.awaiting = awaiting
    rt.tracker.task_state(cascade, task_id, awaiting)
    kind = _TERMINAL_ENDINGS.get(state_name)
    if kind is not None:
        record_ending(rt, cascade, new_ending(kind, task_id))


async def event_stream_producer(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """``_run_event_stream(request, queue)``: the producer of the legacy handler (a2a-sdk
    0.3's only one): the agent's ``execute``, then its queue's close, in a task the
    handler spawned (which holds its unit of the cascade through the task factory)."""
    rt = current()
    if rt is None:
        return await wrapped(*args, **kwargs)
    span = token = None
    task_id = ""
    state = ActiveTaskState()
    with guard("_run_event_stream"):
        request = args[0] if args else kwargs.get("request")
        queue = args[1] if len(args) > 1 else kwargs.get("queue")
        task_id = str(getattr(request, "task_id", "") or "")
        state.task_id, state.cascade = task_id, current_cascade()
        if queue is not None:
            _QUEUE_ROLES[queue] = (names.ROLE_AGENT, task_id)
        attrs = producer_attributes(rt, task_id, getattr(request, "context_id", None))
        span = start_span(rt, names.SPAN_PRODUCER, kind=SpanKind.INTERNAL, attributes=attrs)
        token = otel_context.attach(trace.set_span_in_context(span))
        producer_started(rt, task_id, asyncio.current_task())
    outcome = names.OUTCOME_COMPLETED
    try:
        return await run_executor(rt, task_id, state, wrapped(*args, **kwargs))
    except asyncio.CancelledError:
        outcome = names.OUTCOME_CANCELLED
        raise
    except BaseException:
        outcome = names.OUTCOME_FAILED
        raise
    finally:
        if token is not None:
            with guard("_run_event_stream/detach"):
                otel_context.detach(token)
        if span is not None:
            with guard("_run_event_stream/end"):
                producer_finished(rt, span, outcome, state=rt.task_states.get(task_id))


# --- server shutdown -------------------------------------------------------------
async def uvicorn_shutdown(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = current()
    if rt is not None:
        rt.shutting_down = True
    try:
        return await wrapped(*args, **kwargs)
    finally:
        rt = current()
        if rt is not None:
            with guard("uvicorn shutdown"):
                # uvicorn re-raises SIGTERM right after this: atexit will not run
                record_shutdown(rt, "server_shutdown")


def at_exit() -> None:
    rt = current()
    if rt is not None:
        with guard("atexit"):
            if rt.tracker.shutdown is None or rt.tracker.producers_in_flight:
                record_shutdown(rt, "interpreter_exit")
