"""The instrumentation on older a2a-sdk releases (virtualenvs made by
scripts/install-compat.sh): 1.0.3 is the oldest supported; 1.0.3 and 1.1.1 have no aclose() at all, so everything but
the aclose spans must still work; 1.2.3 is the previous minor release."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import IN_CI, ROOT

VERSIONS = ("1.0.3", "1.1.1", "1.2.3")


@pytest.mark.parametrize("version", VERSIONS)
def test_older_sdk(version: str) -> None:
    python = ROOT / ".tools" / "compat" / f"a2a-sdk-{version}" / "bin" / "python"
    if not python.exists():
        message = f"no a2a-sdk {version} virtualenv (scripts/install-compat.sh makes it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    out = subprocess.run(
        [str(python), str(Path(__file__).with_name("compat_smoke.py"))],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["a2a_sdk"] == version
    assert result["spans"]["a2a.active_task.producer"] == 3
    assert result["spans"]["a2a.event_queue.close"] >= 6
    assert result["producer_traces"] == [result["trace_id"]], "one trace across A, B and C"
    assert result["in_flight"] == 0 and result["active"] == 0
    assert result["finished"]["completed"] == 3
    assert result["sent"] == result["received"] == 3 and result["roots"] == 1
    has_aclose = version not in ("1.0.3", "1.1.1")
    assert ("DefaultRequestHandlerV2.aclose" in result["patched"]) == has_aclose
    assert ("ActiveTask.start" in result["patched"])


V03_VERSIONS = ("0.3.4", "0.3.9", "0.3.26")


@pytest.mark.parametrize("version", V03_VERSIONS)
def test_sdk_03(version: str) -> None:
    """a2a-sdk 0.3 (strands-agents, BeeAI, and agents written before 1.0): a relay written
    against 0.3's own API. Every hop's producer is seen and joined into one trace per
    cascade over both transports' clients; a task that failed reads failed, never completed."""
    python = ROOT / ".tools" / "compat" / f"a2a-sdk-{version}" / "bin" / "python"
    if not python.exists():
        message = f"no a2a-sdk {version} virtualenv (scripts/install-compat.sh makes it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    out = subprocess.run(
        [str(python), str(Path(__file__).with_name("compat_smoke_03.py"))],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["a2a_sdk"] == version
    assert result["unsupported"] == []
    assert result["log"] == [], "no internal error, no refusal"
    assert "DefaultRequestHandler._run_event_stream" in result["patched"]
    assert "TaskManager._save_task" in result["patched"]
    assert result["still_wrapped"] == [], "uninstrument restores every original"
    ok, failing = result["ok"], result["failing"]
    # three hops per cascade, each producer on its cascade's own trace
    assert result["producer_traces"] == {ok["trace_id"]: 3, failing["trace_id"]: 3}
    assert result["spans"]["a2a.event_queue.close"] >= 6
    assert result["in_flight"] == 0
    for cascade in (ok, failing):
        assert cascade["active"] == 0
        # this process -> A -> B -> C: three messages, each sent and received once
        assert cascade["sent"] == cascade["received"] == 3 and cascade["roots"] == 1
    # must not fire: every hop completed
    assert ok["state"] == "completed" and ok["failed"] == 0 and ok["lost"] == 0
    # must fire: C failed its task; the cascade never reads completed
    assert failing["state"] == "failed"
    assert failing["failed"] >= 1 and "task_failed" in failing["failure_kinds"]
