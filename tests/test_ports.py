"""The OCPI bridge reaches csms only through csms.ports, and its modules import no circle.

Both read the source with ``ast``: every import at any depth (inside functions and
``TYPE_CHECKING`` blocks too), so neither a lazy import nor a type-only one slips by.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ocpi_bridge

PACKAGE = Path(ocpi_bridge.__file__).parent
ALLOWED = "csms.ports"


def imports_of(source: str, package: str, module: str) -> set[str]:
    """Absolute names of every module ``module`` (of ``package``) imports, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package if node.level == 1 else package.rsplit(".", node.level - 1)[0]
                target = f"{base}.{node.module}" if node.module else base
                if node.module is None:  # from . import x: x may be a module
                    found.update(f"{base}.{alias.name}" for alias in node.names)
                    continue
                found.add(target)
            else:
                assert node.module is not None
                found.add(node.module)
    return found


def package_imports(root: Path, package: str) -> dict[str, set[str]]:
    return {
        f"{package}.{path.stem}": imports_of(path.read_text(), package, path.stem)
        for path in sorted(root.glob("*.py"))
    }


def csms_imports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Per module, the csms modules it imports other than the port."""
    out = {}
    for module, names in graph.items():
        bad = {n for n in names if (n == "csms" or n.startswith("csms.")) and n != ALLOWED}
        if bad:
            out[module] = bad
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles among the graph's own modules (one path per circle found)."""
    edges = {m: sorted(n for n in names if n in graph and n != m) for m, names in graph.items()}
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in edges[m]:
            if state.get(n) == 1:
                circle = [*path[path.index(n) :], n]
                if frozenset(circle) not in seen:
                    seen.add(frozenset(circle))
                    found.append(circle)
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def test_the_bridge_imports_only_the_port_of_csms() -> None:
    graph = package_imports(PACKAGE, "ocpi_bridge")
    assert len(graph) > 20  # the walk found the package
    assert csms_imports(graph) == {}


def test_the_bridge_has_no_import_circle() -> None:
    assert cycles(package_imports(PACKAGE, "ocpi_bridge")) == []


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """A package with a lazy csms import, a type-only one and a circle through a function."""
    pkg = tmp_path / "ext"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from csms.ports import CsmsPort\n"
        "if TYPE_CHECKING:\n    from csms.app import CentralSystem\n"
        "from .b import thing\n"
    )
    (pkg / "b.py").write_text(
        "def thing():\n    from csms.store import Store\n    from . import a\n    return a, Store\n"
    )
    (pkg / "c.py").write_text("from .a import x\n")
    graph = package_imports(pkg, "ext")
    assert csms_imports(graph) == {"ext.a": {"csms.app"}, "ext.b": {"csms.store"}}
    assert [set(c) for c in cycles(graph)] == [{"ext.a", "ext.b"}]
