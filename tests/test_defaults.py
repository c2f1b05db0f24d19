"""Zero configuration: `a2a-quiescence collector` with no flags, and an agent
started with `opentelemetry-instrument` and no OTLP settings at all, find each
other. Spans and metrics travel over OTLP/gRPC (the Python distro's default,
to 127.0.0.1:4317), lifecycle snapshots over OTLP/HTTP to 127.0.0.1:4318."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from a2a_quiescence import environment_variables as variables
from a2a_quiescence import names
from a2a_quiescence.demo.harness import Proc, free_port, program_path, wait_http
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.wait import wait_sync
from support import TIMED_OUT_LAST, metric, port_free, wait_until


def test_default_ports_need_no_settings(tmp_path: Path) -> None:
    defaults = [int(hp.rsplit(":", 1)[1]) for hp in (names.DEFAULT_OTLP_HTTP, names.DEFAULT_OTLP_GRPC, names.DEFAULT_HTTP)]
    busy = [p for p in defaults if not port_free(p)]
    if busy:
        pytest.fail(f"default ports in use by something else: {busy}")
    log = (tmp_path / "collector.log").open("ab")
    collector = Proc("collector", subprocess.Popen([program_path("a2a-quiescence"), "collector"], stdout=log, stderr=subprocess.STDOUT), defaults[2], tmp_path / "collector.log")
    agent = None
    try:
        wait_http(f"http://{names.DEFAULT_HTTP}/readyz", proc=collector.popen)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "A2A_QUIESCENCE_"))}
        # nothing about where to export: only the hop's name, and faster intervals so the test is short
        env.update({"OTEL_SERVICE_NAME": "solo", "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "500",
                    "OTEL_LOGS_EXPORTER": "none"})
        port = free_port()
        alog = (tmp_path / "agent.log").open("ab")
        agent = Proc("solo", subprocess.Popen(
            [program_path("opentelemetry-instrument"), sys.executable, "-m", "a2a_quiescence.demo.mesh", "--name", "solo", "--port", str(port)],
            env=env, stdout=alog, stderr=subprocess.STDOUT), port, tmp_path / "agent.log")
        wait_http(f"{agent.url}/.well-known/agent-card.json", proc=agent.popen)
        trace_id = new_trace_id()
        import asyncio

        asyncio.run(send_plan(agent.url, {"work_ms": 10}, trace_id=trace_id))
        state = wait_sync(trace_id, endpoint=f"http://{names.DEFAULT_HTTP}", timeout=30)
        assert state["status"] == "settled"
        def received() -> str | None:
            text = httpx.get(f"http://{names.DEFAULT_HTTP}/metrics", timeout=5).text
            got = [metric(text, names.M_RECEIVED, signal=s) for s in ("traces", "metrics")]
            # the first metrics export may precede the request: wait for one that carries the producer
            return text if all(got) and metric(text, names.M_PRODUCERS_STARTED, agent="solo") else None

        # spans and metrics over the default OTLP/gRPC port
        text = wait_until(received, "spans and metrics received", timeout=30, every=0.1, message=TIMED_OUT_LAST)
        assert metric(text, names.M_PRODUCERS_STARTED, agent="solo") == 1
    finally:
        if agent is not None:
            agent.stop()
        collector.stop()


PROBE = (
    "from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor as I; "
    "i = I(); print(i.is_instrumented_by_opentelemetry, i.runtime is not None)"
)


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "True True"),
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "a2a_quiescence"}, "False False"),  # the standard switch
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "httpx,a2a_quiescence"}, "False False"),
        ({variables.DISABLED.name: "true"}, "True False"),  # ours: loaded, patches nothing, reports nothing
    ],
)
def test_switching_the_instrumentation_off(env: dict[str, str], expected: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "A2A_QUIESCENCE_"))}
    r = subprocess.run(
        [program_path("opentelemetry-instrument"), sys.executable, "-c", PROBE],
        env={**clean, "OTEL_SERVICE_NAME": "probe", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
             "OTEL_LOGS_EXPORTER": "none", variables.ENDPOINT.name: "none", **env},
        capture_output=True, text=True, timeout=120, cwd="/",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == expected, (r.stdout, r.stderr)


SDK_SPANS = """
import asyncio, collections, json
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import uvicorn
from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.demo.mesh import build_app, new_trace_id, send_plan

