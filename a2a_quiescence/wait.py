"""Waiting for a cascade to settle: `a2a-quiescence wait` and `wait_for_quiescence`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Callable

import httpx

from a2a_quiescence import environment_variables as env
from a2a_quiescence import names
from a2a_quiescence.shards import Membership, Shard, ShardSpec

DEFAULT_ENDPOINT = env.API.default
DEFAULT_GRACE = env.ROOT_GRACE.default  # the collector's default --root-grace
TIER_SLICE = 5.0  # a wait on a mesh tier reads the shard set again at least this often (at once on a lost shard)

# exit codes of `a2a-quiescence wait`
EXIT_COMPLETED = 0
EXIT_NOT_SETTLED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_LOST = 4
EXIT_BY_OUTCOME = {names.VERDICT_COMPLETED: EXIT_COMPLETED, names.VERDICT_FAILED: EXIT_FAILED,
                   names.VERDICT_LOST: EXIT_LOST}


class NotSettled(Exception):
    """The cascade did not settle in time; ``state`` says what holds it."""

    def __init__(self, trace_id: str, state: dict[str, Any]) -> None:
        self.trace_id = trace_id
        self.state = state
        super().__init__(f"cascade {trace_id} not settled: {describe_holders(state)}")


def describe_endings(state: dict[str, Any]) -> str:
    """The losses and failures of a cascade, one clause each (empty when none)."""
    parts = []
    for what, items, total in (("lost", state.get("losses") or [], state.get("lost") or 0),
                               ("failed", state.get("failures") or [], state.get("failed") or 0)):
        for item in items:
            where = f" at {item['parked_at']}" if item.get("parked_at") else ""
            task = f" task {item['task_id']}" if item.get("task_id") else ""
            detail = f" ({item['detail']})" if item.get("detail") else ""
            parts.append(f"{what} on {item.get('hop', '?')}:{task} {item.get('kind')}{detail}{where}")
        if total > len(items):
            parts.append(f"and {total - len(items)} more {what}")
    return "; ".join(parts)


def describe_holders(state: dict[str, Any]) -> str:
    status = state.get("status", names.STATUS_UNKNOWN)
    if state.get("unreachable") and status == names.STATUS_UNKNOWN:
        return "; ".join(f"its owner, shard {u['endpoint']} ({u['shard']}), cannot be asked: {u['error']}"
                         for u in state["unreachable"])
    if status == names.STATUS_UNKNOWN:
        return "unknown to the collector (no hop has reported it)"
    if status == names.STATUS_MOVED and state.get("owner_reported") is False:
        return (f"moved to shard {state.get('owner')}, which has not reported it yet "
                f"(its agents resend it once the membership change settles)")
    if status == names.STATUS_AWAITING_INPUT:
        tasks = ", ".join(f"task {a['task_id']} on {a['hop']} ({a['state']})" for a in state.get("awaiting") or [])
        return f"awaiting_input; waiting for the user: {tasks}"
    parts = []
    for h in state.get("holders", []):
        if h.get("kind") == "active_hop":
            extra = f", {h['hop_state']}" if h.get("hop_state") and h["hop_state"] != "alive" else ""
            parts.append(f"hop {h['hop']} active ({h['work']} unit(s) of work{extra})")
        elif h.get("kind") == "edge":
            parts.append(f"edge {h.get('from')}->{h.get('to') or h.get('destination')}: {h.get('detail')}")
        elif h.get("kind") == "root_not_reported":
            parts.append("root request not yet reported")
    return f"{status}; " + ("; ".join(parts) if parts else "no holder reported")


def auth_headers(token: str | None) -> dict[str, str]:
    token = token or env.TOKEN.get()
    return {"authorization": f"Bearer {token}"} if token else {}


class _LongPoll:
    """The requests of one wait: long-polls of at most 60 s (the server caps one) until the
    deadline, at least one. ``params()`` gives the next request's query (None: time is up);
    ``answer(response)`` returns the settled state, or None after a 408, or raises."""

    def __init__(self, url: str, timeout: float, query: dict[str, Any]) -> None:
        self.url = url
        self.query = query
        self.deadline = time.monotonic() + timeout
        self.request_timeout = min(timeout, 60.0) + 10
        self.state: dict[str, Any] = {}
        self.asked = False

    def params(self) -> dict[str, Any] | None:
        left = self.deadline - time.monotonic()
        if self.asked and left <= 0:
            return None
        self.asked = True
        return {"timeout": f"{max(0.0, min(60.0, left)):.3f}", **self.query}

    def answer(self, response: httpx.Response) -> dict[str, Any] | None:
        if response.status_code == 200:
            return response.json()
        if response.status_code != 408:
            response.raise_for_status()
        self.state = response.json()
        return None


_SYNC_CLIENTS: dict[str | None, httpx.Client] = {}


def _sync_client(token: str | None) -> httpx.Client:
    """One client per process and token: making one costs about 20 ms (its TLS
    context), which a drain gate would otherwise pay after every test."""
    client = _SYNC_CLIENTS.get(token)
    if client is None or client.is_closed:
        client = _SYNC_CLIENTS[token] = httpx.Client(headers=auth_headers(token))
    return client


def _poll_sync(poll: _LongPoll, token: str | None) -> dict[str, Any] | None:
    """Run a wait's long-polls; the answer, or None when time ran out (``poll.state``: the last view)."""
    client = _sync_client(token)
    while (params := poll.params()) is not None:
        if (state := poll.answer(client.get(poll.url, params=params, timeout=poll.request_timeout))) is not None:
            return state
    return None


