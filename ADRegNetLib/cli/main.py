r"""The ``adregnet`` command: ``register``, ``warp``, ``evaluate``, ``batch``, ``train``."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .outputs import OUTPUT_FILES, OutputError, json_default
from .register_cmd import CLIError, add_register_arguments, check_label_values, cmd_register, output_path

__all__ = ["main", "build_parser", "OUTPUT_FILES"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..io import read_displacement_field, read_label_map, read_landmarks, read_transform
    from ..metrics import dice, jacobian_stats, tre
    from ..spatial.transform import Transform

    path = Path(args.transform)
    if path.is_dir():
        path = path / "displacement.nii.gz"
    if not path.exists():
        raise CLIError(f"{path} does not exist; give a displacement.nii.gz / transform.h5 or an output folder of adregnet register")
    inputs = [path, args.fixed_landmarks, args.moving_landmarks, args.fixed_labels, args.moving_labels,
              args.moving_image]
    if args.output:
        _check_evaluate_output(Path(args.output), [Path(p) for p in inputs if p], args.overwrite)
    disp, geometry = (read_transform(path) if path.suffix in (".h5", ".tfm", ".hdf5") else read_displacement_field(path))
    out: dict = {"field": str(path)}
    transform = Transform(geometry, np.asarray(disp, dtype=np.float32))
    out["jacobian"] = jacobian_stats(transform.jacobian().array)
    if args.fixed_landmarks or args.moving_landmarks:
        if not (args.fixed_landmarks and args.moving_landmarks):
            raise CLIError("give both --fixed-landmarks and --moving-landmarks")
        f = read_landmarks(args.fixed_landmarks, geometry=geometry)
        m = read_landmarks(args.moving_landmarks,
                           geometry=_moving_geometry(path, args.moving_landmarks, args.moving_image))
        out["tre_before"] = tre(f, m)
        out["tre_after"] = tre(transform.map_points(f), m)
    if args.fixed_labels or args.moving_labels:
        if not (args.fixed_labels and args.moving_labels):
            raise CLIError("give both --fixed-labels and --moving-labels")
        fl = read_label_map(args.fixed_labels)
        check_label_values(fl, "--fixed-labels")
        _check_same_grid(fl.geometry, geometry, args.fixed_labels)
        ml = read_label_map(args.moving_labels)
        check_label_values(ml, "--moving-labels")
        before = Transform(geometry).warp(ml, mode="nearest", default=0).array
        after = transform.warp(ml, mode="nearest", default=0).array
        if ml.array.any() and not (before.any() or after.any()):
            raise CLIError(f"--moving-labels {args.moving_labels}: no label lands on the fixed grid, neither as placed "
                           "nor through the transform (the label map lies elsewhere in physical space); give the "
                           "moving image's label map (a header that places it over the moving image)")
        out["dice_before"] = dice(fl.array, before)
        out["dice_after"] = dice(fl.array, after)
    text = json.dumps(out, indent=2, default=json_default)
    if args.output:
        Path(args.output).write_text(text)
    if not (args.quiet and args.output):  # without -o the JSON on stdout is the result
        print(text)
    if not args.quiet:
        print(_evaluate_summary(out), file=sys.stderr)  # the JSON on stdout stays machine-readable
    return 0


def _evaluate_summary(out: dict) -> str:
    """One line a reader takes in at a glance: TRE and Dice before -> after, folds."""
    parts = []
    if "tre_after" in out:
        n = len(out["tre_after"]["per_landmark"])
        parts.append(f"TRE {out['tre_before']['mean']:.2f} -> {out['tre_after']['mean']:.2f} mm "
                     f"(p95 {out['tre_after']['p95']:.2f}, {n} pairs)")
    if "dice_after" in out:
        parts.append(f"Dice {out['dice_before']['mean']:.3f} -> {out['dice_after']['mean']:.3f} "
                     f"({len(out['dice_after']['per_label'])} labels)")
    jac = out["jacobian"]
    parts.append(f"folds {100 * jac['folding_fraction']:.3f}%, det J {jac['min']:.2f} to {jac['max']:.2f}")
    return "; ".join(parts)


def _check_evaluate_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse an ``evaluate -o`` that is a folder, one of the inputs, or (without --overwrite) an existing file."""
    from .outputs import _same_file, file_write_problem

    if output.is_dir():
        raise CLIError(f"-o {output} is a folder; give the name of the JSON file to write")
    for src in inputs:
        if _same_file(output, src):
            raise CLIError(f"-o {output} is the input {src}; choose another file (inputs are never overwritten)")
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise CLIError(f"{output} already exists; choose another -o file or add --overwrite")
    if not output.resolve().parent.is_dir():
        raise CLIError(f"the folder of -o {output} does not exist; create it first")
    problem = file_write_problem(output)
    if problem:
        raise CLIError(problem)


