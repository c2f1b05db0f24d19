"""What every wrapper the instrumentor puts around a2a-sdk (and uvicorn, httpx) shares.

Every wrapper is fail-open: our own code runs inside ``guard`` blocks that log
an error once per site and swallow it; the wrapped call itself is always made
exactly once, and its result, exception or cancellation reaches the caller
unchanged.

Here: the guard and the span and metric helpers, the ``Runtime`` (installed
once, read by every wrapper through ``current()``), the context variables, how
work ended, and the context helpers the server and client wrappers share.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from opentelemetry import context as otel_context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from a2a_quiescence import names
from a2a_quiescence.instrumentation.tracker import HopTracker

logger = logging.getLogger("a2a_quiescence.instrumentation")

TRACECONTEXT = TraceContextTextMapPropagator()
BAGGAGE = W3CBaggagePropagator()

# the cascade (trace id, 32 hex) whose work the current code runs on behalf of
CASCADE: contextvars.ContextVar[str | None] = contextvars.ContextVar("a2a_quiescence_cascade", default=None)
# headers to add to the push delivery made by the current task
PUSH_HEADERS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "a2a_quiescence_push_headers", default=None
)

# headers of the outbound A2A call the current task makes (for transports that
# take them from somewhere other than the call context: a2a-sdk 0.3's gRPC)
CALL_HEADERS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "a2a_quiescence_call_headers", default=None
)



@dataclass(slots=True, eq=False)
class ActiveTaskState:
    """What the instrumentation knows of one ActiveTask (or of a legacy handler's
    producer): whose task it is, which cascade started it, and how its agent's work
    is going and ended. The units its plumbing tasks hold name it (loop.py's
    ``plumbing_units``)."""

    task_id: str = ""
    cascade: str | None = None  # the cascade that built it
    tracked: bool = False  # its producer is being watched
    outcome: str | None = None  # OUTCOME_*, once known
    executing: int = 0  # the agent's execute() running now
    exec_task: "weakref.ref[asyncio.Task] | None" = None  # the task running execute() (weak: see run_executor)
    awaiting: str | None = None  # the awaiting state it reached (input or auth required), if any
    cause: str | None = None  # "shutdown": its work was cancelled by a drain
    parked_at: str | None = None  # where its work was parked when the drain cancelled it

    def end(self, outcome: str) -> None:
        """Record how it ended, unless that is known already (the first answer stands)."""
        if self.outcome is None:
            self.outcome = outcome


# the ActiveTask being built or started: the tasks it spawns then are its plumbing
# (producer, consumer, queue dispatchers), owned by it
OWNER: contextvars.ContextVar[ActiveTaskState | None] = contextvars.ContextVar("a2a_quiescence_owner", default=None)

_warned: set[str] = set()


def report_internal_error(site: str, exc: BaseException) -> None:
    if site not in _warned:
        _warned.add(site)
        logger.error("a2a-quiescence: internal error in %s (further errors here are silent): %r", site, exc, exc_info=exc)


class guard:  # noqa: N801 - used like a function: `with guard("site"):`
    """Run instrumentation code; never let its failure reach the agent.

    A class rather than @contextmanager: it runs dozens of times per request."""

    __slots__ = ("site",)

    def __init__(self, site: str) -> None:
        self.site = site

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None and issubclass(exc_type, Exception):
            report_internal_error(self.site, exc)
            return True  # fail-open by design
        return False


def start_span(rt: "Runtime", name: str, **kwargs: Any) -> trace.Span:
    """Start a span; a broken tracer/processor gives a non-recording span instead."""
    try:
        return rt.tracer.start_span(name, **kwargs)
    except Exception as exc:  # noqa: BLE001 - fail-open
        report_internal_error("start_span " + name, exc)
        return trace.INVALID_SPAN


def end_span(span: trace.Span | None) -> None:
    """End a span; a broken span processor must not skip what follows."""
    if span is not None:
        try:  # a plain try (no guard object): once per span
            span.end()
        except Exception as exc:  # noqa: BLE001 - fail-open
            report_internal_error("span.end", exc)


def record_error(span: trace.Span | None, exc: BaseException, error_type: str | None = None) -> None:
    """Mark a span failed with the exception the agent saw (which still propagates);
    ``error.type`` is ``error_type`` (a JSON-RPC code or status answered) or the
    exception's name."""
    if span is not None:
        with guard("span error"):
            span.record_exception(exc)
            span.set_attribute(names.ATTR_ERROR_TYPE, error_type or type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def synthetic_span(cascade: str) -> trace.Span:
    """A stand-in parent carrying the cascade's trace id when no real span has it."""
    return trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=int(cascade, 16),
            span_id=random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
    )


