"""Two Google ADK agents served over A2A, for tests/test_frameworks.py.

Run (one process per agent):
    opentelemetry-instrument python adk_agents.py --role B --port N
    opentelemetry-instrument python adk_agents.py --role A --port M --peer http://127.0.0.1:N

Each is an ADK ``LlmAgent`` served by ADK's own ``to_a2a`` (a2a-sdk's server
underneath) with a stub model (no network, no API key). A's model calls its one
tool, an ``AgentTool`` wrapping a ``RemoteA2aAgent`` for B, then answers with
what B said. B answers "done"; with FRAMEWORK_B_FAIL=1 B's model raises, so
B's task ends failed.
"""

from __future__ import annotations

import os
import warnings
from typing import AsyncGenerator

import uvicorn
from google.adk.a2a.utils.agent_to_a2a import to_a2a
from google.adk.agents import LlmAgent
from google.adk.agents.remote_a2a_agent import RemoteA2aAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.tools.agent_tool import AgentTool
from google.genai import types

import roles  # tests/frameworks/roles.py, beside this script

warnings.filterwarnings("ignore", message=r"\[EXPERIMENTAL\]")  # ADK marks its A2A support experimental


def reply(*parts: types.Part) -> LlmResponse:
    return LlmResponse(content=types.Content(role="model", parts=list(parts)))


class StubB(BaseLlm):
    """B's model: "done", or an exception with FRAMEWORK_B_FAIL=1."""

    async def generate_content_async(self, llm_request: LlmRequest,
                                     stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
        if os.environ.get("FRAMEWORK_B_FAIL") == "1":
            raise RuntimeError("B's model failed (FRAMEWORK_B_FAIL=1)")
        yield reply(types.Part.from_text(text="done"))


class StubA(BaseLlm):
    """A's model: call the tool ``b`` first; once its answer is in, answer with it."""

    async def generate_content_async(self, llm_request: LlmRequest,
                                     stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
        answers = [p.function_response for c in llm_request.contents for p in (c.parts or []) if p.function_response]
        if not answers:
            yield reply(types.Part.from_function_call(name="b", args={"request": "do the work"}))
        else:
            yield reply(types.Part.from_text(text=f"B said: {answers[-1].response}"))


def main() -> None:
    args = roles.parse(__doc__)
    if args.role == "B":
        agent = LlmAgent(name="b", model=StubB(model="stub-b"), description="answers done", instruction="Answer done.")
    else:
        remote = RemoteA2aAgent(name="b", description="agent B",
                                agent_card=f"{args.peer.rstrip('/')}/.well-known/agent-card.json")
        agent = LlmAgent(name="a", model=StubA(model="stub-a"), description="delegates to B",
                         instruction="Ask b.", tools=[AgentTool(agent=remote)])
    app = to_a2a(agent, host="127.0.0.1", port=args.port)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
