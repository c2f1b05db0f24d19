"""A small A2A mesh for the demo, the tests and the benchmarks.

Every agent runs the same ``PlanExecutor``: the request's text is a JSON
*plan* that says how long to work (``work_ms`` waiting, ``cpu_ms`` computing), which peers to delegate to (blocking or
not, streamed or not, with a push webhook or not) and how to end (finish,
fail by raising or by reporting it, hang until cancelled, ask for input, or be
slow). So one code path serves a plain
A -> B -> C relay, random fan-out for the chaos test, and the #1101 hang.

Agents record their own ground truth (JSON lines, one per event, with wall
clock times) when ``--events FILE`` is given, so tests can compare the
settlement signal with what really happened.

Run one agent:  python -m a2a_quiescence.demo.mesh --name B --port 8002 \
                    --peer C=http://127.0.0.1:8003
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import httpx
import uvicorn
from a2a.client import ClientConfig, create_client
from a2a.client.client import ClientCallContext
from a2a.helpers.proto_helpers import get_message_text, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler

try:  # a2a-sdk >= 1.1: the V1 handler kept under its own name
    from a2a.server.request_handlers.default_request_handler import LegacyRequestHandler
except ImportError:  # pragma: no cover - older releases have only the V1 handler
    LegacyRequestHandler = DefaultRequestHandler  # type: ignore[misc]
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import (
    BasePushNotificationSender,
    InMemoryPushNotificationConfigStore,
    InMemoryTaskStore,
    TaskUpdater,
)
from a2a.types import a2a_pb2 as pb
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger("a2a_quiescence.demo")


def plan_text(plan: dict[str, Any]) -> str:
    return json.dumps(plan, separators=(",", ":"))


class GroundTruth:
    """Append-only JSON-lines log of what an agent did (thread-safe)."""

    def __init__(self, path: str | None, agent: str) -> None:
        self.path = path
        self.agent = agent
        self._lock = threading.Lock()

    def record(self, event: str, trace_id: str | None = None, **fields: Any) -> None:
        if not self.path:
            return
        line = json.dumps({"t": time.time(), "agent": self.agent, "event": event, "trace_id": trace_id, **fields})
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _current_trace_id() -> str | None:
    """The cascade id as the instrumentation sees it (None when not instrumented)."""
    try:
        from a2a_quiescence.instrumentation.runtime import CASCADE

        return CASCADE.get()
    except Exception:  # noqa: BLE001
        return None


def _spin(cpu_seconds: float) -> None:
    """Burn this much CPU on the event loop, as an agent's own processing (parsing, building a prompt) does."""
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


