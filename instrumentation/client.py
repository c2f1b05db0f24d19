"""The client-side wrappers: an A2A call or a push delivery sent is a unit of
work on its cascade until it returns, and carries the headers that continue the
cascade on the peer (fail-open, as every wrapper: see ``runtime``). An A2A call
has a CLIENT span named by its A2A method, per the conventions (``semconv``),
unless call spans are left to another instrumentation (the headers, the send and
its receipt stay)."""

from __future__ import annotations

import functools
import urllib.parse
import uuid
from typing import Any, Callable

from opentelemetry import baggage, context as otel_context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from a2a_quiescence import names
from a2a_quiescence.instrumentation import semconv
from a2a_quiescence.instrumentation.loop import ensure_loop_hooks
from a2a_quiescence.instrumentation.runtime import (
    BAGGAGE, CALL_HEADERS, PUSH_HEADERS, TRACECONTEXT, Runtime, add_metric, current, current_cascade, end_span, guard,
    in_context, in_context_await, new_ending, record_ending, record_error, start_span, stream_wrapper, synthetic_span,
    trace_hex,
)
from a2a_quiescence.instrumentation.tracker import WorkToken


# --- helpers -------------------------------------------------------------------
def _authority(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc:
        return parts.netloc.lower()
    return url.lower()


def _outbound_headers(rt: Runtime, message_id: str | None, context: Any = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    ctx = baggage.set_baggage(names.BAGGAGE_SENDER, rt.service_name, context=context)
    TRACECONTEXT.inject(carrier, context=ctx)
    BAGGAGE.inject(carrier, context=ctx)
    carrier[names.HEADER_SENDER] = rt.service_name
    if message_id:
        carrier[names.HEADER_MESSAGE_ID] = message_id
    return carrier


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


def _transport_url(transport: Any) -> str:
    url = getattr(transport, "url", None) or getattr(transport, "_url", None)
    if url:
        return str(url)
    http_client = getattr(transport, "http_client", None)  # fasta2a's A2AClient
    if http_client is not None and getattr(http_client, "base_url", None):
        return str(http_client.base_url)
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

    def __init__(self, rt: Runtime, method: str, operation: str, instance: Any, args: Any, kwargs: dict[str, Any],
                 dialect: Any) -> None:
        self.rt = rt
        self.method = method
        self.dialect = dialect
        self.instance = instance
        self.work: WorkToken | None = None
        self.root: WorkToken | None = None
        self.call: semconv.CallSpan | None = None
        self.destination = _authority(_transport_url(instance))
        self.message_id = uuid.uuid4().hex
        ensure_loop_hooks(rt)
        cascade = current_cascade()
        starts_cascade = False
        parent = otel_context.get_current()
        if cascade is None:
            # a caller that set its own traceparent names the cascade itself
            given = dialect.given_trace_id(kwargs.get("context"))
            if given is not None:
                cascade, starts_cascade = given, True
        current = trace.get_current_span().get_span_context()
        if cascade is not None and (not current.is_valid or trace_hex(current) != cascade):
            parent = trace.set_span_in_context(synthetic_span(cascade))
        span = None
        if rt.call_spans:
            attrs: dict[str, Any] = {names.ATTR_A2A_METHOD_NAME: operation}
            with guard("client span attributes " + method):  # never at the cost of the accounting
                attrs = self._attributes(operation, args[0] if args else None)
            span = start_span(rt, operation, kind=SpanKind.CLIENT, context=parent, attributes=attrs)
            self.call = semconv.CallSpan(span, dialect, attrs)
        try:
            # the span whose context the call carries: ours; else (switched off, no SDK tracer)
            # the current one (another instrumentation's CLIENT span, the caller's) when it is
            # on the cascade's trace, else a stand-in with the cascade's trace id
            carrier = span if span is not None and span.get_span_context().is_valid else trace.get_current_span(parent)
            sc = carrier.get_span_context()
            if cascade is None:
                # this process starts the cascade: it is the root hop
                cascade = trace_hex(sc) if sc.is_valid else uuid.uuid4().hex
                starts_cascade = True
            if not sc.is_valid:
                carrier = synthetic_span(cascade)
            self.ctx = trace.set_span_in_context(carrier)
            headers = _outbound_headers(rt, self.message_id, self.ctx)
            call_context = dialect.with_headers(kwargs.get("context"), headers)
            self.headers = headers
        except BaseException:
            end_span(span)
            raise
        self.cascade = cascade
        if starts_cascade:
            self.root = rt.tracker.start_root(cascade)
        self.work = rt.tracker.acquire(cascade)
        rt.tracker.send(self.work, self.destination, self.message_id)  # before the message can leave
        if call_context is not None:  # None: the library takes no call context (fasta2a)
            kwargs["context"] = call_context

    def _attributes(self, operation: str, request: Any) -> dict[str, Any]:
        """The CLIENT span's attributes known when the call leaves (``semconv``)."""
        attrs: dict[str, Any] = {names.ATTR_A2A_METHOD_NAME: operation}
        attrs.update(semconv.request_attributes(request))
        attrs.update(semconv.card_attributes(getattr(self.instance, "agent_card", None)))
        version = self.dialect.client_protocol_version(self.instance)
        if version:
            attrs[names.ATTR_PROTOCOL_VERSION] = version
        attrs.update(semconv.server_attributes(self.destination))
        if self.rt.semconv_dup:
            attrs[names.LEGACY_ATTR_METHOD] = self.method
        return attrs

    @property
    def span(self) -> trace.Span | None:
        return self.call.span if self.call is not None else None

    def observe(self, item: Any) -> None:
        """An answer, or one event of the stream."""
        if self.call is not None:
            self.call.observe(item)

    def fail(self, exc: BaseException) -> None:
        if self.call is not None:
            error_type = None
            with guard("client error type " + self.method):
                error_type = self.dialect.client_error_type(exc, self.instance)
            record_error(self.call.span, exc, error_type)
        if self.work is None:
            return
        if _provably_not_sent(exc):
            self.rt.tracker.withdraw(self.work, self.destination, self.message_id)
        if isinstance(exc, Exception):  # a cancelled caller is recorded where the cancel came from
            kind = names.END_CALL_REJECTED if self._peer_answered(exc) else names.END_CALL_FAILED
            record_ending(self.rt, self.cascade, new_ending(kind, detail=f"{self.method} to {self.destination}",
                                                         **{names.ATTR_ERROR_TYPE: type(exc).__name__}))

    def _peer_answered(self, exc: BaseException) -> bool:
        """The peer received the call and answered with an A2A error (a failure it
        reports), as opposed to a transport failure (the delegation may never have run)."""
        try:
            return self.dialect.peer_answered(exc)
        except ImportError:  # pragma: no cover - every supported a2a-sdk has its error classes
            return False

    def end(self) -> None:
        if self.work is not None:
            self.rt.tracker.release(self.work)
        if self.root is not None:
            self.rt.tracker.release(self.root)
        if self.call is not None:
            with guard("client span " + self.method):
                self.call.finish()
            end_span(self.call.span)


def _call_failed(call: _ClientCall | None, method: str, exc: BaseException) -> None:
    """The call raised ``exc``: recorded on ``call`` (None: it went out uninstrumented)."""
    if call is not None:
        with guard("client fail " + method):
            call.fail(exc)


def client_call(method: str, operation: str, dialect: Any) -> Callable:
    """A client's ``method``, the A2A operation ``operation`` (a CLIENT span of that name)."""

    async def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        rt = current()
        call = None
        if rt is not None:
            with guard("client " + method):
                call = _ClientCall(rt, method, operation, instance, args, kwargs, dialect)
        try:
            if call is None:
                return await wrapped(*args, **kwargs)
            # our client span stays current during the call, so an HTTP-level
            # instrumentation (httpx) nests its span under it in the same trace
            token = CALL_HEADERS.set(call.headers)
            try:
                result = await in_context_await(call.ctx, call.cascade, lambda: wrapped(*args, **kwargs))
            finally:
                CALL_HEADERS.reset(token)
            with guard("client result " + method):
                call.observe(result)
            rejected = getattr(dialect, "rejected", None)
            if rejected is not None:
                with guard("client result " + method):
                    if rejected(result):  # the peer's error, answered as a value
                        record_ending(rt, call.cascade, new_ending(names.END_CALL_REJECTED,
                                                                detail=f"{method} to {call.destination}"))
            return result
        except BaseException as exc:
            _call_failed(call, method, exc)
            raise
        finally:
            if call is not None:
                with guard("client end " + method):
                    call.end()

    return wrapper


def client_stream(method: str, operation: str, dialect: Any) -> Callable:
    return stream_wrapper(functools.partial(_client_stream, operation=operation, dialect=dialect), method)


async def _next_with_headers(call: _ClientCall, fn: Callable) -> Any:
    token = CALL_HEADERS.set(call.headers)
    try:
        return await in_context_await(call.ctx, call.cascade, fn)
    finally:
        CALL_HEADERS.reset(token)


async def _client_stream(
    rt: Runtime, method: str, wrapped: Callable, instance: Any, args: Any, kwargs: Any, *, operation: str,
    dialect: Any,
) -> Any:
    call = None
    with guard("client " + method):
        call = _ClientCall(rt, method, operation, instance, args, kwargs, dialect)
    ctx = call.ctx if call is not None else None  # None: the call goes out as if uninstrumented
    cascade = call.cascade if call is not None else None
    if ctx is None:
        agen = wrapped(*args, **kwargs)
    else:
        agen = in_context(ctx, cascade, lambda: wrapped(*args, **kwargs))
    try:
        while True:
            try:
                if ctx is None:
                    item = await agen.__anext__()
                else:
                    item = await _next_with_headers(call, agen.__anext__)
            except StopAsyncIteration:
                break
            if call is not None:
                with guard("client event " + method):
                    call.observe(item)
            yield item
    except BaseException as exc:
        _call_failed(call, method, exc)
        raise
    finally:
        try:
            if ctx is None:
                await agen.aclose()
            else:
                await in_context_await(ctx, cascade, agen.aclose)
        finally:
            if call is not None:
                with guard("client end " + method):
                    call.end()


# --- push deliveries -------------------------------------------------------------
def push_dispatch(dialect: Any) -> Callable:
    """``BasePushNotificationSender._dispatch_notification``: one push delivery."""

    async def wrapper(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
        return await _push_dispatch(dialect, wrapped, args, kwargs)

    return wrapper


async def _push_dispatch(dialect: Any, wrapped: Callable, args: Any, kwargs: Any) -> Any:
    rt = current()
    span = work = token = None
    failed: str | None = None
    url = task_id = ""
    if rt is not None:
        with guard("push"):
            push_info, task_id = dialect.push_target(args, kwargs)
            url = str(getattr(push_info, "url", "") or "")
            span = start_span(
                rt, names.SPAN_PUSH_SEND, kind=SpanKind.CLIENT,
                attributes={names.ATTR_URL_FULL: url, **semconv.server_attributes(_authority(url)),
                            **_push_attributes(dialect, task_id, args, kwargs)},
            )
            headers = _outbound_headers(rt, None, trace.set_span_in_context(span))
            cascade = current_cascade()
            # nothing above is held: the unit and the headers are taken last, together
            token = PUSH_HEADERS.set(headers)
            if cascade:
                # in flight on the sender until the POST completes (the webhook is outside the mesh)
                work = rt.tracker.acquire(cascade)
    try:
        result = await wrapped(*args, **kwargs)
        if result is False:
            failed = "delivery failed"  # the SDK logged and swallowed it
            if span is not None:
                with guard("push result"):
                    span.set_status(Status(StatusCode.ERROR, "push delivery failed"))
        return result
    except Exception as exc:
        failed = type(exc).__name__
        record_error(span, exc)
        raise
    finally:
        with guard("push end"):
            if token is not None:
                PUSH_HEADERS.reset(token)
            if work is not None and rt is not None:
                ending = None
                if failed is not None:
                    ending = new_ending(names.END_PUSH_FAILED, task_id, detail=f"push to {_authority(url)}: {failed}")
                    add_metric(rt.ended, 1, {names.ATTR_ENDING: names.END_PUSH_FAILED})
                rt.tracker.release(work, ending)  # the loss and the release, atomically
        end_span(span)


def _push_attributes(dialect: Any, task_id: str, args: Any, kwargs: Any) -> dict[str, Any]:
    """The conventions' task attributes of what a push delivers (its task, state, context)."""
    event = args[0] if args else kwargs.get("event", kwargs.get("task"))
    event_task, context_id, state = semconv.facts(event, dialect)
    attrs: dict[str, Any] = {}
    if task_id or event_task:
        attrs[names.ATTR_TASK_ID] = task_id or event_task
    if context_id:
        attrs[names.ATTR_CONVERSATION_ID] = context_id
    if state:
        attrs[names.ATTR_TASK_STATE] = state
    return attrs


def _add_headers(kwargs: dict[str, Any]) -> None:
    """The headers of the push delivery or A2A call in progress, on an httpx request
    (a header the caller set is left as it is)."""
    extra = PUSH_HEADERS.get() or CALL_HEADERS.get()
    if extra:
        with guard("httpx headers"):
            given = kwargs.get("headers")
            headers = list(given.items() if hasattr(given, "items") else given or ())
            present = {str(k).lower() for k, _ in headers}
            headers += [(k, v) for k, v in extra.items() if k.lower() not in present]
            kwargs["headers"] = headers


async def httpx_post(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """``httpx.AsyncClient.post``: a2a-sdk's push sender, fasta2a's client."""
    _add_headers(kwargs)
    return await wrapped(*args, **kwargs)


def httpx_stream(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """``httpx.AsyncClient.stream`` (a context manager): fasta2a's streaming client."""
    _add_headers(kwargs)
    return wrapped(*args, **kwargs)


def grpc_metadata(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """a2a-sdk 0.3's ``GrpcTransport._get_grpc_metadata``: the call's headers as metadata
    (that transport takes none from its call context)."""
    result = wrapped(*args, **kwargs)
    extra = CALL_HEADERS.get()
    if extra:
        with guard("grpc metadata"):
            present = {str(k).lower() for k, _ in result or ()}
            result = [*(result or ()), *((k, v) for k, v in extra.items() if k.lower() not in present)]
    return result
