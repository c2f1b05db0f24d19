"""pytest plugin (entry point `pytest11`): wait for cascades to settle in tests.

    def test_relay(a2a_quiescence):
        trace_id = start_my_cascade()
        a2a_quiescence.assert_settled(trace_id)          # fails unless settled and completed
        a2a_quiescence.assert_settled(other, allow={"failed"})  # a failure the agents report is fine here
        a2a_quiescence.assert_no_leaked_producers()      # fails if any agent leaked at shutdown

The collector's API URL comes from `--a2a-quiescence-endpoint` or the
environment variable A2A_QUIESCENCE_API (default http://127.0.0.1:9464).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import httpx
import pytest

from a2a_quiescence.wait import DEFAULT_ENDPOINT, NotSettled, _headers, describe_endings, describe_holders, wait_sync


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("a2a-quiescence")
    group.addoption(
        "--a2a-quiescence-endpoint",
        default=None,
        help="a2a-quiescence collector API URL (default: env A2A_QUIESCENCE_API or http://127.0.0.1:9464)",
    )
    group.addoption("--a2a-quiescence-timeout", type=float, default=30.0, help="seconds to wait for settlement")


class Quiescence:
    """What the `a2a_quiescence` fixture gives a test."""

    def __init__(self, endpoint: str, timeout: float, token: str | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.token = token

    def wait(self, trace_id: str, timeout: float | None = None, roots: int = 1) -> dict[str, Any]:
        """The collector's view once settled; raises NotSettled otherwise."""
        return wait_sync(trace_id, endpoint=self.endpoint, timeout=self.timeout if timeout is None else timeout, roots=roots, token=self.token)

    def assert_settled(
        self, trace_id: str, timeout: float | None = None, roots: int = 1, allow: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Wait until settled and check how it ended: anything but ``completed`` fails
        the test, naming each loss and failure, unless its outcome is in ``allow``
        (``"failed"``: the agents reported a failure; ``"lost"``: work was lost)."""
        try:
            state = self.wait(trace_id, timeout, roots)
        except NotSettled as exc:
            pytest.fail(f"cascade {trace_id} did not settle: {describe_holders(exc.state)}", pytrace=False)
        except httpx.HTTPError as exc:
            pytest.fail(f"a2a-quiescence collector at {self.endpoint} unreachable: {exc}", pytrace=False)
        outcome = state.get("outcome") or "completed"
        unknown = set(allow) - {"completed", "failed", "lost"}
        if unknown:
            raise ValueError(f"allow takes 'failed' and 'lost', got {sorted(unknown)}")
        if outcome != "completed" and outcome not in set(allow):
            pytest.fail(f"cascade {trace_id} settled {outcome}: {describe_endings(state) or 'no details kept'}",
                        pytrace=False)
        return state

    def mesh(self) -> dict[str, Any]:
        response = httpx.get(f"{self.endpoint.rstrip('/')}/v1/mesh", headers=_headers(self.token), timeout=10)
        response.raise_for_status()
        return response.json()

    def assert_no_leaked_producers(self) -> None:
        leaks = {a["agent"]: a["shutdown_leaked_producers"] for a in self.mesh()["agents"] if a.get("shutdown_leaked_producers")}
        if leaks:
            pytest.fail(f"producers leaked at shutdown: {leaks}", pytrace=False)


@pytest.fixture
def a2a_quiescence(request: pytest.FixtureRequest) -> Quiescence:
    endpoint = request.config.getoption("--a2a-quiescence-endpoint") or os.environ.get("A2A_QUIESCENCE_API") or DEFAULT_ENDPOINT
    return Quiescence(endpoint, request.config.getoption("--a2a-quiescence-timeout"))
