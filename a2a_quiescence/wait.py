"""Waiting for a cascade to settle: `a2a-quiescence wait` and `wait_for_quiescence`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

DEFAULT_ENDPOINT = "http://127.0.0.1:9464"

# exit codes of `a2a-quiescence wait`
EXIT_COMPLETED = 0
EXIT_NOT_SETTLED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_LOST = 4
EXIT_BY_OUTCOME = {"completed": EXIT_COMPLETED, "failed": EXIT_FAILED, "lost": EXIT_LOST}


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
    status = state.get("status", "unknown")
    if status == "unknown":
        return "unknown to the collector (no hop has reported it)"
    if status == "awaiting_input":
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


def _headers(token: str | None) -> dict[str, str]:
    token = token or os.environ.get("A2A_QUIESCENCE_TOKEN")
    return {"authorization": f"Bearer {token}"} if token else {}


class _LongPoll:
    """The requests of one wait: long-polls of at most 60 s (the server caps one) until the
    deadline, at least one. ``params()`` gives the next request's query (None: time is up);
    ``answer(response)`` returns the settled state, or None after a 408, or raises."""

    def __init__(self, trace_id: str, endpoint: str, timeout: float, roots: int) -> None:
        self.url = f"{endpoint.rstrip('/')}/v1/cascades/{trace_id}/wait"
        self.roots = roots
        self.deadline = time.monotonic() + timeout
        self.state: dict[str, Any] = {}
        self.asked = False

    def params(self) -> dict[str, Any] | None:
        left = self.deadline - time.monotonic()
        if self.asked and left <= 0:
            return None
        self.asked = True
        return {"timeout": f"{max(0.0, min(60.0, left)):.3f}", "roots": self.roots}

    def answer(self, response: httpx.Response) -> dict[str, Any] | None:
        if response.status_code == 200:
            return response.json()
        if response.status_code != 408:
            response.raise_for_status()
        self.state = response.json()
        return None


async def wait_for_quiescence(
    trace_id: str,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    timeout: float = 30.0,
    roots: int = 1,
    token: str | None = None,
) -> dict[str, Any]:
    """Wait until cascade ``trace_id`` has settled; returns the collector's view.

    Raises ``NotSettled`` when it has not settled within ``timeout`` seconds and
    ``httpx.HTTPError`` when the collector cannot be reached. Cancelling the
    awaiting task ends the wait at once.
    """
    poll = _LongPoll(trace_id, endpoint, timeout, roots)
    async with httpx.AsyncClient(headers=_headers(token), timeout=min(timeout, 60.0) + 10) as client:
        while (params := poll.params()) is not None:
            if (state := poll.answer(await client.get(poll.url, params=params))) is not None:
                return state
    raise NotSettled(trace_id, poll.state)


def wait_sync(trace_id: str, *, endpoint: str, timeout: float, roots: int = 1, token: str | None = None) -> dict[str, Any]:
    """``wait_for_quiescence`` for code without an event loop (the CLI, the pytest fixture)."""
    poll = _LongPoll(trace_id, endpoint, timeout, roots)
    with httpx.Client(headers=_headers(token), timeout=min(timeout, 60.0) + 10) as client:
        while (params := poll.params()) is not None:
            if (state := poll.answer(client.get(poll.url, params=params))) is not None:
                return state
    raise NotSettled(trace_id, poll.state)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "wait",
        help="wait until a cascade has settled",
        description=(
            "Wait until the cascade TRACE_ID (the W3C trace id of its root request) has settled: "
            "every hop passive and every message accounted for, and say how it ended. Exit codes: "
            "0 settled and completed; 1 not settled in time (printing what still holds it, or the tasks "
            "it waits on when it is awaiting a user's input); 2 usage or connection error; 3 settled, "
            "failed (an agent reported a failure: an executor raised, a task ended failed, rejected or "
            "cancelled by a client, a call was answered with an error); 4 settled with lost work (work "
            "cancelled by a shutdown drain, a task destroyed while pending, a failed push delivery or "
            "outbound call). Losses and failures are printed."
        ),
    )
    p.add_argument("trace_id", metavar="TRACE_ID", help="32 hex digits")
    p.add_argument("--endpoint", default=os.environ.get("A2A_QUIESCENCE_API", DEFAULT_ENDPOINT),
                   help="collector HTTP API base URL (default %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default %(default)s)")
    p.add_argument("--roots", type=int, default=1, help="wait until at least this many root requests have settled")
    p.add_argument("--token", default=None, help="bearer token (default: env A2A_QUIESCENCE_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the collector's JSON answer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    trace_id = args.trace_id.lower()
    if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
        print(f"a2a-quiescence wait: TRACE_ID must be 32 hex digits, got {args.trace_id!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout < 0:
        print("a2a-quiescence wait: --timeout must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        state = wait_sync(trace_id, endpoint=args.endpoint, timeout=args.timeout, roots=args.roots, token=args.token)
    except NotSettled as exc:
        if args.json:
            print(json.dumps(exc.state, indent=2))
        print(f"not settled after {args.timeout:g}s: {describe_holders(exc.state)}", file=sys.stderr)
        return EXIT_NOT_SETTLED
    except httpx.HTTPStatusError as exc:
        print(f"a2a-quiescence wait: collector answered {exc.response.status_code}: {exc.response.text[:200]}", file=sys.stderr)
        return EXIT_USAGE
    except httpx.HTTPError as exc:
        print(f"a2a-quiescence wait: cannot reach {args.endpoint}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    outcome = state.get("outcome") or "completed"
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        latency = state.get("detection_latency_seconds")
        detected = f"; detected {latency * 1000:.1f} ms after the last hop went passive" if latency is not None else ""
        print(f"settled: {trace_id} ({outcome}{detected})")
    if outcome != "completed":
        print(f"settled {outcome}: {describe_endings(state) or 'details forgotten by the collector'}", file=sys.stderr)
    return EXIT_BY_OUTCOME.get(outcome, EXIT_LOST)
