"""`pip install .` ships what the design card promises: the top-level folders
as the `a2a_quiescence.*` packages, the generated rules and dashboard, the
CLI, the instrumentor entry point and the pytest plugin; every module the demo
(`python -m a2a_quiescence.demo`) imports; not promtool's unit tests of the rules."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT


def imported_modules(module: str) -> set[str]:
    """``module`` and every a2a_quiescence module it imports, at any depth (imports
    inside functions too), as paths in the wheel."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # a name imported from a module, not a submodule
            continue
        if spec is None or spec.origin is None:
            continue
        seen.add(name)
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                todo.append(node.module)
                todo += [f"{node.module}.{alias.name}" for alias in node.names]  # submodules
        todo = [t for t in todo if t == "a2a_quiescence" or t.startswith("a2a_quiescence.")]
    paths = set()
    for name in seen:
        origin = importlib.util.find_spec(name).origin  # type: ignore[union-attr]
        path = name.replace(".", "/")
        paths.add(f"{path}/__init__.py" if origin.endswith("__init__.py") else f"{path}.py")
    return paths


def test_wheel_contents_and_entry_points(tmp_path: Path) -> None:
    # with build isolation, as `pip install .` does on a user's machine
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(tmp_path.glob("a2a_quiescence-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in files if n.endswith(".dist-info/entry_points.txt"))
    for module in (
        "a2a_quiescence/names.py",
        "a2a_quiescence/cli.py",
        "a2a_quiescence/wait.py",
        "a2a_quiescence/pytest_plugin.py",
        "a2a_quiescence/demo/mesh.py",
        "a2a_quiescence/instrumentation/instrumentor.py",
        "a2a_quiescence/collector/server.py",
        "a2a_quiescence/collector/settlement.py",
        "a2a_quiescence/collector/status_page.html",
        "a2a_quiescence/demo/monitoring.py",
        "a2a_quiescence/dashboards/generate.py",
        "a2a_quiescence/dashboards/generated/a2a-mesh.json",
        "a2a_quiescence/dashboards/generated/prometheus-rules.yaml",
    ):
        assert module in files, module
    assert not any(f.startswith(("tests/", "benchmarks/", "helm/")) for f in files)
    # the demo runs from the wheel: every module it imports is in it
    demo = imported_modules("a2a_quiescence.demo.__main__")
    assert {"a2a_quiescence/demo/harness.py", "a2a_quiescence/demo/stack.py", "a2a_quiescence/wait.py"} <= demo
    assert demo <= files, sorted(demo - files)
    # promtool's unit tests of the rules stay in the repository
    assert "a2a_quiescence/dashboards/generated/prometheus-rules-test.yaml" not in files
    assert "[opentelemetry_instrumentor]\na2a_quiescence = a2a_quiescence.instrumentation:A2AQuiescenceInstrumentor" in entry_points
    assert "[pytest11]\na2a_quiescence = a2a_quiescence.pytest_plugin" in entry_points
    assert "[console_scripts]\na2a-quiescence = a2a_quiescence.cli:main" in entry_points


def test_installed_entry_point_loads_the_instrumentor() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "a2a_quiescence"]
    from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor

    assert ep.load() is A2AQuiescenceInstrumentor


def test_what_each_install_pulls_in() -> None:
    """The core (what an agent installs) holds the instrumentation, the OTLP exporters
    and the distro, never the instrumented libraries (pip must not move the agent's own
    a2a-sdk); those are declared in `instruments-any`. The sidecar's servers come only
    with `collector`."""
    import re
    from importlib.metadata import requires

    by_extra: dict[str, set[str]] = {}
    for requirement in requires("a2a-quiescence") or []:
        name = re.split(r"[\s\[<>=!;~]", requirement, maxsplit=1)[0].lower()
        extra = re.search(r'extra\s*==\s*"([^"]+)"', requirement)
        by_extra.setdefault(extra.group(1) if extra else "", set()).add(name)
    core = by_extra[""]
    assert {"opentelemetry-sdk", "opentelemetry-instrumentation", "opentelemetry-distro",
            "opentelemetry-exporter-otlp", "wrapt"} <= core
    assert not core & {"a2a-sdk", "fasta2a"}, core
    assert {"a2a-sdk", "fasta2a"} <= by_extra["instruments-any"]
    assert "a2a-sdk" not in by_extra["collector"]
    servers = {"prometheus-client", "uvicorn", "starlette", "uvloop", "httptools"}
    assert not core & servers, core & servers
    assert servers | {"grpcio"} <= by_extra["collector"]
    assert "a2a-quiescence" in by_extra["demo"] and "a2a-quiescence" in by_extra["test"]
    assert {"grafana-foundation-sdk", "pyyaml"} <= by_extra["dashboards"]
