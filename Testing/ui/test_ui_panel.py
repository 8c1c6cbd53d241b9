"""The module panel (.ui) loads offscreen and matches what ADRegNet.py declares and uses.

Slicer's ctk/qMRML widgets are unknown to PySide6; QUiLoader builds their base class instead
(declared in the .ui's <customwidgets>), which is enough to check names and properties. The
parameter node and enums (ADRegNetApp/parameters.py) and the selector tables of ADRegNet.py are
read from their syntax trees (the files import qt/slicer parts that exist only inside Slicer); the
enums are then executed for real. test_ui_logic.py imports the module with stand-ins.
"""
from __future__ import annotations

import ast
import enum
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UI_FILE = REPO / "ADRegNet" / "Resources" / "UI" / "ADRegNet.ui"
MODULE_FILE = REPO / "ADRegNet" / "ADRegNet.py"
PARAMETERS_FILE = REPO / "ADRegNet" / "ADRegNetApp" / "parameters.py"
MASK_TYPES = ["vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"]


def _module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text())


def _parameters_tree() -> ast.Module:
    return ast.parse(PARAMETERS_FILE.read_text())


def _ui_names_used_by_widget() -> set[str]:
    """Every ``self.ui.<name>`` in ADRegNet.py, plus the output selectors it filters by name."""
    names = set(_module_constant("OUTPUT_SELECTORS"))
    for node in ast.walk(_module_tree()):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            names.add(node.attr)
    return names


def _module_constant(name: str):
    for node in _module_tree().body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found in ADRegNet.py")


