"""The module panel (.ui) loads offscreen and matches what ADRegNet.py uses.

Slicer's ctk/qMRML widgets are unknown to PySide6; QUiLoader builds their base class instead
(declared in the .ui's <customwidgets>), which is enough to check names and properties.
"""
from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UI_FILE = REPO / "ADRegNet" / "Resources" / "UI" / "ADRegNet.ui"
MODULE_FILE = REPO / "ADRegNet" / "ADRegNet.py"


def _module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text())


def _ui_names_used_by_widget() -> set[str]:
    """Every ``self.ui.<name>`` in ADRegNet.py."""
    names = set()
    for node in ast.walk(_module_tree()):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            names.add(node.attr)
    return names


def _parameter_fields() -> dict[str, str]:
    """Field name -> annotation source of the @parameterNodeWrapper class."""
    for node in ast.walk(_module_tree()):
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {stmt.target.id: ast.unparse(stmt.annotation) for stmt in node.body
                    if isinstance(stmt, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in ADRegNet.py")


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def _bindings() -> dict[str, str]:
    """Widget name -> SlicerParameterName."""
    out = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                out[name] = prop.find("string").text
    return out


@pytest.fixture(scope="module")
def loaded():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtCore = pytest.importorskip("PySide6.QtCore")
    QtWidgets = pytest.importorskip("PySide6.QtWidgets")
    QtUiTools = pytest.importorskip("PySide6.QtUiTools")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    file = QtCore.QFile(str(UI_FILE))
    assert file.open(QtCore.QIODevice.ReadOnly)
    widget = QtUiTools.QUiLoader().load(file)
    file.close()
    assert widget is not None, "QUiLoader could not load ADRegNet.ui"
    yield widget, QtWidgets
    widget.deleteLater()
    app.processEvents()


def test_every_widget_the_code_uses_exists(loaded):
    widget, QtWidgets = loaded
    used = _ui_names_used_by_widget()
    assert len(used) >= 10
    missing = sorted(n for n in used if widget.findChild(QtWidgets.QWidget, n) is None)
    assert missing == [], f"ADRegNet.py uses widgets missing from ADRegNet.ui: {missing}"


def test_bindings_name_real_parameters_and_every_input_parameter_is_bound():
    fields = _parameter_fields()
    bindings = _bindings()
    unknown = sorted(set(bindings.values()) - set(fields))
    assert unknown == [], f"SlicerParameterName values with no parameter: {unknown}"
    unbound = sorted(set(fields) - set(bindings.values()))
    assert unbound == [], f"parameters with no widget: {unbound}"
    assert len(set(bindings.values())) == len(bindings), "a parameter is bound to two widgets"


def test_widget_classes_fit_the_parameter_types():
    fields = _parameter_fields()
    widgets = _ui_widgets()
    for name, parameter in _bindings().items():
        cls = widgets[name].get("class")
        annotation = fields[parameter]
        if annotation.startswith("vtkMRML"):
            assert cls == "qMRMLNodeComboBox", (name, cls)
            node_types = [s.text for s in widgets[name].find("property[@name='nodeTypes']").iter("string")]
            assert annotation in node_types or parameter == "fixedMask", (name, node_types, annotation)
        elif annotation in ("Preset", "Quality", "Device"):
            assert cls == "QComboBox", (name, cls)  # parameterNodeWrapper fills it from the Enum
        elif annotation == "bool":
            assert cls == "QCheckBox", (name, cls)
        elif "float" in annotation:
            assert cls == "ctkSliderWidget", (name, cls)
            lo, hi = map(float, re.search(r"WithinRange\(([-\d.]+), ([-\d.]+)\)", annotation).groups())
            props = {p.get("name"): float(p.find("double").text) for p in widgets[name].findall("property")
                     if p.find("double") is not None}
            assert (props["minimum"], props["maximum"]) == (lo, hi), name


def test_loaded_widgets_have_the_expected_base_classes(loaded):
    widget, QtWidgets = loaded
    assert isinstance(widget.findChild(QtWidgets.QWidget, "applyButton"), QtWidgets.QPushButton)
    assert isinstance(widget.findChild(QtWidgets.QWidget, "progressBar"), QtWidgets.QProgressBar)
    assert isinstance(widget.findChild(QtWidgets.QWidget, "treTableView"), QtWidgets.QTableView)
    assert widget.findChild(QtWidgets.QWidget, "applyButton").text() == "Apply"
    assert not widget.findChild(QtWidgets.QWidget, "applyButton").isEnabled()  # until volumes are chosen


def test_scene_reaches_every_mrml_widget():
    """Each qMRML widget gets the scene through a mrmlSceneChanged -> setMRMLScene connection."""
    root = ET.parse(UI_FILE).getroot()
    receivers = {c.find("receiver").text for c in root.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {name for name, w in _ui_widgets().items() if w.get("class", "").startswith("qMRML") and name != "ADRegNet"}
    assert mrml and mrml <= receivers, sorted(mrml - receivers)


def test_button_texts_come_from_the_state_enum():
    """Apply becomes Cancel: the ProcessingState enum gives the text for each state."""
    source = MODULE_FILE.read_text()
    block = source[source.index("class ProcessingState"):source.index("@parameterNodeWrapper")]
    assert '"idle": _("Apply")' in block and '"running": _("Cancel")' in block
    assert "self.ui.applyButton.text = state.buttonText()" in source
