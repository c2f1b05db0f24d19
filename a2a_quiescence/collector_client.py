"""Asking one collector: the long-polls of a wait (``LongPoll``, ``poll_sync``,
``poll_async``), and what an answer that did not end well says (``NotSettled``,
``MeshNotQuiet``, ``describe_*``). a2a_quiescence.wait and the mesh-tier client
(a2a_quiescence.tier_client) build on it."""

from __future__ import annotations

import time
from typing import Any

import httpx

from a2a_quiescence import environment_variables as env
from a2a_quiescence import names

DEFAULT_GRACE = env.ROOT_GRACE.default  # the collector's default --root-grace


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


class LongPoll:
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


SYNC_CLIENTS: dict[str | None, httpx.Client] = {}


def sync_client(token: str | None) -> httpx.Client:
    """One client per process and token: making one costs about 20 ms (its TLS
    context), which a drain gate would otherwise pay after every test."""
    client = SYNC_CLIENTS.get(token)
    if client is None or client.is_closed:
        client = SYNC_CLIENTS[token] = httpx.Client(headers=auth_headers(token))
    return client


def poll_sync(poll: LongPoll, token: str | None) -> dict[str, Any] | None:
    """Run a wait's long-polls; the answer, or None when time ran out (``poll.state``: the last view)."""
    client = sync_client(token)
    while (params := poll.params()) is not None:
        if (state := poll.answer(client.get(poll.url, params=params, timeout=poll.request_timeout))) is not None:
            return state
    return None


async def poll_async(poll: LongPoll, token: str | None) -> dict[str, Any] | None:
    """``poll_sync`` on the event loop: cancelling the awaiting task ends the wait at once."""
    async with httpx.AsyncClient(headers=auth_headers(token), timeout=poll.request_timeout) as client:
        while (params := poll.params()) is not None:
            if (state := poll.answer(await client.get(poll.url, params=params))) is not None:
                return state
    return None


def cascade_poll(trace_id: str, endpoint: str, timeout: float, roots: int) -> LongPoll:
    return LongPoll(f"{endpoint.rstrip('/')}/v1/cascades/{trace_id}/wait", timeout, {"roots": roots})


def mesh_poll(endpoint: str, since: float, until: float | None, timeout: float, grace: float | None) -> LongPoll:
    query: dict[str, Any] = {"since": f"{since:.6f}"}
    # a window that ends now ends when the first request is made; later long-polls keep it
    query["until"] = f"{(time.time() if until is None else until):.6f}"
    if grace is not None:
        query["grace"] = grace
    return LongPoll(f"{endpoint.rstrip('/')}/v1/mesh/wait", timeout, query)


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
