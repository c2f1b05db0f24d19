"""Fuzzing the collector's OTLP decoding and snapshot ingest.

In-process: `otlp.decode` (all three signals, protobuf and JSON),
`otlp.decompress`, `otlp.snapshots` and `Collector.ingest.apply` with random hop and
cascade snapshot bodies never raise anything but `otlp.PayloadError`, and the
state they leave behind still renders on /metrics and the API.
Live: a few hundred random bodies and headers against a running collector's
OTLP/HTTP endpoint get 2xx/4xx, never 5xx, and the collector keeps serving.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import zlib
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest

from a2a_quiescence import names
from a2a_quiescence.collector import otlp
from a2a_quiescence.collector.server import Collector, Config
from a2a_quiescence.demo.harness import free_port, program_path, stop_process, wait_http
from a2a_quiescence.instrumentation import reporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

LIMIT = 64 * 1024
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values, biased towards the shapes and keys the snapshots use
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
HOP_KEYS = ["v", "incarnation", "seq", "pid", "started_at", "at", "producers_in_flight", "producers_started",
            "producers_finished", "stalled_closes_in_flight", "stalls_total", "destroyed_pending_total",
            "recent", "shutdown"]
CASCADE_KEYS = ["v", "incarnation", "seq", "active", "roots", "sent", "received", "aliases", "passive_since", "at"]


def _valid_hop() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "incarnation": st.sampled_from(["i1", "i2", "i3"]),
            "seq": st.integers(0, 20),
            "started_at": st.floats(0, 2e9),
            "producers_in_flight": st.integers(0, 5),
            "producers_started": st.integers(0, 50),
            "producers_finished": st.dictionaries(st.sampled_from(names.OUTCOMES), st.integers(0, 9), max_size=3),
            "shutdown": st.none() | st.fixed_dictionaries({"leaked_producers": st.integers(0, 3)}),
        }
    )


def _valid_cascade() -> st.SearchStrategy[dict[str, Any]]:
    tally = st.tuples(st.integers(0, 5), st.integers(0, 2**64 - 1)).map(list)
    return st.fixed_dictionaries(
        {
            "incarnation": st.sampled_from(["i1", "i2", "i3"]),
            "seq": st.integers(0, 20),
            "active": st.integers(0, 3),
            "roots": tally,
            "sent": st.dictionaries(st.sampled_from(["a", "b", "127.0.0.1:1"]), tally, max_size=2),
            "received": st.dictionaries(st.sampled_from(["a", "b", "c"]), tally, max_size=2),
            "aliases": st.lists(st.text(max_size=5), max_size=2),
            "passive_since": st.none() | st.floats(0, 2e9),
        }
    )


def mutated(base: st.SearchStrategy[dict[str, Any]], keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A well-formed body with some fields replaced by arbitrary JSON."""
    return st.tuples(base, st.dictionaries(st.sampled_from(keys), json_values, max_size=3)).map(
        lambda pair: {**pair[0], **pair[1]}
    )


hop_bodies = mutated(_valid_hop(), HOP_KEYS) | st.dictionaries(st.sampled_from(HOP_KEYS), json_values)
cascade_bodies = mutated(_valid_cascade(), CASCADE_KEYS) | st.dictionaries(st.sampled_from(CASCADE_KEYS), json_values)
trace_ids = st.sampled_from([b"", b"\0" * 16, bytes(range(16)), b"\x01" * 8]) | st.binary(min_size=16, max_size=16)


def _record(event: str, body: Any, trace_id: bytes) -> LogRecord:
    text = body if isinstance(body, str) else json.dumps(body, allow_nan=True)
    return LogRecord(
        trace_id=trace_id,
        attributes=[KeyValue(key=names.LOG_ATTR_EVENT_NAME, value=AnyValue(string_value=event))],
        body=AnyValue(string_value=text),
    )


records = st.one_of(
    st.builds(_record, st.just(names.EVENT_HOP_SNAPSHOT), hop_bodies | json_values | st.text(), trace_ids),
    st.builds(_record, st.just(names.EVENT_CASCADE_SNAPSHOT), cascade_bodies | json_values | st.text(), trace_ids),
    st.builds(_record, st.text(max_size=30), json_values, trace_ids),
)
requests = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", ""]), st.lists(records, max_size=6)), min_size=1, max_size=3
).map(
    lambda groups: ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=agent))]
                                  if agent else []),
                scope_logs=[ScopeLogs(log_records=recs)],
            )
            for agent, recs in groups
        ]
    )
)


