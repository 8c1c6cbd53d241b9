"""The extension's CMake files: the module lists exactly the scripts and resources that exist, and the
metadata passes the Slicer ExtensionsIndex checks that can run offline.

The checks follow Slicer/ExtensionsIndex scripts/check_description_files.py (project name = extension
name, not starting with "Slicer"; repository name starting with "Slicer"; a known category; icon and
screenshot URLs that are http(s) image links; a license file in the repository root) and its pull
request checklist (1-2 sentence description, contributors as "Name (Affiliation)"). The URLs point
at raw.githubusercontent.com: offline we check that each names a file of this repository.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "ADRegNet"
#: ACCEPTED_EXTENSION_CATEGORIES of Slicer/ExtensionsIndex scripts/check_description_files.py (2026-08)
ACCEPTED_CATEGORIES = {
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda", "Converters",
    "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation", "Filtering",
    "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT", "Informatics",
    "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning", "Otolaryngology",
    "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy", "Registration", "Remote",
    "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis", "Shape Regression", "Shape Visualization",
    "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging", "Supervisely", "Surface Models", "SurfaceLearner",
    "Tomographic Reconstruction", "Tracking", "Tractography", "Training", "Ultrasound", "Utilities",
    "Vascular Modeling Toolkit", "Virtual Reality",
}


def _set_block(text: str, variable: str) -> list[str]:
    """Entries of ``set(<variable> ...)`` with ${MODULE_NAME} expanded."""
    match = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    name = re.search(r"set\(\s*MODULE_NAME\s+(\w+)\s*\)", text).group(1)
    entries = [e.split("#")[0].strip() for e in match.group(1).split("\n")]
    return sorted(e.replace("${MODULE_NAME}", name) for e in entries if e)


def _metadata() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    return dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\s*\)', text))


def test_module_cmake_lists_every_script_nothing_missing_nothing_stale():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = _set_block(text, "MODULE_PYTHON_SCRIPTS")
    on_disk = sorted(str(p.relative_to(MODULE)) for p in
                     [MODULE / "ADRegNet.py", *(MODULE / "ADRegNetMRML").glob("*.py"), *(MODULE / "ADRegNetApp").glob("*.py")])
    assert listed == on_disk, f"missing: {sorted(set(on_disk) - set(listed))}, stale: {sorted(set(listed) - set(on_disk))}"
    assert not [p for p in MODULE.glob("*.py") if p.name != "ADRegNet.py"], \
        "Slicer loads every .py file of a module folder as a module: put helpers in a package"


def test_module_cmake_lists_existing_resources():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = _set_block(text, "MODULE_PYTHON_RESOURCES")
    assert "Resources/UI/ADRegNet.ui" in listed and "Resources/Icons/ADRegNet.png" in listed
    assert [r for r in listed if not (MODULE / r).exists()] == []
    on_disk = sorted(str(p.relative_to(MODULE)) for p in (MODULE / "Resources").rglob("*") if p.is_file())
    assert sorted(set(on_disk) - set(listed)) == [], "resource files not installed by CMake"


def test_module_cmake_builds_the_module_installs_the_engine_and_registers_the_self_test():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}", text)
    assert re.search(r"install\(DIRECTORY \$\{CMAKE_SOURCE_DIR\}/ADRegNetLib\s", text)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_extension_cmake_structure():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    order = [text.index(s) for s in ("project(ADRegNet)", "set(EXTENSION_LICENSE_FILE", "find_package(Slicer REQUIRED)",
                                     "include(${Slicer_USE_FILE})", "add_subdirectory(ADRegNet)",
                                     "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})")]
    assert order == sorted(order)  # the license/readme must be set before UseSlicer defaults them to Slicer's
    assert all((REPO / d / "CMakeLists.txt").exists() for d in re.findall(r"add_subdirectory\((\w+)\)", text))
    license_file = re.search(r"set\(EXTENSION_LICENSE_FILE \$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+)\)", text).group(1)
    readme_file = re.search(r"set\(EXTENSION_README_FILE \$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+)\)", text).group(1)
    assert (REPO / license_file).is_file() and (REPO / readme_file).is_file()


def test_extensions_index_offline_checks():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    name = re.search(r"project\s*\(\s*([^\s)]+)", text).group(1)
    meta = _metadata()
    assert name == "ADRegNet" and not name.lower().startswith("slicer")
    assert meta["EXTENSION_CATEGORY"] in ACCEPTED_CATEGORIES
    repo_name = meta["EXTENSION_HOMEPAGE"].rstrip("/").split("/")[-1]
    assert repo_name.startswith("Slicer"), repo_name
    owner_repo = "/".join(meta["EXTENSION_HOMEPAGE"].rstrip("/").split("/")[-2:])
    urls = [meta["EXTENSION_ICONURL"], *meta["EXTENSION_SCREENSHOTURLS"].split()]
    assert len(urls) >= 2
    for url in urls:
        match = re.fullmatch(rf"https://raw\.githubusercontent\.com/{owner_repo}/main/(.+\.(png|jpg|jpeg|gif))", url)
        assert match, f"{url}: expected a raw.githubusercontent.com image link of {owner_repo}"
        assert (REPO / match.group(1)).is_file(), f"{url} names {match.group(1)}, which is not in the repository"
    assert meta["EXTENSION_DEPENDS"] == "PyTorch"  # the ExtensionsIndex entry PyTorch.json (SlicerPyTorch)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", meta["EXTENSION_DESCRIPTION"].strip()) if s]
    assert 1 <= len(sentences) <= 2, sentences
    contributor = r"[^,()]+ \([^()]+\)"
    assert re.fullmatch(rf"{contributor}(, {contributor})*", meta["EXTENSION_CONTRIBUTORS"]), \
        "contributors must read 'Name (Affiliation), Name (Affiliation)'"


def test_license_is_the_apache_2_text():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.strip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 150
    assert "Apache" in (REPO / "README.md").read_text(encoding="utf-8")  # the homepage names the license


def test_repository_stays_under_the_index_size_limit():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    size = sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())
    assert size < 100 * 1024 * 1024, f"{size / 2 ** 20:.1f} MB tracked; ExtensionsIndex allows 100 MB"
