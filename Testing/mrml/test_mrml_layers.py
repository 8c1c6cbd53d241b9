"""The Slicer module's layers (docs/ARCHITECTURE.md, "The Slicer module"): what each folder may import.

Read from the source (ast), so a forbidden import fails here even where it would only fail inside Slicer.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "ADRegNet"
#: what needs the Slicer application (or a Qt panel): never in the Qt-free scene bridge
APPLICATION_ONLY = ("qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "slicer.i18n",
                    "slicer.util", "ADRegNetApp", "ADRegNet")


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Every module ``path`` imports (relative imports made absolute in its package), and every ``slicer.app`` use."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:  # within its package
                names.add(f"{path.parent.name}.{node.module or ''}".rstrip("."))
            else:  # absolute, or from the module folder (a sibling package: level 2)
                names.add(node.module or path.parent.parent.name)
        elif isinstance(node, ast.Attribute) and node.attr == "app" and getattr(node.value, "id", "") == "slicer":
            names.add("slicer.app")
    return names


def _hits(names: set[str], forbidden) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", sorted((MODULE / "ADRegNetMRML").glob("*.py")), ids=lambda p: p.name)
def test_the_scene_bridge_needs_no_slicer_application(path):
    assert _hits(_imports(path), APPLICATION_ONLY + ("slicer.app",)) == []


def test_the_child_process_imports_the_engine_only():
    names = _imports(MODULE / "ADRegNetMRML" / "worker.py")
    assert _hits(names, ("slicer", "vtk", "qt", "ADRegNetMRML")) == []
    assert any(n.startswith("ADRegNetLib") for n in names)


@pytest.mark.parametrize("name", ["paths.py", "dependencies.py"])
def test_what_runs_before_the_engine_is_importable_does_not_import_it(name):
    assert _hits(_imports(MODULE / "ADRegNetMRML" / name), ("ADRegNetLib",)) == []


@pytest.mark.parametrize("path", sorted((MODULE / "ADRegNetApp").glob("*.py")), ids=lambda p: p.name)
def test_the_app_layer_loads_before_the_engine_and_never_imports_the_panel(path):
    """ADRegNetMRML and ADRegNetLib only inside functions: the module loads before PyTorch is installed."""
    assert _hits(_imports(path, top_level_only=True), ("ADRegNetMRML", "ADRegNetLib")) == []
    assert _hits(_imports(path), ("ADRegNet",)) == []  # the module file (ADRegNetMRML / ADRegNetLib are other names)
