"""Start and stop the real parts (collector, agents, webhook) as subprocesses.

Used by the demo, the integration tests and the benchmarks. Agents run the
way users run them: ``opentelemetry-instrument python -m a2a_quiescence.demo.mesh``.
Everything listens on 127.0.0.1; everything started is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import httpx

from a2a_quiescence import environment_variables as env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def program_path(name: str) -> str:
    """The program ``name`` beside this Python (its virtualenv's bin), else on PATH, else ``name``."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Poll until ``url`` answers 2xx (readiness, not a timing guess)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code < 300:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.02)
    raise TimeoutError(f"{url} not ready after {timeout}s ({last})")


def stop_process(popen: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
    """Signal a process still running and wait ``timeout`` s for it (then SIGKILL); its exit code."""
    if popen.poll() is None:
        popen.send_signal(sig)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)
    return popen.returncode


def read_events(path: Path) -> list[dict[str, Any]]:
    """The ground truth the agents and the webhook recorded (``--events``), one dict per JSON line.

    A missing file is no events; a line that does not parse (being written right now) is skipped."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def events_by_trace(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Ground-truth events grouped by cascade (trace id); events without one are left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e.get("trace_id"):
            out.setdefault(e["trace_id"], []).append(e)
    return out


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        return stop_process(self.popen, sig, timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class Mesh:
    workdir: Path
    collector: Proc | None = None
    otlp_port: int = 0
    agents: dict[str, Proc] = field(default_factory=dict)
    webhook: Proc | None = None
    events: Path | None = None

    @property
    def api(self) -> str:
        assert self.collector is not None
        return self.collector.url

    def start_collector(self, *extra: str, stuck_after: float = 30.0, agent_timeout: float = 10.0) -> Proc:
        """The collector on two free loopback ports. A port ``free_port`` found can be taken
        by another process before the collector binds it: then (and only then: the log
        says the address is in use) it is started again on other ports, at most 3 times."""
        log = self.workdir / "collector.log"
        for attempt in range(3):
            http_port, self.otlp_port = free_port(), free_port()
            start = log.stat().st_size if log.exists() else 0
            popen = subprocess.Popen(
                [
                    program_path("a2a-quiescence"), "collector",
                    "--http-listen", f"127.0.0.1:{http_port}",
                    "--otlp-listen", f"127.0.0.1:{self.otlp_port}",
                    "--otlp-grpc-listen", "off",
                    "--stuck-after", str(stuck_after),
                    "--agent-timeout", str(agent_timeout),
                    "--log-level", "warning",
                    *extra,
                ],
                stdout=log.open("ab"), stderr=subprocess.STDOUT,
            )
            self.collector = Proc("collector", popen, http_port, log)
            try:
                wait_http(f"{self.collector.url}/readyz", proc=popen)
            except RuntimeError:
                with log.open("rb") as f:
                    f.seek(start)
                    said = f.read().decode(errors="replace")
                if attempt < 2 and popen.poll() is not None and "address already in use" in said.lower():
                    continue
                raise
            return self.collector
        raise AssertionError("unreachable")

    def agent_env(self, name: str, **extra: str) -> dict[str, str]:
        environ = dict(os.environ)
        for key in list(environ):
            if key.startswith(("OTEL_", env.PREFIX)):
                del environ[key]
        environ.update(
            {
                env.OTEL_SERVICE_NAME.name: name,
                env.OTEL_EXPORTER_OTLP_PROTOCOL.name: "http/protobuf",
                env.OTEL_EXPORTER_OTLP_ENDPOINT.name: f"http://127.0.0.1:{self.otlp_port}",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                env.OTEL_INSTRUMENTATION_A2A_SDK_ENABLED.name: "false",
                env.HEARTBEAT_SECONDS.name: "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        environ.update(extra)
        return environ

    def start_agent(
        self,
        name: str,
        peers: Iterable[str] = (),
        *,
        port: int | None = None,
        instrument: bool = True,
        no_aclose: bool = False,
        env: dict[str, str] | None = None,
        wait: bool = True,
        args: Iterable[str] = (),
    ) -> Proc:
        port = port or free_port()
        cmd = [sys.executable, "-m", "a2a_quiescence.demo.mesh", "--name", name, "--port", str(port)]
        if instrument:
            cmd = [program_path("opentelemetry-instrument")] + cmd
        for peer in peers:
            cmd += ["--peer", f"{peer}={self.agents[peer].url}"]
        if self.webhook is not None:
            cmd += ["--webhook", f"{self.webhook.url}/push"]
        if self.events is not None:
            cmd += ["--events", str(self.events)]
        if no_aclose:
            cmd.append("--no-aclose")
        cmd += list(args)
        log = self.workdir / f"{name}.log"
        popen = subprocess.Popen(cmd, env=self.agent_env(name, **(env or {})), stdout=log.open("ab"), stderr=subprocess.STDOUT)
        proc = Proc(name, popen, port, log)
        self.agents[name] = proc
        if wait:
            wait_http(f"{proc.url}/.well-known/agent-card.json", proc=popen)
        return proc

    def start_webhook(self) -> Proc:
        port = free_port()
        cmd = [sys.executable, "-m", "a2a_quiescence.demo.mesh", "--role", "webhook", "--name", "webhook", "--port", str(port)]
        if self.events is not None:
            cmd += ["--events", str(self.events)]
        log = self.workdir / "webhook.log"
        popen = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        self.webhook = Proc("webhook", popen, port, log)
        wait_http(f"{self.webhook.url}/push", proc=popen)
        return self.webhook

    def stop_all(self) -> None:
        for proc in list(self.agents.values()) + [p for p in (self.webhook, self.collector) if p is not None]:
            proc.stop()

    def __enter__(self) -> "Mesh":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()  # whatever was started, by PID

    def metrics(self) -> str:
        return httpx.get(f"{self.api}/metrics", timeout=5).text
