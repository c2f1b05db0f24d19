"""Reading a dashboard's JSON back: every panel, and every PromQL expression with
Grafana's variables substituted, so a test against a real Prometheus can run each
panel query (tests/test_dashboard.py, tests/test_e2e_alerts.py)."""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from a2a_quiescence.dashboards.panels import GRAFANA_BUILTINS

def iter_panels(board: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves too."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", []) or []


def substitute_variables(expr: str, board: dict[str, Any],
                         values: dict[str, str] | None = None) -> str:
    """``expr`` with Grafana's built-in and the dashboard's own variables filled in.

    Built-ins take ``GRAFANA_BUILTINS``; query and custom variables take their
    ``allValue`` (``.*`` for the agent selector) unless ``values`` says otherwise.
    """
    fill = dict(GRAFANA_BUILTINS)
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") in ("query", "custom"):
            fill[variable["name"]] = variable.get("allValue") or ".*"
    fill.update(values or {})

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in fill:
            raise KeyError(f"unknown variable ${name} in {expr!r}")
        return fill[name]

    names = "|".join(re.escape(name) for name in sorted(fill, key=len, reverse=True))
    pattern = rf"\$\{{({names})(?::[a-z]+)?\}}|\[\[({names})\]\]|\$({names})(?![A-Za-z0-9_])"
    return re.sub(pattern, replace, expr)


def promql_expressions(board: dict[str, Any] | str, values: dict[str, str] | None = None) -> list[str]:
    """Every PromQL expression in a dashboard, ready to send to Prometheus.

    ``board`` is the dashboard JSON (text or parsed). Includes each panel
    target's ``expr`` and each Prometheus query variable's series selector
    (``label_values(X, label)`` gives ``X``). Variables are substituted with
    ``substitute_variables``.
    """
    if isinstance(board, str):
        board = json.loads(board)
    exprs: list[str] = []
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        match = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query)
        exprs.append(match.group(1) if match else query)
    for panel in iter_panels(board):
        for target in panel.get("targets", []) or []:
            if target.get("expr"):
                exprs.append(target["expr"])
    return [substitute_variables(expr, board, values) for expr in exprs]
