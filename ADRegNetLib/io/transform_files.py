r"""Reading and writing ITK transform files through one lock per process.

ITK writes ``.h5`` transform files with the HDF5 library, which is not safe for concurrent use by
several threads of one process (a Dask worker runs pairs in threads: concurrent writes crashed or
corrupted files). Every transform file the project reads or writes goes through these two
functions, so the lock covers all of them; other processes are unaffected.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Union

import SimpleITK as sitk

__all__ = ["TRANSFORM_FILE_LOCK", "read_sitk_transform", "write_sitk_transform"]

#: held while ITK reads or writes a transform file (HDF5 is not thread-safe)
TRANSFORM_FILE_LOCK = threading.Lock()


def write_sitk_transform(transform: sitk.Transform, path: Union[str, Path]) -> None:
    """``sitk.WriteTransform`` under :data:`TRANSFORM_FILE_LOCK`."""
    with TRANSFORM_FILE_LOCK:
        sitk.WriteTransform(transform, str(path))


def read_sitk_transform(path: Union[str, Path]) -> sitk.Transform:
    """``sitk.ReadTransform`` under :data:`TRANSFORM_FILE_LOCK` (raises RuntimeError as SimpleITK does)."""
    with TRANSFORM_FILE_LOCK:
        return sitk.ReadTransform(str(path))
