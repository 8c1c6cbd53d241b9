r"""Child-process entry point: register two image files and write the CLI's output layout.

Run by :class:`ADRegNetMRML.process.ChildProcessRunner` as ``python worker.py FIXED MOVING -o OUT ...``.
Imports only ADRegNetLib (no Slicer, no Qt). Files are read and written through ``ADRegNetLib.io``
and the CLI's own output writer (``ADRegNetLib.cli.outputs.write_outputs``), so the Slicer module
and ``adregnet register`` share one output format. Reports ``<filter-progress>`` /
``<filter-comment>`` lines on stdout and ``<filter-error>`` on failure (exit code 2 for bad input,
3 for other errors).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: the worker's own file besides the CLI outputs: x + u(x) at each fixed landmark (CSV x,y,z LPS mm)
WARPED_LANDMARKS = "warped_fixed_landmarks.csv"
#: the Jacobian again, written only when it has NaN or infinite voxels (read instead of jacobian.nii.gz)
JACOBIAN_NO_VALUE = "jacobian_with_no_value.nrrd"


def _say(tag: str, text) -> None:
    print(f"<{tag}>{text}</{tag}>", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("fixed")
    parser.add_argument("moving")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--fixed-landmarks")
    parser.add_argument("--moving-landmarks")
    parser.add_argument("--fixed-mask")
    parser.add_argument("--moving-mask")
    parser.add_argument("--local-region")
    parser.add_argument("--initial-transform", help="ITK linear transform file, fixed -> moving (LPS)")
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--quality", default="balanced")
    parser.add_argument("--regularization", type=float, default=1.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=JSON",
                        help="further register() keyword argument, value as JSON (repeatable)")
    return parser


def _engine_inputs(args) -> tuple:
    """(fixed, moving, keyword arguments for register) read from the files named in ``args``."""
    import json

    from ADRegNetLib.io import read_image, read_landmarks

    fixed = read_image(args.fixed, name="fixed")
    moving = read_image(args.moving, name="moving")
    kwargs = {}
    if args.fixed_landmarks and args.moving_landmarks:
        kwargs["fixed_landmarks"] = read_landmarks(args.fixed_landmarks)
        kwargs["moving_landmarks"] = read_landmarks(args.moving_landmarks)
    for key, path in (("fixed_mask", args.fixed_mask), ("moving_mask", args.moving_mask),
                      ("local_region", args.local_region)):
        if path:
            mask = read_image(path, name=key.replace("_", " "), dtype=None)
            kwargs[key] = mask.with_array(mask.array > 0)
    if args.initial_transform:
        from ADRegNetLib.io.linear import read_linear_transform

        kwargs["initial_transform"] = read_linear_transform(args.initial_transform)
    for item in args.option:
        name, _, value = item.partition("=")
        kwargs[name] = json.loads(value)
    return fixed, moving, kwargs


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from ADRegNetLib.engine import RegistrationError, register

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    try:
        fixed, moving, kwargs = _engine_inputs(args)
        result = register(
            fixed, moving, preset=args.preset, quality=args.quality, regularization=args.regularization,
            device=args.device, seed=args.seed,
            progress=lambda fraction, text: (_say("filter-progress", f"{fraction:.4f}"), _say("filter-comment", text)),
            **kwargs)
    except (RegistrationError, ValueError) as exc:
        _say("filter-error", str(exc).replace("\n", " "))
        return 2
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        _say("filter-error", f"{type(exc).__name__}: {exc}".replace("\n", " "))
        return 3

    _say("filter-comment", "writing results")
    write_results(result, out, fixed)
    _say("filter-progress", "1.0")
    return 0


def write_results(result, out: Path, fixed) -> None:
    """The CLI's output layout, the warped fixed landmarks and, when the Jacobian has voxels with no determinant,
    ``JACOBIAN_NO_VALUE``: the layout's jacobian.nii.gz stores their NaN and inf too, but ITK's NIfTI reader reads
    them as 0 (the heatmap would paint folds) and ``ADRegNetLib.io.read_image`` refuses such a file; NRRD reads back
    as written."""
    import numpy as np

    from ADRegNetLib.cli.outputs import write_outputs
    from ADRegNetLib.io import write_image, write_landmarks

    write_outputs(result, out, fixed, report=False)
    if result.warped_fixed_landmarks is not None:
        write_landmarks(result.warped_fixed_landmarks, out / WARPED_LANDMARKS)
    if not np.isfinite(result.jacobian.array).all():
        write_image(result.jacobian, out / JACOBIAN_NO_VALUE)


if __name__ == "__main__":
    sys.exit(main())
