"""The A2A call spans, per the OpenTelemetry semantic conventions for A2A.

The conventions (``names.SEMCONV_A2A_REPO`` ``names.SEMCONV_A2A_DOC`` at
``names.SEMCONV_A2A_COMMIT``, status Development): a CLIENT span per A2A call
and a SERVER span per request answered, each named ``{a2a.method.name}`` (the
protocol's operation: ``SendMessage``, ``SendStreamingMessage``, ``CancelTask``,
``SubscribeToTask``, whatever the binding or the SDK release calls it), with

- required: ``a2a.method.name``;
- conditionally required, set whenever the value is known: ``a2a.message.id``
  (the request's message), ``a2a.task.id`` and ``gen_ai.conversation.id`` (the
  contextId; from the request, else from the answer), ``a2a.task.state`` (the
  last state the answer or stream carried), ``a2a.tenant``, ``error.type`` (the
  JSON-RPC error code or protocol status when one was answered, else the
  exception's name), ``gen_ai.agent.name`` / ``.description`` / ``.version`` (the
  target Agent Card on the client, the local one on the server);
- recommended, where cheap: ``a2a.message.reference_task_ids``,
  ``a2a.protocol.version``, ``server.address`` / ``server.port``.

Each backend's dialect says how its objects carry these (protobuf, pydantic or
plain dicts) and maps its wrapped methods to the protocol's method names.

Migration follows opentelemetry-python-contrib (``opentelemetry.instrumentation._semconv``):
``OTEL_SEMCONV_STABILITY_OPT_IN`` is a comma-separated list; ``a2a/dup`` adds the
names used before the conventions (``a2a.method`` on call spans, ``a2a.context.id``
on producer spans) beside the conventions' own; ``a2a`` (or nothing) emits the
conventions only. The call spans can also be left to another A2A instrumentation
(``A2A_QUIESCENCE_CALL_SPANS``): then none are made here, and everything else stays.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from a2a_quiescence import environment_variables as env
from a2a_quiescence import names


# --- settings -----------------------------------------------------------------------
def dup_mode(environ: Any = None) -> bool:
    """``OTEL_SEMCONV_STABILITY_OPT_IN`` names ``a2a/dup``: also emit the names before the
    conventions. Parsed as contrib parses it: comma-separated, each item stripped."""
    return names.SEMCONV_OPT_A2A_DUP in env.OTEL_SEMCONV_STABILITY_OPT_IN.get(environ)


def call_spans_enabled(environ: Any = None) -> bool:
    """``A2A_QUIESCENCE_CALL_SPANS`` (default true): false, 0, no or off leaves the A2A call
    spans to another instrumentation."""
    return env.CALL_SPANS.get(environ)


# --- reading a library's objects (protobuf, pydantic, dicts) --------------------------
def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def read_field(obj: Any, key: str) -> Any:
    """``obj.key`` or ``obj[key]`` (or its camelCase spelling, as JSON carries it); None
    when absent or empty (protobuf's unset fields read as "" or [])."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        value = obj.get(key)
        if value is None:
            value = obj.get(_camel(key))
    else:
        value = getattr(obj, key, None)
    if value is None:
        return None
    if type(value) is str:  # most fields: ids and names (one test, not four)
        return value or None
    if value == "" or (hasattr(value, "__len__") and not isinstance(value, str) and len(value) == 0):
        return None
    return value


def _payload(obj: Any) -> Any:
    """The object inside a 1.x oneof wrapper (SendMessageResponse, StreamResponse) or a
    JSON-RPC response / fasta2a StreamResponse dict; ``obj`` itself otherwise."""
    which = getattr(obj, "WhichOneof", None)
    if which is not None:
        try:
            name = which("payload")
        except ValueError:  # not a oneof-carrying message
            name = None
        return getattr(obj, name) if name else obj
    if isinstance(obj, dict):
        if "jsonrpc" in obj:
            obj = obj.get("result")
            if not isinstance(obj, dict):
                return obj
        for key in ("task", "message", "status_update", "artifact_update", "statusUpdate", "artifactUpdate"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def facts(obj: Any, dialect: Any) -> tuple[str | None, str | None, str | None]:
    """(task id, context id, task state) an answer or stream event carries (a Task, a
    Message, a status or artifact update, in any backend's types)."""
    obj = _payload(obj)
    if obj is None:
        return None, None, None
    status = read_field(obj, "status")
    task_id = read_field(obj, "task_id")
    if task_id is None and status is not None:
        task_id = read_field(obj, "id")  # a Task
    state = None
    if status is not None:
        raw = read_field(status, "state")
        if raw is not None:
            state = dialect.state_name(raw)
            if state == "TASK_STATE_UNSPECIFIED":
                state = None
    context_id = read_field(obj, "context_id")
    return (str(task_id) if task_id else None, str(context_id) if context_id else None, state)


def request_attributes(params: Any) -> dict[str, Any]:
    """What the request itself says: its message (id, task, context, referenced tasks), the
    task it names (cancel, subscribe) and its tenant."""
    attrs: dict[str, Any] = {}
    if params is None:
        return attrs
    message = read_field(params, "message")
    if message is None and read_field(params, "message_id") is not None and read_field(params, "parts") is not None:
        message = params  # fasta2a's client takes the message itself
    task_id = read_field(params, "id") if message is None else read_field(message, "task_id")
    if message is not None:
        message_id = read_field(message, "message_id")
        if message_id:
            attrs[names.ATTR_A2A_MESSAGE_ID] = str(message_id)
        context_id = read_field(message, "context_id")
        if context_id:
            attrs[names.ATTR_CONVERSATION_ID] = str(context_id)
        refs = read_field(message, "reference_task_ids")
        if refs:
            attrs[names.ATTR_REFERENCE_TASK_IDS] = [str(r) for r in refs]
    if task_id:
        attrs[names.ATTR_TASK_ID] = str(task_id)
    tenant = read_field(params, "tenant")
    if isinstance(tenant, str) and tenant:
        attrs[names.ATTR_TENANT] = tenant
    return attrs


def card_attributes(card: Any) -> dict[str, Any]:
    """``gen_ai.agent.*`` from an Agent Card (protobuf, pydantic or dict)."""
    attrs: dict[str, Any] = {}
    for key, attr in (("name", names.ATTR_AGENT_NAME), ("description", names.ATTR_AGENT_DESCRIPTION),
                      ("version", names.ATTR_AGENT_VERSION)):
        value = read_field(card, key)
        if isinstance(value, str) and value:
            attrs[attr] = value
    return attrs


def sse_event(item: Any) -> Any:
    """The JSON object of one server-sent event as bytes (``data: {...}``), else ``item``."""
    if isinstance(item, (bytes, bytearray)):
        for line in bytes(item).decode("utf-8", "replace").splitlines():
            if line.startswith("data:"):
                try:
                    return json.loads(line[5:].strip())
                except ValueError:
                    return None
        return None
    return item


def error_code(answer: Any) -> str | None:
    """The JSON-RPC error code of an error answered as a value (a dict with ``error``)."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        code = answer["error"].get("code")
        return str(code) if code is not None else names.ERROR_OTHER
    return None


def server_attributes(authority: str) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of a host:port (none when it is not known)."""
    if not authority or authority == "unknown":
        return {}
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and host:
        return {names.ATTR_SERVER_ADDRESS: host.strip("[]"), names.ATTR_SERVER_PORT: int(port)}
    return {names.ATTR_SERVER_ADDRESS: authority}


# --- one call's span --------------------------------------------------------------------
class CallSpan:
    """One A2A call's span, and what it learns of the task while the call runs: the
    request's task and context first, then each answer's (a stream's last state wins).
    None of it runs when call spans are off (the wrappers then hold no CallSpan)."""

    __slots__ = ("span", "dialect", "task_id", "context_id", "state", "failed")

    def __init__(self, span: trace.Span, dialect: Any, attrs: dict[str, Any]) -> None:
        self.span = span
        self.dialect = dialect
        self.task_id = attrs.get(names.ATTR_TASK_ID)
        self.context_id = attrs.get(names.ATTR_CONVERSATION_ID)
        self.state: str | None = None
        self.failed = False

    def observe(self, item: Any) -> None:
        """An answer, or one event of a stream."""
        decode = getattr(self.dialect, "decode_event", None)
        if decode is not None:
            item = decode(item)
        code = error_code(item)
        if code is not None:
            self.answered_error(code)
            return
        task_id, context_id, state = facts(item, self.dialect)
        if task_id and not self.task_id:
            self.task_id = task_id
        if context_id and not self.context_id:
            self.context_id = context_id
        if state:
            self.state = state

    def answered_error(self, code: str) -> None:
        """The peer answered with an error (as a value, not an exception)."""
        self.failed = True
        self.span.set_attribute(names.ATTR_ERROR_TYPE, code)
        self.span.set_status(Status(StatusCode.ERROR, code))

    def finish(self) -> None:
        """What was learned, on the span, before it ends."""
        span = self.span
        if self.task_id:
            span.set_attribute(names.ATTR_TASK_ID, self.task_id)
        if self.context_id:
            span.set_attribute(names.ATTR_CONVERSATION_ID, self.context_id)
        if self.state:
            span.set_attribute(names.ATTR_TASK_STATE, self.state)
