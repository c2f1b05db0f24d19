"""The generated "A2A mesh" dashboard and the committed outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import need_tool

from a2a_quiescence.dashboards import dashboard, generate, rules
from a2a_quiescence.dashboards.deployment import DASHBOARD_TITLE, DASHBOARD_UID, DEFAULT, Deployment
from a2a_quiescence.names import EXPORTED_METRICS

ROOT = Path(__file__).resolve().parent.parent
BOARD_TEXT = (generate.GENERATED / generate.DASHBOARD_NAME).read_text()
BOARD = json.loads(BOARD_TEXT)
RULE_FILE = yaml.safe_load((generate.GENERATED / generate.RULES_NAME).read_text())
RECORDED = {r["record"] for g in RULE_FILE["groups"] for r in g["rules"] if "record" in r}
RULE_EXPRS = [r["expr"] for g in RULE_FILE["groups"] for r in g["rules"]]
PANELS = [p for p in dashboard.iter_panels(BOARD) if p["type"] != "row"]

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "atan2", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels and strings left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?", text):
        name, call = match.groups()
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        found.add(name)
    return found


def test_metric_name_parser() -> None:
    assert metric_names(
        'sum by (agent) (rate(a2a_x_total{agent=~"$agent"}[5m])) > 0 or absent(up{job="j"})'
    ) == {"a2a_x_total", "up"}
    assert metric_names('label_replace(m:rec, "id", "$1", "agent", "(.+)")') == {"m:rec"}


def test_committed_outputs_are_fresh() -> None:
    assert generate.stale_files() == []


def test_generate_check_exits_non_zero_when_stale(tmp_path: Path, monkeypatch) -> None:
    stale = tmp_path / "generated.txt"
    stale.write_text("old\n")
    monkeypatch.setattr(generate, "outputs", lambda out=None, deployment=None: {stale: lambda: "new\n"})
    assert generate.main(["--check"]) == 1
    assert stale.read_text() == "old\n"
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0


def test_generate_check_runs_as_a_module() -> None:
    result = subprocess.run([sys.executable, "-m", "a2a_quiescence.dashboards.generate", "--check"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


OTHER = Deployment(job="mesh-monitoring", runbook_base_url="https://runbooks.example/a2a")
# a job named anywhere (a matcher, an expected label, a description), in YAML or JSON text
NAMED_JOB = r'\bjob\W+{}(?![\w-])'


def test_generate_out_renders_another_job_and_runbook_address(tmp_path: Path) -> None:
    """--out with --job and --runbook-url: every query over the collectors selects that job,
    in the same places the default render selects the default one, and every runbook link
    is under that address; the committed files are left alone."""
    committed = {path: path.read_bytes() for path in generate.outputs()}
    argv = ["--out", str(tmp_path), "--job", OTHER.job, "--runbook-url", OTHER.runbook_base_url]
    assert generate.main(argv) == 0
    assert generate.main([*argv, "--check"]) == 0
    assert {path: path.read_bytes() for path in generate.outputs()} == committed
    texts = {name: (tmp_path / name).read_text()
             for name in (generate.RULES_NAME, generate.RULES_TEST_NAME, generate.DASHBOARD_NAME)}
    for name, text in texts.items():
        assert not re.search(NAMED_JOB.format(re.escape(DEFAULT.job)), text), name
        assert re.search(NAMED_JOB.format(re.escape(OTHER.job)), text), name

    rule_file = yaml.safe_load(texts[generate.RULES_NAME])
    rule_exprs = [r["expr"] for g in rule_file["groups"] for r in g["rules"]]
    board = json.loads(texts[generate.DASHBOARD_NAME])
    exprs = rule_exprs + dashboard.promql_expressions(board)
    default_exprs = RULE_EXPRS + dashboard.promql_expressions(BOARD)
    assert len(exprs) == len(default_exprs)
    default_match, other_match = f'job="{DEFAULT.job}"', f'job="{OTHER.job}"'
    for expr, default_expr in zip(exprs, default_exprs):
        assert expr == default_expr.replace(default_match, other_match)
        assert set(re.findall(r'\bjob\s*=~?\s*"([^"]*)"', expr)) <= {OTHER.job}, expr
    # the cascade series, the collectors' up, the detection latency, the ring
    assert sum(other_match in expr for expr in exprs) >= 20
    assert rules.Queries(OTHER).mesh_settled in exprs

    alerts = [r for g in rule_file["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) == len(rules.ALERTS)
    for alert in alerts:
        assert alert["annotations"]["runbook_url"] == f"https://runbooks.example/a2a/{alert['alert']}.md"
    cases = yaml.safe_load(texts[generate.RULES_TEST_NAME])["tests"]
    expected = [e for c in cases for t in c.get("alert_rule_test", []) for e in t["exp_alerts"]]
    assert expected
    for alert in expected:
        assert alert["exp_annotations"]["runbook_url"].startswith("https://runbooks.example/a2a/")


def test_generate_refuses_another_job_for_the_committed_files(capsys: pytest.CaptureFixture[str]) -> None:
    committed = {path: path.read_bytes() for path in generate.outputs()}
    for argv in (["--job", OTHER.job], ["--runbook-url", OTHER.runbook_base_url], ["--check", "--job", OTHER.job]):
        with pytest.raises(SystemExit) as exited:
            generate.main(argv)
        assert exited.value.code == 2, argv
        assert "need --out" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in generate.outputs()} == committed


def test_helm_copies_equal_generated() -> None:
    for name in (generate.RULES_NAME, generate.DASHBOARD_NAME):
        assert (generate.HELM_FILES / name).read_bytes() == (generate.GENERATED / name).read_bytes(), name


def test_every_metric_used_is_exported() -> None:
    allowed = set(EXPORTED_METRICS) | {"up"} | RECORDED
    exprs = RULE_EXPRS + dashboard.promql_expressions(BOARD)
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert used - allowed == set()
    # and the dashboard really shows what the collector exports
    assert set(EXPORTED_METRICS) - used == set()


def test_dashboard_identity() -> None:
    assert BOARD["uid"] == DASHBOARD_UID
    assert BOARD["title"] == DASHBOARD_TITLE


def test_every_panel_has_description_and_unit() -> None:
    for panel in PANELS:
        assert panel.get("description", "").strip(), panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


def test_datasources_are_variables() -> None:
    variables = {v["name"]: v for v in BOARD["templating"]["list"]}
    assert variables[dashboard.VAR_PROMETHEUS]["type"] == "datasource"
    assert variables[dashboard.VAR_PROMETHEUS]["query"] == "prometheus"
    assert variables[dashboard.VAR_TRACES]["type"] == "datasource"
    assert variables[dashboard.VAR_TRACES]["query"] in dashboard.TRACE_BACKENDS
    prometheus_ref = f"${{{dashboard.VAR_PROMETHEUS}}}"
    for panel in PANELS:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == prometheus_ref, panel["title"]
    # no datasource uid anywhere other than a variable reference
    for uid in re.findall(r'"uid": "([^"]*)"', json.dumps(BOARD, indent=1)):
        assert uid == DASHBOARD_UID or uid.startswith("${"), uid


def test_trace_links_use_the_trace_datasource_variable() -> None:
    urls = [link["url"] for panel in PANELS for link in panel.get("links", [])]
    urls += [link["url"] for panel in PANELS
             for link in panel["fieldConfig"]["defaults"].get("links", [])]
    assert urls
    for url in urls:
        assert f"${{{dashboard.VAR_TRACES}}}" in url


def test_expected_panels_are_present() -> None:
    types = {panel["type"] for panel in PANELS}
    assert {"stat", "timeseries", "bargauge", "nodeGraph"} <= types
    node_graph = next(p for p in PANELS if p["type"] == "nodeGraph")
    assert {t["refId"] for t in node_graph["targets"]} == {"nodes", "edges"}
    assert any(rules.R_DETECTION_LATENCY_P99 in t["expr"] for p in PANELS for t in p["targets"])


def test_jaeger_variant_builds() -> None:
    board = dashboard.dashboard_dict("jaeger")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables[dashboard.VAR_TRACES]["query"] == "jaeger"


def test_promql_expressions_substitutes_every_variable() -> None:
    exprs = dashboard.promql_expressions(BOARD_TEXT)
    assert len(exprs) == 1 + sum(len(p["targets"]) for p in PANELS)
    for expr in exprs:
        assert not re.search(r"\$(?!1\b)|\[\[", expr), expr
    assert dashboard.substitute_variables(
        'rate(x{agent=~"$agent"}[$__rate_interval])', BOARD, {"agent": "billing"}
    ) == 'rate(x{agent=~"billing"}[1m])'


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each substituted panel query (as a recording rule)."""
    exprs = dashboard.promql_expressions(BOARD)
    rule_file = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)
    ]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rule_file))
    result = subprocess.run([need_tool("promtool"), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
