"""The collector process against bad input, restarts, memory bounds and forwarding.

Everything runs for real: the collector is the `a2a-quiescence collector`
process on 127.0.0.1 ephemeral ports, agents are demo agents started under
`opentelemetry-instrument`. Waits poll a condition with a deadline; every
process or server a test starts is stopped by PID / handle.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.server
import json
import signal
import subprocess
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from a2a_quiescence import names
from a2a_quiescence.demo.harness import Mesh, free_port, program_path, stop_process, wait_http

from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.instrumentation import reporter

from conftest import need_tool
from support import TIMED_OUT_LAST, metric, parse_metrics, wait_until

TOKEN = "s3cret-token"
BODY_LIMIT = 8192
DEADLINE = 30.0


# -- helpers ----------------------------------------------------------------------
def until(what: str, check: Callable[[], Any], timeout: float = DEADLINE, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    return wait_until(check, what, timeout=timeout, every=every, message=TIMED_OUT_LAST, final_check=False)


class Collector:
    """One `a2a-quiescence collector` process on explicit loopback ports."""

    def __init__(self, workdir: Path, *extra: str, http_port: int = 0, otlp_port: int = 0,
                 grpc_port: int | None = None, token: str | None = None) -> None:
        self.http_port = http_port or free_port()
        self.otlp_port = otlp_port or free_port()
        self.grpc_port = grpc_port
        self.token = token
        cmd = [
            program_path("a2a-quiescence"), "collector",
            "--http-listen", f"127.0.0.1:{self.http_port}",
            "--otlp-listen", f"127.0.0.1:{self.otlp_port}",
            "--otlp-grpc-listen", f"127.0.0.1:{grpc_port}" if grpc_port else "off",
            "--log-level", "warning",
            *extra,
        ]
        if token:
            cmd += ["--token", token]
        self.log = workdir / f"collector-{self.http_port}.log"
        self.popen = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        try:
            wait_http(f"{self.api}/readyz", proc=self.popen)
        except BaseException:
            self.stop()
            raise

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def post(self, body: bytes, *, signal_: str = "logs", content_type: str = "application/x-protobuf",
             headers: dict[str, str] | None = None, auth: bool = True) -> httpx.Response:
        h = {"content-type": content_type, **(self.auth() if auth else {}), **(headers or {})}
        return httpx.post(f"{self.otlp}/v1/{signal_}", content=body, headers=h, timeout=10)

    def metrics(self) -> str:
        r = httpx.get(f"{self.api}/metrics", timeout=10)
        assert r.status_code == 200
        return r.text

    def value(self, name: str, **labels: str) -> float | None:
        return metric(self.metrics(), name, **labels)

    def mesh(self) -> dict[str, Any]:
        r = httpx.get(f"{self.api}/v1/mesh", headers=self.auth(), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def agent(self, name: str) -> dict[str, Any] | None:
        return next((a for a in self.mesh()["agents"] if a["agent"] == name), None)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return stop_process(self.popen, sig, 15)


def hop_body(inc: str, seq: int, *, in_flight: int = 0, started: int = 0, shutdown: dict | None = None,
             finished: dict[str, int] | None = None) -> dict[str, Any]:
    now = time.time()
    return {
        "v": names.SNAPSHOT_SCHEMA_VERSION,
        "incarnation": inc,
        "seq": seq,
        "pid": 1,
        "started_at": now,
        "at": now,
        "producers_in_flight": in_flight,
        "producers_started": started,
        "producers_finished": finished or {},
        "stalled_closes_in_flight": 0,
        "stalls_total": 0,
        "destroyed_pending_total": 0,
        "recent": [],
        "shutdown": shutdown,
    }


def cascade_body(inc: str, seq: int, *, active: int = 1) -> dict[str, Any]:
    return {
        "v": names.SNAPSHOT_SCHEMA_VERSION, "incarnation": inc, "seq": seq, "active": active,
        "roots": [1, 7], "sent": {}, "received": {}, "aliases": [],
        "passive_since": None if active else time.time(), "at": time.time(),
    }


def hop_request(agent: str, body: dict[str, Any]) -> bytes:
    return reporter.encode(agent, body["incarnation"], body, [])


def to_otlp_json(raw: bytes) -> bytes:
    """Protobuf ExportLogsServiceRequest -> OTLP/JSON (hex trace ids, as the spec writes them)."""
    message = logs_service_pb2.ExportLogsServiceRequest()
    message.ParseFromString(raw)
    doc = json_format.MessageToDict(message)
    for rl in doc.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for rec in sl.get("logRecords", []):
                if "traceId" in rec:
                    rec["traceId"] = base64.b64decode(rec["traceId"]).hex()
    return json.dumps(doc).encode()


# -- fixtures --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """A token-protected collector with a small body limit and one agent's state in it."""
    grpc_port = free_port()
    c = Collector(
        tmp_path_factory.mktemp("guarded"),
        "--max-body-bytes", str(BODY_LIMIT), "--agent-timeout", "3600",
        grpc_port=grpc_port, token=TOKEN,
    )
    try:
        r = c.post(hop_request("seed", hop_body("seed-1", 1, in_flight=2, started=7)))
        assert r.status_code == 200, r.text
        assert r.headers[names.HEADER_COLLECTOR_ID]
        yield c
    finally:
        assert c.stop() == 0  # clean shutdown on SIGTERM


