"""The OpenTelemetry semantic conventions for A2A call spans, as lists taken from the
convention's text, and a checker for recorded spans (stdlib only: the compat
smokes import it inside their own virtualenvs to record spans; the tests check
them with it).

Source: open-telemetry/semantic-conventions-genai, docs/gen-ai/a2a.md at commit
6718089fe6e0530fdf498d845f0532e9cf172c81 (the commit of its PR #195 that added
it; status Development; unreleased, listed under "Unreleased" in its CHANGELOG;
its links pin the general conventions at semantic-conventions v1.44.0). Every
list below is copied from the "Client" and "Server" span tables of that text.
"""

from __future__ import annotations

from typing import Any

SOURCE = ("open-telemetry/semantic-conventions-genai", "docs/gen-ai/a2a.md",
          "6718089fe6e0530fdf498d845f0532e9cf172c81")

# "Span name SHOULD be `{a2a.method.name}`." / "Span kind SHOULD be `CLIENT`" (`SERVER`)
KIND = {"client": "CLIENT", "server": "SERVER"}

# "`a2a.method.name` has the following list of well-known values. If one of them applies,
# then the respective value MUST be used"
WELL_KNOWN_METHODS = (
    "CancelTask", "CreateTaskPushNotificationConfig", "DeleteTaskPushNotificationConfig", "GetExtendedAgentCard",
    "GetTask", "GetTaskPushNotificationConfig", "ListTaskPushNotificationConfigs", "ListTasks", "SendMessage",
    "SendStreamingMessage", "SubscribeToTask",
)
# "`a2a.task.state` has the following list of well-known values"
WELL_KNOWN_TASK_STATES = (
    "TASK_STATE_AUTH_REQUIRED", "TASK_STATE_CANCELED", "TASK_STATE_COMPLETED", "TASK_STATE_FAILED",
    "TASK_STATE_INPUT_REQUIRED", "TASK_STATE_REJECTED", "TASK_STATE_SUBMITTED", "TASK_STATE_UNSPECIFIED",
    "TASK_STATE_WORKING",
)

REQUIRED = ("a2a.method.name",)

# Conditionally Required, with the condition as the text states it (the Agent Card is "the
# target Agent Card" on the client, "the local Agent Card" on the server)
CONDITIONALLY_REQUIRED = {
    "a2a.message.id": "When the A2A request contains a message.",
    "a2a.task.id": "When the A2A request or response is task-scoped.",
    "a2a.task.state": "When the A2A response or event contains task state.",
    "a2a.tenant": "When the A2A request `tenant` field is set.",
    "error.type": "If and only if the operation fails.",
    "gen_ai.agent.description": "When available from the target (client) / local (server) Agent Card.",
    "gen_ai.agent.name": "When available from the target (client) / local (server) Agent Card.",
    "gen_ai.agent.version": "When available from the target (client) / local (server) Agent Card.",
    "gen_ai.conversation.id": "When the A2A request or response contains context id.",
}

RECOMMENDED = {
    "client": ("a2a.message.reference_task_ids", "a2a.protocol.version", "server.address", "server.port"),
    "server": ("a2a.message.reference_task_ids", "a2a.protocol.version", "client.address", "client.port",
               "server.address", "server.port"),
}

CARD = ("gen_ai.agent.name", "gen_ai.agent.description", "gen_ai.agent.version")


def allowed(side: str) -> set[str]:
    """Every attribute the convention lists for a span of this side."""
    return {*REQUIRED, *CONDITIONALLY_REQUIRED, *RECOMMENDED[side]}


def record(span: Any) -> dict[str, Any]:
    """A finished SDK span (ReadableSpan) as JSON-able data."""
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "status": span.status.status_code.name,
        "status_description": span.status.description,
        "events": [{"name": e.name, **{k: str(v) for k, v in (e.attributes or {}).items()}} for e in span.events],
        "attributes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in span.attributes.items()},
    }


def call_spans(records: list[dict[str, Any]], scope: str = "a2a_quiescence") -> list[dict[str, Any]]:
    """Our A2A call spans: CLIENT and SERVER spans of our scope but the push delivery's."""
    return [r for r in records if r["scope"] == scope and r["kind"] in ("CLIENT", "SERVER")
            and r["name"] != "a2a.push_notification.send"]


