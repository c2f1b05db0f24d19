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
