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
                    "slicer.util", "slicer.modules", "ADRegNetApp", "ADRegNet")


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Every module ``path`` imports (relative imports made absolute in its package), each name taken from
    ``slicer`` (``from slicer import util`` -> ``slicer.util``), and every ``slicer.<name>`` used after
    ``import slicer`` (``slicer.app``, ``slicer.util.arrayFromVolume(...)`` -> ``slicer.util``), under any name
    it was imported as."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    # the names ``slicer`` is reached by (``import slicer as sl``: ``sl.util`` is ``slicer.util``)
    slicer_names = {"slicer"} | {alias.asname for node in ast.walk(tree) if isinstance(node, ast.Import)
                                 for alias in node.names if alias.name == "slicer" and alias.asname}
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:  # within its package
                names.add(f"{path.parent.name}.{node.module or ''}".rstrip("."))
            else:  # absolute, or from the module folder (a sibling package: level 2)
                names.add(node.module or path.parent.parent.name)
                if node.module == "slicer":  # its names are modules or application objects alike
                    names.update(f"slicer.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in slicer_names:
            names.add(f"slicer.{node.attr}")
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


@pytest.mark.parametrize("source, caught", [
    ("from slicer import app, util", ["slicer.app", "slicer.util"]),
    ("import slicer\ndef f(node):\n    return slicer.util.arrayFromVolume(node)", ["slicer.util"]),
    ("import slicer\nslicer.modules.volumes.logic()", ["slicer.modules"]),
    ("import slicer\nslicer.app.processEvents()", ["slicer.app"]),
    ("import slicer.util", ["slicer.util"]),
    ("from slicer.i18n import tr", ["slicer.i18n"]),
    ("import qt as q", ["qt"]),
    ("import slicer as sl\nsl.util.getNode('x')", ["slicer.util"]),
    ("import slicer\nfrom slicer import vtkMRMLScene\nslicer.vtkMRMLTransformNode.IsGeneralTransformLinear", []),
], ids=["from-slicer-import", "slicer.util-call", "slicer.modules", "slicer.app", "import-slicer.util", "slicer.i18n",
        "qt-alias", "slicer-alias", "scene-classes-allowed"])
def test_the_rule_sees_every_way_of_reaching_the_application(tmp_path, source, caught):
    """Before: ``from slicer import app, util`` was recorded as ``slicer`` alone, and ``slicer.util.X(...)`` and
    ``slicer.modules`` after ``import slicer`` not at all, so the scene-bridge test passed them; nor ``sl.util``
    after ``import slicer as sl``."""
    path = tmp_path / "ADRegNetMRML" / "scratch.py"
    path.parent.mkdir()
    path.write_text(source, encoding="utf-8")
    assert _hits(_imports(path), APPLICATION_ONLY + ("slicer.app",)) == caught
