"""The snapshot wire format, in one place: what an agent's tracker encodes and
the collector decodes (docs/wire.md says it in prose).

Two kinds of body travel as the JSON string of an OTLP log record:

- a *cascade snapshot* (`CascadeSnapshot`): one hop incarnation's atomic report
  about one cascade (the record's trace id): its units of work, the message ids
  it sent and received (as `Tally`s), its root receipts, how work ended, what
  waits for a user;
- a *hop snapshot* (`HopSnapshot`): the incarnation's own counters and its
  shutdown record.

A `Tally` summarises a multiset of message ids as (count, sum of the ids'
64-bit BLAKE2b hashes mod 2**64): two sides merge by addition, and the whole id
is hashed (ids arrive in headers a peer controls, so their form is not trusted).
Every body carries the schema version `v`; the collector reads versions 1 and 2
and refuses newer ones (it cannot know what they mean).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, NamedTuple

from a2a_quiescence import names

SCHEMA_VERSION = names.SNAPSHOT_SCHEMA_VERSION


def check_version(body: Mapping[str, Any]) -> None:
    """Refuse (ValueError) a body of a schema this code cannot read."""
    v = body.get("v", 1)
    if type(v) is not int or not 1 <= v <= SCHEMA_VERSION:
        raise ValueError(f"unsupported snapshot schema version {v!r} (this collector reads 1..{SCHEMA_VERSION})")


MASK64 = (1 << 64) - 1
MAX_ENDINGS_PER_SNAPSHOT = 64


def id_hash(message_id: str) -> int:
    """The 64-bit value a message id contributes to an edge sum.

    The whole id is hashed (ids arrive in headers a peer controls, so their
    form is not trusted), giving uniform 64-bit values whatever the id scheme."""
    return int.from_bytes(hashlib.blake2b(message_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class Tally(NamedTuple):
    """A multiset of message ids summarised as (count, sum of id hashes mod 2**64)."""

    count: int = 0
    total: int = 0

    def add(self, other: "Tally") -> "Tally":
        return Tally(self.count + other.count, (self.total + other.total) & MASK64)

    def with_id(self, message_id: str) -> "Tally":
        return Tally(self.count + 1, (self.total + id_hash(message_id)) & MASK64)

    def without_id(self, message_id: str) -> "Tally":
        return Tally(self.count - 1, (self.total - id_hash(message_id)) & MASK64)

    def to_json(self) -> list[int]:
        return [self.count, self.total]

    @classmethod
    def from_json(cls, value: Any) -> "Tally":
        # hot path of ingest: check exactly, cheaply
        if type(value) is list and len(value) == 2:
            count, total = value
            if type(count) is int and type(total) is int and count >= 0:
                return cls(count, total & MASK64)
        raise ValueError(f"a tally is [count, sum], got {value!r}")


EMPTY = Tally()


def _object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise ValueError(f"expected an object, got {type(value).__name__}")
    return value


def _count(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key, 0)
    if type(value) is not int or value < 0:
        raise ValueError(f"{key} must be a non-negative integer")
    return value


def _endings(value: Any, kinds: frozenset[str], what: str) -> tuple[dict[str, Any], ...]:
    """A list of endings ({kind, task_id?, detail?, parked_at?, ...}), each kept as
    plain strings and numbers; an unknown kind is refused (it would change the verdict)."""
    if value is None:
        return ()
    if type(value) is not list or len(value) > MAX_ENDINGS_PER_SNAPSHOT:
        raise ValueError(f"{what} must be a list of at most {MAX_ENDINGS_PER_SNAPSHOT} objects")
    out = []
    for item in value:
        if type(item) is not dict or item.get("kind") not in kinds:
            raise ValueError(f"each of {what} needs a kind among {sorted(kinds)}")
        out.append({str(k)[:64]: (v if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)[:500])
                    for k, v in list(item.items())[:16] if v is not None})
    return tuple(out)


def _awaiting(value: Any) -> dict[str, tuple[str, int]]:
    out = {}
    for task_id, item in _object(value).items():
        if type(item) is not dict or type(item.get("units")) is not int or item["units"] < 0:
            raise ValueError("awaiting maps task ids to {state, units}")
        out[task_id] = (str(item.get("state", "")), item["units"])
    return out


@dataclass(slots=True)
class CascadeSnapshot:
    """One hop incarnation's atomic report about one cascade."""

    trace_id: str
    hop: str
    incarnation: str
    seq: int
    active: int
    roots: Tally = EMPTY
    sent: Mapping[str, Tally] = field(default_factory=dict)  # by destination authority
    received: Mapping[str, Tally] = field(default_factory=dict)  # by sending hop
    aliases: tuple[str, ...] = ()  # authorities this hop was reached at
    passive_since: float | None = None  # wall clock, seconds
    at: float = 0.0  # wall clock when taken
    failed: int = 0  # units whose failure the agents reported (all counted; ``failures`` lists some)
    lost: int = 0  # units of work that never got to finish (``losses`` lists some)
    failures: tuple[dict[str, Any], ...] = ()
    losses: tuple[dict[str, Any], ...] = ()
    awaiting: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # task id -> (state, units held)
    root_at: float | None = None  # wall clock at the hop when it received its first root request
    # the incarnation has completed a shutdown (carried here, not only in hop snapshots,
    # because in a sharded mesh tier a hop snapshot lands on any shard)
    shutdown: bool = False

    def awaiting_units(self) -> int:
        return sum(units for _state, units in self.awaiting.values())

    def sent_total(self) -> Tally:
        total = EMPTY
        for tally in self.sent.values():
            total = total.add(tally)
        return total

    @classmethod
    def from_json(cls, trace_id: str, hop: str, body: Mapping[str, Any]) -> "CascadeSnapshot":
        """Parse the JSON body of an ``a2a.quiescence.cascade`` log record."""
        check_version(body)
        try:
            incarnation = body["incarnation"]
            seq = body["seq"]
            active = body["active"]
            if not isinstance(incarnation, str) or not incarnation:
                raise ValueError("incarnation must be a non-empty string")
            if not isinstance(seq, int) or not isinstance(active, int) or active < 0:
                raise ValueError("seq and active must be non-negative integers")
            # keys of a JSON object are always strings: no conversion needed
            sent = {k: Tally.from_json(v) for k, v in _object(body.get("sent")).items()}
            received = {k: Tally.from_json(v) for k, v in _object(body.get("received")).items()}
            roots = Tally.from_json(body.get("roots") or [0, 0])
            aliases = tuple(map(str, body.get("aliases") or ()))
            passive_since = body.get("passive_since")
            if passive_since is not None:
                passive_since = float(passive_since)
            at = float(body.get("at") or 0.0)
            # schema 2 (absent from schema 1 snapshots, which read as nothing failed or lost)
            failed = _count(body, "failed")
            lost = _count(body, "lost")
            failures = _endings(body.get("failures"), names.FAILURE_KINDS, "failures")
            losses = _endings(body.get("losses"), names.LOSS_KINDS, "losses")
            if len(failures) > failed or len(losses) > lost:
                raise ValueError("failures/losses list more than failed/lost count")
            awaiting = _awaiting(body.get("awaiting"))
            root_at = body.get("root_at")
            if root_at is not None:
                root_at = float(root_at)
            shutdown = body.get("shutdown", False)
            if type(shutdown) is not bool:
                raise ValueError("shutdown must be true or false")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed cascade snapshot: {exc!r}") from exc
        return cls(
            trace_id=trace_id,
            hop=hop,
            incarnation=incarnation,
            seq=seq,
            active=active,
            roots=roots,
            sent=sent,
            received=received,
            aliases=aliases,
            passive_since=passive_since,
            at=at,
            failed=failed,
            lost=lost,
            failures=failures,
            losses=losses,
            awaiting=awaiting,
            root_at=root_at,
            shutdown=shutdown,
        )


