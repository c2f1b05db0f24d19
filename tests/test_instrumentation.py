"""The instrumentation against real a2a-sdk agents served in-process.

Three agents (A -> B -> C) run as uvicorn servers on 127.0.0.1 inside the test
process. In-process all three share one instrumentor, one tracer provider and
one hop tracker, so spans are told apart by their parent/child links and
trace ids, not by service name (the subprocess test covers service names).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.util
import uuid
from functools import partial
from typing import Any, AsyncIterator, Awaitable

import httpx
import pytest
import uvicorn
from a2a.client import ClientConfig, create_client
from a2a.helpers.proto_helpers import get_message_text, new_text_message
from a2a.types import a2a_pb2 as pb
from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from a2a_quiescence import names
from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.demo.mesh import build_app, call_context, plan_text
from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor, lifecycle, runtime

from support import TIMED_OUT, Telemetry, instrumented, raise_assertion, serve, wait_until_async

DEADLINE = 20.0


# --- helpers -------------------------------------------------------------------
poll = partial(wait_until_async, timeout=DEADLINE, every=0.01, message=TIMED_OUT, fail=raise_assertion)  # (condition, what)


class Agents:
    """Agents A -> B -> C (or any chain) on 127.0.0.1, each with its handler."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.handlers: dict[str, Any] = {}
        self.servers: dict[str, uvicorn.Server] = {}


@contextlib.asynccontextmanager
async def chain(*agent_names: str, aclose_on_shutdown: bool = True) -> AsyncIterator[Agents]:
    agents = Agents()
    ports = {n: free_port() for n in agent_names}
    for n in agent_names:
        agents.urls[n] = f"http://127.0.0.1:{ports[n]}/"
    async with contextlib.AsyncExitStack() as stack:
        for i, n in enumerate(agent_names):
            peers = {m: agents.urls[m] for m in agent_names[i + 1 : i + 2]}
            app, handler, _executor = build_app(n, ports[n], peers, aclose_on_shutdown=aclose_on_shutdown)
            agents.handlers[n] = handler
            agents.servers[n] = await stack.enter_async_context(serve(app, ports[n]))
        yield agents


