"""The server-side wrappers: a request received is a unit of work on its
cascade until it is answered (fail-open, as every wrapper: see ``runtime``), and
a SERVER span named by its A2A method, per the conventions (``semconv``), unless
call spans are left to another instrumentation."""

from __future__ import annotations

import functools
import uuid
from typing import Any, Callable

from opentelemetry import baggage, context as otel_context, trace
from opentelemetry.trace import SpanKind

from a2a_quiescence import names
from a2a_quiescence.instrumentation import semconv
from a2a_quiescence.instrumentation.loop import ensure_loop_hooks
from a2a_quiescence.instrumentation.runtime import (
    BAGGAGE, CASCADE, TRACECONTEXT, Runtime, client_cancel_requested, current, end_span, guard, in_context,
    in_context_await, new_ending, record_ending, record_error, start_span, stream_wrapper, synthetic_span, trace_hex,
)
from a2a_quiescence.instrumentation.tracker import WorkToken


# --- server side: receipts -----------------------------------------------------
def _server_span_attributes(rt: Runtime, method: str, operation: str, dialect: Any, instance: Any, params: Any,
                            call_context: Any, headers: dict[str, str]) -> dict[str, Any]:
    """The SERVER span's attributes known when the request arrives (``semconv``)."""
    attrs: dict[str, Any] = {names.ATTR_A2A_METHOD_NAME: operation}
    attrs.update(semconv.request_attributes(params))
    attrs.update(semconv.card_attributes(dialect.server_card(instance, call_context)))
    version = dialect.server_protocol_version(instance, headers)
    if version:
        attrs[names.ATTR_PROTOCOL_VERSION] = version
    attrs.update(semconv.server_attributes(headers.get("host", "")))
    if rt.semconv_dup:
        attrs[names.LEGACY_ATTR_METHOD] = method
    return attrs


def _server_begin(
    rt: Runtime, method: str, operation: str, dialect: Any, instance: Any, args: Any, kwargs: Any
) -> tuple[Any, Any, WorkToken | None, semconv.CallSpan | None]:
    """Extract context, record the receipt atomically with becoming active."""
    ensure_loop_hooks(rt)
    params = args[0] if args else kwargs.get("params")
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
    incoming = BAGGAGE.extract(headers, context=TRACECONTEXT.extract(headers))
    incoming_sc = trace.get_current_span(incoming).get_span_context()
    current_sc = trace.get_current_span().get_span_context()
    if current_sc.is_valid and (not incoming_sc.is_valid or current_sc.trace_id == incoming_sc.trace_id):
        # an ASGI/HTTP instrumentation already continued the trace (or another A2A
        # instrumentation's SERVER span is current under it)
        parent = otel_context.get_current()
    else:
        parent = incoming
    call = None
    sc = trace.INVALID_SPAN_CONTEXT
    if rt.call_spans:
        attrs: dict[str, Any] = {names.ATTR_A2A_METHOD_NAME: operation}
        with guard("server span attributes " + method):  # never at the cost of the receipt
            attrs = _server_span_attributes(rt, method, operation, dialect, instance, params, call_context, headers)
        span = start_span(rt, operation, kind=SpanKind.SERVER, context=parent, attributes=attrs)
        call = semconv.CallSpan(span, dialect, attrs)
        sc = span.get_span_context()
    if not sc.is_valid:
        # no span of ours (switched off, or no SDK tracer): the cascade continues the trace
        # of the parent, or a new one is made, which everything below is then on
        sc = trace.get_current_span(parent).get_span_context()
    if sc.is_valid:
        trace_id = trace_hex(sc)
    else:
        trace_id = uuid.uuid4().hex
        parent = trace.set_span_in_context(synthetic_span(trace_id), parent)
    sender = headers.get(names.HEADER_SENDER) or baggage.get_baggage(names.BAGGAGE_SENDER, incoming)
    message_id = headers.get(names.HEADER_MESSAGE_ID)
    if not (sender and message_id):
        sender, message_id = None, uuid.uuid4().hex  # a root request from outside the mesh
    work = rt.tracker.receive(trace_id, str(sender) if sender else None, message_id, headers.get("host"))
    ctx = trace.set_span_in_context(call.span, parent) if call is not None else parent
    return ctx, trace_id, work, call


