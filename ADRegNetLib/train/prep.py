r"""Prepare training volumes once: real sources -> ``.npz`` files at the training spacing.

    python -m ADRegNetLib.train.prep --data ../shared/data -o prepared/ --spacing 2.0

This is the only part of the training path that reads medical image files (SimpleITK, imported
lazily); the trainer reads the ``.npz`` files with numpy alone, so prepared volumes can travel to a
machine without SimpleITK (the GPU host).

One file per subject, ``<name>.npz``, holding:

* ``image``: (Z, Y, X) float32 intensities in [0, 1], or an empty array for label-only sources;
* ``labels``: (Z, Y, X) int16 label map, labels renumbered 0..K-1 (0 = background);
* ``geometry``: JSON text of :meth:`Geometry.to_dict` (origin, spacing, direction of the grid);
* ``kind``: source kind ("brain_t1", "synthseg", "lung_ct", "shapes");
* ``split``: "train" or "heldout" (SynthSeg subjects 9 and 10 and the held-out shapes are never
  used for training).

Sources (under ``--data``, the shared data folder): the VoxelMorph brain T1 with its labels
(intensity scaled by its maximum), the ten SynthSeg whole-head label maps, the POPI thorax CT
(HU window [-1000, 400]) with its lung mask as labels, and random smooth blob label maps.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

# ADRegNetLib.numbers, not ADRegNetLib.io.numbers: ADRegNetLib/io/__init__.py imports SimpleITK, which the GPU
# host does not have.
from ..numbers import argument_type
from ..spatial.geometry import Geometry
from ..spatial.image import Image
from ..spatial.warp import warp_image

__all__ = ["resample", "prepare", "save_volume", "SYNTHSEG_TRAIN", "SYNTHSEG_HELDOUT", "build_parser", "main"]

SYNTHSEG_TRAIN = tuple(range(1, 9))
SYNTHSEG_HELDOUT = (9, 10)


def resample(image: Image, spacing_mm: float, mode: str = "linear") -> Image:
    """Resample ``image`` to isotropic ``spacing_mm`` voxels over the same span (same direction).

    Args:
        image: (Z, Y, X) array with its geometry.
        spacing_mm: new voxel size, mm.
        mode: "linear" (images) or "nearest" (labels, returned as int64).
    """
    target = image.geometry.with_spacing(spacing_mm)
    src = torch.as_tensor(image.array.astype(np.float32))[None, None]
    if mode == "linear":  # anti-alias before a coarser sampling
        sigma = np.maximum(spacing_mm / np.asarray(image.geometry.spacing) - 1.0, 0.0) * 0.5
        if np.any(sigma > 0):
            from .synthetic import gaussian_blur

            src = gaussian_blur(src, tuple(float(s) for s in sigma[::-1]))
    out = warp_image(src, None, target, image.geometry, mode=mode, padding_mode="border")[0, 0].numpy()
    if mode == "nearest":
        out = np.rint(out).astype(np.int64)
    return Image(out, target, image.name)


def _read(path: Path, dtype) -> Image:
    import SimpleITK as sitk  # lazy: only prep reads image files

    from ..io.image import from_sitk

    if not path.is_file():
        raise FileNotFoundError(f"training source not found: {path}; pass --data <folder holding shared/data>")
    return from_sitk(sitk.ReadImage(str(path)), name=path.name, dtype=dtype)


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Labels -> 0..K-1 in sorted order (0 stays background when present)."""
    _ids, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int16)


def _crop_to_foreground(image: Optional[np.ndarray], labels: np.ndarray, geometry: Geometry,
                        margin: int = 4) -> tuple[Optional[np.ndarray], np.ndarray, Geometry]:
    nz = np.nonzero(labels > 0)
    lo = np.maximum([int(v.min()) - margin for v in nz], 0)
    hi = np.minimum([int(v.max()) + margin + 1 for v in nz], labels.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    origin = geometry.index_to_physical(np.asarray(lo[::-1], float)[None])[0]
    g = Geometry(tuple(int(b - a) for a, b in zip(lo[::-1], hi[::-1])), geometry.spacing, origin, geometry.direction)
    return (image[sl] if image is not None else None), labels[sl], g


def save_volume(path: Path, image: Optional[np.ndarray], labels: np.ndarray, geometry: Geometry, kind: str,
                split: str) -> Path:
    """Write one prepared volume (see the module docstring for the keys)."""
    if image is not None and image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must share the (Z, Y, X) grid")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, image=np.zeros(0, np.float32) if image is None else image.astype(np.float32),
                        labels=_renumber(labels), geometry=json.dumps(geometry.to_dict()), kind=kind, split=split)
    return path


