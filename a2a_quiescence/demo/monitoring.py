"""Prometheus and Alertmanager around a collector, on loopback, as subprocesses.

Used by the demo and the end-to-end tests: Prometheus scrapes the collector
every second and evaluates the project's generated rule file every second;
Alertmanager sends every alert, one group per alert name and without waiting,
to a webhook receiver running in the calling process (``Receiver``), so
whoever started the stack sees each notification as it is delivered.

Configuration files are written as JSON, which both programs read as YAML,
so nothing beyond the standard library is needed here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx

from a2a_quiescence.dashboards.deployment import COLLECTOR_JOB
from a2a_quiescence.dashboards.generate import GENERATED, RULES_NAME
from a2a_quiescence.demo.harness import Proc, free_port, wait_http

PROMETHEUS = ("prometheus",)
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")


def find_tool(*candidates: str) -> str | None:
    """Path of the first of ``candidates`` on PATH (or in the project's ``.tools/bin``), else None."""
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([os.environ.get("PATH", ""), str(root / ".tools" / "bin")])
    for name in candidates:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


class Receiver:
    """An Alertmanager webhook receiver in this process: records every notification (JSON body).

    ``on_post`` (optional) is called with each notification as it arrives, from the server's thread."""

    def __init__(self, on_post: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    post = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.posts.append(post)
                if on_post is not None:
                    on_post(post)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="am-receiver", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def alerts(self, alertname: str | None = None, **labels: str) -> list[dict[str, Any]]:
        """Every alert delivered so far (one entry per alert per notification), optionally filtered."""
        with self.lock:
            posts = list(self.posts)
        out = []
        for post in posts:
            for alert in post.get("alerts", []):
                got = alert.get("labels", {})
                if alertname is not None and got.get("alertname") != alertname:
                    continue
                if all(got.get(k) == v for k, v in labels.items()):
                    out.append(alert)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alertmanager_config(receiver_url: str) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "webhook",
            # One group per alert name: a notification carries every alert of
            # that name Alertmanager holds, so a wrongly firing alert for one
            # agent rides along with a rightly firing one for another.
            "group_by": ["alertname"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "webhook", "webhook_configs": [{"url": receiver_url, "send_resolved": False}]}],
    }


def prometheus_config(collector_port: int, am_port: int, rules: Path = GENERATED / RULES_NAME) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [
            {"job_name": COLLECTOR_JOB, "static_configs": [{"targets": [f"127.0.0.1:{collector_port}"]}]}
        ],
    }


def start_process(name: str, cmd: list[str], workdir: Path, port: int) -> Proc:
    log = workdir / f"{name}.log"
    popen = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=workdir)
    return Proc(name, popen, port, log)


class Prom:
    """A small client of the Prometheus HTTP API."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.http = httpx.Client(base_url=proc.url, timeout=5.0)

    @property
    def url(self) -> str:
        return self.proc.url

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (raises AssertionError on an error or a non-vector answer)."""
        r = self.http.get("/api/v1/query", params={"query": expr})
        body = r.json()
        assert body.get("status") == "success", (expr, body)
        assert body["data"]["resultType"] == "vector", (expr, body["data"]["resultType"])
        return body["data"]["result"]

    def rule_group(self, name: str) -> dict[str, Any]:
        groups = self.http.get("/api/v1/rules").json()["data"]["groups"]
        return next(g for g in groups if g["name"] == name)

    def alerts(self) -> list[dict[str, Any]]:
        return self.http.get("/api/v1/alerts").json()["data"]["alerts"]

    def close(self) -> None:
        self.http.close()


class Monitoring:
    """Prometheus (with the project's rules) scraping a collector, and Alertmanager notifying ``receiver``.

    ``start()`` launches both without waiting; ``wait_ready()`` waits for their readiness endpoints.
    ``stop()`` stops what was started, by PID."""

    def __init__(self, workdir: Path, collector_port: int, receiver: Receiver,
                 prometheus: str, alertmanager: str) -> None:
        self.workdir = workdir
        self.collector_port = collector_port
        self.receiver = receiver
        self.prometheus_bin = prometheus
        self.alertmanager_bin = alertmanager
        self.procs: list[Proc] = []
        self.am: Proc | None = None
        self.prom: Prom | None = None

    def start(self) -> "Monitoring":
        am_port, prom_port = free_port(), free_port()
        (self.workdir / "alertmanager.yml").write_text(json.dumps(alertmanager_config(self.receiver.url), indent=1))
        (self.workdir / "prometheus.yml").write_text(json.dumps(prometheus_config(self.collector_port, am_port), indent=1))
        self.am = start_process("alertmanager", [
            self.alertmanager_bin, f"--config.file={self.workdir / 'alertmanager.yml'}",
            f"--storage.path={self.workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ], self.workdir, am_port)
        self.procs.append(self.am)
        prom_proc = start_process("prometheus", [
            self.prometheus_bin, f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ], self.workdir, prom_port)
        self.procs.append(prom_proc)
        self.prom = Prom(prom_proc)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.am is not None and self.prom is not None, "start() first"
        wait_http(f"{self.am.url}/-/ready", timeout=timeout, proc=self.am.popen)
        wait_http(f"{self.prom.url}/-/ready", timeout=timeout, proc=self.prom.proc.popen)

    def am_alerts(self) -> list[dict[str, Any]]:
        assert self.am is not None
        return httpx.get(f"{self.am.url}/api/v2/alerts", timeout=5.0).json()

    @property
    def pids(self) -> list[int]:
        return [p.popen.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        if self.prom is not None:
            self.prom.close()
