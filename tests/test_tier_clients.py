"""Clients of a mesh tier that lose a shard: `a2a-quiescence wait --shards` (the
same functions as the Python API, the pytest fixture and the gate) must ask the
new owner when the owner dies during the wait, hold a mesh wait while a listed
shard cannot be asked or a membership change is still being resent, and exit 2
only when no shard of the set ever answered.

The owner-loss case runs real agents under opentelemetry-instrument, a pod
sidecar and the real OpenTelemetry Collector's load_balancing exporter
(tests/otelcol.py); the mesh cases need only shard processes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from a2a_quiescence.demo.harness import Mesh, free_port, program_path, read_events
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.shards import ShardSpec
from a2a_quiescence.pytest_plugin import Quiescence
from a2a_quiescence.wait import MeshNotQuiet, wait_for_quiescence, wait_mesh_sync

from otelcol import RealCollector
from support import wait_until
from tierkit import ShardProc, owned_by, start_shard, write_ring

pytestmark = pytest.mark.timeout(180)


def wait_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([program_path("a2a-quiescence"), "wait", *args], capture_output=True, text=True, timeout=timeout)


def stop(shards: list[ShardProc]) -> None:
    for shard in shards:
        if shard.popen is not None and shard.popen.poll() is None:
            shard.popen.terminate()
            shard.popen.wait(15)


def test_a_wait_answers_from_the_new_owner_when_the_owner_is_killed(tmp_path: Path) -> None:
    ring_file = tmp_path / "shards"
    shards = [ShardProc(free_port(), free_port()) for _ in range(2)]
    write_ring(ring_file, shards)
    spec = ShardSpec(f"@{ring_file}")
    router = RealCollector([s.endpoint for s in shards], tmp_path, free_port())
    try:
        for shard in shards:
            start_shard(shard, ring_file, tmp_path)
        with Mesh(tmp_path, events=tmp_path / "events.jsonl") as mesh:
            mesh.start_collector("--forward", router.url, "--shards", f"@{ring_file}",
                                 "--ring-refresh", "0.2", "--ring-settle", "1")
            mesh.start_agent("C")
            mesh.start_agent("B", ["C"])
            mesh.start_agent("A", ["B"])
            owner, survivor = shards[1], shards[0]
            trace_id = owned_by(spec, owner, new_trace_id)
            # C works long enough for the owner to die in the middle of the cascade
            plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "plan": {"work_ms": 2500}}]}}]}
            sent = threading.Thread(target=lambda: asyncio.run(send_plan(mesh.agents["A"].url, plan, trace_id=trace_id)))
            sent.start()
            waiter = subprocess.Popen(
                [program_path("a2a-quiescence"), "wait", trace_id, "--shards", f"@{ring_file}", "--timeout", "60", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            # the async Python API waits beside the CLI, through the same owner loss
            api_answer: dict = {}
            api = threading.Thread(target=lambda: api_answer.update(asyncio.run(
                wait_for_quiescence(trace_id, shards=f"@{ring_file}", timeout=60))))
            api.start()
            try:
                # the owner holds the cascade open, and the wait is long-polling it
                wait_until(lambda: httpx.get(f"{owner.url}/v1/cascades/{trace_id}", params={"local": "1"},
                                             timeout=5).json().get("status") == "open",
                           "the owner has the cascade open", timeout=30, every=0.05)
                assert waiter.poll() is None
                assert owner.popen is not None
                owner.popen.kill()
                owner.popen.wait(10)
                # the scenario: the dead owner stays listed for a second (a resolver's interval),
                # then the shard set and the exporter drop it
                time.sleep(1.0)  # noqa: sleep-ok - the scenario's interval, not a synchronisation
                write_ring(ring_file, [survivor])
                router.set_endpoints([survivor.endpoint])
                out, err = waiter.communicate(timeout=90)
            finally:
                if waiter.poll() is None:
                    waiter.kill()
                    waiter.wait(10)
                sent.join(60)
                api.join(90)
            assert waiter.returncode == 0, out + err
            state = json.loads(out)
            assert state["status"] == "settled" and state["outcome"] == "completed", state
            assert state["shard"] == survivor.url
            assert (api_answer.get("status"), api_answer.get("outcome"), api_answer.get("shard")) == (
                "settled", "completed", survivor.url), api_answer
            for name in ("A", "B", "C"):
                mesh.agents[name].stop()
            last = max(e["t"] for e in read_events(tmp_path / "events.jsonl") if e.get("trace_id") == trace_id)
            assert state["settled_at"] >= last, "settled before its last ground-truth event"
    finally:
        router.close()
        stop(shards)


def test_a_mesh_wait_holds_on_a_shard_it_cannot_ask_and_on_a_fresh_membership(tmp_path: Path) -> None:
    ring_file = tmp_path / "shards"
    shards = [ShardProc(free_port(), free_port()) for _ in range(3)]
    write_ring(ring_file, shards[:2])
    try:
        for shard in shards:
            start_shard(shard, ring_file, tmp_path)
        since = f"{time.time() - 1:.6f}"
        # must not fire: every listed shard answers, nothing was rooted, membership unchanged
        quiet = wait_cli("--mesh", "--since", since, "--shards", f"@{ring_file}", "--timeout", "10")
        assert quiet.returncode == 0, quiet.stdout + quiet.stderr
        assert "quiet: 0 cascade(s)" in quiet.stdout

        # a listed shard that cannot be asked holds the answer: exit 1 at the timeout, naming it
        # (the one listed first: the fixture's view must come from the other)
        lost, kept = sorted(shards[:2], key=lambda s: s.endpoint)
        assert lost.popen is not None
        lost.popen.kill()
        lost.popen.wait(10)
        t0 = time.monotonic()
        held = wait_cli("--mesh", "--since", since, "--shards", f"@{ring_file}", "--timeout", "1.5")
        assert held.returncode == 1, held.stdout + held.stderr
        assert time.monotonic() - t0 >= 1.5
        assert f"shard {lost.endpoint}" in held.stderr and "cannot be asked" in held.stderr, held.stderr
        with pytest.raises(MeshNotQuiet, match=lost.endpoint):  # the Python API the fixture and gate use
            wait_mesh_sync(since=float(since), shards=f"@{ring_file}", timeout=0.5)
        view = Quiescence("http://127.0.0.1:9", 5, shards=f"@{ring_file}").mesh()  # the fixture's /v1/mesh
        assert view["quiet"] is False
        assert {s["endpoint"]: s["reachable"] for s in view["shards"]} == {lost.endpoint: False, kept.endpoint: True}

        # the set drops it and takes a new shard: held until the shards' resends can have landed
        write_ring(ring_file, [kept, shards[2]])
        with pytest.raises(MeshNotQuiet, match="membership changed|has not read the shard set"):
            wait_mesh_sync(since=float(since), shards=f"@{ring_file}", timeout=0.5)
        # and then answers: --ring-settle 1 + --ring-refresh 0.2 + the resend slack
        settled = wait_cli("--mesh", "--since", since, "--shards", f"@{ring_file}", "--timeout", "30")
        assert settled.returncode == 0, settled.stdout + settled.stderr
    finally:
        stop(shards)


def test_a_tier_that_never_answered_is_a_usage_error(tmp_path: Path) -> None:
    ring_file = tmp_path / "shards"
    nobody = [ShardProc(free_port(), free_port()) for _ in range(2)]  # nothing listens on these
    write_ring(ring_file, nobody)
    trace_id = new_trace_id()
    for args in ((trace_id,), ("--mesh", "--since", f"{time.time():.6f}")):
        # not held to its timeout (the process would be killed first): nothing there ever answered
        out = wait_cli(*args, "--shards", f"@{ring_file}", "--timeout", "3600", timeout=120)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "cannot reach" in out.stderr, out.stderr
