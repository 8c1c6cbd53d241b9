r"""``adregnet warp``: apply a saved registration result to an image, a label map or points.

A result folder of ``adregnet register`` holds ``displacement.nii.gz`` (u on the fixed grid:
fixed x -> moving x + u(x)) and ``displacement_inverse.nii.gz`` (v on the moving grid:
moving y -> fixed y + v(y)). ``--direction`` says where the data goes:

=========================  ==================================  ==================================
data                       moving-to-fixed (default)           fixed-to-moving
=========================  ==================================  ==================================
image / label map          moving-space data onto the fixed    fixed-space data onto the moving
                           grid: out(x) = data(x + u(x))       grid: out(y) = data(y + v(y))
points                     moving points p -> p + v(p)         fixed points p -> p + u(p)
=========================  ==================================  ==================================

Images and label maps land on the field's grid, or on ``--reference IMAGE``'s grid (the field
is then interpolated at the reference voxels, with ITK's zero displacement outside its grid).
Label maps are warped label-aware (:func:`~ADRegNetLib.spatial.labels.sample_labels`), images
with linear, cubic B-spline or nearest interpolation; points outside the moving/fixed data
image get that image's background (the median of its six faces: air for CT), as ``register``'s
``warped.nii.gz`` does; label maps get 0 there.

The output keeps the input's pixel type, as ITK's resampling does: a label map its exact type (uint32
stays uint32), an integer image (uint8, int16, ...) interpolated linearly or by B-spline is rounded to
the nearest whole number and clipped to its type's range (a B-spline overshoots at sharp edges; ITK
clips too, but truncates toward zero), float32 and float64 images stay so.

Nothing is written on error; the output is written to a temporary file beside it and renamed,
and an input file is never overwritten (symbolic links resolved).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from .register_cmd import output_path

if TYPE_CHECKING:  # the annotations only: torch is imported where the work runs, so `adregnet --help` needs none
    import torch

__all__ = ["add_warp_arguments", "warp_main", "main", "WarpError"]

FORWARD_FILE = "displacement.nii.gz"
INVERSE_FILE = "displacement_inverse.nii.gz"
DIRECTIONS = ("moving-to-fixed", "fixed-to-moving")
INTERPOLATIONS = ("linear", "bspline", "nearest")
#: least share of the output grid that must lie inside the transform's grid
MIN_REFERENCE_OVERLAP = 0.5
#: output voxels mapped per batch (bounds memory on large grids)
_BATCH_VOXELS = 1 << 24


class WarpError(ValueError):
    """A user error of ``adregnet warp``: the message says what is wrong and how to fix it."""


def add_warp_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``warp`` arguments to ``parser`` (a sub-command parser of ``adregnet``)."""
    parser.add_argument("result", metavar="RESULT_DIR",
                        help=f"output folder of adregnet register ({FORWARD_FILE}, {INVERSE_FILE})")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--image", help="an image to warp (NIfTI, NRRD, MHA)")
    data.add_argument("--labels", help="a label map / segmentation to warp (label-aware)")
    data.add_argument("--points", help="points to map: .mrk.json, .fcsv or .csv (x,y,z LPS mm)")
    parser.add_argument("-o", "--output", required=True, type=output_path, help="output file (format from the extension)")
    parser.add_argument("--direction", choices=DIRECTIONS, default="moving-to-fixed",
                        help="where the data goes (default moving-to-fixed: moving-space data onto the fixed image)")
    parser.add_argument("--reference", help="image whose grid the output takes (default: the transform's grid)")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default=None,
                        help="for --image: linear (default), bspline (cubic) or nearest")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file (never an input)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    return parser


