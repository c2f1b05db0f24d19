"""`a2a-quiescence wait`, `wait_for_quiescence` and the pytest fixture, against a real mesh.

A collector and an A -> B -> {C, U} mesh run as subprocesses on 127.0.0.1 (U is
not instrumented, so cascades through it never settle). Synchronisation is by
polling with deadlines; everything is stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest

from a2a_quiescence.demo.harness import Mesh, free_port, program_path, read_events
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.pytest_plugin import Quiescence
from a2a_quiescence.wait import NotSettled, wait_for_quiescence

from support import relay_mesh, wait_until

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(180)

DEADLINE = 60.0


def last_event(path: Path, trace_id: str) -> float:
    return max(e["t"] for e in read_events(path) if e.get("trace_id") == trace_id)


def wait_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [program_path("a2a-quiescence"), "wait", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory):
    with relay_mesh(tmp_path_factory.mktemp("wait")) as m:
        yield m


def run_cascade(mesh: Mesh, to: str, work_ms: int = 20, blocking: bool = True) -> str:
    trace_id = new_trace_id()
    plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": to, "blocking": blocking, "push": True,
                                                       "plan": {"work_ms": work_ms}}]}}]}
    asyncio.run(send_plan(mesh.agents["A"].url, plan, trace_id=trace_id))
    return trace_id


@pytest.fixture(scope="module")
def settled_trace(mesh: Mesh) -> str:
    return run_cascade(mesh, "C")


@pytest.fixture(scope="module")
def open_trace(mesh: Mesh) -> str:
    trace_id = run_cascade(mesh, "U")
    # the instrumented hops are done with it (A answered after B, B after U); only U's silence holds it
    wait_until(lambda: all(h["kind"] == "edge" for h in
                           httpx.get(f"{mesh.api}/v1/cascades/{trace_id}", timeout=10).json()["holders"]),
               "A and B to report passive", timeout=DEADLINE, every=0.02)
    return trace_id


# --- the CLI ----------------------------------------------------------------------
def test_cli_exit_0_when_settled(mesh: Mesh, settled_trace: str) -> None:
    r = wait_cli(settled_trace, "--endpoint", mesh.api, "--timeout", "30")
    assert r.returncode == 0, r.stderr
    assert f"settled: {settled_trace}" in r.stdout
    r = wait_cli(settled_trace, "--endpoint", mesh.api, "--timeout", "30", "--json")
    assert r.returncode == 0
    state = json.loads(r.stdout)
    assert state["status"] == "settled"
    assert mesh.events is not None
    assert state["settled_at"] >= last_event(mesh.events, settled_trace)


def test_cli_waits_for_a_cascade_still_running(mesh: Mesh) -> None:
    """Started while C still works (B's call to C is non-blocking): returns once it settles, not before."""
    trace_id = run_cascade(mesh, "C", work_ms=300, blocking=False)
    r = wait_cli(trace_id, "--endpoint", mesh.api, "--timeout", "30", "--json")
    assert r.returncode == 0, r.stderr
    assert mesh.events is not None
    c_end = [e for e in read_events(mesh.events) if e.get("trace_id") == trace_id and e["agent"] == "C"
             and e["event"] == "work_end"]
    assert c_end, "the CLI said settled before C recorded the end of its work"
    assert json.loads(r.stdout)["settled_at"] >= last_event(mesh.events, trace_id)


def test_cli_exit_1_when_not_settled_names_the_holder(mesh: Mesh, open_trace: str) -> None:
    u = f"127.0.0.1:{mesh.agents['U'].port}"
    r = wait_cli(open_trace, "--endpoint", mesh.api, "--timeout", "0.5")
    assert r.returncode == 1
    assert "not settled after 0.5s" in r.stderr
    assert f"edge B->{u}" in r.stderr and f"no reports from {u}" in r.stderr


def test_cli_exit_1_for_a_cascade_nobody_reported(mesh: Mesh) -> None:
    r = wait_cli(new_trace_id(), "--endpoint", mesh.api, "--timeout", "0.2")
    assert r.returncode == 1
    assert "unknown to the collector" in r.stderr


@pytest.mark.parametrize("bad", ["xyz", "0" * 31, "g" * 32, "0" * 33])
def test_cli_exit_2_for_a_bad_trace_id(mesh: Mesh, bad: str) -> None:
    r = wait_cli(bad, "--endpoint", mesh.api, "--timeout", "1")
    assert r.returncode == 2
    assert "TRACE_ID must be 32 hex digits" in r.stderr


def test_cli_exit_2_when_the_endpoint_is_unreachable() -> None:
    r = wait_cli(new_trace_id(), "--endpoint", f"http://127.0.0.1:{free_port()}", "--timeout", "1")
    assert r.returncode == 2
    assert "cannot reach" in r.stderr


def test_cli_exit_2_on_usage_errors(mesh: Mesh) -> None:
    assert wait_cli(new_trace_id(), "--endpoint", mesh.api, "--timeout", "-1").returncode == 2
    assert wait_cli("--endpoint", mesh.api).returncode == 2  # no trace id
    r = wait_cli(new_trace_id(), "--endpoint", mesh.api, "--timeout", "1", "--roots", "0")
    assert r.returncode == 2 and "400" in r.stderr


# --- the async API ----------------------------------------------------------------
async def test_wait_for_quiescence_returns_the_settled_view(mesh: Mesh, settled_trace: str) -> None:
    state = await wait_for_quiescence(settled_trace, endpoint=mesh.api, timeout=30)
    assert state["status"] == "settled" and state["trace_id"] == settled_trace


async def test_wait_for_quiescence_raises_not_settled(mesh: Mesh, open_trace: str) -> None:
    with pytest.raises(NotSettled) as info:
        await wait_for_quiescence(open_trace, endpoint=mesh.api, timeout=0.5)
    assert info.value.trace_id == open_trace
    assert info.value.state["status"] == "open"
    assert "no reports from" in str(info.value)


async def test_wait_for_quiescence_unreachable_raises_http_error() -> None:
    with pytest.raises(httpx.HTTPError):
        await wait_for_quiescence(new_trace_id(), endpoint=f"http://127.0.0.1:{free_port()}", timeout=1)


async def test_wait_for_quiescence_sees_a_later_settle(mesh: Mesh) -> None:
    trace_id = await asyncio.to_thread(run_cascade, mesh, "C", 200, False)
    state = await wait_for_quiescence(trace_id, endpoint=mesh.api, timeout=30)
    assert mesh.events is not None
    assert state["settled_at"] >= last_event(mesh.events, trace_id)


# --- the pytest fixture -----------------------------------------------------------
def test_quiescence_class_directly(mesh: Mesh, settled_trace: str, open_trace: str) -> None:
    q = Quiescence(mesh.api, timeout=30)
    assert q.assert_settled(settled_trace)["status"] == "settled"
    with pytest.raises(pytest.fail.Exception, match="did not settle: open; edge B->"):
        q.assert_settled(open_trace, timeout=0.5)
    down = Quiescence(f"http://127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(pytest.fail.Exception, match="unreachable"):
        down.assert_settled(settled_trace)
    assert q.mesh()["agents"]


def test_fixture_in_a_test_run(pytester: pytest.Pytester, mesh: Mesh, settled_trace: str, open_trace: str) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            f"""
            def test_settled(a2a_quiescence):
                state = a2a_quiescence.assert_settled("{settled_trace}")
                assert state["status"] == "settled"

            def test_unsettled(a2a_quiescence):
                a2a_quiescence.assert_settled("{open_trace}", timeout=0.5)
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--a2a-quiescence-endpoint={mesh.api}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*cascade {open_trace} did not settle: open; edge B->*no reports from*"])
