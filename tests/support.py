"""Helpers shared by the test modules (``from support import ...``).

* waiting: ``wait_until`` / ``wait_until_async`` poll a condition with a
  deadline (each module binds its own deadline, interval and failure message);
* the live mesh: ``relay_mesh`` (collector, webhook, A -> B -> {C, U}), and
  ``send_nonblocking`` / ``cancel`` root requests into a known cascade;
* in-process agents: ``serve`` (a uvicorn server on 127.0.0.1) and
  ``Telemetry`` / ``instrumented`` (in-memory tracer and meter providers);
* Prometheus text: ``parse_metrics`` and ``metric`` (the one parser).

Helpers the benchmarks need as well (``read_events``, ``start_plan``,
``call_context``...) live in ``a2a_quiescence.demo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, NoReturn

import httpx
import pytest
import uvicorn
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from a2a_quiescence.demo.harness import Mesh
from a2a_quiescence.demo.mesh import call_context, send_plan
from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor

# --- waiting for a condition ---------------------------------------------------------
# failure messages (str.format fields: what, timeout, last)
GAVE_UP = "gave up waiting for {what} after {timeout}s"
TIMED_OUT = "timed out waiting for {what}"
TIMED_OUT_LAST = "timed out waiting for {what} (last: {last!r})"
TIMED_OUT_AFTER_LAST = "timed out after {timeout}s waiting for {what} (last: {last!r})"


def raise_assertion(message: str) -> NoReturn:
    """A ``fail`` for ``wait_until`` that raises AssertionError (pytest.fail raises Failed)."""
    raise AssertionError(message)


class _Polling:
    """The polling loop of ``wait_until`` and ``wait_until_async``, without the sleeping."""

    def __init__(self, check: Callable[[], Any], what: str, timeout: float, every: float,
                 message: str, fail: Callable[[str], NoReturn], final_check: bool) -> None:
        self.check, self.what, self.timeout, self.every = check, what, timeout, every
        self.message, self.fail, self.final_check = message, fail, final_check
        self.value: Any = None

    def pauses(self) -> Iterator[float]:
        """Yields the pause before each further try; ends with ``value`` set to the first truthy
        ``check()``, or calls ``fail`` once the deadline has passed.

        ``final_check`` True: check first and fail only when the deadline has passed after a check
        (so there is always one check after the deadline). False: check only while before the deadline.
        """
        end = time.monotonic() + self.timeout
        last: Any = None
        while self.final_check or time.monotonic() < end:
            last = self.check()
            if last:
                self.value = last
                return
            if self.final_check and time.monotonic() > end:
                break
            yield self.every
        self.fail(self.message.format(what=self.what, timeout=self.timeout, last=last))


def wait_until(check: Callable[[], Any], what: str, *, timeout: float, every: float, message: str = GAVE_UP,
               fail: Callable[[str], NoReturn] = pytest.fail, final_check: bool = True) -> Any:
    """Call ``check`` every ``every`` s until it returns something truthy (returned);
    ``fail(message)`` after ``timeout`` s. A deadline, not a timing assumption."""
    polling = _Polling(check, what, timeout, every, message, fail, final_check)
    for pause in polling.pauses():
        time.sleep(pause)
    return polling.value


async def wait_until_async(check: Callable[[], Any], what: str, *, timeout: float, every: float,
                           message: str = GAVE_UP, fail: Callable[[str], NoReturn] = pytest.fail,
                           final_check: bool = True) -> Any:
    """``wait_until`` for coroutines: the pauses are ``asyncio.sleep``."""
    polling = _Polling(check, what, timeout, every, message, fail, final_check)
    for pause in polling.pauses():
        await asyncio.sleep(pause)
    return polling.value


# --- ports ----------------------------------------------------------------------------
def port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now (the collector's defaults must be free)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --- Prometheus text -------------------------------------------------------------------
def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(text: str, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels (None when absent)."""
    return parse_metrics(text).get((name, tuple(sorted(labels.items()))))


def metric_by(text: str, name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` by the value of one label."""
    return {dict(labels).get(label, ""): v for (n, labels), v in parse_metrics(text).items() if n == name}


# --- root requests into a known cascade ------------------------------------------------
async def send_nonblocking(url: str, plan: dict[str, Any], trace_id: str) -> str:
    """A root request that returns at once; the task id of the new task."""
    task_id = await send_plan(url, plan, trace_id=trace_id, return_immediately=True)
    assert task_id, "no task in the non-blocking answer"
    return task_id


async def cancel(url: str, task_id: str, trace_id: str) -> pb.Task:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=False, httpx_client=http))
        return await client.cancel_task(pb.CancelTaskRequest(id=task_id), context=call_context(trace_id))


# --- the live mesh ---------------------------------------------------------------------
@contextlib.contextmanager
def relay_mesh(workdir: Path) -> Iterator[Mesh]:
    """Collector, push webhook and A -> B -> {C, U} as subprocesses, ground truth in
    ``workdir/events.jsonl``. U is not instrumented (a hop that never reports). Stopped by PID."""
    with Mesh(workdir, events=workdir / "events.jsonl") as m:
        m.start_collector()
        m.start_webhook()
        m.start_agent("C")
        m.start_agent("U", instrument=False)  # a hop that never reports
        m.start_agent("B", ["C", "U"])
        m.start_agent("A", ["B"])
        yield m


# --- agents in this process --------------------------------------------------------------
SERVER_START_DEADLINE = 20.0


@contextlib.asynccontextmanager
async def serve(app: Any, port: int, *, sockets: list[socket.socket] | None = None) -> AsyncIterator[uvicorn.Server]:
    """A uvicorn server for ``app`` on 127.0.0.1:``port`` (or on ``sockets``), running while inside."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=sockets))
    try:
        await wait_until_async(lambda: server.started or task.done(), "server start", timeout=SERVER_START_DEADLINE,
                               every=0.01, message=TIMED_OUT, fail=raise_assertion)
        if task.done():
            task.result()
        yield server
    finally:
        server.should_exit = True
        await task


class Telemetry:
    """In-memory spans and metrics: a tracer provider and a meter provider to instrument with."""

    def __init__(self, span_processor: Any = None, meter_provider: Any = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(span_processor or SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = meter_provider or MeterProvider(metric_readers=[self.reader])
        self.runtime: Any = None  # set by ``instrumented``

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def metric(self, name: str, **attrs: Any) -> float | None:
        """Sum of the data points of one instrument (optionally filtered by attributes)."""
        data = self.reader.get_metrics_data()
        total = None
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name != name:
                        continue
                    for dp in m.data.data_points:
                        if all(dp.attributes.get(k) == v for k, v in attrs.items()):
                            total = (total or 0) + dp.value
        return total


@contextlib.contextmanager
def instrumented(stall_seconds: float) -> Iterator[Telemetry]:
    """The instrumentation installed on fresh in-memory ``Telemetry`` (no reporting), removed on exit.
    The telemetry's ``runtime`` is the instrumentation's runtime."""
    tel = Telemetry()
    inst = A2AQuiescenceInstrumentor()
    inst.instrument(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider, report=False,
                    stall_seconds=stall_seconds)
    tel.runtime = inst.runtime
    try:
        yield tel
    finally:
        inst.uninstrument()
