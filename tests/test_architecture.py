"""The package's shape, checked from its source with `ast` (docs/architecture.md draws it).

- no import cycles between voicefleet modules;
- `voicefleet.models` imports nothing else of ours;
- imports follow the layer order models <- text <- inference <- platform <- (tuning, serve) <-
  recipes <- cli: a module never imports a higher layer, and tuning and serve never import each
  other;
- every voicefleet module an import names exists, and every source folder is a package;
- no source file is over 600 lines;
- `ray.init` is called only by `voicefleet.platform.cluster.ensure_ray`.

Every `import` and `from` statement counts, relative ones and those inside functions or
`if TYPE_CHECKING:` blocks included: a deferred import is still a dependency. The scanner is
tested on a small synthetic package first, so it cannot pass by seeing nothing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src" / "voicefleet"
MAX_LINES = 600

# Rank of each top-level package: a module may import its own package and lower ranks only.
# tuning and serve share a rank and must not import each other.
LAYERS = {"models": 0, "text": 1, "inference": 2, "platform": 3, "tuning": 4, "serve": 4,
          "recipes": 5, "cli": 6}
RAY_INIT_OWNER = ("voicefleet.platform.cluster", "ensure_ray")


@dataclass(frozen=True)
class Edge:
    """One import statement of a module of ours, resolved to the most specific module it names."""

    source: str  # importing module, dotted
    target: str  # imported module, dotted (a module of ours unless the import is broken)
    file: str  # importing file, relative to the folder above the package
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_index(root: Path) -> dict[str, Path]:
    """Dotted module name -> file for every .py file under the package folder `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def scan_imports(root: Path) -> list[Edge]:
    """Every import statement under package folder `root`, anywhere in each file."""
    modules = module_index(root)
    package = root.name
    edges = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        here = module.split(".") if is_package else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            named: list[str] = []
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                for alias in node.names:  # `from pkg import submodule` names the submodule
                    sub = f"{stem}.{alias.name}"
                    named.append(sub if sub in modules else stem)
            file = path.relative_to(root.parent).as_posix()
            edges += [Edge(module, name, file, node.lineno) for name in named
                      if name == package or name.startswith(package + ".")]
    return edges


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One shortest cycle (as its edges) per strongly connected group of modules."""
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    # Tarjan's strongly connected components, iteratively (no recursion limit to trip over).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph.get(node, {}):
                    groups.append(sorted(group))
    cycles = []
    for group in groups:
        members = set(group)
        first = group[0]
        # Breadth-first from `first` back to itself inside the group: the shortest cycle through it.
        previous: dict[str, Edge] = {}
        frontier = [first]
        found = None
        while frontier and found is None:
            following = []
            for node in frontier:
                for target, edge in sorted(graph.get(node, {}).items()):
                    if target == first:
                        found = edge
                        break
                    if target in members and target not in previous:
                        previous[target] = edge
                        following.append(target)
                if found:
                    break
            frontier = following
        cycle = [found]
        while cycle[0].source != first:
            cycle.insert(0, previous[cycle[0].source])
        cycles.append(cycle)
    return cycles


def layer_violations(edges: list[Edge], layers: dict[str, int]) -> list[str]:
    """Imports against the layer order, plus modules outside any known layer."""
    problems = []
    for edge in edges:
        source, target = edge.source.split("."), edge.target.split(".")
        if len(source) < 2 or len(target) < 2 or source[1] == target[1]:
            continue  # the package root, or an import inside one package
        for part in (source[1], target[1]):
            if part not in layers:
                problems.append(f"{edge.where()}: '{part}' has no place in the layer order; add it to LAYERS "
                                "and docs/architecture.md")
        if source[1] not in layers or target[1] not in layers:
            continue
        if source[1] == "models":
            problems.append(f"{edge.where()}: {edge.source} imports {edge.target} "
                            "(models imports nothing else of ours)")
        elif layers[target[1]] >= layers[source[1]]:
            kind = "a sibling layer" if layers[target[1]] == layers[source[1]] else "a higher layer"
            problems.append(f"{edge.where()}: {edge.source} imports {edge.target}, {kind}")
    return problems


def missing_targets(edges: list[Edge], modules: dict[str, Path]) -> list[str]:
    return [f"{edge.where()}: {edge.source} imports {edge.target}, which does not exist"
            for edge in edges if edge.target not in modules]


def ray_init_uses(path: Path) -> list[tuple[int, str | None]]:
    """(line, enclosing function) of every `ray.init` reference in a file, aliases included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    ray_names = {"ray"}
    init_names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            ray_names.update(alias.asname for alias in node.names if alias.name == "ray" and alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module == "ray" and not node.level:
            init_names.update(alias.asname or alias.name for alias in node.names if alias.name == "init")
    uses = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.Attribute) and node.attr == "init" and isinstance(node.value, ast.Name) \
                and node.value.id in ray_names:
            uses.append((node.lineno, function))
        elif isinstance(node, ast.Name) and node.id in init_names:
            uses.append((node.lineno, function))
        elif isinstance(node, ast.ImportFrom) and node.module == "ray" and any(a.name == "init" for a in node.names):
            uses.append((node.lineno, function))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    return uses


# --- the scanner itself, on a synthetic package -------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_scanner_sees_relative_function_level_and_submodule_imports(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/models/__init__.py": "",
        "pkg/models/net.py": "from .blocks import Block\nfrom . import blocks\n",
        "pkg/models/blocks.py": "import os\nclass Block: pass\n",
        "pkg/platform/__init__.py": "",
        "pkg/platform/run.py": (
            "def go():\n"
            "    from ..models import net\n"
            "    if True:\n"
            "        import pkg.models.blocks as b\n"
            "class C:\n"
            "    def m(self):\n"
            "        from ..models.net import something\n"),
    })
    found = {(e.source, e.target, e.line) for e in scan_imports(root)}
    assert found == {
        ("pkg.models.net", "pkg.models.blocks", 1),      # relative `from .blocks import`
        ("pkg.models.net", "pkg.models.blocks", 2),      # `from . import submodule`
        ("pkg.platform.run", "pkg.models.net", 2),       # relative, inside a function
        ("pkg.platform.run", "pkg.models.blocks", 4),    # absolute, nested in a block in a function
        ("pkg.platform.run", "pkg.models.net", 7),       # inside a method
    }


def test_scanner_reports_cycles_layers_and_missing_modules(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/models/__init__.py": "from pkg.models.a import A\n",
        "pkg/models/a.py": "def f():\n    from pkg.models import A\n",       # a -> models/__init__ -> a
        "pkg/models/b.py": "from pkg.platform.x import y\n",                  # models reaches up
        "pkg/platform/__init__.py": "",
        "pkg/platform/x.py": "from ..cli import main\nfrom ..gone import z\n",  # higher layer; missing
        "pkg/cli/__init__.py": "main = None\n",
    })
    edges = scan_imports(root)
    cycles = find_cycles(edges)
    assert [[(e.source, e.target) for e in cycle] for cycle in cycles] == [
        [("pkg.models", "pkg.models.a"), ("pkg.models.a", "pkg.models")]]
    problems = layer_violations(edges, {"models": 0, "platform": 1, "cli": 2})
    assert any("pkg.models.b imports pkg.platform.x (models imports nothing else" in p for p in problems), problems
    assert any("pkg.platform.x imports pkg.cli, a higher layer" in p for p in problems), problems
    assert any("'gone' has no place in the layer order" in p for p in problems), problems
    assert missing_targets(edges, module_index(root)) == ["pkg/platform/x.py:2: pkg.platform.x imports pkg.gone, "
                                                          "which does not exist"]


def test_scanner_finds_ray_init_in_any_spelling(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import ray\nimport ray as r\nfrom ray import init as start\n"
                    "def up():\n    ray.init()\n    r.init(address='auto')\nstart()\n")
    assert ray_init_uses(path) == [(3, None), (5, "up"), (6, "up"), (7, None)]


# --- the real tree ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return scan_imports(SOURCE)


def test_the_scan_covers_the_package(edges):
    """A scan that found nothing would pass every check below."""
    modules = module_index(SOURCE)
    assert len(modules) > 50 and len(edges) > 200
    assert {e.source.split(".")[1] for e in edges if "." in e.source} >= set(LAYERS)


def test_no_import_cycles(edges):
    cycles = find_cycles(edges)
    described = ["\n    " + " -> ".join([c[0].source] + [e.target for e in c])
                 + "  (" + ", ".join(e.where() for e in c) + ")" for c in cycles]
    if cycles:
        pytest.fail("import cycles:" + "".join(described), pytrace=False)


def test_imports_follow_the_layer_order(edges):
    problems = layer_violations(edges, LAYERS)
    if problems:
        pytest.fail("imports against the layer order:\n  " + "\n  ".join(problems), pytrace=False)


def test_every_imported_voicefleet_module_exists(edges):
    problems = missing_targets(edges, module_index(SOURCE))
    if problems:
        pytest.fail("\n  ".join(["imports of modules that do not exist:"] + problems), pytrace=False)


def test_every_source_folder_is_a_package():
    """A folder without `__init__.py` is an implicit namespace package: it has no docstring to say
    what it holds (the README's layout is generated from them) and merges silently with any
    same-named folder elsewhere on the path."""
    folders = {p.parent for p in SOURCE.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(f.relative_to(REPO).as_posix() for f in folders if not (f / "__init__.py").exists())
    assert not missing, f"folders without __init__.py (add one with a docstring): {missing}"


def test_no_source_file_is_over_600_lines():
    files = [*SOURCE.rglob("*.py"), *SOURCE.rglob("*.c")]
    for folder in ("tests", "benchmarks", "scripts"):
        files += (REPO / folder).rglob("*.py")
    long = {p.relative_to(REPO).as_posix(): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert len(files) > 50
    if long:
        pytest.fail(f"files over {MAX_LINES} lines (split them by concern): {dict(sorted(long.items()))}",
                    pytrace=False)


def test_only_ensure_ray_calls_ray_init():
    owner_module, owner_function = RAY_INIT_OWNER
    files = [*SOURCE.rglob("*.py")]
    for folder in ("tests", "benchmarks", "scripts"):
        files += (REPO / folder).rglob("*.py")
    owner_path = module_index(SOURCE)[owner_module]
    stray, owned = [], []
    for path in files:
        for line, function in ray_init_uses(path):
            if path == owner_path and function == owner_function:
                owned.append(line)
            else:
                stray.append(f"{path.relative_to(REPO).as_posix()}:{line}")
    assert owned, f"{owner_module}.{owner_function} no longer calls ray.init; update RAY_INIT_OWNER"
    assert not stray, f"ray.init outside {owner_module}.{owner_function} (call ensure_ray instead): {stray}"
