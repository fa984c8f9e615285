"""Dependency direction: model components never import platform code, recipes, serving or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import voicefleet

PACKAGE = Path(voicefleet.__file__).parent
HIGHER_LAYERS = ("voicefleet.platform", "voicefleet.tuning", "voicefleet.serve", "voicefleet.cli")


def _imports(path: Path) -> set[str]:
    names = set()
    module = "voicefleet." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # resolve relative imports against this module's package
                base = module.split(".")[: -node.level]
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return names


def test_models_do_not_import_higher_layers():
    offenders = {}
    for path in (PACKAGE / "models").rglob("*.py"):
        bad = sorted(n for n in _imports(path) if n.startswith(HIGHER_LAYERS))
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = bad
    assert not offenders, f"model components import higher layers: {offenders}"


def test_the_check_sees_relative_imports():
    """Guard against the scan silently passing: relative imports must resolve to full names."""
    names = _imports(PACKAGE / "models" / "sovits.py")
    assert "voicefleet.models.config" in names and "voicefleet.models.modules.attention" in names
