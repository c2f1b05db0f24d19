"""a2a-sdk: the 1.x line (protobuf types, ActiveTask and the V2 handler beside
the legacy handler) and the 0.3 line (pydantic types, one DefaultRequestHandler
with its QueueManager/EventQueue, TaskManager and ResultAggregator).

Both lines serve requests through a handler whose ``on_message_send`` and
friends receive a ``ServerCallContext`` with the HTTP headers (or the gRPC
metadata) in its state, and run the agent in a producer task: an ActiveTask's
(1.x V2) or ``_run_event_stream`` (the legacy handler, and 0.3's only one).
What differs is told to the shared wrappers by a dialect: task-state names,
how headers ride on a client call, which client errors mean the peer answered,
and a push delivery's arguments.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from opentelemetry import trace

from a2a_quiescence import names
from a2a_quiescence.instrumentation import client, lifecycle, server
from a2a_quiescence.instrumentation.backends import Awaited, Backend, Hook
from a2a_quiescence.instrumentation.runtime import TRACECONTEXT, guard, trace_hex

_AT = "a2a.server.agent_execution.active_task"
_REG = "a2a.server.agent_execution.active_task_registry"
_V2 = "a2a.server.request_handlers.default_request_handler_v2"
_V1 = "a2a.server.request_handlers.default_request_handler"
_EQ2 = "a2a.server.events.event_queue_v2"
_EQ = "a2a.server.events.event_queue"
_PUSH = "a2a.server.tasks.base_push_notification_sender"
_TM = "a2a.server.tasks.task_manager"
_JSONRPC = "a2a.client.transports.jsonrpc"
_REST = "a2a.client.transports.rest"
_GRPC = "a2a.client.transports.grpc"

# the handler's and the transports' methods, and the A2A operation each is (the span's name,
# a2a.method.name): the same four operations in both lines, whatever their JSON-RPC names
# ("SendMessage" in 1.x, "message/send" in 0.3)
_OPERATIONS = {
    # servers (both lines' request handlers)
    "on_message_send": names.METHOD_SEND_MESSAGE,
    "on_message_send_stream": names.METHOD_SEND_STREAMING_MESSAGE,
    "on_cancel_task": names.METHOD_CANCEL_TASK,
    "on_subscribe_to_task": names.METHOD_SUBSCRIBE_TO_TASK,  # 1.x
    "on_resubscribe_to_task": names.METHOD_SUBSCRIBE_TO_TASK,  # 0.3's tasks/resubscribe
    # clients (both lines' JSON-RPC, REST and gRPC transports)
    "send_message": names.METHOD_SEND_MESSAGE,
    "send_message_streaming": names.METHOD_SEND_STREAMING_MESSAGE,
    "cancel_task": names.METHOD_CANCEL_TASK,
    "subscribe": names.METHOD_SUBSCRIBE_TO_TASK,  # 1.x
    "resubscribe": names.METHOD_SUBSCRIBE_TO_TASK,  # 0.3
}
_SERVER_CALLS = ("on_message_send", "on_cancel_task")


def _major_minor(version: Any) -> str | None:
    """An A2A protocol version as the A2A-Version header spells it ("0.3.0" -> "0.3")."""
    if not version:
        return None
    parts = str(version).split(".")
    return ".".join(parts[:2])


def _traceparent_in(headers: Any) -> str | None:
    for key, value in (headers or {}).items():
        if str(key).lower() == names.HEADER_TRACEPARENT:
            sc = trace.get_current_span(TRACECONTEXT.extract({"traceparent": str(value)})).get_span_context()
            if sc.is_valid:
                return trace_hex(sc)
    return None


class V1Dialect:
    """a2a-sdk 1.x: protobuf task states; headers are the call context's service parameters."""

    name = "a2a-sdk 1.x"
    _names: dict[int, str] = {}

    def state_name(self, value: Any) -> str:
        name = self._names.get(value)
        if name is None:
            from a2a.types.a2a_pb2 import TaskState

            name = self._names[value] = TaskState.Name(value)
        return name

    def given_trace_id(self, call_context: Any) -> str | None:
        return _traceparent_in(getattr(call_context, "service_parameters", None))

    def with_headers(self, call_context: Any, headers: dict[str, str]) -> Any:
        from a2a.client.client import ClientCallContext

        if call_context is None:
            return ClientCallContext(service_parameters=dict(headers))
        params = dict(call_context.service_parameters or {})
        for key, value in headers.items():
            params.setdefault(key, value)
        # a copy: the caller's context object is left as it was
        return call_context.model_copy(update={"service_parameters": params})

    def peer_answered(self, exc: BaseException) -> bool:
        from a2a.client.errors import A2AClientError
        from a2a.utils.errors import A2AError

        return isinstance(exc, A2AError) and not isinstance(exc, A2AClientError)

    def push_target(self, args: Any, kwargs: Any) -> tuple[Any, str]:
        """``_dispatch_notification(event, push_info, task_id)``."""
        push_info = kwargs.get("push_info", args[1] if len(args) > 1 else None)
        return push_info, str(kwargs.get("task_id", args[2] if len(args) > 2 else "") or "")

    # -- what the call spans say (semconv) --
    def server_card(self, handler: Any, call_context: Any) -> Any:
        """The local Agent Card: both 1.x handlers hold theirs."""
        return getattr(handler, "_agent_card", None)

    def server_protocol_version(self, handler: Any, headers: dict[str, str]) -> str | None:
        """The request's A2A-Version header; none means 0.3 (the rule a2a-sdk 1.x applies)."""
        return _major_minor(headers.get("a2a-version")) or "0.3"

    def client_protocol_version(self, transport: Any) -> str | None:
        """The transports hooked here speak the current protocol (a2a-sdk's 0.3 compat
        transports are other classes)."""
        from a2a.utils.constants import PROTOCOL_VERSION_CURRENT

        return PROTOCOL_VERSION_CURRENT

    def _jsonrpc_code(self, exc: BaseException) -> str | None:
        from a2a.utils.errors import JSON_RPC_ERROR_CODE_MAP

        code = JSON_RPC_ERROR_CODE_MAP.get(type(exc))
        return str(code) if code is not None else None

    def server_error_type(self, exc: BaseException, call_context: Any) -> str | None:
        """The JSON-RPC error code the answer carries, when the request came over JSON-RPC
        (its dispatcher notes the method in the call context's state)."""
        state = getattr(call_context, "state", None)
        if isinstance(state, dict) and "method" in state:
            return self._jsonrpc_code(exc)
        return None

    def client_error_type(self, exc: BaseException, transport: Any) -> str | None:
        """The JSON-RPC error code answered (the JSON-RPC transport raises the A2A error it maps to)."""
        if type(transport).__name__ == "JsonRpcTransport":
            return self._jsonrpc_code(exc)
        return None


