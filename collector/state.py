"""The sidecar's view of its agents (per hop) and of the mesh (per cascade).

Counters come from cumulative per-incarnation snapshots: the latest snapshot
of an incarnation replaces the previous one, so a resent snapshot is never
counted twice, and an agent's total is the sum over its incarnations, so a
restart never makes a counter go backwards.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from a2a_quiescence import names
from a2a_quiescence.collector.settlement import Cascade, Detector
from a2a_quiescence.wire import CascadeSnapshot, HopSnapshot


@dataclass
class Incarnation:
    id: str
    first_seen: float
    last_seen: float
    seq: int = -1
    snap: HopSnapshot | None = None  # the latest hop snapshot (none yet: only cascade snapshots so far)
    lost: bool = False  # silent past the agent timeout without a shutdown record
    shutdown_cascades_open: int | None = None

    @property
    def started_at(self) -> float:
        return (self.snap.started_at if self.snap is not None else None) or self.first_seen

    @property
    def shutdown(self) -> dict[str, Any] | None:
        return self.snap.shutdown if self.snap is not None else None

    @property
    def finished(self) -> dict[str, int]:
        return self.snap.producers_finished if self.snap is not None else {}

    def counter(self, key: str) -> int:
        return getattr(self.snap, key) if self.snap is not None else 0

    def silent(self, now: float, timeout: float) -> bool:
        """Gone without a shutdown record: marked lost, or not heard from for ``timeout``."""
        return self.shutdown is None and (self.lost or now - self.last_seen > timeout)


@dataclass
class Agent:
    name: str
    incarnations: OrderedDict[str, Incarnation] = field(default_factory=OrderedDict)
    retired: dict[str, int] = field(default_factory=dict)  # counters of evicted incarnations
    incarnations_total: int = 0
    last_seen: float = 0.0

    def latest(self) -> Incarnation | None:
        if not self.incarnations:
            return None
        return max(self.incarnations.values(), key=lambda i: (i.started_at, i.first_seen))


COUNTERS = ("producers_started", "stalls_total", "destroyed_pending_total", "push_failed_total")
MAX_INCARNATIONS_PER_AGENT = 32


class MeshState:
    def __init__(
        self,
        *,
        detector: Detector,
        agent_timeout: float = 10.0,
        max_agents: int = 1000,
        clock: Callable[[], float] = time.time,
        shard: bool = False,
    ) -> None:
        self.detector = detector
        self.agent_timeout = agent_timeout
        self.max_agents = max_agents
        self.clock = clock
        self.agents: OrderedDict[str, Agent] = OrderedDict()
        self.received: dict[str, int] = {"traces": 0, "metrics": 0, "logs": 0}
        self.rejected: dict[str, int] = {}
        self.snapshots: dict[str, int] = {"hop": 0, "cascade": 0}
        self.evicted: dict[str, int] = {"agent": 0, "incarnation": 0}  # and cascades: evicted_counts()
        self.forwarded = 0
        self.dropped: dict[str, int] = {reason: 0 for reason in names.DROP_REASONS}
        self.forward_waiting = 0  # requests waiting to be forwarded
        self.edges: dict[tuple[str, str], int] = {}
        # a shard of a mesh tier decides cascades only: hop snapshots reach it at random
        # (the exporter scatters records without a trace id), so it ignores them; the
        # agents' own state is the pod sidecars'
        self.shard = shard
        self._edge_seen: dict[tuple[str, str, str], int] = {}  # (incarnation, trace, src) -> count

    def evicted_counts(self) -> dict[str, int]:
        """State evicted to bound memory, by kind: agents and incarnations here, open
        cascades by the detector."""
        return {**self.evicted, "cascade": self.detector.evicted_open_count()}

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def record_received(self, signal: str) -> None:
        """An OTLP export request of ``signal`` accepted."""
        self.received[signal] = self.received.get(signal, 0) + 1

    def record_forward_waiting(self, n: int) -> None:
        """Requests now waiting to be forwarded upstream."""
        self.forward_waiting = n

    def record_forwarded(self, n: int) -> None:
        """Requests forwarded upstream (a joined request counts each of its parts)."""
        self.forwarded += n

    # -- hop snapshots ----------------------------------------------------------
    def _agent(self, name: str) -> Agent:
        agent = self.agents.get(name)
        if agent is None:
            agent = self.agents[name] = Agent(name)
            while len(self.agents) > self.max_agents:
                self.agents.popitem(last=False)
                self.evicted["agent"] += 1
        else:
            self.agents.move_to_end(name)
        return agent

    def _incarnation(self, agent: Agent, inc_id: str, now: float) -> Incarnation:
        inc = agent.incarnations.get(inc_id)
        if inc is None:
            inc = agent.incarnations[inc_id] = Incarnation(inc_id, first_seen=now, last_seen=now)
            agent.incarnations_total += 1
            while len(agent.incarnations) > MAX_INCARNATIONS_PER_AGENT:
                _, old = agent.incarnations.popitem(last=False)
                for key in COUNTERS:
                    agent.retired[key] = agent.retired.get(key, 0) + old.counter(key)
                for outcome, n in old.finished.items():
                    k = "finished:" + outcome
                    agent.retired[k] = agent.retired.get(k, 0) + n
                self.evicted["incarnation"] += 1
        return inc

    def ingest_hop(self, agent_name: str, body: dict[str, Any]) -> None:
        snap = HopSnapshot.from_json(body)
        if self.shard:
            self.snapshots["hop_ignored"] = self.snapshots.get("hop_ignored", 0) + 1
            return
        now = self.clock()
        agent = self._agent(agent_name)
        inc = self._incarnation(agent, snap.incarnation, now)
        inc.last_seen = now
        agent.last_seen = now
        inc.lost = False
        self.snapshots["hop"] += 1
        if snap.seq <= inc.seq:
            return
        before = inc.shutdown
        inc.seq = snap.seq
        inc.snap = snap
        if inc.shutdown is not None and inc.shutdown != before:
            # taken when a shutdown record arrives (or a later shutdown replaces it), not on every snapshot
            inc.shutdown_cascades_open = self._open_cascades_with(agent_name)

    def _open_cascades_with(self, agent_name: str) -> int:
        count = 0
        for cascade in self.detector.held():
            if cascade.settled:
                continue
            if any(s.hop == agent_name for s in cascade.view.values()):
                count += 1
        return count

    # -- cascade snapshots -------------------------------------------------------
    def ingest_cascade(self, agent_name: str, trace_id: str, body: dict[str, Any]) -> Cascade | None:
        snap = CascadeSnapshot.from_json(trace_id, agent_name, body)
        self.snapshots["cascade"] += 1
        now = self.clock()
        agent = self._agent(agent_name)
        inc = self._incarnation(agent, snap.incarnation, now)
        inc.last_seen = now
        agent.last_seen = now
        for src, tally in snap.received.items():
            key = (snap.incarnation, trace_id, src)
            before = self._edge_seen.get(key, 0)
            if tally.count > before:
                self._edge_seen[key] = tally.count
                edge = (src, agent_name)
                self.edges[edge] = self.edges.get(edge, 0) + (tally.count - before)
        if len(self._edge_seen) > 200_000:
            self._edge_seen.clear()  # bounded; only the per-edge counter's fine detail is lost
        return self.detector.ingest(snap)

    # -- liveness ------------------------------------------------------------------
    def refresh(self) -> None:
        """Mark incarnations that went silent as lost (SIGKILL, OOM, network)."""
        now = self.clock()
        for agent in self.agents.values():
            for inc in agent.incarnations.values():
                if not inc.lost and inc.silent(now, self.agent_timeout):
                    inc.lost = True
                    inc.shutdown_cascades_open = self._open_cascades_with(agent.name)

    def incarnation_state(self, agent_name: str, inc_id: str, cascade: Cascade | None = None) -> str:
        """alive, shut_down, lost (silent past the agent timeout) or unknown. From the
        incarnation's hop snapshots when there are any; else from what its snapshots of
        ``cascade`` say: a shutdown flag, and a lease (a hop resends the cascades it
        works on every heartbeat), which is all a shard of a mesh tier has."""
        agent = self.agents.get(agent_name)
        inc = agent.incarnations.get(inc_id) if agent else None
        snap = cascade.view.get(inc_id) if cascade is not None else None
        now = self.clock()
        if (inc is not None and inc.shutdown is not None) or (snap is not None and snap.shutdown):
            return "shut_down"
        if inc is not None and inc.snap is not None:
            return "lost" if inc.silent(now, self.agent_timeout) else "alive"
        if cascade is not None and inc_id in cascade.heard:
            return "lost" if now - cascade.heard[inc_id] > self.agent_timeout else "alive"
        if inc is None:
            return "unknown"
        return "lost" if inc.silent(now, self.agent_timeout) else "alive"

    def agent_view(self, agent: Agent) -> dict[str, Any]:
        """Per-agent values for /metrics and the API."""
        now = self.clock()
        live = [i for i in agent.incarnations.values() if i.shutdown is None and not i.silent(now, self.agent_timeout)]
        latest = agent.latest()
        finished: dict[str, int] = {o: agent.retired.get("finished:" + o, 0) for o in names.OUTCOMES}
        totals = {k: agent.retired.get(k, 0) for k in COUNTERS}
        for inc in agent.incarnations.values():
            for k in COUNTERS:
                totals[k] += inc.counter(k)
            for outcome, n in inc.finished.items():
                finished[outcome] = finished.get(outcome, 0) + n
        leaked = None
        cascades_open = None
        cancelled = None
        if latest is not None:
            cancelled = 0
            if latest.shutdown is not None:
                leaked = int(latest.shutdown.get("leaked_producers") or 0)
                cancelled = int(latest.shutdown.get("cancelled_producers") or 0)
                cascades_open = latest.shutdown_cascades_open or 0
            elif latest.silent(now, self.agent_timeout):
                # died without a shutdown record: whatever it held is lost
                leaked = latest.counter("producers_in_flight")
                cascades_open = latest.shutdown_cascades_open or 0
            else:
                leaked = 0  # a new incarnation resets the shutdown record
                cascades_open = 0
        return {
            "in_flight": sum(i.counter("producers_in_flight") for i in live),
            "stalled": sum(i.counter("stalled_closes_in_flight") for i in live),
            "totals": totals,
            "finished": finished,
            "leaked": leaked,
            "cancelled_at_shutdown": cancelled,
            "shutdown_cascades_open": cascades_open,
            "up": 1 if latest is not None and latest in live else 0,
            "last_seen": agent.last_seen,
            "incarnations": agent.incarnations_total,
        }

    def describe_agents(self) -> list[dict[str, Any]]:
        out = []
        for agent in self.agents.values():
            view = self.agent_view(agent)
            latest = agent.latest()
            out.append(
                {
                    "agent": agent.name,
                    "producers_in_flight": view["in_flight"],
                    "stalled_closes_in_flight": view["stalled"],
                    "shutdown_leaked_producers": view["leaked"],
                    "shutdown_cancelled_producers": view["cancelled_at_shutdown"],
                    "push_deliveries_failed": view["totals"]["push_failed_total"],
                    "up": bool(view["up"]),
                    "last_seen": agent.last_seen,
                    "incarnation": latest.id if latest else None,
                    "shutdown": latest.shutdown if latest else None,
                    "recent": latest.snap.recent if latest is not None and latest.snap is not None else [],
                    "unsupported": latest.snap.unsupported if latest is not None and latest.snap is not None else [],
                }
            )
        return out

    def unsupported_hops(self) -> list[dict[str, Any]]:
        """Holders for every running hop that says it serves with a library a2a-quiescence
        refused: its work is invisible, so no window of the mesh can be called settled
        while it runs (it holds until it shuts down or goes silent)."""
        now = self.clock()
        out = []
        for agent in self.agents.values():
            latest = agent.latest()
            if latest is None or latest.snap is None or not latest.snap.unsupported:
                continue
            if latest.shutdown is not None or latest.silent(now, self.agent_timeout):
                continue
            libraries = ", ".join(f"{u.get('library')} {u.get('version')}" for u in latest.snap.unsupported)
            out.append({
                "kind": "unsupported_hop",
                "hop": agent.name,
                "libraries": latest.snap.unsupported,
                "detail": f"{agent.name} serves with {libraries}, which a2a-quiescence does not instrument: "
                          "its work cannot be seen, so nothing can be called settled while it runs",
            })
        return out
