"""The import graph of a package, read from its sources' syntax trees, and the cycles in it.

Every import counts wherever it stands: at module level, inside a function (a deferred import
is still a dependency) and under ``if TYPE_CHECKING:`` (a type-only cycle still ties the modules
together).  Nothing is imported or executed, so the graph is the same for the pure and the
compiled build.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["cycles", "import_graph", "module_name", "private_reach_ins", "restrict"]


def module_name(path: Path, package_dir: Path) -> str:
    """``utcp/cli/__init__.py`` -> ``utcp.cli``; ``utcp/cli/cat.py`` -> ``utcp.cli.cat``."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, *, type_only: bool) -> Iterable[ast.Import | ast.ImportFrom]:
    """The import statements of a module; without ``type_only``, not those under
    ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not type_only and isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _targets(
    node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: set[str]
) -> Iterable[str]:
    """The modules of the package an import statement in module ``name`` depends on."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:  # relative: level 1 is the module's own package
        base = name.split(".") if is_package else name.split(".")[:-1]
        if node.level > 1:
            base = base[: -(node.level - 1)]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    for alias in node.names:
        # ``from pkg import mod`` depends on the submodule; ``from pkg import name`` on pkg.
        sub = f"{source}.{alias.name}"
        yield sub if sub in modules else source


def import_graph(package_dir: str | Path, *, type_only: bool = True) -> dict[str, set[str]]:
    """Each module of the package under ``package_dir`` -> the package's modules it imports
    (dotted names, a package named by its ``__init__``).  Imports from outside the package are
    left out; ``type_only=False`` leaves out those under ``if TYPE_CHECKING:`` as well."""
    root = Path(package_dir)
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {
            target
            for node in _imports(tree, type_only=type_only)
            for target in _targets(node, name, is_package, modules)
            if target in modules and target != name
        }
    return graph


def restrict(graph: Mapping[str, set[str]], prefixes: Iterable[str]) -> dict[str, set[str]]:
    """The subgraph of the modules named ``prefix`` or ``prefix.*`` for one of ``prefixes``."""
    wanted = tuple(prefixes)

    def keep(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in wanted)

    return {m: {t for t in targets if keep(t)} for m, targets in graph.items() if keep(m)}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import cycles: each strongly connected component of more than one module (Tarjan's
    algorithm, iterative), sorted, the components sorted by their first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    for start in sorted(graph):
        if start in index:
            continue
        # Each frame: a node and the iterator over its successors not yet visited.
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
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
    return sorted(found)


if __name__ == "__main__":  # python tests/layering.py [PACKAGE_DIR]: print the cycles
    import sys

    package = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent / "utcp")
    for type_only in (True, False):
        print("with type-only imports:" if type_only else "without type-only imports:")
        for cycle in cycles(import_graph(package, type_only=type_only)):
            print("  " + " ".join(cycle))


def private_reach_ins(package_dir: str | Path) -> dict[str, list[str]]:
    """Per module, every ``x._name`` whose ``x`` is not ``self`` or ``cls``: a reach into
    another object's underscore attribute (``__dunder__`` names excepted), as
    ``"line: expression"``."""
    package_dir = Path(package_dir)
    found: dict[str, list[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        name = module_name(path, package_dir)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            found.setdefault(name, []).append(f"{node.lineno}: {ast.unparse(node)}")
    return found