def _check_renders(collector: Collector) -> None:
    """Whatever got in, /metrics, /v1/mesh and the status data still render."""
    generate_latest(collector.registry)
    json.dumps(collector.mesh(), allow_nan=False)  # as Starlette's JSONResponse renders it
    for trace_id in list(collector.detector.cascades)[:5]:
        json.dumps(collector.describe(trace_id), allow_nan=False)


# -- decoding ------------------------------------------------------------------------
@FUZZ
@given(signal_=st.sampled_from(sorted(otlp.SIGNALS)), body=st.binary(max_size=2048),
       content_type=st.sampled_from([otlp.PROTOBUF, otlp.JSON, "application/json; charset=utf-8", "text/plain", "", None]))
def test_decode_random_bytes(signal_: str, body: bytes, content_type: str | None) -> None:
    try:
        otlp.decode(signal_, body, content_type)
    except otlp.PayloadError as exc:
        assert exc.status in (400, 415)


@FUZZ
@given(signal_=st.sampled_from(sorted(otlp.SIGNALS)), doc=json_values)
def test_decode_random_json_documents(signal_: str, doc: Any) -> None:
    body = json.dumps(doc, allow_nan=True).encode()
    try:
        otlp.decode(signal_, body, otlp.JSON)
    except otlp.PayloadError as exc:
        assert exc.status == 400


otlp_json_docs = st.fixed_dictionaries(
    {
        "resourceLogs": st.lists(
            st.fixed_dictionaries(
                {"scopeLogs": st.lists(st.fixed_dictionaries({"logRecords": st.lists(
                    st.dictionaries(st.sampled_from(["traceId", "spanId", "body", "attributes", "timeUnixNano",
                                                     "severityNumber", "flags"]),
                                    json_values | st.text(alphabet="0123456789abcdefXYZ", max_size=34)),
                    max_size=3)}), max_size=2)}
            ),
            max_size=2,
        )
    }
)


@FUZZ
@given(doc=otlp_json_docs)
def test_decode_otlp_shaped_json(doc: dict[str, Any]) -> None:
    try:
        message = otlp.decode("logs", json.dumps(doc).encode(), otlp.JSON)
    except otlp.PayloadError as exc:
        assert exc.status == 400
        return
    for item in otlp.snapshots(message):
        assert isinstance(item, (otlp.Snapshot, otlp.PayloadError))


@FUZZ
@given(request=requests)
def test_decode_roundtrip_both_encodings(request: ExportLogsServiceRequest) -> None:
    raw = request.SerializeToString()
    assert otlp.decode("logs", raw, otlp.PROTOBUF) == request
    from google.protobuf import json_format

    as_json = json_format.MessageToJson(request).encode()  # base64 ids: the protobuf JSON mapping
    try:
        otlp.decode("logs", as_json, otlp.JSON)
    except otlp.PayloadError as exc:  # base64 that is not hex is refused, never raised otherwise
        assert exc.status == 400


@FUZZ
@given(data=st.binary(max_size=4096), encoding=st.sampled_from(["gzip", "deflate", "identity", "", None, "GZIP", "br", "x"]),
       limit=st.integers(0, 8192))
def test_decompress_random(data: bytes, encoding: str | None, limit: int) -> None:
    for body in (data, gzip.compress(data), zlib.compress(data), gzip.compress(data)[:-3]):
        try:
            out = otlp.decompress(body, encoding, limit)
        except otlp.PayloadError as exc:
            assert exc.status in (400, 413, 415)
        else:
            if (encoding or "identity").strip().lower() not in ("identity", ""):
                assert len(out) <= limit


@FUZZ
@given(request=requests)
def test_snapshots_never_raise(request: ExportLogsServiceRequest) -> None:
    for item in otlp.snapshots(request):
        assert isinstance(item, (otlp.Snapshot, otlp.PayloadError))
        if isinstance(item, otlp.Snapshot):
            assert isinstance(item.body, dict)
            assert item.trace_id is None or len(item.trace_id) == 32


