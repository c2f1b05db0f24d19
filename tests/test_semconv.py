"""Our A2A call spans against the OpenTelemetry semantic conventions for A2A.

The convention: open-telemetry/semantic-conventions-genai, docs/gen-ai/a2a.md at
commit 6718089fe6e0530fdf498d845f0532e9cf172c81 (PR #195; status Development,
unreleased). ``semconv_check`` holds its lists, copied from that text: span name
``{a2a.method.name}``, kind CLIENT or SERVER, ``a2a.method.name`` required, nine
conditionally required attributes each with its condition, and the recommended
ones.

A three-hop cascade (this test's client -> A -> B -> C, the middle hop streaming)
is checked per hop, both ends of each call; then a cancel (state CANCELED, and the
JSON-RPC error of a task that cannot be cancelled), a tenant, the
``OTEL_SEMCONV_STABILITY_OPT_IN=a2a/dup`` migration mode, and the switch that leaves
call spans to another A2A instrumentation (with a stand-in for loongsuite's:
CLIENT/SERVER spans named per the conventions, no propagation of its own)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import re
import uuid
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import wrapt
from a2a.client import ClientConfig, create_client
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb
from opentelemetry import trace
from opentelemetry.trace import SpanKind

import semconv_check as sc
from a2a_quiescence import environment_variables as variables
from a2a_quiescence import names
from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.demo.mesh import build_app, call_context, plan_text
from a2a_quiescence.instrumentation import semconv
from support import TIMED_OUT, Telemetry, instrumented, raise_assertion, serve, wait_until_async

poll = partial(wait_until_async, timeout=20.0, every=0.01, message=TIMED_OUT, fail=raise_assertion)


def test_the_checker_lists_what_the_instrumentation_names() -> None:
    """names.py and the convention's lists agree (one is the code, the other the text)."""
    assert sc.SOURCE == (names.SEMCONV_A2A_REPO, names.SEMCONV_A2A_DOC, names.SEMCONV_A2A_COMMIT)
    assert set(names.A2A_METHODS) <= set(sc.WELL_KNOWN_METHODS)
    assert set(names.AWAITING_STATES) <= set(sc.WELL_KNOWN_TASK_STATES)
    ours = {names.ATTR_A2A_METHOD_NAME, names.ATTR_A2A_MESSAGE_ID, names.ATTR_TASK_ID, names.ATTR_TASK_STATE,
            names.ATTR_TENANT, names.ATTR_ERROR_TYPE, names.ATTR_AGENT_NAME, names.ATTR_AGENT_DESCRIPTION,
            names.ATTR_AGENT_VERSION, names.ATTR_CONVERSATION_ID, names.ATTR_REFERENCE_TASK_IDS,
            names.ATTR_PROTOCOL_VERSION, names.ATTR_SERVER_ADDRESS, names.ATTR_SERVER_PORT}
    assert ours <= sc.allowed("client") and ours <= sc.allowed("server")
    assert set(sc.REQUIRED) | set(sc.CONDITIONALLY_REQUIRED) <= ours


@pytest.mark.parametrize("raw, dup", [
    (None, False), ("", False), ("a2a", False), ("http/dup", False), ("a2a/dup", True), (" http , a2a/dup ", True),
    ("a2a,a2a/dup", True), ("gen_ai_latest_experimental,database", False),
])
def test_the_opt_in_is_read_as_contrib_reads_it(raw: str | None, dup: bool) -> None:
    assert semconv.dup_mode({} if raw is None else {variables.OTEL_SEMCONV_STABILITY_OPT_IN.name: raw}) is dup


@pytest.mark.parametrize("raw, on", [(None, True), ("true", True), ("1", True), ("false", False), ("0", False),
                                     ("Off", False), ("no", False)])
def test_the_call_span_switch(raw: str | None, on: bool) -> None:
    assert semconv.call_spans_enabled({} if raw is None else {variables.CALL_SPANS.name: raw}) is on


# --- a three-hop cascade ------------------------------------------------------------
class Mesh:
    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.cards: dict[str, dict[str, str]] = {}