class V03Dialect(V1Dialect):
    """a2a-sdk 0.3: pydantic task states ('input-required'); headers ride in the call
    context's ``state['http_kwargs']``; the gRPC transport takes them as metadata."""

    name = "a2a-sdk 0.3"

    def state_name(self, value: Any) -> str:
        raw = str(getattr(value, "value", value))
        return "TASK_STATE_" + raw.upper().replace("-", "_")

    def given_trace_id(self, call_context: Any) -> str | None:
        state = getattr(call_context, "state", None) or {}
        return _traceparent_in((state.get("http_kwargs") or {}).get("headers"))

    def with_headers(self, call_context: Any, headers: dict[str, str]) -> Any:
        from a2a.client.middleware import ClientCallContext

        state = dict(call_context.state) if call_context is not None else {}
        http_kwargs = dict(state.get("http_kwargs") or {})
        merged = dict(http_kwargs.get("headers") or {})
        for key, value in headers.items():
            merged.setdefault(key, value)
        http_kwargs["headers"] = merged
        state["http_kwargs"] = http_kwargs
        if call_context is None:
            return ClientCallContext(state=state)
        return call_context.model_copy(update={"state": state})

    def peer_answered(self, exc: BaseException) -> bool:
        # only a JSON-RPC error response is the peer's own answer; an HTTP error may be a proxy's
        from a2a.client.errors import A2AClientJSONRPCError

        return isinstance(exc, A2AClientJSONRPCError)

    def push_target(self, args: Any, kwargs: Any) -> tuple[Any, str]:
        """``_dispatch_notification(task, push_info)``."""
        task = kwargs.get("task", args[0] if args else None)
        push_info = kwargs.get("push_info", args[1] if len(args) > 1 else None)
        return push_info, str(getattr(task, "id", "") or "")

    # -- what the call spans say (semconv) --
    def server_card(self, handler: Any, call_context: Any) -> Any:
        """The local Agent Card: 0.3's handler holds none; its JSON-RPC, REST or gRPC
        handler was given it with the request handler (``remember_card``)."""
        return _CARDS.get(handler)

    def server_protocol_version(self, handler: Any, headers: dict[str, str]) -> str | None:
        card = _CARDS.get(handler)
        return _major_minor(getattr(card, "protocol_version", None)) or "0.3"

    def client_protocol_version(self, transport: Any) -> str | None:
        card = getattr(transport, "agent_card", None)
        return _major_minor(getattr(card, "protocol_version", None)) or "0.3"

    def server_error_type(self, exc: BaseException, call_context: Any) -> str | None:
        """0.3's handler raises a ServerError holding the A2A error and its JSON-RPC code."""
        code = getattr(getattr(exc, "error", None), "code", None)
        return str(code) if isinstance(code, int) else None

    def client_error_type(self, exc: BaseException, transport: Any) -> str | None:
        """A JSON-RPC error answered (its code), or an HTTP error status."""
        code = getattr(getattr(exc, "error", None), "code", None)
        if isinstance(code, int):
            return str(code)
        status = getattr(exc, "status_code", None)
        return str(status) if isinstance(status, int) else None