def check(span: dict[str, Any], *, side: str, card: dict[str, str] | None, message: bool = True,
          task: bool = True, state: Any = True, context: bool = True, tenant: str | None = None,
          failed: bool = False, extra: tuple[str, ...] = ()) -> list[str]:
    """What in ``span`` (a ``record``) breaks the convention, given which of its conditions
    hold for this call: ``card`` (what the available Agent Card says, as the gen_ai.agent.*
    attributes it gives; None: no card available), ``message`` (the request carries a
    message), ``task`` (task-scoped), ``state`` (the answer carries a task state; a string:
    that state), ``context`` (a context id), ``tenant``, ``failed``. ``extra``: attributes
    outside the convention the caller expects (none by default)."""
    problems = []
    attrs = span["attributes"]
    method = attrs.get("a2a.method.name")
    for key in REQUIRED:
        if key not in attrs:
            problems.append(f"required {key} missing")
    if span["name"] != method:
        problems.append(f"span name {span['name']!r} is not a2a.method.name {method!r}")
    if method not in WELL_KNOWN_METHODS:
        problems.append(f"a2a.method.name {method!r} is not a well-known value")
    if span["kind"] != KIND[side]:
        problems.append(f"kind {span['kind']} is not {KIND[side]}")
    unknown = set(attrs) - allowed(side) - set(extra)
    if unknown:
        problems.append(f"attributes the convention does not list for a {side} span: {sorted(unknown)}")

    def conditional(key: str, holds: bool) -> None:
        if holds and key not in attrs:
            problems.append(f"{key} missing ({CONDITIONALLY_REQUIRED[key]})")
        if not holds and key in attrs:
            problems.append(f"{key} set, but its condition does not hold ({CONDITIONALLY_REQUIRED[key]})")

    conditional("a2a.message.id", message)
    conditional("a2a.task.id", task)
    conditional("a2a.task.state", bool(state))
    conditional("a2a.tenant", tenant is not None)
    conditional("error.type", failed)
    given = {k: v for k, v in attrs.items() if k in CARD}
    if given != (card or {}):
        problems.append(f"gen_ai.agent.* {given} is not what the Agent Card says: {card or {}}")
    conditional("gen_ai.conversation.id", context)
    if "a2a.task.state" in attrs and attrs["a2a.task.state"] not in WELL_KNOWN_TASK_STATES:
        problems.append(f"a2a.task.state {attrs['a2a.task.state']!r} is not a well-known value")
    if isinstance(state, str) and attrs.get("a2a.task.state") != state:
        problems.append(f"a2a.task.state {attrs.get('a2a.task.state')!r}, expected {state!r}")
    if tenant is not None and attrs.get("a2a.tenant") != tenant:
        problems.append(f"a2a.tenant {attrs.get('a2a.tenant')!r}, expected {tenant!r}")
    if failed and span["status"] != "ERROR":
        problems.append("a failed operation's span status is not ERROR")
    if "server.port" in attrs and "server.address" not in attrs:
        problems.append("server.port without server.address")
    return problems


def check_pair(client: dict[str, Any], server: dict[str, Any]) -> list[str]:
    """One call seen from both ends: the same method, message, task and context, and the
    server span continuing the client's (same trace)."""
    problems = []
    for key in ("a2a.method.name", "a2a.message.id", "a2a.task.id", "gen_ai.conversation.id"):
        if client["attributes"].get(key) != server["attributes"].get(key):
            problems.append(f"{key}: client {client['attributes'].get(key)!r} != server {server['attributes'].get(key)!r}")
    if client["trace_id"] != server["trace_id"]:
        problems.append("client and server spans are on different traces")
    return problems


def check_relay(records: list[dict[str, Any]], trace_id: str, hops: dict[str, str], *,
                server_card: Any, client_card: Any, state: Any, protocol: str | None) -> list[str]:
    """One cascade of a relay (this process -> A -> B -> C): per hop, the SERVER span of the
    hop (found by its local card's name) and the CLIENT span of the call it answered (the
    one carrying the same message id) follow the convention. ``hops``: hop -> its A2A method;
    ``server_card`` / ``client_card``: hop -> the gen_ai.agent.* each end must carry (None:
    no card available); ``state``: hop -> the task state the answer carried;
    ``protocol``: the a2a.protocol.version both ends give (None: not given)."""
    problems = []
    calls = [r for r in call_spans(records) if r["trace_id"] == trace_id]
    if len(calls) != 2 * len(hops):
        problems.append(f"{len(calls)} call spans on trace {trace_id}, expected {2 * len(hops)}")
    for hop, method in hops.items():
        servers = [r for r in calls if r["kind"] == "SERVER" and r["attributes"].get("gen_ai.agent.name") == hop]
        if len(servers) != 1:
            problems.append(f"{hop}: {len(servers)} SERVER spans")
            continue
        server = servers[0]
        clients = [r for r in calls if r["kind"] == "CLIENT"
                   and r["attributes"].get("a2a.message.id") == server["attributes"].get("a2a.message.id")]
        if len(clients) != 1:
            problems.append(f"{hop}: {len(clients)} CLIENT spans carrying its request's message")
            continue
        client = clients[0]
        for side, span, card in (("client", client, client_card(hop)), ("server", server, server_card(hop))):
            if span["name"] != method:
                problems.append(f"{hop} {side}: named {span['name']!r}, expected {method!r}")
            problems += [f"{hop} {side}: {p}" for p in check(span, side=side, card=card, state=state(hop))]
            if span["attributes"].get("a2a.protocol.version") != protocol:
                problems.append(f"{hop} {side}: a2a.protocol.version {span['attributes'].get('a2a.protocol.version')!r}")
        problems += [f"{hop}: {p}" for p in check_pair(client, server)]
    return problems