def add_metric(instrument: Any, value: int, attributes: dict[str, Any] | None = None) -> None:
    """Update a metric; a broken meter must not skip what follows."""
    try:  # a plain try (no guard object): several times per request
        instrument.add(value, attributes)
    except Exception as exc:  # noqa: BLE001 - fail-open
        report_internal_error("metric", exc)


def observe_producers(meter: Any, tracker: HopTracker) -> None:
    """``a2a.producers.in_flight`` / ``.started`` / ``.finished`` (by outcome), read from
    ``tracker`` at each collection: the same sums as counters added to on every
    producer, without the four recordings per request."""
    from opentelemetry.metrics import Observation

    def in_flight(_options: Any) -> list[Observation]:
        return [Observation(tracker.producers_in_flight)]

    def started(_options: Any) -> list[Observation]:
        return [Observation(tracker.producers_started)]

    def finished(_options: Any) -> list[Observation]:
        with tracker.lock:
            counts = list(tracker.producers_finished.items())
        return [Observation(n, {names.ATTR_OUTCOME: outcome}) for outcome, n in counts]

    meter.create_observable_up_down_counter(names.OTEL_PRODUCERS_IN_FLIGHT, callbacks=[in_flight], unit="{producer}",
                                            description="ActiveTask producers spawned and not yet finished")
    meter.create_observable_counter(names.OTEL_PRODUCERS_STARTED, callbacks=[started], unit="{producer}",
                                    description="ActiveTask producers spawned")
    meter.create_observable_counter(names.OTEL_PRODUCERS_FINISHED, callbacks=[finished], unit="{producer}",
                                    description="ActiveTask producers finished, by outcome")


class Runtime:
    """What the wrappers need: tracer, instruments, the hop tracker, settings."""

    def __init__(self, tracer: trace.Tracer, meter: Any, tracker: HopTracker, service_name: str, stall_seconds: float,
                 call_spans: bool = True, semconv_dup: bool = False) -> None:
        self.tracer = tracer
        # False: no A2A call spans (another instrumentation makes them); everything else stays
        self.call_spans = call_spans
        # OTEL_SEMCONV_STABILITY_OPT_IN=a2a/dup: the names before the conventions, beside theirs
        self.semconv_dup = semconv_dup
        self.tracker = tracker
        self.service_name = service_name
        self.stall_seconds = stall_seconds
        self.flush: Callable[[], None] = lambda: None
        # the producer counts are the tracker's own (kept for the hop snapshot anyway):
        # observed when the metrics are collected, not recorded on every request
        observe_producers(meter, tracker)
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
        # the backends the version guard chose, "name (version)"
        self.backends: list[str] = []
        # a child coroutine's qualified name -> the code of the parent frame that gathers
        # and awaits it (``backends.Awaited``): such tasks ride on their parent's unit
        self.awaited: dict[str, Any] = {}
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
        # task id -> the last state saved for it, TASK_STATE_* (bounded; for lifecycle spans)
        self.task_states: dict[str, str] = {}
        # live producer tasks by name, and where leaked ones were parked at shutdown
        self.producers: "weakref.WeakValueDictionary[str, asyncio.Task]" = weakref.WeakValueDictionary()
        self.parked: dict[str, str] = {}
        self.loops: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]]" = weakref.WeakKeyDictionary()

    def after_fork(self) -> None:
        """In a forked child, a new incarnation: the parent's cascades, loops and shutdown
        are not its own (its producers' tasks did not survive the fork)."""
        self.tracker.after_fork()
        self.loops.clear()
        self.shutting_down = False


# the Runtime every wrapper sees: one place, set by the instrumentor (None: not instrumented)
_current: Runtime | None = None


