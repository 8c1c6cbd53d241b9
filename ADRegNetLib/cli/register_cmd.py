r"""``adregnet register``: read the inputs, call :func:`register`, write the outputs atomically."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from ..engine.settings import (MAX_MASK_VALUES, MAX_REGULARIZATION, MAX_SEED,  # noqa: F401 - re-exported
                               MAX_SIGNED_LABEL_VALUES, MIN_REGULARIZATION)  # the engine's bounds, re-exported under the CLI's names
from ..numbers import argument_type
from .outputs import INVERSE_FILES, OUTPUT_FILES, check_outputs, staged_output, write_outputs

__all__ = ["add_register_arguments", "cmd_register", "CLIError", "check_regularization", "check_threads", "output_path",
           "number_argument", "whole_number_argument", "check_mask", "check_label_values", "check_initial_transform",
           "MAX_REGULARIZATION", "MIN_REGULARIZATION", "MAX_THREADS", "MAX_SEED", "MAX_MASK_VALUES",
           "MAX_SIGNED_LABEL_VALUES"]

#: Largest --threads accepted (torch takes any count, and a typo such as 80000 would start that many).
MAX_THREADS = 1024


class CLIError(Exception):
    """A user error reported as one line, exit code 2."""


def check_regularization(value: float) -> None:
    """Refuse a --regularization that is not positive and finite, or that is absurdly large.

    Raises:
        CLIError: the value and what is accepted.
    """
    if not (value > 0 and value != float("inf")):  # also NaN; the engine's own words
        raise CLIError(f"regularization must be a positive number (1 = default), got {value}")
    if value < MIN_REGULARIZATION:
        raise CLIError(f"--regularization {value:g} is below {MIN_REGULARIZATION:g}: at {MIN_REGULARIZATION:g} the field "
                       f"is already smoothed by nothing; give at least {MIN_REGULARIZATION:g} (1 = default; 0.25 between "
                       "two people)")
    if value > MAX_REGULARIZATION:
        raise CLIError(f"--regularization {value:g} is above {MAX_REGULARIZATION:g}: at {MAX_REGULARIZATION:g} the "
                       "smoothing is already wider than any scan (the deformation is then nearly a translation), and "
                       f"larger values only cost time; give at most {MAX_REGULARIZATION:g} (1 = default)")


#: An argparse ``type`` for a setting that is a number, read strictly: ``1_0`` (which Python's ``float`` reads as 10),
#: ``nan``, ``inf`` and ``1e400`` are refused with the reason (:mod:`ADRegNetLib.numbers`).
number_argument = argument_type()
#: An argparse ``type`` for a whole-number setting, read strictly (``int`` would read ``1_0`` as 10).
whole_number_argument = argument_type(whole=True)


def output_path(text: str) -> str:
    """An ``-o`` value: refused when empty (``-o ''`` wrote every output into the working folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give the name of the output folder or file")
    return text


def check_threads(value: int, zero: str = "torch's choice") -> None:
    """Refuse a negative or absurdly large --threads (0 means ``zero``)."""
    if value < 0:
        raise CLIError(f"--threads must be a positive number of CPU threads (0 = {zero}), got {value}")
    if value > MAX_THREADS:
        raise CLIError(f"--threads {value} is more than {MAX_THREADS}; this machine has {os.cpu_count()} CPU "
                       f"cores: give at most that many (0 = {zero})")
    cores = os.cpu_count() or 1
    if value > cores:  # legal (a container may see fewer cores than it may use), but usually a slip
        warnings.warn(f"--threads {value} is more than this machine's {cores} CPU cores: the extra threads only take "
                      f"turns on them and the run is slower (a sweep measured 50 s against 7 s); give at most {cores} "
                      f"(0 = {zero})", stacklevel=2)


def check_label_values(image, option: str, what: str = "label map") -> None:
    """Refuse a label map (or mask) that is an intensity image given by mistake.

    Args:
        image: as read by ``read_label_map`` (int64 (Z, Y, X) array).
        option: the command-line option, for messages ("--warp-labels").
        what: "label map" or "mask", for messages.

    Raises:
        CLIError: more than :data:`MAX_MASK_VALUES` distinct values, or negative values with more
            than :data:`MAX_SIGNED_LABEL_VALUES` (a CT in HU).
    """
    from ..engine.masks import scan_like

    scan = scan_like(image.array)
    if scan is not None:
        raise CLIError(f"{option} {image.name} holds {scan.count} distinct values (from {int(scan.lowest)} to "
                       f"{int(scan.highest)}), {scan.rule}: it looks like an intensity image (a scan), not a {what}; give "
                       f"the segmentation file" + (" (values > 0 inside the region of interest)" if what == "mask" else ""))


def check_mask(image, option: str) -> None:
    """Refuse a mask (label map, > 0 inside) that marks nothing, or that is an intensity image.

    Args:
        image: the mask as read by ``read_label_map`` (int64 (Z, Y, X) array).
        option: the command-line option, for messages ("--mask-fixed").

    Raises:
        CLIError: no voxel above 0 (values named), or see :func:`check_label_values`.
    """
    array = image.array
    if not np.any(array > 0):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        raise CLIError(f"{option} {image.name} has no voxel above 0 (its values run from {low} to {high}); a mask "
                       "marks the region of interest with values > 0: give a mask that marks it")
    check_label_values(image, option, "mask")


def check_initial_transform(affine, fixed, moving, path: str) -> None:
    """Refuse an initial transform that maps the whole fixed image outside the moving image.

    Args:
        affine: the fixed -> moving AffineMap (LPS mm).
        fixed, moving: the images (their geometries are used).
        path: the transform file, for messages.

    Raises:
        CLIError: no sample of the fixed grid lands inside the moving image; says whether the
            inverse would fit (a file that holds the moving -> fixed direction).
    """
    steps = [np.linspace(0.0, n - 1.0, 9) for n in fixed.geometry.size]
    xx, yy, zz = np.meshgrid(*steps, indexing="ij")
    points = fixed.geometry.index_to_physical(np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1))
    if moving.geometry.contains(affine.apply(points), margin_voxels=0.5).any():
        return
    distance = float(np.linalg.norm(affine.apply(fixed.geometry.center()[None])[0] - moving.geometry.center()))
    hint = ""
    try:
        if moving.geometry.contains(affine.inverse_apply(points), margin_voxels=0.5).mean() > 0.5:
            hint = (" Its inverse does fit: the file probably holds the moving -> fixed transform; invert it "
                    "(e.g. SimpleITK's GetInverse) and give that.")
    except np.linalg.LinAlgError:
        pass
    raise CLIError(f"--initial-transform {path} maps the whole fixed image outside the moving image (the fixed "
                   f"image's centre lands {distance:.0f} mm from the moving image's centre); give the transform from "
                   "fixed to moving space (ITK's convention, as ANTs, elastix and 3D Slicer write it) that belongs to "
                   f"these two images.{hint}")


