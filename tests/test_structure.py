"""Structure limits of the product code (a2a_quiescence/, collector/,
instrumentation/, dashboards/; not tests, not generated files). Unit tier: the
sources are parsed, nothing is imported or run.

- file-length: no file over 500 lines;
- function-length: no function or method over 100 lines (decorators not counted);
- private-import: no ``from m import _x`` (``_x`` one leading underscore, not a dunder);
- private-attribute: no ``alias._x`` on a name bound by ``import``, and no ``obj._x``
  (nor ``getattr(obj, "_x")``, ``setattr``, ``hasattr``, ``delattr``) where obj is not
  ``self``, ``cls`` or ``super()``;
- any-handle: no parameter or attribute annotated ``Any`` (or a union with ``Any``
  in it, ``Optional[Any]``) whose name, leading underscores aside, is one of the product's
  part handles (``HANDLES``).

Each rule has a case below that parses a bad snippet and a good one with the
same functions. The product passes with no exception.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_DIRS = ("a2a_quiescence", "collector", "instrumentation", "dashboards")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 100
HANDLES = frozenset({"collector", "detector", "state", "api", "tier", "tracker", "reporter", "runtime", "ingest"})
# underscore names that are documented public API of the standard library
PUBLIC_UNDERSCORE = frozenset({
    "_exit",  # os._exit: leave a forked child without running the parent's handlers
    "_replace", "_asdict", "_fields", "_make", "_field_defaults",  # collections.namedtuple
})
PRIVATE_ACCESS_CALLS = frozenset({"getattr", "setattr", "hasattr", "delattr"})
OWN = frozenset({"self", "cls"})



@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.detail}"


def is_private(name: str) -> bool:
    """One leading underscore, not a dunder, not a documented underscore API."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) \
        and name not in PUBLIC_UNDERSCORE


def check_file_length(path: str, source: str) -> list[Violation]:
    lines = len(source.splitlines())
    if lines > MAX_FILE_LINES:
        return [Violation(path, lines, "file-length", f"{lines} lines (at most {MAX_FILE_LINES})")]
    return []


def check_function_length(path: str, tree: ast.AST) -> list[Violation]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(Violation(path, node.lineno, "function-length",
                                       f"{node.name}() is {length} lines (at most {MAX_FUNCTION_LINES})"))
    return found


def module_name(rel: str) -> str:
    """The importable name of a product file (the wheel maps collector/ to a2a_quiescence.collector, ...)."""
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if parts[0] != "a2a_quiescence":
        parts = ["a2a_quiescence", *parts]
    return ".".join(parts)


def _top_level_names(body: list[ast.stmt]) -> set[str]:
    """Names a module or class body binds, under its ifs and trys too (not its functions' locals)."""
    bound: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            bound.add(node.name)
        elif isinstance(node, ast.ClassDef):
            bound |= {node.name} | _top_level_names(node.body)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody"):
                bound |= _top_level_names(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                bound |= _top_level_names(handler.body)
        else:
            bound |= {child.id for child in ast.walk(node)
                      if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store)}
    return bound


