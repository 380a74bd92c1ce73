"""The pure cores stay pure: by their import graph, no trio and no filesystem.

The ledger, the scheduler rules, the SWIM membership machine (with its codec, probe and
dissemination parts), the renderer option rules and job eligibility take the time as an argument
and return what to do; the trio services around them do the I/O. This test reads the source with
``ast`` (nothing is imported), follows every ``peerfarm`` import from those modules, and fails
naming the module and the import that would bring in trio, a socket or the filesystem.
"""

from __future__ import annotations

import ast
from pathlib import Path

import peerfarm

PACKAGE = Path(peerfarm.__file__).resolve().parent

#: The pure modules (dotted names under ``peerfarm``); ``ledger.*`` and ``scheduler.*`` are
#: whole packages except the ledger's one persistence edge.
PURE_PACKAGES = ("ledger", "scheduler")
#: ``ledger/store.py`` is the SQLite edge of the ledger (it only saves and loads).
EDGES = {"ledger.store"}
PURE_MODULES = (
    "gossip.membership",
    "gossip.table",
    "gossip.members",
    "gossip.swim_wire",
    "gossip.probe",
    "gossip.dissemination",
    "renderers.options",
    "scheduler.eligibility",
)

#: Top-level modules a pure module must not import (I/O, threads, processes, event loops).
FORBIDDEN = {
    "trio", "anyio", "asyncio", "socket", "ssl", "selectors", "subprocess", "threading",
    "multiprocessing", "os", "shutil", "tempfile", "glob", "io", "sqlite3", "fcntl", "mmap",
    "zeroconf", "httpx", "ifaddr", "starlette", "hypercorn",
}  # fmt: skip
#: From ``pathlib`` only the pure path classes (string arithmetic, no filesystem access).
PURE_PATHLIB = {"PurePath", "PurePosixPath", "PureWindowsPath"}


def _path_of(module: str) -> Path:
    base = PACKAGE.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """Dotted names (under ``peerfarm``, without the prefix) an ImportFrom pulls in."""
    if node.level:
        package = module.split(".")
        if _path_of(module).name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    elif node.module and (node.module == "peerfarm" or node.module.startswith("peerfarm.")):
        base = node.module.removeprefix("peerfarm").lstrip(".")
    else:
        return []
    out = [base] if base else []
    for alias in node.names:  # ``from . import x`` may name a submodule
        candidate = f"{base}.{alias.name}" if base else alias.name
        if _path_of(candidate).exists():
            out.append(candidate)
    return [m for m in out if m and _path_of(m).exists()]


def _parse(source: str) -> ast.Module:
    """``ast.parse``, again when CPython 3.11 before 3.11.8 raises its false "AST constructor
    recursion depth mismatch" (gh-106905): the counter it checks is shared by every thread,
    and another thread of the test process formatting a traceback (3.11 parses the source
    line for its carets) moves it under our feet."""
    for _attempt in range(5):
        try:
            return ast.parse(source)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc):
                raise
    return ast.parse(source)


def _problems(module: str, source: str | None = None) -> tuple[list[str], list[str]]:
    """(what is impure in this module's own imports and calls, the peerfarm modules it imports)."""
    if source is None:
        source = _path_of(module).read_text(encoding="utf-8")
    tree = _parse(source)
    problems: list[str] = []
    local: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN:
                    problems.append(f"import {alias.name}")
                if top == "pathlib":
                    problems.append(f"import {alias.name} (use PurePath classes)")
                if top == "peerfarm":
                    name = alias.name.removeprefix("peerfarm").lstrip(".")
                    if name and _path_of(name).exists():
                        local.append(name)
        elif isinstance(node, ast.ImportFrom):
            top = (node.module or "").split(".")[0] if not node.level else ""
            if top in FORBIDDEN:
                problems.append(f"from {node.module} import ...")
            if top == "pathlib":
                problems += [
                    f"from pathlib import {a.name}"
                    for a in node.names
                    if a.name not in PURE_PATHLIB
                ]
            local += _resolve(module, node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "open"
        ):
            problems.append(f"open() at line {node.lineno}")
    return problems, local


def _pure_roots() -> list[str]:
    roots = list(PURE_MODULES)
    for package in PURE_PACKAGES:
        for path in sorted((PACKAGE / package).glob("*.py")):
            name = package if path.name == "__init__.py" else f"{package}.{path.stem}"
            if name not in EDGES:
                roots.append(name)
    return roots


def test_the_pure_modules_import_neither_trio_nor_the_filesystem() -> None:
    seen: dict[str, str] = {}  # module -> the pure root that reaches it
    todo = [(root, root) for root in _pure_roots()]
    found: list[str] = []
    while todo:
        module, via = todo.pop()
        if module in seen:
            continue
        seen[module] = via
        problems, local = _problems(module)
        chain = module if module == via else f"{module} (reached from {via})"
        found += [f"peerfarm.{chain}: {problem}" for problem in problems]
        todo += [(m, via) for m in local if m not in seen]
    assert not found, "impure imports in the pure core:\n" + "\n".join(sorted(found))
    # The walk really covered the cores (a renamed package must not silently pass).
    assert {"ledger.ledger", "ledger.replica", "scheduler.planner", "gossip.membership"} <= set(
        seen
    )


def test_the_check_catches_an_impure_import() -> None:
    """The detector itself: trio, os, pathlib.Path and open() are reported; PurePath is not."""
    source = (
        "import trio\nimport os.path\nfrom pathlib import Path, PurePosixPath\n"
        "from peerfarm import errors\n\ndef f():\n    return open('x')\n"
    )
    problems, local = _problems("gossip.membership", source)
    assert problems == [
        "import trio",
        "import os.path",
        "from pathlib import Path",
        "open() at line 7",
    ]
    assert local == ["errors"]
