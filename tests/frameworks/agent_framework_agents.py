"""Two Microsoft Agent Framework agents served over A2A, for tests/test_frameworks.py.

Run (one process per agent):
    opentelemetry-instrument python agent_framework_agents.py --role B --port N
    opentelemetry-instrument python agent_framework_agents.py --role A --port M --peer http://127.0.0.1:N

Each is an agent-framework ``Agent`` with a stub chat client (no network, no
API key), served by a plain a2a-sdk 1.x server (``DefaultRequestHandler``,
JSON-RPC routes) whose executor is agent-framework's own ``A2AExecutor``. A's
chat client calls its one tool, B as an ``A2AAgent`` (agent-framework's
remote A2A agent) turned into a tool, then answers with what B said. B answers
"done"; with FRAMEWORK_B_FAIL=1 B's chat client raises, so B's task ends failed.
"""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from agent_framework import Agent, BaseChatClient, ChatResponse, Content, FunctionInvocationLayer, Message
from agent_framework_a2a import A2AAgent, A2AExecutor
from starlette.applications import Starlette

import roles  # tests/frameworks/roles.py, beside this script


class StubClient(FunctionInvocationLayer[Any], BaseChatClient[Any]):
    """A's and B's model. B: "done" (or an exception with FRAMEWORK_B_FAIL=1).
    A: call the tool ``b`` first; once its result is in, answer with it."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def _inner_get_response(self, *, messages: Any, stream: bool, options: Any, **kwargs: Any) -> Any:
        async def respond() -> ChatResponse:
            if self.role == "B":
                if os.environ.get("FRAMEWORK_B_FAIL") == "1":
                    raise RuntimeError("B's model failed (FRAMEWORK_B_FAIL=1)")
                return ChatResponse(messages=[Message("assistant", ["done"])])
            results = [c for m in messages for c in m.contents if c.type == "function_result"]
            if not results:
                call = Content.from_function_call("call-1", "b", arguments={"task": "do the work"})
                return ChatResponse(messages=[Message("assistant", [call])])
            return ChatResponse(messages=[Message("assistant", [f"B said: {results[-1].result}"])])

        assert not stream, "A2AExecutor runs the agent without streaming"
        return respond()


def main() -> None:
    args = roles.parse(__doc__)
    tools = [A2AAgent(name="b", description="agent B", url=args.peer).as_tool()] if args.role == "A" else []
    agent = Agent(client=StubClient(args.role), name=args.role.lower(), instructions="Do the work.", tools=tools)
    url = f"http://127.0.0.1:{args.port}/"
    card = AgentCard(
        name=args.role, description=f"agent-framework agent {args.role}", version="1.0.0",
        default_input_modes=["text"], default_output_modes=["text"], capabilities=AgentCapabilities(streaming=True),
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        skills=[AgentSkill(id="work", name="work", description="does the work", tags=["test"])],
    )
    handler = DefaultRequestHandler(agent_executor=A2AExecutor(agent), task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
