"""The `A2AQuiescenceInstrumentor` (entry point `a2a_quiescence`)."""

from __future__ import annotations

import atexit
import importlib
import logging
import os
from typing import Any, Collection

import wrapt
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.dependencies import DependencyConflict, get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap

from a2a_quiescence import __version__, names
from a2a_quiescence import environment_variables as env
from a2a_quiescence.instrumentation import lifecycle, semconv
from a2a_quiescence.instrumentation.backends import Hook, choose, generic_hooks, resolve_awaited
from a2a_quiescence.instrumentation.loop import forget_inherited_units, remove_loop_hooks
from a2a_quiescence.instrumentation.package import INSTRUMENTS_ANY
from a2a_quiescence.instrumentation.reporter import Reporter
from a2a_quiescence.instrumentation.runtime import Runtime, install, report_internal_error
from a2a_quiescence.instrumentation.tracker import HopTracker

logger = logging.getLogger(__name__)


def _after_fork_in_child() -> None:
    """Prefork servers (gunicorn, ``os.fork``) copy an instrumented process: the
    child is a new incarnation with its own reporter thread."""
    inst = A2AQuiescenceInstrumentor()  # the singleton (BaseInstrumentor's), or a fresh one never instrumented
    runtime = inst.runtime
    if runtime is None:
        return
    try:
        forget_inherited_units()
        runtime.after_fork()
        if inst.reporter is not None:
            inst.reporter.after_fork()
    except Exception as exc:  # noqa: BLE001 - fail-open: the child serves on without us
        report_internal_error("after fork", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

def _service_name(tracer_provider: Any) -> str:
    resource = getattr(tracer_provider, "resource", None)
    if resource is not None:
        name = resource.attributes.get("service.name")
        if name:
            return str(name)
    return env.OTEL_SERVICE_NAME.get()


class A2AQuiescenceInstrumentor(BaseInstrumentor):
    """Instruments a2a-sdk servers and clients for a2a-quiescence.

    ``instrument(**kwargs)`` accepts the usual ``tracer_provider`` and
    ``meter_provider``, plus ``stall_seconds`` (watchdog threshold, default 5,
    env ``A2A_QUIESCENCE_STALL_SECONDS``), ``report`` (False: keep snapshots in
    process, send nothing), ``endpoint`` (OTLP/HTTP logs URL for snapshots,
    default from ``A2A_QUIESCENCE_ENDPOINT`` or the OTLP variables) and
    ``flush_interval`` / ``heartbeat`` (seconds), and ``call_spans`` (False: make no A2A
    CLIENT/SERVER call spans, leaving them to another A2A instrumentation; default from
    ``A2A_QUIESCENCE_CALL_SPANS``, true). ``OTEL_SEMCONV_STABILITY_OPT_IN=a2a/dup`` adds
    the attribute names from before the A2A semantic conventions (see ``semconv``).
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
        """Any one of these (see ``package``); versions are the guard's to check."""
        return INSTRUMENTS_ANY

    def _check_dependency_conflicts(self) -> DependencyConflict | None:
        return get_dependency_conflicts((), INSTRUMENTS_ANY)

    # -- patching helpers -------------------------------------------------------
    def _wrap(self, hook: Hook, cls: type) -> None:
        if (cls, hook.attr) in self._patched:
            return  # one class under two names
        wrapt.wrap_function_wrapper(cls, hook.attr, hook.wrapper)
        self._patched.append((cls, hook.attr))

    def _patch(self, rt: Runtime) -> None:
        """The version guard's choice, patched: every hook of each chosen backend, or
        nothing of a library it refused (one warning line, and the hop says so)."""
        choice = choose()
        for refusal in choice.refused:
            logger.warning(refusal.line())
        for name in choice.untested:
            logger.warning("a2a-quiescence: %s is newer than every tested release; instrumenting it anyway (%s)",
                           name, env.ALLOW_UNTESTED.name)
        rt.tracker.set_unsupported([r.to_json() for r in choice.refused])
        rt.backends = [f"{backend.name} ({version})" for backend, version, _ in choice.chosen]
        if not choice.chosen:
            return
        for backend, _version, hooks in choice.chosen:
            for hook, cls in hooks:
                self._wrap(hook, cls)
            rt.awaited.update(resolve_awaited(backend))
        for hook in generic_hooks():
            try:
                cls = getattr(importlib.import_module(hook.module), hook.owner, None)
            except ImportError:
                continue
            if cls is not None and hook.attr in cls.__dict__:
                self._wrap(hook, cls)
        atexit.register(lifecycle.at_exit)

    def _instrument(self, **kwargs: Any) -> None:
        if env.disabled():  # OTEL_PYTHON_DISABLED_INSTRUMENTATIONS names us (or the deprecated switch)
            return
        # a2a-sdk's own tracing (about 60 spans of queue internals per hop and request)
        # is off unless asked for: read when a2a-sdk is first imported, so set before
        # anything here imports it. An explicit true is honoured.
        env.OTEL_INSTRUMENTATION_A2A_SDK_ENABLED.setdefault(env.OTEL_INSTRUMENTATION_A2A_SDK_ENABLED.default)
        tracer_provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        meter_provider = kwargs.get("meter_provider") or metrics.get_meter_provider()
        tracer = trace.get_tracer(names.SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(names.SCOPE, __version__, meter_provider=meter_provider)
        stall = kwargs.get("stall_seconds")
        if stall is None:
            stall = env.STALL_SECONDS.get()
        service = kwargs.get("service_name") or _service_name(tracer_provider)
        tracker = HopTracker()
        call_spans = kwargs.get("call_spans")
        if call_spans is None:
            call_spans = semconv.call_spans_enabled()
        rt = Runtime(tracer, meter, tracker, service, float(stall), call_spans=bool(call_spans),
                     semconv_dup=semconv.dup_mode())
        self.runtime = rt

        reporter = None
        endpoint = kwargs.get("endpoint")
        if kwargs.get("report", True) and (endpoint or env.ENDPOINT.raw()) != "none":
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
                        report_internal_error("force_flush", exc)

        rt.flush = flush
        install(rt)

        self._patch(rt)

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
