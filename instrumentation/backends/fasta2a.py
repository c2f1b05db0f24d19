"""fasta2a (pydantic-ai's A2A server): its ``FastA2A`` app, ``TaskManager``,
``InMemoryBroker`` and ``Worker``, and its ``A2AClient``.

fasta2a runs an agent differently from a2a-sdk: a request stores a task and
hands an operation to the broker, and a worker, a loop the app's lifespan
started outside any request, takes the operations one at a time. So the
request's receipt (the shared server wrappers: span, receipt, unit) does not
cover the work, and the worker's task inherits no cascade. Here:

- ``FastA2A._agent_run_endpoint``: the request's HTTP headers, for the task
  manager's calls below (which receive only the JSON-RPC request);
- ``TaskManager.send_message`` / ``cancel_task`` / ``stream_message`` /
  ``resubscribe_task``: the shared server wrappers, given the headers;
- ``InMemoryBroker.run_task`` / ``cancel_task``: a unit of the cascade is taken
  *before* the operation is handed over (held, with the request's trace context,
  in ``_PENDING`` until the worker picks the operation up);
- ``Worker._handle_task_operation``: the operation runs in the cascade's
  context, under a producer span, holding that unit; when it returns, the
  state the task reached decides how it ended: a task that neither reached a
  state that ends its stream nor raised is recorded lost (``task_abandoned``),
  never completed; one waiting for its user keeps a unit, parked, until the
  next message in its context arrives;
- ``Worker._end_stream``: the state each task ends its stream with (failed,
  rejected, canceled, completed, input-required, auth-required);
- ``A2AClient.send_message`` / ``stream_message``: outbound calls, with the
  cascade's headers put on the request by the httpx hooks (the client takes
  no headers of its own).

A broker other than ``InMemoryBroker`` hands operations to workers this
process may not run: it is refused loudly when the task manager starts, and
the hop reports itself unsupported.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
from types import SimpleNamespace
from typing import Any, Callable

from opentelemetry import context as otel_context, trace
from opentelemetry.trace import SpanKind

from a2a_quiescence import names
from a2a_quiescence.instrumentation import client, lifecycle, semconv, server
from a2a_quiescence.instrumentation.backends import Backend, Hook, Refusal
from a2a_quiescence.instrumentation.runtime import (
    CASCADE, add_metric, current, current_cascade, guard, in_context_await, new_ending, record_ending, start_span,
)

logger = logging.getLogger("a2a_quiescence.instrumentation")

_APP = "fasta2a.applications"
_TM = "fasta2a.task_manager"
_BROKER = "fasta2a.broker"
_WORKER = "fasta2a.worker"
_CLIENT = "fasta2a.client"

# the HTTP headers of the A2A request being answered, and its app's card fields (set around the endpoint)
_REQUEST_HEADERS: contextvars.ContextVar[tuple[dict[str, str], dict[str, Any]] | None] = contextvars.ContextVar(
    "a2a_quiescence_fasta2a_headers", default=None
)
# what the worker's current operation saw: the state its task ended its stream with
_OPERATION: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "a2a_quiescence_fasta2a_operation", default=None
)


class _Handed:
    """A unit of a cascade taken for an operation handed to the broker, with the
    trace context of the request that handed it over."""

    __slots__ = ("token", "ctx", "cascade")

    def __init__(self, token: Any, ctx: Any, cascade: str) -> None:
        self.token, self.ctx, self.cascade = token, ctx, cascade


# (operation, a2a task id) -> units handed over, oldest first. An entry lives while its
# operation is in the broker's stream: InMemoryBroker's has no buffer, so its send
# returns once the worker has taken the operation, and there is at most one entry per
# request blocked in that send.
_PENDING: dict[tuple[str, str], collections.deque[_Handed]] = {}
# context id -> (task id, unit) of a task waiting for its user's next message (bounded)
_AWAITING: "collections.OrderedDict[str, tuple[str, Any]]" = collections.OrderedDict()
MAX_AWAITING = 10_000

_ENDING_STATES = {
    "failed": names.END_TASK_FAILED,
    "rejected": names.END_TASK_REJECTED,
    "canceled": names.END_TASK_CANCELLED,
}
_OUTCOMES = {
    "completed": names.OUTCOME_COMPLETED,
    "input-required": names.OUTCOME_COMPLETED,
    "auth-required": names.OUTCOME_COMPLETED,
    "failed": names.OUTCOME_FAILED,
    "rejected": names.OUTCOME_FAILED,
    "canceled": names.OUTCOME_CANCELLED,
}


def _state_name(task_state: object) -> str:
    raw = str(task_state)
    if raw.startswith("TASK_STATE_"):  # an A2A 1.0 answer's enum
        return raw
    return "TASK_STATE_" + raw.upper().replace("-", "_")


class Fasta2aDialect:
    """fasta2a's client: no call context (headers go on through the httpx hooks); a
    JSON-RPC error is answered as a value, not raised."""

    name = "fasta2a"

    def state_name(self, value: Any) -> str:
        return _state_name(value)

    def given_trace_id(self, call_context: Any) -> str | None:
        return None

    def with_headers(self, call_context: Any, headers: dict[str, str]) -> Any:
        return None  # nothing to pass: see client.httpx_headers

    def peer_answered(self, exc: BaseException) -> bool:
        return False  # an HTTP error status may be a proxy's

    def rejected(self, result: Any) -> bool:
        """The peer answered the call with a JSON-RPC error."""
        return isinstance(result, dict) and result.get("error") is not None

    # -- what the call spans say (semconv) --
    def server_card(self, task_manager: Any, call_context: Any) -> Any:
        """The app's own name, description and version (what its Agent Card says)."""
        return getattr(call_context, "a2a_card", None)

    def server_protocol_version(self, task_manager: Any, headers: dict[str, str]) -> str | None:
        """fasta2a answers both 0.3 and 1.0 method names: only the A2A-Version header says which."""
        version = headers.get("a2a-version")
        return ".".join(version.split(".")[:2]) if version else None

    def client_protocol_version(self, client: Any) -> str | None:
        return None  # its client takes no version of its own

    def decode_event(self, item: Any) -> Any:
        """The task manager streams its answers as server-sent events (bytes)."""
        return semconv.sse_event(item)

    def server_error_type(self, exc: BaseException, call_context: Any) -> str | None:
        return None  # fasta2a answers A2A errors as values (decode_event/observe reads their codes)

    def client_error_type(self, exc: BaseException, client: Any) -> str | None:
        status = getattr(exc, "status_code", None)  # UnexpectedResponseError: the HTTP status
        return str(status) if isinstance(status, int) else None


