"""A mesh tier on real parts: subprocess agents under opentelemetry-instrument
report to a pod sidecar (our collector), which forwards to the mesh tier's
router, which delivers over OTLP/gRPC to shard collector processes. Mid-run one
shard is killed (a node lost, with the batches queued for it) and later one is
added. Two routers, the same judgement:

- ``otelcol``: the real OpenTelemetry Collector built from the pinned release
  (tests/otelcol.py), its ``load_balancing`` exporter's static resolver list
  rewritten and reloaded (SIGHUP) for each membership change: the real queue,
  retries toward the killed shard, ring and gRPC client;
- ``double``: tests/lbexporter.py, for the faults the real exporter does not
  produce on demand: a batch lost outright and fan-outs replayed (every third
  request reaches its backends twice), with 10 unordered consumers.

What must hold: every cascade settles, on the shard that owns it, and never
before its last ground-truth event; the whole run's window settles through
`a2a-quiescence wait --mesh --shards`; and no shard ever reports stuck a cascade
the ring gives to another shard.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from a2a_quiescence.demo.harness import Mesh, program_path, free_port, read_events
from a2a_quiescence.pytest_plugin import Quiescence
from a2a_quiescence.shards import ShardSpec
from a2a_quiescence.wait import DEFAULT_ENDPOINT, wait_sync

from conftest import need_tool
from lbexporter import LoadBalancerDouble
from otelcol import RealCollector
from support import metric, wait_until
from tierkit import ShardProc, Takeover, describe_takeover, measure_takeover, run_cascades, start_shard, write_ring

pytestmark = pytest.mark.timeout(300)


def stuck_not_owned(shards: list[ShardProc], spec: ShardSpec) -> list[tuple[str, str]]:
    """(shard, trace id) of every stuck cascade a live shard lists that the ring gives to another."""
    membership = spec.resolve()
    out = []
    for shard in shards:
        view = httpx.get(f"{shard.url}/v1/mesh", params={"local": "1"}, timeout=10).json()
        for item in view["cascades"]["stuck"]:
            owner = membership.owner(item["trace_id"])
            if owner is None or owner.endpoint != shard.endpoint:
                out.append((shard.endpoint, item["trace_id"]))
    return out


@pytest.mark.parametrize("router", ["otelcol", "double"])
def test_tier_survives_a_lost_shard_and_a_new_one(router: str, tmp_path: Path, record_property) -> None:
    ring_file = tmp_path / "shards"
    shards = [ShardProc(free_port(), free_port()) for _ in range(4)]
    live = shards[:3]
    write_ring(ring_file, live)
    spec = ShardSpec(f"@{ring_file}")
    double: LoadBalancerDouble | RealCollector
    if router == "double":
        double = LoadBalancerDouble([s.endpoint for s in live], seed=7, duplicate_every=3)
    else:
        double = RealCollector([s.endpoint for s in live], tmp_path, free_port())
    settles: dict[str, float] = {}
    try:
        for shard in shards:
            start_shard(shard, ring_file, tmp_path)
        with Mesh(tmp_path, events=tmp_path / "events.jsonl") as mesh:
            # the pod sidecar: forwards to the exporter, tells its agents to resend on a ring change
            mesh.start_collector("--forward", double.url, "--shards", f"@{ring_file}",
                                 "--ring-refresh", "0.2", "--ring-settle", "1")
            mesh.start_webhook()
            mesh.start_agent("C")
            mesh.start_agent("B", ["C"])
            mesh.start_agent("A", ["B"])
            since = time.time()

            before = run_cascades(mesh, 12)
            for trace_id in before[:4]:
                settles[trace_id] = wait_sync(trace_id, shards=spec, timeout=60)["settled_at"]

            # a node lost: the shard dies, then the resolver drops it; a batch goes missing.
            # Meanwhile every cascade so far is waited on from the change on (takeover: the
            # moved ones settle on their new owner once the agents' resends reach it)
            lost = live.pop(1)
            assert lost.popen is not None
            lost.popen.kill()
            lost.popen.wait(10)
            if isinstance(double, LoadBalancerDouble):
                double.lose_next = 1
            takeovers: dict[str, list[Takeover]] = {}
            with ThreadPoolExecutor(1) as pool:
                old, changed = spec.resolve(), time.monotonic()
                double.set_endpoints([s.endpoint for s in live])
                write_ring(ring_file, live)
                kill = pool.submit(measure_takeover, spec, old, before, changed)
                during = run_cascades(mesh, 12)
                takeovers["shard killed"] = kill.result()

                # a shard joins
                live.append(shards[3])
                old, changed = spec.resolve(), time.monotonic()
                double.set_endpoints([s.endpoint for s in live])
                write_ring(ring_file, live)
                add = pool.submit(measure_takeover, spec, old, before + during, changed)
                after = run_cascades(mesh, 12)
                takeovers["shard added"] = add.result()
            until = time.time()
            for change, results in takeovers.items():
                assert any(r.moved for r in results), change  # the change moved something
                for r in results:  # each answered settled by its owner under the new ring
                    assert r.status == "settled" and r.shard == r.owner, (change, r)
                # a measurement, printed (-s) and recorded (junit XML), never a threshold
                line = f"{describe_takeover(results)} (ring refresh 0.2 s, settle 1 s, heartbeat 1 s)"
                record_property(f"takeover {change}", line)
                print(f"takeover ({router}, {change}): {line}")

            for trace_id in before + during + after:
                state = wait_sync(trace_id, shards=spec, timeout=60)
                assert state["status"] == "settled", state
                owner = spec.resolve().owner(trace_id)
                assert owner is not None and state["shard"] == owner.url
                settles[trace_id] = state["settled_at"]
                assert state["outcome"] == "completed", state

            # the status page's view, from any one shard: every shard's cascades
            tier_view = httpx.get(f"{live[0].url}/v1/mesh", timeout=10).json()
            assert sorted(s["endpoint"] for s in tier_view["shards"]) == sorted(s.endpoint for s in live)
            assert all(s["reachable"] for s in tier_view["shards"]) and tier_view["quiet"]
            assert tier_view["settled_total"] >= len(before + during + after)
            some = after[0]
            owner = spec.resolve().owner(some)
            other = next(s for s in live if s.endpoint != owner.endpoint)
            detail = httpx.get(f"{other.url}/v1/cascades/{some}", timeout=10).json()
            assert detail["status"] == "settled" and detail["shard"] == owner.url

            # the pytest fixture's object, given the shard set as the plugin's option would
            fixture = Quiescence(DEFAULT_ENDPOINT, 60, shards=f"@{ring_file}")
            assert fixture.assert_settled(during[0])["status"] == "settled"
            assert fixture.mesh()["shards"]

            gate = subprocess.run(
                [program_path("a2a-quiescence"), "wait", "--mesh", "--since", f"{since:.6f}", "--until", f"{until:.6f}",
                 "--shards", f"@{ring_file}", "--timeout", "60"],
                capture_output=True, text=True, timeout=120,
            )
            assert gate.returncode == 0, gate.stdout + gate.stderr
            assert f"{len(before + during + after)} cascade(s)" in gate.stdout, gate.stdout

            # past the stuck threshold: a shard holding a cascade it does not own must not call it stuck
            wait_until(lambda: all(metric(httpx.get(f"{s.url}/metrics", timeout=10).text,
                                          "a2a_mesh_ring_changes_total") == 2 for s in live),
                       "every shard saw both membership changes", timeout=30, every=0.1)
            assert stuck_not_owned(live, spec) == []
            promtool = need_tool("promtool")
            for s in live:
                text = httpx.get(f"{s.url}/metrics", timeout=10).text
                assert metric(text, "a2a_cascades_stuck") == 0, s.endpoint
                assert metric(text, "a2a_cascades_open") == 0, s.endpoint
                assert metric(text, "a2a_mesh_ring_shards") == 3, s.endpoint
                check = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                                       timeout=60)
                assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr

            if isinstance(double, LoadBalancerDouble):  # the faults were really injected
                assert double.stats["lost_batches"] >= 1
                assert double.stats["replayed_fanouts"] >= 1
                assert sum(1 for s in shards if double.delivered[s.endpoint]) == 4

            for proc in list(mesh.agents.values()) + [mesh.webhook]:
                assert proc is not None
                proc.stop()
            events = read_events(tmp_path / "events.jsonl")
        early = []
        for trace_id, settled_at in settles.items():
            last = max(e["t"] for e in events if e.get("trace_id") == trace_id)
            if settled_at < last:
                early.append((trace_id, settled_at, last))
        assert not early, f"early settles: {early}"
    finally:
        double.close()
        for shard in shards:
            if shard.popen is not None and shard.popen.poll() is None:
                shard.popen.terminate()
                shard.popen.wait(15)
