"""Real Prometheus scraping a real collector fed by real instrumented agents.

A -> B slow cascade: PromQL sees a2a_producers_in_flight go up on both hops
(max_over_time over the scrapes) and come back to 0 once the cascade is done.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from a2a_quiescence import names
from a2a_quiescence.demo.harness import Mesh, free_port, stop_process, wait_http
from a2a_quiescence.demo.mesh import new_trace_id, send_plan

from conftest import need_tool
from support import TIMED_OUT_LAST, wait_until

pytestmark = pytest.mark.external
DEADLINE = 60.0


def until(what: str, check: Callable[[], Any], timeout: float = DEADLINE, every: float = 0.2) -> Any:
    return wait_until(check, what, timeout=timeout, every=every, message=TIMED_OUT_LAST, final_check=False)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Mesh(workdir=tmp_path) as m:
        yield m


@pytest.fixture
def prometheus(tmp_path: Path, mesh: Mesh) -> Iterator[str]:
    binary = need_tool("prometheus")
    mesh.start_collector()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: a2a-quiescence\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{mesh.collector.port}']\n"
    )
    log = tmp_path / "prometheus.log"
    popen = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", timeout=60, proc=popen)
        yield url
    finally:
        stop_process(popen, timeout=30)


def query(prom: str, expr: str) -> dict[str, float]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    r.raise_for_status()
    data = r.json()["data"]["result"]
    return {item["metric"].get(names.LABEL_AGENT, ""): float(item["value"][1]) for item in data}


def test_in_flight_rises_during_a_slow_cascade_and_returns_to_zero(prometheus: str, mesh: Mesh) -> None:
    mesh.start_agent("B")
    a = mesh.start_agent("A", peers=["B"])
    # the collector is being scraped and knows both agents (their heartbeats) before the cascade
    until("both agents scraped", lambda: {"A", "B"} <= set(query(prometheus, names.M_AGENT_UP)))

    plan = {"work_ms": 3000, "calls": [{"to": "B", "plan": {"work_ms": 4000}}]}
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(send_plan(a.url, plan, trace_id=new_trace_id(), timeout=120))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    sender = threading.Thread(target=run, daemon=True)
    sender.start()
    try:
        peak = f"max_over_time({names.M_PRODUCERS_IN_FLIGHT}[1m])"
        seen = until(
            "in-flight >= 1 on A and B in Prometheus",
            lambda: (v := query(prometheus, peak)) and v.get("A", 0) >= 1 and v.get("B", 0) >= 1 and v,
        )
        assert seen["A"] >= 1 and seen["B"] >= 1
        assert done.wait(120), "the cascade did not finish"
        assert not errors, errors
        until(
            "in-flight back to 0 in Prometheus",
            lambda: (v := query(prometheus, names.M_PRODUCERS_IN_FLIGHT)).get("A") == 0 and v.get("B") == 0,
        )
        # the rise was seen by more than one scrape on the slow hop
        samples = query(prometheus, f"count_over_time(({names.M_PRODUCERS_IN_FLIGHT} >= 1)[1m:1s])")
        assert samples.get("A", 0) >= 1
        started = query(prometheus, names.M_PRODUCERS_STARTED)
        assert started["A"] >= 1 and started["B"] >= 1
    finally:
        sender.join(30)
