"""The reporter writes its OTLP requests by hand: byte for byte what the generated protobuf classes write."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from a2a_quiescence import __version__, names
from a2a_quiescence.instrumentation.snapshot_encoding import encode
from a2a_quiescence.instrumentation.tracker import HopTracker


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def encode_with_messages(
    service_name: str,
    incarnation: str,
    hop: dict[str, Any] | None,
    cascades: list[tuple[str, dict[str, Any]]],
    resource_attrs: dict[str, Any] | None = None,
    now_ns: int | None = None,
) -> bytes:
    """``encode`` through the generated protobuf classes (the reference)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    records = []
    if hop is not None:
        records.append(
            LogRecord(
                time_unix_nano=now_ns,
                observed_time_unix_nano=now_ns,
                attributes=[_kv(names.LOG_ATTR_EVENT_NAME, names.EVENT_HOP_SNAPSHOT)],
                body=AnyValue(string_value=json.dumps(hop, separators=(",", ":"))),
            )
        )
    for trace_id, body in cascades:
        records.append(
            LogRecord(
                time_unix_nano=now_ns,
                observed_time_unix_nano=now_ns,
                trace_id=bytes.fromhex(trace_id),
                attributes=[_kv(names.LOG_ATTR_EVENT_NAME, names.EVENT_CASCADE_SNAPSHOT)],
                body=AnyValue(string_value=json.dumps(body, separators=(",", ":"))),
            )
        )
    attrs = {"service.name": service_name, "service.instance.id": incarnation}
    attrs.update(resource_attrs or {})
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=[_kv(k, v) for k, v in attrs.items()]),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name=names.SCOPE, version=__version__),
                        log_records=records,
                    )
                ],
            )
        ]
    )
    return request.SerializeToString()





def _snapshots(n: int) -> tuple[dict, list]:
    tracker = HopTracker()
    for i in range(n):
        trace_id = uuid.uuid4().hex
        work = tracker.receive(trace_id, "peer" if i % 2 else None, "m-\u00e9-" + uuid.uuid4().hex, "host:1")
        if i % 3 == 0:
            tracker.release(work, {"kind": names.END_EXECUTOR_FAILED, "task_id": "t", "detail": "\u2603 " * 40})
        elif i % 3 == 1:
            tracker.release(work)
    return tracker.take_snapshots()


def test_hand_written_protobuf_is_what_the_classes_write() -> None:
    for n, with_hop, resource in ((0, True, None), (1, False, None), (3, True, {"k": 1, "b": True, "s": "x", "neg": -5}),
                                  (200, True, {"f": False, "z": 0, "e": ""})):
        hop, cascades = _snapshots(n)
        hop = hop if with_hop else None
        for service, incarnation in (("agent", "inc-1"), ("", uuid.uuid4().hex), ("\u00fcber" * 50, "i")):
            ours = encode(service, incarnation, hop, cascades, resource, now_ns=1_700_000_000_123_456_789)
            reference = encode_with_messages(service, incarnation, hop, cascades, resource, now_ns=1_700_000_000_123_456_789)
            assert ours == reference
            parsed = ExportLogsServiceRequest.FromString(ours)
            [records] = [sl.log_records for rl in parsed.resource_logs for sl in rl.scope_logs]
            assert len(records) == len(cascades) + (hop is not None)
