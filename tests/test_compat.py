"""The instrumentation on older a2a-sdk releases (virtualenvs made by
scripts/install-compat.sh): 1.0.3 is the oldest supported; 1.0.3 and 1.1.1 have no aclose() at all, so everything but
the aclose spans must still work; 1.2.3 is the previous minor release."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import semconv_check as sc
from conftest import IN_CI, ROOT

VERSIONS = ("1.0.3", "1.1.1", "1.2.3")


def compat_bin(name: str) -> Path:
    """The bin/ of the virtualenv scripts/install-compat.sh made for ``name`` (skips, or
    fails in CI, when there is none)."""
    bin_dir = ROOT / ".tools" / "compat" / name / "bin"
    if not (bin_dir / "python").exists():
        message = f"no {name} virtualenv (scripts/install-compat.sh makes it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return bin_dir


def run_relay(version: str, script: str) -> dict:
    """``script`` (beside this file) in that a2a-sdk release's virtualenv; the JSON it prints last."""
    out = subprocess.run([str(compat_bin(f"a2a-sdk-{version}") / "python"), str(Path(__file__).with_name(script))],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("version", VERSIONS)
def test_older_sdk(version: str) -> None:
    result = run_relay(version, "compat_smoke.py")
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
    # the dispatcher's per-sink tasks, counted by the dispatcher's unit (tests/test_awaited_children.py)
    assert result["awaited"] == [{"1.0.3": "EventQueueSink._put_internal", "1.1.1": "EventQueueSink._put_internal"}
                                 .get(version, "EventQueueSource._deliver_to_sink")]
    # the call spans follow the A2A semantic conventions (tests/semconv_check.py), as on 1.3
    assert result["spans"]["SendMessage"] == 6  # this process -> A -> B -> C, both ends of each
    cards = result["cards"]  # the client's target card is the server's own
    assert sc.check_relay(result["records"], result["trace_id"], dict.fromkeys("ABC", "SendMessage"),
                          server_card=cards.get, client_card=cards.get, state=lambda hop: "TASK_STATE_COMPLETED",
                          protocol="1.0") == []


V03_VERSIONS = ("0.3.4", "0.3.9", "0.3.26")


@pytest.mark.parametrize("version", V03_VERSIONS)
def test_sdk_03(version: str) -> None:
    """a2a-sdk 0.3 (strands-agents, BeeAI, and agents written before 1.0): a relay written
    against 0.3's own API. Every hop's producer is seen and joined into one trace per
    cascade over both transports' clients; a task that failed reads failed, never completed."""
    result = run_relay(version, "compat_smoke_03.py")
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
    assert failing["failed"] >= 1 and "task_failed" in failing["kinds"]
    # the call spans follow the A2A semantic conventions like 1.x's (tests/semconv_check.py): 0.3's
    # message/send and message/stream are SendMessage and SendStreamingMessage
    assert result["spans"]["SendMessage"] == 8 and result["spans"]["SendStreamingMessage"] == 4
    hops = {"A": "SendMessage", "B": "SendMessage", "C": "SendStreamingMessage"}

    def card(name: str) -> dict[str, str]:
        return {"gen_ai.agent.name": name, "gen_ai.agent.description": "compat relay", "gen_ai.agent.version": "1.0"}

    for cascade, state in ((ok, "TASK_STATE_COMPLETED"), (failing, "TASK_STATE_FAILED")):
        assert sc.check_relay(
            result["records"], cascade["trace_id"], hops, server_card=card,
            client_card=lambda hop: card("A" if hop == "A" else "next"),  # the card each client was given
            state=lambda hop, state=state: state, protocol="0.3") == [], cascade


def test_sdk_03_shutdown_mid_work_leaks_and_is_never_completed(tmp_path: Path) -> None:
    """a2a-sdk 0.3 has no drain: an agent stopped (SIGTERM) while its task works leaves
    its producer running when the process dies (uvicorn re-raises the signal once its
    shutdown returns). Its shutdown record counts the leaked producer and the cascade is
    held, stuck, by the shut-down hop, never settled (must fire); a task that finished
    before the stop reads completed and the hop's leak count starts at 0 (must not)."""
    import signal
    import threading
    import uuid

    import httpx

    from a2a_quiescence import names
    from a2a_quiescence.demo.harness import Mesh, free_port, stop_process, wait_http
    from a2a_quiescence.wait import NotSettled, wait_sync
    from support import wait_until

    bin_dir = compat_bin("a2a-sdk-0.3.26")

    def send(url: str, trace_id: str, work_ms: int) -> None:
        body = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {
            "kind": "message", "messageId": uuid.uuid4().hex, "role": "user",
            "parts": [{"kind": "text", "text": str(work_ms)}]}}}
        try:
            httpx.post(url, json=body, headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
                       timeout=60)
        except httpx.HTTPError:
            pass  # the agent went away mid-request: that is the point

    with Mesh(tmp_path) as mesh:
        mesh.start_collector(stuck_after=1)
        port = free_port()
        agent = subprocess.Popen(
            [str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "python"),
             str(Path(__file__).with_name("compat_agent_03.py")), "--port", str(port)],
            env=mesh.agent_env("worker03"), cwd=tmp_path, stdout=(tmp_path / "agent.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(url + ".well-known/agent-card.json", proc=agent)
            quick, slow = uuid.uuid4().hex, uuid.uuid4().hex
            send(url, quick, 1)
            assert wait_sync(quick, endpoint=mesh.api, timeout=30)["outcome"] == names.VERDICT_COMPLETED
            caller = threading.Thread(target=send, args=(url, slow, 60_000))
            caller.start()
            wait_until(lambda: httpx.get(f"{mesh.api}/v1/cascades/{slow}", timeout=5).json().get("status") == "open",
                       "the slow cascade at work", timeout=30, every=0.05)
            before = httpx.get(f"{mesh.api}/v1/mesh", timeout=5).json()
            assert stop_process(agent, signal.SIGTERM) is not None
            caller.join(timeout=60)
            with pytest.raises(NotSettled) as held:
                wait_sync(slow, endpoint=mesh.api, timeout=3)
            mesh_view = httpx.get(f"{mesh.api}/v1/mesh", timeout=5).json()
        finally:
            stop_process(agent)
    (worker,) = [a for a in before["agents"] if a["agent"] == "worker03"]
    assert worker["shutdown_leaked_producers"] in (0, None), worker
    state = held.value.state
    assert state["status"] == names.STATUS_STUCK and state.get("outcome") is None, state
    (holder,) = [h for h in state["holders"] if h.get("kind") == "active_hop"]
    assert holder["hop"] == "worker03" and holder["hop_state"] == "shut_down", state
    (worker,) = [a for a in mesh_view["agents"] if a["agent"] == "worker03"]
    assert worker["shutdown_leaked_producers"] >= 1, worker
    assert "internal error" not in (tmp_path / "agent.log").read_text()