# -- ingest ----------------------------------------------------------------------------
@FUZZ
@given(batch=st.lists(requests, min_size=1, max_size=4))
def test_collector_ingest_random_snapshots(batch: list[ExportLogsServiceRequest]) -> None:
    collector = Collector(Config(otlp_listen=None, grpc_listen=None, http_listen="127.0.0.1:0",
                                 max_agents=2, max_cascades=3, agent_timeout=0.0))
    for request in batch:
        refused_before = sum(collector.state.rejected.values())
        bad = collector.ingest.apply("logs", request)
        records = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        assert 0 <= bad <= records  # at most one refusal per record
        assert sum(collector.state.rejected.values()) - refused_before == bad  # each counted, with a reason
        _check_renders(collector)


@FUZZ
@given(steps=st.lists(st.tuples(st.sampled_from(["a", "b"]), st.booleans(), hop_bodies, cascade_bodies,
                                st.sampled_from(["11" * 16, "22" * 16])), min_size=1, max_size=8))
def test_collector_ingest_mostly_valid_sequences(steps: list[tuple[str, bool, dict, dict, str]]) -> None:
    collector = Collector(Config(otlp_listen=None, grpc_listen=None, http_listen="127.0.0.1:0", agent_timeout=3600))
    for agent, is_hop, hop, cascade, trace_id in steps:
        raw = reporter.encode(agent, "x", hop if is_hop else None, [] if is_hop else [(trace_id, cascade)])
        message = otlp.decode("logs", raw, otlp.PROTOBUF)
        collector.ingest.apply("logs", message)
        _check_renders(collector)
    # counters never negative
    text = generate_latest(collector.registry).decode()
    for line in text.splitlines():
        if line.startswith("a2a_") and "_total" in line.split(" ")[0]:
            assert float(line.rsplit(" ", 1)[1]) >= 0


# -- the live endpoint ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    http_port, otlp_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("fuzz") / "collector.log"
    popen = subprocess.Popen(
        [program_path("a2a-quiescence"), "collector", "--http-listen", f"127.0.0.1:{http_port}",
         "--otlp-listen", f"127.0.0.1:{otlp_port}", "--otlp-grpc-listen", "off",
         "--max-body-bytes", str(LIMIT), "--max-agents", "50", "--max-cascades", "200", "--log-level", "warning"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{http_port}/readyz", proc=popen)
        yield f"http://127.0.0.1:{otlp_port}", f"http://127.0.0.1:{http_port}"
    finally:
        stop_process(popen)
    assert popen.returncode == 0, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
bodies = st.one_of(
    st.binary(max_size=4096),
    requests.map(lambda r: r.SerializeToString()),
    requests.map(lambda r: gzip.compress(r.SerializeToString())),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    otlp_json_docs.map(lambda d: json.dumps(d).encode()),
    st.integers(LIMIT - 10, LIMIT + 10).map(lambda n: b"\x0a" * n),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/v1/logs", "/v1/logs", "/v1/traces", "/v1/metrics", "/v1/nope", "/v1/", "/v1/logs/x"]),
    body=bodies,
    content_type=st.sampled_from([otlp.PROTOBUF, otlp.JSON, "application/json;charset=utf-8", "text/plain", ""]) | header_text,
    encoding=st.sampled_from([None, "gzip", "deflate", "identity", "br", "gzip, gzip"]) | header_text,
    authorization=st.none() | header_text,
)
def test_live_endpoint_never_5xx(live: tuple[str, str], path: str, body: bytes, content_type: str,
                                 encoding: str | None, authorization: str | None) -> None:
    otlp_url, _api = live
    headers = {"content-type": content_type}
    if encoding is not None:
        headers["content-encoding"] = encoding
    if authorization is not None:
        headers["authorization"] = authorization
    r = httpx.post(otlp_url + path, content=body, headers=headers, timeout=10)
    assert 200 <= r.status_code < 500, (r.status_code, r.text[:300])


def test_live_endpoint_still_serving_after_fuzz(live: tuple[str, str]) -> None:
    otlp_url, api = live
    raw = reporter.encode("after-fuzz", "af-1", {"incarnation": "af-1", "seq": 1, "producers_started": 3}, [])
    r = httpx.post(otlp_url + "/v1/logs", content=raw, headers={"content-type": otlp.PROTOBUF}, timeout=10)
    assert r.status_code == 200
    assert httpx.get(api + "/healthz", timeout=10).status_code == 200
    assert httpx.get(api + "/v1/mesh", timeout=10).status_code == 200
    assert httpx.get(api + "/", timeout=10).status_code == 200
    metrics = httpx.get(api + "/metrics", timeout=10)
    assert metrics.status_code == 200
    assert 'a2a_producers_started_total{agent="after-fuzz"} 3.0' in metrics.text
