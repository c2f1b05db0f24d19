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
import inspect
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
class Awaited:
    """Tasks running ``module.child`` (``Class.method``) that ``module.parent`` creates
    with ``asyncio.gather(..., return_exceptions=True)`` and awaits there: the parent's
    task cannot go on, nor be done, before every such child is done (a cancel of the
    parent cancels the children and still waits for them). Such a child is counted
    by its parent's unit of work instead of one of its own (``loop.factory``), when
    the parent's task holds one of the same cascade and ActiveTask. A shape the
    parent's code does not show (``resolve_awaited``) is not trusted: its children
    are counted as any task."""

    module: str
    child: str
    parent: str


@dataclass(frozen=True)
class Backend:
    """One library's releases in ``supported`` (a PEP 440 specifier), tested on ``tested``."""

    name: str
    distribution: str
    supported: str
    tested: tuple[str, ...]
    hooks: Callable[[], list[Hook]]
    doc: str = ""
    awaited: tuple[Awaited, ...] = ()

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


def _function(module: Any, dotted: str) -> Any:
    obj: Any = module
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    try:
        return inspect.unwrap(obj)  # a2a-sdk decorates its methods for its own tracing
    except ValueError:
        return None


def resolve_awaited(backend: Backend) -> dict[str, Any]:
    """``backend.awaited`` as {the child coroutine's qualified name: the parent's code
    object}, for the pairs whose parent's code still shows the shape: a call of
    ``gather`` with ``return_exceptions`` that names the child, and no other way to
    start a task (a release that changed it loses only the saving, never a count). The child is known by its name, not its
    code: a2a-sdk's tracing decorator (there even when its tracing is off) makes every
    method's coroutine its own wrapper's; the parent is the frame that calls ``gather``."""
    found: dict[str, Any] = {}
    for pair in backend.awaited:
        try:
            module = importlib.import_module(pair.module)
        except ImportError:
            continue
        child, parent = _function(module, pair.child), _function(module, pair.parent)
        if not inspect.iscoroutinefunction(child) or not inspect.iscoroutinefunction(parent):
            continue
        code = parent.__code__
        nested = [c for c in code.co_consts if inspect.iscode(c)]  # the generator of the children
        names = set(code.co_names).union(*(c.co_names for c in nested))
        keywords = {name for const in code.co_consts if isinstance(const, (str, tuple))
                    for name in ((const,) if isinstance(const, str) else const)}
        spawns = names & {"create_task", "ensure_future", "TaskGroup", "run_coroutine_threadsafe"}
        if {"gather", child.__name__} <= names and "return_exceptions" in keywords and not spawns:
            found[child.__qualname__] = code
    return found


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
