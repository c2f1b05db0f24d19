"""fasta2a (pydantic-ai's A2A server) as a hop like any other, in the virtualenv
scripts/install-compat.sh makes (fasta2a 2.1.1 with pydantic-ai, this project
editable): a relay of three pydantic-ai agents with stub models
(tests/compat_smoke_fasta2a.py), and fasta2a's own Worker API for what
pydantic-ai's worker never does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import semconv_check as sc
from a2a_quiescence import names
from conftest import IN_CI, ROOT

PYTHON = ROOT / ".tools" / "compat" / "fasta2a-2.1.1" / "bin" / "python"
SMOKE = Path(__file__).with_name("compat_smoke_fasta2a.py")


def run_smoke(*args: str) -> dict:
    if not PYTHON.exists():
        message = "no fasta2a virtualenv (scripts/install-compat.sh makes it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    out = subprocess.run([str(PYTHON), str(SMOKE), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pydantic_ai_relay() -> None:
    result = run_smoke()
    assert result["fasta2a"] == "2.1.1" and result["backends"] == ["fasta2a (2.1.1)"]
    assert result["unsupported"] == [] and result["log"] == []
    assert {"Worker._handle_task_operation", "InMemoryBroker.run_task", "TaskManager.send_message",
            "A2AClient.send_message"} <= set(result["patched"])
    assert result["still_wrapped"] == [], "uninstrument restores every original"
    ok, failing = result["ok"], result["failing"]
    # the worker's operation is each hop's producer, on its cascade's trace (joined across
    # fasta2a's client, which takes no headers of its own, both with and without streaming)
    assert result["producer_traces"] == {ok["trace_id"]: 3, failing["trace_id"]: 3}
    # the call spans follow the A2A semantic conventions like a2a-sdk's (tests/semconv_check.py):
    # fasta2a's message/send and message/stream are SendMessage and SendStreamingMessage, B's
    # streamed call to C counted at both ends in both cascades
    assert result["spans"]["SendStreamingMessage"] == 4 and result["spans"]["SendMessage"] == 8
    hops = {"A": "SendMessage", "B": "SendMessage", "C": "SendStreamingMessage"}
    for cascade, last in ((ok, "TASK_STATE_COMPLETED"), (failing, "TASK_STATE_FAILED")):
        assert sc.check_relay(
            result["records"], cascade["trace_id"], hops,
            # the app's name and version (fasta2a's default description is none); its client
            # is given a URL, no card
            server_card=lambda hop: {"gen_ai.agent.name": hop, "gen_ai.agent.version": "1.0.0"},
            client_card=lambda hop: None,
            # a SendMessage is answered at once with the submitted task; the stream ends with the last state
            state=lambda hop, last=last: last if hop == "C" else "TASK_STATE_SUBMITTED",
            protocol=None) == [], cascade
    assert result["in_flight"] == 0
    for cascade in (ok, failing):
        assert cascade["active"] == 0
        assert cascade["sent"] == cascade["received"] == 3 and cascade["roots"] == 1
    # must not fire
    assert ok["state"] == "completed" and ok["failed"] == ok["lost"] == 0
    assert result["outcomes"] == {"completed": 3, "failed": 3}
    # must fire: C's model raised, every task failed; never read as completed
    assert failing["state"] == "failed"
    assert failing["failed"] == 3 and failing["kinds"] == [names.END_TASK_FAILED]


def test_worker_edges() -> None:
    result = run_smoke("--edges")
    seen = result["in_memory"]["cascades"]
    # must not fire: a task the worker completed
    assert seen["all good"] == {**seen["all good"], "active": 0, "lost": 0, "failed": 0}
    # must fire: the worker returned and left its task working: lost, never completed
    wander = seen["wander off"]
    assert wander["active"] == 0 and wander["lost"] == 1 and wander["kinds"] == [names.END_TASK_ABANDONED]
    # a task waiting for its user holds its cascade (awaiting input, not settled) ...
    ask = seen["ask me"]
    assert ask["active"] == 1 and ask["awaiting"] == {ask["task_id"]: "input_required"}
    assert ask["lost"] == ask["failed"] == 0
    # ... until the next message in its context
    assert seen["ask me, once answered"] == {"active": 0, "awaiting": {}, "failed": 0, "lost": 0, "kinds": []}
    # the broker check: must not fire for InMemoryBroker, must fire for anything else
    assert result["in_memory"]["unsupported"] == []
    (refused,) = result["remote"]["unsupported"]
    assert refused["library"] == "fasta2a" and "RemoteBroker" in refused["reason"]
    assert any("not InMemoryBroker" in line for line in result["log"])
