"""OTLP/gRPC receiver: the Python distro's default protocol, so an agent
started with `opentelemetry-instrument` and no OTLP settings reaches us."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from a2a_quiescence import names


def _authorize(collector: Any, context: grpc.aio.ServicerContext) -> bool:
    metadata = dict(context.invocation_metadata() or ())
    return collector.authorized(metadata.get("authorization"))


class _Base:
    signal = ""
    response: Any = None

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    async def Export(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802 - gRPC name
        if not _authorize(self.collector, context):
            self.collector.state.reject(names.REJECT_UNAUTHORIZED)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        self.collector.ingest(self.signal, request)
        if self.collector.forwarder is not None:  # serialise again only to forward
            self.collector._forward(self.signal, request.SerializeToString(), {"content-type": "application/x-protobuf"})
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


async def start_grpc(collector: Any, listen: str) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", collector.config.max_body_bytes)])
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(collector), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(collector), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(collector), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not bind OTLP/gRPC on {listen}")
    await server.start()
    return server, port
