"""``a2a-quiescence dashboards push``: install the "A2A mesh" dashboard in Grafana.

grafana-client is imported only when the command runs: it is the optional
``grafana`` extra, kept out of agent environments. The dashboard pushed is the
committed JSON, or with ``--job`` one rendered for that scrape job (which needs
the generator's ``dashboards`` extra).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import TYPE_CHECKING, Any

from a2a_quiescence import environment_variables as env
from a2a_quiescence.dashboards.deployment import DASHBOARD_TITLE, DEFAULT, DEFAULT_FOLDER, Deployment
from a2a_quiescence.dashboards.generate import DASHBOARD_NAME, GENERATED

if TYPE_CHECKING:
    from grafana_client import GrafanaApi

ENV_GRAFANA_TOKEN = env.GRAFANA_TOKEN.name
TIMEOUT_SECONDS = 10.0


class PushError(Exception):
    """A failure worth one line on stderr and exit code 1."""


def add_parser(subparsers: Any) -> None:
    """Register ``dashboards push`` on the top-level CLI's subparsers."""
    parser = subparsers.add_parser(
        "dashboards", help="Grafana dashboards for the collector's metrics",
        description="Grafana dashboards for the collector's metrics.",
    )
    commands = parser.add_subparsers(dest="dashboards_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: _usage(parser))
    push = commands.add_parser(
        "push",
        help=f'create or update the "{DASHBOARD_TITLE}" dashboard in Grafana',
        description=(
            f'Create or update the "{DASHBOARD_TITLE}" dashboard in Grafana, in a folder '
            "created when absent. Running it again changes nothing else."
        ),
    )
    push.add_argument("--grafana-url", required=True, metavar="URL",
                      help="Grafana base URL, e.g. http://grafana:3000")
    push.add_argument("--token", default=None, metavar="TOKEN",
                      help=f"service account token (default: ${ENV_GRAFANA_TOKEN})")
    push.add_argument("--folder", default=DEFAULT_FOLDER, metavar="NAME",
                      help=f"folder title (default: {DEFAULT_FOLDER})")
    push.add_argument("--job", default=DEFAULT.job, metavar="JOB",
                      help=f"Prometheus scrape job of the collectors the dashboard's queries select (default: "
                           f"{DEFAULT.job}); another job renders the dashboard, which needs the dashboards extra")
    push.set_defaults(func=run_push)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_push(args: argparse.Namespace) -> int:
    token = args.token or env.GRAFANA_TOKEN.get()
    if not token:
        print(f"error: no Grafana token: pass --token or set {ENV_GRAFANA_TOKEN}", file=sys.stderr)
        return 2
    try:
        deployment = Deployment(job=args.job)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = push(args.grafana_url, token, args.folder, deployment)
    except PushError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"pushed {DASHBOARD_TITLE!r} to folder {args.folder!r}: {result}")
    return 0


def load_dashboard(deployment: Deployment = DEFAULT) -> dict[str, Any]:
    """The committed dashboard, or for another deployment the dashboard rendered with it."""
    if deployment == DEFAULT:
        return json.loads((GENERATED / DASHBOARD_NAME).read_text(encoding="utf-8"))
    try:
        from a2a_quiescence.dashboards.dashboard import dashboard_dict
    except ImportError:
        raise PushError(
            "a dashboard for another scrape job is rendered with grafana-foundation-sdk, which is not "
            "installed: pip install 'a2a-quiescence[dashboards]'"
        ) from None
    return dashboard_dict(deployment=deployment)


def push(grafana_url: str, token: str, folder: str, deployment: Deployment = DEFAULT) -> str:
    """Create ``folder`` if absent and the dashboard for ``deployment`` in it, overwriting; return its URL."""
    try:
        from grafana_client import GrafanaApi
        from grafana_client.client import GrafanaException, GrafanaTimeoutError
    except ImportError:
        raise PushError(
            "grafana-client is not installed: pip install 'a2a-quiescence[grafana]'"
        ) from None

    board = load_dashboard(deployment)  # before Grafana is touched: a missing extra creates no folder
    api = GrafanaApi.from_url(grafana_url.rstrip("/"), credential=token, timeout=TIMEOUT_SECONDS)
    try:
        folder_uid = _ensure_folder(api, folder)
        board.pop("id", None)  # Grafana matches on uid; an id from elsewhere would clash
        response = api.dashboard.update_dashboard({
            "dashboard": board,
            "folderUid": folder_uid,
            "overwrite": True,
            "message": "a2a-quiescence dashboards push",
        })
    except GrafanaTimeoutError:
        raise PushError(f"Grafana at {grafana_url} did not answer within {TIMEOUT_SECONDS:g} s") from None
    except GrafanaException as exc:
        if exc.status_code in (401, 403):
            raise PushError(
                f"Grafana at {grafana_url} refused the token (HTTP {exc.status_code}); it needs "
                "a service account token allowed to write folders and dashboards"
            ) from None
        if exc.status_code == 0:
            raise PushError(f"cannot reach Grafana at {grafana_url}: {exc.message}") from None
        raise PushError(f"Grafana at {grafana_url} answered HTTP {exc.status_code}: {exc.message}") from None
    except OSError as exc:  # connection refused, DNS failure, TLS errors (niquests' are OSErrors)
        text = str(exc)
        # niquests nests the OS reason ("[Errno 111] Connection refused") deep in its message
        found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
        reason = found.group(1) if found else (text.splitlines()[0] if text else type(exc).__name__)
        raise PushError(f"cannot reach Grafana at {grafana_url}: {reason}") from None
    return str((response or {}).get("url", "")) or str((response or {}).get("uid", ""))


def _ensure_folder(api: GrafanaApi, title: str) -> str:
    for existing in api.folder.get_all_folders() or []:
        if existing.get("title") == title:
            return str(existing["uid"])
    return str(api.folder.create_folder(title)["uid"])