def cascade_body(
    *,
    incarnation: str,
    seq: int,
    active: int,
    roots: Tally,
    sent: Mapping[str, Tally],
    received: Mapping[str, Tally],
    aliases: list[str],
    passive_since: float | None,
    at: float,
    root_at: float | None = None,
    failed: int = 0,
    lost: int = 0,
    failures: list[dict[str, Any]] | None = None,
    losses: list[dict[str, Any]] | None = None,
    awaiting: Mapping[str, tuple[str, int]] | None = None,
    shutdown: bool = False,
) -> dict[str, Any]:
    """The JSON body of a cascade snapshot (what ``CascadeSnapshot.from_json`` reads).
    Schema 2 fields are sent only when they say something."""
    body: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "incarnation": incarnation,
        "seq": seq,
        "active": active,
        "roots": roots.to_json(),
        "sent": {k: v.to_json() for k, v in sent.items()},
        "received": {k: v.to_json() for k, v in received.items()},
        "aliases": aliases,
        "passive_since": passive_since,
        "at": at,
    }
    if root_at is not None:
        body["root_at"] = root_at
    if failed or lost:
        body.update(failed=failed, lost=lost, failures=list(failures or ()), losses=list(losses or ()))
    if shutdown:
        body["shutdown"] = True
    if awaiting:
        body["awaiting"] = {t: {"state": state, "units": units} for t, (state, units) in awaiting.items()}
    return body