def _moving_geometry(field: Path, landmarks: str, moving_image: Optional[str]):
    """The moving grid for voxel-index landmark files: that of ``--moving-image``, else that of the
    inverse field beside ``field``.

    Raises:
        CLIError: a voxel-index file (DIR-Lab .txt, elastix ``index``) and neither grid at hand.
    """
    from ..io import read_displacement_field, read_image
    from ..io.landmarks import holds_voxel_indices

    if not holds_voxel_indices(landmarks):
        return None
    if moving_image:
        return read_image(moving_image, name=f"--moving-image {moving_image}", dtype=None).geometry
    inverse = field.parent / "displacement_inverse.nii.gz"
    if not inverse.is_file():
        raise CLIError(f"--moving-landmarks {landmarks} holds voxel indices of the moving image (DIR-Lab .txt or an "
                       f"elastix 'index' file), and {field.parent} has no {inverse.name} (on the moving grid) to convert "
                       "them to mm; give --moving-image (the image they were placed on), or the moving landmarks in "
                       "mm (.csv x,y,z LPS, .fcsv or .mrk.json)")
    return read_displacement_field(inverse)[1]


def _check_same_grid(labels, geometry, path: str) -> None:
    """Dice compares voxel by voxel: the fixed label map must lie on the field's (fixed) grid."""
    if not labels.allclose(geometry, atol=1e-3):  # as the header's float32 fields allow
        raise CLIError(f"--fixed-labels {path} is on a grid of {list(labels.size)} voxels at origin "
                       f"{np.round(labels.origin, 2).tolist()} mm, spacing {np.round(labels.spacing, 4).tolist()} mm, "
                       f"but the result's fixed grid is {list(geometry.size)} voxels at origin "
                       f"{np.round(geometry.origin, 2).tolist()} mm, spacing {np.round(geometry.spacing, 4).tolist()} "
                       "mm; Dice compares voxel by voxel: give the label map of the fixed image (on its grid)")


def cmd_train(args: argparse.Namespace) -> int:
    from ..train.cli import train_main

    train_main(args)
    return 0


def cmd_warp(args: argparse.Namespace) -> int:
    from .warp import warp_main

    return int(warp_main(args) or 0)


def cmd_batch(args: argparse.Namespace) -> int:
    from ..cohort.cli import batch_main

    return int(batch_main(args) or 0)  # batch_main checks the settings every pair shares first


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="adregnet", description="AD-RegNet deformable image registration")
    parser.add_argument("--version", action="version", version=f"adregnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("register", help="register MOVING onto FIXED and write the outputs into -o OUTDIR")
    add_register_arguments(r)
    r.set_defaults(func=cmd_register)

    e = sub.add_parser("evaluate", help="metrics of an existing result against landmarks and/or label maps")
    e.add_argument("transform", help="displacement.nii.gz, transform.h5 or an adregnet register output folder")
    e.add_argument("--fixed-landmarks")
    e.add_argument("--moving-landmarks")
    e.add_argument("--fixed-labels")
    e.add_argument("--moving-labels")
    e.add_argument("--moving-image", help="the moving image: its grid turns voxel-index --moving-landmarks (DIR-Lab "
                                          ".txt, elastix 'index') into mm (default: the inverse field's grid)")
    e.add_argument("-o", "--output", type=output_path, help="write the metrics JSON here too")
    e.add_argument("--overwrite", action="store_true", help="replace an existing -o file (never an input)")
    e.add_argument("-q", "--quiet", action="store_true",
                   help="no summary line on stderr; with -o, no JSON on stdout either")
    e.set_defaults(func=cmd_evaluate)

    t = sub.add_parser("train", help="train the network (see configs/)")
    try:
        from ..train.cli import add_train_arguments

        add_train_arguments(t)
    except ImportError:  # pragma: no cover - training package missing from a trimmed install
        pass
    t.set_defaults(func=cmd_train)

    w = sub.add_parser("warp", help="apply a saved result to an image, a label map or points")
    try:
        from .warp import add_warp_arguments

        add_warp_arguments(w)
    except ImportError:  # pragma: no cover - warp module missing from a trimmed install
        pass
    w.set_defaults(func=cmd_warp)

    c = sub.add_parser("batch", help="register a cohort (PAIRS.csv or --atlas) on a Dask cluster")
    try:
        from ..cohort.cli import add_batch_arguments

        add_batch_arguments(c)
    except ImportError:  # Dask is installed only where batch is used
        c.add_argument("rest", nargs=argparse.REMAINDER)
    c.set_defaults(func=cmd_batch)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..engine.api import RegistrationCancelled, RegistrationError
    from ..spatial.image import ImageError

    parser = build_parser()
    args = parser.parse_args(argv)
    # Warnings reach the user as one clean line each, never with a source path, and once: a run's
    # metrics repeat the warnings raised while it ran, and the summary skips those already shown.
    args.shown_warnings = set()

    def show(message, category, *a, **k) -> None:
        args.shown_warnings.add(str(message))
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        print(f"adregnet {args.command}: error: this command needs the Python package {exc.name!r}; "
              f"install it (for batch: pip install -r requirements.txt)", file=sys.stderr)
        return 2
    except (CLIError, OutputError, RegistrationError, ImageError, ValueError, FileNotFoundError) as exc:
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
