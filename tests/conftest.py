"""Shared test set-up.

`need_tool(name)` finds an external program (Prometheus, Alertmanager, Helm,
promtool). Where it is missing the test skips, except under CI
(A2A_QUIESCENCE_CI=1, set by .ci/run), where a missing tool fails the test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("A2A_QUIESCENCE_CI") == "1"


# Every test module belongs to one tier (a marker of the same name), so a newcomer can run
# one tier alone: `bash scripts/test.sh -m unit`. A module missing here fails collection.
TIERS = {
    "unit": ("test_backends", "test_collector_api", "test_configuration", "test_reporter_encoding", "test_ring", "test_settlement_property",
             "test_structure", "test_tier_bookkeeping", "test_tier_property", "test_tier_state", "test_wire"),
    # real a2a-sdk agents and servers on loopback, in the test's own process
    "inprocess": ("test_coexistence", "test_destroyed_pending", "test_fork", "test_forward", "test_grpc_transport",
                  "test_instrumentation", "test_issue1101", "test_loop_export", "test_lazy_exports", "test_awaited_children", "test_reporter", "test_semconv", "test_verdicts",
                  "test_dashboards_push"),
    # real processes: the collector, agents under opentelemetry-instrument, other SDKs' and frameworks' venvs
    "integration": ("test_chaos", "test_collector", "test_collector_fuzz", "test_compat", "test_defaults",
                    "test_fasta2a", "test_frameworks", "test_gate", "test_instrumentation_subprocess",
                    "test_otelcol", "test_settlement_live", "test_tier", "test_tier_clients", "test_verdicts_live", "test_wait_cli"),
    # with Prometheus, Alertmanager, promtool or Helm
    "e2e": ("test_collector_prometheus", "test_dashboard", "test_demo", "test_e2e_alerts", "test_helm", "test_rules"),
    "browser": ("test_status_page_browser",),
    # the wheel, built and installed into clean virtualenvs
    "install": ("test_install", "test_packaging"),
}
_TIER_OF = {module: tier for tier, modules in TIERS.items() for module in modules}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unknown = set()
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        tier = _TIER_OF.get(module)
        if tier is None:
            unknown.add(module)
        else:
            item.add_marker(getattr(pytest.mark, tier))
    if unknown:
        raise pytest.UsageError(f"tests/conftest.py TIERS does not list {sorted(unknown)}: give each a tier")


def need_tool(name: str, *alternatives: str) -> str:
    """Path of an external tool; skip (or fail in CI) when it is not installed."""
    extra = os.pathsep.join([str(ROOT / ".tools" / "bin"), str(ROOT / ".venv" / "bin")])
    path = os.pathsep.join([os.environ.get("PATH", ""), extra])
    for candidate in (name, *alternatives):
        found = shutil.which(candidate, path=path)
        if found:
            return found
    message = f"{name} is not installed (scripts/setup.sh installs it)"
    if IN_CI:
        pytest.fail(message + " -- missing in CI", pytrace=False)
    pytest.skip(message)
