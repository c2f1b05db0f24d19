"""pytest plugin (entry point `pytest11`): wait for cascades to settle in tests.

    def test_relay(a2a_quiescence):
        trace_id = start_my_cascade()
        a2a_quiescence.assert_settled(trace_id)          # fails unless settled and completed
        a2a_quiescence.assert_settled(other, allow={"failed"})  # a failure the agents report is fine here
        a2a_quiescence.assert_no_leaked_producers()      # fails if any agent leaked at shutdown

The collector's API URL comes from `--a2a-quiescence-endpoint` or the
environment variable A2A_QUIESCENCE_API (default http://127.0.0.1:9464).

The drain gate (`--a2a-quiescence-gate`), with no change to the tests: at the
teardown of every test (before its fixtures are finalized, so the agents they
run can finish), wait until every cascade whose root request arrived during
the test has settled; a cascade that does not settle within
`--a2a-quiescence-timeout`, or settles failed or with lost work, makes the test
error in teardown, naming what holds it or what was lost. Allow outcomes with
`--a2a-quiescence-gate-allow failed,lost` or per test with
`@pytest.mark.a2a_quiescence_gate(allow={"failed"})`; leave a test out with
`@pytest.mark.a2a_quiescence_gate(skip=True)`.

The gate instruments the test process itself (its a2a-sdk and fasta2a
clients), so a cascade the test starts exists from its first call, with this
process as its root hop (service name `OTEL_SERVICE_NAME`, else `pytest`,
shipping to the collector's OTLP endpoint as an agent would: `A2A_QUIESCENCE_ENDPOINT`
or `--a2a-quiescence-otlp`): a target that never reports (not instrumented,
unsupported) then holds the test, named, instead of leaving nothing to wait
for. Its roots are shipped before the gate asks, so no root grace is needed
for them: by default the gate waits no grace at all, and a test that calls no
agent costs one request to the collector. Roots that other clients sent to
the agents during the test are counted as far as the agents reported them by
the test's end; `--a2a-quiescence-grace` waits longer for them.
`--a2a-quiescence-no-client` leaves the test process alone (the gate then waits
the collector's root grace, and sees only what the agents report).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Generator, Iterable

import httpx
import pytest

from a2a_quiescence import environment_variables as env
from a2a_quiescence import names
from a2a_quiescence.wait import (
    MeshNotQuiet,
    NotSettled,
    auth_headers,
    describe_endings,
    describe_holders,
    describe_mesh,
    wait_mesh_sync,
    wait_sync,
)
from a2a_quiescence.shards import ShardSpec

OUTCOMES = names.VERDICTS
_GATE_START = pytest.StashKey[float]()
_GATE_ALLOW = pytest.StashKey[frozenset]()
_GATE_SECONDS: list[float] = []
_GATE_CLIENT = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("a2a-quiescence")
    group.addoption(
        "--a2a-quiescence-endpoint",
        default=None,
        help=f"a2a-quiescence collector API URL (default: env {env.API.name} or {env.API.default})",
    )
    group.addoption(
        "--a2a-quiescence-shards",
        default=None,
        help="ask a mesh tier instead: its shard set (comma-separated shard API URLs in the load-balancing "
             f"exporter's order, ENDPOINT=URL items, dns+http://NAME:PORT or @FILE; default: env {env.SHARDS.name})",
    )
    group.addoption("--a2a-quiescence-timeout", type=float, default=30.0, help="seconds to wait for settlement")
    group.addoption(
        "--a2a-quiescence-gate", action="store_true", default=False,
        help="drain gate: at each test's teardown wait until every cascade rooted during the test has settled; "
             "error the test when one does not in time, or settles failed or with lost work",
    )
    group.addoption(
        "--a2a-quiescence-gate-allow", default="", metavar="OUTCOMES",
        help="outcomes the gate accepts besides completed, comma-separated: failed, lost",
    )
    group.addoption(
        "--a2a-quiescence-grace", type=float, default=None, metavar="SECONDS",
        help="seconds after a test during which root requests sent to the agents may still be reported "
             "(default: 0 with the test process instrumented, else the collector's --root-grace)",
    )
    group.addoption(
        "--a2a-quiescence-no-client", action="store_true", default=False,
        help="do not instrument the test process's own A2A clients for the gate",
    )
    group.addoption(
        "--a2a-quiescence-otlp", default=None, metavar="URL",
        help="OTLP/HTTP logs URL the test process ships its cascades to "
             f"(default: as an agent's: {env.ENDPOINT.name}, the OTLP variables, or {env.ENDPOINT.default})",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "a2a_quiescence_gate(allow=(), skip=False): outcomes the drain gate accepts for this test, or leave it out",
    )
    config.stash[_GATE_ALLOW] = _allowed(config.getoption("--a2a-quiescence-gate-allow"))
    if config.getoption("--a2a-quiescence-gate") and not config.getoption("--a2a-quiescence-no-client"):
        config.stash[_GATE_CLIENT] = _instrument_client(config)


def _instrument_client(config: pytest.Config) -> Any:
    """The test process's own A2A clients, instrumented as a root hop (see the module
    docstring); the runtime, or None when there is nothing to instrument."""
    try:
        from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor
    except ImportError:  # the instrumentation's dependencies are not installed here
        return None
    inst = A2AQuiescenceInstrumentor()
    if not inst.is_instrumented_by_opentelemetry:  # else: already (opentelemetry-instrument pytest)
        inst.instrument(service_name=env.OTEL_SERVICE_NAME.raw() or "pytest",
                        endpoint=config.getoption("--a2a-quiescence-otlp"), skip_dep_check=True)
        config.add_cleanup(inst.uninstrument)
    runtime = inst.runtime
    return inst if runtime is not None and runtime.backends and inst.reporter is not None else None


def _ship_own_roots(config: pytest.Config) -> bool | None:
    """Ship what the test process's clients did now: True when shipped, None when
    the test process is not instrumented; raises OSError when shipping failed."""
    inst = config.stash.get(_GATE_CLIENT, None)
    if inst is None:
        return None
    if not inst.reporter.flush():
        raise OSError(f"could not ship this test process's cascades to {inst.reporter.endpoint}")
    return True



def _allowed(value: Any) -> frozenset[str]:
    items = {v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v and v.strip()}
    unknown = items - set(OUTCOMES)
    if unknown:
        raise pytest.UsageError(f"a2a-quiescence gate: unknown outcome(s) {sorted(unknown)}; use failed, lost")
    return frozenset(items | {names.VERDICT_COMPLETED})


def _endpoint(config: pytest.Config) -> str:
    return config.getoption("--a2a-quiescence-endpoint") or env.API.get()


def _shards(config: pytest.Config) -> str | None:
    return config.getoption("--a2a-quiescence-shards") or env.SHARDS.get()


def _gated(item: pytest.Item) -> bool:
    if not item.config.getoption("--a2a-quiescence-gate"):
        return False
    marker = item.get_closest_marker("a2a_quiescence_gate")
    return not (marker is not None and marker.kwargs.get("skip"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if _gated(item):
        item.stash[_GATE_START] = time.time()  # fixtures set up for the test count as the test


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    problem = _gate(item) if _GATE_START in item.stash else None
    result = yield  # the test's fixtures are finalized whatever the gate found
    if problem:
        pytest.fail(problem, pytrace=False)
    return result


def _gate(item: pytest.Item) -> str | None:
    """Wait for the cascades rooted during the test; what is wrong with them, if anything."""
    config = item.config
    since, began = item.stash[_GATE_START], time.monotonic()
    marker = item.get_closest_marker("a2a_quiescence_gate")
    allowed = config.stash[_GATE_ALLOW] | (_allowed(marker.kwargs.get("allow", ())) if marker else frozenset())
    shards = _shards(config)
    endpoint = shards or _endpoint(config)
    timeout = config.getoption("--a2a-quiescence-timeout")
    grace = config.getoption("--a2a-quiescence-grace")
    try:
        if _ship_own_roots(config) and grace is None:
            grace = 0.0  # this process's roots are at the collector now: nothing on its way
        state = wait_mesh_sync(since=since, endpoint=endpoint, timeout=timeout, grace=grace, shards=shards)
    except MeshNotQuiet as exc:
        return f"a2a-quiescence gate: not every cascade of this test settled within {timeout:g}s: {describe_mesh(exc.state)}"
    except (httpx.HTTPError, LookupError, ValueError, OSError) as exc:
        return f"a2a-quiescence gate: collector at {endpoint} unreachable: {exc}"
    finally:
        _GATE_SECONDS.append(time.monotonic() - began)
    outcome = state.get("outcome") or names.VERDICT_COMPLETED
    if outcome not in allowed:
        return f"a2a-quiescence gate: this test's cascades settled {outcome}: {describe_mesh(state)}"
    return None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if config.getoption("--a2a-quiescence-gate") and _GATE_SECONDS:
        ms = sorted(1000 * s for s in _GATE_SECONDS)
        terminalreporter.write_line(
            f"a2a-quiescence gate: {len(ms)} test(s), added median {statistics.median(ms):.0f} ms, "
            f"worst {ms[-1]:.0f} ms"
        )


class Quiescence:
    """What the `a2a_quiescence` fixture gives a test."""

    def __init__(self, endpoint: str, timeout: float, token: str | None = None, shards: str | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.token = token
        self.shards = ShardSpec(shards) if shards else None  # a mesh tier: ask the shard owning each cascade

    def wait(self, trace_id: str, timeout: float | None = None, roots: int = 1) -> dict[str, Any]:
        """The collector's view once settled; raises NotSettled otherwise."""
        return wait_sync(trace_id, endpoint=self.endpoint, timeout=self.timeout if timeout is None else timeout,
                         roots=roots, token=self.token, shards=self.shards)

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
        outcome = state.get("outcome") or names.VERDICT_COMPLETED
        unknown = set(allow) - set(names.VERDICTS)
        if unknown:
            raise ValueError(f"allow takes 'failed' and 'lost', got {sorted(unknown)}")
        if outcome != names.VERDICT_COMPLETED and outcome not in set(allow):
            pytest.fail(f"cascade {trace_id} settled {outcome}: {describe_endings(state) or 'no details kept'}",
                        pytrace=False)
        return state

    def mesh(self) -> dict[str, Any]:
        """The collector's /v1/mesh (a mesh tier: the first shard that answers; each
        shard's view covers every shard and names those that did not answer)."""
        bases = [s.url for s in self.shards.resolve().shards] if self.shards else [self.endpoint]
        for i, base in enumerate(bases):
            try:
                response = httpx.get(f"{base.rstrip('/')}/v1/mesh", headers=auth_headers(self.token), timeout=10)
                response.raise_for_status()
                return response.json()
            except httpx.HTTPError:
                if i == len(bases) - 1:
                    raise
        raise httpx.ConnectError("the shard set names no shard")

    def assert_no_leaked_producers(self) -> None:
        """No agent's last shutdown left producers running: asked of the collector at the
        endpoint (with a mesh tier, the pod sidecar's: the shards do not track agents)."""
        response = httpx.get(f"{self.endpoint.rstrip('/')}/v1/mesh", headers=auth_headers(self.token), timeout=10)
        response.raise_for_status()
        agents = response.json()["agents"]
        leaks = {a["agent"]: a["shutdown_leaked_producers"] for a in agents if a.get("shutdown_leaked_producers")}
        if leaks:
            pytest.fail(f"producers leaked at shutdown: {leaks}", pytrace=False)


@pytest.fixture
def a2a_quiescence(request: pytest.FixtureRequest) -> Quiescence:
    return Quiescence(_endpoint(request.config), request.config.getoption("--a2a-quiescence-timeout"),
                      shards=_shards(request.config))
