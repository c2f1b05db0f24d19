"""Run by tests/test_fasta2a.py inside the fasta2a virtualenv (scripts/install-compat.sh):
three pydantic-ai agents served by fasta2a (``agent_to_a2a``, its InMemoryBroker and
AgentWorker), each with a stub model (pydantic-ai's FunctionModel: no network).
A's model calls a tool that sends the text to B with fasta2a's ``A2AClient`` and
polls the task until it ends; B's tool streams it to C. C's model raises on
"please fail", so C's task fails (and B's and A's tools then fail theirs).

Two cascades, each sent from an instrumented fasta2a client in this process (the
root hop): "hello" (every hop completes) and "please fail". With ``--edges``,
fasta2a's own Worker API instead (see ``edges``). Prints what the
instrumentation observed as JSON on the last line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import uuid
from importlib.metadata import version

import httpx
import uvicorn
from opentelemetry.sdk.trace import TracerProvider

from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor
from compat_relay import Captured, Relay

ENDED = ("completed", "failed", "canceled", "rejected", "input-required", "auth-required")


def message(text: str) -> dict:
    return {"role": "user", "parts": [{"text": text}], "message_id": uuid.uuid4().hex}


async def ask(url: str, text: str, streaming: bool) -> str:
    """Send ``text`` to the agent at ``url`` with fasta2a's client; the state its task ended in."""
    from fasta2a.client import A2AClient

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        client = A2AClient(url, http_client=http)
        if streaming:
            state = "unknown"
            async for response in client.stream_message(message(text)):
                result = response.get("result") or {}
                status = (result.get("status_update") or {}).get("status") or (result.get("task") or {}).get("status")
                if status:
                    state = status["state"]
            return state
        task = (await client.send_message(message(text)))["result"]["task"]
        for _ in range(3000):  # bounded: the peer's own timeouts end a task well before
            if task["status"]["state"] in ENDED:
                return task["status"]["state"]
            await asyncio.sleep(0.01)
            task = (await client.get_task(task["id"]))["result"]
        return "timed out"


def build(name: str, url: str, downstream: str | None, streaming_downstream: bool):
    from fasta2a.pydantic_ai import agent_to_a2a
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart, UserPromptPart
    from pydantic_ai.models.function import FunctionModel

    def model(messages, info) -> ModelResponse:
        last = messages[-1].parts[-1]
        if isinstance(last, ToolReturnPart):
            if last.content != "completed":
                raise RuntimeError(f"{name}: the next agent's task ended {last.content}")
            return ModelResponse(parts=[TextPart(f"{name}: ok")])
        text = str(last.content) if isinstance(last, UserPromptPart) else ""
        if downstream is None:
            if "fail" in text:
                raise RuntimeError(f"{name}: asked to fail")
            return ModelResponse(parts=[TextPart(f"{name}: ok")])
        return ModelResponse(parts=[ToolCallPart("delegate", {"text": text})])

    agent = Agent(FunctionModel(model), name=name)
    if downstream is not None:
        @agent.tool_plain
        async def delegate(text: str) -> str:
            """Hand the text to the next agent."""
            return await ask(downstream, text, streaming_downstream)

    return agent_to_a2a(agent, name=name, url=url)


async def main() -> dict:
    relay = Relay("fasta2a-relay")
    await relay.start(build)

    def send(text: str):
        return lambda: ask(relay.urls["A"], text, streaming=False)

    ok = await relay.cascade(send("hello"))
    failing = await relay.cascade(send("please fail"))
    return {"fasta2a": version("fasta2a"), "ok": ok, "failing": failing, **await relay.stop()}


async def edges() -> dict:
    """fasta2a's own Worker API, for what pydantic-ai's worker never does: a worker that
    returns with its task unfinished, one that leaves it waiting for its user, and an app
    whose broker is not InMemoryBroker."""
    from fasta2a import FastA2A
    from fasta2a.client import A2AClient
    from fasta2a.broker import InMemoryBroker
    from fasta2a.storage import InMemoryStorage
    from fasta2a.worker import Worker

    inst = A2AQuiescenceInstrumentor()
    inst.instrument(tracer_provider=TracerProvider(), report=False, skip_dep_check=True)
    rt = inst.runtime
    captured = Captured()
    logging.getLogger("a2a_quiescence").addHandler(captured)

    class Edgy(Worker):
        async def run_task(self, params) -> None:
            text = params["message"]["parts"][0]["text"]
            if text == "ask me":
                await self.storage.update_task(params["id"], state="input-required")
            elif text == "wander off":
                await self.storage.update_task(params["id"], state="working")  # and never finish it
            else:
                await self.storage.update_task(params["id"], state="completed")

        async def cancel_task(self, params) -> None:
            await self.storage.update_task(params["id"], state="canceled")

        def build_message_history(self, history):
            return history

        def build_artifacts(self, result):
            return []

    class RemoteBroker(InMemoryBroker):
        async def run_task(self, params) -> None:  # a queue to workers elsewhere, say
            await super().run_task(params)

    def app_for(broker) -> FastA2A:
        storage = InMemoryStorage()
        worker = Edgy(broker=broker, storage=storage)

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with app.task_manager, worker.run():
                yield

        return FastA2A(storage=storage, broker=broker, lifespan=lifespan)

    def read(trace_id: str) -> dict:
        c = rt.tracker.cascades[trace_id]
        return {"active": c.active, "awaiting": dict(c.awaiting), "failed": c.failed, "lost": c.lost,
                "kinds": sorted({f["kind"] for f in (*c.failures, *c.losses)})}

    result: dict = {}
    for label, broker in (("in_memory", InMemoryBroker()), ("remote", RemoteBroker())):
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app_for(broker), host="127.0.0.1", port=port, log_level="error"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        seen: dict = {}
        context_id = uuid.uuid4().hex
        for text in ("all good", "wander off", "ask me", "and now the answer"):
            before = set(rt.tracker.cascades)
            body = message(text)
            body["context_id"] = context_id
            async with httpx.AsyncClient(timeout=30) as http:
                reply = await A2AClient(url, http_client=http).send_message(body)
            task_id = reply["result"]["task"]["id"]
            (trace_id,) = {t for t in rt.tracker.cascades if t not in before}
            c = rt.tracker.cascades[trace_id]
            for _ in range(500):  # the worker takes the operation after the answer: bounded wait
                if rt.tracker.producers_in_flight == 0 and (c.active == 0 or c.awaiting):
                    break
                await asyncio.sleep(0.01)
            seen[text] = {"trace_id": trace_id, "task_id": task_id, **read(trace_id)}
        # "ask me" was held, awaiting input, until "and now the answer" came in its context
        seen["ask me, once answered"] = read(seen["ask me"]["trace_id"])
        result[label] = {"cascades": seen, "unsupported": list(rt.tracker.unsupported)}
        server.should_exit = True
        await task
    result["log"] = captured.lines
    inst.uninstrument()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(edges() if sys.argv[1:] == ["--edges"] else main())))
    sys.stdout.flush()
