"""A test double of the OpenTelemetry Collector's ``load_balancing`` exporter.

Kept beside the real collector (tests/test_otelcol.py runs one built from the
pinned release) for the faults the real exporter will not produce on demand: a
lost batch, a replayed fan-out, batches dropped for a removed backend
(docs/scale-out.md says which test covers what). It reproduces, as
contrib v0.161.0 behaves (exporter/loadbalancingexporter/log_exporter.go and
consistent_hashing.go of that release; the ring is ``a2a_quiescence.ring``,
checked against an independent port in test_ring.py):

- an OTLP/HTTP receiver (``/v1/logs``; traces and metrics are accepted and
  dropped) in front of the exporter, answering once a request is queued;
- ``routing_key: traceID``: each log record is routed on its own by the
  32-character hex trace id; a record without one gets a random key;
- delivery to the backends over OTLP/gRPC (LogsService/Export) from a queue
  drained by 10 consumers in parallel, with a random delay each: unordered;
- at-least-once: a failed part is retried; a request whose fan-out is
  replayed (``duplicate_every``) reaches every backend of it twice, as a retry
  of the whole fan-out does (contrib #47600);
- a membership change (``set_endpoints``) rebuilds the ring; batches still
  queued for a removed backend are lost (contrib #35378, #36717), and
  ``lose_next`` drops batches outright.
"""

from __future__ import annotations

import gzip
import http.server
import os
import queue
import random
import threading
import time
from collections import Counter
from typing import Iterable

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

from a2a_quiescence.ring import Ring, routing_key

CONSUMERS = 10
RETRIES = 5


class LoadBalancerDouble:
    def __init__(self, endpoints: Iterable[str], *, seed: int = 0, duplicate_every: int = 0,
                 max_delay: float = 0.02) -> None:
        self.random = random.Random(seed)
        self.duplicate_every = duplicate_every
        self.max_delay = max_delay
        self.lock = threading.Lock()
        self.ring = Ring(sorted(endpoints))
        self.stats: Counter[str] = Counter()
        self.lose_next = 0
        self.delivered: Counter[str] = Counter()  # records per backend
        self.queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._channels: dict[str, grpc.Channel] = {}
        self._requests = 0
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                status = 200
                if self.path == "/v1/logs":
                    try:
                        double.accept(body)
                    except Exception:  # noqa: BLE001 - a bad body is the sender's 400
                        status = 400
                answer = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True)]
        self._threads += [threading.Thread(target=self._consume, daemon=True) for _ in range(CONSUMERS)]
        for t in self._threads:
            t.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- membership ------------------------------------------------------------------
    def set_endpoints(self, endpoints: Iterable[str]) -> None:
        """What the resolver does on a change: a new ring over the sorted endpoints."""
        with self.lock:
            self.ring = Ring(sorted(endpoints))
            self.stats["ring_changes"] += 1

    # -- routing -----------------------------------------------------------------------
    def route(self, request: logs_service_pb2.ExportLogsServiceRequest) -> dict[str, bytes]:
        """Split a request per record by its routing key; one request per backend."""
        parts: dict[str, logs_service_pb2.ExportLogsServiceRequest] = {}
        scopes: dict[tuple[str, int, int], ScopeLogs] = {}
        with self.lock:
            ring = self.ring
        for r, resource_logs in enumerate(request.resource_logs):
            for s, scope_logs in enumerate(resource_logs.scope_logs):
                for record in scope_logs.log_records:
                    trace_id = record.trace_id
                    key = trace_id.hex() if trace_id and any(trace_id) else os.urandom(16).hex()
                    endpoint = ring.endpoint_for_key(routing_key(key))
                    if endpoint is None:
                        self.stats["no_backend"] += 1
                        continue
                    scope = scopes.get((endpoint, r, s))
                    if scope is None:
                        out = parts.setdefault(endpoint, logs_service_pb2.ExportLogsServiceRequest())
                        target = out.resource_logs.add()
                        target.resource.CopyFrom(resource_logs.resource)
                        scope = scopes[(endpoint, r, s)] = target.scope_logs.add()
                        scope.scope.CopyFrom(scope_logs.scope)
                    scope.log_records.add().CopyFrom(record)
        return {endpoint: part.SerializeToString() for endpoint, part in parts.items()}

    def accept(self, body: bytes) -> None:
        request = logs_service_pb2.ExportLogsServiceRequest()
        request.ParseFromString(body)
        parts = self.route(request)
        with self.lock:
            self._requests += 1
            replay = self.duplicate_every and self._requests % self.duplicate_every == 0
        for _ in range(2 if replay else 1):
            for endpoint, payload in parts.items():
                self.queue.put((endpoint, payload))
        if replay:
            self.stats["replayed_fanouts"] += 1

    # -- delivery ------------------------------------------------------------------------
    def _stub(self, endpoint: str) -> logs_service_pb2_grpc.LogsServiceStub:
        with self.lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = self._channels[endpoint] = grpc.insecure_channel(endpoint)
        return logs_service_pb2_grpc.LogsServiceStub(channel)

    def _consume(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            endpoint, payload = item
            with self.lock:
                delay = self.random.uniform(0, self.max_delay)
            time.sleep(delay)  # the consumers' own pace: unordered delivery, not a synchronisation
            self._deliver(endpoint, payload)

    def _deliver(self, endpoint: str, payload: bytes) -> None:
        request = logs_service_pb2.ExportLogsServiceRequest()
        request.ParseFromString(payload)
        records = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
        for attempt in range(RETRIES):
            with self.lock:
                if self.lose_next:
                    self.lose_next -= 1
                    self.stats["lost_batches"] += 1
                    return
                if endpoint not in self.ring.endpoints:
                    self.stats["lost_batches"] += 1  # queued for a backend that left
                    return
            try:
                self._stub(endpoint).Export(request, timeout=2.0)
            except grpc.RpcError:
                self.stats["retries"] += 1
                time.sleep(0.05 * 2 ** attempt)  # the exporter's retry backoff
                continue
            with self.lock:
                self.stats["batches"] += 1
                self.delivered[endpoint] += records
            return
        with self.lock:
            self.stats["lost_batches"] += 1

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for _ in range(CONSUMERS):
            self.queue.put(None)
        for t in self._threads:
            t.join(timeout=5)
        for channel in self._channels.values():
            channel.close()