async def _poll_async(poll: _LongPoll, token: str | None) -> dict[str, Any] | None:
    """``_poll_sync`` on the event loop: cancelling the awaiting task ends the wait at once."""
    async with httpx.AsyncClient(headers=auth_headers(token), timeout=poll.request_timeout) as client:
        while (params := poll.params()) is not None:
            if (state := poll.answer(await client.get(poll.url, params=params))) is not None:
                return state
    return None


def _cascade_poll(trace_id: str, endpoint: str, timeout: float, roots: int) -> _LongPoll:
    return _LongPoll(f"{endpoint.rstrip('/')}/v1/cascades/{trace_id}/wait", timeout, {"roots": roots})


def _mesh_poll(endpoint: str, since: float, until: float | None, timeout: float, grace: float | None) -> _LongPoll:
    query: dict[str, Any] = {"since": f"{since:.6f}"}
    # a window that ends now ends when the first request is made; later long-polls keep it
    query["until"] = f"{(time.time() if until is None else until):.6f}"
    if grace is not None:
        query["grace"] = grace
    return _LongPoll(f"{endpoint.rstrip('/')}/v1/mesh/wait", timeout, query)


class MeshNotQuiet(Exception):
    """Not every cascade rooted in the window settled in time; ``state`` lists them."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        super().__init__(f"mesh not quiet: {describe_mesh(state)}")


def describe_mesh(state: dict[str, Any]) -> str:
    """One clause per cascade of a mesh-wait answer that did not complete (empty when all did)."""
    parts = list(state.get("held_by") or [])
    parts += [h["detail"] for h in state.get("unsupported") or [] if h.get("detail")]
    for c in state.get("cascades") or []:
        if c.get("status") != names.STATUS_SETTLED:
            parts.append(f"cascade {c['trace_id']} {describe_holders(c)}")
        elif c.get("outcome") not in (None, names.VERDICT_COMPLETED):
            parts.append(f"cascade {c['trace_id']} settled {c['outcome']}: {describe_endings(c) or 'details forgotten'}")
    return "; ".join(parts)


def _spec(shards: str | ShardSpec) -> ShardSpec:
    return shards if isinstance(shards, ShardSpec) else ShardSpec(shards)


def _settled_item(item: dict[str, Any]) -> bool:
    return item.get("status") == names.STATUS_SETTLED and not item.get("pending_roots")


def merge_window(membership: Membership, answers: list[tuple[str, dict[str, Any]]],
                 since: float, until: float) -> dict[str, Any]:
    """One mesh-wait answer from every shard's: a cascade is settled when any shard
    settled it (a settle on any shard's view is sound: docs/settlement.md); otherwise
    its owner's view says what holds it, or, when the owner has not reported it yet,
    the shard it moved from does."""
    from a2a_quiescence.names import worse_verdict as worse

    seen: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for url, answer in answers:
        for item in answer.get("cascades") or []:
            seen.setdefault(item["trace_id"], []).append((url, item))
    items = []
    waiting = 0
    worst = None
    for trace_id, entries in seen.items():
        settled = [(url, i) for url, i in entries if _settled_item(i)]
        if settled:
            outcome = None
            for _url, i in settled:
                if i.get("outcome"):
                    outcome = worse(outcome, i["outcome"])
            url, item = next(((u, i) for u, i in settled if i.get("outcome") == outcome), settled[0])
            items.append({**item, "shard": url})
            if outcome:
                worst = worse(worst, outcome)
            continue
        waiting += 1
        owner = membership.owner(trace_id)
        mine = [(u, i) for u, i in entries if owner is not None and u == owner.url]
        url, item = (mine or entries)[0]
        item = {**item, "shard": url}
        if not mine and owner is not None:
            item.update(status=names.STATUS_MOVED, owner=owner.endpoint, owner_url=owner.url, owner_reported=False)
        items.append(item)
    items.sort(key=lambda i: i.get("started_at") or 0)
    return {"since": since, "until": until, "settled": waiting == 0, "cascades": items, "open": waiting,
            "outcome": worst if waiting == 0 else None, "shards": [url for url, _ in answers]}


RETRY_FIRST = 0.05  # after a shard could not be asked: first pause, doubled up to RETRY_MAX
RETRY_MAX = 0.5
# after a membership change the shards' views are incomplete until the agents have resent what
# they hold: beyond the shard's --ring-settle and --ring-refresh (the pod sidecars use the same),
# a heartbeat (2 s) for the agents to see the sidecar's new id, and a second for the resend to land
RESEND_SLACK = 3.0


class _Tier:
    """What a wait on a mesh tier knows of it: the membership last read (kept when the shard
    set cannot be read for a moment, e.g. a file being rewritten), whether any shard ever
    answered, every shard seen during the wait, and when to ask again after a failure."""

    def __init__(self, spec: ShardSpec, timeout: float) -> None:
        self.spec = spec
        self.deadline = time.monotonic() + timeout
        self.membership: Membership | None = None
        self.answered = False
        self.seen: dict[str, str] = {}  # ring endpoint -> API URL of every shard listed during the wait
        self.pause = RETRY_FIRST

    def resolve(self) -> Membership:
        try:
            self.membership = self.spec.resolve()
        except (OSError, ValueError, LookupError):
            if self.membership is None:
                raise  # never read at all: a usage error
        for shard in self.membership.shards:
            self.seen.setdefault(shard.endpoint, shard.url)
        return self.membership

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def failed(self) -> None:
        """Pause before asking again (not past the deadline), longer each time."""
        time.sleep(max(0.0, min(self.pause, self.left())))
        self.pause = min(self.pause * 2, RETRY_MAX)

    def ok(self) -> None:
        self.answered = True
        self.pause = RETRY_FIRST


def _transient(exc: httpx.HTTPError) -> bool:
    """A shard that is gone, restarting or cut off mid-answer: ask again. A 4xx is the caller's."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def _unreachable(shard: Shard, exc: Exception) -> dict[str, Any]:
    return {"shard": shard.url, "endpoint": shard.endpoint, "error": str(exc) or type(exc).__name__}


def _ask_mesh(client: httpx.Client, shard: Shard, query: dict[str, Any]) -> dict[str, Any]:
    response = client.get(f"{shard.url}/v1/mesh/wait", params=query)
    if response.status_code not in (200, 408):
        response.raise_for_status()
    return response.json()


def tier_holds(tier: _Tier, membership: Membership, views: list[tuple[Shard, dict[str, Any]]],
               unreachable: list[dict[str, Any]]) -> list[str]:
    """Why a tier's merged window cannot be called settled yet, one clause each (empty: it can).
    A shard that cannot be asked may hold cascades of the window; after a membership change
    the shards hold only part of what moved until the agents' resends have landed."""
    holds = [f"shard {u['endpoint']} ({u['shard']}) cannot be asked: {u['error']}" for u in unreachable]
    gone = sorted(set(tier.seen) - set(membership.endpoints()))
    for shard, view in views:
        info = view.get("tier") or {}
        epoch, stable_for = info.get("epoch"), info.get("stable_for")
        if epoch is not None and epoch != membership.epoch:
            holds.append(f"shard {shard.endpoint} has not read the shard set this wait reads yet")
        elif stable_for is not None:
            needed = float(info.get("ring_settle") or 0) + float(info.get("ring_refresh") or 0) + RESEND_SLACK
            if stable_for < needed:
                left = f" (shards {', '.join(gone)} left)" if gone else ""
                holds.append(f"the tier's membership changed {stable_for:.1f} s ago{left}: waiting "
                             f"{needed - stable_for:.1f} s more for the agents' resends")
    return list(dict.fromkeys(holds))


def _tier_mesh_sync(spec: ShardSpec, since: float, until: float | None, timeout: float, grace: float | None,
                    token: str | None) -> dict[str, Any]:
    until = time.time() if until is None else until
    grace = DEFAULT_GRACE if grace is None else grace
    tier = _Tier(spec, timeout)
    query = {"since": f"{since:.6f}", "until": f"{until:.6f}", "grace": grace, "timeout": 0}
    with httpx.Client(headers=auth_headers(token), timeout=10.0) as client:
        while True:
            membership = tier.resolve()
            views: list[tuple[Shard, dict[str, Any]]] = []
            unreachable: list[dict[str, Any]] = []
            first_error: httpx.HTTPError | None = None
            for shard in membership.shards:
                try:
                    views.append((shard, _ask_mesh(client, shard, query)))
                except httpx.HTTPError as exc:
                    if not _transient(exc):
                        raise
                    first_error = first_error or exc
                    unreachable.append(_unreachable(shard, exc))
            if views:
                tier.answered = True
            elif first_error is not None and not tier.answered:
                raise first_error  # no shard of the set has ever answered: not a tier we can ask
            merged = merge_window(membership, [(s.url, v) for s, v in views], since, until)
            holds = tier_holds(tier, membership, views, unreachable)
            if holds:
                merged.update(settled=False, outcome=None, held_by=holds, unreachable=unreachable)
            if merged["settled"] and time.time() >= until + grace:
                return merged
            if tier.left() <= 0:
                raise MeshNotQuiet(merged)
            # shards answer at once (timeout 0): ask again, less often the longer it takes
            tier.failed()


def _tier_wait_sync(spec: ShardSpec, trace_id: str, timeout: float, roots: int, token: str | None) -> dict[str, Any]:
    """Long-poll the shard the ring gives the cascade to, reading the shard set again
    every ``TIER_SLICE`` seconds (the owner may change during the wait) and at once
    when the owner cannot be asked (it may have been lost): then the new owner is asked,
    until the timeout. A tier none of whose shards ever answered raises ``httpx.HTTPError``."""
    tier = _Tier(spec, timeout)
    last: dict[str, Any] = {"status": names.STATUS_UNKNOWN}
    while True:
        membership = tier.resolve()
        owner = membership.owner(trace_id)
        if owner is None:
            last = {"status": names.STATUS_UNKNOWN, "unreachable": [{"shard": str(spec), "endpoint": str(spec),
                                                          "error": "the shard set is empty"}]}
        else:
            poll = _cascade_poll(trace_id, owner.url, max(0.0, min(tier.left(), TIER_SLICE)), roots)
            try:
                state = _poll_sync(poll, token)
            except httpx.HTTPError as exc:
                if not _transient(exc):
                    raise
                if not tier.answered and not _any_answers(membership, token):
                    raise  # no shard of the set answers at all
                tier.answered = True
                last = {"status": names.STATUS_UNKNOWN, "shard": owner.url, "unreachable": [_unreachable(owner, exc)]}
            else:
                tier.ok()
                if state is not None:
                    return {**state, "shard": owner.url}
                last = {**poll.state, "shard": owner.url}
                if tier.left() > 0:
                    continue  # a slice ran out: read the set again and ask its owner
        if tier.left() <= 0:
            raise NotSettled(trace_id, last)
        tier.failed()


def _any_answers(membership: Membership, token: str | None) -> bool:
    """Whether any shard of the set answers at all (its health endpoint)."""
    client = _sync_client(token)
    for shard in membership.shards:
        try:
            client.get(f"{shard.url}/healthz", timeout=2.0)
            return True
        except httpx.HTTPError:
            continue
    return False


def wait_mesh_sync(
    *, since: float, until: float | None = None, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 30.0,
    grace: float | None = None, token: str | None = None, shards: str | ShardSpec | None = None,
) -> dict[str, Any]:
    """Wait until every cascade whose root request arrived in [since, until] (until:
    now) has settled; the collector's answer lists each with its outcome. Raises
    ``MeshNotQuiet`` when one has not within ``timeout`` seconds. ``shards``: ask
    every shard of a mesh tier instead of one collector (a2a_quiescence.shards)."""
    if shards:
        return _tier_mesh_sync(_spec(shards), since, until, timeout, grace, token)
    poll = _mesh_poll(endpoint, since, until, timeout, grace)
    state = _poll_sync(poll, token)
    if state is None:
        raise MeshNotQuiet(poll.state)
    return state


async def wait_for_quiescence(
    trace_id: str,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    timeout: float = 30.0,
    roots: int = 1,
    token: str | None = None,
    shards: str | ShardSpec | None = None,
) -> dict[str, Any]:
    """Wait until cascade ``trace_id`` has settled; returns the collector's view.

    Raises ``NotSettled`` when it has not settled within ``timeout`` seconds and
    ``httpx.HTTPError`` when the collector cannot be reached. Cancelling the
    awaiting task ends the wait at once. ``shards``: ask the shard of a mesh tier
    that owns the cascade, and its new owner when it is lost (as ``wait_sync``,
    in a worker thread, which finishes its current long-poll slice after a cancel).
    """
    if shards:
        return await asyncio.to_thread(_tier_wait_sync, _spec(shards), trace_id, timeout, roots, token)
    poll = _cascade_poll(trace_id, endpoint, timeout, roots)
    state = await _poll_async(poll, token)
    if state is None:
        raise NotSettled(trace_id, poll.state)
    return state


def wait_sync(trace_id: str, *, endpoint: str = DEFAULT_ENDPOINT, timeout: float, roots: int = 1,
              token: str | None = None, shards: str | ShardSpec | None = None) -> dict[str, Any]:
    """``wait_for_quiescence`` for code without an event loop (the CLI, the pytest fixture).
    ``shards``: ask the shard of a mesh tier that owns the cascade (a2a_quiescence.shards)."""
    if shards:
        return _tier_wait_sync(_spec(shards), trace_id, timeout, roots, token)
    poll = _cascade_poll(trace_id, endpoint, timeout, roots)
    state = _poll_sync(poll, token)
    if state is None:
        raise NotSettled(trace_id, poll.state)
    return state


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "wait",
        help="wait until a cascade has settled",
        description=(
            "Wait until the cascade TRACE_ID (the W3C trace id of its root request) has settled: "
            "every hop passive and every message accounted for, and say how it ended. Exit codes: "
            "0 settled and completed; 1 not settled in time (printing what still holds it, or the tasks "
            "it waits on when it is awaiting a user's input); 2 usage error, or no collector (no shard of a tier) ever answered (a tier wait asks the new owner when a shard is lost, until the timeout); 3 settled, "
            "failed (an agent reported a failure: an executor raised, a task ended failed, rejected or "
            "cancelled by a client, a call was answered with an error); 4 settled with lost work (work "
            "cancelled by a shutdown drain, a task destroyed while pending, a failed push delivery or "
            "outbound call). Losses and failures are printed."
        ),
    )
    p.add_argument("trace_id", metavar="TRACE_ID", nargs="?", help="32 hex digits (not with --mesh)")
    p.add_argument("--mesh", action="store_true",
                   help="wait instead until every cascade whose root request arrived in a window (--since, --until) "
                        "has settled: a drain gate for a suite that does not know its trace ids; exit codes as "
                        "below for the worst outcome")
    p.add_argument("--since", type=float, help="with --mesh: start of the window, unix seconds")
    p.add_argument("--until", type=float, help="with --mesh: end of the window, unix seconds (default: now)")
    p.add_argument("--grace", type=float,
                   help="with --mesh: seconds after the window during which its root requests may still be "
                        "reported (default: the collector's --root-grace)")
    p.add_argument("--endpoint", default=env.API.get(),
                   help="collector HTTP API base URL (default %(default)s)")
    p.add_argument("--shards", default=env.SHARDS.get(),
                   help="ask a mesh tier instead of --endpoint: its shard set in the load-balancing exporter's order "
                        "(comma-separated API URLs, ENDPOINT=URL items, dns+http://NAME:PORT or @FILE; see "
                        f"docs/scale-out.md; env {env.SHARDS.name}). A TRACE_ID is asked of the shard owning it; "
                        "--mesh asks every shard")
    p.add_argument("--ring-port", type=int, default=env.RING_PORT.cli_default(),
                   help="with --shards: the shards' OTLP/gRPC port, which makes a URL's ring endpoint HOST:PORT "
                        f"(default %(default)s; env {env.RING_PORT.name})")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default %(default)s)")
    p.add_argument("--roots", type=int, default=1, help="wait until at least this many root requests have settled")
    p.add_argument("--token", default=None, help=f"bearer token (default: env {env.TOKEN.name})")
    p.add_argument("--json", action="store_true", help="print the collector's JSON answer")
    p.set_defaults(func=run)


