"""A timestamping OTLP/HTTP pass-through, for benchmarks that need to know when an
agent's export reached the collector and when the collector had taken it in.

    python -m benchmarks.otlp_tap --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT --out FILE

Every connection an agent opens gets its own kept-alive connection upstream. Per
request the tap notes (wall clock, ``time.time()``): when its first byte arrived,
when the whole request had arrived, and when the collector's whole answer was back
(the collector's OTLP handler decodes and applies a request before it answers, so
that is "applied" seen from outside). It forwards request and answer unchanged,
parsing no more than the head's content-length. Bodies of /v1/logs requests are kept
in memory and decoded only at exit (SIGTERM): one JSON line per request (with the
body, base64, so a benchmark can replay it), then one per cascade snapshot in it
(trace id, hop, seq, active, at, passive_since, and the log record's time, which the
reporter stamps as it encodes); of /v1/traces requests, one line per span (name,
start, end), for looking at what an agent did between two ground-truth events.

What it costs: one more loopback hop and one more process on the cores the run
shares, so end-to-end figures taken through the tap are a little later than
without it; benchmarks run both ways and say so.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import time
from typing import Any

HEAD_END = b"\r\n\r\n"


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes, float] | None:
    """One HTTP/1.1 message with a content-length body: (head, body, when its first byte came)."""
    try:
        first = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        return None
    began = time.time()
    head = first + await reader.readuntil(HEAD_END)
    length = _content_length(head)
    body = await reader.readexactly(length) if length else b""
    return head, body, began


class Tap:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.requests: list[dict[str, Any]] = []
        self.bodies: list[bytes | None] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            while (request := await _read_message(reader)) is not None:
                head, body, began = request
                arrived = time.time()
                up_writer.write(head + body)
                answer = await _read_message(up_reader)
                if answer is None:
                    break
                answered = time.time()
                writer.write(answer[0] + answer[1])
                path = head.split(b" ", 2)[1].decode("latin-1")
                self.requests.append({"path": path, "began": began, "arrived": arrived, "answered": answered,
                                      "bytes": len(body), "status": answer[0].split(b" ", 2)[1].decode()})
                self.bodies.append(body if path.endswith(("/v1/logs", "/v1/traces")) else None)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()

    def dump(self, out: str) -> None:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        with open(out, "w", encoding="utf-8") as f:
            for n, (req, body) in enumerate(zip(self.requests, self.bodies)):
                if req["path"].endswith("/v1/traces"):
                    f.write(json.dumps({"kind": "request", "n": n, **req}) + "\n")
                    self._spans(f, n, body or b"")
                    continue
                raw = base64.b64encode(body).decode() if body else None
                f.write(json.dumps({"kind": "request", "n": n, **req, "body": raw}) + "\n")
                if not body:
                    continue
                message = ExportLogsServiceRequest.FromString(body)
                for rl in message.resource_logs:
                    service = next((a.value.string_value for a in rl.resource.attributes
                                    if a.key == "service.name"), None)
                    for sl in rl.scope_logs:
                        for record in sl.log_records:
                            if not record.trace_id:
                                continue
                            snap = json.loads(record.body.string_value)
                            f.write(json.dumps({
                                "kind": "snapshot", "n": n, "trace_id": record.trace_id.hex(), "hop": service,
                                "incarnation": snap.get("incarnation"), "seq": snap.get("seq"),
                                "active": snap.get("active"), "at": snap.get("at"),
                                "passive_since": snap.get("passive_since"),
                                "encoded": record.time_unix_nano / 1e9,
                            }) + "\n")


    @staticmethod
    def _spans(f: Any, n: int, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), None)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    f.write(json.dumps({"kind": "span", "n": n, "trace_id": span.trace_id.hex(), "hop": service,
                                        "name": span.name, "start": span.start_time_unix_nano / 1e9,
                                        "end": span.end_time_unix_nano / 1e9}) + "\n")


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(listen: tuple[str, int], tap: Tap, ready: str | None) -> None:
    server = await asyncio.start_server(tap.handle, *listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready:
        print(ready, flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True, help="HOST:PORT agents export to")
    p.add_argument("--upstream", required=True, help="HOST:PORT of the collector's OTLP/HTTP listener")
    p.add_argument("--out", required=True, help="JSON lines written here at exit")
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - the collector extra brings it
        pass
    tap = Tap(_hostport(args.upstream))
    asyncio.run(serve(_hostport(args.listen), tap, ready="tap ready"))
    tap.dump(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