# ------------------------------------------------------------------------------------------- checks
def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_output(output: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    for path in inputs:
        if _same_file(output, path):
            raise WarpError(f"the output {output} is the input {path}; choose another -o file (inputs are never overwritten)")
    if output.exists() or output.is_symlink():
        if output.is_dir():
            raise WarpError(f"the output {output} is a folder; give a file name with -o")
        if not overwrite:
            raise WarpError(f"{output} already exists; choose another -o file or add --overwrite")
    if not output.resolve().parent.is_dir():
        raise WarpError(f"the folder of the output {output} does not exist; create it first")
    from .outputs import file_write_problem

    problem = file_write_problem(output)
    if problem:
        raise WarpError(problem)


def _field_file(result: Path, kind: str, direction: str) -> tuple[Path, bool]:
    """(field file, is_inverse) that moves ``kind`` data in ``direction``."""
    if not result.is_dir():
        raise WarpError(f"{result} is not a folder; give the output folder of adregnet register (it holds {FORWARD_FILE})")
    inverse = (direction == "fixed-to-moving") if kind != "points" else (direction == "moving-to-fixed")
    path = result / (INVERSE_FILE if inverse else FORWARD_FILE)
    if not path.is_file():
        if inverse:
            raise WarpError(
                f"{direction} for {kind} needs the inverse transform {path}, which is missing (the run was made with "
                f"--no-inverse, or by an older version); re-run adregnet register without --no-inverse, or use the "
                f"other --direction")
        raise WarpError(f"{result} holds no {FORWARD_FILE}; give the output folder of adregnet register")
    return path, inverse


def _overlap(outer, inner) -> float:
    """Share of ``inner`` grid voxel centres (sampled, at most ~32^3) inside ``outer``'s grid."""
    steps = [max(1, n // 32) for n in inner.size]
    axes = [np.arange(0, n, s, dtype=np.float64) for n, s in zip(inner.size, steps)]
    xx, yy, zz = np.meshgrid(*axes, indexing="ij")
    pts = inner.index_to_physical(np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1))
    return float(outer.contains(pts, margin_voxels=0.5).mean())


# -------------------------------------------------------------------------------------------- maps
def _voxel_points(geometry, z0: int, z1: int) -> np.ndarray:
    """(K, 3) LPS mm centres of the voxels of slices z0..z1-1, C order of a (Z, Y, X) array."""
    zz, yy, xx = np.meshgrid(np.arange(z0, z1), np.arange(geometry.shape[1]), np.arange(geometry.shape[2]),
                             indexing="ij")
    return geometry.index_to_physical(np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1).astype(np.float64))


def _mapped_grids(field: torch.Tensor, field_geometry, out_geometry, data_geometry):
    """Yield (z0, z1, grid (1, z1-z0, Y, X, 3) float64 in the data image's normalised coordinates): where each
    output voxel of slices z0..z1-1 maps through the field."""
    import torch

    from ..io.transforms import transform_points

    a, b = data_geometry.physical_to_normalized_affine()
    a_t = torch.as_tensor(a.T, dtype=torch.float64, device=field.device)
    b_t = torch.as_tensor(b, dtype=torch.float64, device=field.device)
    nz, ny, nx = out_geometry.shape
    slab = max(1, _BATCH_VOXELS // (ny * nx))
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        pts = torch.as_tensor(_voxel_points(out_geometry, z0, z1), dtype=torch.float64, device=field.device)
        mapped = transform_points(field, field_geometry, pts).to(torch.float64)
        yield z0, z1, (mapped @ a_t + b_t).view(1, z1 - z0, ny, nx, 3)


def _sampling_dtype(dtype: np.dtype) -> torch.dtype:
    """float64 for float64 images and integers of 32 bits or more (float32 holds whole numbers only up to
    2**24), float32 otherwise."""
    import torch

    wide = dtype == np.float64 or (np.issubdtype(dtype, np.integer) and dtype.itemsize >= 4)
    return torch.float64 if wide else torch.float32


def as_pixel_type(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Interpolated ``values`` in an image's own pixel type: integers rounded to the nearest whole number
    (halves to even) and clipped to the type's range (ITK's resampling clips too, but truncates toward
    zero: up to 1 below), floating types cast.

    Args:
        values: floating-point samples, any shape.
        dtype: the input image's pixel type.
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    low, high = float(info.min), float(info.max)
    if int(high) > info.max:  # 64-bit types: float(max) rounds up past it, and the cast would wrap around
        high = float(np.nextafter(high, -np.inf))
    return np.clip(np.rint(values), low, high).astype(dtype)


def _warp_image(data, field, field_geometry, out_geometry, interpolation: str, device) -> tuple[np.ndarray, float]:
    """The image sampled at the mapped output voxels, in its own pixel type (see :func:`as_pixel_type`), and
    the share of output voxels that landed on it."""
    import torch
    import torch.nn.functional as F

    from ..spatial.bspline import bspline_coefficients, bspline_sample
    from ..spatial.transform import background_value
    from ..spatial.warp import fill_outside_itk_buffer

    dtype = _sampling_dtype(data.array.dtype)
    array = np.ascontiguousarray(data.array, dtype=np.float64 if dtype == torch.float64 else np.float32)
    volume = torch.from_numpy(array).to(device)[None, None]
    source = bspline_coefficients(volume) if interpolation == "bspline" else volume
    out = np.zeros(out_geometry.shape, dtype=data.array.dtype)
    # outside the image: its background, as ``register``'s warped.nii.gz (air for CT, not water)
    background = torch.tensor(background_value(data), dtype=dtype, device=device)
    hits = 0
    for z0, z1, grid in _mapped_grids(field, field_geometry, out_geometry, data.geometry):
        sample_grid = grid.to(dtype)
        if interpolation == "bspline":
            values = bspline_sample(source, sample_grid)
        else:
            values = F.grid_sample(source, sample_grid, mode="nearest" if interpolation == "nearest" else "bilinear",
                                   padding_mode="border", align_corners=True)
        values, inside = fill_outside_itk_buffer(values, grid, data.geometry, background)
        out[z0:z1] = as_pixel_type(values[0, 0].cpu().numpy(), out.dtype)
        hits += int(inside.sum())
    return out, hits / max(out.size, 1)


def _warp_labels(data, field, field_geometry, out_geometry, device) -> tuple[np.ndarray, float]:
    """The label map warped label-aware, in its own pixel type (labels are sampled as int64 and every value
    comes from the input, so the cast back is exact), and the share of output voxels that landed on it."""
    import torch

    from ..spatial.labels import sample_labels
    from ..spatial.warp import fill_outside_itk_buffer

    labels = torch.from_numpy(np.ascontiguousarray(data.array, dtype=np.int64)).to(device)
    out = np.zeros(out_geometry.shape, dtype=data.array.dtype)
    hits = 0
    for z0, z1, grid in _mapped_grids(field, field_geometry, out_geometry, data.geometry):
        values = sample_labels(labels, grid.to(torch.float32))
        values, inside = fill_outside_itk_buffer(values[None, None], grid, data.geometry, 0)
        out[z0:z1] = values[0, 0].cpu().numpy().astype(out.dtype)
        hits += int(inside.sum())
    return out, hits / max(out.size, 1)


# --------------------------------------------------------------------------------------------- run
def _write_atomically(output: Path, write) -> None:
    """Write through ``write(path)`` into a temporary file beside ``output``, then rename it."""
    tmp = output.with_name(f".adregnet-tmp-{os.getpid()}-{output.name}")
    try:
        write(tmp)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()


def _run(args: argparse.Namespace) -> str:
    import torch

    from ..engine.device import resolve_device
    from ..io import read_displacement_field, read_image, read_label_map, read_landmarks, write_image, write_landmarks
    from ..io.image import Image
    from ..io.landmarks import landmark_format

    kind = "image" if args.image else "labels" if args.labels else "points"
    source = Path(args.image or args.labels or args.points)
    output = Path(args.output)
    result = Path(args.result)
    if kind != "image" and args.interpolation is not None:
        raise WarpError(f"--interpolation applies to --image only ({kind} are warped "
                        f"{'label-aware' if kind == 'labels' else 'exactly'}); leave it out")
    if kind == "points" and args.reference:
        raise WarpError("--reference applies to images and label maps; points have no grid, leave it out")
    field_path, inverse = _field_file(result, kind, args.direction)
    inputs = [source, field_path] + ([Path(args.reference)] if args.reference else [])
    _check_output(output, inputs, args.overwrite)
    if kind == "points":
        landmark_format(output)  # an unknown extension fails here, before any work
    elif not str(output).lower().endswith((".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")):
        raise WarpError(f"{output}: an image output needs one of .nii.gz, .nii, .nrrd, .mha")
    device, note = resolve_device(args.device)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    disp, field_geometry = read_displacement_field(field_path)
    space = "moving" if inverse else "fixed"

    if kind == "points":
        from ..io.transforms import transform_points

        # voxel-index files (DIR-Lab .txt) index the grid of the points' own image: the field's grid
        points = read_landmarks(source, geometry=field_geometry)
        inside = field_geometry.contains(points, margin_voxels=0.5)
        if not inside.any():
            raise WarpError(
                f"none of the {len(points)} points lies inside the transform's grid ({space} image, {field_path.name}); "
                f"are they {space}-space points? For the other space use --direction "
                f"{DIRECTIONS[1] if args.direction == DIRECTIONS[0] else DIRECTIONS[0]}")
        if not inside.all():
            print(f"warning: {int((~inside).sum())} of {len(points)} points lie outside the transform's grid and are "
                  "not moved (ITK's convention: zero displacement outside the field)", file=sys.stderr)
        mapped = transform_points(torch.as_tensor(disp, dtype=torch.float64, device=device), field_geometry,
                                  torch.as_tensor(points, dtype=torch.float64, device=device)).cpu().numpy()
        _write_atomically(output, lambda p: write_landmarks(mapped, p))
        return f"mapped {len(points)} points {args.direction} into {output}"

    # the output keeps the input's pixel type (as ITK's resampling does): read it as stored
    data = read_image(source, dtype=None) if kind == "image" else read_label_map(source, dtype=None)
    if kind == "image" and np.issubdtype(data.array.dtype, np.floating):
        bad = data.array.size - int(np.count_nonzero(np.isfinite(data.array)))
        if bad:  # interpolation would smear them over their neighbours or drop them
            raise WarpError(f"--image {source} has {bad} NaN or infinite voxels (of {data.array.size}); replace them "
                            "(e.g. numpy.nan_to_num with the background value) before warping")
    if kind == "labels":
        from .register_cmd import CLIError, check_label_values

        if data.array.dtype == np.uint64 and data.array.size and int(data.array.max()) > np.iinfo(np.int64).max:
            raise WarpError(f"--labels {source} holds label values up to {int(data.array.max())}, beyond the int64 "
                            "range the label-aware warp computes in; renumber the labels (e.g. 1, 2, 3, ...)")

        try:
            check_label_values(data, "--labels")
        except CLIError as exc:
            raise WarpError(str(exc)) from None
    out_geometry = field_geometry
    if args.reference:
        out_geometry = read_image(args.reference, dtype=None).geometry
        share = _overlap(field_geometry, out_geometry)
        if share < MIN_REFERENCE_OVERLAP:
            raise WarpError(
                f"the reference grid of {args.reference} does not match the transform's grid ({space} image grid "
                f"{field_geometry.size} voxels at origin {np.round(field_geometry.origin, 2).tolist()}): only "
                f"{share:.0%} of it lies inside, and the transform is undefined outside; give a reference in {space} "
                f"space (for example the {space} image itself) or leave --reference out")
        if share < 0.999:
            print(f"warning: {1 - share:.0%} of the reference grid lies outside the transform's grid; there the "
                  "displacement is zero (ITK's convention)", file=sys.stderr)
    field = torch.as_tensor(disp, dtype=torch.float32, device=device)
    if kind == "image":
        warped, hit = _warp_image(data, field, field_geometry, out_geometry, args.interpolation or "linear", device)
    else:
        warped, hit = _warp_labels(data, field, field_geometry, out_geometry, device)
    if hit == 0:
        other = "fixed" if space == "moving" else "moving"
        raise WarpError(
            f"{source} does not overlap the region the transform maps the output grid to: it should be a {other}-space "
            f"{'image' if kind == 'image' else 'label map'} for --direction {args.direction}; check --direction")
    _write_atomically(output, lambda p: write_image(Image(warped, out_geometry, output.name), p, narrow_int64=False))
    how = "label-aware" if kind == "labels" else args.interpolation or "linear"
    return f"warped {source.name} {args.direction} ({how}) onto a {out_geometry.size} grid: {output}"


def warp_main(args: argparse.Namespace) -> int:
    """Run ``adregnet warp`` from parsed arguments; print errors as one line and return 2."""
    from ..io.image import ImageError

    try:
        done = _run(args)
        if not getattr(args, "quiet", False):
            print(done)
        return 0
    except (WarpError, ImageError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"adregnet warp: error: {exc}", file=sys.stderr)
        return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ADRegNetLib.cli.warp RESULT_DIR ...`` (same as ``adregnet warp``)."""
    parser = add_warp_arguments(argparse.ArgumentParser(
        prog="adregnet warp", description="Apply a saved registration result to an image, a label map or points."))
    return warp_main(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
