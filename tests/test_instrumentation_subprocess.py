"""Three agents as real processes under ``opentelemetry-instrument``.

A -> B -> C run the way users run them (harness ``Mesh``): the instrumentation
is found through the entry point, traces leave over OTLP/HTTP to a small trace
sink started here, and lifecycle snapshots go to the project's collector. One
cascade must be one trace across the three processes (no httpx/ASGI
instrumentation installed), and the collector must see every hop's producers
back at 0 afterwards.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import uuid
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from a2a.types import a2a_pb2 as pb
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from a2a_quiescence import names
from a2a_quiescence.demo.harness import Mesh
from a2a_quiescence.demo.mesh import send_plan

from support import TIMED_OUT, metric_by, raise_assertion, wait_until

DEADLINE = 30.0


wait_for = partial(wait_until, timeout=DEADLINE, every=0.05, message=TIMED_OUT, fail=raise_assertion)  # (condition, what)


class TraceSink:
    """A minimal OTLP/HTTP trace receiver: POST /v1/traces, protobuf."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []  # (service.name, Span)
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                with sink.lock:
                    for rs in request.resource_spans:
                        service = next(
                            (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), ""
                        )
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                sink.spans.append((service, span))
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def of_trace(self, trace_id: str) -> list[tuple[str, Any]]:
        raw = bytes.fromhex(trace_id)
        with self.lock:
            return [(svc, s) for svc, s in self.spans if s.trace_id == raw]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def sink() -> Iterator[TraceSink]:
    s = TraceSink()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def mesh(tmp_path: Path, sink: TraceSink) -> Iterator[Mesh]:
    m = Mesh(workdir=tmp_path)
    try:
        m.start_collector()
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.endpoint}
        m.start_agent("C", env=env)
        m.start_agent("B", ["C"], env=env)
        m.start_agent("A", ["B"], env=env)
        yield m
    finally:
        m.stop_all()
        for proc in list(m.agents.values()):
            assert proc.popen.poll() is not None


def _gauge(text: str, metric: str) -> dict[str, float]:
    return metric_by(text, metric, names.LABEL_AGENT)


def test_one_trace_across_three_processes(mesh: Mesh, sink: TraceSink) -> None:
    trace_id = uuid.uuid4().hex
    plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "plan": {"work_ms": 20}}]}}]}
    events = asyncio.run(send_plan(mesh.agents["A"].url + "/", plan, trace_id=trace_id))
    assert events[-1].task.status.state == pb.TaskState.TASK_STATE_COMPLETED

    fixed = {names.SPAN_PRODUCER, names.SPAN_QUEUE_CLOSE}

    def continues_a_client_span(span, by_id) -> bool:  # type: ignore[no-untyped-def]
        # up the parents: an HTTP-level instrumentation (httpx, ASGI) may sit in between
        node = by_id.get(span.parent_span_id)
        while node is not None:
            if node.name in names.A2A_METHODS and node.kind == Span.SpanKind.SPAN_KIND_CLIENT:
                return True
            node = by_id.get(node.parent_span_id)
        return False

    def complete() -> bool:
        spans = sink.of_trace(trace_id)
        by_service: dict[str, set[str]] = {}
        for svc, span in spans:
            by_service.setdefault(svc, set()).add(span.name)
        by_id = {s.span_id: s for _, s in spans}
        servers = {svc: s for svc, s in spans
                   if s.name == names.METHOD_SEND_MESSAGE and s.kind == Span.SpanKind.SPAN_KIND_SERVER}
        return all(fixed <= by_service.get(svc, set()) for svc in ("A", "B", "C")) and all(
            svc in servers and continues_a_client_span(servers[svc], by_id) for svc in ("B", "C")
        )

    wait_for(complete, "spans of all three hops in one trace")
    spans = sink.of_trace(trace_id)
    assert {svc for svc, _ in spans} == {"A", "B", "C"}
    producers = {svc: s for svc, s in spans if s.name == names.SPAN_PRODUCER}
    assert set(producers) == {"A", "B", "C"}
    for svc, span in producers.items():
        attrs = {a.key: a.value.string_value for a in span.attributes}
        assert attrs[names.ATTR_OUTCOME] == names.OUTCOME_COMPLETED, svc
        assert attrs[names.ATTR_TASK_ID] and attrs[names.ATTR_CONVERSATION_ID], svc
    closes = [s for _, s in spans if s.name == names.SPAN_QUEUE_CLOSE]
    for span in closes:
        keys = {a.key for a in span.attributes}
        assert {names.ATTR_QUEUE_ROLE, names.ATTR_CLOSE_IMMEDIATE} <= keys
    # B and C continue a client span of the hop before them (checked by complete())
    by_id = {s.span_id: s for _, s in spans}
    servers = {svc: s for svc, s in spans
                   if s.name == names.METHOD_SEND_MESSAGE and s.kind == Span.SpanKind.SPAN_KIND_SERVER}
    assert continues_a_client_span(servers["B"], by_id) and continues_a_client_span(servers["C"], by_id)

    # the collector: every hop's producers back at 0 after the cascade
    def settled_gauges() -> tuple[dict[str, float], dict[str, float]] | None:
        text = mesh.metrics()  # one scrape: started and in-flight from the same moment
        in_flight = _gauge(text, names.M_PRODUCERS_IN_FLIGHT)
        started = _gauge(text, names.M_PRODUCERS_STARTED)
        if all(started.get(a, 0) >= 1 and in_flight.get(a) == 0 for a in ("A", "B", "C")):
            return in_flight, started
        return None

    in_flight, started = wait_for(settled_gauges, "a2a_producers_in_flight back at 0 for A, B, C after work")
    assert {a: in_flight[a] for a in ("A", "B", "C")} == {"A": 0, "B": 0, "C": 0}
    assert {a: started[a] for a in ("A", "B", "C")} == {"A": 1, "B": 1, "C": 1}
