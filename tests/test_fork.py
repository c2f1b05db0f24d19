"""Prefork servers: an agent process instrumented by ``opentelemetry-instrument``
forks, and parent and child each serve requests (as gunicorn's workers do).
The child must be its own incarnation with its own reporter: its cascades
settle, and the collector sees two incarnations of the hop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest

from a2a_quiescence import names
from a2a_quiescence.demo.harness import Mesh, free_port, program_path, wait_http
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from support import raise_assertion, wait_until

pytestmark = pytest.mark.timeout(180)

SERVER = textwrap.dedent(
    """
    import os, sys
    import uvicorn
    from a2a_quiescence.demo.mesh import build_app

    parent_port, child_port, pid_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    pid = os.fork()  # after the instrumentation (and its reporter thread) started
    port = child_port if pid == 0 else parent_port
    if pid:
        with open(pid_file, "w") as f:
            f.write(str(pid))
    app, _handler, _executor = build_app("F", port, {})
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    """
)


def test_forked_worker_reports_as_its_own_incarnation(tmp_path: Path) -> None:
    script = tmp_path / "prefork_agent.py"
    script.write_text(SERVER)
    pid_file = tmp_path / "child.pid"
    with Mesh(tmp_path) as mesh:
        mesh.start_collector()
        ports = free_port(), free_port()
        proc = subprocess.Popen(
            [program_path("opentelemetry-instrument"), program_path("python"), str(script), str(ports[0]), str(ports[1]), str(pid_file)],
            env=mesh.agent_env("F"), cwd=tmp_path, stdout=(tmp_path / "F.log").open("ab"), stderr=subprocess.STDOUT,
        )
        child_pid = None
        try:
            for port in ports:
                wait_http(f"http://127.0.0.1:{port}/.well-known/agent-card.json", proc=proc)
            child_pid = int(pid_file.read_text())
            traces = [new_trace_id(), new_trace_id()]
            for port, trace_id in zip(ports, traces):
                asyncio.run(send_plan(f"http://127.0.0.1:{port}/", {"work_ms": 10}, trace_id=trace_id))
            incarnations = set()
            for trace_id in traces:
                r = httpx.get(f"{mesh.api}/v1/cascades/{trace_id}/wait", params={"timeout": 30}, timeout=40)
                assert r.status_code == 200, r.json()  # the child's cascade too: it has a reporter
                assert r.json()["outcome"] == names.VERDICT_COMPLETED
                incarnations |= {h["incarnation"] for h in r.json()["hops"]}
            assert len(incarnations) == 2  # parent and child, never one shared incarnation
            metrics = httpx.get(f"{mesh.api}/metrics", timeout=10).text
            assert f'{names.M_AGENT_INCARNATIONS}{{agent="F"}} 2.0' in metrics
        finally:
            if child_pid is not None:
                try:
                    os.kill(child_pid, signal.SIGTERM)  # the worker this test's agent forked
                except ProcessLookupError:
                    pass
            proc.terminate()
            proc.wait(timeout=30)
            if child_pid is not None:
                _reap(child_pid)


def _reap(pid: int) -> None:
    """Wait (bounded) until the forked worker is gone; kill it if it lingers."""

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        wait_until(gone, "the forked worker to exit", timeout=15, every=0.05, fail=raise_assertion)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
