r"""ITK linear transform files <-> :class:`~ADRegNetLib.spatial.affine.AffineMap`.

ITK (and so SimpleITK, ANTs, elastix and Slicer's ``.h5``/``.tfm`` files) store the map from the
fixed to the moving space (the resampling convention), in LPS mm: exactly what an AffineMap holds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import SimpleITK as sitk

from ..spatial.affine import AffineMap
from .image import image_format_named, itk_error_reason
from .transform_files import read_sitk_transform, write_sitk_transform

__all__ = ["LinearTransformError", "affine_from_sitk", "affine_to_sitk", "read_linear_transform", "write_linear_transform"]

PathLike = Union[str, Path]


class LinearTransformError(ValueError):
    """A transform file is not a usable linear (rigid/affine) transform; the message says why."""


def affine_to_sitk(affine: AffineMap) -> sitk.AffineTransform:
    """The map as a SimpleITK affine transform (same fixed -> moving direction)."""
    t = sitk.AffineTransform(3)
    t.SetMatrix(affine.matrix.reshape(-1).tolist())
    t.SetTranslation(affine.offset.tolist())
    return t


def affine_from_sitk(transform: sitk.Transform) -> AffineMap:
    """Any SimpleITK linear transform (Euler, similarity, affine, composite of those) as an AffineMap."""
    offset = np.asarray(transform.TransformPoint([0.0, 0.0, 0.0]))
    cols = [np.asarray(transform.TransformPoint(e.tolist())) - offset for e in np.eye(3)]
    return AffineMap(np.stack(cols, axis=1), offset)


def _is_linear(transform: sitk.Transform) -> bool:
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        return all(_is_linear(composite.GetNthTransform(i)) for i in range(composite.GetNumberOfTransforms()))
    return transform.IsLinear()


def read_linear_transform(path: PathLike) -> AffineMap:
    """Read a rigid/affine ITK transform file (.h5, .tfm, .txt, .mat) as a fixed -> moving AffineMap.

    Raises:
        LinearTransformError: missing or unreadable file, not 3-D, or not linear (a deformable
            transform: use it as a result folder with ``adregnet warp`` instead).
    """
    p = Path(path)
    if p.is_dir():
        raise LinearTransformError(f"initial transform {p} is a folder; give an ITK .h5/.tfm/.txt/.mat rigid or affine "
                                   "transform file")
    if not p.is_file():
        raise LinearTransformError(f"initial transform file {p} does not exist")
    try:
        transform = read_sitk_transform(p)
    except RuntimeError as exc:
        # ITK's message ends in a wrapped fragment ("set the suffix to an unsupported type."): name the line
        # that says what went wrong instead, without its source location
        reason = itk_error_reason(exc).split("):", 1)[-1].strip()
        image_suffix = image_format_named(p) is not None
        raise LinearTransformError(
            f"{p} is not a readable ITK transform file" + (f" ({reason[:160]})" if reason else "")
            + ("; it looks like an image: a displacement field from adregnet register is applied with adregnet warp, "
               "and --initial-transform" if image_suffix else "; --initial-transform")
            + " takes an ITK .h5/.tfm/.txt/.mat rigid or affine transform (as ITK, ANTs, elastix and Slicer write)"
        ) from None
    if transform.GetDimension() != 3:
        raise LinearTransformError(f"{p} holds a {transform.GetDimension()}-D transform; a 3-D one is needed")
    if not _is_linear(transform):
        raise LinearTransformError(f"{p} holds a non-linear ({transform.GetName()}) transform; --initial-transform "
                                   "takes a rigid or affine transform")
    try:
        return affine_from_sitk(transform)
    except ValueError as exc:
        raise LinearTransformError(f"{p}: {exc}") from None


def write_linear_transform(affine: AffineMap, path: PathLike) -> None:
    """Write an AffineMap as an ITK affine transform file (.h5, .tfm, .txt, .mat)."""
    write_sitk_transform(affine_to_sitk(affine), path)
