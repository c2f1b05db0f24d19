"""The forwarder (collector/forward.py) in process against a real OTLP/HTTP
receiver on loopback whose answers the test holds back: bounded concurrency,
a bounded queue with counted drops, waiting requests of one signal sent as one,
a refused request dropped without retries. The collector process forwarding
end to end is in test_collector.py."""

from __future__ import annotations

import asyncio
import http.server
import threading
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from a2a_quiescence import names
from a2a_quiescence.collector.config import Config
from a2a_quiescence.collector.forward import Forwarder
from a2a_quiescence.collector.settlement import Detector
from a2a_quiescence.collector.state import MeshState
from a2a_quiescence.instrumentation import reporter

DEADLINE = 20.0


class HeldSink:
    """An OTLP/HTTP receiver that answers only when ``release`` is set (or at once
    with ``status`` when ``hold`` is False), counting requests in flight."""

    def __init__(self, *, hold: bool = True, status: int = 200) -> None:
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with sink.lock:
                    sink.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    sink.in_flight += 1
                    sink.most_in_flight = max(sink.most_in_flight, sink.in_flight)
                sink.release.wait(DEADLINE)
                with sink.lock:
                    sink.in_flight -= 1
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def held() -> Any:
    sink = HeldSink()
    yield sink
    sink.close()


def export(i: int) -> bytes:
    body = {"incarnation": f"fwd-{i}", "seq": 1, "in_flight": 0, "started": i, "finished": {}}
    return reporter.encode("fwd", f"fwd-{i}", body, [])


def state() -> MeshState:
    return MeshState(detector=Detector(), agent_timeout=10.0)


async def until(what: str, check: Any) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def forwarding(config: Config, st: MeshState, body: Any) -> None:
    forwarder = Forwarder(config, st)
    runner = asyncio.create_task(forwarder.run())
    try:
        await body(forwarder)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


PB = {"content-type": "application/x-protobuf"}


def test_a_slow_upstream_fills_the_queue_and_the_rest_is_dropped_and_counted(held: HeldSink) -> None:
    st = state()
    raws = [export(i) for i in range(20)]

    async def body(fw: Forwarder) -> None:
        for raw in raws[:2]:
            fw.put("logs", raw, PB)
        await until("both senders in flight", lambda: held.in_flight == 2)
        for raw in raws[2:]:
            fw.put("logs", raw, PB)
        # 2 in flight, 5 waiting (the queue's bound), 13 refused at once
        assert st.dropped[names.DROP_QUEUE_FULL] == 13
        assert st.forward_waiting == 5
        held.release.set()
        await until("everything kept delivered", lambda: st.forwarded == 7)
        assert st.forward_waiting == 0

    asyncio.run(forwarding(Config(forward=held.url, forward_queue=5, forward_concurrency=2), st, body))
    assert held.most_in_flight == 2  # bounded concurrency, and used
    # the five that waited travelled as one request: their concatenation, in order,
    # which is one export request holding all five
    assert len(held.requests) == 3
    joined = held.requests[2][2]
    assert joined == b"".join(raws[2:7])
    message = logs_service_pb2.ExportLogsServiceRequest()
    message.ParseFromString(joined)
    assert len(message.resource_logs) == 5
    assert st.dropped[names.DROP_UPSTREAM_REFUSED] == st.dropped[names.DROP_UPSTREAM_UNAVAILABLE] == 0


def test_a_sidecar_that_keeps_up_drops_nothing_and_sends_each_request_as_it_came() -> None:
    sink = HeldSink(hold=False)
    st = state()
    raws = [export(i) for i in range(50)]

    async def body(fw: Forwarder) -> None:
        for raw in raws:
            fw.put("logs", raw, PB)
            await until("delivered", lambda: len(sink.requests) == raws.index(raw) + 1 and st.forward_waiting == 0)
        await until("all counted", lambda: st.forwarded == 50)

    try:
        asyncio.run(forwarding(Config(forward=sink.url, forward_queue=5), st, body))
    finally:
        sink.close()
    assert [r[2] for r in sink.requests] == raws
    assert sum(st.dropped.values()) == 0


def test_compressed_requests_and_other_signals_travel_alone(held: HeldSink) -> None:
    st = state()
    gz = {"content-type": "application/x-protobuf", "content-encoding": "gzip"}
    raws = [export(i) for i in range(3)]

    async def body(fw: Forwarder) -> None:
        fw.put("logs", raws[0], PB)
        await until("the first in flight", lambda: held.in_flight == 1)
        fw.put("logs", b"gz-1", gz)
        fw.put("logs", b"gz-2", gz)
        fw.put("traces", raws[1], PB)
        fw.put("logs", raws[2], PB)
        fw.put("logs", b"{}", {"content-type": "application/json"})
        held.release.set()
        await until("all delivered", lambda: st.forwarded == 6)

    asyncio.run(forwarding(Config(forward=held.url, forward_concurrency=1), st, body))
    sent = [(path, h.get("content-encoding"), raw) for path, h, raw in held.requests]
    assert sent == [
        ("/v1/logs", None, raws[0]),
        ("/v1/logs", "gzip", b"gz-1"),
        ("/v1/logs", "gzip", b"gz-2"),
        ("/v1/traces", None, raws[1]),
        ("/v1/logs", None, raws[2]),
        ("/v1/logs", None, b"{}"),
    ]


def test_a_refused_request_is_dropped_at_once_and_counted() -> None:
    sink = HeldSink(hold=False, status=401)
    st = state()

    async def body(fw: Forwarder) -> None:
        fw.put("logs", export(0), PB)
        await until("the refusal counted", lambda: st.dropped[names.DROP_UPSTREAM_REFUSED] == 1)

    try:
        asyncio.run(forwarding(Config(forward=sink.url, forward_retries=3), st, body))
    finally:
        sink.close()
    assert len(sink.requests) == 1  # no retries for a 4xx other than 429
    assert st.forwarded == 0
