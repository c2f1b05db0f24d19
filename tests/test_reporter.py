"""The agent-side snapshot reporter against a small OTLP/HTTP sink on loopback."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from typing import Iterator

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from a2a_quiescence import environment_variables as variables
from a2a_quiescence import names
from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.instrumentation import reporter as reporter_mod
from a2a_quiescence.instrumentation.reporter import Reporter, resolve_endpoint
from a2a_quiescence.instrumentation.tracker import HopTracker


class Sink:
    """Records each request's log records; answers 503 to the requests listed in ``fail``
    (``keep_alive``: HTTP/1.1, connections kept open as a collector keeps them)."""

    def __init__(self, keep_alive: bool = False) -> None:
        self.requests: list[list[str]] = []
        self.arrived: list[float] = []  # monotonic, one per request
        self.fail: set[int] = set()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                number = len(sink.requests)
                request = ExportLogsServiceRequest.FromString(body)
                records = [
                    kv.value.string_value
                    for rl in request.resource_logs
                    for sl in rl.scope_logs
                    for r in sl.log_records
                    for kv in r.attributes
                    if kv.key == names.LOG_ATTR_EVENT_NAME
                ]
                sink.arrived.append(time.monotonic())
                sink.requests.append(records)
                self.send_response(503 if number in sink.fail else 200)
                self.send_header("content-length", "0")
                self.send_header(names.HEADER_COLLECTOR_ID, "sink")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def _busy_tracker(cascades: int) -> HopTracker:
    tracker = HopTracker()
    for _ in range(cascades):
        tracker.release(tracker.receive(uuid.uuid4().hex, None, uuid.uuid4().hex, None))
    return tracker


def test_large_resends_are_split_into_bounded_requests(sink: Sink) -> None:
    n = reporter_mod.MAX_SNAPSHOTS_PER_REQUEST * 2 + 500
    tracker = _busy_tracker(n)
    rep = Reporter(tracker, "agent", endpoint=f"http://127.0.0.1:{sink.port}/v1/logs", headers={})
    assert rep.flush()
    sizes = [sum(1 for r in req if r == names.EVENT_CASCADE_SNAPSHOT) for req in sink.requests]
    assert sizes == [reporter_mod.MAX_SNAPSHOTS_PER_REQUEST, reporter_mod.MAX_SNAPSHOTS_PER_REQUEST, 500]
    assert sum(r.count(names.EVENT_HOP_SNAPSHOT) for r in sink.requests) == 1
    assert not tracker.has_dirty()


def test_a_failed_request_keeps_what_was_not_delivered(sink: Sink) -> None:
    n = reporter_mod.MAX_SNAPSHOTS_PER_REQUEST * 2 + 500
    tracker = _busy_tracker(n)
    rep = Reporter(tracker, "agent", endpoint=f"http://127.0.0.1:{sink.port}/v1/logs", headers={})
    sink.fail = {1}
    assert not rep.flush()
    # the first chunk arrived; the refused one and the one after it are still owed
    assert len(tracker.dirty) == reporter_mod.MAX_SNAPSHOTS_PER_REQUEST + 500
    sink.fail = set()
    assert rep.flush()
    delivered = sum(1 for req in sink.requests[2:] for r in req if r == names.EVENT_CASCADE_SNAPSHOT)
    assert delivered == reporter_mod.MAX_SNAPSHOTS_PER_REQUEST + 500
    assert not tracker.has_dirty()


def test_unreachable_collector_loses_nothing() -> None:
    tracker = _busy_tracker(3)
    rep = Reporter(tracker, "agent", endpoint=f"http://127.0.0.1:{free_port()}/v1/logs", headers={}, timeout=0.5)
    assert not rep.flush()
    assert len(tracker.dirty) == 3 and tracker.hop_dirty


def test_endpoint_resolution() -> None:
    assert resolve_endpoint({}) == "http://127.0.0.1:4318/v1/logs"
    assert resolve_endpoint({variables.ENDPOINT.name: "http://x:1/v1/logs"}) == "http://x:1/v1/logs"
    # the distro's default protocol is gRPC: its endpoint is not an OTLP/HTTP one
    assert resolve_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"}) == "http://127.0.0.1:4318/v1/logs"
    http = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318/"}
    assert resolve_endpoint(http) == "http://x:4318/v1/logs"
    assert resolve_endpoint({**http, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://y:1/logs"}) == "http://y:1/logs"
    with pytest.raises(ValueError):
        Reporter(HopTracker(), "agent", endpoint="not a url", headers={})
