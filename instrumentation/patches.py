"""The wrappers put around a2a-sdk (and uvicorn, httpx) by the instrumentor.

Every wrapper is fail-open: our own code runs inside ``_guard`` blocks that log
an error once per site and swallow it; the wrapped call itself is always made
exactly once, and its result, exception or cancellation reaches the caller
unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import random
import urllib.parse
import uuid
import weakref
from typing import Any, Callable

from opentelemetry import baggage, context as otel_context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from a2a_quiescence import names
from a2a_quiescence.instrumentation.tracker import HopTracker, WorkToken

logger = logging.getLogger("a2a_quiescence.instrumentation")

_TRACECONTEXT = TraceContextTextMapPropagator()
_BAGGAGE = W3CBaggagePropagator()

# the cascade (trace id, 32 hex) whose work the current code runs on behalf of
CASCADE: contextvars.ContextVar[str | None] = contextvars.ContextVar("a2a_quiescence_cascade", default=None)
# headers to add to the push delivery made by the current task
_PUSH_HEADERS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "a2a_quiescence_push_headers", default=None
)

# the ActiveTask (its state dict) being built or started: the tasks it spawns
# then are its plumbing (producer, consumer, queue dispatchers), owned by it
_OWNER: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("a2a_quiescence_owner", default=None)

_warned: set[str] = set()


def _report_internal_error(site: str, exc: BaseException) -> None:
    if site not in _warned:
        _warned.add(site)
        logger.error("a2a-quiescence: internal error in %s (further errors here are silent): %r", site, exc, exc_info=exc)


class _guard:  # noqa: N801 - used like a function: `with _guard("site"):`
    """Run instrumentation code; never let its failure reach the agent.

    A class rather than @contextmanager: it runs dozens of times per request."""

    __slots__ = ("site",)

    def __init__(self, site: str) -> None:
        self.site = site

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None and issubclass(exc_type, Exception):
            _report_internal_error(self.site, exc)
            return True  # fail-open by design
        return False


def _start_span(rt: "Runtime", name: str, **kwargs: Any) -> trace.Span:
    """Start a span; a broken tracer/processor gives a non-recording span instead."""
    try:
        return rt.tracer.start_span(name, **kwargs)
    except Exception as exc:  # noqa: BLE001 - fail-open
        _report_internal_error("start_span " + name, exc)
        return trace.INVALID_SPAN


def _end(span: trace.Span | None) -> None:
    """End a span; a broken span processor must not skip what follows."""
    if span is not None:
        with _guard("span.end"):
            span.end()


def _record_error(span: trace.Span | None, exc: BaseException) -> None:
    """Mark a span failed with the exception the agent saw (which still propagates)."""
    if span is not None:
        with _guard("span error"):
            span.record_exception(exc)
            span.set_attribute(names.ATTR_ERROR_TYPE, type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _add(instrument: Any, value: int, attributes: dict[str, Any] | None = None) -> None:
    """Update a metric; a broken meter must not skip what follows."""
    with _guard("metric"):
        instrument.add(value, attributes)


class Runtime:
    """What the wrappers need: tracer, instruments, the hop tracker, settings."""

    def __init__(self, tracer: trace.Tracer, meter: Any, tracker: HopTracker, service_name: str, stall_seconds: float) -> None:
        self.tracer = tracer
        self.tracker = tracker
        self.service_name = service_name
        self.stall_seconds = stall_seconds
        self.flush: Callable[[], None] = lambda: None
        self.in_flight = meter.create_up_down_counter(
            names.OTEL_PRODUCERS_IN_FLIGHT, unit="{producer}", description="ActiveTask producers spawned and not yet finished"
        )
        self.started = meter.create_counter(
            names.OTEL_PRODUCERS_STARTED, unit="{producer}", description="ActiveTask producers spawned"
        )
        self.finished = meter.create_counter(
            names.OTEL_PRODUCERS_FINISHED, unit="{producer}", description="ActiveTask producers finished, by outcome"
        )
        self.stalled = meter.create_up_down_counter(
            names.OTEL_STALLED_CLOSES,
            unit="{close}",
            description="EventQueue closes and acloses that have not returned after the stall threshold",
        )
        self.destroyed = meter.create_counter(
            names.OTEL_DESTROYED_PENDING, unit="{task}", description="asyncio tasks destroyed while pending"
        )
        self.ended = meter.create_counter(
            names.OTEL_WORK_ENDED, unit="{unit}", description="Work that failed or was lost, by how it ended"
        )
        # a shutdown began (handler aclose, server shutdown): cancellations now are the drain's
        self.shutting_down = False
        # a2a task ids a client asked to cancel (tasks/cancel), newest last, bounded
        self.client_cancels: dict[str, None] = {}

        def _leaked(_options: Any) -> Any:
            from opentelemetry.metrics import Observation

            shutdown = tracker.shutdown
            if shutdown is None:
                return []
            return [Observation(shutdown["leaked_producers"])]

        meter.create_observable_gauge(
            names.OTEL_SHUTDOWN_LEAKED,
            callbacks=[_leaked],
            unit="{producer}",
            description="Producers in flight when the last shutdown completed",
        )
        # task id -> trace id of the request that spawned its producer (bounded)
        self.task_trace: dict[str, str] = {}
        # live producer tasks by name, and where leaked ones were parked at shutdown
        self.producers: "weakref.WeakValueDictionary[str, asyncio.Task]" = weakref.WeakValueDictionary()
        self.parked: dict[str, str] = {}
        self.loops: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]]" = weakref.WeakKeyDictionary()


RT: Runtime | None = None


# --- helpers -------------------------------------------------------------------
def _trace_hex(span_context: trace.SpanContext) -> str:
    return format(span_context.trace_id, "032x")


def _synthetic_span(cascade: str) -> trace.Span:
    """A stand-in parent carrying the cascade's trace id when no real span has it."""
    return trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=int(cascade, 16),
            span_id=random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
    )


