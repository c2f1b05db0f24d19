"""The Helm chart (helm/a2a-quiescence): lint, render, validate, and agree.

Every combination of values documented in the chart's README (the files in
helm/a2a-quiescence/ci/) is linted and rendered with the real `helm`, and
every rendered manifest is validated strictly: core kinds with
`kubernetes-validate --strict`, the prometheus-operator kinds against the JSON
Schemas vendored in ci/crd-schemas/ (derived from the CRDs, see generate.py
there). Then the rendered objects are checked to agree with each other and
with the rest of the project: ports, endpoints, scrape targets, job name,
rules and dashboard.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from a2a_quiescence import environment_variables as variables
from a2a_quiescence import names
from conftest import ROOT, need_tool

pytestmark = pytest.mark.external

CHART = ROOT / "helm" / "a2a-quiescence"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CRD_SCHEMAS = CHART / "ci" / "crd-schemas"
GENERATED = ROOT / "dashboards" / "generated"
RELEASE = "rel"
NAMESPACE = "mesh"
# The chart's kubeVersion floor (native sidecars) and the newest schema we have.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CRD_KINDS = {"PrometheusRule", "ServiceMonitor", "PodMonitor"}
COMBOS = [None, *CI_VALUES]


def combo_id(values: Path | None) -> str:
    return "defaults" if values is None else values.name.removesuffix("-values.yaml")


def helm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_tool("helm"), *args], capture_output=True, text=True, cwd=cwd, check=False
    )


@lru_cache(maxsize=None)
def render_text(*args: str) -> str:
    done = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def render(*args: str) -> list[dict]:
    """The manifests `helm template` renders with these extra arguments."""
    return [d for d in yaml.safe_load_all(render_text(*args)) if d]


def values_args(values: Path | None) -> tuple[str, ...]:
    return () if values is None else ("--values", str(values))


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, component: str | None = None) -> dict:
    found = [
        d
        for d in by_kind(docs, kind)
        if component is None
        or d["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}"
    return found[0]


@lru_cache(maxsize=None)
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((CRD_SCHEMAS / f"{kind.lower()}-monitoring-v1.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate_strictly(doc: dict) -> None:
    if doc["kind"] in CRD_KINDS:
        errors = sorted(crd_validator(doc["kind"]).iter_errors(doc), key=str)
        assert not errors, f"{doc['kind']}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(map(str, exc.path))
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} ({version}) {where}: {exc.message}")


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def sidecar_of(spec: dict) -> dict:
    found = [c for c in all_containers(spec) if c["name"] == "a2a-quiescence"]
    assert len(found) == 1
    return found[0]


def flag(container: dict, name: str) -> str:
    args = container["args"]
    assert args.count(name) == 1, f"{name} in {args}"
    return args[args.index(name) + 1]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


# --- the vendored CRD schemas themselves -------------------------------------


@pytest.mark.parametrize("kind", sorted(CRD_KINDS))
def test_crd_schema_rejects_unknown_fields_and_bad_durations(kind: str) -> None:
    docs = render("--values", str(CHART / "ci" / "all-values.yaml"))
    doc = one(docs, kind)
    validate_strictly(doc)
    typo = copy.deepcopy(doc)
    typo["spec"]["unknownField"] = 1
    assert any("unknownField" in e.message for e in crd_validator(kind).iter_errors(typo))
    if kind != "PrometheusRule":
        key = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
        bad = copy.deepcopy(doc)
        bad["spec"][key][0]["interval"] = "5 minutes"
        assert list(crd_validator(kind).iter_errors(bad))


def test_core_validation_is_strict() -> None:
    deployment = copy.deepcopy(one(render(), "Deployment", "mesh-collector"))
    pod_spec(deployment)["containers"][0]["readOnlyRootFileSystem"] = True  # typo
    with pytest.raises(pytest.fail.Exception, match="readOnlyRootFileSystem"):
        validate_strictly(deployment)


# --- lint and render every documented combination ---------------------------


def test_every_documented_combination_has_a_values_file() -> None:
    readme = (CHART / "README.md").read_text()
    assert CI_VALUES, "helm/a2a-quiescence/ci/*-values.yaml"
    for path in CI_VALUES:
        assert f"ci/{path.name}" in readme, f"{path.name} is not documented in README.md"


@pytest.mark.parametrize("values", COMBOS, ids=combo_id)
def test_helm_lint(values: Path | None) -> None:
    done = helm("lint", "--strict", str(CHART), *values_args(values))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", COMBOS, ids=combo_id)
def test_rendered_manifests_validate_strictly(values: Path | None) -> None:
    docs = render(*values_args(values))
    assert docs
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE
        validate_strictly(doc)


@pytest.mark.parametrize("values", COMBOS, ids=combo_id)
def test_secure_by_default(values: Path | None) -> None:
    docs = render(*values_args(values))
    for deployment in by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet"):
        spec = pod_spec(deployment)
        assert spec.get("automountServiceAccountToken") is False
        pod_sc = spec.get("securityContext", {})
        for container in all_containers(spec):
            sc = container["securityContext"]
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile"))
            assert seccomp == {"type": "RuntimeDefault"}, where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where


def test_defaults_render_the_mesh_collector_and_nothing_that_needs_crds() -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == ["ConfigMap", "Deployment", "Secret", "Service", "ServiceAccount"]
    assert one(render(), "Deployment", "mesh-collector")["spec"]["replicas"] == 1


# --- bad values fail with a readable message ---------------------------------


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (("--set", "meshCollector.replicas=two"), ["/meshCollector/replicas", "integer"]),
        (("--set", "meshCollector.replicas=3"), ["/meshCollector/replicas"]),
        (("--set-string", "ports.http=9464"), ["/ports/http", "integer"]),
        (("--set", "exampleAgent.enabled=yes"), ["/exampleAgent/enabled", "boolean"]),
        (("--set", "sidecar.nativ=false"), ["/sidecar", "nativ"]),
        (("--set", "serviceMonitr.enabled=true"), ["serviceMonitr"]),
        (("--set", "podMonitor.interval=5min"), ["/podMonitor/interval"]),
        (("--set", "sidecar.resources.limits=null"), ["/sidecar/resources", "limits"]),
        (("--set", "image.pullPolicy=Sometimes"), ["/image/pullPolicy"]),
        # the mesh tier replaces the single mesh collector and needs the sidecars to forward
        (("--set", "meshTier.enabled=true"), ["/meshCollector/enabled", "/sidecar/forwardToMesh"]),
        (("--set", "meshTier.replicas=0"), ["/meshTier/replicas"]),
        (("--set", "meshTier.otelCollector.mode=daemonset"), ["/meshTier/otelCollector/mode"]),
        (("--set", "meshTier.otelCollector.image.tag="), ["/meshTier/otelCollector/image/tag"]),
        (("--values", str(CHART / "ci" / "mesh-tier-values.yaml"), "--set", "meshTier.otelCollector.mode=sidecar"),
         ["/meshTier/otelCollector/sidecar/serviceAccountName"]),
    ],
    ids=lambda v: v[-1] if isinstance(v, tuple) else None,
)
def test_bad_values_fail_with_the_key_named(args: tuple[str, ...], mentions: list[str]) -> None:
    done = helm("template", RELEASE, str(CHART), *args)
    assert done.returncode != 0, done.stdout
    assert "values don't meet the specifications of the schema" in done.stderr
    for word in mentions:
        assert word in done.stderr, done.stderr


# --- the rendered pieces agree with each other and with the project ----------


@pytest.mark.parametrize("ports", [(), ("--set", "ports.otlpHttp=14318,ports.otlpGrpc=14317,ports.http=19464")])
@pytest.mark.parametrize("native", [True, False])
def test_sidecar_agent_and_scrape_target_agree(ports: tuple[str, ...], native: bool) -> None:
    docs = render(
        "--values", str(CHART / "ci" / "all-values.yaml"),
        "--set", f"sidecar.native={str(native).lower()}",
        *ports,
    )  # fmt: skip
    agent_deployment = one(docs, "Deployment", "example-agent")
    spec = pod_spec(agent_deployment)
    sidecar = sidecar_of(spec)
    agent = next(c for c in spec["containers"] if c["name"] == "agent")

    # Native sidecar: an init container that keeps running; else a container.
    if native:
        assert sidecar in spec["initContainers"] and sidecar["restartPolicy"] == "Always"
    else:
        assert sidecar in spec["containers"] and "restartPolicy" not in sidecar
        assert "initContainers" not in spec

    otlp_host, otlp_port = host_port(flag(sidecar, "--otlp-listen"))
    grpc_host, grpc_port = host_port(flag(sidecar, "--otlp-grpc-listen"))
    http_host, http_port = host_port(flag(sidecar, "--http-listen"))
    # OTLP only for the agent in the same pod; HTTP for Prometheus.
    assert (otlp_host, grpc_host, http_host) == ("127.0.0.1", "127.0.0.1", "0.0.0.0")
    if not ports:
        assert otlp_port == host_port(names.DEFAULT_OTLP_HTTP)[1]
        assert grpc_port == host_port(names.DEFAULT_OTLP_GRPC)[1]
        assert http_port == host_port(names.DEFAULT_HTTP)[1]
    else:
        assert (otlp_port, grpc_port, http_port) == (14318, 14317, 19464)

    # The agent exports to exactly where the sidecar listens.
    env = env_of(agent)
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"])
    assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", otlp_host, otlp_port)
    snapshots = urlsplit(env[variables.ENDPOINT.name]["value"])
    assert (snapshots.hostname, snapshots.port, snapshots.path) == (otlp_host, otlp_port, "/v1/logs")
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "http/protobuf"

    # The PodMonitor scrapes the sidecar's named port, which is the HTTP port,
    # and selects the agent pod.
    pod_monitor = one(docs, "PodMonitor")
    (endpoint_spec,) = pod_monitor["spec"]["podMetricsEndpoints"]
    named = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert named[endpoint_spec["port"]] == http_port
    assert endpoint_spec["path"] == "/metrics"
    pod_labels = agent_deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # Probes use the same port.
    for probe in ("livenessProbe", "readinessProbe"):
        assert named[sidecar[probe]["httpGet"]["port"]] == http_port

    # Mesh collector: listens on every interface, Service and ServiceMonitor agree.
    mesh = one(docs, "Deployment", "mesh-collector")
    (collector,) = pod_spec(mesh)["containers"]
    assert host_port(flag(collector, "--otlp-listen")) == ("0.0.0.0", otlp_port)
    assert host_port(flag(collector, "--otlp-grpc-listen")) == ("0.0.0.0", grpc_port)
    assert host_port(flag(collector, "--http-listen")) == ("0.0.0.0", http_port)
    container_ports = {p["name"]: p["containerPort"] for p in collector["ports"]}
    service = one(docs, "Service", "mesh-collector")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for port in service_ports.values():
        assert container_ports[port["targetPort"]] == port["port"]
    assert service["spec"]["selector"].items() <= mesh["spec"]["template"]["metadata"]["labels"].items()
    service_monitor = one(docs, "ServiceMonitor")
    (sm_endpoint,) = service_monitor["spec"]["endpoints"]
    assert service_ports[sm_endpoint["port"]]["port"] == http_port
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert collector["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert collector["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container_ports[collector[probe]["httpGet"]["port"]] == http_port

    # The alert rules match on the scrape job both monitors set.
    from a2a_quiescence.dashboards.deployment import COLLECTOR_JOB

    for endpoint_spec in (sm_endpoint, *pod_monitor["spec"]["podMetricsEndpoints"]):
        relabel = [r for r in endpoint_spec["relabelings"] if r["targetLabel"] == "job"]
        assert relabel == [{"action": "replace", "targetLabel": "job", "replacement": COLLECTOR_JOB}]


@pytest.mark.parametrize("values", ["all-values.yaml", "existing-secret-values.yaml", "no-auth-values.yaml"])
def test_agent_environment(values: str) -> None:
    docs = render("--values", str(CHART / "ci" / values))
    spec = pod_spec(one(docs, "Deployment", "example-agent"))
    agent = next(c for c in spec["containers"] if c["name"] == "agent")
    env = env_of(agent)
    assert env["OTEL_SERVICE_NAME"]["value"] == "example-agent"
    assert env["OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"]["value"] == "false"
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" not in env
    assert agent["command"][0] == "opentelemetry-instrument"
    assert agent["command"][1:] == ["python", "-m", "a2a_quiescence.demo.mesh"]

    secrets = by_kind(docs, "Secret")
    sidecar = sidecar_of(spec)
    mesh = pod_spec(one(docs, "Deployment", "mesh-collector"))["containers"][0]
    if values == "no-auth-values.yaml":
        assert not secrets
        for container in (agent, sidecar, mesh):
            assert variables.TOKEN.name not in env_of(container)
        assert "OTEL_EXPORTER_OTLP_HEADERS" not in env
        return
    expected = (
        {"name": "mesh-token", "key": "bearer"}
        if values == "existing-secret-values.yaml"
        else {"name": secrets[0]["metadata"]["name"], "key": "token"}
    )
    if values == "existing-secret-values.yaml":
        assert not secrets
    else:
        assert len(secrets) == 1 and set(secrets[0]["data"]) == {"token"}
    for container in (agent, sidecar, mesh):
        assert env_of(container)[variables.TOKEN.name]["valueFrom"]["secretKeyRef"] == expected
    # $(A2A_QUIESCENCE_TOKEN) expands only when that variable comes first.
    order = [e["name"] for e in agent["env"]]
    assert order.index(variables.TOKEN.name) < order.index("OTEL_EXPORTER_OTLP_HEADERS")
    assert f"$({variables.TOKEN.name})" in env["OTEL_EXPORTER_OTLP_HEADERS"]["value"]
    for monitor, key in ((one(docs, "ServiceMonitor"), "endpoints"), (one(docs, "PodMonitor"), "podMetricsEndpoints")):
        assert monitor["spec"][key][0]["authorization"]["credentials"] == expected


def test_network_policy_admits_only_agents_and_prometheus() -> None:
    docs = render("--values", str(CHART / "ci" / "all-values.yaml"))
    policy = one(docs, "NetworkPolicy")
    mesh = one(docs, "Deployment", "mesh-collector")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= mesh["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    agents_rule, prometheus_rule = policy["spec"]["ingress"]
    agent_labels = one(docs, "Deployment", "example-agent")["spec"]["template"]["metadata"]["labels"]
    (agents_from,) = agents_rule["from"]
    assert agents_from["podSelector"]["matchLabels"].items() <= agent_labels.items()
    assert "namespaceSelector" not in agents_from  # default: the release's namespace
    container_ports = {p["name"] for p in pod_spec(mesh)["containers"][0]["ports"]}
    assert {p["port"] for p in agents_rule["ports"]} == container_ports
    assert [p["port"] for p in prometheus_rule["ports"]] == ["http"]
    (prometheus_from,) = prometheus_rule["from"]
    assert prometheus_from["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}


def test_prometheus_rule_groups_are_the_generated_rules() -> None:
    docs = render("--set", "prometheusRule.enabled=true")
    groups = one(docs, "PrometheusRule")["spec"]["groups"]
    chart_file = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert groups == (chart_file.get("groups") or [])
    generated = GENERATED / "prometheus-rules.yaml"
    if not generated.exists():
        pytest.skip(f"{generated.relative_to(ROOT)} is not generated yet")
    assert groups == yaml.safe_load(generated.read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert {names.ALERT_LEAKED, names.ALERT_STUCK} <= alerts


def test_dashboard_configmap_is_the_generated_dashboard() -> None:
    config_map = one(render(), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (key,) = config_map["data"]
    assert key.endswith(".json")
    dashboard = json.loads(config_map["data"][key])
    assert dashboard == json.loads((CHART / "files" / "a2a-mesh.json").read_text())
    generated = GENERATED / "a2a-mesh.json"
    if not generated.exists():
        pytest.skip(f"{generated.relative_to(ROOT)} is not generated yet")
    assert dashboard == json.loads(generated.read_text())


def test_templates_work_from_a_parent_chart(tmp_path: Path) -> None:
    """A user's own chart depends on this one and includes the public templates."""
    parent = tmp_path / "my-mesh"
    (parent / "templates").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "a2a-quiescence", ignore=shutil.ignore_patterns("ci"))
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: my-mesh\nversion: 1.0.0\n"
        "dependencies:\n  - name: a2a-quiescence\n    version: 0.1.0\n"
    )
    (parent / "values.yaml").write_text("a2a-quiescence:\n  ports:\n    otlpHttp: 24318\n")
    (parent / "templates" / "planner.yaml").write_text(
        """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: planner
  namespace: {{ .Release.Namespace }}
spec:
  selector:
    matchLabels: {app: planner}
  template:
    metadata:
      labels:
        app: planner
        {{- include "a2a-quiescence.agentLabels" (dict "root" .) | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      initContainers:
        {{- include "a2a-quiescence.sidecar" (dict "root" . "agent" "planner") | nindent 8 }}
      containers:
        - name: planner
          image: example/planner:1.0
          command:
            {{- include "a2a-quiescence.agentCommand" (dict "command" (list "python" "planner.py")) | nindent 12 }}
          env:
            {{- include "a2a-quiescence.agentEnv" (dict "root" . "agent" "planner") | nindent 12 }}
"""
    )
    done = helm("template", RELEASE, str(parent), "--namespace", NAMESPACE)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    for doc in docs:
        validate_strictly(doc)
    planner = next(d for d in docs if d["metadata"]["name"] == "planner")
    spec = pod_spec(planner)
    sidecar = sidecar_of(spec)
    agent = spec["containers"][0]
    assert agent["command"] == ["opentelemetry-instrument", "python", "planner.py"]
    assert flag(sidecar, "--otlp-listen") == "127.0.0.1:24318"
    assert env_of(agent)["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://127.0.0.1:24318"
    assert env_of(agent)["OTEL_SERVICE_NAME"]["value"] == "planner"
    # The token the agent reads is the Secret the dependency creates.
    (secret,) = by_kind(docs, "Secret")
    for container in (agent, sidecar):
        assert env_of(container)[variables.TOKEN.name]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert planner["spec"]["template"]["metadata"]["labels"]["a2a-quiescence/agent"] == "true"


def test_agent_env_without_an_agent_name_fails_readably(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("ci"))
    (chart / "templates" / "bad.yaml").write_text(
        'env: {{- include "a2a-quiescence.agentEnv" (dict "root" .) | nindent 2 }}\n'
    )
    done = helm("template", RELEASE, str(chart))
    assert done.returncode != 0
    assert "pass the agent's name" in done.stderr


def test_install_helm_script_is_idempotent() -> None:
    """With helm already in .tools/bin, the installer does nothing and succeeds."""
    helm_path = Path(need_tool("helm"))
    if helm_path != ROOT / ".tools" / "bin" / "helm":
        pytest.skip("helm is not the one scripts/install-helm.sh installs")
    before = helm_path.stat().st_mtime_ns
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-helm.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert helm_path.stat().st_mtime_ns == before


def _accepted_by_the_cli(container: dict) -> Any:
    """The collector's own argument parsing and checks, run on the rendered args."""
    from a2a_quiescence.cli import build_parser
    from a2a_quiescence.collector.cli import config_from_args

    args = build_parser().parse_args(["collector", *container["args"]])
    return config_from_args(args)


@pytest.mark.parametrize("values", COMBOS, ids=combo_id)
def test_rendered_collector_arguments_are_accepted_by_the_collector(
    values: Path | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a chart that renders fine but whose container refuses its own arguments
    # (say, 0.0.0.0 without --allow-remote) crash-loops: check with the real CLI
    docs = render("--values", str(CHART / "ci" / "all-values.yaml"), *values_args(values))
    _cluster_dns(monkeypatch, docs)
    containers = [sidecar_of(pod_spec(one(docs, "Deployment", "example-agent")))]
    for deployment in by_kind(docs, "Deployment"):
        if deployment["metadata"]["labels"].get("app.kubernetes.io/component") == "mesh-collector":
            containers += pod_spec(deployment)["containers"]
    for statefulset in by_kind(docs, "StatefulSet"):
        (shard,) = pod_spec(statefulset)["containers"]
        for ordinal in range(statefulset["spec"]["replicas"]):
            containers.append(_as_the_kubelet_runs_it(shard, docs, statefulset, ordinal, tmp_path))
    assert len(containers) >= 2
    for container in containers:
        config = _accepted_by_the_cli(container)
        assert config.http_listen.startswith("0.0.0.0:")


def test_sidecar_forwards_to_the_mesh_collector_with_the_token() -> None:
    docs = render("--values", str(CHART / "ci" / "all-values.yaml"), "--set", "sidecar.forwardToMesh=true")
    sidecar = sidecar_of(pod_spec(one(docs, "Deployment", "example-agent")))
    target = urlsplit(flag(sidecar, "--forward"))
    service = one(docs, "Service", "mesh-collector")
    otlp = {p["name"]: p["port"] for p in service["spec"]["ports"]}["otlp-http"]
    assert (target.hostname, target.port) == (service["metadata"]["name"], otlp)
    env = env_of(sidecar)
    assert env["A2A_QUIESCENCE_FORWARD_TOKEN"]["valueFrom"] == env["A2A_QUIESCENCE_TOKEN"]["valueFrom"]
    assert _accepted_by_the_cli(sidecar).forward == flag(sidecar, "--forward")
    # off by default
    plain = sidecar_of(pod_spec(one(render("--values", str(CHART / "ci" / "all-values.yaml")), "Deployment", "example-agent")))
    assert "--forward" not in plain["args"]


def test_a_non_default_metrics_job_reaches_every_selector() -> None:
    """``metricsJob`` names the scrape job both monitors set; the rules and the
    dashboard select the collector by that job, whatever it is."""
    job = "mesh-collectors"
    docs = render("--set", f"metricsJob={job}", "--set", "prometheusRule.enabled=true",
                  "--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true")
    for kind, endpoints in (("ServiceMonitor", "endpoints"), ("PodMonitor", "podMetricsEndpoints")):
        for endpoint in one(docs, kind)["spec"][endpoints]:
            jobs = [r["replacement"] for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"]
            assert jobs == [job], (kind, endpoint)
    rules_text = json.dumps(one(docs, "PrometheusRule")["spec"])
    config_map = one(docs, "ConfigMap")
    dashboard_text = next(iter(config_map["data"].values()))
    json.loads(dashboard_text)  # still valid JSON after the substitution
    for text in (rules_text, dashboard_text):
        selectors = set(re.findall(r'job=\\*"([^"\\]+)\\*"', text))
        assert selectors == {job}, selectors
        assert "a2a-quiescence\\\"}" not in text and 'job="a2a-quiescence"' not in text


def test_a_metrics_job_that_could_break_a_selector_is_refused() -> None:
    done = helm("template", RELEASE, str(CHART), "--set", 'metricsJob=a"b')
    assert done.returncode != 0 and "metricsJob" in done.stderr


# --- the mesh tier -------------------------------------------------------------

MESH_TIER = CHART / "ci" / "mesh-tier-values.yaml"
MESH_TIER_SIDECAR = CHART / "ci" / "mesh-tier-sidecar-values.yaml"
# where the kubelet mounts the token of the pod's ServiceAccount (in-cluster config)
KUBE_API_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
OTEL_IMAGE = "otel/opentelemetry-collector-contrib"


def _component(docs: list[dict], kind: str, component: str) -> list[dict]:
    return [d for d in by_kind(docs, kind) if d["metadata"]["labels"].get("app.kubernetes.io/component") == component]


def _headless(docs: list[dict]) -> dict:
    (service,) = _component(docs, "Service", "mesh-tier")
    return service


def _shard_list(docs: list[dict], statefulset: dict) -> tuple[str, str]:
    """(the shard-list text, the path the shards read it from), via the StatefulSet's volumes."""
    (shard,) = pod_spec(statefulset)["containers"]
    spec_arg = flag(shard, "--shards")
    assert spec_arg.startswith("@"), spec_arg
    path = spec_arg[1:]
    mounts = [m for m in shard["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    (mount,) = mounts
    # a subPath mount is never updated in place: the whole point of the ConfigMap
    assert "subPath" not in mount
    volume = next(v for v in pod_spec(statefulset)["volumes"] if v["name"] == mount["name"])
    config_map = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == volume["configMap"]["name"])
    key = path[len(mount["mountPath"].rstrip("/")) + 1:]
    return config_map["data"][key], path


def _membership(text: str, tmp_path: Path, ring_port: int = 4317) -> Any:
    from a2a_quiescence.shards import ShardSpec

    file = tmp_path / "shards"
    file.write_text(text)
    return ShardSpec(f"@{file}", ring_port).resolve()


def _as_the_kubelet_runs_it(container: dict, docs: list[dict], statefulset: dict, ordinal: int,
                            tmp_path: Path) -> dict:
    """A shard's container with $(POD_NAME) expanded and its shard-list file on this disk."""
    text, path = _shard_list(docs, statefulset)
    local = tmp_path / f"shards-{ordinal}"
    local.write_text(text)
    pod = f"{statefulset['metadata']['name']}-{ordinal}"
    assert env_of(container)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    args = [a.replace("$(POD_NAME)", pod).replace("@" + path, f"@{local}") for a in container["args"]]
    return {**container, "args": args}


def _cluster_dns(monkeypatch: pytest.MonkeyPatch, docs: list[dict]) -> None:
    """Answer the headless Service's cluster DNS name offline, as CoreDNS would: one
    address per shard (publishNotReadyAddresses), so `dns+http://` shard sets resolve."""
    import socket

    real = socket.getaddrinfo
    names: dict[str, int] = {}
    for service in _component(docs, "Service", "mesh-tier"):
        (statefulset,) = by_kind(docs, "StatefulSet")
        name = f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
        names[name] = statefulset["spec"]["replicas"]

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"10.0.0.{i + 1}", 0)) for i in range(names[host])]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def _otel_config(docs: list[dict]) -> dict:
    (config_map,) = [d for d in _component(docs, "ConfigMap", "otel-gateway")]
    return yaml.safe_load(config_map["data"]["config.yaml"])


def _otel_container(spec: dict) -> dict:
    found = [c for c in all_containers(spec) if c["image"].startswith(OTEL_IMAGE)]
    assert len(found) == 1, [c["name"] for c in all_containers(spec)]
    return found[0]


def test_mesh_tier_is_documented_and_off_by_default() -> None:
    readme = (CHART / "README.md").read_text()
    assert "meshTier.enabled" in readme and "load_balancing" in readme
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["meshTier"]["enabled"] is False
    assert not by_kind(render(), "StatefulSet")


@pytest.mark.parametrize("replicas", [3, 1, 5])
def test_mesh_tier_shard_list_names_every_shard_as_the_k8s_resolver_does(replicas: int, tmp_path: Path) -> None:
    docs = render("--values", str(MESH_TIER), "--set", f"meshTier.replicas={replicas}")
    (statefulset,) = by_kind(docs, "StatefulSet")
    assert not _component(docs, "Deployment", "mesh-collector")  # the tier replaces it
    sts = statefulset["metadata"]["name"]
    headless = _headless(docs)
    svc = headless["metadata"]["name"]
    assert statefulset["spec"]["replicas"] == replicas
    assert statefulset["spec"]["serviceName"] == svc
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= pod_labels.items()
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    (shard,) = pod_spec(statefulset)["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in shard["ports"]}
    service_ports = {p["name"]: p for p in headless["spec"]["ports"]}
    assert {n: p["port"] for n, p in service_ports.items()} == {"otlp-grpc": 4317, "http": 9464}
    for port in service_ports.values():
        assert container_ports[port["targetPort"]] == port["port"]
    assert host_port(flag(shard, "--otlp-grpc-listen")) == ("0.0.0.0", 4317)
    assert host_port(flag(shard, "--http-listen")) == ("0.0.0.0", 9464)
    assert "--allow-remote" in shard["args"]

    # the shard list: exactly one entry per ordinal, named as the exporter names it
    text, _ = _shard_list(docs, statefulset)
    membership = _membership(text, tmp_path, int(flag(shard, "--ring-port")))
    expected = sorted(f"{sts}-{i}.{svc}.{NAMESPACE}:4317" for i in range(replicas))
    assert list(membership.endpoints()) == expected
    for entry in membership.shards:
        pod = entry.endpoint.split(".", 1)[0]
        url = urlsplit(entry.url)
        assert (url.scheme, url.hostname, url.port) == ("http", f"{pod}.{svc}.{NAMESPACE}.svc.cluster.local", 9464)

    # --shard-name: $(POD_NAME), expanded by the kubelet, in the resolver's format
    name = flag(shard, "--shard-name")
    assert name == f"$(POD_NAME).{svc}.{NAMESPACE}:4317"
    assert env_of(shard)["POD_NAME"]["valueFrom"]["fieldRef"] == {"apiVersion": "v1", "fieldPath": "metadata.name"}
    assert [name.replace("$(POD_NAME)", f"{sts}-{i}") for i in range(replicas)] == sorted(expected)
    # and every shard, as it will run, is accepted by the collector as a member of the set
    for i in range(replicas):
        config = _accepted_by_the_cli(_as_the_kubelet_runs_it(shard, docs, statefulset, i, tmp_path))
        assert config.shard_name == f"{sts}-{i}.{svc}.{NAMESPACE}:4317"
        assert config.shard_name in membership.endpoints()


def test_changing_replicas_rewrites_the_shard_list_without_restarting_shards() -> None:
    three = render("--values", str(MESH_TIER))
    five = render("--values", str(MESH_TIER), "--set", "meshTier.replicas=5")
    (sts3,), (sts5,) = by_kind(three, "StatefulSet"), by_kind(five, "StatefulSet")
    # the pod template (what a rolling restart is triggered by) does not change
    assert sts3["spec"]["template"] == sts5["spec"]["template"]
    assert _shard_list(three, sts3)[0] != _shard_list(five, sts5)[0]


@pytest.mark.parametrize("values", [MESH_TIER, MESH_TIER_SIDECAR], ids=["gateway", "sidecar"])
def test_otel_collector_routes_logs_by_trace_id_to_the_headless_service(values: Path) -> None:
    from a2a_quiescence.ring import EXPORTER_VERSION

    docs = render("--values", str(values))
    config = _otel_config(docs)
    headless = _headless(docs)
    (statefulset,) = by_kind(docs, "StatefulSet")
    (shard,) = pod_spec(statefulset)["containers"]

    lb = config["exporters"]["load_balancing"]
    assert lb["routing_key"] == "traceID"
    assert lb["protocol"]["otlp"]["tls"] == {"insecure": True}
    assert list(lb["resolver"]) == ["k8s"]  # exactly one resolver
    k8s = lb["resolver"]["k8s"]
    assert k8s["service"] == f"{headless['metadata']['name']}.{NAMESPACE}"
    assert k8s["return_hostnames"] is True
    grpc = {p["name"]: p["port"] for p in headless["spec"]["ports"]}["otlp-grpc"]
    assert k8s["ports"] == [4317] == [grpc] == [int(flag(shard, "--ring-port"))]
    # the resolver's endpoint format is exactly the shards' own names
    assert flag(shard, "--shard-name") == f"$(POD_NAME).{k8s['service']}:{k8s['ports'][0]}"

    logs = config["service"]["pipelines"]["logs"]
    assert logs["receivers"] == ["otlp"] and logs["exporters"] == ["load_balancing"]
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], (kind, component)
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]

    # the token: the shards require it on OTLP, the collector sends it and checks the sidecars'
    headers = lb["protocol"]["otlp"]["headers"]
    assert headers == {"authorization": "Bearer ${env:A2A_QUIESCENCE_TOKEN}"}
    for protocol in config["receivers"]["otlp"]["protocols"].values():
        assert protocol["auth"]["authenticator"] in config["extensions"]

    # the pinned image: the version whose ring a2a_quiescence/ring.py ports
    spec = pod_spec(one(docs, "Deployment", "otel-gateway" if values == MESH_TIER else "example-agent"))
    otel = _otel_container(spec)
    assert otel["image"] == f"{OTEL_IMAGE}:0.161.0"
    assert otel["image"].rsplit(":", 1)[1] == EXPORTER_VERSION.removeprefix("v")
    values_text = (CHART / "values.yaml").read_text()
    assert 'tag: "0.161.0"' in values_text and "ring.py" in values_text
    assert env_of(otel)[variables.TOKEN.name]["valueFrom"]["secretKeyRef"]["key"] == "token"
    # the collector reads the ConfigMap rendered above
    mount = next(m for m in otel["volumeMounts"] if m["mountPath"] == "/conf")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == _component(docs, "ConfigMap", "otel-gateway")[0]["metadata"]["name"]
    assert "--config=/conf/config.yaml" in otel["args"]


