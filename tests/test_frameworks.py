"""Agents built with real agent frameworks, seen by the instrumentation and given honest verdicts.

Each framework lives in its own virtualenv (scripts/install-frameworks.sh: the
framework's own pip line plus our wheel). Its agent script
(tests/frameworks/<name>_agents.py) runs two agents, A and B, each its own
process under `opentelemetry-instrument` with nothing set but OTEL_SERVICE_NAME
and the OTLP endpoint, from a directory outside the checkout; A delegates to B
through the framework's own remote-agent mechanism, with stub models. Beside
them runs our sidecar collector from this checkout's .venv. Two cascades per
framework, at once: one where B answers (settled, completed, both hops on the
one trace) and one where B's work fails (FRAMEWORK_B_FAIL=1: settled failed,
never completed). Neither agent may log an internal error or a refusal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from a2a_quiescence import names
from a2a_quiescence.demo.harness import Mesh, free_port, stop_process, wait_http
from conftest import IN_CI, ROOT

pytestmark = pytest.mark.timeout(600)

# the JSON-RPC dialect of each framework's server: a2a-sdk 1.x and fasta2a speak A2A 1.0
# (`SendMessage`, with the A2A-Version header); strands runs on a2a-sdk 0.3 (`message/send`)
FRAMEWORKS = {"adk": "1.0", "agent_framework": "1.0", "strands": "0.3", "pydantic_ai": "1.0"}
WAIT_TIMEOUT = 60
OUR_COMPLAINTS = ("internal error", "not supported")  # what our instrumentation logs when it fails or refuses
ENDED = {"TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED",
         "completed", "failed", "canceled", "rejected"}


@dataclass
class Agent:
    service: str
    popen: subprocess.Popen
    url: str
    stderr: Path


def venv_bin(name: str) -> Path:
    bin_dir = ROOT / ".tools" / "frameworks" / name / "bin"
    if not (bin_dir / "python").exists() or not (bin_dir / "opentelemetry-instrument").exists():
        message = f"no {name} virtualenv (scripts/install-frameworks.sh makes it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return bin_dir


def start_agent(bin_dir: Path, name: str, role: str, service: str, otlp_port: int, workdir: Path,
                peer: str | None = None, **extra_env: str) -> Agent:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "A2A_QUIESCENCE_", "FRAMEWORK_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}", **extra_env})
    script = ROOT / "tests" / "frameworks" / f"{name}_agents.py"
    cmd = [str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "python"), str(script), "--role", role,
           "--port", str(port)]
    if peer:
        cmd += ["--peer", peer]
    stderr = workdir / f"{service}.stderr"
    popen = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=(workdir / f"{service}.stdout").open("ab"),
                             stderr=stderr.open("ab"))
    return Agent(service, popen, f"http://127.0.0.1:{port}", stderr)


def send_root(url: str, dialect: str, trace_id: str) -> dict[str, Any]:
    """A root message to ``url`` into cascade ``trace_id`` (plain JSON-RPC with a traceparent); the task answered."""
    headers = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    if dialect == "1.0":
        message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": "hello"}]}
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
        headers["A2A-Version"] = "1.0"
    else:
        message = {"kind": "message", "messageId": uuid.uuid4().hex, "role": "user",
                   "parts": [{"kind": "text", "text": "hello"}]}
        body = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}
    r = httpx.post(f"{url}/", json=body, headers=headers, timeout=WAIT_TIMEOUT)
    assert r.status_code == 200 and "result" in r.json(), r.text
    result = r.json()["result"]
    return result.get("task", result)


def final_task(url: str, dialect: str, task: dict[str, Any]) -> dict[str, Any]:
    """The task as it ended (a server that answers at once, fasta2a, is asked for it again)."""
    if task.get("status", {}).get("state") in ENDED:
        return task
    method, headers = ("GetTask", {"A2A-Version": "1.0"}) if dialect == "1.0" else ("tasks/get", {})
    body = {"jsonrpc": "2.0", "id": 2, "method": method, "params": {"id": task["id"]}}
    r = httpx.post(f"{url}/", json=body, headers=headers, timeout=10)
    assert r.status_code == 200 and "result" in r.json(), r.text
    return r.json()["result"]


def texts(value: Any) -> list[str]:
    """Every text part in a task (status message, history, artifacts)."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in ([v] if k == "text" and isinstance(v, str) else texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in texts(v)]
    return []


