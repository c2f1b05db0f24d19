"""The real OpenTelemetry Collector, built here from the pinned release with the
OpenTelemetry Collector Builder (collector/otelcol/builder-config.yaml,
scripts/install-otelcol.sh): one release everywhere, every configuration the
chart renders loads (`otelcol validate`), a broken one does not, and the real
``load_balancing`` exporter routes each log record to the backend our ring
names, before and after a membership change it really sees.

The live mesh tier through this collector (agents, pod sidecar, shards, a shard
lost and one added) is tests/test_tier.py's `otelcol` case.
"""

from __future__ import annotations

import copy
import secrets
import subprocess
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.logs.v1 import logs_pb2

from a2a_quiescence.demo.harness import free_port
from a2a_quiescence.ring import EXPORTER_VERSION, Ring
from conftest import ROOT, need_tool
from otelcol import RealCollector, otelcol, validate
from support import wait_until

pytestmark = pytest.mark.timeout(300)

MANIFEST = ROOT / "collector" / "otelcol" / "builder-config.yaml"
CHART = ROOT / "helm" / "a2a-quiescence"
TOKEN_ENV = {"A2A_QUIESCENCE_TOKEN": "t0ken"}
CORE = "go.opentelemetry.io/collector/"
CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib/"


def manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))


def gomods() -> list[tuple[str, str]]:
    data = manifest()
    out = []
    for kind in ("receivers", "processors", "exporters", "extensions", "connectors", "providers"):
        for entry in data.get(kind) or []:
            module, version = entry["gomod"].split()
            out.append((module, version))
    return out


# -- one release everywhere ------------------------------------------------------------


def test_manifest_chart_and_ring_pin_one_release() -> None:
    release = EXPORTER_VERSION  # the ring a2a_quiescence/ring.py ports
    versions = {}
    for module, version in gomods():
        if module.startswith(CONTRIB):
            versions.setdefault("contrib", set()).add(version)
        elif module.startswith(CORE + "confmap/provider/"):
            versions.setdefault("stable", set()).add(version)  # 1.x modules of the same core release
        elif module.startswith(CORE):
            versions.setdefault("core", set()).add(version)
        else:
            pytest.fail(f"{module}: neither a core nor a contrib collector module")
    assert versions["contrib"] == {release} and versions["core"] == {release}, versions
    assert len(versions["stable"]) == 1 and next(iter(versions["stable"])).startswith("v1."), versions
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["meshTier"]["otelCollector"]["image"]["tag"] == release.removeprefix("v")
    assert manifest()["dist"]["version"].startswith(release.removeprefix("v") + "-")
    built = subprocess.run([otelcol(), "--version"], capture_output=True, text=True, timeout=60)
    assert built.stdout.split()[-1] == manifest()["dist"]["version"], built.stdout
    # the builder script takes its own release from the manifest, so it cannot drift either
    check = subprocess.run(["bash", str(ROOT / "scripts" / "install-otelcol.sh"), "--check"], timeout=120)
    assert check.returncode == 0, "the collector in .tools/bin was not built from this manifest"