def _report(args: argparse.Namespace, wait: Callable[[], dict[str, Any]], not_done: str,
            describe_open: Callable[[dict[str, Any]], str], describe_ended: Callable[[dict[str, Any]], str],
            headline: Callable[[dict[str, Any], str], str]) -> int:
    """Run a wait for the CLI: print its answer, return the exit code of its outcome."""
    try:
        state = wait()
    except (NotSettled, MeshNotQuiet) as exc:
        if args.json:
            print(json.dumps(exc.state, indent=2))
        print(f"{not_done} after {args.timeout:g}s: {describe_open(exc.state)}", file=sys.stderr)
        return EXIT_NOT_SETTLED
    except httpx.HTTPStatusError as exc:
        print(f"a2a-quiescence wait: collector answered {exc.response.status_code}: {exc.response.text[:200]}", file=sys.stderr)
        return EXIT_USAGE
    except httpx.HTTPError as exc:
        print(f"a2a-quiescence wait: cannot reach {args.endpoint}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (LookupError, ValueError, OSError) as exc:  # a shard set that can no longer be read
        print(f"a2a-quiescence wait: shard set {args.endpoint}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    outcome = state.get("outcome") or names.VERDICT_COMPLETED
    print(json.dumps(state, indent=2) if args.json else headline(state, outcome))
    if outcome != names.VERDICT_COMPLETED:
        print(f"settled {outcome}: {describe_ended(state) or 'details forgotten by the collector'}", file=sys.stderr)
    return EXIT_BY_OUTCOME.get(outcome, EXIT_LOST)


def run_mesh(args: argparse.Namespace) -> int:
    if args.trace_id or args.since is None:
        print("a2a-quiescence wait: --mesh takes --since (and no TRACE_ID)", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout < 0 or (args.until is not None and args.until < args.since) or (args.grace or 0) < 0:
        print("a2a-quiescence wait: need --timeout >= 0, --until >= --since, --grace >= 0", file=sys.stderr)
        return EXIT_USAGE
    return _report(
        args,
        lambda: wait_mesh_sync(since=args.since, until=args.until, endpoint=args.endpoint, timeout=args.timeout,
                               grace=args.grace, token=args.token, shards=args.spec),
        "not quiet", describe_mesh, describe_mesh,
        lambda state, outcome: f"quiet: {len(state.get('cascades') or [])} cascade(s) rooted in the window settled ({outcome})",
    )


def run(args: argparse.Namespace) -> int:
    args.spec = None
    if args.shards:
        try:
            args.spec = ShardSpec(args.shards, args.ring_port)
        except (ValueError, LookupError, OSError) as exc:
            print(f"a2a-quiescence wait: --shards: {exc}", file=sys.stderr)
            return EXIT_USAGE
        args.endpoint = args.shards
    if args.mesh:
        return run_mesh(args)
    if not args.trace_id:
        print("a2a-quiescence wait: TRACE_ID is required (or --mesh --since T)", file=sys.stderr)
        return EXIT_USAGE
    trace_id = args.trace_id.lower()
    if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
        print(f"a2a-quiescence wait: TRACE_ID must be 32 hex digits, got {args.trace_id!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout < 0:
        print("a2a-quiescence wait: --timeout must be >= 0", file=sys.stderr)
        return EXIT_USAGE

    def headline(state: dict[str, Any], outcome: str) -> str:
        latency = state.get("detection_latency_seconds")
        detected = f"; detected {latency * 1000:.1f} ms after the last hop went passive" if latency is not None else ""
        return f"settled: {trace_id} ({outcome}{detected})"

    return _report(
        args,
        lambda: wait_sync(trace_id, endpoint=args.endpoint, timeout=args.timeout, roots=args.roots, token=args.token,
                          shards=args.spec),
        "not settled", describe_holders, describe_endings, headline,
    )
