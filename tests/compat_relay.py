"""What the relay scripts run inside other libraries' virtualenvs share
(tests/compat_smoke_03.py, tests/compat_smoke_fasta2a.py; tests/ is on their
sys.path): the instrumented process, three servers A, B and C on loopback, the
tracker's view of one cascade, and the report every one of them prints (with
every span as a ``semconv_check.record``, which the tests check against the A2A
semantic conventions)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, Awaitable, Callable

import uvicorn
import wrapt
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor
from semconv_check import record


class Captured(logging.Handler):
    """Every line our instrumentation logs (an internal error, a refusal)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class Relay:
    """This process instrumented (spans kept in memory, snapshots kept in process) and
    serving A -> B -> C, each built by ``build(name, url, downstream url, streaming)``."""

    def __init__(self, service: str) -> None:
        self.captured = Captured()
        logging.getLogger("a2a_quiescence").addHandler(self.captured)
        logging.getLogger("a2a_quiescence").setLevel(logging.DEBUG)
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.inst = A2AQuiescenceInstrumentor()
        self.inst.instrument(tracer_provider=provider, report=False, skip_dep_check=True)
        self.rt = self.inst.runtime
        self.urls = {name: f"http://127.0.0.1:{free_port()}" for name in "ABC"}
        self.servers: list[tuple[uvicorn.Server, asyncio.Task]] = []

    async def start(self, build: Callable[[str, str, str | None, bool], Any]) -> None:
        """C, then B (streaming to C), then A (calling B without streaming)."""
        for name, downstream, streaming in (("C", None, False), ("B", "C", True), ("A", "B", False)):
            app = build(name, self.urls[name], self.urls[downstream] if downstream else None, streaming)
            port = int(self.urls[name].rsplit(":", 1)[1])
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
            self.servers.append((server, asyncio.create_task(server.serve())))
        while not all(s.started for s, _ in self.servers):
            await asyncio.sleep(0.01)

    async def cascade(self, send: Callable[[], Awaitable[str]]) -> dict[str, Any]:
        """Run ``send`` (a root call from this process, returning the task's final state)
        and what the tracker saw of the cascade it started, once its work is done."""
        rt = self.rt
        before = set(rt.tracker.cascades)
        state = await send()
        (trace_id,) = {t for t in rt.tracker.cascades if t not in before}
        # the relay has answered; producers finish right after: wait for that, bounded
        for _ in range(500):
            if rt.tracker.producers_in_flight == 0 and rt.tracker.cascades[trace_id].active == 0:
                break
            await asyncio.sleep(0.01)
        c = rt.tracker.cascades[trace_id]
        return {
            "trace_id": trace_id,
            "state": state,
            "active": c.active,
            "sent": sum(t.count for t in c.sent.values()),
            "received": sum(t.count for t in c.received.values()),
            "roots": c.roots.count,
            "failed": c.failed,
            "lost": c.lost,
            "kinds": sorted({f["kind"] for f in (*c.failures, *c.losses)}),
        }

    async def stop(self) -> dict[str, Any]:
        """Stop the servers, uninstrument; what every relay reports."""
        for server, task in self.servers:
            server.should_exit = True
            await task
        spans = self.exporter.get_finished_spans()
        producers = [s for s in spans if s.name == "a2a.active_task.producer"]
        patched = list(self.inst._patched)
        self.inst.uninstrument()
        return {
            "spans": dict(Counter(s.name for s in spans)),
            # every span, for the A2A semantic conventions' checks (tests/semconv_check.py)
            "records": [record(s) for s in spans],
            "producer_traces": Counter(format(s.context.trace_id, "032x") for s in producers),
            "outcomes": dict(Counter(str(s.attributes.get("a2a.active_task.producer.outcome")) for s in producers)),
            "in_flight": self.rt.tracker.producers_in_flight,
            "patched": sorted(f"{cls.__name__}.{attr}" for cls, attr in patched),
            # uninstrument put every original back
            "still_wrapped": sorted(f"{cls.__name__}.{attr}" for cls, attr in patched
                                    if isinstance(cls.__dict__[attr], wrapt.ObjectProxy)),
            "backends": self.rt.backends,
            "unsupported": self.rt.tracker.unsupported,
            "log": self.captured.lines,
        }
