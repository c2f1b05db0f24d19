"""The real OpenTelemetry Collector, built from the pinned release by
scripts/install-otelcol.sh (.tools/bin/otelcol-a2aq), run as the mesh tier's
gateway: an OTLP/HTTP receiver on loopback, the ``load_balancing`` exporter
routing logs by ``traceID`` over OTLP/gRPC to backends named by its ``static``
resolver, traces and metrics to ``nop`` (the chart's gateway pipelines, with
the static resolver in place of the k8s one, which needs a cluster).

Membership changes as the real exporter sees them here: the static list is
rewritten in the configuration file and the collector is sent SIGHUP, on which
``otelcol`` reloads its configuration and rebuilds its pipelines (a new
exporter, a new ring; what the old one still queued for a backend that left
is lost, as with the k8s resolver dropping a pod). The dns resolver would
re-resolve by itself every 5 s, but only names the machine's resolver answers
can be given to it, and the tests never change the machine's configuration.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Iterable

import httpx
import yaml

from conftest import need_tool
from support import wait_until

READY = "Everything is ready. Begin running and processing data."


def otelcol() -> str:
    return need_tool("otelcol-a2aq")


def gateway_config(http_port: int, endpoints: Iterable[str]) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "exporters": {
            "load_balancing": {
                "routing_key": "traceID",
                "protocol": {"otlp": {"timeout": "5s", "tls": {"insecure": True}}},
                "resolver": {"static": {"hostnames": sorted(endpoints)}},
            },
            "nop": {},
        },
        "service": {
            # no :8888 of its own: internal metrics off
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {
                "logs": {"receivers": ["otlp"], "exporters": ["load_balancing"]},
                "traces": {"receivers": ["otlp"], "exporters": ["nop"]},
                "metrics": {"receivers": ["otlp"], "exporters": ["nop"]},
            },
        },
    }


class RealCollector:
    """``url`` takes OTLP/HTTP (``/v1/logs``, ``/v1/traces``, ``/v1/metrics``)."""

    def __init__(self, endpoints: Iterable[str], workdir: Path, http_port: int) -> None:
        self.http_port = http_port
        self.config = workdir / "otelcol.yaml"
        self.log = workdir / "otelcol.log"
        self.endpoints = sorted(endpoints)
        self._write()
        self.popen = subprocess.Popen(
            [otelcol(), f"--config=file:{self.config}"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("ab"),
        )
        self._wait_ready(1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _write(self) -> None:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(gateway_config(self.http_port, self.endpoints)), encoding="utf-8")
        tmp.replace(self.config)

    def _readies(self) -> int:
        return self.log.read_text(encoding="utf-8", errors="replace").count(READY)

    def _wait_ready(self, count: int) -> None:
        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"otelcol exited {self.popen.returncode}: {self.log.read_text()[-3000:]}")
            if self._readies() < count:
                return False
            try:  # the receiver answers an empty export
                return httpx.post(f"{self.url}/v1/logs", content=b"",
                                  headers={"content-type": "application/x-protobuf"}, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(ready, "the OpenTelemetry Collector is ready", timeout=60, every=0.05)

    def set_endpoints(self, endpoints: Iterable[str]) -> None:
        """Rewrite the static resolver's list and reload (SIGHUP), as a resolver update."""
        readies = self._readies()
        self.endpoints = sorted(endpoints)
        self._write()
        self.popen.send_signal(signal.SIGHUP)
        self._wait_ready(readies + 1)

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def validate(config: dict[str, Any] | str, workdir: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """``otelcol validate`` on a configuration (a dict, or YAML text)."""
    path = workdir / "validate.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config), encoding="utf-8")
    return subprocess.run([otelcol(), "validate", f"--config=file:{path}"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})
