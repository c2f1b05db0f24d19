"""Decoding OTLP/HTTP payloads (protobuf or JSON, optionally gzip) and
pulling our lifecycle snapshots out of OTLP log records."""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from a2a_quiescence import names

SIGNALS: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class PayloadError(Exception):
    """A payload we refuse; ``status`` and ``reason`` say how."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding, refusing anything that inflates past ``limit``."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise PayloadError(415, names.REJECT_CONTENT_TYPE, f"unsupported content-encoding {encoding!r}")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise PayloadError(400, names.REJECT_MALFORMED, f"bad {encoding} data: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadError(413, names.REJECT_TOO_LARGE, f"decompressed body exceeds {limit} bytes")
    return out


_HEX_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _HEX_ID_KEYS and isinstance(value, str):
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode() if value else ""
                except ValueError as exc:
                    raise PayloadError(400, names.REJECT_MALFORMED, f"{key} is not hex") from exc
            else:
                value = _hex_ids_to_base64(value)
            out[key] = value
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def decode(signal: str, body: bytes, content_type: str | None) -> Message:
    cls = SIGNALS[signal]
    kind = media_type(content_type)
    if kind == PROTOBUF:
        message = cls()
        try:
            message.ParseFromString(body)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise PayloadError(400, names.REJECT_MALFORMED, f"malformed protobuf: {exc}") from exc
        return message
    if kind == JSON:
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(400, names.REJECT_MALFORMED, f"malformed JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise PayloadError(400, names.REJECT_MALFORMED, "an OTLP JSON body is an object")
        try:
            return json_format.ParseDict(_hex_ids_to_base64(raw), cls(), ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise PayloadError(400, names.REJECT_MALFORMED, f"malformed OTLP JSON: {exc}") from exc
    raise PayloadError(
        415, names.REJECT_CONTENT_TYPE, f"content-type must be {PROTOBUF} or {JSON}, got {kind or 'none'!r}"
    )


def _attr(kv_list: Any, key: str) -> Any:
    for kv in kv_list:
        if kv.key == key:
            v = kv.value
            which = v.WhichOneof("value")
            return getattr(v, which) if which else None
    return None


def _no_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; accepted, they later break JSON responses of the API
    raise ValueError(f"{name} is not allowed in a snapshot")


_SNAPSHOT_JSON = json.JSONDecoder(parse_constant=_no_constant)


@dataclass
class Snapshot:
    kind: str  # names.EVENT_HOP_SNAPSHOT or names.EVENT_CASCADE_SNAPSHOT
    agent: str
    trace_id: str | None
    body: dict[str, Any]


_ZERO_TRACE_ID = bytes(16)
_OURS = frozenset((names.EVENT_HOP_SNAPSHOT, names.EVENT_CASCADE_SNAPSHOT))


def snapshots(request: ExportLogsServiceRequest) -> Iterator[Snapshot | PayloadError]:
    """Our lifecycle snapshots in a logs request; other log records are ignored.
    A malformed snapshot yields a PayloadError in its place (the rest still count)."""
    for resource_logs in request.resource_logs:
        agent = str(_attr(resource_logs.resource.attributes, "service.name") or "unknown_service")
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                event = _attr(record.attributes, names.LOG_ATTR_EVENT_NAME) or record.event_name
                if event not in _OURS:
                    continue
                try:
                    body = _SNAPSHOT_JSON.decode(record.body.string_value)
                    if not isinstance(body, dict):
                        raise ValueError("snapshot body is not an object")
                except ValueError as exc:
                    yield PayloadError(400, names.REJECT_MALFORMED, f"bad snapshot body: {exc}")
                    continue
                trace_id = None
                if event == names.EVENT_CASCADE_SNAPSHOT:
                    raw_id = record.trace_id
                    if len(raw_id) != 16 or raw_id == _ZERO_TRACE_ID:
                        yield PayloadError(400, names.REJECT_MALFORMED, "cascade snapshot without a trace id")
                        continue
                    trace_id = raw_id.hex()
                yield Snapshot(event, agent, trace_id, body)

