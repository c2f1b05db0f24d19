"""The version guard (``instrumentation.backends.choose``): all or nothing per
library. It must refuse a release outside every tested range, one newer than
every tested release (unless allowed), one missing a required hook, and one whose
version cannot be read; it must not refuse a covered release whose optional
hooks are missing. And in a real process: a refused a2a-sdk is not patched at
all, says so in one warning line, and the hop's snapshots carry the refusal."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from packaging.version import Version

from a2a_quiescence import environment_variables as variables
from a2a_quiescence.instrumentation.backends import Backend, Hook, all_backends, choose
from conftest import ROOT


class Present:
    """A class with one method, the hook target of the fake backends below."""

    def there(self) -> None:  # pragma: no cover - never called
        pass


def _backend(name: str, supported: str, tested: tuple[str, ...], *hooks: Hook) -> Backend:
    return Backend(name=name, distribution="somelib", supported=supported, tested=tested, hooks=lambda: list(hooks))


HERE = Hook(__name__, "Present", "there", wrapper=None)
MISSING = Hook(__name__, "Present", "gone", wrapper=None)
NO_MODULE = Hook("no_such_module_anywhere", "Nope", "there", wrapper=None, optional=True)
LINE_1 = _backend("somelib 1.x", ">=1.0,<2", ("1.0.0", "1.4.0"), HERE)
LINE_0 = _backend("somelib 0.9", ">=0.9,<0.10", ("0.9.1",), HERE, NO_MODULE)


def pick(version: str | None, *backends: Backend):
    return choose(backends or (LINE_1, LINE_0), version_of=lambda _d: version)


def test_a_covered_release_is_chosen_with_its_hooks() -> None:
    choice = pick("1.2.0")
    assert [(b.name, v) for b, v, _ in choice.chosen] == [("somelib 1.x", "1.2.0")]
    assert [h.attr for h, _cls in choice.chosen[0][2]] == ["there"]
    assert choice.refused == [] and choice.untested == []
    # an optional hook whose module is absent is no reason to refuse
    choice = pick("0.9.4")
    assert [b.name for b, _, _ in choice.chosen] == ["somelib 0.9"] and choice.refused == []
    # a library that is not installed is neither chosen nor refused
    assert pick(None).chosen == [] and pick(None).refused == []


@pytest.mark.parametrize("version, why", [
    ("0.8.0", "outside every tested range"),
    ("0.10.2", "outside every tested range"),  # between the lines
    ("2.0.0", "newer than every tested release"),
    ("not.a.version", "its version cannot be read"),
])
def test_a_release_outside_the_tested_ranges_is_refused(version: str, why: str, monkeypatch) -> None:
    monkeypatch.delenv(variables.ALLOW_UNTESTED.name, raising=False)
    choice = pick(version)
    assert choice.chosen == []
    (refusal,) = choice.refused
    assert refusal.library == "somelib" and refusal.version == version and refusal.reason == why
    assert refusal.supported == ">=1.0,<2 or >=0.9,<0.10"
    assert variables.ALLOW_UNTESTED.name in refusal.line() and "not supported" in refusal.line()


def test_a_newer_release_only_when_allowed(monkeypatch) -> None:
    monkeypatch.setenv(variables.ALLOW_UNTESTED.name, "1")
    choice = pick("2.1.0")
    assert [b.name for b, _, _ in choice.chosen] == ["somelib 1.x"] and choice.untested == ["somelib 2.1.0"]
    # allowed is for newer releases only: an older one is still refused
    assert pick("0.8.0").chosen == [] and pick("0.8.0").refused[0].reason == "outside every tested range"


def test_a_missing_required_hook_refuses_the_whole_library() -> None:
    broken = _backend("somelib 1.x", ">=1.0,<2", ("1.0.0",), HERE, MISSING)
    choice = pick("1.0.0", broken)
    assert choice.chosen == []
    (refusal,) = choice.refused
    assert refusal.reason == f"it lacks {__name__}.Present.gone"


def test_the_shipped_ranges_are_what_the_tests_cover() -> None:
    """Each backend's tested releases are in its own range, and the a2a-sdk lines do not overlap."""
    for backend in all_backends():
        assert all(backend.covers(Version(v)) for v in backend.tested), backend.name
    sdk = [b for b in all_backends() if b.distribution == "a2a-sdk"]
    for b in sdk:
        for other in sdk:
            if other is not b:
                assert not any(other.covers(Version(v)) for v in b.tested)


REFUSED = textwrap.dedent("""
    import importlib.metadata, json, logging, sys
    real = importlib.metadata.version
    # this process's a2a-sdk says it is a release no backend covers
    importlib.metadata.version = lambda d: "1.9.0" if d == "a2a-sdk" else real(d)
    lines = []
    class H(logging.Handler):
        def emit(self, record): lines.append(record.getMessage())
    logging.getLogger("a2a_quiescence").addHandler(H())
    from opentelemetry.sdk.trace import TracerProvider
    from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor
    inst = A2AQuiescenceInstrumentor()
    inst.instrument(tracer_provider=TracerProvider(), report=False, skip_dep_check=True)
    hop, _ = inst.runtime.tracker.take_snapshots()
    print(json.dumps({"patched": len(inst._patched), "lines": lines, "hop_unsupported": hop.get("unsupported"),
                      "backends": inst.runtime.backends}))
""")


def test_a_refused_sdk_is_not_patched_at_all_and_the_hop_says_so() -> None:
    out = subprocess.run([sys.executable, "-c", REFUSED], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["patched"] == 0 and result["backends"] == []
    (line,) = [line for line in result["lines"] if "not supported" in line]
    assert "a2a-sdk 1.9.0" in line and "newer than every tested release" in line
    (refused,) = result["hop_unsupported"]
    assert refused["library"] == "a2a-sdk" and refused["version"] == "1.9.0"