def seed_intact(c: Collector) -> None:
    text = c.metrics()
    assert metric(text, names.M_PRODUCERS_IN_FLIGHT, agent="seed") == 2
    assert metric(text, names.M_PRODUCERS_STARTED, agent="seed") == 7
    assert httpx.get(f"{c.api}/healthz", timeout=5).status_code == 200


def rejected(c: Collector, reason: str) -> float:
    return c.value(names.M_REJECTED, reason=reason) or 0.0


VALID = hop_request("other", hop_body("other-1", 1, started=1))
BOMB = gzip.compress(b"\0" * (4 * 1024 * 1024))
assert len(BOMB) < BODY_LIMIT


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 1024):
        yield b"\x0a" * 1024


BAD_INPUTS = {
    "malformed-protobuf": (dict(body=b"\xff\xff\xff\xff\x0f garbage"), 400, names.REJECT_MALFORMED),
    "truncated-protobuf": (dict(body=VALID[: len(VALID) // 2]), 400, names.REJECT_MALFORMED),
    "malformed-json": (dict(body=b'{"resourceLogs": [', content_type="application/json"), 400, names.REJECT_MALFORMED),
    "json-not-object": (dict(body=b"[1, 2]", content_type="application/json"), 400, names.REJECT_MALFORMED),
    "json-bad-hex-trace": (dict(body=b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}',
                                content_type="application/json"), 400, names.REJECT_MALFORMED),
    "bad-gzip": (dict(body=b"not gzip at all", headers={"content-encoding": "gzip"}), 400, names.REJECT_MALFORMED),
    "oversized": (dict(body=b"\x0a" * (BODY_LIMIT + 1)), 413, names.REJECT_TOO_LARGE),
    "gzip-bomb": (dict(body=BOMB, headers={"content-encoding": "gzip"}), 413, names.REJECT_TOO_LARGE),
    "deflate-bomb": (dict(body=zlib.compress(b"\0" * (4 * 1024 * 1024)), headers={"content-encoding": "deflate"}),
                     413, names.REJECT_TOO_LARGE),
    "wrong-content-type": (dict(body=VALID, content_type="text/plain"), 415, names.REJECT_CONTENT_TYPE),
    "no-content-type": (dict(body=VALID, content_type=""), 415, names.REJECT_CONTENT_TYPE),
    "unknown-encoding": (dict(body=VALID, headers={"content-encoding": "br"}), 415, names.REJECT_CONTENT_TYPE),
    "missing-token": (dict(body=VALID, auth=False), 401, names.REJECT_UNAUTHORIZED),
    "wrong-token": (dict(body=VALID, auth=False, headers={"authorization": "Bearer nope"}), 401, names.REJECT_UNAUTHORIZED),
    "basic-auth": (dict(body=VALID, auth=False, headers={"authorization": "Basic " + base64.b64encode(b"a:b").decode()}),
                   401, names.REJECT_UNAUTHORIZED),
    "unknown-signal": (dict(body=VALID, signal_="profiles"), 404, names.REJECT_NOT_FOUND),
}


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_counted_and_harmless(guarded: Collector, case: str) -> None:
    kwargs, status, reason = BAD_INPUTS[case]
    before = rejected(guarded, reason)
    r = guarded.post(**kwargs)
    assert r.status_code == status, r.text
    assert rejected(guarded, reason) == before + 1
    seed_intact(guarded)
    # and it keeps serving: a good request still goes through
    assert guarded.post(VALID).status_code == 200


def test_chunked_oversized_body_is_refused_without_content_length(guarded: Collector) -> None:
    before = rejected(guarded, names.REJECT_TOO_LARGE)
    r = httpx.post(f"{guarded.otlp}/v1/logs", content=_chunks(BODY_LIMIT * 4),
                   headers={"content-type": "application/x-protobuf", **guarded.auth()}, timeout=10)
    assert r.status_code == 413
    assert rejected(guarded, names.REJECT_TOO_LARGE) == before + 1
    seed_intact(guarded)


def test_declared_content_length_over_limit_is_refused_before_reading(guarded: Collector) -> None:
    import socket

    before = rejected(guarded, names.REJECT_TOO_LARGE)
    with socket.create_connection(("127.0.0.1", guarded.otlp_port), timeout=10) as s:
        s.sendall(
            f"POST /v1/logs HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
            f"authorization: Bearer {TOKEN}\r\ncontent-length: {10 ** 9}\r\n\r\n".encode()
        )
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert rejected(guarded, names.REJECT_TOO_LARGE) == before + 1
    seed_intact(guarded)


def test_partial_success_for_malformed_snapshot_inside_valid_request(guarded: Collector) -> None:
    before = rejected(guarded, names.REJECT_MALFORMED)
    raw = reporter.encode("partial", "p-1", {"no": "incarnation"}, [(new_trace_id(), {"seq": "x"})])
    r = guarded.post(raw)
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedLogRecords"] == 2
    assert rejected(guarded, names.REJECT_MALFORMED) == before + 2
    seed_intact(guarded)


def test_api_requires_token(guarded: Collector) -> None:
    before = rejected(guarded, names.REJECT_UNAUTHORIZED)
    trace = new_trace_id()
    for path in ("/v1/mesh", f"/v1/cascades/{trace}", f"/v1/cascades/{trace}/wait?timeout=0"):
        assert httpx.get(f"{guarded.api}{path}", timeout=5).status_code == 401
        assert httpx.get(f"{guarded.api}{path}", headers={"authorization": "Bearer x"}, timeout=5).status_code == 401
        assert httpx.get(f"{guarded.api}{path}", headers=guarded.auth(), timeout=5).status_code in (200, 408)
    assert rejected(guarded, names.REJECT_UNAUTHORIZED) == before + 6
    # /metrics stays open for Prometheus
    seed_intact(guarded)


def test_grpc_requires_token(guarded: Collector) -> None:
    before = rejected(guarded, names.REJECT_UNAUTHORIZED)
    request = logs_service_pb2.ExportLogsServiceRequest.FromString(
        hop_request("grpc-agent", hop_body("g-1", 1, started=3))
    )
    with grpc.insecure_channel(f"127.0.0.1:{guarded.grpc_port}") as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as err:
                stub.Export(request, metadata=metadata, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert guarded.value(names.M_PRODUCERS_STARTED, agent="grpc-agent") is None
        stub.Export(request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
    assert rejected(guarded, names.REJECT_UNAUTHORIZED) == before + 2
    assert guarded.value(names.M_PRODUCERS_STARTED, agent="grpc-agent") == 3
    seed_intact(guarded)


# -- accepted encodings --------------------------------------------------------------------
def test_json_with_hex_trace_ids_and_gzip_protobuf_are_accepted(guarded: Collector) -> None:
    trace = new_trace_id()
    raw = reporter.encode("json-agent", "j-1", hop_body("j-1", 1, started=4), [(trace, cascade_body("j-1", 1))])
    r = guarded.post(to_otlp_json(raw), content_type="application/json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert guarded.value(names.M_PRODUCERS_STARTED, agent="json-agent") == 4
    described = httpx.get(f"{guarded.api}/v1/cascades/{trace}", headers=guarded.auth(), timeout=5).json()
    assert json.dumps(described).count("json-agent") >= 1

    raw = hop_request("gzip-agent", hop_body("z-1", 1, started=5))
    r = guarded.post(gzip.compress(raw), headers={"content-encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-protobuf"
    assert guarded.value(names.M_PRODUCERS_STARTED, agent="gzip-agent") == 5
    seed_intact(guarded)


def test_promtool_check_metrics_is_clean(guarded: Collector) -> None:
    promtool = need_tool("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=guarded.metrics().encode(),
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"" and result.stderr.strip() == b"", result.stdout + result.stderr


# -- loopback by default ----------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--http-listen", "--otlp-listen", "--otlp-grpc-listen"])
def test_non_loopback_listen_needs_allow_remote(flag: str) -> None:
    args = {"--http-listen": "127.0.0.1:0", "--otlp-listen": "127.0.0.1:0", "--otlp-grpc-listen": "off"}
    args[flag] = "0.0.0.0:0"
    cmd = [program_path("a2a-quiescence"), "collector", *[x for kv in args.items() for x in kv]]
    result = subprocess.run(cmd, capture_output=True, timeout=60)
    assert result.returncode == 2, result
    assert b"--allow-remote" in result.stderr


# -- memory bounds -------------------------------------------------------------------------
def test_max_agents_and_max_cascades_evict_and_count(tmp_path: Path) -> None:
    c = Collector(tmp_path, "--max-agents", "3", "--max-cascades", "2", "--agent-timeout", "3600")
    try:
        for i in range(5):
            assert c.post(hop_request(f"agent-{i}", hop_body(f"inc-{i}", 1, started=1))).status_code == 200
        traces = [new_trace_id() for _ in range(5)]
        for t in traces:
            raw = reporter.encode("agent-4", "inc-4", None, [(t, cascade_body("inc-4", 1, active=1))])
            assert c.post(raw).status_code == 200
        text = c.metrics()
        assert metric(text, names.M_EVICTED, kind="agent") == 2
        assert metric(text, names.M_EVICTED, kind="cascade") == 3
        assert metric(text, names.M_CASCADES_OPEN) == 2
        agents = {labels for (name, labels) in parse_metrics(text) if name == names.M_PRODUCERS_STARTED}
        assert agents == {(("agent", f"agent-{i}"),) for i in (2, 3, 4)}
    finally:
        assert c.stop() == 0


# -- restarts: counters and the shutdown record -------------------------------------------------
def test_duplicates_not_double_counted_and_new_incarnation_adds(tmp_path: Path) -> None:
    c = Collector(tmp_path, "--agent-timeout", "3600")
    try:
        first = hop_body("inc-a", 5, started=10, finished={"completed": 8},
                         shutdown={"reason": "lifespan", "at": time.time(), "leaked_producers": 2})
        for _ in range(3):  # resent (reporter retry, collector restart): one incarnation counts once
            assert c.post(hop_request("svc", first)).status_code == 200
        stale = hop_body("inc-a", 4, started=9)  # an older snapshot arriving late changes nothing
        assert c.post(hop_request("svc", stale)).status_code == 200
        text = c.metrics()
        assert metric(text, names.M_PRODUCERS_STARTED, agent="svc") == 10
        assert metric(text, names.M_PRODUCERS_FINISHED, agent="svc", outcome="completed") == 8
        assert metric(text, names.M_SHUTDOWN_LEAKED, agent="svc") == 2
        assert metric(text, names.M_AGENT_INCARNATIONS, agent="svc") == 1

        second = hop_body("inc-b", 1, started=3, finished={"completed": 1})
        second["started_at"] = first["started_at"] + 1
        assert c.post(hop_request("svc", second)).status_code == 200
        text = c.metrics()
        assert metric(text, names.M_PRODUCERS_STARTED, agent="svc") == 13  # never backwards
        assert metric(text, names.M_PRODUCERS_FINISHED, agent="svc", outcome="completed") == 9
        assert metric(text, names.M_SHUTDOWN_LEAKED, agent="svc") == 0  # new incarnation resets it
        assert metric(text, names.M_AGENT_INCARNATIONS, agent="svc") == 2
    finally:
        assert c.stop() == 0


def submit(url: str, plan: dict[str, Any], trace_id: str | None = None) -> None:
    """Send a plan without waiting for it to finish (a hanging plan never does).

    The request returns once the task is submitted, so no open connection keeps
    uvicorn's graceful shutdown from reaching the lifespan (where aclose runs)."""
    asyncio.run(send_plan(url, plan, trace_id=trace_id, return_immediately=True))


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Mesh(workdir=tmp_path) as m:
        yield m


def _in_flight(m: Mesh, agent: str) -> float:
    return metric(m.metrics(), names.M_PRODUCERS_IN_FLIGHT, agent=agent) or 0


def _agent_state(m: Mesh, agent: str) -> dict[str, Any] | None:
    data = httpx.get(f"{m.api}/v1/mesh", timeout=10).json()
    return next((a for a in data["agents"] if a["agent"] == agent), None)


def test_sigkill_with_producers_in_flight_is_leaked_after_agent_timeout(mesh: Mesh) -> None:
    mesh.start_collector(agent_timeout=2.0)
    agent = mesh.start_agent("killed")
    submit(agent.url, {"outcome": "hang"})
    until("a producer in flight", lambda: _in_flight(mesh, "killed") >= 1)
    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
    assert agent.popen.poll() is not None  # the process is gone
    leaked = until(
        "leaked producers after the agent timeout",
        lambda: (metric(mesh.metrics(), names.M_SHUTDOWN_LEAKED, agent="killed") or 0),
    )
    assert leaked >= 1
    text = mesh.metrics()
    assert metric(text, names.M_AGENT_UP, agent="killed") == 0
    assert metric(text, names.M_PRODUCERS_IN_FLIGHT, agent="killed") == 0


def test_sigterm_with_aclose_is_clean(mesh: Mesh) -> None:
    mesh.start_collector()
    agent = mesh.start_agent("clean")
    submit(agent.url, {"outcome": "hang"})
    until("a producer in flight", lambda: _in_flight(mesh, "clean") >= 1)
    assert agent.stop(signal.SIGTERM) == -signal.SIGTERM  # uvicorn re-raises SIGTERM after the lifespan
    state = until("the shutdown record", lambda: (s := _agent_state(mesh, "clean")) and s["shutdown"] and s)
    assert state["shutdown_leaked_producers"] == 0
    text = mesh.metrics()
    assert metric(text, names.M_SHUTDOWN_LEAKED, agent="clean") == 0
    assert metric(text, names.M_PRODUCERS_IN_FLIGHT, agent="clean") == 0


def test_sigterm_without_aclose_leaks(mesh: Mesh) -> None:
    mesh.start_collector()
    agent = mesh.start_agent("leaky", no_aclose=True)
    submit(agent.url, {"outcome": "hang"})
    until("a producer in flight", lambda: _in_flight(mesh, "leaky") >= 1)
    assert agent.stop(signal.SIGTERM) == -signal.SIGTERM  # uvicorn re-raises SIGTERM after the lifespan
    state = until("the shutdown record", lambda: (s := _agent_state(mesh, "leaky")) and s["shutdown"] and s)
    assert state["shutdown_leaked_producers"] >= 1
    assert agent.popen.poll() is not None
    assert (metric(mesh.metrics(), names.M_SHUTDOWN_LEAKED, agent="leaky") or 0) >= 1  # scrapeable after exit


def test_collector_restart_agent_resends_its_state(mesh: Mesh, tmp_path: Path) -> None:
    first = mesh.start_collector()
    http_port, otlp_port = first.port, mesh.otlp_port
    agent = mesh.start_agent("survivor")
    trace = new_trace_id()
    asyncio.run(send_plan(agent.url, {"work_ms": 10}, trace_id=trace))
    until("the hop", lambda: (metric(mesh.metrics(), names.M_PRODUCERS_STARTED, agent="survivor") or 0) >= 1)
    assert first.stop() == 0

    # same ports, new process: a new collector id; the agent's reporter resends everything
    again = Collector(tmp_path, http_port=http_port, otlp_port=otlp_port)
    try:
        assert metric(again.metrics(), names.M_PRODUCERS_STARTED, agent="survivor") in (None, 1.0)
        until("the hop again", lambda: (again.value(names.M_PRODUCERS_STARTED, agent="survivor") or 0) >= 1)
        assert again.value(names.M_PRODUCERS_IN_FLIGHT, agent="survivor") == 0
        assert again.value(names.M_AGENT_UP, agent="survivor") == 1
    finally:
        assert again.stop() == 0
        agent.stop()


# -- forwarding ------------------------------------------------------------------------------------
class Sink:
    """An in-test OTLP/HTTP receiver recording what it is sent."""

    def __init__(self, token: str | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                sink.requests.append((self.path, headers, body))
                ok = token is None or headers.get("authorization") == f"Bearer {token}"
                self.send_response(200 if ok else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_forwarding_with_forward_token(tmp_path: Path) -> None:
    sink = Sink(token="upstream-token")
    try:
        c = Collector(tmp_path, "--forward", f"http://127.0.0.1:{sink.port}", "--forward-token", "upstream-token",
                      token=TOKEN)
        try:
            raw = hop_request("fwd", hop_body("f-1", 1, started=1))
            assert c.post(gzip.compress(raw), headers={"content-encoding": "gzip"}).status_code == 200
            until("the forwarded request", lambda: sink.requests)
            path, headers, body = sink.requests[0]
            assert path == "/v1/logs"
            assert headers["authorization"] == "Bearer upstream-token"  # ours, not the agent's token
            assert headers["content-type"] == "application/x-protobuf"
            assert headers["content-encoding"] == "gzip"
            assert gzip.decompress(body) == raw
            until("forwarded_total", lambda: c.value(names.M_FORWARDED) == 1)
            for reason in names.DROP_REASONS:
                assert c.value(names.M_DROPPED, reason=reason) == 0
            assert c.value(names.M_FORWARD_WAITING) == 0
        finally:
            assert c.stop() == 0
    finally:
        sink.close()


def test_forward_token_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = Sink(token="env-token")
    monkeypatch.setenv("A2A_QUIESCENCE_FORWARD_TOKEN", "env-token")
    try:
        c = Collector(tmp_path, "--forward", f"http://127.0.0.1:{sink.port}")
        try:
            assert c.post(hop_request("fwd", hop_body("f-1", 1))).status_code == 200
            until("forwarded_total", lambda: c.value(names.M_FORWARDED) == 1)
            assert sink.requests[0][1]["authorization"] == "Bearer env-token"
        finally:
            assert c.stop() == 0
    finally:
        sink.close()


def test_forward_upstream_down_drops_after_bounded_retries(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there
    c = Collector(tmp_path, "--forward", f"http://127.0.0.1:{dead}", "--agent-timeout", "3600")
    try:
        for i in range(3):
            assert c.post(hop_request("fwd", hop_body("f-1", i + 1, started=i))).status_code == 200
        until("dropped_total == 3", lambda: c.value(names.M_DROPPED, reason=names.DROP_UPSTREAM_UNAVAILABLE) == 3)
        assert c.value(names.M_DROPPED, reason=names.DROP_QUEUE_FULL) == 0
        assert c.value(names.M_FORWARDED) == 0
        assert c.value(names.M_PRODUCERS_STARTED, agent="fwd") == 2  # ingest unaffected
    finally:
        assert c.stop() == 0


def test_sigterm_exits_zero_and_sigint_too(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        c = Collector(tmp_path)
        assert c.stop(sig) == 0


def test_fixture_names_the_agents_whose_shutdown_leaked_producers(tmp_path: Path) -> None:
    from a2a_quiescence.pytest_plugin import Quiescence

    c = Collector(tmp_path, "--agent-timeout", "3600", token=TOKEN)
    try:
        fixture = Quiescence(c.api, 10, token=TOKEN)
        clean = {"reason": "sigterm", "at": time.time(), "leaked_producers": 0}
        assert c.post(hop_request("tidy", hop_body("tidy-1", 1, started=3, shutdown=clean))).status_code == 200
        fixture.assert_no_leaked_producers()  # must not fire: a clean shutdown
        leaky = {"reason": "sigterm", "at": time.time(), "leaked_producers": 2}
        assert c.post(hop_request("leaky", hop_body("leaky-1", 1, in_flight=2, started=2,
                                                    shutdown=leaky))).status_code == 200
        with pytest.raises(pytest.fail.Exception, match=r"leaky.*2"):
            fixture.assert_no_leaked_producers()  # fires, naming the agent
    finally:
        c.stop()
