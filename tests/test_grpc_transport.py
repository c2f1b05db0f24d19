"""A2A over gRPC: the trace context and the message id travel as gRPC
metadata, and the receiving hop reads them from the invocation metadata."""

from __future__ import annotations

import uuid

import grpc
from a2a.client import ClientConfig
from a2a.client.client import ClientCallContext
from a2a.client.client_factory import ClientFactory
from a2a.helpers.proto_helpers import new_text_message
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.grpc_handler import GrpcHandler
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import a2a_pb2 as pb
from a2a.types import a2a_pb2_grpc

from a2a_quiescence import names
from a2a_quiescence.demo.mesh import GroundTruth, PlanExecutor, plan_text, traceparent
from support import instrumented


async def test_cascade_over_grpc_is_one_trace_and_balances() -> None:
    with instrumented(stall_seconds=30) as tel:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        card = pb.AgentCard(
            name="grpc-agent",
            description="gRPC test agent",
            version="1.0",
            supported_interfaces=[pb.AgentInterface(url=f"127.0.0.1:{port}", protocol_binding="GRPC", protocol_version="1.0")],
            capabilities=pb.AgentCapabilities(streaming=True),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
        )
        handler = DefaultRequestHandler(
            agent_executor=PlanExecutor("grpc-agent", {}, GroundTruth(None, "grpc-agent"), None),
            task_store=InMemoryTaskStore(),
            agent_card=card,
        )
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), server)
        await server.start()
        channel = None
        try:
            config = ClientConfig(
                streaming=False,
                supported_protocol_bindings=["GRPC"],
                grpc_channel_factory=lambda url: grpc.aio.insecure_channel(url),
            )
            client = ClientFactory(config).create(card)
            trace_id = uuid.uuid4().hex
            request = pb.SendMessageRequest(message=new_text_message(plan_text({"work_ms": 5}), role=pb.Role.ROLE_USER))
            context = ClientCallContext(service_parameters={names.HEADER_TRACEPARENT: traceparent(trace_id)})
            answers = [event async for event in client.send_message(request, context=context)]
            await client.close()
        finally:
            if hasattr(handler, "aclose"):
                await handler.aclose()
            await server.stop(grace=None)
        assert answers and answers[-1].task.status.state == pb.TaskState.TASK_STATE_COMPLETED
        server_spans = [s for s in tel.spans() if s.name == names.METHOD_SEND_MESSAGE and s.kind.name == "SERVER"]
        assert [format(s.context.trace_id, "032x") for s in server_spans] == [trace_id]
        cascade = tel.runtime.tracker.cascades[trace_id]
        # the client's send (id in metadata) met the server's receipt of the same id
        assert sum(t.count for t in cascade.sent.values()) == 1
        assert list(cascade.sent) == [f"127.0.0.1:{port}"]  # named by the card's gRPC interface
        assert list(cascade.received.values()) == list(cascade.sent.values())
        assert cascade.roots.count == 1 and cascade.active == 0
