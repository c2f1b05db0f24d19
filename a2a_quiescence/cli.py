"""The `a2a-quiescence` command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="a2a-quiescence",
        description=(
            "Observability sidecar for A2A agent meshes: receives the agents' "
            "OTLP telemetry, exports per-hop Prometheus metrics, and answers "
            "whether a delegation cascade has settled."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from a2a_quiescence.collector import cli as collector_cli
    from a2a_quiescence import wait as wait_cli

    collector_cli.add_parser(sub)
    wait_cli.add_parser(sub)
    try:
        from a2a_quiescence.dashboards import cli as dashboards_cli
    except ImportError:  # the dashboards command is optional in a partial install
        dashboards_cli = None
    if dashboards_cli is not None:
        dashboards_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
