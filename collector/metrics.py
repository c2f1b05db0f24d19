"""Prometheus exposition of the sidecar's state: ``StateCollector`` is a
prometheus_client custom collector (not our ``Collector``, server.py, which
registers it): the values live in ``MeshState``, the detector and, in a mesh
tier, the tier's ring; nothing here is a global mutated elsewhere. One function
per group of metric families, yielded in the order of the exposition."""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PrometheusCollector

from a2a_quiescence import names
from a2a_quiescence.collector.settlement import Detector
from a2a_quiescence.collector.state import MeshState

# of the detection latency histogram (a prometheus_client Histogram our Collector, server.py, owns)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _base(name: str) -> str:
    return name[: -len("_total")] if name.endswith("_total") else name


class StateCollector(PrometheusCollector):
    """The prometheus_client collector behind /metrics: reads the state at each scrape.
    ``ring()``, in a mesh tier, gives (shards in the ring, membership changes seen)."""

    def __init__(self, state: MeshState, detector: Detector,
                 ring: Callable[[], tuple[int, int]] | None = None) -> None:
        self.state = state
        self.detector = detector
        self.ring = ring

    def collect(self) -> Iterator[Metric]:
        self.state.refresh()
        yield from agent_families(self.state)
        yield from cascade_families(self.detector, self.ring)
        yield from traffic_families(self.state)


def agent_families(st: MeshState) -> Iterator[Metric]:
    """Per agent: its producers, stalls, shutdown records and liveness."""
    agent = names.LABEL_AGENT
    in_flight = GaugeMetricFamily(
        names.M_PRODUCERS_IN_FLIGHT, "ActiveTask producers spawned and not finished, per agent", labels=[agent]
    )
    started = CounterMetricFamily(_base(names.M_PRODUCERS_STARTED), "ActiveTask producers spawned", labels=[agent])
    finished = CounterMetricFamily(
        _base(names.M_PRODUCERS_FINISHED), "ActiveTask producers finished, by outcome", labels=[agent, "outcome"]
    )
    stalled = GaugeMetricFamily(
        names.M_STALLED_CLOSES, "EventQueue closes / acloses stalled past the watchdog threshold now", labels=[agent]
    )
    stalls = CounterMetricFamily(_base(names.M_STALLS), "Stalled EventQueue closes / acloses seen", labels=[agent])
    destroyed = CounterMetricFamily(
        _base(names.M_DESTROYED_PENDING), "asyncio tasks destroyed while pending", labels=[agent]
    )
    leaked = GaugeMetricFamily(
        names.M_SHUTDOWN_LEAKED,
        "Producers in flight when the agent's last shutdown completed (0: clean; reset by a new incarnation)",
        labels=[agent],
    )
    cancelled = GaugeMetricFamily(
        names.M_SHUTDOWN_CANCELLED,
        "Producers the agent's last shutdown drain cancelled while they still worked "
        "(their work is lost; 0: nothing cancelled; reset by a new incarnation)",
        labels=[agent],
    )
    push_failed = CounterMetricFamily(
        _base(names.M_PUSH_FAILED), "Push notification deliveries that failed (the SDK logs and drops them)",
        labels=[agent],
    )
    shut_open = GaugeMetricFamily(
        names.M_SHUTDOWN_CASCADES_OPEN,
        "Cascades the agent took part in that were still open when its last shutdown completed",
        labels=[agent],
    )
    up = GaugeMetricFamily(names.M_AGENT_UP, "1 while the agent's latest incarnation reports", labels=[agent])
    last_seen = GaugeMetricFamily(
        names.M_AGENT_LAST_SEEN, "When the agent last reported (unix seconds)", labels=[agent]
    )
    restarts = CounterMetricFamily(
        _base(names.M_AGENT_INCARNATIONS), "Agent process incarnations seen", labels=[agent]
    )
    for a in list(st.agents.values()):
        v = st.agent_view(a)
        in_flight.add_metric([a.name], v["in_flight"])
        started.add_metric([a.name], v["totals"]["producers_started"])
        for outcome in names.OUTCOMES:
            finished.add_metric([a.name, outcome], v["finished"].get(outcome, 0))
        stalled.add_metric([a.name], v["stalled"])
        stalls.add_metric([a.name], v["totals"]["stalls_total"])
        destroyed.add_metric([a.name], v["totals"]["destroyed_pending_total"])
        if v["leaked"] is not None:
            leaked.add_metric([a.name], v["leaked"])
            shut_open.add_metric([a.name], v["shutdown_cascades_open"] or 0)
        if v["cancelled_at_shutdown"] is not None:
            cancelled.add_metric([a.name], v["cancelled_at_shutdown"])
        push_failed.add_metric([a.name], v["totals"]["push_failed_total"])
        up.add_metric([a.name], v["up"])
        last_seen.add_metric([a.name], v["last_seen"])
        restarts.add_metric([a.name], v["incarnations"])
    yield from (
        in_flight, started, finished, stalled, stalls, destroyed, leaked, cancelled, push_failed, shut_open, up,
        last_seen, restarts,
    )


