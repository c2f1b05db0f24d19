"""What the demo saw: every cascade and agent process, and the alerts that arrived;
printed as tables at the end, and written as JSON with --summary-json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from a2a_quiescence import names
from a2a_quiescence.wait import describe_endings


@dataclass
class Cascade:
    trace_id: str
    kind: str
    status: str = "open"  # open | awaiting_input | stuck | settled
    outcome: str | None = None  # once settled: completed | failed | lost
    detection_latency_seconds: float | None = None
    answered_ms: float | None = None
    settled_ms: float | None = None
    held_by: str = ""
    losses: list[dict[str, Any]] = field(default_factory=list)  # as the settlement API lists them
    failures: list[dict[str, Any]] = field(default_factory=list)
    # seconds it was seen waiting for its user's input (status awaiting_input), never stuck
    awaiting_input_seconds: float | None = None

    def endings(self) -> str:
        return describe_endings({"losses": self.losses, "failures": self.failures})


@dataclass
class Summary:
    """What the demo saw; printed as a table and written as JSON with --summary-json."""

    workdir: str
    monitoring: bool = False
    cascades: list[Cascade] = field(default_factory=list)
    hops: list[dict[str, Any]] = field(default_factory=list)  # one per agent process (incarnation)
    alerts: list[dict[str, str]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    completed: bool = False
    error: str | None = None


def print_summary(s: Summary) -> None:
    """The tables the demo ends with."""
    print("\nSummary")
    print(f"  {'hop':<5}{'at shutdown':<12}{'producers in flight':>21}{'leaked at shutdown':>20}"
          f"{'cancelled at shutdown':>23}  state")
    for h in s.hops:
        drain = {True: "aclose()", False: "no drain"}.get(h["aclose"], "-")
        leaked, cancelled = ("-" if v is None else v for v in (h["shutdown_leaked_producers"],
                                                               h["shutdown_cancelled_producers"]))
        print(f"  {h['agent']:<5}{drain:<12}{h['producers_in_flight']:>21}{leaked:>20}{cancelled:>23}"
              f"  {h['state']}")
    print(f"\n  {'cascade':<14}{'what':<31}{'status':<9}{'outcome':<11}{'detection latency':>18}")
    for c in s.cascades:
        latency = "-" if c.detection_latency_seconds is None else f"{c.detection_latency_seconds * 1000:.1f} ms"
        print(f"  {c.trace_id[:12] + '…':<14}{c.kind:<31}{c.status:<9}{c.outcome or '-':<11}{latency:>18}")
    for c in s.cascades:
        if c.awaiting_input_seconds is not None:
            print(f"  {c.trace_id[:12]}… was awaiting_input for {c.awaiting_input_seconds:.1f} s, never stuck, "
                  "until its user answered")
        if c.status != "settled":
            print(f"  {c.trace_id[:12]}… is held by: {c.held_by.split('; ', 1)[-1]}")
        elif c.outcome != names.VERDICT_COMPLETED:
            print(f"  {c.trace_id[:12]}… {c.endings() or c.outcome}")
    if s.monitoring:
        seen = sorted({f"{a['alertname']}{'(' + a['agent'] + ')' if a['agent'] else ''}" for a in s.alerts})
        print(f"\n  alerts that reached Alertmanager's receiver: {', '.join(seen) or 'none'}")
    else:
        print("\n  alerts: not run (Prometheus/Alertmanager not installed)")
