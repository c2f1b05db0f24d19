"""Two pydantic-ai agents served over A2A by fasta2a, for tests/test_frameworks.py.

Run (one process per agent):
    opentelemetry-instrument python pydantic_ai_agents.py --role B --port N
    opentelemetry-instrument python pydantic_ai_agents.py --role A --port M --peer http://127.0.0.1:N

Each is a pydantic-ai ``Agent`` with a stub ``FunctionModel`` (no network, no
API key), served by fasta2a's own server (``fasta2a.pydantic_ai.agent_to_a2a``;
no a2a-sdk). fasta2a answers ``message/send`` at once and runs the task in its
worker, so A's tool ``ask_b`` streams its message to B with
``fasta2a.client.A2AClient.stream_message`` and reads B's answer from the
stream's events until B's task ends. A's model calls ``ask_b``, then answers
with what it returned. B answers "done"; with FRAMEWORK_B_FAIL=1 B's model
raises, so B's task ends failed.
"""

from __future__ import annotations

import os
import uuid

import uvicorn
from fasta2a.client import A2AClient
from fasta2a.pydantic_ai import agent_to_a2a
from fasta2a.schema import Message, Part
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart as AiText, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

import roles  # tests/frameworks/roles.py, beside this script


def model_b(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if os.environ.get("FRAMEWORK_B_FAIL") == "1":
        raise RuntimeError("B's model failed (FRAMEWORK_B_FAIL=1)")
    return ModelResponse(parts=[AiText("done")])


def model_a(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Call ``ask_b`` first; once its return is in, answer with it."""
    returns = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
    if not returns:
        return ModelResponse(parts=[ToolCallPart("ask_b", {"request": "do the work"})])
    return ModelResponse(parts=[AiText(f"B said: {returns[-1].content}")])


def build(role: str, peer: str | None) -> Agent:
    if role == "B":
        return Agent(FunctionModel(model_b), name="B")
    agent = Agent(FunctionModel(model_a), name="A")

    @agent.tool_plain
    async def ask_b(request: str) -> str:
        """Send ``request`` to agent B over A2A; B's answer (or how its task ended)."""
        client = A2AClient(peer)
        message = Message(role="user", parts=[Part(text=request)], message_id=uuid.uuid4().hex)
        texts, state = [], None
        async for event in client.stream_message(message):
            if "error" in event:
                raise RuntimeError(f"B answered with an error: {event['error']}")
            result = event["result"]
            if "artifact_update" in result and result["artifact_update"].get("last_chunk", True):
                texts = [p["text"] for p in result["artifact_update"]["artifact"]["parts"] if "text" in p]
            if "status_update" in result:
                state = result["status_update"]["status"]["state"]
        await client.http_client.aclose()
        return " ".join(texts) if state == "completed" else f"B's task ended {state}"

    return agent


def main() -> None:
    args = roles.parse(__doc__)
    app = agent_to_a2a(build(args.role, args.peer), url=f"http://127.0.0.1:{args.port}",
                       description=f"agent {args.role}")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
