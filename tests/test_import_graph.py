"""The import graph of ``platform/`` and ``trainables/`` has no cycle, and the library never imports
its entry points (``platform`` -> ``trainables``).

Every ``.py`` file is parsed with :mod:`ast`; every import counts, those inside functions too
(a cycle hidden behind a function-level import is still a cycle: the two modules cannot be
understood, tested or changed apart). Relative imports are resolved against the importing
module's package. ``from platform.x import y`` is an import of the submodule ``platform.x.y``
when that module exists, else of ``platform.x``. Importing ``a.b.c`` runs the packages ``a`` and
``a.b`` first, but those implicit parent imports are not edges: a package's ``__init__`` may
import its own submodules.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("platform", "trainables")


def modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package ``__init__``)."""
    out = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            out[".".join(parts)] = (path, is_package)
    return out


def _known(name: str, mods: dict) -> str | None:
    """``name`` or its longest prefix that is one of our modules (``platform.x.func`` -> ``platform.x``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in mods:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, is_package: bool, mods: dict) -> set[str]:
    """Our modules that ``module`` imports (anywhere in the file)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in mods else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            known = _known(target, mods)
            if known and known != module:
                found.add(known)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, is_package, mods) for name, (path, is_package) in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    return "\n".join(f"  {m} -> {', '.join(sorted(graph[m] & members))}" for m in component)


def test_the_checker_sees_function_level_relative_and_submodule_imports(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    files = {
        "pkg/__init__.py": "from pkg import a  # the package imports its submodule: no edge back\n",
        "pkg/a.py": "def f():\n    from .b import g\n    from . import c\n",
        "pkg/b.py": "import numpy\nfrom pkg.sub import tool\n",
        "pkg/c.py": "from ..pkg import b\n",
        "pkg/sub/__init__.py": "def tool(): ...\n",
    }
    mods = {}
    for rel, text in files.items():
        path = tmp_path / rel
        path.write_text(text)
        parts = list(Path(rel).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph = {name: imports_of(name, path, pkg, mods) for name, (path, pkg) in mods.items()}
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b", "pkg.c"}, "pkg.b": {"pkg.sub"}, "pkg.c": {"pkg.b"},
                     "pkg.sub": set()}
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    # The real graph: a function-level import of the driver is seen.
    real = import_graph()
    assert "platform.search.space" in real["platform.search.driver"] and "trainables.fewshot" in real


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (module -> the modules of its cycle it imports):\n" + "\n\n".join(
        _describe(c, graph) for c in found)


def test_platform_never_imports_trainables():
    graph = import_graph()
    bad = {m: sorted(t for t in targets if t.split(".")[0] == "trainables")
           for m, targets in graph.items() if m.split(".")[0] == "platform"}
    bad = {m: t for m, t in bad.items() if t}
    assert not bad, ("the library imports its entry points (trainables register themselves in "
                     f"platform.train.trainables instead): {bad}")
