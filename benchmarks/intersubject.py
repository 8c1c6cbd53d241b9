r"""Inter-subject brain registration on real anatomy: Dice of warped label maps, no known field.

The benchmark's other cases deform one scan by a known field; this one registers two different
people, as an atlas-to-subject study does (the paper's IXI figure is of that kind). The anatomy
comes from the SynthSeg label maps (``shared/data/brain-synthseg-labelmaps``: ten real subjects, 1 mm,
each in its own native frame, so an affine pre-alignment is part of the task). There are no
intensity images in that data, so each pair's images are rendered from the labels:

* ``--contrast t1``: a T1-weighted look (white matter bright, grey matter mid, CSF dark: one fixed
  value per FreeSurfer structure, ``T1_VALUES``), each image with its own small changes (per-structure
  values +-3 %, texture, a 1 mm partial-volume blur, a bias field, a gamma, noise);
* ``--contrast random``: a random value per structure for each image (SynthMorph's images,
  ``intensities.synth_image_from_labels``), so fixed and moving are two different contrasts.

Only the brain is kept (labels 1-99; skull, scalp and eyes are background: a skull-stripped pair).
The images are sampled at ``--spacing`` (default 2 mm) on each subject's brain bounding box in its
own frame; the labels are kept at 1 mm. Dice is measured at 1 mm: every voxel centre of the fixed
subject's 1 mm labels is mapped through the field (trilinear) and the moving subject's 1 mm labels
are read there (nearest), for the 30 structures VoxelMorph scores (``recipes.VXM_DICE_LABELS``, those
present in both subjects); folds and std log J on the field's own grid. TRE is not measured: the
true correspondence between two people is unknown.

Every method runs in its own child process, as in ``python -m benchmarks`` (:mod:`.runner`).

Usage (from the repository root)::

    python -m benchmarks.intersubject -o OUT [--pairs 1:9,2:10,...] [--contrast t1|random]
        [--methods identity,adregnet-fast,adregnet-balanced,greedy] [--spacing 2] [--threads 2]

Writes ``OUT/results.csv`` (a row per pair and method, Dice per structure included) and
``OUT/summary.md`` (mean, standard deviation and minimum of the mean Dice over pairs per method).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from ADRegNetLib.io import read_displacement_field, read_image, write_image
from ADRegNetLib.metrics import jacobian_stats
from ADRegNetLib.numbers import argument_type, parse_whole_number
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image
from ADRegNetLib.spatial.jacobian import jacobian_determinant

from .cases import Case
from .intensities import bias_field, synth_image_from_labels
from .methods import available_methods, is_adregnet_method
from .recipes import VXM_DICE_LABELS
from .runner import jsonable, run_child
from .sampling import grid_points, interpolate_field, sample_at
from .sources import bbox_geometry, default_data_dir, load_synthseg, prefilter

__all__ = ["T1_VALUES", "DEFAULT_PAIRS", "render_image", "build_pair", "pair_dice", "run_pairs", "build_parser", "main"]

#: T1-weighted intensity of each FreeSurfer structure, as a fraction of cerebral white matter
#: (typical MPRAGE contrast: deep grey nuclei between cortex and white matter, CSF dark).
T1_VALUES = {2: 1.0, 41: 1.0, 3: 0.62, 42: 0.62, 4: 0.22, 43: 0.22, 5: 0.22, 44: 0.22, 14: 0.22, 15: 0.22,
             24: 0.18, 7: 0.95, 46: 0.95, 8: 0.66, 47: 0.66, 10: 0.86, 49: 0.86, 11: 0.70, 50: 0.70,
             12: 0.76, 51: 0.76, 13: 0.88, 52: 0.88, 16: 0.88, 17: 0.64, 53: 0.64, 18: 0.66, 54: 0.66,
             26: 0.70, 58: 0.70, 28: 0.86, 60: 0.86, 30: 0.55, 62: 0.55, 31: 0.55, 63: 0.55, 77: 0.80,
             85: 0.90}
#: value of any other brain label (1-99) not in ``T1_VALUES``
T1_OTHER = 0.6
#: (moving subject, fixed subject): the fixed subjects 9 and 10 are the ones the network never saw
#: in training (it saw 1-8, each only deformed against itself)
DEFAULT_PAIRS = ((1, 9), (2, 10), (3, 9), (4, 10), (5, 9), (6, 10))
#: FreeSurfer brain labels are below this; 502-530 are skull, scalp, eyes and other tissue outside the brain
BRAIN_MAX_LABEL = 100


def _brain_labels(subject: int, data_dir: Path) -> tuple[np.ndarray, Geometry]:
    """The subject's brain labels (skull and scalp removed) cropped to the brain plus 8 mm, 1 mm."""
    src = load_synthseg(data_dir, subject)
    labels = np.where((src.labels > 0) & (src.labels < BRAIN_MAX_LABEL), src.labels, 0).astype(np.int16)
    crop = bbox_geometry(src.geometry, labels > 0, margin_vox=8)
    cropped = sample_at(labels, src.geometry, grid_points(crop), order=0).reshape(crop.shape).astype(np.int16)
    return cropped, crop