def server_call(method: str, operation: str, dialect: Any) -> Callable:
    """A request handler's ``method``, the A2A operation ``operation`` (a SERVER span of that name)."""

    async def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        rt = current()
        if rt is None:
            return await wrapped(*args, **kwargs)
        work = call = otel_token = cascade_token = None
        with guard("server " + method):
            ctx, trace_id, work, call = _server_begin(rt, method, operation, dialect, instance, args, kwargs)
            otel_token = otel_context.attach(ctx)
            cascade_token = CASCADE.set(trace_id)
            if operation == names.METHOD_CANCEL_TASK:
                params = args[0] if args else kwargs.get("params")
                client_cancel_requested(rt, str(semconv.read_field(params, "id") or ""))
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            _request_failed(rt, work, call, method, exc, args, kwargs)
            raise
        else:
            if call is not None:
                with guard("server result " + method):
                    call.observe(result)
            return result
        finally:
            _request_ended(rt, work, call, method, cascade_token, otel_token)

    return wrapper


def server_stream(method: str, operation: str, dialect: Any) -> Callable:
    return stream_wrapper(functools.partial(_server_stream, operation=operation, dialect=dialect), method)


async def _server_stream(rt: Runtime, method: str, wrapped: Callable, instance: Any, args: Any, kwargs: Any, *,
                         operation: str, dialect: Any) -> Any:
    work = call = None
    trace_id = None
    ctx = None
    with guard("server " + method):
        ctx, trace_id, work, call = _server_begin(rt, method, operation, dialect, instance, args, kwargs)
    try:
        if ctx is None:
            async for item in wrapped(*args, **kwargs):
                yield item
            return
        # create and drive the generator inside our context, item by item
        agen = in_context(ctx, trace_id, lambda: wrapped(*args, **kwargs))
        try:
            while True:
                try:
                    item = await in_context_await(ctx, trace_id, agen.__anext__)
                except StopAsyncIteration:
                    break
                if call is not None:
                    with guard("server event " + method):
                        call.observe(item)
                yield item
        finally:
            await in_context_await(ctx, trace_id, agen.aclose)
    except BaseException as exc:
        _request_failed(rt, work, call, method, exc, args, kwargs)
        raise
    finally:
        _request_ended(rt, work, call, method)


def _request_failed(
    rt: Runtime, work: WorkToken | None, call: semconv.CallSpan | None, method: str, exc: BaseException,
    args: Any, kwargs: Any,
) -> None:
    """The request's span records what it raised; an inbound request this hop answered
    with an error (not a client going away) is recorded as failed on its cascade."""
    if call is not None:
        error_type = None
        with guard("server error type " + method):
            call_context = kwargs.get("context", args[1] if len(args) > 1 else None)
            error_type = call.dialect.server_error_type(exc, call_context)
        record_error(call.span, exc, error_type)
    if work is not None and isinstance(exc, Exception):
        with guard("server failure " + method):
            record_ending(rt, work.trace_id, new_ending(names.END_REQUEST_FAILED, detail=method,
                                                     **{names.ATTR_ERROR_TYPE: type(exc).__name__}))


def _request_ended(
    rt: Runtime, work: WorkToken | None, call: semconv.CallSpan | None, method: str,
    cascade_token: Any = None, otel_token: Any = None,
) -> None:
    """The request is answered: its context is left (when it was entered here), its
    unit released and its span ended."""
    with guard("server end " + method):
        if cascade_token is not None:
            CASCADE.reset(cascade_token)
        if otel_token is not None:
            otel_context.detach(otel_token)
        if work is not None:
            rt.tracker.release(work)
    if call is not None:
        with guard("server span " + method):
            call.finish()
        end_span(call.span)
