"""The `A2AQuiescenceInstrumentor` (entry point `a2a_quiescence`)."""

from __future__ import annotations

import atexit
import importlib
import logging
import os
from typing import Any, Collection

import wrapt
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap

from a2a_quiescence import __version__, names
from a2a_quiescence.instrumentation import client, lifecycle, server
from a2a_quiescence.instrumentation.loop import forget_inherited_units, remove_loop_hooks
from a2a_quiescence.instrumentation.package import _instruments
from a2a_quiescence.instrumentation.reporter import Reporter
from a2a_quiescence.instrumentation.runtime import Runtime, _report_internal_error, install
from a2a_quiescence.instrumentation.tracker import HopTracker

logger = logging.getLogger(__name__)


def _after_fork_in_child() -> None:
    """Prefork servers (gunicorn, ``os.fork``) copy an instrumented process: the
    child is a new incarnation with its own reporter thread."""
    inst = A2AQuiescenceInstrumentor._instance
    runtime = getattr(inst, "runtime", None) if inst is not None else None
    if runtime is None:
        return
    try:
        forget_inherited_units()
        runtime.tracker.after_fork()
        runtime.loops.clear()
        runtime.shutting_down = False
        if inst.reporter is not None:
            inst.reporter.after_fork()
    except Exception as exc:  # noqa: BLE001 - fail-open: the child serves on without us
        _report_internal_error("after fork", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_AT = "a2a.server.agent_execution.active_task"
_REG = "a2a.server.agent_execution.active_task_registry"
_V2 = "a2a.server.request_handlers.default_request_handler_v2"
_V1 = "a2a.server.request_handlers.default_request_handler"
_EQ = "a2a.server.events.event_queue_v2"
_PUSH = "a2a.server.tasks.base_push_notification_sender"
_TM = "a2a.server.tasks.task_manager"

_SERVER_CALLS = ("on_message_send", "on_cancel_task")
_SERVER_STREAMS = ("on_message_send_stream", "on_subscribe_to_task")
_CLIENT_CALLS = ("send_message", "cancel_task")
_CLIENT_STREAMS = ("send_message_streaming", "subscribe")
_TRANSPORTS = (
    ("a2a.client.transports.jsonrpc", "JsonRpcTransport"),
    ("a2a.client.transports.rest", "RestTransport"),
    ("a2a.client.transports.grpc", "GrpcTransport"),
)


def _service_name(tracer_provider: Any) -> str:
    resource = getattr(tracer_provider, "resource", None)
    if resource is not None:
        name = resource.attributes.get("service.name")
        if name:
            return str(name)
    return os.environ.get("OTEL_SERVICE_NAME") or "unknown_service"


class A2AQuiescenceInstrumentor(BaseInstrumentor):
    """Instruments a2a-sdk servers and clients for a2a-quiescence.

    ``instrument(**kwargs)`` accepts the usual ``tracer_provider`` and
    ``meter_provider``, plus ``stall_seconds`` (watchdog threshold, default 5,
    env ``A2A_QUIESCENCE_STALL_SECONDS``), ``report`` (False: keep snapshots in
    process, send nothing), ``endpoint`` (OTLP/HTTP logs URL for snapshots,
    default from ``A2A_QUIESCENCE_ENDPOINT`` or the OTLP variables) and
    ``flush_interval`` / ``heartbeat`` (seconds).
    """

    def __init__(self) -> None:
        # BaseInstrumentor is a singleton: every A2AQuiescenceInstrumentor() call
        # returns the same object and runs __init__ again. Never forget what an
        # earlier instrument() patched, or uninstrument() could not undo it.
        if getattr(self, "_a2aq_initialised", False):
            return
        self._a2aq_initialised = True
        super().__init__()
        self._patched: list[tuple[Any, str]] = []
        self.runtime: Runtime | None = None
        self.reporter: Reporter | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    # -- patching helpers -------------------------------------------------------
    def _wrap(self, module: str, owner: str, attr: str, wrapper: Any) -> None:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            return
        cls = getattr(mod, owner, None)
        if cls is None or attr not in cls.__dict__:
            return  # not in this a2a-sdk version (e.g. aclose before 1.1.2)
        wrapt.wrap_function_wrapper(cls, attr, wrapper)
        self._patched.append((cls, attr))

    def _instrument(self, **kwargs: Any) -> None:
        if os.environ.get(names.ENV_DISABLED, "").lower() in ("1", "true", "yes"):
            return
        tracer_provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        meter_provider = kwargs.get("meter_provider") or metrics.get_meter_provider()
        tracer = trace.get_tracer(names.SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(names.SCOPE, __version__, meter_provider=meter_provider)
        stall = kwargs.get("stall_seconds")
        if stall is None:
            stall = float(os.environ.get(names.ENV_STALL_SECONDS, "5"))
        service = kwargs.get("service_name") or _service_name(tracer_provider)
        tracker = HopTracker()
        rt = Runtime(tracer, meter, tracker, service, float(stall))
        self.runtime = rt

        reporter = None
        endpoint = kwargs.get("endpoint")
        if kwargs.get("report", True) and (endpoint or os.environ.get(names.ENV_ENDPOINT)) != "none":
            try:
                reporter = Reporter(
                    tracker,
                    service,
                    endpoint=endpoint,
                    flush_interval=kwargs.get("flush_interval"),
                    heartbeat=kwargs.get("heartbeat"),
                )
                reporter.start()
            except Exception as exc:  # noqa: BLE001 - a bad setting must not stop the agent
                logger.error("a2a-quiescence: snapshots disabled: %s", exc)
                reporter = None
        self.reporter = reporter

        def flush() -> None:
            if reporter is not None:
                reporter.flush()
            for provider in (tracer_provider, meter_provider):
                force = getattr(provider, "force_flush", None)
                if force is not None:
                    try:
                        force(2000)
                    except Exception as exc:  # noqa: BLE001
                        _report_internal_error("force_flush", exc)

        rt.flush = flush
        install(rt)

        self._wrap(_AT, "ActiveTask", "__init__", lifecycle.active_task_init)
        self._wrap(_AT, "ActiveTask", "start", lifecycle.active_task_start)
        self._wrap(_AT, "ActiveTask", "cancel", lifecycle.active_task_cancel)
        self._wrap(_AT, "ActiveTask", "aclose", lifecycle.task_aclose)
        self._wrap(_REG, "ActiveTaskRegistry", "aclose", lifecycle.registry_aclose)
        self._wrap(_V2, "DefaultRequestHandlerV2", "aclose", lifecycle.handler_aclose)
        for module, owner in ((_V2, "DefaultRequestHandlerV2"), (_V1, "LegacyRequestHandler"), (_V1, "DefaultRequestHandler")):
            for method in _SERVER_CALLS:
                self._wrap(module, owner, method, server.server_call(method))
            for method in _SERVER_STREAMS:
                self._wrap(module, owner, method, server.server_stream(method))
        self._wrap(_EQ, "EventQueueSource", "close", lifecycle.queue_close)
        self._wrap(_TM, "TaskManager", "_save_task", lifecycle.task_saved)
        for owner in ("LegacyRequestHandler", "DefaultRequestHandler"):  # the name before 1.1
            self._wrap(_V1, owner, "_run_event_stream", lifecycle.legacy_run_event_stream)
        for module, owner in _TRANSPORTS:
            for method in _CLIENT_CALLS:
                self._wrap(module, owner, method, client.client_call(method))
            for method in _CLIENT_STREAMS:
                self._wrap(module, owner, method, client.client_stream(method))
        self._wrap(_PUSH, "BasePushNotificationSender", "_dispatch_notification", client.push_dispatch)
        self._wrap("httpx", "AsyncClient", "post", client.httpx_post)
        self._wrap("uvicorn.server", "Server", "shutdown", lifecycle.uvicorn_shutdown)
        atexit.register(lifecycle.at_exit)

    def _uninstrument(self, **kwargs: Any) -> None:
        atexit.unregister(lifecycle.at_exit)
        for cls, attr in reversed(self._patched):
            unwrap(cls, attr)
        self._patched.clear()
        rt = self.runtime
        if rt is not None:
            remove_loop_hooks(rt)
        install(None)
        if self.reporter is not None:
            self.reporter.stop(flush=True)
            self.reporter = None
        self.runtime = None
