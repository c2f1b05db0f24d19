"""The drain gate (`--a2a-quiescence-gate`) in front of a suite that knows no
trace ids, against the demo mesh: a collector and demo agents as
subprocesses (A -> B -> {C, U}, U not instrumented; D on its own), and an
inner pytest run (pytester, a subprocess) whose tests call the agents the way
a conformance-style suite does, then return.

What must hold: a test that returns while C still works and pushes is held
until the cascade settles, then passes; a test whose agent's work is cancelled
by a shutdown drain errors in teardown naming the loss; a test whose cascade
never settles errors with its holders after the timeout, and does not hold
the next test's gate; a test with no agent calls passes; an allowed failure
passes. The window is each test's own, from its setup to its teardown.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import httpcore  # noqa: F401 - imported before pytester snapshots sys.modules (see below)
import pytest

from a2a_quiescence.demo.harness import Mesh, program_path, read_events

# pytester removes the modules first imported during its test; httpx maps httpcore's
# exceptions through classes it caches on first use, so httpcore must outlive the test

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(300)

INNER = textwrap.dedent(
    '''
    import asyncio, json, os, time

    import httpx
    import pytest

    from a2a_quiescence.demo.mesh import new_trace_id, send_plan

    A, D, U, EVENTS, MARKS = (os.environ[k] for k in ("GATE_A", "GATE_D", "GATE_U", "GATE_EVENTS", "GATE_MARKS"))
    D_PID = int(os.environ["GATE_D_PID"])


    def note(**fields):
        with open(MARKS, "a") as f:
            f.write(json.dumps({"t": time.time(), **fields}) + "\\n")


    @pytest.fixture(autouse=True)
    def after_the_gate(request):
        yield
        note(test=request.node.name, event="finalized")  # fixtures are finalized after the gate


    def test_returns_while_pushes_are_in_flight():
        trace_id = new_trace_id()
        note(test="test_returns_while_pushes_are_in_flight", trace_id=trace_id)
        plan = {"calls": [{"to": "B", "plan": {"calls": [{"to": "C", "blocking": False, "push": True,
                                                         "plan": {"work_ms": 400, "stream_events": 2}}]}}]}
        asyncio.run(send_plan(A, plan, trace_id=trace_id))  # B returned at once; C works, then pushes


    def test_no_agent_calls():
        assert 1 + 1 == 2


    def test_a_cascade_that_never_settles():
        asyncio.run(send_plan(A, {"calls": [{"to": "B", "plan": {"calls": [{"to": "U"}]}}]}))


    def test_calls_an_uninstrumented_agent_directly():
        asyncio.run(send_plan(U, {"work_ms": 1}))  # U answers; it reports nothing


    def test_right_after_one_that_never_settled():
        asyncio.run(send_plan(A, {"calls": [{"to": "B"}]}))


    def test_work_cancelled_by_a_shutdown_drain():
        asyncio.run(send_plan(D, {"work_ms": 120000}, return_immediately=True))
        deadline = time.monotonic() + 60
        while not any(json.loads(line).get("agent") == "D" and json.loads(line)["event"] == "work_start"
                      for line in open(EVENTS)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(D_PID, 15)  # D drains with aclose() in its lifespan
        while True:
            try:
                httpx.get(D + ".well-known/agent-card.json", timeout=1)
            except httpx.TransportError:
                break  # D is gone
            assert time.monotonic() < deadline
            time.sleep(0.02)


    @pytest.mark.a2a_quiescence_gate(allow={"failed"})
    def test_a_failure_this_test_allows():
        asyncio.run(send_plan(A, {"calls": [{"to": "B", "plan": {"outcome": "fail"}}]}))
    '''
)


def wait_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([program_path("a2a-quiescence"), "wait", *args], capture_output=True, text=True, timeout=60)


def test_gate_against_the_demo_mesh(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events, marks = tmp_path / "events.jsonl", tmp_path / "marks.jsonl"
    with Mesh(tmp_path, events=events) as mesh:
        mesh.start_collector()
        mesh.start_webhook()
        mesh.start_agent("C")
        mesh.start_agent("U", instrument=False)
        mesh.start_agent("B", ["C", "U"])
        mesh.start_agent("A", ["B"])
        d = mesh.start_agent("D")
        for key, value in {"GATE_A": mesh.agents["A"].url + "/", "GATE_D": d.url + "/",
                           "GATE_U": mesh.agents["U"].url + "/", "GATE_EVENTS": str(events),
                           "GATE_MARKS": str(marks), "GATE_D_PID": str(d.popen.pid),
                           # the test process ships its own cascades (it is their root hop) here
                           "A2A_QUIESCENCE_ENDPOINT": f"http://127.0.0.1:{mesh.otlp_port}/v1/logs"}.items():
            monkeypatch.setenv(key, value)
        pytester.makepyfile(test_suite=INNER)
        began = time.time()
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-p", "no:randomly", "-q", "-rA",
            "--a2a-quiescence-gate", f"--a2a-quiescence-endpoint={mesh.api}", "--a2a-quiescence-timeout=5",
        )
        ended = time.time()
        # the same gate by hand, over the whole run: the worst outcome decides the exit code
        whole = wait_cli("--mesh", "--since", repr(began), "--until", repr(ended), "--endpoint", mesh.api,
                         "--timeout", "5")
        nothing = wait_cli("--mesh", "--since", repr(ended), "--endpoint", mesh.api, "--timeout", "5")
        usage = wait_cli("--mesh", "--endpoint", mesh.api)
    assert whole.returncode == 1, whole.stderr  # U's cascade never settles
    assert "no reports from" in whole.stderr and "lost on D" in whole.stderr
    assert nothing.returncode == 0 and "quiet: 0 cascade(s)" in nothing.stdout, (nothing.stdout, nothing.stderr)
    assert usage.returncode == 2 and "--since" in usage.stderr
    out = result.stdout.str()
    result.assert_outcomes(passed=7, errors=3)
    errors = {line.split(" - ")[0].split("::")[-1]: line for line in out.splitlines() if line.startswith("ERROR ")}
    assert set(errors) == {"test_a_cascade_that_never_settles", "test_work_cancelled_by_a_shutdown_drain",
                           "test_calls_an_uninstrumented_agent_directly"}, out
    # never vacuous: the test process is the root hop of what it sends, so an agent that
    # answers and reports nothing holds the test, named by its address
    u_address = mesh.agents["U"].url.split("//", 1)[1].rstrip("/")
    assert f"no reports from {u_address}" in errors["test_calls_an_uninstrumented_agent_directly"] or (
        f"no reports from {u_address}" in out), out
    assert "not every cascade of this test settled within 5s" in out
    assert "no reports from" in out  # the holder: the edge into U, which never reports
    assert "settled lost" in out and "lost on D" in out and "cancelled_by_shutdown" in out
    [summary] = [line for line in out.splitlines() if line.startswith("a2a-quiescence gate: 7 test(s), added median")]
    print(summary)  # what the gate added per test (shown with -s)

    # held until the pushes were delivered: the test's fixtures were finalized after the last push
    notes = [json.loads(line) for line in marks.read_text().splitlines()]
    [pushed] = [n["trace_id"] for n in notes if n.get("trace_id")]
    [released] = [n["t"] for n in notes if n.get("event") == "finalized"
                  and n["test"] == "test_returns_while_pushes_are_in_flight"]
    truth = [e for e in read_events(events) if e.get("trace_id") == pushed]
    pushes = [e["t"] for e in truth if e["event"] == "push_received"]
    c_done = [e["t"] for e in truth if e["agent"] == "C" and e["event"] == "work_end"]
    assert pushes and c_done, truth
    assert released >= max(pushes + c_done)