# a2a-sdk 0.3's request handler -> the Agent Card its JSON-RPC/REST/gRPC handler was built with
_CARDS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def remember_card(wrapped: Callable, instance: Any, args: Any, kwargs: Any) -> Any:
    """0.3's ``JSONRPCHandler`` / ``RESTHandler`` / ``GrpcHandler.__init__(agent_card,
    request_handler, ...)``: the local card of that request handler's SERVER spans."""
    result = wrapped(*args, **kwargs)
    with guard("0.3 agent card"):
        handler = getattr(instance, "request_handler", None)
        if handler is not None:
            _CARDS[handler] = getattr(instance, "agent_card", None)
    return result


def _server_hooks(module: str, owner: str, streams: tuple[str, ...], optional: bool, dialect: Any) -> list[Hook]:
    hooks = [Hook(module, owner, m, server.server_call(m, _OPERATIONS[m], dialect), optional) for m in _SERVER_CALLS]
    hooks += [Hook(module, owner, m, server.server_stream(m, _OPERATIONS[m], dialect), optional) for m in streams]
    return hooks


def _client_hooks(dialect: Any, streams: tuple[str, ...]) -> list[Hook]:
    hooks = []
    for module, owner, optional in ((_JSONRPC, "JsonRpcTransport", False), (_REST, "RestTransport", True),
                                    (_GRPC, "GrpcTransport", True)):  # REST and gRPC need extras
        for method in ("send_message", "cancel_task"):
            hooks.append(Hook(module, owner, method, client.client_call(method, _OPERATIONS[method], dialect), optional))
        for method in streams:
            hooks.append(Hook(module, owner, method, client.client_stream(method, _OPERATIONS[method], dialect),
                              optional))
    return hooks


def _common_hooks(dialect: Any) -> list[Hook]:
    return [
        Hook(_PUSH, "BasePushNotificationSender", "_dispatch_notification", client.push_dispatch(dialect)),
        Hook(_TM, "TaskManager", "_save_task", lifecycle.task_saved(dialect.state_name)),
    ]


