"""Run by tests/test_compat.py inside a virtualenv holding an a2a-sdk 0.3 release:
three agents written against 0.3's own API (A2AStarletteApplication,
DefaultRequestHandler, TaskUpdater; ClientFactory clients), A -> B without
streaming and B -> C streaming, instrumented in process. Two cascades: one where
every hop completes, one where C fails its task (B and A then fail theirs). Prints
what the instrumentation observed as JSON on the last line (every span as a
``semconv_check.record``: tests/test_compat.py checks the call spans against the
A2A semantic conventions)."""

from __future__ import annotations

import asyncio
import json
import uuid
from importlib.metadata import version

import httpx

from compat_relay import Relay


def card_for(url: str, agent: str):
    from a2a.types import AgentCapabilities, AgentCard

    return AgentCard(
        name=agent, description="compat relay", url=url + "/", version="1.0",
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text"], default_output_modes=["text"], skills=[],
    )


def build(name: str, url: str, downstream: str | None, streaming_downstream: bool):
    from a2a.client import ClientConfig, ClientFactory
    from a2a.server.agent_execution import AgentExecutor
    from a2a.server.apps import A2AStarletteApplication
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types import Message, Part, Role, TaskState, TextPart
    from a2a.utils import new_task

    class RelayExecutor(AgentExecutor):
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

    handler = DefaultRequestHandler(agent_executor=RelayExecutor(), task_store=InMemoryTaskStore())
    return A2AStarletteApplication(agent_card=card_for(url, name), http_handler=handler).build()


async def main() -> dict:
    from a2a.client import ClientConfig, ClientFactory
    from a2a.types import Message, Part, Role, TextPart

    relay = Relay("compat03")
    await relay.start(build)

    def send(text: str):
        async def call() -> str:
            """``text`` to A from an instrumented client (this process is the root hop)."""
            async with httpx.AsyncClient(timeout=30) as http:
                factory = ClientFactory(ClientConfig(httpx_client=http, streaming=False))
                client = factory.create(card_for(relay.urls["A"], "A"))
                message = Message(role=Role.user, parts=[Part(root=TextPart(text=text))], message_id=uuid.uuid4().hex)
                last = None
                async for event in client.send_message(message):
                    last = event
            return str(last[0].status.state.value)
        return call

    ok = await relay.cascade(send("hello"))
    failing = await relay.cascade(send("please fail"))
    return {"a2a_sdk": version("a2a-sdk"), "ok": ok, "failing": failing, **await relay.stop()}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
