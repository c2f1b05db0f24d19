"""Run by tests/test_compat.py inside a virtualenv holding an older a2a-sdk (and by
tests/test_semconv.py in this project's, with a2a-sdk's own tracing on and off):
an in-process A -> B -> C relay, instrumented, printing what was observed as JSON
(every span as ``semconv_check.record``s)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor
from semconv_check import record


async def main() -> dict:
    from a2a_quiescence.demo.mesh import build_app, new_trace_id, send_plan

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "compat"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # a2a-sdk's own tracing (when on) uses the global provider
    inst = A2AQuiescenceInstrumentor()
    inst.instrument(tracer_provider=provider, report=False, skip_dep_check=True)
    rt = inst.runtime
    ports = {name: free_port() for name in "ABC"}
    peers = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    servers = []
    cards = {}
    for name, downstream in (("C", None), ("B", "C"), ("A", "B")):
        app, handler, _executor = build_app(name, ports[name], {downstream: peers[downstream]} if downstream else {})
        card = handler._agent_card
        cards[name] = {"gen_ai.agent.name": card.name, "gen_ai.agent.description": card.description,
                       "gen_ai.agent.version": card.version}
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=ports[name], log_level="error"))
        servers.append((server, asyncio.create_task(server.serve())))
    while not all(s.started for s, _ in servers):
        await asyncio.sleep(0.01)
    trace_id = new_trace_id()
    plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "plan": {"work_ms": 5}}]}}]}
    await send_plan(peers["A"], plan, trace_id=trace_id)
    # the relay has answered; producers finish right after: wait for that, bounded
    for _ in range(500):
        if rt.tracker.producers_in_flight == 0 and rt.tracker.cascades[trace_id].active == 0:
            break
        await asyncio.sleep(0.01)
    cascade = rt.tracker.cascades[trace_id]
    sent = sum(t.count for t in cascade.sent.values())
    received = sum(t.count for t in cascade.received.values())
    for server, task in servers:
        server.should_exit = True
        await task
    spans = exporter.get_finished_spans()
    producer_traces = {format(s.context.trace_id, "032x") for s in spans if s.name == "a2a.active_task.producer"}
    result = {
        "a2a_sdk": __import__("importlib.metadata").metadata.version("a2a-sdk"),
        "spans": dict(Counter(s.name for s in spans)),
        "records": [record(s) for s in spans],
        "cards": cards,
        "sdk_tracing": __import__("os").environ.get("OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"),
        "producer_traces": sorted(producer_traces),
        "trace_id": trace_id,
        "in_flight": rt.tracker.producers_in_flight,
        "finished": rt.tracker.producers_finished,
        "active": cascade.active,
        "sent": sent,
        "received": received,
        "roots": cascade.roots.count,
        "patched": sorted(f"{cls.__name__}.{attr}" for cls, attr in inst._patched),
        "awaited": sorted(rt.awaited),
    }
    inst.uninstrument()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
    sys.exit(0)
