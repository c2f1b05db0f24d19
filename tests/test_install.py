"""The install the README gives a user, and nothing else.

The wheel is built from this checkout and installed into two clean virtual
environments with exactly the README's lines (found in README.md, not copied
here): `pip install a2a-quiescence` into an agent's environment (which already
has what the agent itself runs on: a2a-sdk with its HTTP server, uvicorn) and
`pip install 'a2a-quiescence[collector]'` into the sidecar's. Then a real
agent runs under `opentelemetry-instrument` from outside the checkout with no
other setting than OTEL_SERVICE_NAME, beside `a2a-quiescence collector` with
no flags: traces, metrics and logs must arrive and a cascade must settle. The
test extra is nowhere in this path. Also: the core pulls in none of the
sidecar's servers, and the collector says which extra it needs without it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from a2a_quiescence import __version__, names
from a2a_quiescence.demo.harness import free_port, stop_process, wait_http
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from conftest import ROOT
from support import TIMED_OUT_LAST, metric, port_free, wait_until

pytestmark = pytest.mark.timeout(900)

SERVER_PACKAGES = ("prometheus-client", "uvicorn", "starlette", "uvloop", "httptools")


def readme_install_lines() -> tuple[str, str]:
    """(agent side, sidecar side): the README's `pip install` lines for a user."""
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "README.md").read_text().splitlines()]
    agent = [line for line in lines if re.fullmatch(r"pip install a2a-quiescence", line)]
    sidecar = [line for line in lines if re.fullmatch(r"pip install 'a2a-quiescence\[collector\]'", line)]
    assert agent and sidecar, "README.md lost its install lines"
    return agent[0], sidecar[0]


def venv(path: Path, wheels: Path) -> dict[str, str]:
    """A clean venv; the environment in which its `pip` finds our wheel (and only
    this version of it) beside the package index."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    constraint = path / "constraint.txt"
    constraint.write_text(f"a2a-quiescence=={__version__}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "A2A_QUIESCENCE_", "PIP_", "VIRTUAL_ENV"))}
    env.update({"PATH": f"{path / 'bin'}{os.pathsep}{env.get('PATH', '')}", "PIP_FIND_LINKS": str(wheels),
                "PIP_CONSTRAINT": str(constraint), "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return env


def sh(line: str, env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(shlex.split(line), env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{line}: {done.stdout[-2000:]}{done.stderr[-3000:]}"


def installed(env: dict[str, str]) -> set[str]:
    out = subprocess.run(["python", "-m", "pip", "list", "--format=freeze"], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return {line.split("==")[0].lower().replace("_", "-") for line in out.splitlines() if "==" in line}


def versions(env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(["python", "-m", "pip", "list", "--format=freeze"], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return dict(line.lower().replace("_", "-").split("==", 1) for line in out.splitlines() if "==" in line)


def test_the_readme_install_lines_alone_give_spans_metrics_snapshots_and_a_settled_cascade(tmp_path: Path) -> None:
    defaults = [int(hp.rsplit(":", 1)[1]) for hp in (names.DEFAULT_OTLP_HTTP, names.DEFAULT_OTLP_GRPC, names.DEFAULT_HTTP)]
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    agent_line, sidecar_line = readme_install_lines()
    work = tmp_path / "elsewhere"  # never the checkout: its a2a_quiescence/ would shadow the installed one
    work.mkdir()

    sidecar_env = venv(tmp_path / "sidecar", wheels)
    sh(sidecar_line, sidecar_env, work)
    agent_env = venv(tmp_path / "agent", wheels)
    sh("pip install 'a2a-sdk[http-server]' uvicorn", agent_env, work)  # what the agent already runs on
    before = versions(agent_env)
    sh(agent_line, agent_env, work)
    sh("pip check", agent_env, work)

    agent_packages = installed(agent_env) - {"uvicorn", "starlette", "sse-starlette"}
    assert "opentelemetry-distro" in agent_packages
    assert not agent_packages & {"prometheus-client", "uvloop", "httptools"}, "the agent side pulled in the sidecar's"
    sidecar_packages = installed(sidecar_env)
    assert {"prometheus-client", "uvicorn", "starlette", "grpcio"} <= sidecar_packages
    assert not sidecar_packages & {"a2a-sdk", "fasta2a"}, "the sidecar needs no A2A library"
    # our install left the agent's a2a-sdk as it was (pip may move opentelemetry-api within every
    # declared range, as `pip check` above says; a framework's pins: tests/test_frameworks.py)
    assert versions(agent_env)["a2a-sdk"] == before["a2a-sdk"]

    # the agent's environment has no sidecar: the command says what to install
    no_server = subprocess.run(["a2a-quiescence", "collector"], env=agent_env, cwd=work, capture_output=True,
                               text=True, timeout=60)
    assert no_server.returncode == 2 and "pip install 'a2a-quiescence[collector]'" in no_server.stderr

    busy = [p for p in defaults if not port_free(p)]
    assert not busy, f"default ports in use by something else: {busy}"
    log = (tmp_path / "collector.log").open("ab")
    collector = subprocess.Popen(["a2a-quiescence", "collector"], env=sidecar_env, cwd=work, stdout=log,
                                 stderr=subprocess.STDOUT)
    agent = None
    api = f"http://{names.DEFAULT_HTTP}"
    try:
        wait_http(f"{api}/readyz", proc=collector)
        port = free_port()
        only_name = {**{k: v for k, v in agent_env.items() if not k.startswith("PIP_")}, "OTEL_SERVICE_NAME": "solo"}
        agent = subprocess.Popen(
            ["opentelemetry-instrument", "python", "-m", "a2a_quiescence.demo.mesh", "--name", "solo", "--port",
             str(port)], env=only_name, cwd=work, stdout=(tmp_path / "agent.log").open("ab"), stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{port}/.well-known/agent-card.json", proc=agent)
        trace_id = new_trace_id()
        asyncio.run(send_plan(f"http://127.0.0.1:{port}/", {"work_ms": 10}, trace_id=trace_id))
        r = httpx.get(f"{api}/v1/cascades/{trace_id}/wait", params={"timeout": 60}, timeout=70)
        assert r.status_code == 200 and r.json()["outcome"] == names.VERDICT_COMPLETED, r.text
        # a clean stop flushes what is still batched (the default metric interval is a minute)
        assert stop_process(agent, signal.SIGTERM) is not None
        agent = None
        def received() -> str | None:
            text = httpx.get(f"{api}/metrics", timeout=10).text
            return text if all(metric(text, names.M_RECEIVED, signal=s) for s in ("traces", "metrics", "logs")) else None

        text = wait_until(received, "traces, metrics and logs received", timeout=60, every=0.2,
                          message=TIMED_OUT_LAST)
        assert metric(text, names.M_PRODUCERS_STARTED, agent="solo") == 1
    finally:
        if agent is not None:
            stop_process(agent)
        stop_process(collector)
