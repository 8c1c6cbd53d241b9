r"""Make ``import ADRegNetLib`` work however the module was loaded (no ADRegNetLib import here).

Slicer puts only the module's own folder on ``sys.path``. Installed as an extension, the engine
package sits in that same folder (the module's CMakeLists installs it there). Loaded from a source
checkout through *Additional module paths* (the ``ADRegNet/`` folder of the repository), the engine
is one level up, in the repository root, which Slicer does not add: without this, Apply failed with
``ModuleNotFoundError: ADRegNetLib``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["ENGINE_PACKAGE", "engine_search_folders", "find_engine_folder", "ensure_engine_importable"]

ENGINE_PACKAGE = "ADRegNetLib"


def engine_search_folders(module_dir: str | Path) -> list[Path]:
    """Folders that may hold ``ADRegNetLib``: the module folder (installed), then its parent (source tree)."""
    here = Path(module_dir).resolve()
    return [here, here.parent]


def find_engine_folder(module_dir: str | Path) -> Optional[Path]:
    """The first folder of :func:`engine_search_folders` holding ``ADRegNetLib/__init__.py``, or None."""
    for folder in engine_search_folders(module_dir):
        if (folder / ENGINE_PACKAGE / "__init__.py").is_file():
            return folder
    return None


def ensure_engine_importable(module_dir: str | Path, path: Optional[Sequence[str]] = None) -> Path:
    """Put the folder holding ``ADRegNetLib`` on ``sys.path`` when Python cannot find it yet.

    Args:
        module_dir: the folder of ``ADRegNet.py``.
        path: the path list to extend (default: ``sys.path``; tests pass their own list).

    Returns:
        The folder ADRegNetLib is (or will be) imported from.

    Raises:
        ImportError: ADRegNetLib is neither importable nor next to the module; the message lists
            where it was looked for and how to fix the installation.
    """
    target = sys.path if path is None else path
    folder = find_engine_folder(module_dir)
    if folder is None:
        spec = importlib.util.find_spec(ENGINE_PACKAGE) if path is None else None
        if spec is not None and spec.origin:
            return Path(spec.origin).resolve().parents[1]  # pip-installed elsewhere: use that one
        looked = ", ".join(str(f) for f in engine_search_folders(module_dir))
        raise ImportError(
            f"the AD-RegNet engine ({ENGINE_PACKAGE}) was not found in {looked}; install the extension from the "
            "Extensions Manager, or add the ADRegNet/ folder of a complete source checkout (with ADRegNetLib/ "
            "beside it) to Additional module paths")
    if str(folder) not in {str(Path(p).resolve()) for p in target if p}:
        target.insert(0, str(folder))
    return folder