class PlanExecutor(AgentExecutor):
    """Executes the JSON plan carried in the request text."""

    def __init__(self, name: str, peers: dict[str, str], truth: GroundTruth, webhook: str | None) -> None:
        self.name = name
        self.peers = peers
        self.truth = truth
        self.webhook = webhook
        self._clients: dict[tuple[str, bool], Any] = {}
        self._httpx = httpx.AsyncClient(timeout=30.0)

    async def _client(self, peer: str, streaming: bool) -> Any:
        key = (peer, streaming)
        if key not in self._clients:
            url = self.peers[peer]
            self._clients[key] = await create_client(
                url, client_config=ClientConfig(streaming=streaming, httpx_client=self._httpx)
            )
        return self._clients[key]

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = get_message_text(context.message) if context.message else "{}"
        try:
            plan = json.loads(text or "{}")
        except json.JSONDecodeError:
            plan = {"reply": text}
        trace_id = _current_trace_id()
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        self.truth.record("work_start", trace_id, task_id=context.task_id)
        try:
            if context.current_task is None:
                await event_queue.enqueue_event(
                    pb.Task(
                        id=context.task_id,
                        context_id=context.context_id,
                        status=pb.TaskStatus(state=pb.TaskState.TASK_STATE_SUBMITTED),
                        history=[context.message] if context.message else [],
                    )
                )
            await updater.start_work()
            if plan.get("work_ms"):
                await asyncio.sleep(plan["work_ms"] / 1000.0)
            if plan.get("cpu_ms"):
                _spin(plan["cpu_ms"] / 1000.0)
            calls = [self._call(c, trace_id) for c in plan.get("calls", [])]
            if plan.get("parallel", True):
                await asyncio.gather(*calls)
            else:
                for call in calls:
                    await call
            outcome = plan.get("outcome", "finish")
            if outcome in ("input", "auth"):
                # a multi-turn task: park it until the user's next message (whose plan then runs)
                ask = updater.requires_input if outcome == "input" else updater.requires_auth
                await ask(updater.new_agent_message([pb.Part(text=f"{self.name} needs more from you")]))
                return
            if outcome in ("failed", "rejected"):
                # the agent reports the failure itself (no exception)
                end = updater.failed if outcome == "failed" else updater.reject
                await end(updater.new_agent_message([pb.Part(text=f"{self.name}: {outcome} by plan")]))
                return
            if outcome == "hang":
                self.truth.record("hang", trace_id, task_id=context.task_id)
                await asyncio.Event().wait()
            if outcome == "fail":
                raise RuntimeError(f"{self.name}: planned failure")
            if plan.get("stream_events"):
                for i in range(int(plan["stream_events"])):
                    await updater.add_artifact([pb.Part(text=f"{self.name} chunk {i}")], name=f"chunk-{i}")
                    if plan.get("event_gap_ms"):
                        await asyncio.sleep(plan["event_gap_ms"] / 1000.0)
            await updater.complete(updater.new_agent_message([pb.Part(text=f"{self.name} done")]))
        finally:
            self.truth.record("work_end", trace_id, task_id=context.task_id)

    async def _call(self, call: dict[str, Any], trace_id: str | None) -> None:
        peer = call["to"]
        streaming = bool(call.get("stream", False))
        config = pb.SendMessageConfiguration(return_immediately=not call.get("blocking", True))
        if call.get("push") and self.webhook:
            config.task_push_notification_config.CopyFrom(
                pb.TaskPushNotificationConfig(url=self.webhook, token=f"{self.name}->{peer}")
            )
        request = pb.SendMessageRequest(
            message=new_text_message(plan_text(call.get("plan", {})), role=pb.Role.ROLE_USER),
            configuration=config,
        )
        self.truth.record("call_start", trace_id, to=peer)
        try:
            # inside the try: a peer that cannot be reached (agent card fetch fails) is a failed delegation too
            client = await self._client(peer, streaming)
            async for _event in client.send_message(request):
                pass
        except Exception as exc:  # noqa: BLE001 - a failed delegation is part of the plan space
            self.truth.record("call_error", trace_id, to=peer, error=repr(exc))
        finally:
            self.truth.record("call_end", trace_id, to=peer)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel()

    async def aclose(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        await self._httpx.aclose()


def agent_card(name: str, url: str) -> pb.AgentCard:
    return pb.AgentCard(
        name=name,
        description=f"a2a-quiescence demo agent {name}",
        version="1.0",
        supported_interfaces=[pb.AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=pb.AgentCapabilities(streaming=True, push_notifications=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[pb.AgentSkill(id="plan", name="plan", description="runs a JSON plan", tags=["demo"])],
    )


def build_app(
    name: str,
    port: int,
    peers: dict[str, str],
    *,
    events: str | None = None,
    webhook: str | None = None,
    aclose_on_shutdown: bool = True,
    public_url: str | None = None,
    legacy: bool = False,
) -> tuple[Starlette, Any, PlanExecutor]:
    """A Starlette app serving one plan agent over JSON-RPC (``legacy``: on the V1
    request handler instead of a2a-sdk's default V2 one)."""
    url = public_url or f"http://127.0.0.1:{port}/"
    truth = GroundTruth(events, name)
    executor = PlanExecutor(name, peers, truth, webhook)
    push_http = httpx.AsyncClient(timeout=10.0)
    push_store = InMemoryPushNotificationConfigStore()
    handler = (LegacyRequestHandler if legacy else DefaultRequestHandler)(
        agent_executor=executor,
        task_store=InMemoryTaskStore(),
        agent_card=agent_card(name, url),
        push_config_store=push_store,
        push_sender=BasePushNotificationSender(push_http, push_store),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):  # type: ignore[no-untyped-def]
        truth.record("up", None, pid=os.getpid())
        yield
        if aclose_on_shutdown and hasattr(handler, "aclose"):  # a2a-sdk >= 1.1.2
            await handler.aclose()
        await executor.aclose()
        await push_http.aclose()

    routes = create_agent_card_routes(agent_card(name, url)) + create_jsonrpc_routes(handler, rpc_url="/")
    app = Starlette(routes=routes, lifespan=lifespan)
    return app, handler, executor


def webhook_app(events: str | None) -> Starlette:
    """A push-notification receiver that records every delivery."""
    truth = GroundTruth(events, "webhook")
    received: list[dict[str, Any]] = []

    async def receive(request: Request) -> JSONResponse:
        body = await request.json()
        item = {"token": request.headers.get("x-a2a-notification-token"), "traceparent": request.headers.get("traceparent")}
        received.append(item)
        trace_id = (item["traceparent"] or "--").split("-")[1] if item["traceparent"] else None
        truth.record("push_received", trace_id, token=item["token"], kind=next(iter(body), None))
        return JSONResponse({"ok": True})

    async def listing(_request: Request) -> JSONResponse:
        return JSONResponse(received)

    return Starlette(routes=[Route("/push", receive, methods=["POST"]), Route("/push", listing, methods=["GET"])])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one a2a-quiescence demo agent (or the push webhook).")
    parser.add_argument("--name", required=True, help="agent name (use OTEL_SERVICE_NAME for the hop name)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--public-url", help="URL the agent card advertises (default http://127.0.0.1:PORT/)")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=URL", help="a peer this agent may call")
    parser.add_argument("--webhook", help="push-notification URL given to the peers this agent calls")
    parser.add_argument("--events", help="append ground-truth events (JSON lines) to this file")
    parser.add_argument("--no-aclose", action="store_true", help="do not call aclose() at shutdown (leaks producers)")
    parser.add_argument("--legacy-handler", action="store_true", help="serve with the V1 (legacy) request handler")
    parser.add_argument("--send-buffer", type=int, metavar="BYTES",
                        help="socket send buffer of the listening socket (small values make the #1101 hang "
                             "reproducible: a stream subscriber that stops reading soon blocks the server's writer)")
    parser.add_argument("--role", choices=["agent", "webhook"], default="agent")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.role == "webhook":
        app = webhook_app(args.events)
    else:
        peers = dict(p.split("=", 1) for p in args.peer)
        app, _handler, _executor = build_app(
            args.name, args.port, peers, events=args.events, webhook=args.webhook,
            aclose_on_shutdown=not args.no_aclose, public_url=args.public_url, legacy=args.legacy_handler,
        )
    # a client holding a blocking call open must not keep the lifespan shutdown (aclose) from running
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=5)
    if args.send_buffer:
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.send_buffer)  # inherited by accepted sockets
        sock.bind((args.host, args.port))
        uvicorn.Server(config).run(sockets=[sock])
    else:
        uvicorn.Server(config).run()


def new_trace_id() -> str:
    return uuid.uuid4().hex


def traceparent(trace_id: str) -> str:
    """A W3C traceparent that starts a cascade with a known id (for uninstrumented callers)."""
    return f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"


def call_context(trace_id: str | None) -> ClientCallContext:
    """The call context of an outside request into cascade ``trace_id`` (its traceparent; none without an id)."""
    headers = {"traceparent": traceparent(trace_id)} if trace_id else {}
    return ClientCallContext(service_parameters=headers)


async def start_plan(client: Any, plan: dict[str, Any], *, trace_id: str | None = None) -> str | None:
    """Send a plan on an open client without waiting for it (``return_immediately``).

    Returns the id of the task the agent created (None when no task was in the answer)."""
    request = pb.SendMessageRequest(
        message=new_text_message(plan_text(plan), role=pb.Role.ROLE_USER),
        configuration=pb.SendMessageConfiguration(return_immediately=True),
    )
    task_id = None
    async for event in client.send_message(request, context=call_context(trace_id)):
        item = event[0] if isinstance(event, tuple) else event
        if isinstance(item, pb.StreamResponse) and item.HasField("task"):
            task_id = item.task.id
        elif isinstance(item, pb.Task):
            task_id = item.id
    return task_id


# Enough streamed events to fill small socket buffers, fewer than the subscriber sink's 1024 limit.
HANG_PLAN = {"stream_events": 900}
SMALL_BUFFER = 4096  # bytes: the client's receive buffer, and the agent's --send-buffer


@contextlib.asynccontextmanager
async def small_buffer_stream(url: str, plan: dict[str, Any], *, trace_id: str | None = None) -> Any:
    """A streaming ``send_message`` over a connection with a small receive buffer; yields the
    client's event iterator, closed on exit.

    Reading one event and then nothing more (while inside) abandons the stream subscriber:
    against an agent with a small ``--send-buffer`` and ``HANG_PLAN``, the agent's SSE writer
    blocks, and its producer parks in ``close(immediate=False)`` -- a2a-sdk #1101."""
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)])
    async with httpx.AsyncClient(timeout=60, transport=transport) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=True, httpx_client=http))
        request = pb.SendMessageRequest(message=new_text_message(plan_text(plan), role=pb.Role.ROLE_USER))
        events = client.send_message(request, context=call_context(trace_id))
        try:
            yield events
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()


async def send_plan(
    url: str,
    plan: dict[str, Any],
    *,
    trace_id: str | None = None,
    streaming: bool = False,
    timeout: float = 30.0,
    return_immediately: bool = False,
    task: pb.Task | None = None,
) -> Any:
    """Send a plan to an agent as an outside client; returns the responses.

    With ``return_immediately`` the request returns once the task is submitted
    (see ``start_plan``) and the new task's id (or None) is returned instead.
    With ``task`` the message continues that task (a follow-up turn)."""
    async with httpx.AsyncClient(timeout=timeout) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=streaming, httpx_client=http))
        if return_immediately:
            return await start_plan(client, plan, trace_id=trace_id)
        request = pb.SendMessageRequest(message=new_text_message(plan_text(plan), role=pb.Role.ROLE_USER))
        if task is not None:
            request.message.task_id = task.id
            request.message.context_id = task.context_id
        out = []
        async for event in client.send_message(request, context=call_context(trace_id)):
            out.append(event)
        return out


if __name__ == "__main__":
    main()