def current() -> Runtime | None:
    """The installed Runtime; None when not instrumented (the wrappers then only call through)."""
    return _current


def install(rt: Runtime | None) -> None:
    """Make ``rt`` the Runtime every wrapper sees (None: uninstrumented)."""
    global _current
    _current = rt


# --- helpers -------------------------------------------------------------------
def trace_hex(span_context: trace.SpanContext) -> str:
    return format(span_context.trace_id, "032x")


def current_cascade() -> str | None:
    cascade = CASCADE.get()
    if cascade:
        return cascade
    return None


def note_task_state(rt: Runtime, task_id: str, state: str) -> None:
    """The last state saved for ``task_id`` (read when its producer span ends)."""
    states = rt.task_states
    states.pop(task_id, None)
    states[task_id] = state
    while len(states) > 10_000:
        del states[next(iter(states))]


# --- how work ended -----------------------------------------------------------
def new_ending(kind: str, task_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "task_id": task_id or None, **extra}


def record_ending(rt: Runtime, cascade: str | None, ending: dict[str, Any]) -> None:
    """Record a failure or loss on ``cascade``; the caller holds a unit of it."""
    if cascade:
        rt.tracker.record_ending(cascade, ending)
        add_metric(rt.ended, 1, {names.ATTR_ENDING: ending["kind"]})


def _cancel_ending(rt: Runtime, task_id: str, state: ActiveTaskState | None, **extra: Any) -> dict[str, Any]:
    """How a cancellation of task ``task_id``'s work ended it: a client's cancel is
    a failure the agents report; a shutdown's, or one of unknown cause, a loss."""
    if task_id in rt.client_cancels:
        return new_ending(names.END_TASK_CANCELLED, task_id, **extra)
    if (state is not None and state.cause == "shutdown") or rt.shutting_down:
        return new_ending(names.END_CANCELLED_BY_SHUTDOWN, task_id, **extra)
    return new_ending(names.END_CANCELLED, task_id, **extra)


def client_cancel_requested(rt: Runtime, task_id: str) -> None:
    rt.client_cancels[task_id] = None
    while len(rt.client_cancels) > 10_000:
        del rt.client_cancels[next(iter(rt.client_cancels))]


async def run_executor(rt: Runtime, task_id: str, state: ActiveTaskState | None, coro: Any) -> Any:
    """Await the agent's ``execute``; record on the current cascade how it ended
    when it did not complete (inside the executor's task, so while its unit is held)."""
    if state is not None:
        state.executing += 1
        # weak: a failed task's exception (its traceback) reaches back to the ActiveTask
        state.exec_task = weakref.ref(asyncio.current_task())
    try:
        return await coro
    except asyncio.CancelledError:
        with guard("execute cancelled"):
            record_ending(rt, CASCADE.get(), _cancel_ending(rt, task_id, state, parked_at=state.parked_at if state else None))
        raise
    except BaseException as exc:
        with guard("execute failed"):
            record_ending(rt, CASCADE.get(), new_ending(names.END_EXECUTOR_FAILED, task_id, **{"error.type": type(exc).__name__}))
        raise
    finally:
        if state is not None:
            state.executing -= 1


# --- shared by the server and client wrappers -----------------------------------
def stream_wrapper(driver: Callable, method: str) -> Callable:
    """A wrapper for an async-generator method: still a plain call that returns
    an async generator, like the method it wraps."""

    def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        rt = current()
        if rt is None:
            return wrapped(*args, **kwargs)
        return driver(rt, method, wrapped, instance, args, kwargs)

    return wrapper


def in_context(ctx: Any, trace_id: str | None, fn: Callable) -> Any:
    token = otel_context.attach(ctx)
    ctoken = CASCADE.set(trace_id)
    try:
        return fn()
    finally:
        CASCADE.reset(ctoken)
        otel_context.detach(token)


async def in_context_await(ctx: Any, trace_id: str | None, fn: Callable) -> Any:
    token = otel_context.attach(ctx)
    ctoken = CASCADE.set(trace_id)
    try:
        return await fn()
    finally:
        CASCADE.reset(ctoken)
        otel_context.detach(token)