def v1_hooks() -> list[Hook]:
    dialect = V1Dialect()
    streams = ("on_message_send_stream", "on_subscribe_to_task")
    return [
        Hook(_AT, "ActiveTask", "__init__", lifecycle.active_task_init),
        Hook(_AT, "ActiveTask", "start", lifecycle.active_task_start),
        Hook(_AT, "ActiveTask", "cancel", lifecycle.active_task_cancel),
        Hook(_AT, "ActiveTask", "aclose", lifecycle.task_aclose, optional=True),  # from 1.1.2
        Hook(_REG, "ActiveTaskRegistry", "aclose", lifecycle.registry_aclose, optional=True),
        Hook(_V2, "DefaultRequestHandlerV2", "aclose", lifecycle.handler_aclose, optional=True),
        Hook(_EQ2, "EventQueueSource", "close", lifecycle.queue_close),
        *_server_hooks(_V2, "DefaultRequestHandlerV2", streams, False, dialect),
        # the legacy handler (0.3's DefaultRequestHandler, renamed)
        *_server_hooks(_V1, "LegacyRequestHandler", streams, False, dialect),
        Hook(_V1, "LegacyRequestHandler", "_run_event_stream", lifecycle.event_stream_producer),
        *_client_hooks(dialect, ("send_message_streaming", "subscribe")),
        *_common_hooks(dialect),
    ]


def v03_hooks() -> list[Hook]:
    dialect = V03Dialect()
    return [
        *_server_hooks(_V1, "DefaultRequestHandler", ("on_message_send_stream", "on_resubscribe_to_task"), False,
                       dialect),
        # the local Agent Card of a request handler (for its SERVER spans' gen_ai.agent.*)
        Hook("a2a.server.request_handlers.jsonrpc_handler", "JSONRPCHandler", "__init__", remember_card,
             optional=True),
        Hook("a2a.server.request_handlers.rest_handler", "RESTHandler", "__init__", remember_card, optional=True),
        Hook("a2a.server.request_handlers.grpc_handler", "GrpcHandler", "__init__", remember_card, optional=True),
        Hook(_V1, "DefaultRequestHandler", "_run_event_stream", lifecycle.event_stream_producer),
        Hook(_EQ, "EventQueue", "close", lifecycle.queue_close),
        *_client_hooks(dialect, ("send_message_streaming", "resubscribe")),
        # the gRPC transport takes no headers from the call context: they go in as metadata
        Hook(_GRPC, "GrpcTransport", "_get_grpc_metadata", client.grpc_metadata, optional=True),
        *_common_hooks(dialect),
    ]


V1 = Backend(
    name="a2a-sdk 1.x",
    distribution="a2a-sdk",
    supported=">=1.0.3,<1.4",
    tested=("1.0.3", "1.1.1", "1.2.3", "1.3.0"),
    hooks=v1_hooks,
    doc="ActiveTask producers (V2 handler) and _run_event_stream (legacy handler), aclose drain from 1.1.2",
    # the event queue's dispatcher hands each event to every sink in a task of its own
    # (about ten per hop and request), gathered and awaited before the next event
    awaited=(
        Awaited(_EQ2, "EventQueueSource._deliver_to_sink", "EventQueueSource._dispatch_loop"),  # from 1.2
        Awaited(_EQ2, "EventQueueSink._put_internal", "EventQueueSource._dispatch_loop"),  # 1.0, 1.1
    ),
)
V03 = Backend(
    name="a2a-sdk 0.3",
    distribution="a2a-sdk",
    supported=">=0.3.4,<0.4",
    tested=("0.3.4", "0.3.9", "0.3.26"),
    hooks=v03_hooks,
    doc="DefaultRequestHandler._run_event_stream producers; no drain (the server's shutdown records leaks)",
)
BACKENDS = (V1, V03)