@pytest.mark.parametrize("values", [MESH_TIER, MESH_TIER_SIDECAR], ids=["gateway", "sidecar"])
def test_k8s_resolver_may_watch_endpointslices_and_nothing_else_gets_a_token(values: Path) -> None:
    docs = render("--values", str(values))
    (role,) = by_kind(docs, "Role")
    (binding,) = by_kind(docs, "RoleBinding")
    allowed = {(group, resource): set(rule["verbs"])
               for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    assert allowed[("discovery.k8s.io", "endpointslices")] == {"get", "list", "watch"}
    assert allowed[("", "endpoints")] == {"get", "list", "watch"}
    assert all(verbs <= {"get", "list", "watch"} for verbs in allowed.values())
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    owner = one(docs, "Deployment", "otel-gateway" if values == MESH_TIER else "example-agent")
    spec = pod_spec(owner)
    (subject,) = binding["subjects"]
    assert subject == {"kind": "ServiceAccount", "name": spec["serviceAccountName"], "namespace": NAMESPACE}
    assert subject["name"] in {sa["metadata"]["name"] for sa in by_kind(docs, "ServiceAccount")}
    # the token reaches the OpenTelemetry Collector container only
    assert spec["automountServiceAccountToken"] is False
    otel = _otel_container(spec)
    for container in all_containers(spec):
        mounted = [m for m in container.get("volumeMounts", []) if m["mountPath"] == KUBE_API_DIR]
        assert bool(mounted) == (container is otel), container["name"]
    (mount,) = [m for m in otel["volumeMounts"] if m["mountPath"] == KUBE_API_DIR]
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    sources = [next(iter(s)) for s in volume["projected"]["sources"]]
    assert sources == ["serviceAccountToken", "configMap", "downwardAPI"]


def test_pod_sidecar_forwards_to_the_gateway_and_watches_the_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render("--values", str(MESH_TIER))
    sidecar = sidecar_of(pod_spec(one(docs, "Deployment", "example-agent")))
    gateway = one(docs, "Service", "otel-gateway")
    target = urlsplit(flag(sidecar, "--forward"))
    http_port = next(p for p in gateway["spec"]["ports"] if p["name"] == "otlp-http")
    assert (target.scheme, target.hostname, target.port) == ("http", gateway["metadata"]["name"], http_port["port"])
    # the Service port leads to the container port the collector's OTLP/HTTP receiver listens on
    gateway_pods = one(docs, "Deployment", "otel-gateway")
    assert gateway["spec"]["selector"].items() <= gateway_pods["spec"]["template"]["metadata"]["labels"].items()
    named = {p["name"]: p["containerPort"] for p in _otel_container(pod_spec(gateway_pods))["ports"]}
    receiver = _otel_config(docs)["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert host_port(receiver) == ("0.0.0.0", named[http_port["targetPort"]])
    env = env_of(sidecar)
    assert env["A2A_QUIESCENCE_FORWARD_TOKEN"]["valueFrom"] == env[variables.TOKEN.name]["valueFrom"]
    # membership changes: every address of the headless Service
    headless = _headless(docs)
    shards = urlsplit(flag(sidecar, "--shards"))
    assert (shards.scheme, shards.hostname, shards.port) == (
        "dns+http", f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local", 9464)
    assert "--shard-name" not in sidecar["args"]
    # the shards publish how long the sidecars' resends take: they run with the sidecars' settle
    (shard_container,) = pod_spec(by_kind(docs, "StatefulSet")[0])["containers"]
    assert flag(shard_container, "--ring-settle") == flag(sidecar, "--ring-settle") == "6"
    assert flag(shard_container, "--ring-refresh") == flag(sidecar, "--ring-refresh") == "2"
    _cluster_dns(monkeypatch, docs)
    config = _accepted_by_the_cli(sidecar)
    assert config.forward == flag(sidecar, "--forward") and config.shard_name is None
    from a2a_quiescence.shards import ShardSpec

    (statefulset,) = by_kind(docs, "StatefulSet")
    assert len(ShardSpec(config.shards).resolve().shards) == statefulset["spec"]["replicas"]


def test_pod_sidecar_forwards_to_the_collector_in_its_own_pod_in_sidecar_mode() -> None:
    docs = render("--values", str(MESH_TIER_SIDECAR))
    assert not _component(docs, "Deployment", "otel-gateway")
    spec = pod_spec(one(docs, "Deployment", "example-agent"))
    sidecar = sidecar_of(spec)
    otel = _otel_container(spec)
    target = urlsplit(flag(sidecar, "--forward"))
    receiver = _otel_config(docs)["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert host_port(receiver) == (target.hostname, target.port) == ("127.0.0.1", 14318)
    assert target.port in {p["containerPort"] for p in otel["ports"]}
    # no port clash with the a2a-quiescence sidecar in the same pod
    ours = {host_port(flag(sidecar, f))[1] for f in ("--otlp-listen", "--otlp-grpc-listen", "--http-listen")}
    assert not ours & {p["containerPort"] for p in otel["ports"]}
    # a native sidecar too, started before the sidecar that forwards to it
    assert otel["restartPolicy"] == "Always"
    assert spec["initContainers"].index(otel) < spec["initContainers"].index(sidecar)


def test_tier_is_scraped_per_shard_and_the_rules_sum_its_series() -> None:
    from a2a_quiescence.dashboards import rules

    job = "mesh-collectors"
    docs = render("--values", str(MESH_TIER), "--set", f"metricsJob={job}")
    headless = _headless(docs)
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"] == job
    # each shard is its own target, named by its pod
    assert relabel["instance"]["sourceLabels"] == ["__meta_kubernetes_pod_name"]

    groups = one(docs, "PrometheusRule")["spec"]["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    assert alerts[names.ALERT_STUCK]["expr"] == f'sum by (job) ({names.M_CASCADES_STUCK}{{job="{job}"}}) > 0'
    lost = alerts[names.ALERT_SETTLED_LOST]["expr"]
    assert lost.startswith("sum by (job) (increase(") and f'{names.M_CASCADES_SETTLED}{{job="{job}", ' in lost
    # every expression over a cascade series selects the job and aggregates it
    cascade_metrics = (names.M_CASCADES_OPEN, names.M_CASCADES_STUCK, names.M_CASCADES_AWAITING,
                       names.M_CASCADES_MOVED, names.M_MESH_SETTLED, names.M_CASCADES_SETTLED)
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    config_map = next(d for d in by_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"])
    board = json.loads(next(iter(config_map["data"].values())))
    from a2a_quiescence.dashboards.dashboard import iter_panels

    exprs += [t["expr"] for p in iter_panels(board) for t in p.get("targets", []) if t.get("expr")]
    checked = 0
    for expr in exprs:
        for metric in cascade_metrics:
            for match in re.finditer(rf"\b{metric}\b(\{{[^}}]*\}})?", expr):
                checked += 1
                assert match.group(1) and f'job="{job}"' in match.group(1), expr
                assert re.search(r"\b(sum|min|max)\b", expr), expr
    assert checked >= 10
    # the dashboard's verdict is the expression the promtool cases check
    stat_exprs = [t["expr"] for p in iter_panels(board) for t in p.get("targets", [])]
    assert rules.MESH_SETTLED.replace(rules.JOB_MATCH, f'job="{job}"') in stat_exprs


def test_forwarding_sidecars_cascade_series_are_dropped_at_scrape() -> None:
    """A forwarding sidecar sees only its agent's part of a cascade; the sums must
    be over the collectors that decide (the mesh collector, the shards)."""
    docs = render("--values", str(MESH_TIER))
    (endpoint,) = one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"]
    (drop,) = endpoint["metricRelabelings"]
    assert drop["action"] == "drop" and drop["sourceLabels"] == ["__name__"]
    regex = re.compile(drop["regex"])  # Prometheus anchors relabel regexes
    settlement = {names.M_CASCADES_OPEN, names.M_CASCADES_STUCK, names.M_CASCADES_AWAITING,
                  names.M_CASCADES_MOVED, names.M_MESH_SETTLED, names.M_CASCADES_SETTLED,
                  names.M_EDGE_MESSAGES, names.M_DETECTION_LATENCY + "_bucket",
                  names.M_DETECTION_LATENCY + "_sum", names.M_DETECTION_LATENCY + "_count"}
    for metric in names.EXPORTED_METRICS:
        assert bool(regex.fullmatch(metric)) == (metric in settlement), metric
    # without forwarding, a sidecar is its own collector: nothing dropped
    plain = render("--values", str(CHART / "ci" / "all-values.yaml"))
    assert "metricRelabelings" not in one(plain, "PodMonitor")["spec"]["podMetricsEndpoints"][0]


def test_tier_network_policy_admits_the_exporter_agents_shards_and_prometheus() -> None:
    docs = render("--values", str(MESH_TIER))
    (policy,) = _component(docs, "NetworkPolicy", "mesh-tier")
    (statefulset,) = by_kind(docs, "StatefulSet")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    otlp_rule, api_rule, _ = policy["spec"]["ingress"]
    gateway_labels = one(docs, "Deployment", "otel-gateway")["spec"]["template"]["metadata"]["labels"]
    assert otlp_rule["from"][0]["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    assert [p["port"] for p in otlp_rule["ports"]] == ["otlp-grpc"]
    shard_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert any(f["podSelector"].get("matchLabels", {}).items() <= shard_labels.items() for f in api_rule["from"])
    (gateway_policy,) = _component(docs, "NetworkPolicy", "otel-gateway")
    agent_labels = one(docs, "Deployment", "example-agent")["spec"]["template"]["metadata"]["labels"]
    assert gateway_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items() <= agent_labels.items()