def _t1_image(labels: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """A T1-weighted look of ``labels`` (1 mm) with this image's own small changes (module docstring)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    values = np.array([0.0 if v == 0 else T1_VALUES.get(int(v), T1_OTHER) for v in ids])
    values *= rng.normal(1.0, 0.03, size=len(ids))
    img = values[inverse.reshape(labels.shape)]
    texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape), 1.0)
    img = img * (1.0 + 0.08 * texture / max(float(texture.std()), 1e-6)) * (labels > 0)
    img = ndimage.gaussian_filter(img, sigma=1.0 / geometry.spacing[::-1])
    img = img * np.exp(bias_field(labels.shape, geometry, rng, 0.15))
    img = np.clip(img, 0, None) / max(float(img.max()), 1e-6)
    img = img ** float(np.exp(rng.normal(0.0, 0.1)))
    return (img + rng.standard_normal(labels.shape) * 0.01).astype(np.float32)


def render_image(labels: np.ndarray, geometry: Geometry, contrast: str, spacing: float,
                 rng: np.random.Generator) -> Image:
    """The image of ``labels`` ((Z, Y, X) on ``geometry``, 1 mm) in ``contrast`` ("t1" or "random"), sampled
    on the same box at ``spacing`` mm (anti-aliased first)."""
    if contrast == "t1":
        fine = _t1_image(labels, geometry, rng)
    elif contrast == "random":
        fine = synth_image_from_labels(labels, geometry, rng)
    else:
        raise ValueError(f"unknown contrast {contrast!r}; expected 't1' or 'random'")
    grid = geometry.with_spacing(spacing)
    arr = sample_at(prefilter(fine, geometry, spacing), geometry, grid_points(grid), order=1)
    return Image(arr.reshape(grid.shape).astype(np.float32), grid)


def build_pair(moving_subject: int, fixed_subject: int, out_dir: str | Path, contrast: str = "t1",
               spacing: float = 2.0, data_dir: str | Path | None = None, seed: int = 0) -> Case:
    """Write one pair's folder (``fixed.nii.gz``, ``moving.nii.gz`` at ``spacing``; ``fixed_labels.nii.gz``,
    ``moving_labels.nii.gz`` at 1 mm; ``case.json``) and return it as a :class:`.cases.Case`.

    Raises:
        FileNotFoundError: a label map is missing (the message names it).
        ValueError: the same subject twice, or an unknown contrast.
    """
    if moving_subject == fixed_subject:
        raise ValueError(f"a pair needs two subjects, got {moving_subject} twice")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    name = f"s{moving_subject:02d}-to-s{fixed_subject:02d}"
    directory = Path(out_dir) / name
    directory.mkdir(parents=True, exist_ok=True)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, moving_subject, fixed_subject]).spawn(2)]
    images = {}
    for role, subject, rng in (("fixed", fixed_subject, rngs[0]), ("moving", moving_subject, rngs[1])):
        labels, geometry = _brain_labels(subject, data_dir)
        write_image(Image(labels, geometry), directory / f"{role}_labels.nii.gz")
        images[role] = render_image(labels, geometry, contrast, spacing, rng)
        write_image(images[role], directory / f"{role}.nii.gz")
    fixed_ids = set(np.unique(read_image(directory / "fixed_labels.nii.gz", dtype=np.int16).array).tolist())
    moving_ids = set(np.unique(read_image(directory / "moving_labels.nii.gz", dtype=np.int16).array).tolist())
    meta = {"name": name, "preset": "auto", "kind": "intersubject", "contrast": contrast, "seed": seed,
            "moving_subject": moving_subject, "fixed_subject": fixed_subject, "spacing_mm": spacing,
            "label_ids": [v for v in VXM_DICE_LABELS if v in fixed_ids and v in moving_ids],
            "fixed_size_xyz": list(images["fixed"].geometry.size),
            "moving_size_xyz": list(images["moving"].geometry.size)}
    (directory / "case.json").write_text(json.dumps(meta, indent=1))
    return Case.load(directory)


def pair_dice(case: Case, disp_mm: np.ndarray, field_geometry: Geometry) -> dict:
    """Dice per structure at 1 mm (module docstring), folds and std log J of ``disp_mm``.

    Returns:
        ``dice`` (mean over ``case.label_ids``), ``dice_<id>`` per structure, ``folds_pct``, ``sdlogj``,
        ``jac_min``.
    """
    fixed = read_image(case.fixed_labels_path, dtype=np.int16)
    moving = read_image(case.moving_labels_path, dtype=np.int16)
    points = grid_points(fixed.geometry)
    mapped = points + interpolate_field(disp_mm, field_geometry, points)
    warped = sample_at(moving.array, moving.geometry, mapped, order=0).reshape(fixed.geometry.shape)
    row: dict = {}
    for label in case.label_ids:
        a, b = fixed.array == label, warped == label
        row[f"dice_{label}"] = float(2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))
    row["dice"] = float(np.mean([row[f"dice_{v}"] for v in case.label_ids])) if case.label_ids else float("nan")
    jac = jacobian_stats(jacobian_determinant(torch.from_numpy(np.ascontiguousarray(disp_mm, np.float32))[None],
                                              field_geometry)[0].numpy())
    row.update({"folds_pct": 100.0 * jac["folding_fraction"], "sdlogj": jac["std_log_det"], "jac_min": jac["min"]})
    return row


def _run(case: Case, method: str, work_root: Path, threads: int, timeout: float) -> dict:
    row: dict = {"pair": case.name, "method": method}
    if method == "identity":
        geometry = case.fixed_geometry()
        row.update(pair_dice(case, np.zeros((3, *geometry.shape), np.float32), geometry))
        row.update({"seconds": 0.0, "status": "ok"})
        return row
    work = work_root / case.name / method
    work.mkdir(parents=True, exist_ok=True)
    if not run_child(case, method, work, threads, timeout, row):
        return row
    info = json.loads((work / "run.json").read_text())
    disp, geometry = read_displacement_field(work / "disp.nii.gz")
    row.update(pair_dice(case, disp.astype(np.float32), geometry))
    row.update({"seconds": info["seconds"], "status": "ok", "tool": info["notes"].get("tool", "")})
    metrics = info["notes"].get("engine_metrics") or {}
    if is_adregnet_method(method):
        prealignment = metrics.get("prealignment") or {}
        row.update({"preset": metrics.get("preset"), "multimodal": metrics.get("multimodal"),
                    "affine_kept": prealignment.get("kept")})
    return row


def _summary(rows: Sequence[dict], methods: Sequence[str], header: str) -> str:
    lines = [header, "", "| method | Dice mean | sd | min | folds (%) max | seconds (median) | pairs |",
             "|---|---|---|---|---|---|---|"]
    for method in methods:
        ok = [r for r in rows if r["method"] == method and r.get("status") == "ok"]
        if not ok:
            lines.append(f"| {method} | - | - | - | - | - | 0 |")
            continue
        dice = [r["dice"] for r in ok]
        sd = statistics.stdev(dice) if len(dice) > 1 else 0.0
        lines.append(f"| {method} | {np.mean(dice):.3f} | {sd:.3f} | {min(dice):.3f} | "
                     f"{max(r['folds_pct'] for r in ok):.3f} | {statistics.median(r['seconds'] for r in ok):.1f} | {len(ok)} |")
    return "\n".join(lines) + "\n"


def run_pairs(pairs: Sequence[tuple[int, int]], out_dir: str | Path, methods: Sequence[str], contrast: str = "t1",
              spacing: float = 2.0, threads: int = 2, data_dir: str | Path | None = None, seed: int = 0,
              timeout: float = 1800.0, log: Callable[[str], None] = print) -> list[dict]:
    """Build every pair, run every method on it, write ``results.csv`` and ``summary.md`` after each run.

    Returns:
        The result rows (one per pair and method).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runnable, skipped = available_methods(methods)
    for method, why in skipped.items():
        log(f"[intersubject] skipping {method}: {why}")
    rows: list[dict] = []
    header = (f"Inter-subject pairs (moving -> fixed SynthSeg subject), contrast {contrast}, images at {spacing:g} mm, "
              f"seed {seed}; Dice at 1 mm over the VoxelMorph structures present in both; one run each.")
    for moving_subject, fixed_subject in pairs:
        case = build_pair(moving_subject, fixed_subject, out_dir / "pairs", contrast, spacing, data_dir, seed)
        for method in runnable:
            row = _run(case, method, out_dir / "runs", threads, timeout)
            rows.append(row)
            log(f"[intersubject] {case.name} {method}: {row.get('status')}, Dice {row.get('dice', float('nan')):.3f}, "
                f"folds {row.get('folds_pct', float('nan')):.3f} %, {row.get('seconds', float('nan')):.1f} s")
            fields = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("dice_"), k))
            with open(out_dir / "results.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                writer.writerows({k: jsonable(v) for k, v in r.items()} for r in rows)
            (out_dir / "summary.md").write_text(_summary(rows, runnable, header))
    return rows


def _pairs(text: str) -> list[tuple[int, int]]:
    """``--pairs`` text ("1:9,2:10") as (moving, fixed) subject numbers, read strictly (``1_0`` was 10 to ``int``).

    Raises:
        argparse.ArgumentTypeError: naming the bad item, why, and what to write.
    """
    fix = "write MOVING:FIXED subject numbers 1-10, comma-separated, e.g. 1:9,2:10"
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} names no pair; {fix}")
    pairs = []
    for item in items:
        parts = item.split(":")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"pair {item!r} is not two subjects joined by ':'; {fix}")
        try:
            pair = tuple(parse_whole_number(v) for v in parts)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"pair {item!r}: {exc}; {fix}") from None
        if not all(1 <= v <= 10 for v in pair):
            raise argparse.ArgumentTypeError(f"pair {item!r}: the subjects are numbered 1 to 10; {fix}")
        pairs.append(pair)
    return pairs


