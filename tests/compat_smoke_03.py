"""Run by tests/test_compat.py inside a virtualenv holding an a2a-sdk 0.3 release:
three agents written against 0.3's own API (A2AStarletteApplication,
DefaultRequestHandler, TaskUpdater; ClientFactory clients), A -> B without
streaming and B -> C streaming, instrumented in process. Two cascades: one where
every hop completes, one where C fails its task (B and A then fail theirs). Prints
what the instrumentation observed as JSON on the last line."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from importlib.metadata import version

import httpx
import uvicorn
import wrapt
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def build(name: str, port: int, downstream: str | None, streaming_downstream: bool):
    from a2a.client import ClientConfig, ClientFactory
    from a2a.server.agent_execution import AgentExecutor
    from a2a.server.apps import A2AStarletteApplication
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types import AgentCapabilities, AgentCard, Message, Part, Role, TaskState, TextPart
    from a2a.utils import new_task

    def card_for(url: str, agent: str) -> AgentCard:
        return AgentCard(
            name=agent, description="compat relay", url=url + "/", version="1.0",
            capabilities=AgentCapabilities(streaming=True),
            default_input_modes=["text"], default_output_modes=["text"], skills=[],
        )

    class Relay(AgentExecutor):
        async def execute(self, context, event_queue) -> None:
            task = context.current_task or new_task(context.message)
            await event_queue.enqueue_event(task)
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            await updater.start_work()
            text = context.get_user_input()
            ok = "fail" not in text
            if downstream is not None:
                async with httpx.AsyncClient(timeout=30) as http:
                    client = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming_downstream)).create(
                        card_for(downstream, "next"))
                    message = Message(role=Role.user, parts=[Part(root=TextPart(text=text))],
                                      message_id=uuid.uuid4().hex)
                    last = None
                    async for event in client.send_message(message):
                        last = event
                    state = last[0].status.state if isinstance(last, tuple) else None
                    ok = state == TaskState.completed
            reply = updater.new_agent_message([Part(root=TextPart(text=f"{name}: {'ok' if ok else 'failed'}"))])
            if ok:
                await updater.complete(reply)
            else:
                await updater.failed(reply)

        async def cancel(self, context, event_queue) -> None:
            raise RuntimeError("not cancellable")

    url = f"http://127.0.0.1:{port}"
    handler = DefaultRequestHandler(agent_executor=Relay(), task_store=InMemoryTaskStore())
    return A2AStarletteApplication(agent_card=card_for(url, name), http_handler=handler).build(), card_for


async def main() -> dict:
    from a2a.client import ClientConfig, ClientFactory
    from a2a.types import Message, Part, Role, TextPart

    captured = Captured()
    logging.getLogger("a2a_quiescence").addHandler(captured)
    logging.getLogger("a2a_quiescence").setLevel(logging.DEBUG)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "compat03"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inst = A2AQuiescenceInstrumentor()
    inst.instrument(tracer_provider=provider, report=False, skip_dep_check=True)
    rt = inst.runtime
    ports = {name: free_port() for name in "ABC"}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    servers = []
    card_for = None
    for name, downstream, streaming in (("C", None, False), ("B", "C", True), ("A", "B", False)):
        app, card_for = build(name, ports[name], urls[downstream] if downstream else None, streaming)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=ports[name], log_level="error"))
        servers.append((server, asyncio.create_task(server.serve())))
    while not all(s.started for s, _ in servers):
        await asyncio.sleep(0.01)

    async def cascade(text: str) -> tuple[str, str]:
        """Send ``text`` to A from an instrumented client (this process is the root hop)."""
        before = set(rt.tracker.cascades)
        async with httpx.AsyncClient(timeout=30) as http:
            client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card_for(urls["A"], "A"))
            message = Message(role=Role.user, parts=[Part(root=TextPart(text=text))], message_id=uuid.uuid4().hex)
            last = None
            async for event in client.send_message(message):
                last = event
        (trace_id,) = set(rt.tracker.cascades) - before
        # the relay has answered; producers finish right after: wait for that, bounded
        for _ in range(500):
            if rt.tracker.producers_in_flight == 0 and rt.tracker.cascades[trace_id].active == 0:
                break
            await asyncio.sleep(0.01)
        return trace_id, str(last[0].status.state.value)

    def observed(trace_id: str, state: str) -> dict:
        c = rt.tracker.cascades[trace_id]
        return {
            "trace_id": trace_id,
            "state": state,
            "active": c.active,
            "sent": sum(t.count for t in c.sent.values()),
            "received": sum(t.count for t in c.received.values()),
            "roots": c.roots.count,
            "failed": c.failed,
            "lost": c.lost,
            "failure_kinds": sorted({f["kind"] for f in c.failures or ()}),
        }

    ok = observed(*await cascade("hello"))
    failing = observed(*await cascade("please fail"))
    for server, task in servers:
        server.should_exit = True
        await task
    spans = exporter.get_finished_spans()
    producers = [s for s in spans if s.name == "a2a.active_task.producer"]
    patched = list(inst._patched)
    inst.uninstrument()
    return {
        "a2a_sdk": version("a2a-sdk"),
        "spans": dict(Counter(s.name for s in spans)),
        "producer_traces": Counter(format(s.context.trace_id, "032x") for s in producers),
        "outcomes": dict(Counter(str(s.attributes.get("a2a.active_task.producer.outcome")) for s in producers)),
        "ok": ok,
        "failing": failing,
        "in_flight": rt.tracker.producers_in_flight,
        "patched": sorted(f"{cls.__name__}.{attr}" for cls, attr in patched),
        # uninstrument put every original back
        "still_wrapped": sorted(f"{cls.__name__}.{attr}" for cls, attr in patched
                                if isinstance(cls.__dict__[attr], wrapt.ObjectProxy)),
        "unsupported": rt.tracker.unsupported,
        "log": captured.lines,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
