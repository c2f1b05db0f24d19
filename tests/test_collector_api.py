"""The settlement API of a collector, in process (its ASGI app over httpx's
ASGI transport): long-poll answers, and memory left behind by waiters."""

from __future__ import annotations

import asyncio
import time
import re
import uuid

import httpx

from a2a_quiescence.collector.server import Collector, Config
from a2a_quiescence.instrumentation.tracker import HopTracker
from support import wait_until_async


def _settled_cascade(collector: Collector, trace_id: str) -> None:
    """A one-hop cascade, recorded by a real tracker and fed to the collector."""
    tracker = HopTracker()
    work = tracker.receive(trace_id, None, uuid.uuid4().hex, "127.0.0.1:1")
    tracker.release(work)
    _hop, cascades = tracker.take_snapshots()
    for tid, body in cascades:
        collector.state.ingest_cascade("solo", tid, body)


async def test_waiters_are_answered_at_settlement_and_leave_nothing_behind() -> None:
    collector = Collector(Config())
    transport = httpx.ASGITransport(app=collector.api_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
        unknown = uuid.uuid4().hex
        timed_out = await client.get(f"/v1/cascades/{unknown}/wait", params={"timeout": "0.05"})
        assert timed_out.status_code == 408 and timed_out.json()["status"] == "unknown"
        assert collector.api._changed == {} and collector.api._waiting == {}

        trace_id = uuid.uuid4().hex
        waiters = [
            asyncio.create_task(client.get(f"/v1/cascades/{trace_id}/wait", params={"timeout": "30"}))
            for _ in range(3)
        ]
        # all three are parked on the same id before the cascade arrives
        await wait_until_async(lambda: collector.api._waiting.get(trace_id) == 3, "three parked waiters",
                               timeout=30, every=0.001)
        _settled_cascade(collector, trace_id)
        answers = await asyncio.gather(*waiters)
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert all(a.json()["status"] == "settled" for a in answers)
        assert collector.api._changed == {} and collector.api._waiting == {}


async def test_wait_rejects_bad_arguments() -> None:
    collector = Collector(Config())
    transport = httpx.ASGITransport(app=collector.api_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
        tid = uuid.uuid4().hex
        assert (await client.get("/v1/cascades/not-hex/wait")).status_code == 400
        assert (await client.get(f"/v1/cascades/{tid}/wait", params={"timeout": "-1"})).status_code == 400
        assert (await client.get(f"/v1/cascades/{tid}/wait", params={"timeout": "abc"})).status_code == 400
        assert (await client.get(f"/v1/cascades/{tid}/wait", params={"roots": "0"})).status_code == 400
        assert (await client.get(f"/v1/cascades/{'0' * 32}")).status_code == 400


async def test_a_second_root_wave_must_settle_before_wait_answers() -> None:
    """docs/settlement.md: a second root request into a settled cascade. Settled
    stays settled (no flip back), but a wait answers only once every root
    request in the view has settled, not on the stale first settle."""
    collector = Collector(Config())
    tracker = HopTracker()
    trace_id = uuid.uuid4().hex

    def report() -> None:
        _hop, cascades = tracker.take_snapshots()
        for tid, body in cascades:
            collector.state.ingest_cascade("solo", tid, body)

    tracker.release(tracker.receive(trace_id, None, uuid.uuid4().hex, None))
    report()
    second = tracker.receive(trace_id, None, uuid.uuid4().hex, None)  # the second wave starts
    report()
    transport = httpx.ASGITransport(app=collector.api_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
        state = (await client.get(f"/v1/cascades/{trace_id}")).json()
        assert state["status"] == "settled" and state["pending_roots"] == 1
        busy = await client.get(f"/v1/cascades/{trace_id}/wait", params={"timeout": "0.05"})
        assert busy.status_code == 408
        waiter = asyncio.create_task(client.get(f"/v1/cascades/{trace_id}/wait", params={"timeout": "30"}))
        await wait_until_async(lambda: collector.api._waiting.get(trace_id) == 1, "a parked waiter", timeout=30, every=0.001)
        tracker.release(second)  # the second wave ends
        report()
        done = await waiter
        assert done.status_code == 200
        assert done.json()["settled_roots"] == 2 and done.json()["pending_roots"] == 0


async def test_status_page_and_health() -> None:
    collector = Collector(Config())
    trace_id = uuid.uuid4().hex
    tracker = HopTracker()
    tracker.receive(trace_id, None, uuid.uuid4().hex, None)  # still working: an open cascade
    _hop, cascades = tracker.take_snapshots()
    for tid, body in cascades:
        collector.state.ingest_cascade("solo <b>", tid, body)
    transport = httpx.ASGITransport(app=collector.api_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
        page = await client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        # a shell that loads its data from the API (which checks the token): no data, no external assets
        assert "/v1/mesh" in page.text and trace_id not in page.text
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 503  # not serving yet: nothing bound
        mesh = (await client.get("/v1/mesh")).json()
        assert mesh["quiet"] is False and mesh["open"] == 1
        assert mesh["cascades"]["open"][0]["holders"][0]["hop"] == "solo <b>"
        assert mesh["edges"] == []


async def test_status_page_with_a_token_serves_the_shell_and_guards_the_data() -> None:
    collector = Collector(Config(token="s3cret"))
    trace_id = uuid.uuid4().hex
    _settled_cascade(collector, trace_id)
    transport = httpx.ASGITransport(app=collector.api_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
        page = await client.get("/")
        assert page.status_code == 200 and trace_id not in page.text and "solo" not in page.text
        assert (await client.get("/v1/mesh")).status_code == 401
        mesh = await client.get("/v1/mesh", headers={"authorization": "Bearer s3cret"})
        assert mesh.status_code == 200
        assert mesh.json()["cascades"]["recently_settled"][0]["trace_id"] == trace_id


async def test_a_running_unsupported_hop_keeps_the_mesh_from_quiet() -> None:
    """A hop that serves with a library the version guard refused reports it on every hop
    snapshot; while it runs, /v1/mesh is not quiet and no mesh window settles (its work
    cannot be seen), and a cascade waiting on an unreported peer says which hop it may be.
    A hop with nothing refused (must not fire) and one that shut down release the mesh."""
    collector = Collector(Config())
    transport = httpx.ASGITransport(app=collector.api_app())

    def hop(name: str, refused: list[dict[str, str]], shut_down: bool = False) -> None:
        tracker = HopTracker()
        tracker.set_unsupported(refused)
        if shut_down:
            tracker.shutdown_completed("server_shutdown")
        body, _cascades = tracker.take_snapshots()
        collector.state.ingest_hop(name, body)

    async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
        since = time.time() - 1
        _settled_cascade(collector, uuid.uuid4().hex)
        hop("planner", [])
        mesh = (await client.get("/v1/mesh")).json()
        assert mesh["quiet"] is True and mesh["unsupported"] == []
        window = await client.get("/v1/mesh/wait", params={"since": since, "timeout": 0, "grace": 0})
        assert window.status_code == 200 and window.json()["settled"] is True

        refused = {"library": "a2a-sdk", "version": "0.2.6", "supported": ">=1.0.3,<1.4 or >=0.3.4,<0.4",
                   "reason": "outside every tested range"}
        hop("legacy", [refused])
        mesh = (await client.get("/v1/mesh")).json()
        assert mesh["quiet"] is False
        (held,) = mesh["unsupported"]
        assert held["hop"] == "legacy" and "a2a-sdk 0.2.6" in held["detail"]
        agents = {a["agent"]: a for a in mesh["agents"]}
        assert agents["legacy"]["unsupported"] == [refused] and agents["planner"]["unsupported"] == []
        window = await client.get("/v1/mesh/wait", params={"since": since, "timeout": 0, "grace": 0})
        assert window.status_code == 408 and window.json()["settled"] is False
        assert window.json()["unsupported"][0]["hop"] == "legacy"

        # a cascade that sent to a peer nobody reports: the hint names the refused hop
        tracker = HopTracker()
        trace_id = uuid.uuid4().hex
        work = tracker.receive(trace_id, None, uuid.uuid4().hex, "127.0.0.1:1")
        tracker.send(work, "127.0.0.1:2", uuid.uuid4().hex)
        tracker.release(work)
        _hop, cascades = tracker.take_snapshots()
        for tid, body in cascades:
            collector.state.ingest_cascade("planner", tid, body)
        (edge,) = (await client.get(f"/v1/cascades/{trace_id}")).json()["holders"]
        assert "legacy serves with a2a-sdk 0.2.6" in edge["detail"]

        hop("legacy", [refused], shut_down=True)
        assert (await client.get("/v1/mesh")).json()["unsupported"] == []
