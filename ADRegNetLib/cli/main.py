r"""The ``adregnet`` command: ``register``, ``evaluate``, ``train``, ``benchmark``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["main", "build_parser", "OUTPUT_FILES"]

#: files ``adregnet register`` writes (contract, DESIGN.md)
OUTPUT_FILES = ("displacement.nii.gz", "transform.h5", "warped.nii.gz", "jacobian.nii.gz", "metrics.json", "report.png")


class CLIError(Exception):
    """A user error reported as one line, exit code 2."""


def _prepare_output_dir(outdir: Path, overwrite: bool, names: Sequence[str]) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise CLIError(f"output path {outdir} exists and is not a folder; choose another -o")
    existing = [n for n in names if (outdir / n).exists()]
    if existing and not overwrite:
        raise CLIError(f"{outdir} already holds {', '.join(existing)}; choose another -o folder or add --overwrite")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        probe = outdir / ".adregnet-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise CLIError(f"cannot write to the output folder {outdir} ({exc.strerror}); choose a writable -o folder") from None


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


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _fmt(value: Optional[float]) -> str:
    """A metric for the summary line; None (undefined, e.g. NCC of images that do not overlap) as n/a."""
    return "n/a" if value is None else f"{value:.3f}"


def cmd_register(args: argparse.Namespace) -> int:
    import torch

    from ..engine import register
    from ..io import read_image, read_label_map, read_landmarks, write_image, write_displacement_field, write_transform
    from ..io.image import Image
    from ..spatial.warp import warp_image
    from .report import write_report

    if args.threads < 0:
        raise CLIError(f"--threads must be a positive number of CPU threads (0 = torch's choice), got {args.threads}")
    outdir = Path(args.output)
    names = list(OUTPUT_FILES) + (["warped_labels.nii.gz"] if args.warp_labels else [])
    _prepare_output_dir(outdir, args.overwrite, names)
    if args.threads:
        torch.set_num_threads(args.threads)
    fixed = read_image(args.fixed)  # named by the file in messages
    moving = read_image(args.moving)
    if (args.fixed_landmarks is None) != (args.moving_landmarks is None):
        raise CLIError("give both --fixed-landmarks and --moving-landmarks (pairs match by order), or neither")
    fixed_pts = moving_pts = None
    if args.fixed_landmarks:
        fixed_pts = read_landmarks(args.fixed_landmarks, geometry=fixed.geometry)
        moving_pts = read_landmarks(args.moving_landmarks, geometry=moving.geometry)
    mask = None
    if args.mask_fixed:
        mask = read_label_map(args.mask_fixed)
        if mask.geometry.shape != fixed.geometry.shape:
            from ..io import resample_image

            mask = resample_image(mask, fixed.geometry, mode="nearest")
        mask = Image(mask.array > 0, fixed.geometry, "fixed mask")
    # Read the label map before registering: a wrong file must not cost a whole run and leave
    # a half-written output folder behind.
    labels = read_label_map(args.warp_labels) if args.warp_labels else None
    bar = _ProgressBar(not args.quiet)
    try:
        result = register(fixed, moving, fixed_landmarks=fixed_pts, moving_landmarks=moving_pts, fixed_mask=mask,
                          preset=args.preset, quality=args.quality, regularization=args.regularization,
                          device=args.device, progress=bar, seed=args.seed, use_network=not args.no_network,
                          weights=args.weights)
    finally:
        bar.close()
    write_displacement_field(result.disp_mm, result.geometry, outdir / "displacement.nii.gz")
    write_transform(result.disp_mm, result.geometry, outdir / "transform.h5")
    write_image(result.warped, outdir / "warped.nii.gz")
    write_image(result.jacobian, outdir / "jacobian.nii.gz")
    if labels is not None:
        warped_labels = warp_image(torch.from_numpy(labels.array)[None, None], torch.from_numpy(result.disp_mm)[None],
                                   result.geometry, labels.geometry, mode="nearest")[0, 0].numpy()
        write_image(Image(warped_labels, result.geometry, "warped labels"), outdir / "warped_labels.nii.gz")
    from ..engine.register import _resample
    from ..engine.prealign import AffineMap

    before = _resample(moving, fixed.geometry, AffineMap.identity())
    tb = ta = None
    if fixed_pts is not None:
        tb = np.asarray(result.metrics["tre_before"]["per_landmark"])
        ta = np.asarray(result.metrics["tre_after"]["per_landmark"])
    write_report(outdir / "report.png", fixed, before, result.warped, result.jacobian, result.metrics, tb, ta)
    metrics = dict(result.metrics, inputs={"fixed": str(args.fixed), "moving": str(args.moving),
                                           "fixed_landmarks": args.fixed_landmarks, "moving_landmarks": args.moving_landmarks})
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    summary = [f"preset {result.metrics['preset']} ({result.metrics['preset_reason']})",
               f"NCC {_fmt(result.metrics['similarity_before']['ncc'])} -> {_fmt(result.metrics['similarity_after']['ncc'])}",
               f"folds {result.metrics['jacobian']['folding_fraction'] * 100:.3f}%",
               f"time {result.metrics['timings_s']['total']:.1f} s"]
    if fixed_pts is not None:
        summary.append(f"TRE {result.metrics['tre_before']['mean']:.2f} -> {result.metrics['tre_after']['mean']:.2f} mm")
    for w in result.metrics.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print("; ".join(summary))
    print(f"wrote {', '.join(names)} to {outdir}/")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..io import read_displacement_field, read_label_map, read_landmarks, read_transform, transform_points
    from ..metrics import dice, jacobian_stats, tre
    from ..spatial.jacobian import jacobian_determinant
    import torch

    path = Path(args.transform)
    if path.is_dir():
        path = path / "displacement.nii.gz"
    if not path.exists():
        raise CLIError(f"{path} does not exist; give a displacement.nii.gz / transform.h5 or an output folder of adregnet register")
    disp, geometry = (read_transform(path) if path.suffix in (".h5", ".tfm", ".hdf5") else read_displacement_field(path))
    out: dict = {"field": str(path)}
    det = jacobian_determinant(torch.from_numpy(np.asarray(disp, dtype=np.float32))[None], geometry)[0].numpy()
    out["jacobian"] = jacobian_stats(det)
    if args.fixed_landmarks or args.moving_landmarks:
        if not (args.fixed_landmarks and args.moving_landmarks):
            raise CLIError("give both --fixed-landmarks and --moving-landmarks")
        f = read_landmarks(args.fixed_landmarks, geometry=geometry)
        m = read_landmarks(args.moving_landmarks)
        out["tre_before"] = tre(f, m)
        out["tre_after"] = tre(np.asarray(transform_points(disp, geometry, f)), m)
    if args.fixed_labels or args.moving_labels:
        if not (args.fixed_labels and args.moving_labels):
            raise CLIError("give both --fixed-labels and --moving-labels")
        from ..spatial.warp import warp_image

        fl = read_label_map(args.fixed_labels)
        ml = read_label_map(args.moving_labels)
        warped = warp_image(torch.from_numpy(ml.array)[None, None], torch.from_numpy(np.asarray(disp, np.float32))[None],
                            geometry, ml.geometry, mode="nearest")[0, 0].numpy()
        before = warp_image(torch.from_numpy(ml.array)[None, None], None, geometry, ml.geometry, mode="nearest")[0, 0].numpy()
        out["dice_before"] = dice(fl.array, before)
        out["dice_after"] = dice(fl.array, warped)
    text = json.dumps(out, indent=2, default=_json_default)
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..train.cli import train_main

    train_main(args)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from ..benchmark.runner import benchmark_main

    return int(benchmark_main(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    from ..engine.api import PRESETS, QUALITIES

    parser = argparse.ArgumentParser(prog="adregnet", description="AD-RegNet deformable image registration")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("register", help="register MOVING onto FIXED and write the outputs into -o OUTDIR")
    r.add_argument("fixed", help="fixed image (NIfTI, NRRD, MHA or a DICOM folder)")
    r.add_argument("moving", help="moving image")
    r.add_argument("-o", "--output", required=True, help="output folder")
    r.add_argument("--fixed-landmarks", help=".mrk.json, .fcsv, DIR-Lab .txt or CSV (x,y,z LPS mm)")
    r.add_argument("--moving-landmarks", help="the matching moving landmarks (same order)")
    r.add_argument("--preset", default="auto", choices=PRESETS)
    r.add_argument("--quality", default="balanced", choices=QUALITIES)
    r.add_argument("--regularization", type=float, default=1.0, help="> 1 smoother, < 1 more local detail")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda")
    r.add_argument("--mask-fixed", help="region of interest on the fixed image (label map, > 0 inside)")
    r.add_argument("--warp-labels", help="a moving label map to resample onto the fixed grid (nearest neighbour)")
    r.add_argument("--weights", help="network weights (default: the shipped weights)")
    r.add_argument("--no-network", action="store_true", help="skip the network (instance optimisation only)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    r.add_argument("--overwrite", action="store_true", help="replace outputs already in the folder")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_register)

    e = sub.add_parser("evaluate", help="metrics of an existing result against landmarks and/or label maps")
    e.add_argument("transform", help="displacement.nii.gz, transform.h5 or an adregnet register output folder")
    e.add_argument("--fixed-landmarks")
    e.add_argument("--moving-landmarks")
    e.add_argument("--fixed-labels")
    e.add_argument("--moving-labels")
    e.add_argument("-o", "--output", help="write the metrics JSON here too")
    e.set_defaults(func=cmd_evaluate)

    t = sub.add_parser("train", help="train the network (see configs/)")
    try:
        from ..train.cli import add_train_arguments

        add_train_arguments(t)
    except ImportError:  # pragma: no cover - training package missing from a trimmed install
        pass
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("benchmark", help="AD-RegNet against peers on cases with known deformations")
    try:
        from ..benchmark.runner import add_benchmark_arguments

        add_benchmark_arguments(b)
    except ImportError:  # pragma: no cover
        pass
    b.set_defaults(func=cmd_benchmark)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..engine.api import RegistrationCancelled, RegistrationError
    from ..io.image import ImageError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, RegistrationError, ImageError, ValueError, FileNotFoundError) as exc:
        print(f"adregnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RegistrationCancelled as exc:
        print(f"adregnet {args.command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"adregnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
