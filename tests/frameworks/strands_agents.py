"""Two Strands agents served over A2A, for tests/test_frameworks.py.

Run (one process per agent):
    opentelemetry-instrument python strands_agents.py --role B --port N
    opentelemetry-instrument python strands_agents.py --role A --port M --peer http://127.0.0.1:N

Each is a Strands ``Agent`` with a stub ``Model`` (no network, no API key),
served by Strands' own ``A2AServer`` (a2a-sdk 0.3 underneath). A's model calls
Strands' own A2A client tool (``make_a2a_client``, built on ``A2AAgent``) to
send B a message, then answers with what B said. B answers "done"; with
FRAMEWORK_B_FAIL=1 B's model raises, so B's task ends failed.
"""

from __future__ import annotations

import json
import os
from typing import Any, AsyncIterable

from strands import Agent
from strands.models.model import Model
from strands.multiagent.a2a import A2AServer
from strands.vended_tools import make_a2a_client

import roles  # tests/frameworks/roles.py, beside this script


class StubModel(Model):
    """B: "done" (or an exception with FRAMEWORK_B_FAIL=1). A: call the A2A tool on
    ``peer`` first; once its result is in, answer with it."""

    def __init__(self, role: str, peer: str | None) -> None:
        self.role, self.peer = role, peer

    def update_config(self, **model_config: Any) -> None:
        pass

    def get_config(self) -> Any:
        return {}

    def structured_output(self, output_model: Any, prompt: Any, system_prompt: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def stream(self, messages: Any, tool_specs: Any = None, system_prompt: Any = None, **kwargs: Any
                     ) -> AsyncIterable[Any]:
        if self.role == "B" and os.environ.get("FRAMEWORK_B_FAIL") == "1":
            raise RuntimeError("B's model failed (FRAMEWORK_B_FAIL=1)")
        results = [c["toolResult"] for m in messages for c in m["content"] if "toolResult" in c]
        yield {"messageStart": {"role": "assistant"}}
        if self.role == "A" and not results:
            args = {"operation": "send_message", "endpoint": self.peer, "message": "do the work"}
            yield {"contentBlockStart": {"start": {"toolUse": {"name": "a2a_client", "toolUseId": "call-1"}}}}
            yield {"contentBlockDelta": {"delta": {"toolUse": {"input": json.dumps(args)}}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "tool_use"}}
            return
        text = "done" if self.role == "B" else f"B said: {results[-1]['content']}"
        yield {"contentBlockDelta": {"delta": {"text": text}}}
        yield {"contentBlockStop": {}}
        yield {"messageStop": {"stopReason": "end_turn"}}


def main() -> None:
    args = roles.parse(__doc__)
    tools = [make_a2a_client(allowed_endpoints=[args.peer])] if args.role == "A" else []

    def agent_factory(_context_id: str) -> Agent:
        return Agent(name=args.role, description=f"Strands agent {args.role}", model=StubModel(args.role, args.peer),
                     tools=tools, callback_handler=None)

    server = A2AServer(agent_factory=agent_factory, host="127.0.0.1", port=args.port,
                       enable_a2a_compliant_streaming=True)
    server.serve(host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