def _helm_render(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run([need_tool("helm"), "template", "rel", str(CHART), "--namespace", "mesh", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _rendered_config(*args: str) -> dict[str, Any]:
    docs = _helm_render(*args)
    maps = [d for d in docs if d["kind"] == "ConfigMap"
            and d["metadata"]["labels"].get("app.kubernetes.io/component") == "otel-gateway"]
    assert len(maps) == 1, [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
    return yaml.safe_load(maps[0]["data"]["config.yaml"])


TEMPO = ("--set-json", 'meshTier.otelCollector.config={"exporters": {"otlp_grpc/tempo": {"endpoint": "tempo:4317", '
         '"tls": {"insecure": true}}}, "service": {"pipelines": {"traces": {"exporters": ["otlp_grpc/tempo"]}}}}')
CONFIGS = {
    "gateway": ("--values", str(CHART / "ci" / "mesh-tier-values.yaml")),
    "gateway-no-auth": ("--values", str(CHART / "ci" / "mesh-tier-values.yaml"), "--set", "auth.enabled=false"),
    "sidecar": ("--values", str(CHART / "ci" / "mesh-tier-sidecar-values.yaml")),
    "sidecar-no-auth": ("--values", str(CHART / "ci" / "mesh-tier-sidecar-values.yaml"),
                        "--set", "auth.enabled=false"),
    "gateway-traces-to-tempo": ("--values", str(CHART / "ci" / "mesh-tier-values.yaml"), *TEMPO),
}


def test_the_manifest_builds_every_component_the_chart_names() -> None:
    listed = yaml.safe_load(subprocess.run([otelcol(), "components"], capture_output=True, text=True,
                                           timeout=60, check=True).stdout)
    built = {kind: {c["name"] for c in listed.get(kind) or []}
             for kind in ("receivers", "processors", "exporters", "extensions")}
    for name, args in CONFIGS.items():
        config = _rendered_config(*args)
        for kind in built:
            for component in config.get(kind) or {}:
                assert component.split("/")[0] in built[kind], f"{name}: {kind} {component} is not built"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_configuration_the_chart_renders_loads(name: str, tmp_path: Path) -> None:
    config = _rendered_config(*CONFIGS[name])
    auth = "bearertokenauth" in (config.get("extensions") or {})
    assert auth == ("no-auth" not in name)
    done = validate(config, tmp_path, TOKEN_ENV)
    assert done.returncode == 0, done.stdout + done.stderr


def _break(config: dict[str, Any], how: str) -> dict[str, Any]:
    bad = copy.deepcopy(config)
    lb = bad["exporters"]["load_balancing"]
    if how == "routing_key":
        lb["routing_key"] = "traceid"  # the key is case-sensitive: traceID
    elif how == "two_resolvers":
        lb["resolver"]["static"] = {"hostnames": ["a:4317"]}
    elif how == "unknown_exporter":
        bad["service"]["pipelines"]["logs"]["exporters"] = ["load_balancing", "kafka"]
    elif how == "unknown_key":
        lb["protocol"]["otlp"]["tsl"] = {"insecure": True}
    return bad


@pytest.mark.parametrize("how, mentions", [
    ("routing_key", "traceid"),
    ("two_resolvers", "resolver"),
    ("unknown_exporter", "kafka"),
    ("unknown_key", "tsl"),
])
def test_a_broken_configuration_is_refused_with_the_cause(how: str, mentions: str, tmp_path: Path) -> None:
    config = _rendered_config(*CONFIGS["gateway"])
    assert validate(config, tmp_path, TOKEN_ENV).returncode == 0  # the same config, unbroken, loads
    done = validate(_break(config, how), tmp_path, TOKEN_ENV)
    assert done.returncode != 0
    assert mentions in done.stdout + done.stderr, done.stdout + done.stderr


# -- the real exporter routes as our ring does --------------------------------------------


class RecordingBackend(logs_service_pb2_grpc.LogsServiceServicer):
    """An OTLP/gRPC logs backend that notes the trace id of every record it gets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.trace_ids: list[str] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self, self.server)
        assert self.server.add_insecure_port(f"127.0.0.1:{self.port}") == self.port
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method's name
        with self.lock:
            for resource in request.resource_logs:
                for scope in resource.scope_logs:
                    self.trace_ids.extend(r.trace_id.hex() for r in scope.log_records)
        return logs_service_pb2.ExportLogsServiceResponse()

    def seen(self) -> set[str]:
        with self.lock:
            return set(self.trace_ids)

    def stop(self) -> None:
        self.server.stop(grace=None)


def _logs_request(trace_ids: list[str]) -> bytes:
    records = [logs_pb2.LogRecord(trace_id=bytes.fromhex(t), span_id=bytes(8), body={"string_value": t})
               for t in trace_ids]
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=records)])]
    ).SerializeToString()


def _send_and_collect(collector: RealCollector, backends: list[RecordingBackend], trace_ids: list[str]
                      ) -> dict[str, str]:
    """POST one request holding a record per trace id; wait until each reached a backend."""
    before = {b.endpoint: b.seen() for b in backends}
    response = httpx.post(f"{collector.url}/v1/logs", content=_logs_request(trace_ids),
                          headers={"content-type": "application/x-protobuf"}, timeout=10)
    assert response.status_code == 200, response.text
    wanted = set(trace_ids)

    def arrived() -> bool:
        return wanted <= set().union(*(b.seen() - before[b.endpoint] for b in backends))

    wait_until(arrived, "every record reached a backend", timeout=60, every=0.05)
    where: dict[str, str] = {}
    for backend in backends:
        for trace_id in (backend.seen() - before[backend.endpoint]) & wanted:
            assert trace_id not in where, f"{trace_id} reached {where[trace_id]} and {backend.endpoint}"
            where[trace_id] = backend.endpoint
    return where


def test_the_real_exporter_routes_every_record_to_the_shard_our_ring_names(tmp_path: Path) -> None:
    backends = [RecordingBackend() for _ in range(4)]
    collector = None
    try:
        three = [b.endpoint for b in backends[:3]]
        collector = RealCollector(three, tmp_path, free_port())
        first = [secrets.token_hex(16) for _ in range(600)]
        where = _send_and_collect(collector, backends, first)
        ring = Ring(sorted(three))
        wrong = {t: (where[t], ring.endpoint_for(t)) for t in first if where[t] != ring.endpoint_for(t)}
        assert not wrong, f"{len(wrong)} of {len(first)} routed elsewhere than our ring: {list(wrong.items())[:5]}"
        assert set(where.values()) == set(three)  # every backend got its share
        assert not backends[3].seen()

        # a membership change the real exporter sees: one backend out, one in; the ring follows
        after = [backends[0].endpoint, backends[2].endpoint, backends[3].endpoint]
        collector.set_endpoints(after)
        second = [secrets.token_hex(16) for _ in range(600)]
        where = _send_and_collect(collector, backends, second)
        ring = Ring(sorted(after))
        wrong = {t: (where[t], ring.endpoint_for(t)) for t in second if where[t] != ring.endpoint_for(t)}
        assert not wrong, f"{len(wrong)} of {len(second)} routed elsewhere after the change: {list(wrong.items())[:5]}"
        assert backends[1].endpoint not in where.values()
        # the change moved keys, so a stale ring would have been caught above
        assert any(Ring(sorted(three)).endpoint_for(t) != where[t] for t in second)
    finally:
        if collector is not None:
            collector.close()
        for backend in backends:
            backend.stop()

