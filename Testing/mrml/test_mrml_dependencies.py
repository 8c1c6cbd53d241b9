"""Defects 7, 8 and 10 of issue 14: torch version and broken installs, finding ADRegNetLib from a source
checkout, and never installing in Slicer's testing mode."""
from __future__ import annotations

import subprocess
import sys
import types

import pytest

from ADRegNetMRML.dependencies import (
    TORCH_PIP_REQUIREMENT, TORCH_VERSION_REQUIREMENT, DependencyAction, dependency_action, parse_version, torch_status,
)
from ADRegNetMRML.paths import ensure_engine_importable, find_engine_folder
from mrml_helpers import REPO


def _fake_torch(version: str, attention: bool = True):
    functional = types.SimpleNamespace(**({"scaled_dot_product_attention": object()} if attention else {}))
    return types.SimpleNamespace(__version__=version, nn=types.SimpleNamespace(functional=functional))


def _raises(exc):
    def importer():
        raise exc
    return importer


@pytest.mark.parametrize("version, expected", [
    ("2.1.0+cu121", (2, 1, 0)), ("2.13.0a0", (2, 13, 0)), ("1.13.1", (1, 13, 1)), ("garbage", ()),
])
def test_parse_version(version, expected):
    assert parse_version(version) == expected


@pytest.mark.parametrize("importer, state", [
    (lambda: _fake_torch("2.1.0"), "ok"),
    (lambda: _fake_torch("2.13.0+cpu"), "ok"),
    (lambda: _fake_torch("2.0.1"), "too-old"),
    (lambda: _fake_torch("2.4.0", attention=False), "too-old"),
    (_raises(ModuleNotFoundError("No module named 'torch'")), "missing"),
    (_raises(OSError("[WinError 126] fbgemm.dll not found")), "broken"),
    (_raises(RuntimeError("CUDA driver too old")), "broken"),
])
def test_torch_status_never_raises(importer, state):
    status = torch_status(importer)
    assert status.state == state
    if state == "too-old":
        assert TORCH_VERSION_REQUIREMENT in status.message
    if state == "broken":
        assert "Reinstall" in status.message and "Error" in status.message


def test_the_installed_torch_is_accepted():
    assert torch_status().ok


def test_the_requirement_given_to_the_installers():
    assert TORCH_VERSION_REQUIREMENT == ">=2.1" and TORCH_PIP_REQUIREMENT == "torch>=2.1"


@pytest.mark.parametrize("state, testing, interactive, action", [
    ("ok", True, True, DependencyAction.READY),
    ("missing", True, False, DependencyAction.SKIP),  # testing mode: offline, never install
    ("too-old", True, True, DependencyAction.SKIP),
    ("missing", False, True, DependencyAction.ASK),
    ("broken", False, True, DependencyAction.ASK),
    ("too-old", False, False, DependencyAction.INSTALL),
])
def test_dependency_action(state, testing, interactive, action):
    status = torch_status(lambda: _fake_torch("2.4.0")) if state == "ok" else \
        torch_status(_raises(ImportError("x"))) if state == "missing" else \
        torch_status(lambda: _fake_torch("1.0")) if state == "too-old" else torch_status(_raises(OSError("dll")))
    assert status.state == state
    assert dependency_action(status, testing=testing, interactive=interactive) is action


def test_engine_found_from_the_module_folder_of_a_source_checkout(tmp_path):
    """Defect 8: Slicer adds only ADRegNet/ to sys.path; ADRegNetLib sits one level up in a checkout."""
    assert find_engine_folder(REPO / "ADRegNet") == REPO
    path = [str(REPO / "ADRegNet")]
    assert ensure_engine_importable(REPO / "ADRegNet", path) == REPO and path[0] == str(REPO)
    ensure_engine_importable(REPO / "ADRegNet", path)
    assert path.count(str(REPO)) == 1
    installed = tmp_path / "qt-scripted-modules"
    (installed / "ADRegNetLib").mkdir(parents=True)
    (installed / "ADRegNetLib" / "__init__.py").write_text("")
    assert find_engine_folder(installed) == installed  # installed layout: next to the module
    with pytest.raises(ImportError, match="ADRegNetLib.*was not found in"):
        ensure_engine_importable(tmp_path / "elsewhere", [])
    # the whole route as Slicer runs it: no editable install (-S skips .pth files), only the module folder
    site_packages = [p for p in sys.path if p.endswith("site-packages")]
    code = (f"import sys; sys.path += {site_packages!r}; sys.path.insert(0, {str(REPO / 'ADRegNet')!r})\n"
            "import importlib.util; assert importlib.util.find_spec('ADRegNetLib') is None, 'found without the fix'\n"
            "from ADRegNetMRML.paths import ensure_engine_importable\n"
            f"ensure_engine_importable({str(REPO / 'ADRegNet')!r}); import ADRegNetLib.engine; print('ok')")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                          timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_placing_landmarks_and_display_work_before_torch_is_installed():
    """The module must let a clinician place pairs before the first Apply installs PyTorch."""
    code = ("import sys; sys.modules['torch'] = None\n"
            f"sys.path.insert(0, {str(REPO / 'ADRegNet')!r})\n"
            "import ADRegNetMRML.pairs, ADRegNetMRML.display, ADRegNetMRML.frames, ADRegNetMRML.dependencies\n"
            "import slicer\n"
            "scene = slicer.vtkMRMLScene()\n"
            "f, m = (scene.AddNewNodeByClass('vtkMRMLMarkupsFiducialNode') for _ in range(2))\n"
            "f.AddControlPoint(1.0, 2.0, 3.0); m.AddControlPoint(1.0, 2.0, 5.0)\n"
            "row = ADRegNetMRML.pairs.pair_rows(f, m, None, None)[0]\n"
            "print(ADRegNetMRML.dependencies.torch_status().state, row.tre_before_mm)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["missing", "2.0"], done.stderr[-2000:]
