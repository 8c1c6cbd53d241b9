r"""``adregnet register``: read the inputs, call :func:`register`, write the outputs atomically."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from .outputs import INVERSE_FILES, OUTPUT_FILES, check_outputs, staged_output, write_outputs

__all__ = ["add_register_arguments", "cmd_register", "CLIError"]


class CLIError(Exception):
    """A user error reported as one line, exit code 2."""


class _ProgressBar:
    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}] {desc}", file=sys.stderr)

    def __call__(self, fraction: float, text: str) -> None:
        if self.bar is None:
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
    """The options of ``adregnet register`` (also used by ``adregnet batch``)."""
    from ..engine.settings import PRESETS, QUALITIES

    r.add_argument("fixed", help="fixed image (NIfTI, NRRD, MHA or a DICOM folder)")
    r.add_argument("moving", help="moving image")
    r.add_argument("-o", "--output", required=True, help="output folder")
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
    r.add_argument("--regularization", type=float, default=1.0, help="> 1 smoother (and no continuation with less smoothing where the refinement finds local motion), < 1 more local detail")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda")
    r.add_argument("--mask-fixed", help="region of interest of the fixed image (label map > 0 inside, any grid over it)")
    r.add_argument("--mask-moving", help="region of interest of the moving image (any grid over it)")
    r.add_argument("--initial-transform", help="ITK rigid/affine transform file (fixed -> moving), composed into the result")
    r.add_argument("--rigid-mask", help="label map on the fixed image: each labelled region moves rigidly")
    r.add_argument("--warp-labels", help="a moving label map to warp onto the fixed grid (label-aware)")
    r.add_argument("--weights", help="network weights (default: the shipped weights)")
    r.add_argument("--no-network", action="store_true", help="skip the network (instance optimisation only)")
    r.add_argument("--no-inverse", action="store_true", help="do not compute the inverse transform")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    r.add_argument("--overwrite", action="store_true", help="replace outputs already in the folder")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def cmd_register(args: argparse.Namespace) -> int:
    """Run ``adregnet register`` with parsed arguments; returns the exit code."""
    import torch

    from ..engine import register
    from ..io import read_image, read_label_map, read_landmarks
    from ..io.linear import read_linear_transform

    if args.threads < 0:
        raise CLIError(f"--threads must be a positive number of CPU threads (0 = torch's choice), got {args.threads}")
    if (args.fixed_landmarks is None) != (args.moving_landmarks is None):
        raise CLIError("give both --fixed-landmarks and --moving-landmarks (pairs match by order), or neither")
    outdir = Path(args.output)
    names = list(OUTPUT_FILES) + ([] if args.no_inverse else list(INVERSE_FILES))
    names += ["warped_labels.nii.gz"] if args.warp_labels else []
    inputs = {"fixed": args.fixed, "moving": args.moving, "fixed_landmarks": args.fixed_landmarks,
              "moving_landmarks": args.moving_landmarks, "mask_fixed": args.mask_fixed,
              "mask_moving": args.mask_moving, "initial_transform": args.initial_transform,
              "rigid_mask": args.rigid_mask, "warp_labels": args.warp_labels, "weights": args.weights}
    check_outputs(outdir, names, inputs.values(), args.overwrite)
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
    labels = read_label_map(args.warp_labels) if args.warp_labels else None
    from ..spatial.overlap import physical_overlap

    for image, reference, option in ((labels, moving, "--warp-labels"), (rigid, fixed, "--rigid-mask")):
        if image is not None and physical_overlap(image.geometry, reference.geometry) <= 0:
            raise CLIError(f"{option} {image.name} does not overlap the {'moving' if reference is moving else 'fixed'} "
                           "image in physical space; give a label map drawn on that image")
    extra = {"rigid_regions": rigid} if rigid is not None else {}
    contrast = getattr(args, "contrast", "auto")
    if contrast != "auto":
        extra["multimodal"] = contrast == "different"
    bar = _ProgressBar(not args.quiet)
    try:
        result = register(fixed, moving, fixed_landmarks=fixed_pts, moving_landmarks=moving_pts,
                          fixed_mask=mask_fixed, moving_mask=mask_moving, initial_transform=initial,
                          preset=args.preset, quality=args.quality, regularization=args.regularization,
                          device=args.device, progress=bar, seed=args.seed, use_network=not args.no_network,
                          weights=args.weights, compute_inverse=not args.no_inverse,
                          landmarks_guide=not args.landmarks_check_only, **extra)
    finally:
        bar.close()
    with staged_output(outdir) as tmp:
        written = write_outputs(result, tmp, fixed, inputs={k: (str(v) if v else None) for k, v in inputs.items()},
                                labels=labels)
    m = result.metrics
    summary = [f"preset {m['preset']} ({m['preset_reason']})",
               _similarity_line(m),
               f"folds {m['jacobian']['folding_fraction'] * 100:.3f}%",
               f"time {m['timings_s']['total']:.1f} s"]
    if fixed_pts is not None:
        role = "pairs guided the registration" if m["landmarks"]["guided_registration"] else "pairs measured only"
        summary.append(f"TRE {m['tre_before']['mean']:.2f} -> {m['tre_after']['mean']:.2f} mm ({role})")
    for w in m.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print("; ".join(summary))
    print(f"wrote {', '.join(written)} to {outdir}/")
    return 0


def _similarity_line(metrics: dict) -> str:
    """NCC for images of one contrast, normalised mutual information across contrasts."""
    key = "nmi" if metrics.get("multimodal") else "ncc"
    return (f"{key.upper()} {_fmt(metrics['similarity_before'].get(key))} -> "
            f"{_fmt(metrics['similarity_after'].get(key))}")