def relay_plan(*hops: str, last: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plan for the first agent of a chain that delegates along ``hops``."""
    plan: dict[str, Any] = dict(last or {})
    for hop in reversed(hops):
        plan = {"calls": [{"to": hop, "plan": plan}]}
    return plan


@contextlib.asynccontextmanager
async def a2a_client(url: str, streaming: bool = False) -> AsyncIterator[Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=streaming, httpx_client=http))
        yield client


async def send(client: Any, plan: dict[str, Any], *, trace_id: str | None = None, blocking: bool = True) -> list[Any]:
    request = pb.SendMessageRequest(
        message=new_text_message(plan_text(plan), role=pb.Role.ROLE_USER),
        configuration=pb.SendMessageConfiguration(return_immediately=not blocking),
    )
    return [e async for e in client.send_message(request, context=call_context(trace_id))]


def task_of(events: list[Any]) -> pb.Task:
    for event in reversed(events):
        if event.HasField("task"):
            return event.task
    raise AssertionError(f"no task in {events}")


@pytest.fixture
def otel() -> Any:
    with instrumented(stall_seconds=30) as tel:
        yield tel


def _server_spans(tel: Telemetry) -> list[ReadableSpan]:
    """Our SERVER spans (named by A2A method, per the conventions: tests/test_semconv.py)."""
    return [s for s in tel.spans() if s.kind == SpanKind.SERVER and s.instrumentation_scope.name == names.SCOPE]


# --- spans and trace continuity ---------------------------------------------------
async def test_cascade_is_one_trace_with_fixed_spans(otel: Telemetry) -> None:
    # this test proves propagation with no HTTP-level instrumentation active
    # (tests/test_coexistence.py covers the case where httpx and ASGI are instrumented)
    if importlib.util.find_spec("opentelemetry.instrumentation.httpx") is not None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    trace_id = uuid.uuid4().hex
    async with chain("A", "B", "C") as agents:
        async with a2a_client(agents.urls["A"]) as client:
            events = await send(client, relay_plan("B", "C"), trace_id=trace_id)
        assert task_of(events).status.state == pb.TaskState.TASK_STATE_COMPLETED
        await poll(lambda: len(otel.spans(names.SPAN_PRODUCER)) >= 3, "three producer spans")

    tid = int(trace_id, 16)
    servers = [s for s in _server_spans(otel) if s.name == names.METHOD_SEND_MESSAGE]
    assert len(servers) == 3  # A, B and C each received one request
    assert {s.context.trace_id for s in servers} == {tid}, "the cascade must be one trace across A, B, C"
    # each hop's server span continues the client span of the hop before it
    clients = {s.context.span_id: s for s in otel.spans() if s.kind == SpanKind.CLIENT and s.name in names.A2A_METHODS}
    remote_parents = [s for s in servers if s.parent is not None and s.parent.span_id in clients]
    assert len(remote_parents) == 2  # A's call to B, B's call to C
    # A continues the traceparent the outside caller sent (the caller's own header wins)
    assert all(s.parent is not None and s.parent.is_remote for s in servers)

    producers = otel.spans(names.SPAN_PRODUCER)
    assert len(producers) == 3
    server_ids = {s.context.span_id for s in servers}
    for p in producers:
        assert p.context.trace_id == tid
        assert p.parent is not None and p.parent.span_id in server_ids, "producer must be a child of its request"
        assert p.attributes[names.ATTR_TASK_ID]
        assert p.attributes[names.ATTR_CONVERSATION_ID]
        assert p.attributes[names.ATTR_OUTCOME] == names.OUTCOME_COMPLETED
    assert len({p.parent.span_id for p in producers}) == 3  # one per request, one per hop

    closes = otel.spans(names.SPAN_QUEUE_CLOSE)
    assert closes
    for c in closes:
        assert c.attributes[names.ATTR_QUEUE_ROLE] in (names.ROLE_AGENT, names.ROLE_SUBSCRIBERS)
        assert isinstance(c.attributes[names.ATTR_CLOSE_IMMEDIATE], bool)
        assert c.context.trace_id == tid
    roles = {(c.attributes[names.ATTR_QUEUE_ROLE], c.attributes[names.ATTR_CLOSE_IMMEDIATE]) for c in closes}
    assert (names.ROLE_SUBSCRIBERS, False) in roles  # the producer's finally (the #1101 close)
    task_ids = {p.attributes[names.ATTR_TASK_ID] for p in producers}
    assert {c.attributes[names.ATTR_TASK_ID] for c in closes} <= task_ids


async def test_outcomes_failed_and_cancelled_with_metrics(otel: Telemetry) -> None:
    async with chain("C") as agents, a2a_client(agents.urls["C"]) as client:
        failed = task_of(await send(client, {"outcome": "fail"}, blocking=False))
        await poll(lambda: otel.runtime.tracker.producers_finished[names.OUTCOME_FAILED] == 1, "failed producer")
        failed = await client.get_task(pb.GetTaskRequest(id=failed.id))
        assert failed.status.state == pb.TaskState.TASK_STATE_FAILED

        hanging = task_of(await send(client, {"outcome": "hang"}, blocking=False))
        # the producer is in flight while the plan hangs
        await poll(lambda: (otel.metric(names.OTEL_PRODUCERS_IN_FLIGHT) or 0) >= 1, "producers in flight >= 1")
        assert otel.runtime.tracker.producers_in_flight == 1
        cancelled = await client.cancel_task(pb.CancelTaskRequest(id=hanging.id))
        assert cancelled.status.state == pb.TaskState.TASK_STATE_CANCELED
        await poll(lambda: otel.metric(names.OTEL_PRODUCERS_IN_FLIGHT) == 0, "producers in flight back to 0")

        done = task_of(await send(client, {}))
        assert done.status.state == pb.TaskState.TASK_STATE_COMPLETED
        await poll(lambda: len(otel.spans(names.SPAN_PRODUCER)) >= 3, "three producer spans")

    outcome = {p.attributes[names.ATTR_TASK_ID]: p.attributes[names.ATTR_OUTCOME] for p in otel.spans(names.SPAN_PRODUCER)}
    assert outcome == {
        failed.id: names.OUTCOME_FAILED,
        hanging.id: names.OUTCOME_CANCELLED,
        done.id: names.OUTCOME_COMPLETED,
    }
    assert otel.metric(names.OTEL_PRODUCERS_STARTED) == 3
    for o in names.OUTCOMES:
        assert otel.metric(names.OTEL_PRODUCERS_FINISHED, **{names.ATTR_OUTCOME: o}) == 1, o
    assert otel.metric(names.OTEL_PRODUCERS_IN_FLIGHT) == 0
    tracker = otel.runtime.tracker
    assert tracker.producers_started == 3 and tracker.producers_in_flight == 0
    assert tracker.producers_finished == {o: 1 for o in names.OUTCOMES}


async def test_aclose_spans_nest(otel: Telemetry) -> None:
    async with chain("C") as agents:
        async with a2a_client(agents.urls["C"]) as client:
            hanging = task_of(await send(client, {"outcome": "hang"}, blocking=False))
            await poll(lambda: otel.runtime.tracker.producers_in_flight == 1, "hanging producer")
        await agents.handlers["C"].aclose()
        assert otel.runtime.tracker.producers_in_flight == 0
        assert otel.runtime.tracker.shutdown["leaked_producers"] == 0

    [handler] = [s for s in otel.spans(names.SPAN_HANDLER_ACLOSE)][:1]
    registry = [s for s in otel.spans(names.SPAN_REGISTRY_ACLOSE) if s.parent and s.parent.span_id == handler.context.span_id]
    assert len(registry) == 1
    tasks = [s for s in otel.spans(names.SPAN_TASK_ACLOSE) if s.parent and s.parent.span_id == registry[0].context.span_id]
    assert [t.attributes[names.ATTR_TASK_ID] for t in tasks] == [hanging.id]
    immediate = [
        c for c in otel.spans(names.SPAN_QUEUE_CLOSE)
        if c.parent and c.parent.span_id == tasks[0].context.span_id
    ]
    assert immediate and all(c.attributes[names.ATTR_CLOSE_IMMEDIATE] is True for c in immediate)
    [producer] = [p for p in otel.spans(names.SPAN_PRODUCER) if p.attributes[names.ATTR_TASK_ID] == hanging.id]
    assert producer.attributes[names.ATTR_OUTCOME] == names.OUTCOME_CANCELLED


async def test_finished_tasks_are_not_kept_alive(otel: Telemetry) -> None:
    """Our per-task bookkeeping must not keep ActiveTasks (and their queues) alive."""
    from a2a.server.agent_execution.active_task import ActiveTask

    async with chain("A", "B", "C") as agents, a2a_client(agents.urls["A"]) as client:
        for _ in range(3):
            await send(client, relay_plan("B", "C"))
    await poll(lambda: otel.runtime.tracker.producers_in_flight == 0, "producers finished")
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, ActiveTask)] == []
    assert len(lifecycle._QUEUE_ROLES) == 0
    assert len(lifecycle._TASK_STATE) == 0


# --- uninstrument ---------------------------------------------------------------------
_TARGETS = [
    ("a2a.server.agent_execution.active_task", "ActiveTask"),
    ("a2a.server.agent_execution.active_task_registry", "ActiveTaskRegistry"),
    ("a2a.server.request_handlers.default_request_handler_v2", "DefaultRequestHandlerV2"),
    ("a2a.server.request_handlers.default_request_handler", "LegacyRequestHandler"),
    ("a2a.server.request_handlers.default_request_handler", "DefaultRequestHandler"),
    ("a2a.server.events.event_queue_v2", "EventQueueSource"),
    ("a2a.client.transports.jsonrpc", "JsonRpcTransport"),
    ("a2a.client.transports.rest", "RestTransport"),
    ("a2a.client.transports.grpc", "GrpcTransport"),
    ("a2a.server.tasks.base_push_notification_sender", "BasePushNotificationSender"),
    ("a2a.server.tasks.task_manager", "TaskManager"),
    ("httpx", "AsyncClient"),
    ("uvicorn.server", "Server"),
]


def _classes() -> list[type]:
    out = []
    for module, owner in _TARGETS:
        try:
            cls = getattr(importlib.import_module(module), owner, None)
        except ImportError:
            continue
        if cls is not None and cls not in out:
            out.append(cls)
    return out


def _snapshot() -> dict[tuple[type, str], Any]:
    return {(cls, attr): value for cls in _classes() for attr, value in list(cls.__dict__.items())}


def test_uninstrument_restores_every_attribute_and_instrument_is_idempotent() -> None:
    before = _snapshot()
    tel = Telemetry()
    inst = A2AQuiescenceInstrumentor()
    inst.instrument(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider, report=False)
    try:
        patched = list(inst._patched)
        assert len(patched) >= 10
        after_first = _snapshot()
        changed = {k for k in before if after_first.get(k) is not before[k]}
        assert changed == set(patched), "exactly the listed attributes are patched"
        # instrumenting again changes nothing (no double wrapping)
        inst.instrument(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider, report=False)
        A2AQuiescenceInstrumentor().instrument(tracer_provider=tel.tracer_provider, report=False)
        after_second = _snapshot()
        assert after_second.keys() == after_first.keys()
        assert all(after_second[k] is after_first[k] for k in after_first)
        assert list(inst._patched) == patched
    finally:
        # a fresh handle on the (singleton) instrumentor must still undo everything
        A2AQuiescenceInstrumentor().uninstrument()
    restored = _snapshot()
    assert restored.keys() == before.keys()
    assert [k for k in before if restored[k] is not before[k]] == []
    assert runtime.current() is None


async def test_event_loop_hooks_restored_on_uninstrument() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []

    def factory(loop_: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task:
        return asyncio.Task(coro, loop=loop_, **kwargs)

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(context)

    old = (loop.get_task_factory(), loop.get_exception_handler())
    loop.set_task_factory(factory)
    loop.set_exception_handler(handler)
    try:
        tel = Telemetry()
        inst = A2AQuiescenceInstrumentor()
        inst.instrument(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider, report=False)
        try:
            async with chain("C") as agents, a2a_client(agents.urls["C"]) as client:
                await send(client, {})
            assert loop.get_task_factory() is not factory, "hooks installed by the first request"
            assert loop.get_exception_handler() is not handler
            # our hooks chain to the previous ones
            loop.call_exception_handler({"message": "probe"})
            assert [c["message"] for c in seen] == ["probe"]
        finally:
            inst.uninstrument()
        assert loop.get_task_factory() is factory
        assert loop.get_exception_handler() is handler
    finally:
        loop.set_task_factory(old[0])
        loop.set_exception_handler(old[1])


# --- fail-open -----------------------------------------------------------------------
class RaisingExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        raise RuntimeError("exporter is broken")

    def shutdown(self) -> None:
        pass


class RaisingProcessor(SimpleSpanProcessor):
    def __init__(self, where: str) -> None:
        super().__init__(InMemorySpanExporter())
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "start":
            raise RuntimeError("processor on_start is broken")

    def on_end(self, span: Any) -> None:
        raise RuntimeError("processor on_end is broken")


class _RaisingInstrument:
    def __getattr__(self, name: str) -> Any:
        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"instrument.{name} is broken")

        return broken


class RaisingMeter(otel_metrics.NoOpMeter):
    def create_counter(self, *args: Any, **kwargs: Any) -> Any:
        return _RaisingInstrument()

    create_up_down_counter = create_histogram = create_gauge = create_counter

    def create_observable_gauge(self, name: str, callbacks: Any = None, *args: Any, **kwargs: Any) -> Any:
        return _RaisingInstrument()


class RaisingMeterProvider(otel_metrics.NoOpMeterProvider):
    def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return RaisingMeter(name)


def _summary(events: list[Any]) -> list[Any]:
    """What a caller sees, without the per-run ids."""
    out = []
    for e in events:
        if e.HasField("task"):
            t = e.task
            texts = [get_message_text(t.status.message)] if t.status.HasField("message") else []
            out.append(("task", pb.TaskState.Name(t.status.state), texts, [a.name for a in t.artifacts]))
        elif e.HasField("message"):
            out.append(("message", get_message_text(e.message)))
        elif e.HasField("status_update"):
            out.append(("status", pb.TaskState.Name(e.status_update.status.state)))
        elif e.HasField("artifact_update"):
            out.append(("artifact", e.artifact_update.artifact.name))
        else:
            out.append(("other", e.WhichOneof("payload")))
    return out


async def _answer(call: Awaitable[list[Any]]) -> Any:
    try:
        return _summary(await call)
    except Exception as exc:  # noqa: BLE001 - the error is part of the answer
        return ("error", type(exc).__name__, str(exc))


async def _scenario() -> list[Any]:
    """Everything a caller can observe of a few conversations with a mesh."""
    out: list[Any] = []
    async with chain("A", "B", "C") as agents:
        async with a2a_client(agents.urls["A"]) as client:
            out.append(await _answer(send(client, relay_plan("B", "C"), trace_id=uuid.uuid4().hex)))
            out.append(await _answer(send(client, relay_plan("B", last={"outcome": "fail"}))))
            out.append(await _answer(send(client, {"outcome": "fail"})))
            hanging = task_of(await send(client, {"outcome": "hang"}, blocking=False))
            cancelled = await client.cancel_task(pb.CancelTaskRequest(id=hanging.id))
            out.append(pb.TaskState.Name(cancelled.status.state))
            got = await client.get_task(pb.GetTaskRequest(id=hanging.id))
            out.append(pb.TaskState.Name(got.status.state))
            try:
                await client.get_task(pb.GetTaskRequest(id="no-such-task"))
                out.append("no error")
            except Exception as exc:  # noqa: BLE001 - the error is part of the answer
                out.append(("error", type(exc).__name__, str(exc)))
        async with a2a_client(agents.urls["A"], streaming=True) as client:
            out.append(await _answer(send(client, {"stream_events": 3})))
            out.append(await _answer(send(client, relay_plan("B", "C"))))
            out.append(await _answer(send(client, {"outcome": "fail"})))
    return out


@pytest.mark.parametrize(
    "broken",
    ["exporter", "processor_on_end", "processor_on_start", "meter"],
)
async def test_fail_open_answers_identical_to_uninstrumented(broken: str) -> None:
    expected = await _scenario()

    if broken == "exporter":
        tel = Telemetry(span_processor=SimpleSpanProcessor(RaisingExporter()))
    elif broken == "processor_on_end":
        tel = Telemetry(span_processor=RaisingProcessor("end"))
    elif broken == "processor_on_start":
        tel = Telemetry(span_processor=RaisingProcessor("start"))
    else:
        tel = Telemetry(meter_provider=RaisingMeterProvider())
    inst = A2AQuiescenceInstrumentor()
    inst.instrument(tracer_provider=tel.tracer_provider, meter_provider=tel.meter_provider, report=False)
    try:
        assert inst.runtime is not None
        got = await _scenario()
        # the instrumentation's own bookkeeping survives the broken telemetry too
        tracker = inst.runtime.tracker
        assert tracker.producers_in_flight == 0
        assert sum(tracker.producers_finished.values()) == tracker.producers_started > 0
        assert {t: c.active for t, c in tracker.cascades.items() if c.active} == {}
    finally:
        inst.uninstrument()
    assert got == expected
    assert expected[0][-1][1] == "TASK_STATE_COMPLETED"  # the scenario really ran
