"""Coexistence with the httpx and ASGI instrumentations from opentelemetry-python-contrib.

When they are present, an outbound A2A call carries their CLIENT span and the
receiving hop sees their SERVER span: our propagation must neither start a
second trace nor break the parent chain, and the cascade accounting must
still balance."""

from __future__ import annotations

import contextlib

import pytest
from opentelemetry.trace import SpanKind

from a2a_quiescence import names
from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.demo.mesh import build_app, new_trace_id, send_plan
from support import instrumented, serve

httpx_instrumentation = pytest.importorskip("opentelemetry.instrumentation.httpx")
asgi = pytest.importorskip("opentelemetry.instrumentation.asgi")


async def test_one_trace_and_an_unbroken_parent_chain_with_httpx_and_asgi_instrumented() -> None:
    with instrumented(stall_seconds=5.0) as tel:
        httpx_inst = httpx_instrumentation.HTTPXClientInstrumentor()
        httpx_inst.instrument(tracer_provider=tel.tracer_provider)
        try:
            ports = {n: free_port() for n in "ABC"}
            urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
            async with contextlib.AsyncExitStack() as stack:
                for name, peer in (("C", None), ("B", "C"), ("A", "B")):
                    app, _handler, _executor = build_app(name, ports[name], {peer: urls[peer]} if peer else {})
                    wrapped = asgi.OpenTelemetryMiddleware(app, tracer_provider=tel.tracer_provider)
                    await stack.enter_async_context(serve(wrapped, ports[name]))
                trace_id = new_trace_id()
                plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "plan": {"work_ms": 5}}]}}]}
                await send_plan(urls["A"], plan, trace_id=trace_id)
            cascade = tel.runtime.tracker.cascades[trace_id]
            sent = sum(t.count for t in cascade.sent.values())
            received = sum(t.count for t in cascade.received.values())
        finally:
            httpx_inst.uninstrument()

    spans = tel.spans()
    by_id = {s.context.span_id: s for s in spans}
    ours = [s for s in spans if s.instrumentation_scope.name == names.SCOPE
            and s.name in (*names.A2A_METHODS, names.SPAN_PRODUCER)]
    # everything of this cascade (ours and theirs) is one trace: the one the caller started
    assert {format(s.context.trace_id, "032x") for s in ours} == {trace_id}
    asgi_servers = [s for s in spans if s.kind == SpanKind.SERVER and s.instrumentation_scope.name != names.SCOPE]
    assert asgi_servers, "the ASGI middleware made server spans"
    httpx_clients = [s for s in spans if s.kind == SpanKind.CLIENT and s.instrumentation_scope.name != names.SCOPE]
    assert httpx_clients, "the httpx instrumentation made client spans"

    # C's producer descends, hop by hop, from the caller's request, through our
    # spans and theirs: producer <- our server span <- ASGI server <- httpx
    # client <- our client span on B, and so on up to this test's own call
    # (the test process is instrumented too, so it is the first hop)
    producers = sorted(tel.spans(names.SPAN_PRODUCER), key=lambda s: s.start_time)
    chain = []
    node = producers[-1]
    while node is not None:
        chain.append((node.name, node.kind, node.instrumentation_scope.name == names.SCOPE))
        node = by_id.get(node.parent.span_id) if node.parent is not None else None
    # ours are named by A2A method (the conventions: tests/test_semconv.py)
    client = (names.METHOD_SEND_MESSAGE, SpanKind.CLIENT, True)
    server = (names.METHOD_SEND_MESSAGE, SpanKind.SERVER, True)
    assert chain[0][0] == names.SPAN_PRODUCER
    assert chain.count(client) == 3 and chain.count(server) == 3, chain
    # every hop boundary passes through the contrib instrumentations' spans
    for i, item in enumerate(chain):
        if item == server:
            assert chain[i + 1][1] == SpanKind.SERVER and not chain[i + 1][2], chain
            assert chain[i + 2][1] == SpanKind.CLIENT and not chain[i + 2][2], chain
            assert chain[i + 3] == client, chain

    # the accounting is unaffected: three A2A sends (test -> A -> B -> C), three
    # receipts, one root, nothing active
    assert sent == received == 3
    assert cascade.roots.count == 1 and cascade.active == 0