@contextlib.asynccontextmanager
async def mesh(wrap: Any = None) -> AsyncIterator[Mesh]:
    """A -> B -> C on loopback; ``wrap(app)`` wraps each ASGI app (a transport instrumentation)."""
    m = Mesh()
    ports = {n: free_port() for n in "ABC"}
    m.urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    async with contextlib.AsyncExitStack() as stack:
        for name, peer in (("C", None), ("B", "C"), ("A", "B")):
            app, handler, _executor = build_app(name, ports[name], {peer: m.urls[peer]} if peer else {})
            card = handler._agent_card
            m.cards[name] = {names.ATTR_AGENT_NAME: card.name, names.ATTR_AGENT_DESCRIPTION: card.description,
                             names.ATTR_AGENT_VERSION: card.version}
            await stack.enter_async_context(serve(wrap(app) if wrap else app, ports[name]))
        yield m


# test -> A (SendMessage), A -> B (SendStreamingMessage), B -> C (SendMessage)
PLAN = {"calls": [{"to": "B", "stream": True, "plan": {"calls": [{"to": "C", "plan": {"work_ms": 5}}]}}]}
HOPS = (("A", names.METHOD_SEND_MESSAGE), ("B", names.METHOD_SEND_STREAMING_MESSAGE), ("C", names.METHOD_SEND_MESSAGE))


