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
from .register_cmd import CLIError, add_register_arguments, cmd_register

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
    disp, geometry = (read_transform(path) if path.suffix in (".h5", ".tfm", ".hdf5") else read_displacement_field(path))
    out: dict = {"field": str(path)}
    transform = Transform(geometry, np.asarray(disp, dtype=np.float32))
    out["jacobian"] = jacobian_stats(transform.jacobian().array)
    if args.fixed_landmarks or args.moving_landmarks:
        if not (args.fixed_landmarks and args.moving_landmarks):
            raise CLIError("give both --fixed-landmarks and --moving-landmarks")
        f = read_landmarks(args.fixed_landmarks, geometry=geometry)
        m = read_landmarks(args.moving_landmarks)
        out["tre_before"] = tre(f, m)
        out["tre_after"] = tre(transform.map_points(f), m)
    if args.fixed_labels or args.moving_labels:
        if not (args.fixed_labels and args.moving_labels):
            raise CLIError("give both --fixed-labels and --moving-labels")
        fl = read_label_map(args.fixed_labels)
        ml = read_label_map(args.moving_labels)
        out["dice_before"] = dice(fl.array, Transform(geometry).warp(ml, mode="nearest", default=0).array)
        out["dice_after"] = dice(fl.array, transform.warp(ml, mode="nearest", default=0).array)
    text = json.dumps(out, indent=2, default=json_default)
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..train.cli import train_main

    train_main(args)
    return 0


def cmd_warp(args: argparse.Namespace) -> int:
    from .warp import warp_main

    return int(warp_main(args) or 0)


def cmd_batch(args: argparse.Namespace) -> int:
    from ..cohort.cli import batch_main

    return int(batch_main(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adregnet", description="AD-RegNet deformable image registration")
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
    e.add_argument("-o", "--output", help="write the metrics JSON here too")
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
    # Warnings reach the user as one clean line each, never with a source path.
    warnings.showwarning = lambda message, category, *a, **k: print(f"warning: {message}", file=sys.stderr)
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
