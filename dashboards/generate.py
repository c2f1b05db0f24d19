"""Regenerate the committed rule files and dashboard JSON.

    python -m a2a_quiescence.dashboards.generate           # write them
    python -m a2a_quiescence.dashboards.generate --check   # exit 1 when stale

The Helm chart gets byte-identical copies of the rule file and dashboard.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
GENERATED = HERE / "generated"
# The repository layout puts the chart beside dashboards/ (README.md, "Layout").
HELM_FILES = HERE.parent / "helm" / "a2a-quiescence" / "files"

RULES_NAME = "prometheus-rules.yaml"
RULES_TEST_NAME = "prometheus-rules-test.yaml"
DASHBOARD_NAME = "a2a-mesh.json"


def outputs() -> dict[Path, Callable[[], str]]:
    """Every generated file and the function that renders its text."""
    from a2a_quiescence.dashboards.alert_cases import render_rules_test_yaml
    from a2a_quiescence.dashboards.dashboard import dashboard_json
    from a2a_quiescence.dashboards.rules import render_rules_yaml

    return {
        GENERATED / RULES_NAME: render_rules_yaml,
        GENERATED / RULES_TEST_NAME: render_rules_test_yaml,
        GENERATED / DASHBOARD_NAME: dashboard_json,
        HELM_FILES / RULES_NAME: render_rules_yaml,
        HELM_FILES / DASHBOARD_NAME: dashboard_json,
    }


def stale_files() -> list[Path]:
    """Generated files whose committed text differs from what the code renders."""
    stale = []
    for path, render in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != render():
            stale.append(path)
    return stale


def write_all() -> list[Path]:
    written = []
    for path, render in outputs().items():
        text = render()
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(HERE.parent))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m a2a_quiescence.dashboards.generate",
        description="Regenerate the Prometheus rules and Grafana dashboard committed in dashboards/generated and helm/.",
    )
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a committed file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {_shown(path)}", file=sys.stderr)
        if stale:
            print("run: python -m a2a_quiescence.dashboards.generate", file=sys.stderr)
            return 1
        return 0
    for path in write_all():
        print(f"wrote {_shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
