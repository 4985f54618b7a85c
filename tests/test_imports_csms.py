"""csms's modules import each other without circles, and never from inside a function.

A circle works only as long as every module in it reads the others' names late (inside
functions, or under TYPE_CHECKING); one eager import added anywhere on it breaks start-up.
An import inside a function, of a csms module, is how such a circle is usually hidden: so
both are checked here, from the source (``ast``), at every depth: module level, under
``if TYPE_CHECKING:``, inside classes and functions.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ImportGraph:
    """Which module of a package imports which other (edges to the same package only), and
    the imports of the package's modules written inside a function."""

    edges: dict[str, set[str]] = field(default_factory=dict)
    in_functions: list[tuple[str, int, str]] = field(default_factory=list)

    def cycles(self) -> list[list[str]]:
        """Every strongly connected set of two or more modules (or one importing itself),
        each sorted, found with Tarjan's algorithm."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        out: list[list[str]] = []

        def visit(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            on_stack.add(v)
            for w in sorted(self.edges.get(v, ())):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                part = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    part.append(w)
                    if w == v:
                        break
                if len(part) > 1 or v in self.edges.get(v, ()):
                    out.append(sorted(part))

        for v in sorted(self.edges):
            if v not in index:
                visit(v)
        return sorted(out)


def _module_name(base: Path, path: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute module names an import statement may load (a ``from X import y`` loads
    X, and X.y when y is a submodule: both are listed, unknown names are dropped later)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def build_graph(base: Path, package: str) -> ImportGraph:
    """The import graph of ``base/package`` (a directory of Python files)."""
    files = sorted((base / package).rglob("*.py"))
    modules = {_module_name(base, f): f for f in files}
    graph = ImportGraph({m: set() for m in modules})
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"

        def walk(node: ast.AST, in_function: bool, module: str = module, pkg: bool = is_package):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    found = [t for t in _targets(child, module, pkg) if t in modules]
                    for target in found:
                        # loading a.b.c runs a and a.b first, unless the importer is inside
                        # them (then they are loaded, or loading, already)
                        parts = target.split(".")
                        for n in range(1, len(parts) + 1):
                            step = ".".join(parts[:n])
                            if step in modules and not (module + ".").startswith(step + "."):
                                if step != module:
                                    graph.edges[module].add(step)
                    if in_function and found:
                        graph.in_functions.append((module, child.lineno, found[-1]))
                walk(
                    child,
                    in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef),
                )

        walk(tree, False)
    return graph


# ---------------------------------------------------------------------- the checker works


def _write(base: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_finds_a_circle_hidden_under_type_checking(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .b import B\nclass A: pass\n",
            "pkg/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from .c import C\nclass B: pass\n"
            ),
            "pkg/c.py": "import pkg.a\nclass C: pass\n",
            "pkg/d.py": "from . import a\n",
        },
    )
    graph = build_graph(tmp_path, "pkg")
    assert graph.cycles() == [["pkg.a", "pkg.b", "pkg.c"]]
    assert graph.edges["pkg.d"] == {"pkg.a"}
    assert graph.in_functions == []


def test_finds_an_import_inside_a_function(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from .x import X\n",
            "pkg/sub/x.py": "class X:\n    def f(self):\n        from ..y import Y\n",
            "pkg/y.py": "import json\n\nasync def g():\n    import os\n    from .sub import x\n",
        },
    )
    graph = build_graph(tmp_path, "pkg")
    assert graph.in_functions == [("pkg.sub.x", 3, "pkg.y"), ("pkg.y", 5, "pkg.sub.x")]
    # the package's __init__ is part of the circle: loading pkg.sub.x loads pkg.sub first
    assert graph.cycles() == [["pkg.sub", "pkg.sub.x", "pkg.y"]]


def test_a_clean_package_passes(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/db/__init__.py": "from .base import Base\nfrom .open import open_db\n",
            "pkg/db/base.py": "class Base: pass\n",
            "pkg/db/open.py": "from .base import Base\nfrom .lite import Lite\n",
            "pkg/db/lite.py": "from .base import Base\nclass Lite(Base): pass\n",
            "pkg/store.py": "from .db import open_db\n",
        },
    )
    graph = build_graph(tmp_path, "pkg")
    assert graph.cycles() == [] and graph.in_functions == []


# ---------------------------------------------------------------------- csms itself


def test_csms_has_no_import_circle() -> None:
    cycles = build_graph(ROOT, "csms").cycles()
    assert cycles == [], "import circles in csms: " + "; ".join(" <-> ".join(c) for c in cycles)


def _listed(found: list[tuple[str, int, str]]) -> str:
    return ", ".join(f"{m}:{line} imports {target}" for m, line, target in found)


def test_csms_imports_no_csms_module_inside_a_function() -> None:
    found = build_graph(ROOT, "csms").in_functions
    assert found == [], "csms modules imported inside functions: " + _listed(found)


@pytest.mark.parametrize("module", ["csms.web.queries", "csms.repositories.transactions"])
def test_the_graph_sees_real_edges(module: str) -> None:
    """A guard against a checker that finds nothing because it reads nothing."""
    graph = build_graph(ROOT, "csms")
    assert "csms.timeparse" in graph.edges[module]