def build_parser() -> argparse.ArgumentParser:
    """The command's options; numbers are read strictly (``--threads 1_0`` was 10 to Python's ``int``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.intersubject", description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for the pairs, runs and results")
    parser.add_argument("--pairs", type=_pairs, default=list(DEFAULT_PAIRS),
                        help="MOVING:FIXED SynthSeg subjects, comma-separated (default: 1:9,2:10,3:9,4:10,5:9,6:10)")
    parser.add_argument("--contrast", choices=("t1", "random"), default="t1")
    parser.add_argument("--methods", default="identity,adregnet-fast,adregnet-balanced,greedy")
    parser.add_argument("--spacing", type=argument_type(example="2", positive=True), default=2.0,
                        help="image voxel size, mm (labels stay at 1 mm)")
    parser.add_argument("--threads", type=argument_type(whole=True, example="2", positive=True), default=2)
    parser.add_argument("--seed", type=argument_type(whole=True, example="0", non_negative=True), default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default: ../shared/data)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "truth" in methods:
        parser.error("--methods: 'truth' has no meaning between two people (their true correspondence is unknown)")
    try:
        available_methods(methods)
    except ValueError as exc:
        parser.error(f"--methods: {exc}")
    try:
        rows = run_pairs(args.pairs, args.output, methods, args.contrast, args.spacing, args.threads, args.data_dir,
                         args.seed)
    except FileNotFoundError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print((args.output / "summary.md").read_text())
    return 0 if rows and all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
