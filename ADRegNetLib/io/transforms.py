r"""Displacement fields <-> ITK images and transform files, and mapping points through a field.

Convention (DESIGN.md contract): the field ``u`` lives on the **fixed** grid and maps a fixed
point x (LPS mm) to the matching moving point ``x + u(x)``: the convention of ITK's
``DisplacementFieldTransform`` and of resampling. Arrays are ``disp_mm``: (3, Z, Y, X), LPS mm,
(x, y, z) components (a leading batch axis of 1 is accepted).

Outside the field's grid ITK returns zero displacement; within half a voxel of the outermost
voxel centres it repeats the edge value. :func:`transform_points` does the same, so it agrees
with SimpleITK's ``TransformPoint`` everywhere, not only inside.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk
import torch

from ..spatial.flow import check_disp_shape
from ..spatial.geometry import Geometry
from ..spatial.transform import map_points as transform_points  # noqa: F401 - the io name of map_points
from .file_checks import nearest_rotation, nifti_sform
from .image import ImageError, itk_error_reason, read_sitk_image
from .images import write_sitk_image
from .transform_files import read_sitk_transform, write_sitk_transform

__all__ = [
    "TransformFileError",
    "field_to_sitk",
    "sitk_to_field",
    "write_displacement_field",
    "read_displacement_field",
    "write_transform",
    "read_transform",
    "transform_points",
]

PathLike = Union[str, Path]
ArrayLike = Union[np.ndarray, torch.Tensor]
_IMAGE_EXTS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_TRANSFORM_EXTS = (".h5", ".hdf5", ".tfm", ".txt", ".mat")


class TransformFileError(ValueError):
    """A transform or displacement file cannot be written or read; the message says why."""


def _to_numpy_field(disp_mm: ArrayLike, geometry: Geometry) -> np.ndarray:
    if isinstance(disp_mm, torch.Tensor):
        disp_mm = disp_mm.detach().cpu().numpy()
    arr = np.asarray(disp_mm)
    if arr.ndim == 5 and arr.shape[0] == 1:
        arr = arr[0]
    check_disp_shape(arr.shape, geometry, "disp_mm")
    return arr


def field_to_sitk(disp_mm: ArrayLike, geometry: Geometry, dtype=np.float64) -> sitk.Image:
    """A displacement field as a SimpleITK vector image (what ``DisplacementFieldTransform`` takes).

    Args:
        disp_mm: (3, Z, Y, X) or (1, 3, Z, Y, X), LPS mm, (x, y, z) components, on ``geometry``.
        geometry: the fixed grid.
        dtype: float64 (needed by ``sitk.DisplacementFieldTransform``) or float32 (smaller files).

    Returns:
        A 3-D image with 3 components per voxel, geometry copied.
    """
    arr = _to_numpy_field(disp_mm, geometry)
    vec = np.ascontiguousarray(np.moveaxis(arr, 0, -1).astype(dtype))  # (Z, Y, X, 3)
    image = sitk.GetImageFromArray(vec, isVector=True)
    geometry.apply_to_sitk(image)
    return image


def sitk_to_field(image: sitk.Image, dtype=np.float64) -> tuple[np.ndarray, Geometry]:
    """Inverse of :func:`field_to_sitk`: (disp_mm (3, Z, Y, X) LPS mm, geometry).

    Raises:
        TransformFileError: not a 3-D image with 3 components per voxel.
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 3:
        raise TransformFileError(
            f"a displacement field must be a 3-D image with 3 components per voxel, got a "
            f"{image.GetDimension()}-D image with {image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    arr = sitk.GetArrayFromImage(image)  # (Z, Y, X, 3)
    bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise TransformFileError(f"holds {bad} NaN or infinite displacement values (of {arr.size}); a displacement "
                                 "field must be finite everywhere: re-create it, or replace them (e.g. by 0)")
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0).astype(dtype)), Geometry.from_sitk(image)


def _suffix_ok(path: Path, exts: tuple[str, ...]) -> bool:
    return str(path).lower().endswith(exts)


