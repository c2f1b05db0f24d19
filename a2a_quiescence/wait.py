"""Waiting for a cascade to settle: `a2a-quiescence wait` and `wait_for_quiescence`.

Asking one collector is a2a_quiescence.collector_client; asking a mesh tier
(``shards=``, ``--shards``) is a2a_quiescence.tier_client."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Callable

import httpx

from a2a_quiescence import environment_variables as env
from a2a_quiescence import names
from a2a_quiescence.collector_client import (
    MeshNotQuiet, NotSettled, cascade_poll, describe_endings, describe_holders, describe_mesh, mesh_poll, poll_async,
    poll_sync,
)
from a2a_quiescence.shards import ShardSpec
from a2a_quiescence.tier_client import shard_spec, tier_mesh_sync, tier_wait_sync

# importable from here as before asking one collector and waiting on a mesh tier got modules of their own
from a2a_quiescence.collector_client import DEFAULT_GRACE, auth_headers  # noqa: F401
from a2a_quiescence.tier_client import (  # noqa: F401
    RESEND_SLACK, RETRY_FIRST, RETRY_MAX, TIER_SLICE, merge_window, tier_holds,
)

DEFAULT_ENDPOINT = env.API.default

# exit codes of `a2a-quiescence wait`
EXIT_COMPLETED = 0
EXIT_NOT_SETTLED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_LOST = 4
EXIT_BY_OUTCOME = {names.VERDICT_COMPLETED: EXIT_COMPLETED, names.VERDICT_FAILED: EXIT_FAILED,
                   names.VERDICT_LOST: EXIT_LOST}


def wait_mesh_sync(
    *, since: float, until: float | None = None, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 30.0,
    grace: float | None = None, token: str | None = None, shards: str | ShardSpec | None = None,
) -> dict[str, Any]:
    """Wait until every cascade whose root request arrived in [since, until] (until:
    now) has settled; the collector's answer lists each with its outcome. Raises
    ``MeshNotQuiet`` when one has not within ``timeout`` seconds. ``shards``: ask
    every shard of a mesh tier instead of one collector (a2a_quiescence.shards)."""
    if shards:
        return tier_mesh_sync(shard_spec(shards), since, until, timeout, grace, token)
    poll = mesh_poll(endpoint, since, until, timeout, grace)
    state = poll_sync(poll, token)
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
        return await asyncio.to_thread(tier_wait_sync, shard_spec(shards), trace_id, timeout, roots, token)
    poll = cascade_poll(trace_id, endpoint, timeout, roots)
    state = await poll_async(poll, token)
    if state is None:
        raise NotSettled(trace_id, poll.state)
    return state


def wait_sync(trace_id: str, *, endpoint: str = DEFAULT_ENDPOINT, timeout: float, roots: int = 1,
              token: str | None = None, shards: str | ShardSpec | None = None) -> dict[str, Any]:
    """``wait_for_quiescence`` for code without an event loop (the CLI, the pytest fixture).
    ``shards``: ask the shard of a mesh tier that owns the cascade (a2a_quiescence.shards)."""
    if shards:
        return tier_wait_sync(shard_spec(shards), trace_id, timeout, roots, token)
    poll = cascade_poll(trace_id, endpoint, timeout, roots)
    state = poll_sync(poll, token)
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