def prepare(data_root: str | Path, out_dir: str | Path, spacing_mm: float = 2.0, n_shapes: int = 6,
            seed: int = 0, sources: Sequence[str] = ("brain_t1", "synthseg", "lung_ct", "shapes")) -> list[Path]:
    """Write the prepared volumes of ``sources`` into ``out_dir``; returns the written files."""
    root, out = Path(data_root), Path(out_dir)
    written: list[Path] = []
    if "brain_t1" in sources:
        d = np.load(root / "brain-vxm-test-scan" / "test_scan.npz")
        g = Geometry(d["vol"].shape[::-1], spacing=(1.0, 1.0, 1.0))
        img = resample(Image(d["vol"].astype(np.float32), g, "brain_t1"), spacing_mm)
        lab = resample(Image(d["seg"].astype(np.int64), g, "labels"), spacing_mm, mode="nearest")
        arr = np.clip(img.array / max(float(img.array.max()), 1e-6), 0, 1)
        written.append(save_volume(out / "brain_t1.npz", arr, lab.array, img.geometry, "brain_t1", "train"))
    if "synthseg" in sources:
        for s in SYNTHSEG_TRAIN + SYNTHSEG_HELDOUT:
            lab = _read(root / "brain-synthseg-labelmaps" / f"training_seg_{s:02d}.nii.gz", np.int64)
            lab = resample(lab, spacing_mm, mode="nearest")
            _, arr, g = _crop_to_foreground(None, lab.array, lab.geometry)
            split = "heldout" if s in SYNTHSEG_HELDOUT else "train"
            written.append(save_volume(out / f"synthseg_{s:02d}.npz", None, arr, g, "synthseg", split))
    if "lung_ct" in sources:
        folder = root / "lung-ct-thorax"
        ct = _read(folder / "thorax_ct.nii.gz", np.float32)
        ct = resample(Image(np.clip((ct.array + 1000.0) / 1400.0, 0, 1), ct.geometry, "lung_ct"), spacing_mm)
        lab = resample(_read(folder / "lung_mask.nii.gz", np.int64), spacing_mm, mode="nearest")
        body = resample(_read(folder / "body_mask.nii.gz", np.int64), spacing_mm, mode="nearest")
        labels = np.where(lab.array > 0, 2, (body.array > 0).astype(np.int64))  # 1 body, 2 lung
        written.append(save_volume(out / "lung_ct.npz", ct.array, labels, ct.geometry, "lung_ct", "train"))
    if "shapes" in sources:
        from .synthetic import random_label_map

        gen = torch.Generator().manual_seed(seed)
        for i in range(n_shapes):
            shape = (80, 80, 80)
            lab = random_label_map(shape, gen, n_labels=int(torch.randint(4, 12, (1,), generator=gen)))[0, 0]
            g = Geometry(shape[::-1], spacing=(spacing_mm,) * 3)
            split = "heldout" if i >= n_shapes - 2 else "train"
            written.append(save_volume(out / f"shapes_{i:02d}.npz", None, lab.numpy(), g, "shapes", split))
    return written


def build_parser() -> argparse.ArgumentParser:
    """The command's options; numbers are read strictly (``--shapes 1_0`` was 10 to Python's ``int``)."""
    parser = argparse.ArgumentParser(prog="python -m ADRegNetLib.train.prep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="shared data folder (holds brain-vxm-test-scan/, ...)")
    parser.add_argument("-o", "--out", required=True, help="output folder for the .npz volumes")
    parser.add_argument("--spacing", type=argument_type(example="2", positive=True), default=2.0,
                        help="training voxel size, mm (default 2)")
    parser.add_argument("--shapes", type=argument_type(whole=True, example="6", positive=True), default=6,
                        help="random blob volumes (the last 2 are held out; none: leave shapes out of --sources)")
    parser.add_argument("--sources", nargs="+", default=["brain_t1", "synthseg", "lung_ct", "shapes"])
    return parser


def main(argv: Optional[Sequence[str]] = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    files = prepare(args.data, args.out, args.spacing, args.shapes, sources=args.sources)
    for f in files:
        print(f"{f} ({f.stat().st_size / 2**20:.1f} MiB)")
    return files


if __name__ == "__main__":
    main()
