"""The reporter writes its OTLP requests by hand: byte for byte what the generated protobuf classes write."""

from __future__ import annotations

import uuid

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from a2a_quiescence import names
from a2a_quiescence.instrumentation.reporter import encode, encode_with_messages
from a2a_quiescence.instrumentation.tracker import HopTracker


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
