"""One agent written against a2a-sdk 0.3's own API, run as its own process by
tests/test_compat.py (in a 0.3 virtualenv, under opentelemetry-instrument): it
works for as many milliseconds as the message's text says, then completes.
uvicorn's graceful shutdown gives in-flight requests one second, as a
deployment would configure it, so a SIGTERM mid-work ends the work."""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from a2a.server.agent_execution import AgentExecutor
from a2a.server.apps import A2AStarletteApplication
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard
from a2a.utils import new_task


class Worker(AgentExecutor):
    async def execute(self, context, event_queue) -> None:
        task = context.current_task or new_task(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        await asyncio.sleep(int(context.get_user_input() or "0") / 1000)
        await updater.complete()

    async def cancel(self, context, event_queue) -> None:
        raise RuntimeError("not cancellable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}/"
    card = AgentCard(name="worker03", description="a2a-sdk 0.3 worker", url=url, version="1.0",
                     capabilities=AgentCapabilities(streaming=True), default_input_modes=["text"],
                     default_output_modes=["text"], skills=[])
    handler = DefaultRequestHandler(agent_executor=Worker(), task_store=InMemoryTaskStore())
    app = A2AStarletteApplication(agent_card=card, http_handler=handler).build()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