def private_definitions(tree: ast.Module) -> set[str]:
    """The private names a file defines: what its module and class bodies bind, and every
    attribute it assigns anywhere (``self._x = ...``, ``obj._x = ...``)."""
    defined = _top_level_names(tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            defined.add(node.attr)
    return {name for name in defined if is_private(name)}


@dataclass(frozen=True)
class Product:
    """What the private-access rule knows of the product: its modules' names, and the
    private names each file defines."""

    modules: frozenset[str]
    privates: dict[str, frozenset[str]]

    def foreign(self, path: str, tree: ast.Module) -> set[str]:
        """Private names other product files define and this one does not."""
        others = set().union(*(names for p, names in self.privates.items() if p != path))
        return others - private_definitions(tree)


def _product_aliases(tree: ast.AST, product: Product) -> set[str]:
    """Names the file binds to a product module (``import a2a_quiescence.wait as wait``,
    ``from a2a_quiescence.instrumentation import semconv``)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in product.modules and alias.asname:
                    bound.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in product.modules:
                    bound.add(alias.asname or alias.name)
    return bound


def _is_super_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _owner_is_own(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id in OWN) or _is_super_call(node)


def _describe(node: ast.AST) -> str:
    return ast.unparse(node)


def _private_reads(tree: ast.AST) -> list[tuple[ast.AST, ast.AST, str, str]]:
    """Every ``owner._x`` read and ``getattr(owner, "_x")``-like call not on self/cls/super():
    (node, owner, name, how it reads)."""
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr) and not _owner_is_own(node.value):
            reads.append((node, node.value, node.attr, _describe(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in PRIVATE_ACCESS_CALLS and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and is_private(node.args[1].value) and not _owner_is_own(node.args[0])):
            reads.append((node, node.args[0], node.args[1].value, _describe(node)))
    return reads


def check_private_access(path: str, tree: ast.Module, product: Product) -> list[Violation]:
    """``from m import _x``, whatever m is; ``alias._x`` on a product module; ``obj._x``
    where ``_x`` is a private name another product file defines and this one does not
    (the internals of the libraries the instrumentation hooks are not the product's)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if is_private(alias.name):
                    source = "." * node.level + (node.module or "")
                    found.append(Violation(path, node.lineno, "private-import",
                                           f"from {source} import {alias.name}"))
    aliases = _product_aliases(tree, product)
    foreign = product.foreign(path, tree)
    for node, owner, name, shown in _private_reads(tree):
        if isinstance(owner, ast.Name) and owner.id in aliases:
            found.append(Violation(path, node.lineno, "private-attribute",
                                   f"{shown}: a private name of module {owner.id}"))
        elif name in foreign:
            found.append(Violation(path, node.lineno, "private-attribute",
                                   f"{shown}: {name} is private to another product module"))
    return found


def _is_any(annotation: ast.AST | None) -> bool:
    """``Any``, ``typing.Any``, ``"Any"``, a union with ``Any`` in it, ``Optional[Any]``."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Name):
        return annotation.id == "Any"
    if isinstance(annotation, ast.Attribute):
        return annotation.attr == "Any"
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            return _is_any(ast.parse(annotation.value, mode="eval").body)
        except SyntaxError:
            return False
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):  # X | Any is Any
        return _is_any(annotation.left) or _is_any(annotation.right)
    if isinstance(annotation, ast.Subscript) and _describe(annotation.value) in ("Optional", "typing.Optional"):
        return _is_any(annotation.slice)
    return False


def _is_handle(name: str) -> bool:
    return name.lstrip("_") in HANDLES


def check_any_handles(path: str, tree: ast.AST) -> list[Violation]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *(p for p in (a.vararg, a.kwarg) if p)]
            for param in params:
                if _is_handle(param.arg) and _is_any(param.annotation):
                    found.append(Violation(path, param.lineno, "any-handle",
                                           f"parameter {param.arg} of {node.name}() is annotated Any"))
        elif isinstance(node, ast.AnnAssign) and _is_any(node.annotation):
            target = node.target
            name = target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) else None
            if name is not None and _is_handle(name):
                found.append(Violation(path, node.lineno, "any-handle",
                                       f"attribute {_describe(target)} is annotated Any"))
    return found


def check_source(path: str, source: str, product: Product) -> list[Violation]:
    """Every rule over one file's text."""
    tree = ast.parse(source, filename=path)
    return sorted(check_file_length(path, source) + check_function_length(path, tree)
                  + check_private_access(path, tree, product) + check_any_handles(path, tree))


def _generated(source: str) -> bool:
    head = "\n".join(source.splitlines()[:3])
    return "Generated by" in head and "Do not edit" in head


def product_files() -> list[Path]:
    files = []
    for top in PRODUCT_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if "generated" in rel.parts or "__pycache__" in rel.parts:
                continue
            if _generated(path.read_text(encoding="utf-8")):
                continue
            files.append(path)
    return files


def scan_product() -> tuple[Product, dict[str, str]]:
    sources = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in product_files()}
    privates = {rel: frozenset(private_definitions(ast.parse(text))) for rel, text in sources.items()}
    return Product(frozenset(module_name(rel) for rel in sources), privates), sources


def product_violations() -> list[Violation]:
    product, sources = scan_product()
    return [v for rel, text in sources.items() for v in check_source(rel, text, product)]


# -- the product ---------------------------------------------------------------------------


def test_the_product_is_scanned() -> None:
    scanned = {p.relative_to(ROOT).parts[0] for p in product_files()}
    assert scanned == set(PRODUCT_DIRS)
    assert not any("tests" in p.parts for p in product_files())


def test_no_violations() -> None:
    found = product_violations()
    assert not found, "structure limits broken:\n" + "\n".join(map(str, found))


# -- each rule fires on a bad snippet and stays silent on a good one ------------------------


# a product as the snippets see it: these modules, and another file's private names
SNIPPET_PRODUCT = Product(
    frozenset({"a2a_quiescence.wait", "a2a_quiescence.demo.harness", "a2a_quiescence.instrumentation.semconv"}),
    {"a2a_quiescence/other.py": frozenset({"_lock", "_popen", "_poll_sync"})},
)


def _check(source: str) -> list[Violation]:
    return check_source("snippet.py", source, SNIPPET_PRODUCT)


def _rules(source: str) -> list[tuple[int, str]]:
    return [(v.line, v.rule) for v in _check(source)]


def test_file_length_rule() -> None:
    assert _rules("x = 1\n" * (MAX_FILE_LINES + 1)) == [(MAX_FILE_LINES + 1, "file-length")]
    assert _rules("x = 1\n" * MAX_FILE_LINES) == []


def test_function_length_rule() -> None:
    def function(body_lines: int) -> str:
        return "\n\nclass C:\n    @staticmethod\n    def f():\n" + "        x = 1\n" * body_lines
    assert _rules(function(MAX_FUNCTION_LINES)) == [(5, "function-length")]
    assert _rules(function(MAX_FUNCTION_LINES - 1)) == []
    nested = "def outer():\n    async def inner():\n" + "        x = 1\n" * MAX_FUNCTION_LINES
    assert _rules(nested) == [(1, "function-length"), (2, "function-length")]


BAD_PRIVATE = """\
from a2a_quiescence.demo.harness import _bin
from . import _helper as helper
import a2a_quiescence.wait as wait
from a2a_quiescence.instrumentation import semconv
wait._poll_sync(None, None)
semconv._get("a2a.method.name")
state._lock.acquire()
self._state._lock
getattr(proc, "_popen")
"""

GOOD_PRIVATE = """\
from a2a_quiescence.demo.harness import program_path, __version__
import argparse
import os


class C(Base):
    def __init__(self):
        self._lock = None

    def __eq__(self, other):
        return self._lock == other._lock

    @classmethod
    def f(cls, sub: argparse._SubParsersAction, handler, point, obj):
        cls._count = 1
        super()._setup()
        getattr(cls, "_cache", None)
        point._replace(x=1)
        obj.__class__
        handler._agent_card
        os._exit(0)
"""


def test_private_access_rule() -> None:
    found = _check(BAD_PRIVATE)
    assert [(v.line, v.rule) for v in found] == [
        (1, "private-import"), (2, "private-import"), (5, "private-attribute"), (6, "private-attribute"),
        (7, "private-attribute"), (8, "private-attribute"), (9, "private-attribute"),
    ]
    assert str(found[0]) == "snippet.py:1: private-import: from a2a_quiescence.demo.harness import _bin"
    assert str(found[3]) == "snippet.py:6: private-attribute: semconv._get: a private name of module semconv"
    assert str(found[4]) == "snippet.py:7: private-attribute: state._lock: _lock is private to another product module"
    # a private name of this module read off another of its objects, a library's internal,
    # a documented underscore API, a dunder: not another product module's private
    assert _rules(GOOD_PRIVATE) == []


def test_what_a_file_defines_as_private() -> None:
    source = """\
_CACHE = {}
if True:
    _fallback = None
def _helper():
    _local = 1
    for _i in range(3):
        pass
class _Part:
    _slots = ()
    def start(self, other):
        self._task = None
        other._peer = self
"""
    assert private_definitions(ast.parse(source)) == {"_CACHE", "_fallback", "_helper", "_Part", "_slots",
                                                       "_task", "_peer"}


def test_module_names_follow_the_wheel() -> None:
    assert module_name("collector/state.py") == "a2a_quiescence.collector.state"
    assert module_name("instrumentation/backends/__init__.py") == "a2a_quiescence.instrumentation.backends"
    assert module_name("a2a_quiescence/demo/harness.py") == "a2a_quiescence.demo.harness"


BAD_ANY = """\
from typing import Any, Optional
import typing
def attach(collector: Any, *, state: "Any" = None, **runtime: Any) -> None: ...
class Part:
    tracker: Any | None = None
    _api: Optional[Any]
    def __init__(self, reporter: typing.Any) -> None:
        self._tier: Any = None
"""

GOOD_ANY = """\
from typing import Any
def attach(collector: Collector, payload: Any, state: State | None = None) -> Any: ...
class Part:
    tracker: Tracker | None = None
    extra: Any = None
    def __init__(self, reporter: Reporter) -> None:
        self._tier: Tier | None = None
        self.options: dict[str, Any] = {}
"""


def test_any_handle_rule() -> None:
    assert _rules(BAD_ANY) == [(3, "any-handle"), (3, "any-handle"), (3, "any-handle"), (5, "any-handle"),
                               (6, "any-handle"), (7, "any-handle"), (8, "any-handle")]
    assert _rules(GOOD_ANY) == []


@pytest.mark.parametrize("annotation, is_any", [
    ("Any", True), ("typing.Any", True), ("'Any'", True), ("Any | None", True), ("None | Any", True),
    ("Tier | Any", True), ("Optional[Any]", True), ("Tier", False), ("Tier | None", False), ("list[Any]", False),
    ("'Tier'", False), ("Optional[Tier]", False),
])
def test_what_counts_as_any(annotation: str, is_any: bool) -> None:
    assert _is_any(ast.parse(annotation, mode="eval").body) is is_any
