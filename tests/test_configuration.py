"""One configuration surface: every environment variable is defined once
(a2a_quiescence/environment_variables.py), read through it, and documented once
(docs/configuration.md, generated from it). Unit tier: no processes."""

from __future__ import annotations

import argparse
import ast
import logging
import re
from pathlib import Path

import pytest

from a2a_quiescence import environment_variables as variables
from a2a_quiescence import names

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = [p for d in ("a2a_quiescence", "collector", "instrumentation", "dashboards")
           for p in sorted((ROOT / d).rglob("*.py")) if "generated" not in p.parts]
DEFINING = ROOT / "a2a_quiescence" / "environment_variables.py"
OURS = re.compile(r"A2A_QUIESCENCE_[A-Z0-9_]+")
# variables of the repository's own scripts, never read by the product (not in the docs' table)
DEVELOPMENT = {"A2A_QUIESCENCE_CI": ".ci/run, tests/conftest.py",
               "A2A_QUIESCENCE_HELM_NPM_PACKAGE": "scripts/install-helm.sh"}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and \
        isinstance(node.value, ast.Name) and node.value.id == "os"


def test_the_docs_table_is_generated_from_the_definitions() -> None:
    assert variables.main(["--check"]) == 0, "run: python -m a2a_quiescence.environment_variables"
    text = (ROOT / "docs" / "configuration.md").read_text()
    for v in variables.VARIABLES:
        assert text.count(f"| `{v.name}`") == 1, v.name


def test_each_variable_is_defined_once_and_read_somewhere() -> None:
    defined = [v.name for v in variables.VARIABLES]
    assert len(defined) == len(set(defined))
    sources = "\n".join(p.read_text() for p in PRODUCT if p != DEFINING)
    constants = {n for n, o in vars(variables).items() if isinstance(o, variables.Variable)}
    unread = [n for n in constants if not re.search(rf"\benv\.{n}\b", sources)
              and n not in ("DISABLED", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")]  # both read by disabled()
    assert unread == []
    assert len(constants) == len(defined)


def test_no_product_module_reads_the_environment_itself() -> None:
    """os.environ.get, os.getenv and os.environ[...] only in the defining module; a literal
    A2A_QUIESCENCE_ name (outside docstrings) likewise; OpenTelemetry variables we define
    are named through their Variable. Copying os.environ for a child process, and PATH
    for finding a tool, are fine."""
    ours_defined = {v.name for v in variables.VARIABLES}
    found = []
    for path in PRODUCT:
        if path == DEFINING:
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                path_lookup = node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "PATH"
                if _is_os_environ(node.func.value) and node.func.attr in ("get", "setdefault", "pop") \
                        and not path_lookup:  # the OS's search path, extended for a tool lookup
                    found.append(f"{rel}:{node.lineno} os.environ.{node.func.attr}")
                if node.func.attr == "getenv" and isinstance(node.func.value, ast.Name) and node.func.value.id == "os":
                    found.append(f"{rel}:{node.lineno} os.getenv")
            if isinstance(node, ast.Subscript) and _is_os_environ(node.value):
                found.append(f"{rel}:{node.lineno} os.environ[...]")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if OURS.search(node.value) or node.value in ours_defined:
                    found.append(f"{rel}:{node.lineno} literal {node.value[:60]!r}")
    assert found == []


def _collector_parser() -> argparse.ArgumentParser:
    from a2a_quiescence.collector import cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser._subparsers._group_actions[0].choices["collector"]  # argparse has no public way


def test_every_collector_flag_has_its_variable_and_one_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for v in variables.VARIABLES:
        monkeypatch.delenv(v.name, raising=False)
    parser = _collector_parser()
    flags = {a.option_strings[0]: a for a in parser._actions if a.option_strings[0] != "-h"}
    by_flag = {v.flag: v for v in variables.VARIABLES if v.flag}
    assert set(flags) == set(by_flag)
    parsed = vars(parser.parse_args([]))
    for flag, variable in by_flag.items():
        assert parsed[flags[flag].dest] == variable.default, flag
    from a2a_quiescence.collector.config import Config

    config = Config()
    for field, variable in (("max_agents", variables.MAX_AGENTS), ("ring_settle", variables.RING_SETTLE),
                            ("ring_port", variables.RING_PORT), ("root_grace", variables.ROOT_GRACE)):
        assert getattr(config, field) == variable.default


def test_a_variable_sets_a_flag_and_a_given_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variables.RING_SETTLE.name, "9.5")
    monkeypatch.setenv(variables.MAX_AGENTS.name, "7")
    parser = _collector_parser()
    assert vars(parser.parse_args([]))["ring_settle"] == 9.5
    assert vars(parser.parse_args([]))["max_agents"] == 7
    assert vars(parser.parse_args(["--max-agents", "3"]))["max_agents"] == 3
    monkeypatch.setenv(variables.MAX_AGENTS.name, "seven")
    with pytest.raises(SystemExit):  # argparse checks a variable's text as it checks a flag's
        _collector_parser().parse_args([])


def test_what_the_docs_name_exists() -> None:
    """Every A2A_QUIESCENCE_ name in the README, docs and chart is a defined variable (or
    one of the repository's own scripts'); none of those is defined as a product variable."""
    defined = {v.name for v in variables.VARIABLES}
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "helm").rglob("*.y*ml")),
             *sorted((ROOT / "helm").rglob("*.tpl"))]
    unknown = {(p.relative_to(ROOT).as_posix(), n) for p in texts for n in OURS.findall(p.read_text())
               if n not in defined and n not in DEVELOPMENT}
    assert unknown == set()
    assert not defined & set(DEVELOPMENT)


@pytest.mark.parametrize("kind, raw, expected", [
    ("bool", "TRUE", True), ("bool", "off", False), ("bool", "maybe", "default"), ("bool", "", "default"),
    ("int", "12", 12), ("float", "0.5", 0.5), ("list", " a, ,b ", ["a", "b"]), ("str", "x", "x"),
])
def test_reading_a_value(kind: str, raw: str, expected: object) -> None:
    variable = variables.Variable("X_TEST", "default", "doc", (variables.AGENT,), kind)
    assert variable.get({"X_TEST": raw}) == expected
    assert variable.get({}) == "default"


def test_a_malformed_number_names_its_variable() -> None:
    with pytest.raises(ValueError, match="A2A_QUIESCENCE_STALL_SECONDS='soon': not a number"):
        variables.STALL_SECONDS.get({variables.STALL_SECONDS.name: "soon"})


@pytest.mark.parametrize("environ, off", [
    ({}, False),
    ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "httpx"}, False),
    ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": f"httpx, {names.ENTRY_POINT}"}, True),
    ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}, True),
    ({variables.DISABLED.name: "false"}, False),
    ({variables.DISABLED.name: "1"}, True),
])
def test_switched_off(environ: dict[str, str], off: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert variables.disabled(environ) is off
    deprecated = variables.DISABLED.name in environ and off
    assert (variables.DISABLED.name in caplog.text) is deprecated


def test_instrument_honours_the_standard_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Called directly (not by opentelemetry-instrument, whose loader skips the entry point),
    instrument() patches nothing when OTEL_PYTHON_DISABLED_INSTRUMENTATIONS names us."""
    from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor

    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", names.ENTRY_POINT)
    inst = A2AQuiescenceInstrumentor()
    inst.instrument(report=False)
    try:
        assert inst.runtime is None
    finally:
        inst.uninstrument()
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "httpx")
    inst.instrument(report=False)
    try:
        assert inst.runtime is not None
    finally:
        inst.uninstrument()
