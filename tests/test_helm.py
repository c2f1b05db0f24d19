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
    for deployment in by_kind(render(*values_args(values)), "Deployment"):
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
    ],
    ids=lambda v: v[1] if isinstance(v, tuple) else None,
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
    snapshots = urlsplit(env[names.ENV_ENDPOINT]["value"])
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
            assert names.ENV_TOKEN not in env_of(container)
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
        assert env_of(container)[names.ENV_TOKEN]["valueFrom"]["secretKeyRef"] == expected
    # $(A2A_QUIESCENCE_TOKEN) expands only when that variable comes first.
    order = [e["name"] for e in agent["env"]]
    assert order.index(names.ENV_TOKEN) < order.index("OTEL_EXPORTER_OTLP_HEADERS")
    assert f"$({names.ENV_TOKEN})" in env["OTEL_EXPORTER_OTLP_HEADERS"]["value"]
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
        assert env_of(container)[names.ENV_TOKEN]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
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
def test_rendered_collector_arguments_are_accepted_by_the_collector(values: Path | None) -> None:
    # a chart that renders fine but whose container refuses its own arguments
    # (say, 0.0.0.0 without --allow-remote) crash-loops: check with the real CLI
    docs = render("--values", str(CHART / "ci" / "all-values.yaml"), *values_args(values))
    containers = [sidecar_of(pod_spec(one(docs, "Deployment", "example-agent")))]
    containers += pod_spec(one(docs, "Deployment", "mesh-collector"))["containers"]
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