def _authority(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc:
        return parts.netloc.lower()
    return url.lower()


def _current_cascade() -> str | None:
    cascade = CASCADE.get()
    if cascade:
        return cascade
    return None


def _server_attributes(authority: str) -> dict[str, Any]:
    """``server.address`` and ``server.port`` (semantic conventions) of a host:port."""
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and host:
        return {names.ATTR_SERVER_ADDRESS: host.strip("[]"), names.ATTR_SERVER_PORT: int(port)}
    return {names.ATTR_SERVER_ADDRESS: authority}


def _outbound_headers(rt: Runtime, message_id: str | None, context: Any = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    ctx = baggage.set_baggage(names.BAGGAGE_SENDER, rt.service_name, context=context)
    _TRACECONTEXT.inject(carrier, context=ctx)
    _BAGGAGE.inject(carrier, context=ctx)
    carrier[names.HEADER_SENDER] = rt.service_name
    if message_id:
        carrier[names.HEADER_MESSAGE_ID] = message_id
    return carrier


# --- how work ended -----------------------------------------------------------
def _ending(kind: str, task_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "task_id": task_id or None, **extra}


def record_ending(rt: Runtime, cascade: str | None, ending: dict[str, Any]) -> None:
    """Record a failure or loss on ``cascade``; the caller holds a unit of it."""
    if cascade:
        rt.tracker.record_ending(cascade, ending)
        _add(rt.ended, 1, {names.ATTR_ENDING: ending["kind"]})


def _cancel_ending(rt: Runtime, task_id: str, state: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """How a cancellation of task ``task_id``'s work ended it: a client's cancel is
    a failure the agents report; a shutdown's, or one of unknown cause, a loss."""
    if task_id in rt.client_cancels:
        return _ending(names.END_TASK_CANCELLED, task_id, **extra)
    if (state is not None and state.get("cause") == "shutdown") or rt.shutting_down:
        return _ending(names.END_CANCELLED_BY_SHUTDOWN, task_id, **extra)
    return _ending(names.END_CANCELLED, task_id, **extra)


def _client_cancel_requested(rt: Runtime, task_id: str) -> None:
    rt.client_cancels[task_id] = None
    while len(rt.client_cancels) > 10_000:
        del rt.client_cancels[next(iter(rt.client_cancels))]


async def _run_executor(rt: Runtime, task_id: str, state: dict[str, Any] | None, coro: Any) -> Any:
    """Await the agent's ``execute``; record on the current cascade how it ended
    when it did not complete (inside the executor's task, so while its unit is held)."""
    if state is not None:
        state["executing"] = state.get("executing", 0) + 1
        # weak: a failed task's exception (its traceback) reaches back to the ActiveTask
        state["exec_task"] = weakref.ref(asyncio.current_task())
    try:
        return await coro
    except asyncio.CancelledError:
        with _guard("execute cancelled"):
            record_ending(rt, CASCADE.get(), _cancel_ending(rt, task_id, state, parked_at=(state or {}).get("parked_at")))
        raise
    except BaseException as exc:
        with _guard("execute failed"):
            record_ending(rt, CASCADE.get(), _ending(names.END_EXECUTOR_FAILED, task_id, **{"error.type": type(exc).__name__}))
        raise
    finally:
        if state is not None:
            state["executing"] -= 1


# --- event loop hooks: spawned work, destroyed-pending tasks -------------------
class _TaskRef(weakref.ref):
    """A weak reference to a task holding a unit of work: if the task is garbage
    collected while pending, its done-callbacks never run and this releases the unit."""

    __slots__ = ("key", "token", "tracker")


# id(task) -> its _TaskRef, while the task holds its unit
_LIVE: dict[int, _TaskRef] = {}
# id(task) -> token of tasks collected while pending, for the finalizer's report (bounded)
_COLLECTED: dict[int, WorkToken] = {}


def forget_inherited_units() -> None:
    """After a fork: the parent's tasks do not run here; their units were the parent's."""
    for ref in list(_LIVE.values()):
        ref.token.released = True
    _LIVE.clear()
    _COLLECTED.clear()


def _task_done(task: asyncio.Future) -> None:
    ref = _LIVE.pop(id(task), None)
    if ref is not None:
        ref.tracker.release(ref.token)


def _task_collected(ref: _TaskRef) -> None:
    # runs inside the garbage collector, in any thread: no locks (release_later)
    if _LIVE.get(ref.key) is ref:
        del _LIVE[ref.key]
    token = ref.token
    _COLLECTED[ref.key] = token
    while len(_COLLECTED) > 256:
        del _COLLECTED[next(iter(_COLLECTED))]
    if not token.released:
        ref.tracker.release_later(
            token, _ending(names.END_DESTROYED_PENDING, token.owner, detail=token.what)
        )


def _hold(tracker: HopTracker, task: asyncio.Future, cascade: str, owner: dict[str, Any] | None, coro: Any) -> None:
    """``task`` holds a unit of ``cascade`` until it is done (or collected)."""
    token = tracker.acquire(cascade, owner["task_id"] if owner is not None else None, getattr(coro, "__qualname__", None))
    if owner is not None:
        owner["tokens"].append(token)
    ref = _TaskRef(task, _task_collected)
    ref.key, ref.token, ref.tracker = id(task), token, tracker
    _LIVE[ref.key] = ref
    task.add_done_callback(_task_done)

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

    def factory(loop_: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future:
        if previous_factory is not None:
            task = previous_factory(loop_, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop_, **kwargs)
        runtime = RT
        if runtime is not None:
            # hot path (every task the agent creates): a plain try, not _guard
            try:
                ctx = kwargs.get("context")
                cascade = ctx.get(CASCADE) if ctx is not None else CASCADE.get()
                if cascade:
                    _hold(runtime.tracker, task, cascade, ctx.get(_OWNER) if ctx is not None else _OWNER.get(), coro)
            except Exception as exc:  # noqa: BLE001 - fail-open
                _report_internal_error("task_factory", exc)
        return task

    def handler(loop_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        runtime = RT
        if runtime is not None:
            with _guard("exception_handler"):
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
        with _guard("remove_loop_hooks"):
            if not loop.is_closed():
                loop.set_task_factory(factory)
                loop.set_exception_handler(handler)
    rt.loops.clear()


def _where(task: asyncio.Task) -> str:
    try:
        frames = task.get_stack()
    except Exception:  # noqa: BLE001
        return "unknown"
    if not frames:
        return "unknown"
    f = frames[-1]
    return f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"


def _innermost(task: asyncio.Task) -> str:
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
    token = ref.token if ref is not None else _COLLECTED.pop(id(task), None)
    task_id = (token.owner if token is not None else None) or (name.split(":", 1)[1] if ":" in name else "")
    trace_id = token.trace_id if token is not None else rt.task_trace.get(task_id, "")
    plumbing = bool(token is not None and token.plumbing)
    detail = {
        names.ATTR_ASYNCIO_TASK: name,
        names.ATTR_TASK_ID: task_id,
        "trace_id": trace_id,
        names.ATTR_PARKED_AT: where if (where := _where(task)) != "unknown" else rt.parked.get(name, where),
    }
    if plumbing:
        detail[names.ATTR_SDK_PLUMBING] = True
    rt.tracker.destroyed_pending_seen(detail)
    _add(rt.destroyed, 1, {names.ATTR_ASYNCIO_TASK: name.split(":", 1)[0], names.ATTR_SDK_PLUMBING: plumbing})
    span = _start_span(rt, "a2a.task.destroyed_pending", attributes={k: v for k, v in detail.items() if v})
    with _guard("destroyed_pending span"):
        span.set_status(Status(StatusCode.ERROR, message))
    _end(span)
    if loop.is_closed() or not loop.is_running():
        # the loop is gone (shutdown): this may be the last chance to report.
        # While it runs, the reporter thread sends it; never block the agent here.
        rt.flush()


# --- stall watchdog ------------------------------------------------------------
class _Watch:
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
        with _guard("watchdog"):
            self.stalled = True
            parked = _where(self.waiter) if self.waiter is not None else "unknown"
            attrs = {names.ATTR_TASK_ID: self.task_id, names.ATTR_PARKED_AT: parked, "a2a.stall.operation": self.what}
            self.rt.tracker.stall_began(attrs | {"threshold_seconds": self.rt.stall_seconds})
            _add(self.rt.stalled, 1)
            self.span.add_event(names.EVENT_STALL, attrs)
            self.span.set_attribute(names.ATTR_STALLED, True)

    def done(self) -> None:
        with _guard("watchdog"):
            if self.handle is not None:
                self.handle.cancel()
            if self.stalled:
                self.rt.tracker.stall_ended()
                _add(self.rt.stalled, -1)
                self.span.add_event(names.EVENT_STALL_RESOLVED)


# --- ActiveTask ----------------------------------------------------------------
# queue -> (role, task id). The value must not reference the ActiveTask: it holds
# the queue, so a strong reference here would keep key and task alive forever.
_QUEUE_ROLES: "weakref.WeakKeyDictionary[Any, tuple[str, str]]" = weakref.WeakKeyDictionary()
_TASK_STATE: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()
# an ActiveTask's TaskManager -> the ActiveTask's state (task states are saved through it)
_TASK_MANAGER_STATE: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


class _ExecutorProxy:
    """Stands in for an ActiveTask's AgentExecutor to learn how execute ended."""

    def __init__(self, executor: Any, state: dict[str, Any]) -> None:
        self._a2aq_executor = executor
        self._a2aq_state = state

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        state = self._a2aq_state
        rt = RT
        try:
            coro = self._a2aq_executor.execute(*args, **kwargs)
            task_id = None
            if rt is not None:
                with _guard("execute"):
                    request = args[0] if args else kwargs.get("context")
                    task_id = str(getattr(request, "task_id", "") or state.get("task_id", ""))
            if task_id is None:
                return await coro
            return await _run_executor(rt, task_id, state, coro)
        except asyncio.CancelledError:
            state.setdefault("outcome", names.OUTCOME_CANCELLED)
            raise
        except BaseException:
            state.setdefault("outcome", names.OUTCOME_FAILED)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._a2aq_executor, name)


def _owner_state(args: Any, kwargs: Any) -> dict[str, Any] | None:
    """The state of an ActiveTask about to be built: its task id, its cascade, its units."""
    task_id = kwargs.get("task_id", args[1] if len(args) > 1 else None)
    return {"task_id": str(task_id or ""), "cascade": CASCADE.get(), "tokens": []}


def active_task_init(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = RT
    state = owner_token = None
    if rt is not None:
        with _guard("ActiveTask.__init__/owner"):
            state = _owner_state(args, kwargs)
            owner_token = _OWNER.set(state)  # its queues' dispatcher tasks are its plumbing
    try:
        result = wrapped(*args, **kwargs)
    finally:
        if owner_token is not None:
            _OWNER.reset(owner_token)
    if rt is not None and state is not None:
        with _guard("ActiveTask.__init__"):
            _TASK_STATE[instance] = state
            _TASK_MANAGER_STATE[instance._task_manager] = state
            task_id = str(getattr(instance, "task_id", "") or "")
            _QUEUE_ROLES[instance._event_queue_agent] = (names.ROLE_AGENT, task_id)
            _QUEUE_ROLES[instance._event_queue_subscribers] = (names.ROLE_SUBSCRIBERS, task_id)
            instance._agent_executor = _ExecutorProxy(instance._agent_executor, state)
    return result


async def active_task_start(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = RT
    span = None
    token = owner_token = None
    if rt is not None and (state := _TASK_STATE.get(instance)) is not None:
        with _guard("ActiveTask.start/owner"):
            owner_token = _OWNER.set(state)  # producer and consumer are its plumbing
    if rt is not None and getattr(instance, "_producer_task", None) is None:
        with _guard("ActiveTask.start"):
            ensure_loop_hooks(rt)
            tm = getattr(instance, "_task_manager", None)
            attrs = {names.ATTR_TASK_ID: str(instance.task_id)}
            context_id = getattr(tm, "context_id", None)
            if context_id:
                attrs[names.ATTR_CONTEXT_ID] = str(context_id)
            span = _start_span(rt, names.SPAN_PRODUCER, kind=SpanKind.INTERNAL, attributes=attrs)
            # spawned tasks copy this context: the producer's own spans nest under it
            token = otel_context.attach(trace.set_span_in_context(span))
    try:
        return await wrapped(*args, **kwargs)
    finally:
        if owner_token is not None:
            with _guard("ActiveTask.start/owner"):
                _OWNER.reset(owner_token)
        if token is not None:
            with _guard("ActiveTask.start/detach"):
                otel_context.detach(token)
        if rt is not None:
            with _guard("ActiveTask.start/unstarted"):
                _release_unstarted(rt, instance)
        if rt is not None and span is not None:
            with _guard("ActiveTask.start/after"):
                producer = getattr(instance, "_producer_task", None)
                if producer is not None and not _TASK_STATE.get(instance, {}).get("tracked"):
                    _track_producer(rt, instance, producer, span)
                # else: no producer was spawned; the span is never ended, so never exported


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
    for token in state["tokens"]:
        if not token.released:
            token.plumbing = True
            rt.tracker.release(token)


def _track_producer(rt: Runtime, instance: Any, producer: asyncio.Task, span: trace.Span) -> None:
    state = _TASK_STATE.setdefault(instance, {})
    state["tracked"] = True
    task_id = str(instance.task_id)
    cascade = _current_cascade()
    if cascade:
        rt.task_trace[task_id] = cascade
        if len(rt.task_trace) > 10_000:
            rt.task_trace.pop(next(iter(rt.task_trace)))
    rt.producers[producer.get_name()] = producer
    rt.tracker.producer_started()

    def finished(task: asyncio.Task) -> None:
        with _guard("producer done"):
            outcome = state.get("outcome")
            if task.cancelled():
                outcome = names.OUTCOME_CANCELLED
            elif outcome is None:
                exc = task.exception()
                outcome = names.OUTCOME_FAILED if exc is not None else names.OUTCOME_COMPLETED
            rt.tracker.producer_finished(outcome)
            _add(rt.finished, 1, {names.ATTR_OUTCOME: outcome})
            _add(rt.in_flight, -1)
            with _guard("producer span"):
                span.set_attribute(names.ATTR_OUTCOME, outcome)
                if outcome == names.OUTCOME_FAILED:
                    span.set_status(Status(StatusCode.ERROR, "agent executor failed"))
            _end(span)

    producer.add_done_callback(finished)
    _add(rt.started, 1)
    _add(rt.in_flight, 1)


def _producer_working(instance: Any, state: dict[str, Any]) -> bool:
    """The producer still runs the agent's work (or waits for its user's next message)."""
    producer = getattr(instance, "_producer_task", None)
    return (
        producer is not None
        and not producer.done()
        and not instance.is_finished
        and bool(state.get("executing") or state.get("awaiting"))
    )


def _parked_where(instance: Any, state: dict[str, Any]) -> str:
    ref = state.get("exec_task")
    task = ref() if ref is not None else None
    if task is None or task.done():
        task = getattr(instance, "_producer_task", None)
    return _innermost(task) if task is not None else "unknown"


async def active_task_cancel(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = RT
    with _guard("ActiveTask.cancel"):
        state = _TASK_STATE.get(instance)
        if state is not None and rt is not None:
            if _producer_working(instance, state):
                # recorded now, while the producer still holds its unit
                _client_cancel_requested(rt, state["task_id"])
                record_ending(rt, state["cascade"], _ending(names.END_TASK_CANCELLED, state["task_id"]))
            state.setdefault("outcome", names.OUTCOME_CANCELLED)
    return await wrapped(*args, **kwargs)


def _aclose_wrapper(span_name: str, on_end: Callable[[Runtime], None] | None = None) -> Callable:
    async def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        rt = RT
        span = watch = token = None
        if rt is not None:
            with _guard(span_name):
                task_id = str(getattr(instance, "task_id", "") or "")
                attrs = {names.ATTR_TASK_ID: task_id} if task_id else {}
                if span_name == names.SPAN_HANDLER_ACLOSE:
                    rt.shutting_down = True
                if span_name == names.SPAN_TASK_ACLOSE:
                    _drain_task(rt, instance)
                span = _start_span(rt, span_name, attributes=attrs)
                token = otel_context.attach(trace.set_span_in_context(span))
                watch = _Watch(rt, span, span_name, task_id)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            if rt is not None and span is not None:
                with _guard(span_name + "/end"):
                    if watch is not None:
                        watch.done()
                    if token is not None:
                        otel_context.detach(token)
                _end(span)  # before on_end: its flush must include this span
                if on_end is not None:
                    with _guard(span_name + "/on_end"):
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
    state.setdefault("outcome", names.OUTCOME_CANCELLED)
    if _producer_working(instance, state) and state.get("cause") is None:
        state["cause"] = "shutdown"
        state["parked_at"] = _parked_where(instance, state)
        detail = "waiting for its user's input" if state.get("awaiting") and not state.get("executing") else "executing"
        record_ending(
            rt, state["cascade"],
            _ending(names.END_CANCELLED_BY_SHUTDOWN, state["task_id"], detail=detail, parked_at=state["parked_at"]),
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
            parked[name] = rt.parked[name] = _where(task)
    while len(rt.parked) > 1000:
        rt.parked.pop(next(iter(rt.parked)))
    leaked = rt.tracker.shutdown_completed(reason, parked)
    rt.flush()
    return leaked


handler_aclose = _aclose_wrapper(names.SPAN_HANDLER_ACLOSE, _shutdown_completed("request_handler.aclose"))
registry_aclose = _aclose_wrapper(names.SPAN_REGISTRY_ACLOSE)
task_aclose = _aclose_wrapper(names.SPAN_TASK_ACLOSE)


async def queue_close(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = RT
    span = watch = None
    if rt is not None:
        with _guard("EventQueue.close"):
            owner = _QUEUE_ROLES.get(instance)
            if owner is not None and not getattr(instance, "_is_closed", False):
                role, task_id = owner
                immediate = bool(kwargs.get("immediate", args[0] if args else False))
                span = _start_span(
                    rt,
                    names.SPAN_QUEUE_CLOSE,
                    attributes={
                        names.ATTR_QUEUE_ROLE: role,
                        names.ATTR_CLOSE_IMMEDIATE: immediate,
                        names.ATTR_TASK_ID: task_id,
                    },
                )
                watch = _Watch(rt, span, "event_queue.close", task_id)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        if span is not None:
            with _guard("EventQueue.close/end"):
                if watch is not None:
                    watch.done()
                span.end()


# --- task states: failed, rejected, cancelled, waiting for the user -------------
_TASK_STATE_NAMES: dict[int, str] = {}


def _state_name(value: int) -> str:
    name = _TASK_STATE_NAMES.get(value)
    if name is None:
        from a2a.types.a2a_pb2 import TaskState

        name = _TASK_STATE_NAMES[value] = TaskState.Name(value)
    return name


_TERMINAL_ENDINGS = {
    "TASK_STATE_FAILED": names.END_TASK_FAILED,
    "TASK_STATE_REJECTED": names.END_TASK_REJECTED,
    "TASK_STATE_CANCELED": names.END_TASK_CANCELLED,
}


async def task_saved(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """``TaskManager._save_task``: every state a task reaches, in both handlers."""
    result = await wrapped(*args, **kwargs)
    rt = RT
    if rt is not None:
        with _guard("TaskManager._save_task"):
            task = args[0] if args else kwargs.get("task")
            _task_state_seen(rt, instance, str(task.id), _state_name(task.status.state))
    return result


def _task_state_seen(rt: Runtime, manager: Any, task_id: str, state_name: str) -> None:
    owner = _TASK_MANAGER_STATE.get(manager)
    # an ActiveTask's state belongs to the cascade that started it while that still
    # holds the task's plumbing; anything else to the request that wrote it
    if owner is not None and owner["cascade"] and rt.tracker.holds(owner["cascade"], task_id):
        cascade = owner["cascade"]
    else:
        cascade = CASCADE.get()
    if not cascade:
        return
    awaiting = names.AWAITING_STATES.get(state_name)
    if owner is not None:
        owner["awaiting"] = awaiting
    rt.tracker.task_state(cascade, task_id, awaiting)
    kind = _TERMINAL_ENDINGS.get(state_name)
    if kind is not None:
        record_ending(rt, cascade, _ending(kind, task_id))


async def legacy_run_event_stream(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """``LegacyRequestHandler._run_event_stream``: the legacy handler's producer."""
    rt = RT
    if rt is None:
        return await wrapped(*args, **kwargs)
    request = args[0] if args else kwargs.get("request")
    return await _run_executor(rt, str(getattr(request, "task_id", "") or ""), None, wrapped(*args, **kwargs))


# --- server side: receipts -----------------------------------------------------
def _server_begin(rt: Runtime, method: str, args: Any, kwargs: Any) -> tuple[Any, Any, WorkToken | None, trace.Span | None]:
    """Extract context, record the receipt atomically with becoming active."""
    ensure_loop_hooks(rt)
    call_context = kwargs.get("context")
    if call_context is None and len(args) > 1:
        call_context = args[1]
    headers: dict[str, str] = {}
    state = getattr(call_context, "state", None)
    if isinstance(state, dict) and isinstance(state.get("headers"), dict):
        headers = {str(k).lower(): str(v) for k, v in state["headers"].items()}
    elif isinstance(state, dict) and state.get("grpc_context") is not None:
        # the gRPC transport: the same keys arrive as invocation metadata
        for key, value in state["grpc_context"].invocation_metadata() or ():
            if not str(key).endswith("-bin"):
                headers[str(key).lower()] = value if isinstance(value, str) else value.decode("utf-8", "replace")
    incoming = _BAGGAGE.extract(headers, context=_TRACECONTEXT.extract(headers))
    incoming_sc = trace.get_current_span(incoming).get_span_context()
    current_sc = trace.get_current_span().get_span_context()
    if current_sc.is_valid and (not incoming_sc.is_valid or current_sc.trace_id == incoming_sc.trace_id):
        parent = otel_context.get_current()  # an ASGI/HTTP instrumentation already continued the trace
    else:
        parent = incoming
    span = _start_span(
        rt,
        "a2a.server." + method, kind=SpanKind.SERVER, context=parent, attributes={names.ATTR_METHOD: method}
    )
    sc = span.get_span_context()
    if not sc.is_valid:
        # no SDK tracer: still need a cascade id, so continue the incoming one or make one
        trace_id = _trace_hex(incoming_sc) if incoming_sc.is_valid else uuid.uuid4().hex
    else:
        trace_id = _trace_hex(sc)
    sender = headers.get(names.HEADER_SENDER) or baggage.get_baggage(names.BAGGAGE_SENDER, incoming)
    message_id = headers.get(names.HEADER_MESSAGE_ID)
    if not (sender and message_id):
        sender, message_id = None, uuid.uuid4().hex  # a root request from outside the mesh
    work = rt.tracker.receive(trace_id, str(sender) if sender else None, message_id, headers.get("host"))
    ctx = trace.set_span_in_context(span, parent)
    return ctx, trace_id, work, span


def server_call(method: str) -> Callable:
    async def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        rt = RT
        if rt is None:
            return await wrapped(*args, **kwargs)
        work = span = otel_token = cascade_token = None
        with _guard("server " + method):
            ctx, trace_id, work, span = _server_begin(rt, method, args, kwargs)
            otel_token = otel_context.attach(ctx)
            cascade_token = CASCADE.set(trace_id)
            if method == "on_cancel_task":
                _client_cancel_requested(rt, str(getattr(args[0] if args else kwargs.get("params"), "id", "")))
        try:
            return await wrapped(*args, **kwargs)
        except BaseException as exc:
            _record_error(span, exc)
            _request_failed(rt, work, method, exc)
            raise
        finally:
            with _guard("server end " + method):
                if cascade_token is not None:
                    CASCADE.reset(cascade_token)
                if otel_token is not None:
                    otel_context.detach(otel_token)
                if work is not None:
                    rt.tracker.release(work)
            _end(span)

    return wrapper


def _stream_wrapper(driver: Callable, method: str) -> Callable:
    """A wrapper for an async-generator method: still a plain call that returns
    an async generator, like the method it wraps."""

    def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        rt = RT
        if rt is None:
            return wrapped(*args, **kwargs)
        return driver(rt, method, wrapped, instance, args, kwargs)

    return wrapper


def server_stream(method: str) -> Callable:
    return _stream_wrapper(_server_stream, method)


async def _server_stream(rt: Runtime, method: str, wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    work = span = None
    trace_id = None
    ctx = None
    with _guard("server " + method):
        ctx, trace_id, work, span = _server_begin(rt, method, args, kwargs)
    try:
        if ctx is None:
            async for item in wrapped(*args, **kwargs):
                yield item
            return
        # create and drive the generator inside our context, item by item
        agen = _in_context(ctx, trace_id, lambda: wrapped(*args, **kwargs))
        try:
            while True:
                try:
                    item = await _in_context_await(ctx, trace_id, agen.__anext__)
                except StopAsyncIteration:
                    break
                yield item
        finally:
            await _in_context_await(ctx, trace_id, agen.aclose)
    except BaseException as exc:
        _record_error(span, exc)
        _request_failed(rt, work, method, exc)
        raise
    finally:
        with _guard("server end " + method):
            if work is not None:
                rt.tracker.release(work)
        _end(span)


def _request_failed(rt: Runtime, work: WorkToken | None, method: str, exc: BaseException) -> None:
    """An inbound request this hop answered with an error (not a client going away)."""
    if work is not None and isinstance(exc, Exception):
        with _guard("server failure " + method):
            record_ending(rt, work.trace_id, _ending(names.END_REQUEST_FAILED, detail=method,
                                                     **{names.ATTR_ERROR_TYPE: type(exc).__name__}))


def _in_context(ctx: Any, trace_id: str | None, fn: Callable) -> Any:
    token = otel_context.attach(ctx)
    ctoken = CASCADE.set(trace_id)
    try:
        return fn()
    finally:
        CASCADE.reset(ctoken)
        otel_context.detach(token)


async def _in_context_await(ctx: Any, trace_id: str | None, fn: Callable) -> Any:
    token = otel_context.attach(ctx)
    ctoken = CASCADE.set(trace_id)
    try:
        return await fn()
    finally:
        CASCADE.reset(ctoken)
        otel_context.detach(token)


# --- client side: sends --------------------------------------------------------
def _provably_not_sent(exc: BaseException) -> bool:
    """A connection that was never made carried nothing: the send may be withdrawn."""
    seen = 0
    while exc is not None and seen < 8:
        name = type(exc).__name__
        if name in ("ConnectError", "ConnectionRefusedError") or isinstance(exc, ConnectionRefusedError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _peer_answered(exc: BaseException) -> bool:
    """The peer received the call and answered with an A2A error (a failure it
    reports), as opposed to a transport failure (the delegation may never have run)."""
    try:
        from a2a.client.errors import A2AClientError
        from a2a.utils.errors import A2AError
    except ImportError:  # pragma: no cover - every supported a2a-sdk has both
        return False
    return isinstance(exc, A2AError) and not isinstance(exc, A2AClientError)


def _transport_url(transport: Any) -> str:
    url = getattr(transport, "url", None) or getattr(transport, "_url", None)
    if url:
        return str(url)
    # the gRPC transport keeps no URL: take the card's gRPC interface
    card = getattr(transport, "agent_card", None)
    for interface in getattr(card, "supported_interfaces", None) or ():
        if str(getattr(interface, "protocol_binding", "")).upper() == "GRPC" and interface.url:
            return str(interface.url)
    return "unknown"


class _ClientCall:
    """One outbound A2A call. Everything that can fail (span, headers, the new call
    context) is done first; only then are the unit of work, the root and the send
    recorded and the headers handed to the call, so an error in between (swallowed
    by the guard) leaves nothing held, recorded or attached."""

    def __init__(self, rt: Runtime, method: str, instance: Any, kwargs: dict[str, Any]) -> None:
        self.rt = rt
        self.method = method
        self.work: WorkToken | None = None
        self.root: WorkToken | None = None
        self.span: trace.Span | None = None
        self.destination = _authority(_transport_url(instance))
        self.message_id = uuid.uuid4().hex
        ensure_loop_hooks(rt)
        cascade = _current_cascade()
        starts_cascade = False
        parent = otel_context.get_current()
        if cascade is None:
            # a caller that set its own traceparent names the cascade itself
            given = _given_trace_id(kwargs.get("context"))
            if given is not None:
                cascade, starts_cascade = given, True
        current = trace.get_current_span().get_span_context()
        if cascade is not None and (not current.is_valid or _trace_hex(current) != cascade):
            parent = trace.set_span_in_context(_synthetic_span(cascade))
        self.span = _start_span(
            rt,
            names.SPAN_CLIENT_PREFIX + method,
            kind=SpanKind.CLIENT,
            context=parent,
            attributes={names.ATTR_METHOD: method, **_server_attributes(self.destination)},
        )
        try:
            sc = self.span.get_span_context()
            if cascade is None:
                # this process starts the cascade: it is the root hop
                cascade = _trace_hex(sc) if sc.is_valid else uuid.uuid4().hex
                starts_cascade = True
            carrier_span = self.span if sc.is_valid else _synthetic_span(cascade)
            self.ctx = trace.set_span_in_context(carrier_span)
            headers = _outbound_headers(rt, self.message_id, self.ctx)
            call_context = _with_headers(kwargs.get("context"), headers)
        except BaseException:
            _end(self.span)
            raise
        self.cascade = cascade
        if starts_cascade:
            self.root = rt.tracker.start_root(cascade)
        self.work = rt.tracker.acquire(cascade)
        rt.tracker.send(self.work, self.destination, self.message_id)  # before the message can leave
        kwargs["context"] = call_context

    def fail(self, exc: BaseException) -> None:
        _record_error(self.span, exc)
        if self.work is None:
            return
        if _provably_not_sent(exc):
            self.rt.tracker.withdraw(self.work, self.destination, self.message_id)
        if isinstance(exc, Exception):  # a cancelled caller is recorded where the cancel came from
            kind = names.END_CALL_REJECTED if _peer_answered(exc) else names.END_CALL_FAILED
            record_ending(self.rt, self.cascade, _ending(kind, detail=f"{self.method} to {self.destination}",
                                                         **{names.ATTR_ERROR_TYPE: type(exc).__name__}))

    def end(self) -> None:
        if self.work is not None:
            self.rt.tracker.release(self.work)
        if self.root is not None:
            self.rt.tracker.release(self.root)
        _end(self.span)


def _given_trace_id(call_context: Any) -> str | None:
    params = getattr(call_context, "service_parameters", None) or {}
    for key, value in params.items():
        if str(key).lower() == names.HEADER_TRACEPARENT:
            sc = trace.get_current_span(_TRACECONTEXT.extract({"traceparent": str(value)})).get_span_context()
            if sc.is_valid:
                return _trace_hex(sc)
    return None


def _with_headers(call_context: Any, headers: dict[str, str]) -> Any:
    from a2a.client.client import ClientCallContext

    if call_context is None:
        return ClientCallContext(service_parameters=dict(headers))
    params = dict(call_context.service_parameters or {})
    for key, value in headers.items():
        params.setdefault(key, value)
    # a copy: the caller's context object is left as it was
    return call_context.model_copy(update={"service_parameters": params})


def client_call(method: str) -> Callable:
    async def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        rt = RT
        call = None
        if rt is not None:
            with _guard("client " + method):
                call = _ClientCall(rt, method, instance, kwargs)
        try:
            if call is None:
                return await wrapped(*args, **kwargs)
            # our client span stays current during the call, so an HTTP-level
            # instrumentation (httpx) nests its span under it in the same trace
            return await _in_context_await(call.ctx, call.cascade, lambda: wrapped(*args, **kwargs))
        except BaseException as exc:
            if call is not None:
                with _guard("client fail " + method):
                    call.fail(exc)
            raise
        finally:
            if call is not None:
                with _guard("client end " + method):
                    call.end()

    return wrapper


def client_stream(method: str) -> Callable:
    return _stream_wrapper(_client_stream, method)


async def _client_stream(rt: Runtime, method: str, wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    call = None
    with _guard("client " + method):
        call = _ClientCall(rt, method, instance, kwargs)
    ctx = call.ctx if call is not None else None  # None: the call goes out as if uninstrumented
    cascade = call.cascade if call is not None else None
    if ctx is None:
        agen = wrapped(*args, **kwargs)
    else:
        agen = _in_context(ctx, cascade, lambda: wrapped(*args, **kwargs))
    try:
        while True:
            try:
                if ctx is None:
                    item = await agen.__anext__()
                else:
                    item = await _in_context_await(ctx, cascade, agen.__anext__)
            except StopAsyncIteration:
                break
            yield item
    except BaseException as exc:
        if call is not None:
            with _guard("client fail " + method):
                call.fail(exc)
        raise
    finally:
        try:
            if ctx is None:
                await agen.aclose()
            else:
                await _in_context_await(ctx, cascade, agen.aclose)
        finally:
            if call is not None:
                with _guard("client end " + method):
                    call.end()


# --- push deliveries -------------------------------------------------------------
async def push_dispatch(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = RT
    span = work = token = None
    failed: str | None = None
    url = task_id = ""
    if rt is not None:
        with _guard("push"):
            push_info = kwargs.get("push_info", args[1] if len(args) > 1 else None)
            task_id = str(kwargs.get("task_id", args[2] if len(args) > 2 else "") or "")
            url = str(getattr(push_info, "url", "") or "")
            span = _start_span(
                rt, names.SPAN_PUSH_SEND, kind=SpanKind.CLIENT,
                attributes={names.ATTR_URL_FULL: url, **_server_attributes(_authority(url))},
            )
            headers = _outbound_headers(rt, None, trace.set_span_in_context(span))
            cascade = _current_cascade()
            # nothing above is held: the unit and the headers are taken last, together
            token = _PUSH_HEADERS.set(headers)
            if cascade:
                # in flight on the sender until the POST completes (the webhook is outside the mesh)
                work = rt.tracker.acquire(cascade)
    try:
        result = await wrapped(*args, **kwargs)
        if result is False:
            failed = "delivery failed"  # the SDK logged and swallowed it
            if span is not None:
                with _guard("push result"):
                    span.set_status(Status(StatusCode.ERROR, "push delivery failed"))
        return result
    except Exception as exc:
        failed = type(exc).__name__
        _record_error(span, exc)
        raise
    finally:
        with _guard("push end"):
            if token is not None:
                _PUSH_HEADERS.reset(token)
            if work is not None and rt is not None:
                ending = None
                if failed is not None:
                    ending = _ending(names.END_PUSH_FAILED, task_id, detail=f"push to {_authority(url)}: {failed}")
                    _add(rt.ended, 1, {names.ATTR_ENDING: names.END_PUSH_FAILED})
                rt.tracker.release(work, ending)  # the loss and the release, atomically
        _end(span)


async def httpx_post(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    extra = _PUSH_HEADERS.get()
    if extra:
        with _guard("push headers"):
            headers = dict(kwargs.get("headers") or {})
            for key, value in extra.items():
                headers.setdefault(key, value)
            kwargs["headers"] = headers
    return await wrapped(*args, **kwargs)


# --- server shutdown -------------------------------------------------------------
async def uvicorn_shutdown(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    rt = RT
    if rt is not None:
        rt.shutting_down = True
    try:
        return await wrapped(*args, **kwargs)
    finally:
        rt = RT
        if rt is not None:
            with _guard("uvicorn shutdown"):
                # uvicorn re-raises SIGTERM right after this: atexit will not run
                record_shutdown(rt, "server_shutdown")


def at_exit() -> None:
    rt = RT
    if rt is not None:
        with _guard("atexit"):
            if rt.tracker.shutdown is None or rt.tracker.producers_in_flight:
                record_shutdown(rt, "interpreter_exit")