def write_displacement_field(disp_mm: ArrayLike, geometry: Geometry, path: PathLike, dtype=np.float32) -> None:
    """Write the field as an ITK displacement image (.nii.gz, .nii, .nrrd, .mha).

    SimpleITK/ITK/Slicer read it back as a displacement field in LPS (the vector components
    are written as they are, in ITK's LPS frame).
    """
    path = Path(path)
    if not _suffix_ok(path, _IMAGE_EXTS):
        raise TransformFileError(f"{path}: a displacement image needs one of {', '.join(_IMAGE_EXTS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sitk_image(field_to_sitk(disp_mm, geometry, dtype=dtype), path)


def read_displacement_field(path: PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a displacement image file: (disp_mm (3, Z, Y, X) float64, geometry).

    Raises:
        TransformFileError: missing, truncated/corrupt or unreadable file, a sheared direction,
            or not a 3-component vector image; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise TransformFileError(f"{path}: no such displacement field file")
    try:
        image = read_sitk_image(path, what="displacement field")  # integrity, direction; a folder or a pipe named
    except ImageError as exc:
        raise TransformFileError(str(exc)) from None
    if image.GetDimension() == 2 and image.GetNumberOfComponentsPerPixel() == 3:
        image = _one_slice(image, path)
    try:
        return sitk_to_field(image)
    except TransformFileError as exc:
        raise TransformFileError(f"{path}: {exc}") from None


def _one_slice(image: sitk.Image, path: Path) -> sitk.Image:
    """A field one voxel thick (two single slices registered in their plane, ``engine.planar``) that ITK's NIfTI
    reader returned as 2-D (it drops a vector image's single slice): the slice put back where the file's sform
    places it, or in the z = 0 plane (a 2-D image's) without one."""
    volume = sitk.JoinSeries(image)
    placement = nifti_sform(path)
    if placement is not None:
        matrix, origin = placement
        spacing = np.linalg.norm(matrix, axis=0)
        if np.all(spacing > 0):  # pixdim's in-plane spacing as ITK read it (the float32 sform rounds it)
            direction = matrix / spacing
            spacing[:2] = image.GetSpacing()
            volume.SetSpacing([float(v) for v in spacing])
            volume.SetOrigin([float(v) for v in origin])
            volume.SetDirection([float(v) for v in nearest_rotation(direction).reshape(-1)])
    return volume


def write_transform(disp_mm: ArrayLike, geometry: Geometry, path: PathLike) -> None:
    """Write the field as an ITK transform file (.h5 preferred; .tfm also works but is text).

    The file holds a ``DisplacementFieldTransform`` with a float64 field, readable by
    SimpleITK, ITK, ANTs and Slicer.
    """
    path = Path(path)
    if not _suffix_ok(path, _TRANSFORM_EXTS[:3]):
        raise TransformFileError(f"{path}: a transform file needs the extension .h5 (or .hdf5, .tfm)")
    path.parent.mkdir(parents=True, exist_ok=True)
    transform = sitk.DisplacementFieldTransform(field_to_sitk(disp_mm, geometry, dtype=np.float64))
    write_sitk_transform(transform, path)


def _fields_in(transform: sitk.Transform) -> list[sitk.Image]:
    t = transform.Downcast() if hasattr(transform, "Downcast") else transform
    if isinstance(t, sitk.DisplacementFieldTransform):
        return [t.GetDisplacementField()]
    if isinstance(t, sitk.CompositeTransform):
        out = []
        for k in range(t.GetNumberOfTransforms()):
            out.extend(_fields_in(t.GetNthTransform(k)))
        return out
    return []


def read_transform(path: PathLike, geometry: Optional[Geometry] = None) -> tuple[np.ndarray, Geometry]:
    """Read a transform or displacement file as a displacement field on a grid.

    * A displacement image (.nii.gz, .nrrd, .mha): returned as stored.
    * A transform file holding one ``DisplacementFieldTransform`` (possibly wrapped in a
      composite transform): its field.
    * Any other transform (a composite of affine and field transforms, a pure affine): sampled
      into a displacement field on ``geometry`` (or, when not given, on the grid of the first
      displacement field inside the file) with ``sitk.TransformToDisplacementField``.

    Returns:
        (disp_mm (3, Z, Y, X) float64 LPS mm, geometry).

    Raises:
        TransformFileError: missing/unreadable file, or a transform without any grid and no
            ``geometry`` given.
    """
    path = Path(path)
    if _suffix_ok(path, _IMAGE_EXTS):
        return read_displacement_field(path)
    if not path.is_file():
        raise TransformFileError(f"{path}: no such transform file")
    try:
        transform = read_sitk_transform(path)
    except RuntimeError as exc:
        # ITK's message ends in a wrapped fragment ("set the suffix to an unsupported type."): the line that
        # says what went wrong, without its source location
        reason = itk_error_reason(exc).split("):", 1)[-1].strip()
        raise TransformFileError(
            f"{path}: cannot be read as an ITK transform" + (f" ({reason[:200]})" if reason else "")
            + "; it is damaged or not a transform file: give the transform.h5 or displacement.nii.gz that adregnet "
              "register wrote (or re-copy it)"
        ) from None
    t = transform.Downcast()
    if isinstance(t, sitk.CompositeTransform) and t.GetNumberOfTransforms() == 1:
        t = t.GetNthTransform(0).Downcast()
    try:
        if isinstance(t, sitk.DisplacementFieldTransform) and geometry is None:
            return sitk_to_field(t.GetDisplacementField())
        if geometry is None:
            fields = _fields_in(t)
            if not fields:
                raise TransformFileError(
                    f"holds a {t.GetName()} with no displacement field grid to sample it on: give a displacement "
                    "field (the displacement.nii.gz or transform.h5 of adregnet register; in Python, "
                    "read_transform(path, geometry=<the fixed image's grid>) samples this one)"
                )
            geometry = Geometry.from_sitk(fields[0])
        field = sitk.TransformToDisplacementField(
            t, sitk.sitkVectorFloat64, [int(s) for s in geometry.size], [float(v) for v in geometry.origin],
            [float(v) for v in geometry.spacing], [float(v) for v in geometry.direction.reshape(-1)],
        )
        return sitk_to_field(field)
    except TransformFileError as exc:
        raise TransformFileError(f"{path}: {exc}") from None


