"""The README's main job, end to end: `python -m a2a_quiescence.demo --short`
(what `bash scripts/demo.sh` runs after its set-up) with a real collector,
Prometheus, Alertmanager and agents under `opentelemetry-instrument`.

Asserts on the summary the demo writes (``--summary-json``) and prints: the
clean cascades settled completed; the multi-turn one waited as awaiting_input
past the stuck threshold without being stuck, then completed; the leak at
C's shutdown without a drain was recorded, its cascade stuck, and its alert
reached Alertmanager's receiver (and no leak alert for the cleanly stopped
A and B); when A, B and a restarted C all shut down with aclose() while C
worked, that cascade settled lost, the loss is C's task (the one the agent's
own ground truth names) cancelled by the shutdown, and the
A2AWorkCancelledAtShutdown and A2ACascadeSettledWithLostWork alerts arrived;
and no process the demo started is left running -- at the end, and when it
is interrupted with Ctrl-C (SIGINT to its process group, as a terminal sends
it) in the middle of its run. Without Prometheus and Alertmanager it says so
and runs everything else.
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
from a2a_quiescence.demo.__main__ import STUCK_AFTER
from a2a_quiescence.demo.harness import read_events
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


def check_lost_at_clean_shutdown(summary: dict[str, Any]) -> dict[str, Any]:
    """The cascade C was working on when A, B and C shut down with aclose(): settled lost, and
    the loss is C's own task (as C's ground truth names it), cancelled by the shutdown drain."""
    [lost] = [c for c in summary["cascades"] if c["kind"] == "C busy at aclose() shutdown"]
    assert lost["status"] == "settled" and lost["outcome"] == names.VERDICT_LOST, lost
    assert lost["failures"] == [], lost
    assert {(loss["hop"], loss["kind"]) for loss in lost["losses"]} == {("C", names.END_CANCELLED_BY_SHUTDOWN)}, lost
    c_tasks = {e["task_id"] for e in read_events(Path(summary["workdir"]) / "events.jsonl")
               if e["agent"] == "C" and e["event"] == "work_start" and e["trace_id"] == lost["trace_id"]}
    assert len(c_tasks) == 1 and {loss["task_id"] for loss in lost["losses"]} == c_tasks, (c_tasks, lost)
    # no other cascade lost anything: the lost-work alert can only be this one's
    assert [c["trace_id"] for c in summary["cascades"] if c["outcome"] == names.VERDICT_LOST] == [lost["trace_id"]]
    return lost


def shutdown_records(summary: dict[str, Any]) -> list[tuple[str, bool, int, int, str]]:
    """(agent, drained with aclose, leaked, cancelled, state) per agent process, as the summary lists them."""
    return [(h["agent"], h["aclose"], h["shutdown_leaked_producers"], h["shutdown_cancelled_producers"], h["state"])
            for h in summary["hops"]]


def row(table: str, cascade: dict[str, Any]) -> str:
    """The printed summary's table row of ``cascade`` (the first line naming it)."""
    return next(line for line in table.splitlines() if line.strip().startswith(cascade["trace_id"][:12] + "…"))


# A, B, the first C (no drain: its producer leaked), the restarted C (drained: its producer cancelled)
EXPECTED_SHUTDOWNS = [
    ("A", True, 0, 0, "shut down"),
    ("B", True, 0, 0, "shut down"),
    ("C", False, 1, 0, "shut down"),
    ("C", True, 0, 1, "shut down"),
]


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
    assert all(c["outcome"] == names.VERDICT_COMPLETED for c in clean), clean
    for kind in ("non-blocking B->C, pushes", "#1101 abandoned stream on C"):
        assert [(c["status"], c["outcome"]) for c in by_kind[kind]] == [("settled", names.VERDICT_COMPLETED)], kind
    [waited] = by_kind["multi-turn: C asks for input"]
    assert (waited["status"], waited["outcome"]) == ("settled", names.VERDICT_COMPLETED), waited
    assert waited["awaiting_input_seconds"] >= STUCK_AFTER, waited  # past the collector's --stuck-after, not stuck
    [leaked] = by_kind["C busy when shut down"]
    assert leaked["status"] == "stuck" and leaked["outcome"] is None and "hop C" in leaked["held_by"], leaked
    lost = check_lost_at_clean_shutdown(summary)

    assert shutdown_records(summary) == EXPECTED_SHUTDOWNS, summary["hops"]

    alerts = {(a["alertname"], a["agent"]) for a in summary["alerts"] if a["status"] == "firing"}
    assert (names.ALERT_LEAKED, "C") in alerts
    assert (names.ALERT_CLOSE_STALLED, "C") in alerts
    assert (names.ALERT_LEAKED, "A") not in alerts and (names.ALERT_LEAKED, "B") not in alerts
    assert (names.ALERT_CANCELLED_AT_SHUTDOWN, "C") in alerts
    assert {(names.ALERT_CANCELLED_AT_SHUTDOWN, "A"), (names.ALERT_CANCELLED_AT_SHUTDOWN, "B")}.isdisjoint(alerts)
    assert (names.ALERT_SETTLED_LOST, "") in alerts

    # the printed summary says the same
    table = out[out.index("Summary"):]
    assert f"{names.ALERT_LEAKED}(C)" in table and f"{names.ALERT_CANCELLED_AT_SHUTDOWN}(C)" in table
    assert names.ALERT_SETTLED_LOST in table
    assert row(table, lost).split()[-4:-2] == ["settled", names.VERDICT_LOST]  # then "6.2 ms"
    assert row(table, leaked).split()[-3:] == ["stuck", "-", "-"]
    assert all(row(table, c).split()[-4:-2] == ["settled", names.VERDICT_COMPLETED] for c in clean + [waited])
    assert f"lost on C: task {lost['losses'][0]['task_id']} {names.END_CANCELLED_BY_SHUTDOWN}" in table
    assert f"{waited['trace_id'][:12]}… was awaiting_input" in table

    # collector, Prometheus, Alertmanager, webhook, A, B, and C twice (restarted)
    assert len(summary["pids"]) == 8
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
    assert shutdown_records(summary) == EXPECTED_SHUTDOWNS, summary["hops"]
    check_lost_at_clean_shutdown(summary)
    assert len(summary["pids"]) == 6  # collector, webhook, A, B, C twice
    assert [pid for pid in summary["pids"] if alive(pid)] == []
