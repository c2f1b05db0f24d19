"""Regenerate the committed rule files and dashboard JSON, or render them for another deployment.

    python -m a2a_quiescence.dashboards.generate           # write them
    python -m a2a_quiescence.dashboards.generate --check   # exit 1 when stale
    python -m a2a_quiescence.dashboards.generate --out DIR --job JOB --runbook-url URL

The committed files are rendered with the default ``Deployment``; the Helm
chart gets byte-identical copies of the rule file and dashboard. With
``--out``, the rules, their promtool cases and the dashboard for the given
scrape job and runbook address are written to DIR instead.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Callable

from a2a_quiescence.dashboards.deployment import DEFAULT, Deployment

HERE = Path(__file__).resolve().parent
GENERATED = HERE / "generated"
# The repository layout puts the chart beside dashboards/ (README.md, "Layout").
HELM_FILES = HERE.parent / "helm" / "a2a-quiescence" / "files"

RULES_NAME = "prometheus-rules.yaml"
RULES_TEST_NAME = "prometheus-rules-test.yaml"
DASHBOARD_NAME = "a2a-mesh.json"


def outputs(out: Path | None = None, deployment: Deployment = DEFAULT) -> dict[Path, Callable[[], str]]:
    """Every generated file and the function that renders its text.

    Without ``out``: the committed files, which are the default deployment's.
    With ``out``: the rule file, its promtool cases and the dashboard for
    ``deployment``, in that directory.
    """
    from a2a_quiescence.dashboards.alert_cases import render_rules_test_yaml
    from a2a_quiescence.dashboards.dashboard import dashboard_json
    from a2a_quiescence.dashboards.rules import render_rules_yaml

    rules_yaml = partial(render_rules_yaml, deployment)
    rules_test_yaml = partial(render_rules_test_yaml, deployment)
    board_json = partial(dashboard_json, deployment=deployment)
    if out is not None:
        return {out / RULES_NAME: rules_yaml, out / RULES_TEST_NAME: rules_test_yaml, out / DASHBOARD_NAME: board_json}
    if deployment != DEFAULT:
        raise ValueError("the committed files are rendered with the default deployment; give another one an out directory")
    return {
        GENERATED / RULES_NAME: rules_yaml,
        GENERATED / RULES_TEST_NAME: rules_test_yaml,
        GENERATED / DASHBOARD_NAME: board_json,
        HELM_FILES / RULES_NAME: rules_yaml,
        HELM_FILES / DASHBOARD_NAME: board_json,
    }


def stale_files(out: Path | None = None, deployment: Deployment = DEFAULT) -> list[Path]:
    """Generated files whose text on disk differs from what the code renders."""
    stale = []
    for path, render in outputs(out, deployment).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != render():
            stale.append(path)
    return stale


def write_all(out: Path | None = None, deployment: Deployment = DEFAULT) -> list[Path]:
    """Write every file of ``outputs(out, deployment)`` whose text changed; return those."""
    written = []
    for path, render in outputs(out, deployment).items():
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
        description=(
            "Regenerate the Prometheus rules and Grafana dashboard committed in dashboards/generated and helm/, "
            "or, with --out, write them for your own scrape job and runbooks."
        ),
    )
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a file is stale")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help=f"write {RULES_NAME}, {RULES_TEST_NAME} and {DASHBOARD_NAME} to DIR "
                             "instead of the committed files")
    parser.add_argument("--job", default=DEFAULT.job, metavar="JOB",
                        help=f"Prometheus scrape job of the collectors (default: {DEFAULT.job}); needs --out")
    parser.add_argument("--runbook-url", default=DEFAULT.runbook_base_url, metavar="URL",
                        help="address the alerts' runbooks are under, as URL/<AlertName>.md "
                             f"(default: {DEFAULT.runbook_base_url}); needs --out")
    args = parser.parse_args(argv)
    try:
        deployment = Deployment(job=args.job, runbook_base_url=args.runbook_url)
    except ValueError as exc:
        parser.error(str(exc))
    if args.out is None and deployment != DEFAULT:
        parser.error("--job and --runbook-url need --out DIR: the committed files keep the defaults")
    if args.check:
        stale = stale_files(args.out, deployment)
        for path in stale:
            print(f"stale: {_shown(path)}", file=sys.stderr)
        if stale:
            rest = [arg for arg in (sys.argv[1:] if argv is None else argv) if arg != "--check"]
            print(" ".join(["run: python -m a2a_quiescence.dashboards.generate", *rest]), file=sys.stderr)
            return 1
        return 0
    for path in write_all(args.out, deployment):
        print(f"wrote {_shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