def wait_cli(api: str, *trace_ids: str) -> list[tuple[int, str]]:
    """`a2a-quiescence wait` on each cascade, all at once: (exit code, what it printed) each."""
    cli = str(Path(sys.executable).parent / "a2a-quiescence")
    waits = [subprocess.Popen([cli, "wait", t, "--endpoint", api, "--timeout", str(WAIT_TIMEOUT)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for t in trace_ids]
    try:
        printed = [w.communicate(timeout=WAIT_TIMEOUT + 30)[0] for w in waits]
        return [(w.returncode, p) for w, p in zip(waits, printed)]
    finally:
        for w in waits:
            stop_process(w)


def complaints(agents: list[Agent]) -> list[str]:
    """Lines of the agents' stderr in which our instrumentation says it failed or refused."""
    return [f"{a.service}: {line}" for a in agents for line in a.stderr.read_text(errors="replace").splitlines()
            if any(c in line for c in OUR_COMPLAINTS)]


def ready(agent: Agent) -> None:
    try:
        wait_http(f"{agent.url}/.well-known/agent-card.json", timeout=90, proc=agent.popen)
    except (RuntimeError, TimeoutError) as exc:
        raise AssertionError(f"{agent.service}: {exc}\n{agent.stderr.read_text(errors='replace')[-3000:]}") from None


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_framework_agents_get_honest_verdicts(name: str, tmp_path: Path) -> None:
    bin_dir = venv_bin(name)
    dialect = FRAMEWORKS[name]
    workdir = tmp_path / "elsewhere"  # never the checkout: its a2a_quiescence/ would shadow the installed one
    workdir.mkdir()
    agents: list[Agent] = []
    with Mesh(tmp_path) as mesh:  # our collector, stopped by PID on the way out
        mesh.start_collector()
        try:
            # two pairs at once: A -> B (B answers) and A -> B (B's work fails)
            ok_b = start_agent(bin_dir, name, "B", f"{name}-B", mesh.otlp_port, workdir)
            bad_b = start_agent(bin_dir, name, "B", f"{name}-B-failing", mesh.otlp_port, workdir, FRAMEWORK_B_FAIL="1")
            ok_a = start_agent(bin_dir, name, "A", f"{name}-A", mesh.otlp_port, workdir, peer=ok_b.url)
            bad_a = start_agent(bin_dir, name, "A", f"{name}-A-to-failing", mesh.otlp_port, workdir, peer=bad_b.url)
            agents += [ok_b, bad_b, ok_a, bad_a]
            for agent in agents:
                ready(agent)

            ok_trace, bad_trace = uuid.uuid4().hex, uuid.uuid4().hex
            ok_task = send_root(ok_a.url, dialect, ok_trace)
            send_root(bad_a.url, dialect, bad_trace)
            (ok_exit, ok_printed), (bad_exit, bad_printed) = wait_cli(mesh.api, ok_trace, bad_trace)
            ok = httpx.get(f"{mesh.api}/v1/cascades/{ok_trace}", timeout=10).json()
            bad = httpx.get(f"{mesh.api}/v1/cascades/{bad_trace}", timeout=10).json()
            report = (f"\nB answers: exit {ok_exit}\n{ok_printed}{json.dumps(ok)}"
                      f"\nB fails: exit {bad_exit}\n{bad_printed}{json.dumps(bad)}"
                      f"\nour complaints: {complaints(agents)}")
            if "unknown" in (ok["status"], bad["status"]):
                report += ("\nno hop reported a cascade: is the venv's a2a-quiescence this checkout's? "
                           "(bash scripts/install-frameworks.sh reinstalls it)")

            # (a) B answers: settled completed, both hops on the one trace, and A really answered with B's "done"
            assert ok_exit == 0, report
            assert ok["settled"] and ok["outcome"] == names.VERDICT_COMPLETED, report
            assert {ok_a.service, ok_b.service} <= {h["hop"] for h in ok["hops"]}, report
            assert any(e["from"] == ok_a.service and e["to"] == ok_b.service for e in ok["edges"]), report
            answered = final_task(ok_a.url, dialect, ok_task)
            assert answered["status"]["state"] in ("TASK_STATE_COMPLETED", "completed"), answered
            assert any("done" in t for t in texts(answered)), answered

            # (b) B's work fails: never completed; settled failed, the failure on B
            assert bad_exit != 0, report
            assert bad["outcome"] == names.VERDICT_FAILED, report
            assert {bad_a.service, bad_b.service} <= {h["hop"] for h in bad["hops"]}, report
            assert any(f["hop"] == bad_b.service for f in bad["failures"]), report
        finally:
            for agent in agents:
                stop_process(agent.popen)

    # (c) our instrumentation neither failed nor refused anywhere
    assert not complaints(agents)