# --- requests in ---------------------------------------------------------------
async def run_endpoint(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """``FastA2A._agent_run_endpoint(request)``: its headers, for the task manager's calls."""
    token = None
    if current() is not None:
        with guard("fasta2a endpoint"):
            request = args[0] if args else kwargs.get("request")
            card = {key: getattr(instance, key, None) for key in ("name", "description", "version")}
            token = _REQUEST_HEADERS.set(({str(k).lower(): str(v) for k, v in request.headers.items()}, card))
    try:
        return await wrapped(*args, **kwargs)
    finally:
        if token is not None:
            _REQUEST_HEADERS.reset(token)


def _shim(args: Any, kwargs: Any) -> tuple[Any, Any]:
    """What the shared server wrappers read of an a2a-sdk handler call: the request's
    params and a call context with the headers (and the app's card fields)."""
    request = args[0] if args else kwargs.get("request")
    params = (request or {}).get("params") or {}
    headers, card = _REQUEST_HEADERS.get() or ({}, None)
    return params, SimpleNamespace(state={"headers": dict(headers)}, a2a_card=card)


def task_manager_call(method: str, operation: str) -> Callable:
    inner = server.server_call(method, operation, _DIALECT)

    async def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        shim = None
        if current() is not None:
            with guard("fasta2a " + method):
                shim = _shim(args, kwargs)
        if shim is None:
            return await wrapped(*args, **kwargs)
        return await inner(lambda *_a, **_k: wrapped(*args, **kwargs), instance, shim, {})

    return wrapper


def task_manager_stream(method: str, operation: str) -> Callable:
    inner = server.server_stream(method, operation, _DIALECT)

    def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        shim = None
        if current() is not None:
            with guard("fasta2a " + method):
                shim = _shim(args, kwargs)  # now: the stream is read after the endpoint returned
        if shim is None:
            return wrapped(*args, **kwargs)
        return inner(lambda *_a, **_k: wrapped(*args, **kwargs), instance, shim, {})

    return wrapper


async def task_manager_enter(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """``TaskManager.__aenter__``: a broker that is not InMemoryBroker hands work to
    workers this process may not run, so this hop cannot say when its work is done."""
    rt = current()
    if rt is not None:
        with guard("fasta2a broker check"):
            from fasta2a.broker import InMemoryBroker

            broker = getattr(instance, "broker", None)
            owner = next((k for k in type(broker).__mro__ if "run_task" in k.__dict__), None)
            if broker is not None and owner is not InMemoryBroker:
                from a2a_quiescence.instrumentation.backends import installed_version

                name = type(broker).__qualname__
                refusal = Refusal("fasta2a", installed_version("fasta2a") or "?", "InMemoryBroker",
                                  f"its broker {name} hands tasks to workers a2a-quiescence cannot follow")
                logger.warning(
                    "a2a-quiescence: this fasta2a app's broker is %s, not InMemoryBroker: its tasks may run in "
                    "workers this process does not see, so this hop reports itself unsupported and the "
                    "collector holds every cascade through it", name)
                rt.tracker.add_unsupported(refusal.to_json())
    return await wrapped(*args, **kwargs)


# --- the broker and the worker -------------------------------------------------
def broker_op(operation: str) -> Callable:
    """``InMemoryBroker.run_task`` / ``cancel_task(params)``: the operation's unit is
    taken before it is handed over, so the cascade is held while it waits."""

    async def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        rt = current()
        handed = key = None
        if rt is not None:
            with guard("fasta2a broker " + operation):
                cascade = current_cascade()
                params = args[0] if args else kwargs.get("params")
                if cascade and params is not None:
                    task_id = str(params.get("id") or "")
                    key = (operation, task_id)
                    token = rt.tracker.acquire(cascade, task_id or None, "fasta2a " + operation)
                    handed = _Handed(token, otel_context.get_current(), cascade)
                    _PENDING.setdefault(key, collections.deque()).append(handed)
        try:
            return await wrapped(*args, **kwargs)
        except BaseException:
            if handed is not None and rt is not None:
                with guard("fasta2a broker " + operation + "/undo"):
                    # not handed over: the request's own failure (or cancel) is recorded by it
                    if _take(key, handed) is not None:
                        rt.tracker.release(handed.token)
            raise

    return wrapper


def _take(key: tuple[str, str] | None, which: _Handed | None = None) -> _Handed | None:
    queue = _PENDING.get(key) if key is not None else None
    if not queue:
        return None
    if which is None:
        item = queue.popleft()
    elif which in queue:
        queue.remove(which)
        item = which
    else:
        return None
    if not queue:
        del _PENDING[key]
    return item


def _park_awaiting(rt: Any, context_id: str, task_id: str, handed: _Handed, awaiting: str) -> None:
    """The task waits for its user: its unit stays held (the cascade reads awaiting
    input, not settled) until the next message in its context arrives."""
    previous = _AWAITING.pop(context_id, None)
    _AWAITING[context_id] = (task_id, handed.token)
    rt.tracker.task_state(handed.cascade, task_id, awaiting)
    if previous is not None:
        rt.tracker.release(previous[1])
    while len(_AWAITING) > MAX_AWAITING:
        _, (old_task, old_token) = _AWAITING.popitem(last=False)
        # forgotten at the bound: said, never read as completed
        rt.tracker.release(old_token, new_ending(names.END_TASK_ABANDONED, old_task,
                                              detail="waiting for its user's input; forgotten at the bound"))


def _resume_context(rt: Any, context_id: str | None) -> None:
    """A new message in a context whose last task waited for its user: that wait is over."""
    if context_id and context_id in _AWAITING:
        task_id, token = _AWAITING.pop(context_id)
        rt.tracker.task_state(token.trace_id, task_id, None)
        rt.tracker.release(token)


async def handle_operation(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """``Worker._handle_task_operation(op)``: the operation, in its cascade's context."""
    rt = current()
    handed = None
    op: Any = None
    if rt is not None:
        with guard("fasta2a worker"):
            op = args[0] if args else kwargs.get("task_operation")
            handed = _take((str(op["operation"]), str(op["params"].get("id") or "")))
    if rt is None or handed is None:
        return await wrapped(*args, **kwargs)
    span = None
    seen: dict[str, Any] = {}
    run_ctx = handed.ctx
    task_id = context_id = ""
    is_run = False
    with guard("fasta2a worker/start"):
        params = op["params"]
        task_id = str(params.get("id") or "")
        context_id = str(params.get("context_id") or "")
        is_run = op["operation"] == "run"
        if is_run:
            _resume_context(rt, context_id)
            attrs = lifecycle.producer_attributes(rt, task_id, context_id)
            span = start_span(rt, names.SPAN_PRODUCER, kind=SpanKind.INTERNAL, context=handed.ctx, attributes=attrs)
            run_ctx = trace.set_span_in_context(span, handed.ctx)
            lifecycle.producer_started(rt, task_id, asyncio.current_task(), key="fasta2a:" + task_id)
    token = _OPERATION.set(seen)
    cancelled = False
    try:
        return await in_context_await(run_ctx, handed.cascade, lambda: wrapped(*args, **kwargs))
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        _OPERATION.reset(token)
        with guard("fasta2a worker/end"):
            _operation_ended(rt, handed, span, task_id, context_id, is_run, seen.get("state"), cancelled)


def _operation_ended(rt: Any, handed: _Handed, span: Any, task_id: str, context_id: str, is_run: bool,
                     state: str | None, cancelled: bool) -> None:
    ending = None
    if not is_run:
        rt.tracker.release(handed.token)
        return
    if state is None:
        if cancelled:
            kind = names.END_CANCELLED_BY_SHUTDOWN if rt.shutting_down else names.END_CANCELLED
            ending = new_ending(kind, task_id, detail="fasta2a worker")
        else:
            # returned without the task reaching a state that ends its stream
            ending = new_ending(names.END_TASK_ABANDONED, task_id, detail="the worker returned; the task never finished")
        add_metric(rt.ended, 1, {names.ATTR_ENDING: ending["kind"]})
    outcome = names.OUTCOME_CANCELLED if cancelled else _OUTCOMES.get(state or "", names.OUTCOME_FAILED)
    lifecycle.producer_finished(rt, span, outcome, key="fasta2a:" + task_id,
                                 state=_state_name(state) if state else None)
    awaiting = names.AWAITING_STATES.get(_state_name(state)) if state else None
    if awaiting and context_id and not cancelled:
        _park_awaiting(rt, context_id, task_id, handed, awaiting)
        return
    rt.tracker.release(handed.token, ending)  # the ending and the release, atomically


async def end_stream(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """``Worker._end_stream(task_id, context_id, state)``: the state the task ends its stream with."""
    rt = current()
    if rt is not None:
        with guard("fasta2a end stream"):
            task_id = str(kwargs.get("task_id", args[0] if args else ""))
            state = str(kwargs.get("state", args[2] if len(args) > 2 else ""))
            seen = _OPERATION.get()
            if seen is not None:
                seen["state"] = state
            cascade = CASCADE.get()
            kind = _ENDING_STATES.get(state)
            if cascade and kind is not None:
                record_ending(rt, cascade, new_ending(kind, task_id))
    return await wrapped(*args, **kwargs)


_DIALECT = Fasta2aDialect()


def fasta2a_hooks() -> list[Hook]:
    dialect = _DIALECT
    # the methods and the A2A operation each is (fasta2a's JSON-RPC names are 0.3's: message/send...)
    return [
        Hook(_APP, "FastA2A", "_agent_run_endpoint", run_endpoint),
        Hook(_TM, "TaskManager", "send_message", task_manager_call("on_message_send", names.METHOD_SEND_MESSAGE)),
        Hook(_TM, "TaskManager", "cancel_task", task_manager_call("on_cancel_task", names.METHOD_CANCEL_TASK)),
        Hook(_TM, "TaskManager", "stream_message",
             task_manager_stream("on_message_send_stream", names.METHOD_SEND_STREAMING_MESSAGE)),
        Hook(_TM, "TaskManager", "resubscribe_task",
             task_manager_stream("on_resubscribe_to_task", names.METHOD_SUBSCRIBE_TO_TASK)),
        Hook(_TM, "TaskManager", "__aenter__", task_manager_enter),
        Hook(_BROKER, "InMemoryBroker", "run_task", broker_op("run")),
        Hook(_BROKER, "InMemoryBroker", "cancel_task", broker_op("cancel")),
        Hook(_WORKER, "Worker", "_handle_task_operation", handle_operation),
        Hook(_WORKER, "Worker", "_end_stream", end_stream),
        Hook(_CLIENT, "A2AClient", "send_message",
             client.client_call("send_message", names.METHOD_SEND_MESSAGE, dialect), optional=True),
        Hook(_CLIENT, "A2AClient", "stream_message",
             client.client_stream("stream_message", names.METHOD_SEND_STREAMING_MESSAGE, dialect), optional=True),
    ]


FASTA2A = Backend(
    name="fasta2a",
    distribution="fasta2a",
    supported=">=2.1,<3",
    tested=("2.1.1",),
    hooks=fasta2a_hooks,
    doc="the worker's operations (handed over by InMemoryBroker) are the producers; no drain",
)
BACKENDS = (FASTA2A,)
