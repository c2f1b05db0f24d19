"""OpenTelemetry instrumentation of a2a-sdk agents, found by `opentelemetry-instrument`.

    opentelemetry-instrument python my_agent.py

A2A CLIENT and SERVER call spans per the OpenTelemetry semantic conventions for
A2A (``semconv``; can be left to another A2A instrumentation); spans around
ActiveTask producers, event-queue closes and the ``aclose`` teardown; producer
metrics; a stall watchdog for the #1101 hang; detection of
"Task was destroyed but it is pending!"; the shutdown record (leaked
producers); W3C trace-context propagation across hops; and per-cascade
snapshots of work and messages that the sidecar's settlement detector needs.
"""

from a2a_quiescence.instrumentation.instrumentor import A2AQuiescenceInstrumentor

__all__ = ["A2AQuiescenceInstrumentor"]
