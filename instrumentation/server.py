"""The server-side wrappers: a request received is a unit of work on its
cascade until it is answered (fail-open, as every wrapper: see ``runtime``)."""

from __future__ import annotations

import uuid
from typing import Any, Callable

from opentelemetry import baggage, context as otel_context, trace
from opentelemetry.trace import SpanKind

from a2a_quiescence import names
from a2a_quiescence.instrumentation.loop import ensure_loop_hooks
from a2a_quiescence.instrumentation.runtime import (
    _BAGGAGE, _TRACECONTEXT, CASCADE, Runtime, _client_cancel_requested, _end, _ending, _guard, _in_context,
    _in_context_await, _record_error, _start_span, _stream_wrapper, _trace_hex, current, record_ending,
)
from a2a_quiescence.instrumentation.tracker import WorkToken


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
        rt = current()
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
            _request_failed(rt, work, span, method, exc)
            raise
        finally:
            _request_ended(rt, work, span, method, cascade_token, otel_token)

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
        _request_failed(rt, work, span, method, exc)
        raise
    finally:
        _request_ended(rt, work, span, method)


def _request_failed(
    rt: Runtime, work: WorkToken | None, span: trace.Span | None, method: str, exc: BaseException
) -> None:
    """The request's span records what it raised; an inbound request this hop answered
    with an error (not a client going away) is recorded as failed on its cascade."""
    _record_error(span, exc)
    if work is not None and isinstance(exc, Exception):
        with _guard("server failure " + method):
            record_ending(rt, work.trace_id, _ending(names.END_REQUEST_FAILED, detail=method,
                                                     **{names.ATTR_ERROR_TYPE: type(exc).__name__}))


def _request_ended(
    rt: Runtime, work: WorkToken | None, span: trace.Span | None, method: str,
    cascade_token: Any = None, otel_token: Any = None,
) -> None:
    """The request is answered: its context is left (when it was entered here), its
    unit released and its span ended."""
    with _guard("server end " + method):
        if cascade_token is not None:
            CASCADE.reset(cascade_token)
        if otel_token is not None:
            otel_context.detach(otel_token)
        if work is not None:
            rt.tracker.release(work)
    _end(span)
