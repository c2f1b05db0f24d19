"""The server libraries a2a-quiescence instruments, one backend each, and the
version guard that chooses between them.

A backend is a table of hooks (module, class, method, wrapper) for one range of
one library's releases; the wrappers call the SDK-agnostic core (``tracker``,
``runtime``, ``loop``) through the shared ``server``, ``client`` and
``lifecycle`` wrappers, passing the few things that differ (how a task state
is named, how headers ride on a client call) as a ``Dialect``.

The guard is all or nothing, per library: the installed version must be in a
backend's tested range (or newer, with ``A2A_QUIESCENCE_ALLOW_UNTESTED=1``),
and every hook that backend requires must exist. Otherwise nothing of that
library is patched, one warning line says why, and the hop reports itself
unsupported, so the collector holds every cascade instead of reading a quiet
hop as idle.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from a2a_quiescence import environment_variables as env

logger = logging.getLogger("a2a_quiescence.instrumentation")


@dataclass(frozen=True)
class Hook:
    """``module.owner.attr`` is wrapped with ``wrapper`` (a wrapt wrapper).
    ``optional``: absent in some releases of the backend's range (checked by
    tests/test_compat.py), so its absence is not a reason to refuse."""

    module: str
    owner: str
    attr: str
    wrapper: Any
    optional: bool = False

    @property
    def where(self) -> str:
        return f"{self.module}.{self.owner}.{self.attr}"


@dataclass(frozen=True)
class Backend:
    """One library's releases in ``supported`` (a PEP 440 specifier), tested on ``tested``."""

    name: str
    distribution: str
    supported: str
    tested: tuple[str, ...]
    hooks: Callable[[], list[Hook]]
    doc: str = ""

    def covers(self, version: Version) -> bool:
        return SpecifierSet(self.supported).contains(version, prereleases=True)

    def below(self, version: Version) -> bool:
        """``version`` is newer than every release of this backend's range."""
        spec = SpecifierSet(self.supported)
        uppers = [Version(s.version) for s in spec if s.operator in ("<", "<=")]
        return bool(uppers) and all(version >= u for u in uppers)


@dataclass
class Refusal:
    """A library this hop runs and a2a-quiescence does not instrument."""

    library: str
    version: str
    supported: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"library": self.library, "version": self.version, "supported": self.supported, "reason": self.reason}

    def line(self) -> str:
        return (f"a2a-quiescence: {self.library} {self.version} is not supported ({self.reason}; supported: "
                f"{self.supported}); nothing of it is instrumented and this hop reports itself unsupported, so "
                f"the collector holds every cascade through it. Set {env.ALLOW_UNTESTED.name}=1 to try an "
                f"untested newer release.")


@dataclass
class Choice:
    """What the guard chose: per library, a backend and its resolved hooks, or a refusal."""

    chosen: list[tuple[Backend, str, list[tuple[Hook, type]]]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)


def all_backends() -> tuple[Backend, ...]:
    from a2a_quiescence.instrumentation.backends import a2a_sdk, fasta2a

    return (*a2a_sdk.BACKENDS, *fasta2a.BACKENDS)


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _allow_untested() -> bool:
    return env.ALLOW_UNTESTED.get()


def _resolve(backend: Backend) -> tuple[list[tuple[Hook, type]], list[str]]:
    """The hooks' classes; the required hooks that are missing."""
    found: list[tuple[Hook, type]] = []
    missing: list[str] = []
    for hook in backend.hooks():
        try:
            cls = getattr(importlib.import_module(hook.module), hook.owner, None)
        except ImportError:
            cls = None
        if cls is not None and hook.attr in cls.__dict__:
            found.append((hook, cls))
        elif not hook.optional:
            missing.append(hook.where)
    return found, missing


def choose(backends: Iterable[Backend] | None = None, version_of: Callable[[str], str | None] = installed_version) -> Choice:
    """The version guard: which backend instruments each installed library, or why none does."""
    backends = tuple(all_backends() if backends is None else backends)
    choice = Choice()
    for distribution in dict.fromkeys(b.distribution for b in backends):
        raw = version_of(distribution)
        if raw is None:
            continue
        candidates = [b for b in backends if b.distribution == distribution]
        ranges = " or ".join(b.supported for b in candidates)
        try:
            version = Version(raw)
        except InvalidVersion:
            choice.refused.append(Refusal(distribution, raw, ranges, "its version cannot be read"))
            continue
        backend = next((b for b in candidates if b.covers(version)), None)
        untested = False
        if backend is None:
            newest = max(candidates, key=lambda b: max(Version(t) for t in b.tested))
            if _allow_untested() and newest.below(version):
                backend, untested = newest, True
            else:
                why = "newer than every tested release" if newest.below(version) else "outside every tested range"
                choice.refused.append(Refusal(distribution, raw, ranges, why))
                continue
        hooks, missing = _resolve(backend)
        if missing:
            choice.refused.append(Refusal(distribution, raw, ranges, "it lacks " + ", ".join(missing[:3])
                                          + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")))
            continue
        if untested:
            choice.untested.append(f"{distribution} {raw}")
        choice.chosen.append((backend, raw, hooks))
    return choice


def generic_hooks() -> list[Hook]:
    """Hooks outside any A2A library, put in once when any backend is: the headers of a
    push delivery or of a call from a client that takes none (fasta2a's) on httpx's
    ``post`` and ``stream``, and uvicorn's shutdown (the shutdown record)."""
    from a2a_quiescence.instrumentation import client, lifecycle

    return [
        Hook("httpx", "AsyncClient", "post", client.httpx_post, optional=True),
        Hook("httpx", "AsyncClient", "stream", client.httpx_stream, optional=True),
        Hook("uvicorn.server", "Server", "shutdown", lifecycle.uvicorn_shutdown, optional=True),
    ]