def _counter(body: Mapping[str, Any], key: str) -> int:
    """A counter of a hop snapshot; a value that is not a non-negative integer reads as 0."""
    value = body.get(key)
    return value if type(value) is int and value >= 0 else 0


def _nonneg(value: Any) -> bool:
    return type(value) is int and value >= 0


@dataclass
class HopSnapshot:
    """One hop incarnation's own state: its counters (cumulative) and shutdown record."""

    incarnation: str
    seq: int
    pid: int = 0
    started_at: float | None = None  # wall clock; None: unknown (then: when first seen)
    at: float = 0.0
    producers_in_flight: int = 0
    producers_started: int = 0
    producers_finished: dict[str, int] = field(default_factory=dict)  # by outcome
    stalled_closes_in_flight: int = 0
    stalls_total: int = 0
    destroyed_pending_total: int = 0
    push_failed_total: int = 0
    shutdown_cancelled_total: int = 0
    recent: list[dict[str, Any]] = field(default_factory=list)  # last stalls / destroyed-pending tasks
    # None, or {reason, at, leaked_producers, cancelled_producers, active_cascades, parked}
    shutdown: dict[str, Any] | None = None
    # libraries the hop runs that a2a-quiescence refused: [{library, version, supported, reason}].
    # Such a hop's work is invisible, so the collector holds every cascade while it is alive.
    unsupported: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # a shallow dict (``asdict`` deep-copied every value: 10x the cost, once per hop
        # snapshot); the containers are the snapshot's own copies
        body: dict[str, Any] = {"v": SCHEMA_VERSION}
        for name in _HOP_FIELDS:
            body[name] = getattr(self, name)
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "HopSnapshot":
        """Parse the JSON body of an ``a2a.quiescence.hop`` log record. Fields that
        /metrics and the API read with a fixed type are refused when malformed, so
        one bad snapshot cannot break every later scrape."""
        check_version(body)
        incarnation, seq = body.get("incarnation"), body.get("seq")
        if not isinstance(incarnation, str) or not incarnation or type(seq) is not int:
            raise ValueError("hop snapshot needs incarnation and seq")
        started_at = body.get("started_at")
        if started_at is not None and (isinstance(started_at, bool) or not isinstance(started_at, (int, float))):
            raise ValueError("started_at must be a number")
        finished = body.get("producers_finished") or {}
        if not isinstance(finished, dict) or not all(isinstance(k, str) and _nonneg(n) for k, n in finished.items()):
            raise ValueError("producers_finished must map outcomes to non-negative integers")
        shutdown = body.get("shutdown")
        if shutdown is not None:
            if not isinstance(shutdown, dict):
                raise ValueError("shutdown must be an object or null")
            for key in ("leaked_producers", "cancelled_producers"):
                if shutdown.get(key) is not None and not _nonneg(shutdown[key]):
                    raise ValueError(f"shutdown.{key} must be a non-negative integer")
        recent = body.get("recent")
        unsupported = body.get("unsupported") or []
        if not isinstance(unsupported, list) or not all(
            isinstance(u, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in u.items())
            for u in unsupported
        ):
            raise ValueError("unsupported must be a list of objects of strings")
        return cls(
            incarnation=incarnation,
            seq=seq,
            pid=_counter(body, "pid"),
            started_at=float(started_at) if started_at is not None else None,
            at=float(body["at"]) if isinstance(body.get("at"), (int, float)) and not isinstance(body["at"], bool) else 0.0,
            producers_in_flight=_counter(body, "producers_in_flight"),
            producers_started=_counter(body, "producers_started"),
            producers_finished=dict(finished),
            stalled_closes_in_flight=_counter(body, "stalled_closes_in_flight"),
            stalls_total=_counter(body, "stalls_total"),
            destroyed_pending_total=_counter(body, "destroyed_pending_total"),
            push_failed_total=_counter(body, "push_failed_total"),
            shutdown_cancelled_total=_counter(body, "shutdown_cancelled_total"),
            recent=[r for r in recent if isinstance(r, dict)] if isinstance(recent, list) else [],
            shutdown=shutdown,
            unsupported=[dict(u) for u in unsupported[:8]],
        )


_HOP_FIELDS = tuple(f.name for f in fields(HopSnapshot))
