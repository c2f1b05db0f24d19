"""What the API says about one cascade (``/v1/cascades/{trace_id}``, and each cascade
listed by ``/v1/mesh`` and ``/v1/mesh/wait``), built from the detector's queries:
the store decides, this module only words the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from a2a_quiescence import names
from a2a_quiescence.collector.rule import verdict
from a2a_quiescence.wire import CascadeSnapshot

if TYPE_CHECKING:
    from a2a_quiescence.collector.settlement import Cascade, Detector


def cascade_view(detector: Detector, trace_id: str, now: float | None = None) -> dict[str, Any]:
    """The JSON describing ``trace_id`` as ``detector`` holds it (``now``: its clock's
    time unless given): held, forgotten once settled, or unknown."""
    now = detector.clock() if now is None else now
    cascade = detector.get(trace_id)
    if cascade is None:
        forgotten = detector.forgotten(trace_id)
        if forgotten is not None:
            return {"trace_id": trace_id, "status": names.STATUS_SETTLED, "forgotten": True,
                    "outcome": forgotten.outcome}
        return {"trace_id": trace_id, "status": names.STATUS_UNKNOWN, "holders": []}
    return _held(cascade, detector.status(cascade, now), now)


def _held(cascade: Cascade, status: str, now: float) -> dict[str, Any]:
    snaps = sorted(cascade.view.values(), key=lambda s: (s.hop, s.incarnation))
    ended = verdict(snaps)
    return {
        "trace_id": cascade.trace_id,
        "status": status,
        # a shard of a mesh tier: the shard the ring gives this cascade to now (None: this one)
        "owner": cascade.owner,
        "settled": cascade.settled,
        # final once settled; None while open (the losses and failures so far are listed)
        "outcome": cascade.outcome,
        "losses": ended["losses"],
        "failures": ended["failures"],
        "lost": ended["lost"],
        "failed": ended["failed"],
        "awaiting": cascade.awaiting or [],
        # messages per edge as each side reported them (a destination no hop claims stays an address)
        "edges": _edges(snaps),
        "settled_at": cascade.settled_at,
        "roots_received": cascade.roots_in_view(),
        "settled_roots": cascade.settled_roots if cascade.settled else 0,
        # root requests seen after the settle whose wave has not settled yet
        "pending_roots": max(0, cascade.roots_in_view() - cascade.settled_roots) if cascade.settled else 0,
        "detection_latency_seconds": cascade.detection_latency,
        "activity_after_settle": cascade.activity_after_settle,
        "first_seen": cascade.first_seen,
        "started_at": cascade.started(),
        "last_progress": cascade.last_progress,
        "seconds_without_progress": round(now - cascade.last_progress, 3),
        "holders": [] if cascade.settled else cascade.holders,
        "hops": [_hop(s) for s in snaps],
    }


def _edges(snaps: list[CascadeSnapshot]) -> list[dict[str, Any]]:
    hop_of = {alias: s.hop for s in snaps for alias in s.aliases}
    edges: dict[tuple[str, str], list[int]] = {}
    for s in snaps:
        for dest, tally in s.sent.items():
            edges.setdefault((s.hop, hop_of.get(dest, dest)), [0, 0])[0] += tally.count
        for src, tally in s.received.items():
            edges.setdefault((src, s.hop), [0, 0])[1] += tally.count
    return [{"from": a, "to": b, "sent": n[0], "received": n[1]} for (a, b), n in sorted(edges.items())]


def _hop(s: CascadeSnapshot) -> dict[str, Any]:
    return {
        "hop": s.hop,
        "incarnation": s.incarnation,
        "seq": s.seq,
        "active": s.active,
        "sent": s.sent_total().count,
        "received": sum(t.count for t in s.received.values()),
        "roots": s.roots.count,
        "awaiting_units": s.awaiting_units(),
        "failed": s.failed,
        "lost": s.lost,
    }