exporter = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))

async def main():
    port = free_port()
    app, _handler, _executor = build_app("A", port, {})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    await send_plan(f"http://127.0.0.1:{port}", {"work_ms": 1}, trace_id=new_trace_id())
    server.should_exit = True
    await task

asyncio.run(main())
scopes = collections.Counter(s.instrumentation_scope.name for s in exporter.get_finished_spans())
print(json.dumps(scopes))
"""


@pytest.mark.parametrize("setting, sdk_spans", [(None, False), ("false", False), ("true", True)])
def test_the_sdks_own_tracing_is_off_unless_asked_for(setting: str | None, sdk_spans: bool) -> None:
    """The README's path (`opentelemetry-instrument python agent.py`, nothing else set)
    leaves a2a-sdk's own tracing (about 60 spans per hop and request) off; an explicit
    OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true is honoured. Ours are there either way."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "A2A_QUIESCENCE_"))}
    env = {**clean, "OTEL_SERVICE_NAME": "lean", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none", variables.ENDPOINT.name: "none"}
    if setting is not None:
        env[variables.OTEL_INSTRUMENTATION_A2A_SDK_ENABLED.name] = setting
    r = subprocess.run([program_path("opentelemetry-instrument"), sys.executable, "-c", SDK_SPANS], env=env,
                       capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    scopes = json.loads(r.stdout.strip().splitlines()[-1])
    assert scopes.get(names.SCOPE, 0) >= 2, scopes  # our server span and producer at least
    assert (scopes.get("a2a-python-sdk", 0) > 0) == sdk_spans, scopes


def _relay_with_sdk_tracing(setting: str) -> dict:
    """tests/compat_smoke.py (this process -> A -> B -> C, instrumented in process) with
    a2a-sdk's own tracing set to ``setting``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "A2A_QUIESCENCE_"))}
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("compat_smoke.py"))],
                       env={**clean, variables.OTEL_INSTRUMENTATION_A2A_SDK_ENABLED.name: setting, variables.ENDPOINT.name: "none"},
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_our_spans_unchanged_with_the_sdks_own_tracing_on() -> None:
    """With OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true a2a-sdk adds its own spans (named by
    Python qualname, not the A2A conventions); ours are the same spans with the same
    attributes (the SDK's sit between some of them as parents), the call spans still follow
    the conventions, and the cascade's accounting (the snapshots' content) is the same."""
    import semconv_check as sc

    off, on = _relay_with_sdk_tracing("false"), _relay_with_sdk_tracing("true")
    assert on["sdk_tracing"] == "true" and off["sdk_tracing"] == "false"

    def ours(result: dict) -> list[tuple]:
        return sorted((r["name"], r["kind"], tuple(sorted(r["attributes"]))) for r in result["records"]
                      if r["scope"] == names.SCOPE)

    def theirs(result: dict) -> int:
        return sum(1 for r in result["records"] if r["scope"] != names.SCOPE)

    assert theirs(off) == 0 and theirs(on) > 0
    assert ours(on) == ours(off)
    for result in (off, on):
        assert {r["trace_id"] for r in result["records"] if r["scope"] == names.SCOPE
                and r["name"] in sc.WELL_KNOWN_METHODS + (names.SPAN_PRODUCER,)} == {result["trace_id"]}
        cards = result["cards"]
        assert sc.check_relay(result["records"], result["trace_id"], dict.fromkeys("ABC", "SendMessage"),
                              server_card=cards.get, client_card=cards.get,
                              state=lambda hop: "TASK_STATE_COMPLETED", protocol="1.0") == []
    accounting = ("sent", "received", "roots", "active", "in_flight", "finished")
    assert {k: on[k] for k in accounting} == {k: off[k] for k in accounting}
