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
import threading
import time
import urllib.parse
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

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


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def encode(
    service_name: str,
    incarnation: str,
    hop: dict[str, Any] | None,
    cascades: list[tuple[str, dict[str, Any]]],
    resource_attrs: dict[str, Any] | None = None,
) -> bytes:
    """One ExportLogsServiceRequest holding a hop snapshot and cascade snapshots."""
    now_ns = time.time_ns()
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
        self.timeout = timeout
        self._event = threading.Event()
        self._send_lock = threading.Lock()
        self._stop = False
        self._conn: http.client.HTTPConnection | None = None
        self._collector_id: str | None = None
        self._failures = 0
        self._warned = False
        self.exports = 0
        self.export_failures = 0
        self._thread: threading.Thread | None = None
        tracker.wake = self._event.set

    def after_fork(self) -> None:
        """In a forked child: the parent's thread, connection and locks are not ours;
        start afresh (the tracker has become a new incarnation)."""
        self._event = threading.Event()
        self._send_lock = threading.Lock()
        self._conn = None
        self._collector_id = None
        self._failures = 0
        self._thread = None
        self.tracker.wake = self._event.set
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
            # woken at once by what can settle a cascade (see HopTracker); the rest of
            # what changed waits for the lazy interval, so busy agents ship far less often
            woke = self._event.wait(timeout=max(0.0, min(next_beat - time.monotonic(), self.lazy_interval)))
            if self._stop:
                break
            if woke and self.flush_interval > 0:
                # let a burst accumulate; the latest state wins
                time.sleep(self.flush_interval)
            self._event.clear()
            if time.monotonic() >= next_beat:
                self.tracker.heartbeat()
                next_beat = time.monotonic() + self.heartbeat
            if not self.flush() and not self._stop:
                # back off, but keep the dirty state: nothing is lost, only late
                time.sleep(min(2.0, 0.05 * (2 ** min(self._failures, 6))))

    def flush(self) -> bool:
        """Send whatever changed, synchronously. Returns False on failure."""
        with self._send_lock:
            if not self.tracker.has_dirty():
                return True
            hop, cascades = self.tracker.take_snapshots()
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
