"""The settlement rule, pure: what one cascade's view (the latest snapshot of every
hop incarnation) says, with no store, clock or ownership behind it.

- ``evaluate``: settled or not, and the holders keeping it open (docs/settlement.md);
- ``verdict``: how its work ended (completed, failed or lost);
- ``awaiting_input``: the tasks it waits on when only tasks parked for their user hold it.

``collector/settlement.py`` keeps the views and applies the rule to them.
"""

from __future__ import annotations

from typing import Any, Iterable

from a2a_quiescence import names
from a2a_quiescence.wire import EMPTY, CascadeSnapshot, Tally


def evaluate(snapshots: Iterable[CascadeSnapshot]) -> tuple[bool, list[dict[str, Any]]]:
    """Decide settlement for one cascade's current view.

    Returns ``(settled, holders)``; ``holders`` says what keeps it open.
    The view must hold at most one snapshot per incarnation.
    """
    snaps = list(snapshots)
    holders: list[dict[str, Any]] = []
    roots = EMPTY
    sent_by: dict[str, Tally] = {}
    received_from: dict[str, Tally] = {}
    reporting_hops: set[str] = set()
    for s in snaps:
        reporting_hops.add(s.hop)
        roots = roots.add(s.roots)
        if s.active > 0:
            holders.append(
                {
                    "kind": "active_hop",
                    "hop": s.hop,
                    "incarnation": s.incarnation,
                    "work": s.active,
                }
            )
        sent_by[s.hop] = sent_by.get(s.hop, EMPTY).add(s.sent_total())
        for src, tally in s.received.items():
            received_from[src] = received_from.get(src, EMPTY).add(tally)
    if roots.count == 0:
        holders.append({"kind": "root_not_reported"})
    for hop in sorted(set(sent_by) | set(received_from)):
        sent = sent_by.get(hop, EMPTY)
        got = received_from.get(hop, EMPTY)
        if sent != got:
            holders.extend(_edge_holders(hop, snaps, sent, got, hop in reporting_hops))
    return (not holders, holders)



def verdict(snapshots: Iterable[CascadeSnapshot]) -> dict[str, Any]:
    """How a cascade's work ended, from its view: ``outcome`` (lost when any unit
    was lost, failed when the agents reported a failure, else completed), and the
    listed ``losses`` and ``failures``, each naming its hop. Meaningful as the final
    verdict once the view is settled: every ending is recorded no later than the
    release of the unit it ended, so a settled view holds them all."""
    lost = failed = 0
    losses: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for s in sorted(snapshots, key=lambda s: (s.hop, s.incarnation)):
        lost += s.lost
        failed += s.failed
        losses.extend({"hop": s.hop, **item} for item in s.losses)
        failures.extend({"hop": s.hop, **item} for item in s.failures)
    outcome = names.VERDICT_LOST if lost else names.VERDICT_FAILED if failed else names.VERDICT_COMPLETED
    return {"outcome": outcome, "lost": lost, "failed": failed, "losses": losses, "failures": failures}



def awaiting_input(snapshots: Iterable[CascadeSnapshot], holders: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The tasks a cascade waits on when its only remaining work is tasks parked in
    input-required / auth-required (every holder a hop whose units are all held by
    such tasks; nothing in flight, the root reported); None otherwise."""
    if not holders:
        return None
    by_inc = {s.incarnation: s for s in snapshots}
    parked: list[dict[str, Any]] = []
    for h in holders:
        if h.get("kind") != "active_hop":
            return None
        s = by_inc[h["incarnation"]]
        if not s.awaiting or s.awaiting_units() < s.active:
            return None
        parked.extend({"hop": s.hop, "task_id": t, "state": state} for t, (state, _units) in sorted(s.awaiting.items()))
    return parked



def _edge_holders(
    sender: str, snaps: list[CascadeSnapshot], sent: Tally, got: Tally, sender_reported: bool
) -> list[dict[str, Any]]:
    """Name the edges out of ``sender`` whose messages are not all accounted for."""
    if not sender_reported:
        return [
            {
                "kind": "edge",
                "from": sender,
                "to": None,
                "in_flight": None,
                "detail": f"receipts from {sender!r}, which has not reported",
            }
        ]
    by_dest: dict[str, Tally] = {}
    for s in snaps:
        if s.hop == sender:
            for dest, tally in s.sent.items():
                by_dest[dest] = by_dest.get(dest, EMPTY).add(tally)
    out = []
    for dest, tally in sorted(by_dest.items()):
        receivers = sorted({s.hop for s in snaps if dest in s.aliases})
        got_there = EMPTY
        for s in snaps:
            if dest in s.aliases:
                got_there = got_there.add(s.received.get(sender, EMPTY))
        if receivers and got_there == tally:
            continue
        out.append(
            {
                "kind": "edge",
                "from": sender,
                "to": receivers[0] if len(receivers) == 1 else (receivers or None),
                "destination": dest,
                "in_flight": tally.count - got_there.count,
                "detail": (
                    f"{tally.count - got_there.count} message(s) {sender}->{dest} not reported received"
                    if receivers
                    else f"no reports from {dest} (not instrumented, not reachable, or not yet reported)"
                ),
            }
        )
    if not out:
        out.append(
            {
                "kind": "edge",
                "from": sender,
                "to": None,
                "in_flight": sent.count - got.count,
                "detail": f"messages sent by {sender} and received from it do not balance",
            }
        )
    return out

