"""The generated Prometheus rules, checked and unit-tested with promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from conftest import need_tool

from a2a_quiescence import names
from a2a_quiescence.dashboards import alert_cases, generate, rules
from a2a_quiescence.dashboards.deployment import Deployment
from a2a_quiescence.dashboards.generate import GENERATED, RULES_NAME, RULES_TEST_NAME

RULES = GENERATED / RULES_NAME
RULES_TESTS = GENERATED / RULES_TEST_NAME
ALERT_NAMES = {value for key, value in vars(names).items() if key.startswith("ALERT_")}


def promtool(*args: str, cwd: Path = GENERATED) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need_tool("promtool"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", str(RULES_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: a leaked-producer alert on a clean shutdown must not pass."""
    (tmp_path / RULES_NAME).write_text(RULES.read_text())
    suite = alert_cases.rules_test_file()
    clean = next(t for t in suite["tests"] if t["name"].startswith("a clean shutdown"))
    clean["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "warning"}}]
    (tmp_path / "tests.yaml").write_text(rules.to_yaml(suite))
    result = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode != 0


def test_promtool_passes_the_rules_rendered_for_another_deployment(tmp_path: Path) -> None:
    """The rules and their cases rendered for another scrape job and runbook address
    (what generate --out writes) pass promtool; the default deployment's cases do not
    pass against those rules, which select the other job."""
    other = Deployment(job="mesh-monitoring", runbook_base_url="https://runbooks.example/a2a/")
    generate.write_all(tmp_path, other)
    result = promtool("check", "rules", RULES_NAME, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("test", "rules", RULES_TEST_NAME, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    (tmp_path / "default-cases.yaml").write_text(RULES_TESTS.read_text())
    result = promtool("test", "rules", "default-cases.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert names.ALERT_COLLECTOR_DOWN in result.stdout + result.stderr


def test_every_alert_is_generated_with_labels_and_annotations() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    assert set(alerts) == ALERT_NAMES
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"].endswith(f"docs/runbooks/{name}.md")
    # a completed shutdown is a one-off fact: no waiting before it fires
    assert alerts[names.ALERT_LEAKED]["for"] == "0m"


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for case in alert_cases.promtool_cases():
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    assert fired == ALERT_NAMES
    assert silent == ALERT_NAMES


def test_every_alert_has_a_runbook() -> None:
    runbooks = Path(__file__).resolve().parent.parent / "docs" / "runbooks"
    for name in ALERT_NAMES:
        text = (runbooks / f"{name}.md").read_text()
        assert text.startswith(f"# {name}"), name
        for section in ("## What it means", "## How to confirm", "## What to do"):
            assert section in text, (name, section)
