"""No import cycles in `voicefleet.platform` or `voicefleet.text`.

The graph has an edge for every `import` / `from ... import` statement of the package, also
those inside functions: a cycle through a deferred import still ties two modules together.
`from package import name` points at the submodule when `name` is one, else at the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import voicefleet

PACKAGE = Path(voicefleet.__file__).parent
CHECKED = ("voicefleet.platform", "voicefleet.text")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("voicefleet",) + path.relative_to(PACKAGE).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the voicefleet modules it imports anywhere in its source."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        targets.add(f"{base}.{alias.name}")
                    elif base in modules:
                        targets.add(base)
        targets.discard(name)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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


@pytest.mark.parametrize("prefix", CHECKED)
def test_no_import_cycles(prefix):
    graph = import_graph()
    assert any(m.startswith(prefix + ".") for m in graph), f"no modules found under {prefix}"
    tangled = [c for c in cycles(graph) if any(m == prefix or m.startswith(prefix + ".") for m in c)]
    assert not tangled, f"import cycles through {prefix}: {tangled}"


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    # `_run_pipeline` imports the Ray Data stages inside the function
    assert "voicefleet.platform.data.stages" in graph["voicefleet.platform.data.pipeline"]
    # `from voicefleet.platform.data import store` names the submodule, not the package
    assert "voicefleet.platform.data.store" in graph["voicefleet.platform.data.pipeline"]


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"x": {"y"}, "y": set()}) == []
