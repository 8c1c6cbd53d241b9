"""The extension's CMake files list exactly the module scripts and resources that exist."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "ADRegNet"


def _set_block(text: str, variable: str) -> list[str]:
    """Entries of ``set(<variable> ...)`` with ${MODULE_NAME} expanded."""
    match = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    name = re.search(r"set\(\s*MODULE_NAME\s+(\w+)\s*\)", text).group(1)
    entries = [e.split("#")[0].strip() for e in match.group(1).split("\n")]
    return sorted(e.replace("${MODULE_NAME}", name) for e in entries if e)


def test_module_cmake_lists_every_script_nothing_missing_nothing_stale():
    text = (MODULE / "CMakeLists.txt").read_text()
    listed = _set_block(text, "MODULE_PYTHON_SCRIPTS")
    on_disk = sorted(str(p.relative_to(MODULE)) for p in [MODULE / "ADRegNet.py", *(MODULE / "ADRegNetMRML").glob("*.py")])
    assert listed == on_disk, f"missing: {sorted(set(on_disk) - set(listed))}, stale: {sorted(set(listed) - set(on_disk))}"


def test_module_cmake_lists_existing_resources():
    text = (MODULE / "CMakeLists.txt").read_text()
    listed = _set_block(text, "MODULE_PYTHON_RESOURCES")
    assert "Resources/UI/ADRegNet.ui" in listed and "Resources/Icons/ADRegNet.png" in listed
    stale = [r for r in listed if not (MODULE / r).exists()]
    assert stale == []
    on_disk = sorted(str(p.relative_to(MODULE)) for p in (MODULE / "Resources").rglob("*") if p.is_file())
    assert sorted(set(on_disk) - set(listed)) == [], "resource files not installed by CMake"


def test_module_cmake_builds_the_module_installs_the_engine_and_registers_the_self_test():
    text = (MODULE / "CMakeLists.txt").read_text()
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}", text)
    assert re.search(r"install\(DIRECTORY \$\{CMAKE_SOURCE_DIR\}/ADRegNetLib\s", text)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_extension_cmake_metadata():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(ADRegNet\)", text, re.M)
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"?PyTorch"?\)', text)
    assert re.search(r'set\(EXTENSION_CATEGORY\s+"Registration"\)', text)
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL"):
        assert re.search(r"set\(" + key + r"\s+\"[^\"]+\"\)", text), key
    order = [text.index(s) for s in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                                     "add_subdirectory(ADRegNet)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                                     "include(${Slicer_EXTENSION_CPACK})")]
    assert order == sorted(order)
    subdirs = re.findall(r"add_subdirectory\((\w+)\)", text)
    assert all((REPO / d / "CMakeLists.txt").exists() for d in subdirs)


def test_module_metadata_in_the_script():
    source = (MODULE / "ADRegNet.py").read_text()
    assert 'self.parent.title = _("AD-RegNet")' in source
    assert 'self.parent.categories = [_("Registration")]' in source
    assert "self.parent.acknowledgementText" in source and "cite" in source
