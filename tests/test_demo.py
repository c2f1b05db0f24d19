"""The README's main job, end to end: `python -m a2a_quiescence.demo --short`
(what `bash scripts/demo.sh` runs after its set-up) with a real collector,
Prometheus, Alertmanager and agents under `opentelemetry-instrument`.

Asserts on the summary the demo writes (``--summary-json``) and prints: the
clean cascades settled, the leak at C's shutdown was recorded and its alert
reached Alertmanager's receiver (and no leak alert for the cleanly stopped
A and B), and no process the demo started is left running -- at the end, and
when it is interrupted with Ctrl-C (SIGINT to its process group, as a
terminal sends it) in the middle of its run. Without Prometheus and
Alertmanager it says so and runs everything else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, need_tool
from support import wait_until

from a2a_quiescence import names
from a2a_quiescence.demo.monitoring import ALERTMANAGER, PROMETHEUS

pytestmark = pytest.mark.timeout(240)

DEADLINE = 150.0


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def demo_env() -> dict[str, str]:
    """This environment without OpenTelemetry or a2a-quiescence settings (the demo sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "A2A_QUIESCENCE_"))}


def start_demo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    need_tool(*PROMETHEUS)
    need_tool(*ALERTMANAGER)
    summary = tmp_path / "summary.json"
    env = demo_env()
    popen = subprocess.Popen(
        [sys.executable, "-m", "a2a_quiescence.demo", "--short", "--summary-json", str(summary), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, like a job in a terminal
    )
    return popen, summary


@pytest.mark.external
def test_demo_end_to_end(tmp_path: Path) -> None:
    popen, summary_file = start_demo(tmp_path)
    try:
        out, _ = popen.communicate(timeout=DEADLINE)
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
    assert popen.returncode == 0, out
    summary: dict[str, Any] = json.loads(summary_file.read_text())
    assert summary["completed"] and summary["error"] is None and summary["monitoring"], out

    by_kind: dict[str, list[dict[str, Any]]] = {}
    for c in summary["cascades"]:
        by_kind.setdefault(c["kind"], []).append(c)
    clean = by_kind["clean A->B->C"]
    assert len(clean) == 2 and all(c["status"] == "settled" for c in clean), clean
    assert all(c["detection_latency_seconds"] is not None for c in clean)
    assert [c["status"] for c in by_kind["non-blocking B->C, pushes"]] == ["settled"]
    assert [c["status"] for c in by_kind["#1101 abandoned stream on C"]] == ["settled"]
    [lost] = by_kind["C busy when shut down"]
    assert lost["status"] == "stuck" and "hop C" in lost["held_by"], lost

    hops = {h["agent"]: h for h in summary["hops"]}
    assert hops["C"]["shutdown_leaked_producers"] >= 1
    assert hops["A"]["shutdown_leaked_producers"] == 0 and hops["B"]["shutdown_leaked_producers"] == 0
    assert all(h["state"] == "shut down" for h in hops.values()), hops

    alerts = {(a["alertname"], a["agent"]) for a in summary["alerts"] if a["status"] == "firing"}
    assert (names.ALERT_LEAKED, "C") in alerts
    assert (names.ALERT_CLOSE_STALLED, "C") in alerts
    assert (names.ALERT_LEAKED, "A") not in alerts and (names.ALERT_LEAKED, "B") not in alerts

    # the printed summary says the same
    table = out[out.index("Summary"):]
    assert f"{names.ALERT_LEAKED}(C)" in table
    assert table.count("settled") >= 4 and "stuck" in table

    assert len(summary["pids"]) == 7  # collector, Prometheus, Alertmanager, webhook, A, B, C
    assert [pid for pid in summary["pids"] if alive(pid)] == []


@pytest.mark.external
def test_demo_interrupted_leaves_nothing_running(tmp_path: Path) -> None:
    popen, summary_file = start_demo(tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(popen.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        # Ctrl-C in the middle of the run: once the cascades have begun
        wait_until(lambda: any("clean cascades" in line for line in lines), "the demo to start its cascades",
                   timeout=DEADLINE, every=0.05)
        os.killpg(popen.pid, signal.SIGINT)
        popen.wait(timeout=60)
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
    reader.join(timeout=10)
    out = "".join(lines)
    assert popen.returncode == 130, out
    assert "stopping everything" in out
    summary = json.loads(summary_file.read_text())
    assert not summary["completed"]
    assert len(summary["pids"]) == 7, summary["pids"]
    assert [pid for pid in summary["pids"] if alive(pid)] == []


def test_demo_without_prometheus_and_alertmanager_says_so_and_runs_the_rest(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    env = demo_env()
    env["PATH"] = str(Path(sys.executable).parent)  # this environment's tools only: no prometheus, no alertmanager
    done = subprocess.run(
        [sys.executable, "-m", "a2a_quiescence.demo", "--short", "--summary-json", str(summary_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not installed, so no alerts in this run" in done.stdout
    summary = json.loads(summary_file.read_text())
    assert summary["completed"] and not summary["monitoring"] and summary["alerts"] == []
    assert {h["agent"]: h["shutdown_leaked_producers"] for h in summary["hops"]} == {"A": 0, "B": 0, "C": 1}
    assert len(summary["pids"]) == 5  # collector, webhook, A, B, C
    assert [pid for pid in summary["pids"] if alive(pid)] == []