def _parameter_fields() -> dict[str, str]:
    """Field name -> annotation source of the @parameterNodeWrapper class (aliases such as Mask resolved)."""
    aliases = {t.id: ast.unparse(n.value) for n in _parameters_tree().body if isinstance(n, ast.Assign)
               for t in n.targets if isinstance(t, ast.Name) and ast.unparse(n.value).startswith("Union[")}
    for node in ast.walk(_parameters_tree()):
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {stmt.target.id: aliases.get(ast.unparse(stmt.annotation), ast.unparse(stmt.annotation))
                    for stmt in node.body if isinstance(stmt, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in ADRegNetApp/parameters.py")


def _enums() -> dict[str, type]:
    """The Enum classes of the parameters, executed with a stand-in for Slicer's translation function."""
    namespace = {"enum": enum, "_": lambda text: text}
    for node in _parameters_tree().body:
        if isinstance(node, ast.ClassDef) and any(ast.unparse(b) == "enum.Enum" for b in node.bases):
            exec(compile(ast.Module([node], []), str(PARAMETERS_FILE), "exec"), namespace)
    return {k: v for k, v in namespace.items() if isinstance(v, type) and issubclass(v, enum.Enum)}


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def _property(widget: ET.Element, name: str):
    prop = widget.find(f"property[@name='{name}']")
    if prop is None:
        return None
    child = prop[0]
    if child.tag == "stringlist":
        return [s.text for s in child.iter("string")]
    return {"bool": lambda t: t == "true", "double": float, "number": int}.get(child.tag, str)(child.text or "")


def _bindings() -> dict[str, str]:
    """Widget name -> SlicerParameterName."""
    return {name: _property(w, "SlicerParameterName") for name, w in _ui_widgets().items()
            if _property(w, "SlicerParameterName")}


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
    assert len(used) >= 20
    missing = sorted(n for n in used if widget.findChild(QtWidgets.QWidget, n) is None)
    assert missing == [], f"ADRegNet.py uses widgets missing from ADRegNet.ui: {missing}"


def test_bindings_name_real_parameters_and_every_setting_is_bound():
    fields = _parameter_fields()
    bindings = _bindings()
    assert sorted(set(bindings.values()) - set(fields)) == [], "SlicerParameterName values with no parameter"
    unbound = sorted(set(fields) - set(bindings.values()))
    assert all(name.startswith("result") for name in unbound), f"parameters with no widget: {unbound}"
    assert len(set(bindings.values())) == len(bindings), "a parameter is bound to two widgets"


def test_widget_classes_fit_the_parameter_types():
    fields = _parameter_fields()
    widgets = _ui_widgets()
    for name, parameter in _bindings().items():
        cls, annotation = widgets[name].get("class"), fields[parameter]
        if annotation.startswith(("vtkMRML", "Union[")):
            assert cls == "qMRMLNodeComboBox", (name, cls)
            expected = MASK_TYPES if annotation.startswith("Union[") else [annotation]
            assert _property(widgets[name], "nodeTypes") == expected, name
        elif annotation in _enums():
            assert cls == "QComboBox", (name, cls)  # parameterNodeWrapper fills it from the Enum
        elif annotation == "bool":
            assert cls == "QCheckBox", (name, cls)
        elif "float" in annotation:
            assert cls == "ctkSliderWidget", (name, cls)
            lo, hi = map(float, re.search(r"WithinRange\(([-\d.]+), ([-\d.]+)\)", annotation).groups())
            assert (_property(widgets[name], "minimum"), _property(widgets[name], "maximum")) == (lo, hi), name
        else:
            raise AssertionError(f"no check for {parameter}: {annotation}")


def test_output_selectors_create_new_by_default_and_list_only_module_outputs():
    """Defect 3: outputs default to new nodes; the selectors list only earlier AD-RegNet outputs of their
    kind (role attribute) and ADRegNet.py hides the current inputs from them."""
    widgets = _ui_widgets()
    selectors = _module_constant("OUTPUT_SELECTORS")
    bound = {name for name, parameter in _bindings().items() if parameter.startswith("output")}
    assert set(selectors) == bound
    for name, (node_type, role) in selectors.items():
        w = widgets[name]
        assert _property(w, "nodeTypes") == [node_type], name
        assert (_property(w, "noneEnabled"), _property(w, "addEnabled"), _property(w, "removeEnabled")) == \
            (True, False, False), name
        assert _property(w, "noneDisplay") == "Create new", name
    roles = {role for _, role in selectors.values()}
    assert roles == {"transform", "inverse-transform", "warped", "jacobian", "tre"}
    assert set(_module_constant("INPUTS")) == {p for p in _parameter_fields() if p.endswith(("Volume", "Landmarks", "Mask"))}


def test_enum_values_are_the_engine_names():
    """Preset and quality names come from the engine (one place); the panel offers exactly those."""
    from ADRegNetLib.engine import PRESETS, QUALITIES

    enums = _enums()
    assert tuple(e.value for e in enums["Preset"]) == tuple(PRESETS)
    assert tuple(e.value for e in enums["Quality"]) == tuple(QUALITIES)
    for cls in enums.values():
        if hasattr(cls, "label"):
            assert all(member.label() for member in cls), cls


def test_apply_button_text_follows_the_state():
    state = _enums()["ProcessingState"]
    assert [s.buttonText() for s in state] == ["Apply", "Cancel", "Cancelling..."]


def test_loaded_widgets_have_the_expected_base_classes(loaded):
    widget, QtWidgets = loaded
    assert isinstance(widget.findChild(QtWidgets.QWidget, "applyButton"), QtWidgets.QPushButton)
    assert isinstance(widget.findChild(QtWidgets.QWidget, "progressBar"), QtWidgets.QProgressBar)
    assert isinstance(widget.findChild(QtWidgets.QWidget, "treTableView"), QtWidgets.QTableView)
    assert isinstance(widget.findChild(QtWidgets.QWidget, "pairTableWidget"), QtWidgets.QTableWidget)
    assert widget.findChild(QtWidgets.QWidget, "logTextEdit").isReadOnly()
    assert widget.findChild(QtWidgets.QWidget, "flickerButton").isCheckable()
    assert widget.findChild(QtWidgets.QWidget, "applyButton").text() == "Apply"
    assert not widget.findChild(QtWidgets.QWidget, "applyButton").isEnabled()  # until volumes are chosen


def test_scene_reaches_every_mrml_widget():
    """Each qMRML widget gets the scene through a mrmlSceneChanged -> setMRMLScene connection."""
    root = ET.parse(UI_FILE).getroot()
    receivers = {c.find("receiver").text for c in root.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {name for name, w in _ui_widgets().items() if w.get("class", "").startswith("qMRML") and name != "ADRegNet"}
    assert mrml and mrml <= receivers, sorted(mrml - receivers)


def test_the_fixed_selector_lists_exactly_what_the_preselection_allows():
    """ADRegNetLogic.defaultFixedVolume preselects only a node this selector lists: exactly vtkMRMLScalarVolumeNode
    (qMRMLSortFilterProxyModel compares the class name when showChildNodeTypes is false) not hidden from editors
    (dropped while showHidden is false, its default); ADRegNet.py changes neither."""
    w = _ui_widgets()["fixedVolumeSelector"]
    assert _property(w, "nodeTypes") == ["vtkMRMLScalarVolumeNode"]
    assert _property(w, "showChildNodeTypes") is False
    assert not _property(w, "showHidden") and _property(w, "showHiddenForTypes") is None
    assert "fixedVolumeSelector.show" not in MODULE_FILE.read_text()