@contextlib.asynccontextmanager
async def client_for(url: str, streaming: bool = False) -> AsyncIterator[Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield await create_client(url, client_config=ClientConfig(streaming=streaming, httpx_client=http))


async def send(url: str, plan: dict[str, Any], trace_id: str | None, **request: Any) -> list[Any]:
    async with client_for(url) as client:
        message = pb.SendMessageRequest(message=new_text_message(plan_text(plan), role=pb.Role.ROLE_USER), **request)
        return [e async for e in client.send_message(message, context=call_context(trace_id))]


async def run_cascade(tel: Telemetry, wrap: Any = None) -> tuple[str, Mesh]:
    trace_id = uuid.uuid4().hex
    async with mesh(wrap) as m:
        events = await send(m.urls["A"], PLAN, trace_id)
        assert events[-1].task.status.state == pb.TaskState.TASK_STATE_COMPLETED
        await poll(lambda: len(tel.spans(names.SPAN_PRODUCER)) >= 3, "three producer spans")
        await poll(lambda: tel.runtime.tracker.cascades[trace_id].active == 0, "the cascade passive")
    return trace_id, m


def records(tel: Telemetry) -> list[dict[str, Any]]:
    return [sc.record(s) for s in tel.spans()]


async def test_three_hops_per_the_conventions() -> None:
    with instrumented(stall_seconds=30) as tel:
        trace_id, m = await run_cascade(tel)
    spans = records(tel)
    calls = sc.call_spans(spans)
    producers = [r for r in spans if r["name"] == names.SPAN_PRODUCER]
    assert len(calls) == 6, [c["name"] for c in calls]  # a CLIENT and a SERVER span per hop
    assert {c["trace_id"] for c in calls + producers} == {trace_id}, "one trace, the caller's"
    for hop, method in HOPS:
        # the hop's SERVER span answers the call whose CLIENT span carries its request's message
        [server] = [c for c in calls if c["kind"] == "SERVER" and c["attributes"].get(names.ATTR_AGENT_NAME) == hop]
        [client] = [c for c in calls if c["kind"] == "CLIENT"
                    and c["attributes"][names.ATTR_A2A_MESSAGE_ID] == server["attributes"][names.ATTR_A2A_MESSAGE_ID]]
        if hop != "A":  # A continues the traceparent its outside caller set (the caller's header wins)
            assert server["parent_id"] == client["span_id"], hop
        [producer] = [p for p in producers if p["parent_id"] == server["span_id"]]
        card = m.cards[hop]  # the client's target card is the server's local card
        for side, span in (("client", client), ("server", server)):
            assert span["name"] == method, (hop, side)
            assert sc.check(span, side=side, card=card, state="TASK_STATE_COMPLETED") == [], (hop, side, span)
            attrs = span["attributes"]
            # the values are the task's own (the producer's on the hop that ran it)
            assert attrs[names.ATTR_TASK_ID] == producer["attributes"][names.ATTR_TASK_ID]
            assert attrs[names.ATTR_CONVERSATION_ID] == producer["attributes"][names.ATTR_CONVERSATION_ID]
            assert attrs[names.ATTR_PROTOCOL_VERSION] == "1.0"
            assert attrs[names.ATTR_SERVER_ADDRESS] == "127.0.0.1"
            assert attrs[names.ATTR_SERVER_PORT] == int(m.urls[hop].rsplit(":", 1)[1])
            assert names.LEGACY_ATTR_METHOD not in attrs  # only under a2a/dup
        assert sc.check_pair(client, server) == [], hop
    # lifecycle spans use the conventions' names too
    for p in producers:
        assert set(p["attributes"]) == {names.ATTR_TASK_ID, names.ATTR_CONVERSATION_ID, names.ATTR_TASK_STATE,
                                        names.ATTR_OUTCOME}, p
        assert p["attributes"][names.ATTR_TASK_STATE] == "TASK_STATE_COMPLETED"
    for close in (r for r in spans if r["name"] == names.SPAN_QUEUE_CLOSE):
        assert close["attributes"][names.ATTR_TASK_ID] in {p["attributes"][names.ATTR_TASK_ID] for p in producers}


async def test_cancel_a_tenant_and_an_error_answered() -> None:
    """CancelTask: the task cancelled (state CANCELED), then a second cancel answered with
    the JSON-RPC error of a task that cannot be cancelled (error.type is its code, on both
    ends, status ERROR); a SendMessage naming a tenant."""
    with instrumented(stall_seconds=30) as tel:
        trace_id = uuid.uuid4().hex
        async with mesh() as m, client_for(m.urls["C"]) as client:
            request = pb.SendMessageRequest(message=new_text_message(plan_text({"outcome": "hang"}), role=pb.Role.ROLE_USER),
                                            configuration=pb.SendMessageConfiguration(return_immediately=True))
            [event] = [e async for e in client.send_message(request, context=call_context(trace_id))]
            task_id = event.task.id
            await poll(lambda: tel.runtime.tracker.producers_in_flight == 1, "the hanging producer")
            cancelled = await client.cancel_task(pb.CancelTaskRequest(id=task_id), context=call_context(trace_id))
            assert cancelled.status.state == pb.TaskState.TASK_STATE_CANCELED
            with pytest.raises(Exception) as refused:
                await client.cancel_task(pb.CancelTaskRequest(id=task_id), context=call_context(trace_id))
            assert type(refused.value).__name__ == "TaskNotCancelableError"
            await send(m.urls["C"], {}, uuid.uuid4().hex, tenant="billing")
            card = m.cards["C"]
    calls = sc.call_spans(records(tel))
    cancels = [c for c in calls if c["name"] == names.METHOD_CANCEL_TASK]
    assert len(cancels) == 4
    ok = [c for c in cancels if c["status"] != "ERROR"]
    failed = [c for c in cancels if c["status"] == "ERROR"]
    for span in ok:  # the request names the task; the answer is the task, cancelled, in its context
        side = span["kind"].lower()
        assert sc.check(span, side=side, card=card, message=False, state="TASK_STATE_CANCELED") == [], span
        assert span["attributes"][names.ATTR_TASK_ID] == task_id
    for span in failed:  # the answer is an error: no state, no context
        side = span["kind"].lower()
        assert sc.check(span, side=side, card=card, message=False, state=False, context=False, failed=True) == [], span
        assert span["attributes"][names.ATTR_ERROR_TYPE] == "-32002"  # TaskNotCancelableError's JSON-RPC code
    assert sorted(c["kind"] for c in ok) == sorted(c["kind"] for c in failed) == ["CLIENT", "SERVER"]
    tenant = [c for c in calls if c["attributes"].get(names.ATTR_TENANT)]
    assert sorted(c["kind"] for c in tenant) == ["CLIENT", "SERVER"]
    for span in tenant:
        assert sc.check(span, side=span["kind"].lower(), card=card, tenant="billing",
                        state="TASK_STATE_COMPLETED") == [], span


async def test_dup_mode_keeps_the_names_from_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SEMCONV_STABILITY_OPT_IN=a2a/dup (contrib's dup mode): the conventions' names
    and, beside them, the ones used before: a2a.method (the wrapped method) on call spans,
    a2a.context.id on producer spans. Span names are the conventions' (a span has one)."""
    monkeypatch.setenv(variables.OTEL_SEMCONV_STABILITY_OPT_IN.name, "http," + names.SEMCONV_OPT_A2A_DUP)
    with instrumented(stall_seconds=30) as tel:
        _trace_id, m = await run_cascade(tel)
    spans = records(tel)
    calls = sc.call_spans(spans)
    assert {(c["kind"], c["name"], c["attributes"][names.LEGACY_ATTR_METHOD]) for c in calls} == {
        ("CLIENT", names.METHOD_SEND_MESSAGE, "send_message"),
        ("CLIENT", names.METHOD_SEND_STREAMING_MESSAGE, "send_message_streaming"),
        ("SERVER", names.METHOD_SEND_MESSAGE, "on_message_send"),
        ("SERVER", names.METHOD_SEND_STREAMING_MESSAGE, "on_message_send_stream"),
    }
    for c in calls:  # still the conventions, with the one old name beside them
        card = m.cards[c["attributes"][names.ATTR_AGENT_NAME]]
        assert sc.check(c, side=c["kind"].lower(), card=card, extra=(names.LEGACY_ATTR_METHOD,)) == [], c
    for p in (r for r in spans if r["name"] == names.SPAN_PRODUCER):
        attrs = p["attributes"]
        assert attrs[names.LEGACY_ATTR_CONTEXT_ID] == attrs[names.ATTR_CONVERSATION_ID]


# --- leaving the call spans to another instrumentation -----------------------------------
def _settled(tel: Telemetry, trace_id: str) -> None:
    """The cascade's accounting, unaffected: this test -> A -> B -> C, three sends and their
    receipts (the delivery ids rode on the calls), one root, nothing active."""
    cascade = tel.runtime.tracker.cascades[trace_id]
    assert sum(t.count for t in cascade.sent.values()) == 3
    assert sum(t.count for t in cascade.received.values()) == 3
    assert cascade.roots.count == 1 and cascade.active == 0


@pytest.mark.parametrize("how", ["env", "kwarg"])
async def test_call_spans_switched_off(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No CLIENT or SERVER span of ours, but the cascade settles as before and its trace
    context still travels: every hop's producer is on the caller's trace."""
    if how == "env":
        monkeypatch.setenv(variables.CALL_SPANS.name, "false")
        ctx = instrumented(stall_seconds=30)
    else:
        ctx = _instrumented_with(call_spans=False)
    with ctx as tel:
        assert tel.runtime.call_spans is False
        trace_id, _m = await run_cascade(tel)
        _settled(tel, trace_id)
    spans = records(tel)
    assert sc.call_spans(spans) == []
    assert not [r for r in spans if r["name"] in sc.WELL_KNOWN_METHODS or r["name"].startswith("a2a.server.")]
    producers = [r for r in spans if r["name"] == names.SPAN_PRODUCER]
    assert len(producers) == 3 and {p["trace_id"] for p in producers} == {trace_id}
    assert all(p["attributes"][names.ATTR_OUTCOME] == names.OUTCOME_COMPLETED for p in producers)


@contextlib.contextmanager
def _instrumented_with(**kwargs: Any) -> Any:
    from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor

    tel = Telemetry()
    inst = A2AQuiescenceInstrumentor()
    inst.instrument(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider, report=False,
                    stall_seconds=30, **kwargs)
    tel.runtime = inst.runtime
    try:
        yield tel
    finally:
        inst.uninstrument()


STAND_IN = "stand_in_a2a_instrumentation"


@contextlib.contextmanager
def stand_in(tel: Telemetry) -> Any:
    """A stand-in for loongsuite's A2A instrumentation (not on the package index yet): a
    CLIENT span per JSON-RPC SendMessage and a SERVER span per request handled, named per
    the conventions, under whatever context is current; it propagates nothing itself."""
    from a2a.client.transports.jsonrpc import JsonRpcTransport
    from a2a.server.request_handlers.default_request_handler_v2 import DefaultRequestHandlerV2

    tracer = trace.get_tracer(STAND_IN, tracer_provider=tel.tracer_provider)

    async def client(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with tracer.start_as_current_span(names.METHOD_SEND_MESSAGE, kind=SpanKind.CLIENT,
                                          attributes={names.ATTR_A2A_METHOD_NAME: names.METHOD_SEND_MESSAGE}):
            return await wrapped(*args, **kwargs)

    async def server(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with tracer.start_as_current_span(names.METHOD_SEND_MESSAGE, kind=SpanKind.SERVER,
                                          attributes={names.ATTR_A2A_METHOD_NAME: names.METHOD_SEND_MESSAGE}):
            return await wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(JsonRpcTransport, "send_message", client)
    wrapt.wrap_function_wrapper(DefaultRequestHandlerV2, "on_message_send", server)
    try:
        yield
    finally:  # unwrapped before ours (each unwrap takes off the outermost wrapper)
        JsonRpcTransport.send_message = JsonRpcTransport.__dict__["send_message"].__wrapped__
        DefaultRequestHandlerV2.on_message_send = DefaultRequestHandlerV2.__dict__["on_message_send"].__wrapped__


PLAIN = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "plan": {"work_ms": 5}}]}}]}


@pytest.mark.skipif(importlib.util.find_spec("opentelemetry.instrumentation.asgi") is None
                    or importlib.util.find_spec("opentelemetry.instrumentation.httpx") is None,
                    reason="the contrib ASGI and httpx instrumentations are not installed")
async def test_another_instrumentation_owns_the_call_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ours with call spans off, beside an A2A instrumentation that makes them (and the
    ASGI and httpx instrumentations, which loongsuite's README asks for): one CLIENT and
    one SERVER span per A2A call, theirs; one trace; the cascade settles as before."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    monkeypatch.setenv(variables.CALL_SPANS.name, "false")
    with instrumented(stall_seconds=30) as tel, stand_in(tel):
        httpx_inst = HTTPXClientInstrumentor()
        httpx_inst.instrument(tracer_provider=tel.tracer_provider)
        try:
            async with mesh(lambda app: OpenTelemetryMiddleware(app, tracer_provider=tel.tracer_provider)) as m:
                # the caller's own span is the root (the stand-in's CLIENT span nests under it)
                caller = trace.get_tracer("caller", tracer_provider=tel.tracer_provider)
                with caller.start_as_current_span("caller") as root:
                    trace_id = format(root.get_span_context().trace_id, "032x")
                    await send(m.urls["A"], PLAIN, None)
                await poll(lambda: len(tel.spans(names.SPAN_PRODUCER)) >= 3, "three producer spans")
                await poll(lambda: tel.runtime.tracker.cascades[trace_id].active == 0, "the cascade passive")
            _settled(tel, trace_id)
        finally:
            httpx_inst.uninstrument()
    shutdown = (names.SPAN_HANDLER_ACLOSE, names.SPAN_REGISTRY_ACLOSE, names.SPAN_TASK_ACLOSE)
    spans = [r for r in records(tel) if r["name"] not in shutdown]  # the servers' drains: not the cascade's
    a2a_calls = [r for r in spans if r["name"] in sc.WELL_KNOWN_METHODS]
    assert sorted((r["kind"], r["scope"]) for r in a2a_calls) == [("CLIENT", STAND_IN)] * 3 + [("SERVER", STAND_IN)] * 3
    assert {r["trace_id"] for r in spans} == {trace_id}, "everything of the cascade on one trace"
    by_id = {r["span_id"]: r for r in spans}
    # each hop's producer (ours) descends from the stand-in's SERVER span, which descends
    # (through ASGI and httpx) from the stand-in's CLIENT span on the hop before
    for producer in (r for r in spans if r["name"] == names.SPAN_PRODUCER):
        chain, node = [], by_id.get(producer["parent_id"])
        while node is not None:
            chain.append((node["scope"], node["kind"], node["name"]))
            node = by_id.get(node["parent_id"])
        assert chain[0] == (STAND_IN, "SERVER", names.METHOD_SEND_MESSAGE), chain
        assert (STAND_IN, "CLIENT", names.METHOD_SEND_MESSAGE) in chain, chain


def test_clear_of_the_peers_entry_point_and_module() -> None:
    """loongsuite's A2A instrumentation is the entry point ``a2a``, module
    ``opentelemetry.instrumentation.a2a``: ours is neither, so both can be installed."""
    ours = [ep for ep in importlib.metadata.entry_points(group="opentelemetry_instrumentor")
            if ep.dist is not None and ep.dist.name == "a2a-quiescence"]
    assert [ep.name for ep in ours] == ["a2a_quiescence"]
    assert all(not ep.value.startswith(names.PEER_MODULE) for ep in ours)
    assert names.PEER_ENTRY_POINT not in {ep.name for ep in ours}
    import a2a_quiescence.instrumentation as pkg

    assert pkg.__name__ != names.PEER_MODULE and not pkg.__name__.startswith("opentelemetry.")


# --- the table of every span and attribute ----------------------------------------------
DOC = Path(__file__).resolve().parent.parent / "docs" / "telemetry.md"


def _documented() -> set[str]:
    return set(re.findall(r"`([^`\s]+)`", DOC.read_text()))


def test_the_table_lists_every_span_and_attribute_name() -> None:
    """docs/telemetry.md names every span, span event and attribute key of names.py."""
    wanted = {value for key, value in vars(names).items() if isinstance(value, str)
              and key.startswith(("SPAN_", "ATTR_", "LEGACY_ATTR_", "EVENT_STALL", "METHOD_", "OTEL_"))}
    assert wanted - _documented() == set()
    assert names.SEMCONV_A2A_COMMIT in DOC.read_text()


async def test_the_table_lists_every_attribute_a_cascade_carries() -> None:
    """What a three-hop cascade really carries is all in the table."""
    with instrumented(stall_seconds=30) as tel:
        await run_cascade(tel)
    seen = {key for s in tel.spans() for key in s.attributes} | {s.name for s in tel.spans()}
    assert seen - _documented() == set()


async def test_our_client_span_nests_under_a_frameworks_invoke_agent_span() -> None:
    """An agent framework's ``invoke_agent`` span (a2a.md leaves it to frameworks) current
    at the call: our CLIENT span is its child, and the cascade is its trace."""
    with instrumented(stall_seconds=30) as tel:
        async with mesh() as m:
            framework = trace.get_tracer("a_framework", tracer_provider=tel.tracer_provider)
            with framework.start_as_current_span("invoke_agent C", kind=SpanKind.CLIENT,
                                                 attributes={"gen_ai.operation.name": "invoke_agent"}) as agent:
                await send(m.urls["C"], {}, None)
            trace_id = format(agent.get_span_context().trace_id, "032x")
            await poll(lambda: tel.runtime.tracker.cascades[trace_id].active == 0, "the cascade passive")
    spans = records(tel)
    [invoke] = [r for r in spans if r["name"] == "invoke_agent C"]
    [client] = [r for r in sc.call_spans(spans) if r["kind"] == "CLIENT"]
    assert client["parent_id"] == invoke["span_id"] and client["trace_id"] == trace_id
    assert not [r for r in spans if r["scope"] == names.SCOPE and r["name"].startswith("invoke_agent")]


async def test_attributes_that_cannot_be_read_cost_the_attributes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail-open: reading a request's attributes raising (a library's object we do not know)
    leaves the spans with their method, and the cascade's accounting whole."""
    def broken(params: Any) -> dict[str, Any]:
        raise RuntimeError("unreadable request")

    monkeypatch.setattr(semconv, "request_attributes", broken)
    with instrumented(stall_seconds=30) as tel:
        trace_id, _m = await run_cascade(tel)
        _settled(tel, trace_id)
    calls = sc.call_spans(records(tel))
    assert len(calls) == 6
    assert all(c["attributes"][names.ATTR_A2A_METHOD_NAME] == c["name"] for c in calls)
