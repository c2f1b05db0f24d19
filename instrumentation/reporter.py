"""Ships lifecycle snapshots to the sidecar as OTLP/HTTP log records.

A background thread coalesces: whatever changed since the last export is
snapshotted once (latest state wins), so a burst of events becomes one record
per cascade instead of a queue that drops. Each snapshot is an OTLP log record
whose ``trace_id`` is the cascade's, ``event.name`` says which kind, and whose
body is a JSON object (see docs/wire.md). Nothing here runs on the agent's
request path: the agent only flips dirty bits and sets an event.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import struct
import threading
import time
import urllib.parse
from typing import Any


from a2a_quiescence import __version__, names
from a2a_quiescence.instrumentation.tracker import HopTracker

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = f"http://{names.DEFAULT_OTLP_HTTP}/v1/logs"
# ~300 bytes each: far below the collector's default 4 MiB body limit
MAX_SNAPSHOTS_PER_REQUEST = 1000


def resolve_endpoint(env: dict[str, str] | None = None) -> str:
    """Where snapshots go: our own variable, else the standard OTLP ones when
    they name an HTTP endpoint, else the sidecar's default OTLP/HTTP port."""
    env = dict(os.environ) if env is None else env
    if env.get(names.ENV_ENDPOINT):
        return env[names.ENV_ENDPOINT]
    protocol = env.get("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    if protocol.startswith("http"):
        if env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"):
            return env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"]
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            return env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/logs"
    return DEFAULT_ENDPOINT


def resolve_headers(env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) if env is None else env
    headers: dict[str, str] = {}
    raw = env.get("OTEL_EXPORTER_OTLP_LOGS_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    for part in raw.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            headers[urllib.parse.unquote(key.strip()).lower()] = urllib.parse.unquote(value.strip())
    if env.get(names.ENV_TOKEN):
        headers["authorization"] = "Bearer " + env[names.ENV_TOKEN]
    return headers


# --- protobuf by hand -----------------------------------------------------------------
# An ExportLogsServiceRequest written directly, byte for byte what the generated classes
# serialise (fields in number order, defaults omitted; tests compare the two): the
# resource and scope are the same in every request of an incarnation and the event-name
# attribute in every record, so they are encoded once; per record only the clock, the
# trace id and the JSON body are new. No message objects, no KeyValue per record.
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


# coalescing of what can settle a cascade: at most this long (the cap of the load-adaptive window)
ENV_COALESCE_MS = names.ENV_COALESCE_MS
DEFAULT_COALESCE_MS = 20.0


class _Connection:
    """A kept-alive HTTP/1.1 connection for POSTing snapshots: the request head is
    built once and sent with the body in one write, and the status line and the few
    headers the reporter reads are parsed by hand. (``http.client`` parses every
    response head with the ``email`` package: per export it cost more CPU than
    taking and encoding the snapshots.) Anything unusual (no content-length, a
    chunked body, ``connection: close``, HTTP/1.0) closes the connection after the
    response; the next export opens a new one."""

    def __init__(self, parsed: urllib.parse.SplitResult, headers: dict[str, str], timeout: float) -> None:
        self.address = (parsed.hostname, parsed.port or 80)
        self.timeout = timeout
        lines = [f"POST {parsed.path or '/v1/logs'} HTTP/1.1", f"host: {parsed.netloc.rpartition('@')[2]}",
                 "accept-encoding: identity"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")
        self.sock: socket.socket | None = None

    @staticmethod
    def usable(headers: dict[str, str]) -> bool:
        """Headers this connection can send verbatim (else ``http.client`` validates them)."""
        try:
            text = "".join(f"{k}{v}" for k, v in headers.items())
            text.encode("latin-1")
        except UnicodeEncodeError:
            return False
        return not any(c in text for c in "\r\n\0") and all(k and ":" not in k and " " not in k for k in headers)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def post(self, body: bytes) -> tuple[int, str, dict[str, str]]:
        """POST ``body``; returns (status, reason, response headers lower-cased)."""
        sock = self.sock
        if sock is None:
            sock = socket.create_connection(self.address, timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
        sock.sendall(b"".join((self.head, str(len(body)).encode(), b"\r\n\r\n", body)))
        buf = b""
        while True:
            while (end := buf.find(b"\r\n\r\n")) < 0:
                chunk = sock.recv(65536)
                if not chunk:
                    raise http.client.RemoteDisconnected("collector closed the connection")
                buf += chunk
                if len(buf) > 65536:
                    raise http.client.HTTPException("response head too large")
            lines = buf[:end].decode("latin-1").split("\r\n")
            buf = buf[end + 4:]
            version, _, rest = lines[0].partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/") or not code.isdigit():
                raise http.client.BadStatusLine(lines[0])
            status = int(code)
            if not 100 <= status < 200:
                break  # else an interim response: the real one follows
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        length = headers.get("content-length", "")
        if "transfer-encoding" in headers or not length.isdigit():
            keep = False  # a body we do not need and cannot delimit cheaply: drop the connection
        else:
            need = int(length)
            while len(buf) < need:
                chunk = sock.recv(max(65536, need - len(buf)))
                if not chunk:
                    raise http.client.IncompleteRead(buf)
                buf += chunk
            if len(buf) != need:
                keep = False  # more than one response: not ours to read
        if not keep:
            self.close()
        return status, reason, headers


class Reporter:
    """The background exporter thread for one ``HopTracker``."""

    def __init__(
        self,
        tracker: HopTracker,
        service_name: str,
        *,
        endpoint: str | None = None,
        headers: dict[str, str] | None = None,
        flush_interval: float | None = None,
        heartbeat: float | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.tracker = tracker
        self.service_name = service_name
        self.endpoint = endpoint or resolve_endpoint()
        parsed = urllib.parse.urlsplit(self.endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"snapshot endpoint must be an http(s) URL, got {self.endpoint!r}")
        self._parsed = parsed
        self.headers = {"content-type": "application/x-protobuf", **(headers if headers is not None else resolve_headers())}
        ms = float(os.environ.get(names.ENV_FLUSH_MS, "5"))
        self.flush_interval = flush_interval if flush_interval is not None else ms / 1000.0
        self.heartbeat = heartbeat if heartbeat is not None else float(
            os.environ.get(names.ENV_HEARTBEAT_SECONDS, "2")
        )
        self.lazy_interval = float(os.environ.get(names.ENV_LAZY_MS, "200")) / 1000.0
        # the load-adaptive coalescing window (see _run): from flush_interval up to this
        self.max_window = max(self.flush_interval, float(os.environ.get(ENV_COALESCE_MS, DEFAULT_COALESCE_MS)) / 1000.0)
        self._window = self.flush_interval
        self._last_prompt = 0.0
        self._wakes = 0
        self._rate = 0.0  # prompt wakes per second, smoothed
        self.timeout = timeout
        self._event = threading.Event()
        self._send_lock = threading.Lock()
        self._stop = False
        self._conn: http.client.HTTPConnection | None = None
        self._collector_id: str | None = None
        self._failures = 0
        self._warned = False
        self._plain: _Connection | None = None
        if parsed.scheme == "http" and _Connection.usable(self.headers):
            self._plain = _Connection(parsed, self.headers, timeout)
        self.exports = 0
        self.export_failures = 0
        self._thread: threading.Thread | None = None
        tracker.wake = self._wake

    def _wake(self) -> None:
        """What the tracker calls when something can settle a cascade (any thread:
        the count is a load estimate, not exact)."""
        self._wakes += 1
        if not self._event.is_set():
            self._event.set()

    def after_fork(self) -> None:
        """In a forked child: the parent's thread, connection and locks are not ours;
        start afresh (the tracker has become a new incarnation)."""
        self._event = threading.Event()
        self._send_lock = threading.Lock()
        self._conn = None
        if self._plain is not None:
            self._plain.sock = None  # the parent's socket: not closed here, the parent still uses it
        self._collector_id = None
        self._failures = 0
        self._window, self._last_prompt, self._wakes, self._rate = self.flush_interval, 0.0, 0, 0.0
        self._thread = None
        self.tracker.wake = self._wake
        if not self._stop:
            self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="a2a-quiescence-reporter", daemon=True)
            self._thread.start()

    def stop(self, flush: bool = True) -> None:
        self._stop = True
        self._event.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
            self._thread = None
        if flush:
            self.flush()
        self.tracker.wake = lambda: None

    def _run(self) -> None:
        next_beat = time.monotonic() + self.heartbeat
        while not self._stop:
            # woken by what can settle a cascade (see HopTracker); the rest of what changed
            # is shipped with it when it is due, or when its lazy interval runs out
            now = time.monotonic()
            wait = min(next_beat, self.tracker.next_due(self.lazy_interval), now + self.lazy_interval) - now
            woke = self._event.wait(timeout=max(0.0, wait))
            if self._stop:
                break
            if woke and self.flush_interval > 0:
                # let a burst accumulate (the latest state wins): flush_interval, and under
                # load at least the adaptive window since the last prompt export
                time.sleep(max(self.flush_interval, self._last_prompt + self._window - time.monotonic()))
            self._event.clear()
            if time.monotonic() >= next_beat:
                self.tracker.heartbeat()
                next_beat = time.monotonic() + self.heartbeat
            # what is due: urgent cascades, and changes kept lazily for 3/4 of the lazy
            # interval (a prompt export) or half of it (the lazy timer, which fires when
            # the oldest change reaches the whole interval): under load the prompt
            # exports take them along before the timer fires, and when the timer does
            # fire it takes a batch; none waits longer than the lazy interval
            ok = self.flush(due=self.lazy_interval * (0.75 if woke else 0.5))
            if woke:
                self._adapt()
            if not ok and not self._stop:
                # back off, but keep the dirty state: nothing is lost, only late
                time.sleep(min(2.0, 0.05 * (2 ** min(self._failures, 6))))

    def _adapt(self) -> None:
        """The load-adaptive window: while prompt wakes come often enough that a
        window of ``max_window`` would gather one every other time or more, prompt
        exports are at least ``max_window`` apart (fewer requests for agent and
        collector, each a little later); otherwise ``flush_interval`` after a wake."""
        now = time.monotonic()
        wakes, self._wakes = self._wakes, 0
        elapsed = now - self._last_prompt
        self._last_prompt = now
        if elapsed <= 0 or elapsed > 10 * self.max_window:
            self._rate = 0.0  # idle for a while: a lone wake
        else:
            self._rate = 0.7 * self._rate + 0.3 * (wakes / elapsed)
        self._window = self.max_window if self._rate * self.max_window >= 0.5 else self.flush_interval

    def flush(self, due: float | None = None) -> bool:
        """Send whatever changed, synchronously (``due``: only what is due, changes
        kept lazily that long or longer; see ``HopTracker.take_snapshots``).
        Returns False on failure."""
        with self._send_lock:
            if not self.tracker.has_dirty():
                return True
            hop, cascades = self.tracker.take_snapshots(lazy=due)
            if hop is None and not cascades:
                return True
            # bounded requests: a resend of everything after a collector restart
            # must not become one body the collector refuses as too large
            chunks = [cascades[i : i + MAX_SNAPSHOTS_PER_REQUEST] for i in range(0, len(cascades), MAX_SNAPSHOTS_PER_REQUEST)]
            for n, chunk in enumerate(chunks or [[]]):
                try:
                    body = encode(self.service_name, self.tracker.incarnation, hop if n == 0 else None, chunk)
                    collector_id = self._post(body)
                except Exception as exc:  # noqa: BLE001 - fail-open: never reach the agent
                    self._failures += 1
                    self.export_failures += 1
                    if not self._warned:
                        self._warned = True
                        logger.warning("a2a-quiescence: cannot deliver snapshots to %s: %s", self.endpoint, exc)
                    with self.tracker.lock:
                        # nothing is lost: what was not delivered is sent again later
                        self.tracker.hop_dirty = self.tracker.hop_dirty or n == 0
                        for rest in chunks[n:]:
                            self.tracker.dirty.update(t for t, _ in rest)
                    return False
                self._failures = 0
                self.exports += 1
                if collector_id and self._collector_id and collector_id != self._collector_id:
                    # the collector restarted and lost its view: resend everything
                    self.tracker.mark_all_dirty()
                    self._event.set()
                if collector_id:
                    self._collector_id = collector_id
            return True

    def _post(self, body: bytes) -> str | None:
        if self._plain is not None:
            return self._post_plain(self._plain, body)
        for attempt in (0, 1):
            conn = self._conn
            if conn is None:
                cls = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
                conn = self._conn = cls(self._parsed.hostname, self._parsed.port, timeout=self.timeout)
            try:
                conn.request("POST", self._parsed.path or "/v1/logs", body=body, headers=self.headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._conn = None
                if attempt:
                    raise
                continue  # a kept-alive connection the server closed: retry once
            if response.status >= 300:
                raise RuntimeError(f"collector answered {response.status} {response.reason}")
            return response.getheader(names.HEADER_COLLECTOR_ID)
        return None

    @staticmethod
    def _post_plain(conn: _Connection, body: bytes) -> str | None:
        for attempt in (0, 1):
            reused = conn.sock is not None
            try:
                status, reason, headers = conn.post(body)
            except (OSError, http.client.HTTPException):
                conn.close()
                if attempt or not reused:
                    raise
                continue  # a kept-alive connection the server closed: retry once (a resend is harmless)
            if status >= 300:
                raise RuntimeError(f"collector answered {status} {reason}")
            return headers.get(names.HEADER_COLLECTOR_ID)
        return None