class _ProgressBar:
    """A progress bar on a terminal; elsewhere (a log file, a pipe) one line per stage."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        self.enabled = enabled
        self.stage = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}] {desc}", file=sys.stderr)

    def __call__(self, fraction: float, text: str) -> None:
        if self.bar is None:
            stage = text.split(" (step")[0]  # "optimising level 1/3 (step 6/12)": one line per level
            if self.enabled and stage != self.stage:
                self.stage = stage
                print(f"[{100 * fraction:3.0f}%] {stage}", file=sys.stderr, flush=True)
            return
        self.bar.n = 100 * fraction
        self.bar.set_description_str(text[:60])
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: Optional[float]) -> str:
    """A metric for the summary line; None (undefined, e.g. NCC of images that do not overlap) as n/a."""
    return "n/a" if value is None else f"{value:.3f}"


def add_register_arguments(r: argparse.ArgumentParser) -> None:
    """The options of ``adregnet register`` (``adregnet batch`` has its own: ``cohort.cli.add_batch_arguments``)."""
    from ..engine.settings import PRESETS, QUALITIES, SLIDING_CHOICES

    r.add_argument("fixed", help="fixed image (NIfTI, NRRD, MHA or a DICOM folder)")
    r.add_argument("moving", help="moving image")
    r.add_argument("-o", "--output", required=True, type=output_path, help="output folder")
    r.add_argument("--fixed-landmarks", help=".mrk.json, .fcsv, DIR-Lab .txt or CSV (x,y,z LPS mm)")
    r.add_argument("--moving-landmarks", help="the matching moving landmarks (same order)")
    r.add_argument("--landmarks-check-only", action="store_true",
                   help="the landmark pairs only measure TRE (an independent check of the registration); by "
                        "default they also pull the registration, so their TRE after is not independent")
    r.add_argument("--preset", default="auto", choices=PRESETS)
    r.add_argument("--quality", default="balanced", choices=QUALITIES,
                   help="instant = the network's prediction alone; fast/balanced/best add the instance optimisation")
    r.add_argument("--contrast", default="auto", choices=("auto", "same", "different"),
                   help="do fixed and moving share a contrast? different (T1 vs T2, CT vs MR): mutual information "
                        "for the pre-alignment, edge directions for the refinement; auto decides from the images, "
                        "and again once they are aligned (tissues in another brightness order: two contrasts; "
                        "metrics.json says why)")
    r.add_argument("--sliding", default="auto", choices=SLIDING_CHOICES,
                   help="let the lungs slide along the chest wall (the field may jump at the lungs' boundary): auto "
                        "= with the lung preset and a CT fixed image; off for a thorax deformed smoothly across "
                        "the pleura (metrics.json 'sliding' says what ran)")
    r.add_argument("--regularization", type=number_argument, default=1.0, help="> 1 smoother (and no continuation with less smoothing where the refinement finds local motion), < 1 more local detail")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda")
    r.add_argument("--mask-fixed", help="region of interest of the fixed image (label map > 0 inside, any grid over it)")
    r.add_argument("--mask-moving", help="region of interest of the moving image (any grid over it)")
    r.add_argument("--initial-transform", help="ITK rigid/affine transform file (fixed -> moving), composed into the "
                   "result; the pre-alignment starts from it and keeps a refinement of it only when that fits "
                   "clearly better")
    r.add_argument("--keep-initial-transform", action="store_true",
                   help="use --initial-transform exactly as given (no pre-alignment after it)")
    r.add_argument("--rigid-mask", help="label map on the fixed image: each labelled region moves rigidly")
    r.add_argument("--local-region", help="mask on the fixed image (> 0 inside, any grid over it) where the anatomy "
                   "changed locally (a lesion grew or shrank): the field is refined there with less smoothing; mark "
                   "the change and 1-2 cm around it (metrics.json refinement.local_region)")
    r.add_argument("--no-local-change", action="store_true",
                   help="without --local-region, a pair that matches before registration except in a few compact "
                        "places has them taken for a local change and refined with less smoothing (a warning says "
                        "where; metrics.json refinement.local_change): this turns that off")
    r.add_argument("--warp-labels", help="a moving label map to warp onto the fixed grid (label-aware)")
    r.add_argument("--weights", help="network weights (default: the shipped weights)")
    r.add_argument("--no-network", action="store_true", help="skip the network (instance optimisation only)")
    r.add_argument("--no-inverse", action="store_true", help="do not compute the inverse transform")
    r.add_argument("--seed", type=whole_number_argument, default=0,
                   help="seed of the pre-alignment's sampling and of torch (0 to 2**32 - 2; default 0): same seed, "
                   "same result")
    r.add_argument("--threads", type=whole_number_argument, default=0,
                   help="CPU threads, kept whatever the load (default: torch's choice, fewer while other programs "
                   "keep the CPUs busy)")
    r.add_argument("--overwrite", action="store_true", help="replace outputs already in the folder")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def cmd_register(args: argparse.Namespace) -> int:
    """Run ``adregnet register`` with parsed arguments; returns the exit code."""
    import torch

    from ..engine import register
    from ..io import read_image, read_label_map, read_landmarks
    from ..io.linear import read_linear_transform

    check_threads(args.threads)
    check_regularization(args.regularization)
    if not 0 <= args.seed <= MAX_SEED:
        raise CLIError(f"--seed must be a whole number from 0 to {MAX_SEED}, got {args.seed}")
    if (args.fixed_landmarks is None) != (args.moving_landmarks is None):
        raise CLIError("give both --fixed-landmarks and --moving-landmarks (pairs match by order), or neither")
    outdir = Path(args.output)
    names = list(OUTPUT_FILES) + ([] if args.no_inverse else list(INVERSE_FILES))
    names += ["warped_labels.nii.gz"] if args.warp_labels else []
    inputs = {"fixed": args.fixed, "moving": args.moving, "fixed_landmarks": args.fixed_landmarks,
              "moving_landmarks": args.moving_landmarks, "mask_fixed": args.mask_fixed,
              "mask_moving": args.mask_moving, "initial_transform": args.initial_transform,
              "rigid_mask": args.rigid_mask, "warp_labels": args.warp_labels, "weights": args.weights,
              "local_region": getattr(args, "local_region", None)}
    stale = check_outputs(outdir, names, inputs.values(), args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Read every input before registering: a wrong file must not cost a whole run.
    fixed = read_image(args.fixed)
    moving = read_image(args.moving)
    fixed_pts = moving_pts = None
    if args.fixed_landmarks:
        fixed_pts = read_landmarks(args.fixed_landmarks, geometry=fixed.geometry)
        moving_pts = read_landmarks(args.moving_landmarks, geometry=moving.geometry)
    mask_fixed = read_label_map(args.mask_fixed) if args.mask_fixed else None
    mask_moving = read_label_map(args.mask_moving) if args.mask_moving else None
    initial = read_linear_transform(args.initial_transform) if args.initial_transform else None
    rigid = read_label_map(args.rigid_mask) if args.rigid_mask else None
    local = read_label_map(inputs["local_region"]) if inputs["local_region"] else None
    labels = read_label_map(args.warp_labels) if args.warp_labels else None
    for mask, option in ((mask_fixed, "--mask-fixed"), (mask_moving, "--mask-moving"), (rigid, "--rigid-mask"),
                         (local, "--local-region")):
        if mask is not None:
            check_mask(mask, option)
    if labels is not None:
        check_label_values(labels, "--warp-labels")
    keep_initial = getattr(args, "keep_initial_transform", False)
    if initial is not None:
        check_initial_transform(initial, fixed, moving, args.initial_transform)
    elif keep_initial:
        raise CLIError("--keep-initial-transform keeps the transform given with --initial-transform; give that too")
    from ..spatial.overlap import physical_overlap

    for image, reference, option in ((labels, moving, "--warp-labels"), (rigid, fixed, "--rigid-mask"),
                                     (local, fixed, "--local-region")):
        if image is not None and physical_overlap(image.geometry, reference.geometry) <= 0:
            raise CLIError(f"{option} {image.name} does not overlap the {'moving' if reference is moving else 'fixed'} "
                           "image in physical space; give a label map drawn on that image")
    extra = {"rigid_regions": rigid} if rigid is not None else {}
    if local is not None:
        extra["local_region"] = local
    if keep_initial:
        extra["prealignment"] = "none"
    contrast = getattr(args, "contrast", "auto")
    if contrast != "auto":
        extra["multimodal"] = contrast == "different"
    bar = _ProgressBar(not args.quiet)
    fixed_threads = os.environ.get("ADREGNET_FIXED_THREADS")
    if args.threads:  # a count given is kept whatever the load: runs repeat byte for byte (engine.cpu_threads)
        os.environ["ADREGNET_FIXED_THREADS"] = "1"
    try:
        result = register(fixed, moving, fixed_landmarks=fixed_pts, moving_landmarks=moving_pts,
                          fixed_mask=mask_fixed, moving_mask=mask_moving, initial_transform=initial,
                          preset=args.preset, quality=args.quality, regularization=args.regularization,
                          device=args.device, progress=bar, seed=args.seed, use_network=not args.no_network,
                          weights=args.weights, compute_inverse=not args.no_inverse,
                          landmarks_guide=not args.landmarks_check_only,
                          sliding=getattr(args, "sliding", "auto"),
                          find_local_change=not getattr(args, "no_local_change", False), **extra)
    finally:
        bar.close()
        if args.threads:  # as it was: main() may run again in this process (a notebook, a batch worker)
            if fixed_threads is None:
                os.environ.pop("ADREGNET_FIXED_THREADS", None)
            else:
                os.environ["ADREGNET_FIXED_THREADS"] = fixed_threads
    with staged_output(outdir, remove=stale) as tmp:
        written = write_outputs(result, tmp, fixed, inputs={k: (str(v) if v else None) for k, v in inputs.items()},
                                labels=labels)
    m = result.metrics
    summary = [f"preset {m['preset']} ({m['preset_reason']})",
               _similarity_line(m),
               f"folds {m['jacobian']['folding_fraction'] * 100:.3f}%",
               f"time {m['timings_s']['total']:.1f} s"]
    if fixed_pts is not None:
        role = "pairs guided the registration" if m["landmarks"]["guided_registration"] else "pairs measured only"
        start = f" ({m['tre_start']['mean']:.2f} through the initial transform)" if "tre_start" in m else ""
        summary.append(f"TRE {m['tre_before']['mean']:.2f}{start} -> {m['tre_after']['mean']:.2f} mm ({role})")
    shown = getattr(args, "shown_warnings", set())
    for w in m.get("warnings", []):
        if w not in shown:  # a warning raised while registering was already printed as it happened
            print(f"warning: {w}", file=sys.stderr)
    print("; ".join(summary))
    print(f"wrote {', '.join(written)} to {outdir}/")
    if stale:
        print(f"removed {', '.join(stale)} of an earlier run (this run does not write them)")
    return 0


def _similarity_line(metrics: dict) -> str:
    """NCC for images of one contrast, normalised mutual information across contrasts."""
    key = "nmi" if metrics.get("multimodal") else "ncc"
    return (f"{key.upper()} {_fmt(metrics['similarity_before'].get(key))} -> "
            f"{_fmt(metrics['similarity_after'].get(key))}")
