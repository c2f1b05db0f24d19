"""What the demo runs and watches: the collector, Prometheus and Alertmanager (when
installed), the push webhook and the agents (a2a_quiescence.demo.harness starts them),
and the sidecar's view of them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import httpx

from a2a_quiescence import environment_variables as env
from a2a_quiescence import names
from a2a_quiescence.dashboards.generate import DASHBOARD_NAME, GENERATED
from a2a_quiescence.demo.harness import Mesh, Proc, wait_http
from a2a_quiescence.demo.mesh import SMALL_BUFFER
from a2a_quiescence.demo.monitoring import ALERTMANAGER, PROMETHEUS, Monitoring, Receiver, find_tool
from a2a_quiescence.demo.report import Cascade, Summary
from a2a_quiescence.demo.timing import DEADLINE, STALL_SECONDS, STUCK_AFTER, Progress, until, until_async
from a2a_quiescence.wait import NotSettled, describe_holders, wait_for_quiescence


class Stack:
    """The processes, the sidecar's view of them, and the summary (``Demo`` adds the steps)."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.say = Progress()
        self.mesh = Mesh(workdir, events=workdir / "events.jsonl")
        self.receiver: Receiver | None = None
        self.monitoring: Monitoring | None = None
        self.summary = Summary(str(workdir))
        self.agent_env = {env.STALL_SECONDS.name: str(STALL_SECONDS)}
        self.drains = {"A": True, "B": True, "C": False}  # whether each agent's lifespan calls aclose()
        self.replaced: list[Proc] = []  # agent processes a restart replaced (already stopped)

    # -- the sidecar's view ------------------------------------------------------
    def mesh_state(self) -> dict[str, Any]:
        return httpx.get(f"{self.mesh.api}/v1/mesh", timeout=5).json()

    def agent(self, name: str) -> dict[str, Any]:
        return next((a for a in self.mesh_state()["agents"] if a["agent"] == name), {})

    def cascade_state(self, trace_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.mesh.api}/v1/cascades/{trace_id}", timeout=5).json()

    def hop_row(self, a: dict[str, Any]) -> dict[str, Any]:
        """One agent process as the sidecar last saw it (its latest incarnation)."""
        return {
            "agent": a["agent"],
            "incarnation": a.get("incarnation"),
            "aclose": self.drains.get(a["agent"]),
            "producers_in_flight": a["producers_in_flight"],
            "shutdown_leaked_producers": a["shutdown_leaked_producers"],
            "shutdown_cancelled_producers": a.get("shutdown_cancelled_producers"),
            "state": "up" if a["up"] else ("shut down" if a.get("shutdown") else "lost"),
        }

    def in_flight_line(self) -> str:
        agents = {a["agent"]: a for a in self.mesh_state()["agents"]}
        return " · ".join(f"{n} {agents.get(n, {}).get('producers_in_flight', '-')}" for n in ("A", "B", "C"))

    # -- alerts ------------------------------------------------------------------
    def on_alert(self, post: dict[str, Any]) -> None:
        for alert in post.get("alerts", []):
            labels = alert.get("labels", {})
            entry = {"alertname": labels.get("alertname", "?"), "agent": labels.get("agent", ""),
                     "status": alert.get("status", "?")}
            self.summary.alerts.append(entry)
            who = f" agent={entry['agent']}" if entry["agent"] else ""
            self.say(f"ALERT delivered by Alertmanager: {entry['alertname']}{who} ({entry['status']}): "
                     f"{alert.get('annotations', {}).get('summary', '')}")

    async def wait_alert(self, alertname: str, **labels: str) -> None:
        receiver = self.receiver
        if receiver is not None:
            await until_async(f"{alertname} at Alertmanager's receiver", lambda: receiver.alerts(alertname, **labels))

    # -- start, settle, stop ----------------------------------------------------
    def start(self) -> None:
        say = self.say
        prometheus, alertmanager = find_tool(*PROMETHEUS), find_tool(*ALERTMANAGER)
        self.mesh.start_collector(stuck_after=STUCK_AFTER, agent_timeout=10.0)
        assert self.mesh.collector is not None
        say(f"collector up: status page {self.mesh.api}/ , metrics {self.mesh.api}/metrics")
        if prometheus and alertmanager:
            self.receiver = Receiver(self.on_alert)
            self.monitoring = Monitoring(self.workdir, self.mesh.collector.port, self.receiver,
                                         prometheus, alertmanager).start()
            self.summary.monitoring = True
        else:
            missing = " and ".join(n for n, p in (("prometheus", prometheus), ("prometheus-alertmanager", alertmanager)) if not p)
            say(f"NOTE: {missing} not installed, so no alerts in this run (as root: apt-get install "
                "prometheus prometheus-alertmanager, or bash scripts/setup.sh). Everything else runs.")
        self.mesh.start_webhook()
        env = self.agent_env
        # C drains nothing at shutdown (no aclose) and has a small send buffer (the #1101 hang)
        self.mesh.start_agent("C", no_aclose=True, env=env, wait=False, args=["--send-buffer", str(SMALL_BUFFER)])
        self.mesh.start_agent("B", ["C"], env=env, wait=False)
        self.mesh.start_agent("A", ["B"], env=env, wait=False)
        for proc in self.mesh.agents.values():
            wait_http(f"{proc.url}/.well-known/agent-card.json", proc=proc.popen)
        say("agents up under opentelemetry-instrument: " + ", ".join(f"{n} {p.url}" for n, p in self.mesh.agents.items())
            + f"; C pushes to the webhook {self.mesh.webhook.url if self.mesh.webhook else '-'}")
        if self.monitoring is not None:
            self.monitoring.wait_ready()
            prom = self.monitoring.prom
            assert prom is not None
            until("Prometheus to load the rules", lambda: prom.http.get("/api/v1/rules").json()["data"]["groups"])
            until("Prometheus to scrape the collector", lambda: prom.query(f"{names.M_AGENT_UP} == 1"))
            say(f"Prometheus {prom.url} (rules loaded, scraping every 1 s), Alertmanager {self.monitoring.am.url}")  # type: ignore[union-attr]

    def pids(self) -> list[int]:
        procs: list[Proc] = self.replaced + list(self.mesh.agents.values()) + [
            p for p in (self.mesh.webhook, self.mesh.collector) if p]
        return [p.popen.pid for p in procs] + (self.monitoring.pids if self.monitoring else [])

    async def settle(self, cascade: Cascade, t0: float, quiet: bool = False) -> None:
        try:
            state = await wait_for_quiescence(cascade.trace_id, endpoint=self.mesh.api, timeout=DEADLINE)
        except NotSettled as exc:
            cascade.status, cascade.held_by = exc.state.get("status", "open"), describe_holders(exc.state)
            self.say(f"  {cascade.kind} {cascade.trace_id[:12]}…: NOT settled: {cascade.held_by}")
            return
        cascade.status = "settled"
        cascade.outcome = state.get("outcome")
        cascade.losses, cascade.failures = state.get("losses") or [], state.get("failures") or []
        cascade.settled_ms = (time.monotonic() - t0) * 1000
        cascade.detection_latency_seconds = state.get("detection_latency_seconds")
        if cascade.outcome != names.VERDICT_COMPLETED and not quiet:
            self.say(f"  {cascade.kind} {cascade.trace_id[:12]}… settled {cascade.outcome}: {cascade.endings()}")

    def shut_down(self, incarnations: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
        """The agents by name once each of these incarnations has its shutdown record, else None."""
        agents = {a["agent"]: a for a in self.mesh_state()["agents"]}
        done = all((a := agents.get(n, {})).get("shutdown") and not a.get("up") and a.get("incarnation") == inc
                   for n, inc in incarnations.items())
        return agents if done else None

    def collect_hops(self) -> None:
        """The agents' latest incarnations, after the ones a restart replaced (kept when they shut down)."""
        latest = [self.hop_row(a) for a in self.mesh_state()["agents"]]
        self.summary.hops = sorted(self.summary.hops + latest, key=lambda h: h["agent"])  # stable: C before C

    def print_next(self, running: bool) -> None:
        if running:
            print("\nWhere to look now (the agents have shut down; the sidecar keeps what they reported):")
            print(f"  status page        {self.mesh.api}/")
            print(f"  settlement API     {self.mesh.api}/v1/mesh")
            if self.monitoring is not None and self.monitoring.prom is not None:
                print(f"  Prometheus alerts  {self.monitoring.prom.url}/alerts")
        else:
            print("\nWhere to look next: run it with --keep-running to browse the status page and Prometheus' alerts.")
        print(f"  Grafana dashboard  {GENERATED / DASHBOARD_NAME} (import it, or: a2a-quiescence dashboards push)")
        print(f"  logs and configs   {self.workdir}")

    def stop(self) -> None:
        if self.monitoring is not None:
            self.monitoring.stop()
        for proc in self.replaced:
            proc.stop()
        self.mesh.stop_all()
        if self.receiver is not None:
            self.receiver.close()
