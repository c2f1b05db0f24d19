"""OTLP/gRPC receiver: the Python distro's default protocol, so an agent
started with `opentelemetry-instrument` and no OTLP settings reaches us.

It is given what it calls (``Receiving``): it knows nothing of the ``Collector``
(server.py) that wires it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from a2a_quiescence import names


@dataclass(frozen=True)
class Receiving:
    """What a received export request goes to: the bearer-token check, the count of
    refused requests, the ``Collector``'s ingest (``Ingest.apply``) and, when it forwards,
    the forwarder."""

    authorized: Callable[[str | None], bool]
    reject: Callable[[str], None]
    ingest: Callable[[str, Message], Any]
    forward: Callable[[str, bytes, dict[str, str]], None] | None
    max_body_bytes: int


class _Base:
    signal = ""
    response: type[Message]

    def __init__(self, receiving: Receiving) -> None:
        self.receiving = receiving

    async def Export(self, request: Message, context: grpc.aio.ServicerContext) -> Message:  # noqa: N802 - gRPC name
        receiving = self.receiving
        metadata = dict(context.invocation_metadata() or ())
        if not receiving.authorized(metadata.get("authorization")):
            receiving.reject(names.REJECT_UNAUTHORIZED)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        receiving.ingest(self.signal, request)
        if receiving.forward is not None:  # serialise again only to forward
            receiving.forward(self.signal, request.SerializeToString(), {"content-type": "application/x-protobuf"})
        return self.response()


class _Logs(_Base, logs_service_pb2_grpc.LogsServiceServicer):
    signal = "logs"
    response = logs_service_pb2.ExportLogsServiceResponse


class _Traces(_Base, trace_service_pb2_grpc.TraceServiceServicer):
    signal = "traces"
    response = trace_service_pb2.ExportTraceServiceResponse


class _Metrics(_Base, metrics_service_pb2_grpc.MetricsServiceServicer):
    signal = "metrics"
    response = metrics_service_pb2.ExportMetricsServiceResponse


async def start_grpc(receiving: Receiving, listen: str) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", receiving.max_body_bytes)])
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(receiving), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(receiving), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(receiving), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not bind OTLP/gRPC on {listen}")
    await server.start()
    return server, port