def cascade_families(detector: Detector, ring: Callable[[], tuple[int, int]] | None) -> Iterator[Metric]:
    """The mesh's cascades: open, stuck, awaiting input, moved and settled; a tier's ring."""
    open_, stuck = detector.counts()
    yield GaugeMetricFamily(names.M_CASCADES_OPEN, "Cascades not yet settled (including stuck)", value=open_)
    yield GaugeMetricFamily(
        names.M_CASCADES_STUCK, "Open cascades with no progress past the stuck threshold", value=stuck
    )
    yield GaugeMetricFamily(
        names.M_CASCADES_AWAITING,
        "Open cascades whose only remaining work is tasks waiting for their user (input or auth required)",
        value=detector.awaiting_count(),
    )
    yield GaugeMetricFamily(
        names.M_CASCADES_MOVED,
        "A shard of a mesh tier: open cascades held here that the ring now gives to another shard "
        "(not counted as open or stuck here)",
        value=detector.moved_count(),
    )
    if ring is not None:
        ring_shards, ring_changes = ring()
        yield GaugeMetricFamily(names.M_RING_SHARDS, "Shards in the mesh tier's ring as this collector reads it",
                                value=ring_shards)
        yield CounterMetricFamily(_base(names.M_RING_CHANGES), "Changes of the mesh tier's membership seen",
                                  value=ring_changes)
    yield GaugeMetricFamily(names.M_MESH_SETTLED, "1 when no cascade is open", value=1 if open_ == 0 else 0)
    settled = CounterMetricFamily(
        _base(names.M_CASCADES_SETTLED),
        "Cascades declared settled, by outcome (completed; failed: the agents reported a failure; "
        "lost: some work never got to finish)",
        labels=["outcome"],
    )
    by_outcome = detector.settled_counts()
    for outcome in names.VERDICTS:
        settled.add_metric([outcome], by_outcome[outcome])
    yield settled


def traffic_families(st: MeshState) -> Iterator[Metric]:
    """What came in and went out: edges between hops, OTLP requests received, refused,
    forwarded and dropped, evictions and snapshots."""
    edges = CounterMetricFamily(
        _base(names.M_EDGE_MESSAGES), "A2A messages received per edge between hops", labels=["from", "to"]
    )
    for (src, dst), n in sorted(st.edges.items()):
        edges.add_metric([src, dst], n)
    yield edges
    received = CounterMetricFamily(_base(names.M_RECEIVED), "OTLP export requests accepted", labels=["signal"])
    for signal, n in sorted(st.received.items()):
        received.add_metric([signal], n)
    yield received
    rejected = CounterMetricFamily(_base(names.M_REJECTED), "Requests or snapshots refused", labels=["reason"])
    for reason in (
        names.REJECT_MALFORMED,
        names.REJECT_TOO_LARGE,
        names.REJECT_CONTENT_TYPE,
        names.REJECT_UNAUTHORIZED,
        names.REJECT_NOT_FOUND,
    ):
        rejected.add_metric([reason], st.rejected.get(reason, 0))
    yield rejected
    yield CounterMetricFamily(_base(names.M_FORWARDED), "OTLP requests forwarded upstream", value=st.forwarded)
    dropped = CounterMetricFamily(
        _base(names.M_DROPPED), "OTLP requests not forwarded upstream, by reason", labels=["reason"]
    )
    for reason in names.DROP_REASONS:
        dropped.add_metric([reason], st.dropped[reason])
    yield dropped
    yield GaugeMetricFamily(names.M_FORWARD_WAITING, "OTLP requests waiting to be forwarded upstream",
                            value=st.forward_waiting)
    evicted = CounterMetricFamily(_base(names.M_EVICTED), "State evicted to bound memory", labels=["kind"])
    for kind, n in sorted(st.evicted_counts().items()):
        evicted.add_metric([kind], n)
    yield evicted
    snaps = CounterMetricFamily(_base(names.M_SNAPSHOTS), "Lifecycle snapshots ingested", labels=["kind"])
    for kind, n in sorted(st.snapshots.items()):
        snaps.add_metric([kind], n)
    yield snaps
