"""The OTLP/HTTP body of a snapshot export, written by hand: an
ExportLogsServiceRequest whose log records carry hop and cascade snapshots
(docs/wire.md). Byte for byte what the generated protobuf classes write
(tests/test_reporter_encoding.py), without them: varints, the resource and
scope encoded once per incarnation, the event-name attribute once per process,
a reused JSON encoder."""

from __future__ import annotations

import json
import struct
import time
from typing import Any

from a2a_quiescence import __version__, names

_JSON = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps builds an encoder per call


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64: two's complement, ten bytes
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    # AnyValue: string_value 1, bool_value 2, int_value 3 (a oneof: written even when zero)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    return _field(1, str(value).encode("utf-8"))


def _key_value(key: str, value: Any) -> bytes:
    # KeyValue: key 1, value 2 (an empty AnyValue is still present: it was set)
    return (_field(1, key.encode("utf-8")) if key else b"") + _field(2, _any_value(value))


# LogRecord fields: time_unix_nano 1 (fixed64), body 5, attributes 6, trace_id 9, observed_time_unix_nano 11 (fixed64)
_HOP_ATTRS = _field(6, _key_value(names.LOG_ATTR_EVENT_NAME, names.EVENT_HOP_SNAPSHOT))
_CASCADE_ATTRS = _field(6, _key_value(names.LOG_ATTR_EVENT_NAME, names.EVENT_CASCADE_SNAPSHOT))
_TIME, _OBSERVED, _TRACE_ID = b"\x09", b"\x59", b"\x4a\x10"
_BODY = b"\x2a"  # field 5, length-delimited: an AnyValue holding only string_value (field 1)
_pack_time = struct.Struct("<Q").pack
_HEADS: dict[tuple[Any, ...], bytes] = {}  # (service, incarnation, resource attributes) -> ResourceLogs.resource
_SCOPE = _field(1, _field(1, names.SCOPE.encode()) + _field(2, __version__.encode()))  # ScopeLogs.scope


def _resource(service_name: str, incarnation: str, resource_attrs: dict[str, Any] | None) -> bytes:
    """ResourceLogs.resource (field 1): the same in every request of an incarnation."""
    key = (service_name, incarnation, tuple((resource_attrs or {}).items()))
    head = _HEADS.get(key)
    if head is None:
        attrs = {"service.name": service_name, "service.instance.id": incarnation}
        attrs.update(resource_attrs or {})
        head = _HEADS[key] = _field(1, b"".join(_field(1, _key_value(k, v)) for k, v in attrs.items()))
        while len(_HEADS) > 16:
            del _HEADS[next(iter(_HEADS))]
    return head


def _record(stamp: bytes, attrs: bytes, trace_id: bytes | None, body: str) -> bytes:
    text = body.encode("utf-8")
    any_value = b"\x0a" + _varint(len(text)) + text
    parts = [_TIME, stamp, _BODY, _varint(len(any_value)), any_value, attrs]
    if trace_id:
        parts += (_TRACE_ID, trace_id)
    parts += (_OBSERVED, stamp)
    record = b"".join(parts)
    return b"\x12" + _varint(len(record)) + record  # ScopeLogs.log_records (2)


def encode(
    service_name: str,
    incarnation: str,
    hop: dict[str, Any] | None,
    cascades: list[tuple[str, dict[str, Any]]],
    resource_attrs: dict[str, Any] | None = None,
    now_ns: int | None = None,
) -> bytes:
    """One ExportLogsServiceRequest holding a hop snapshot and cascade snapshots."""
    stamp = _pack_time(time.time_ns() if now_ns is None else now_ns)
    records = [_SCOPE]
    if hop is not None:
        records.append(_record(stamp, _HOP_ATTRS, None, _JSON(hop)))
    for trace_id, body in cascades:
        records.append(_record(stamp, _CASCADE_ATTRS, bytes.fromhex(trace_id), _JSON(body)))
    resource_logs = _resource(service_name, incarnation, resource_attrs) + _field(2, b"".join(records))
    return _field(1, resource_logs)  # ExportLogsServiceRequest.resource_logs (1)
