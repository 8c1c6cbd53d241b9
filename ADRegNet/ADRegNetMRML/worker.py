r"""Child-process entry point: register two image files and write the CLI's output layout.

Run by :class:`ADRegNetMRML.process.ChildProcessRunner` as ``python worker.py FIXED MOVING -o OUT ...``.
Imports only ADRegNetLib (no Slicer, no Qt). Reports ``<filter-progress>`` / ``<filter-comment>``
lines on stdout and ``<filter-error>`` on failure (exit code 2 for bad input, 3 for other errors).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _say(tag: str, text) -> None:
    print(f"<{tag}>{text}</{tag}>", flush=True)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("fixed")
    parser.add_argument("moving")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--fixed-landmarks")
    parser.add_argument("--moving-landmarks")
    parser.add_argument("--fixed-mask")
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--quality", default="balanced")
    parser.add_argument("--regularization", type=float, default=1.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import SimpleITK as sitk

    from ADRegNetLib.engine import RegistrationError, register
    from ADRegNetLib.io.image import from_sitk, to_sitk

    def load_points(path):
        return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2).reshape(-1, 3) if path else None

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    try:
        fixed = from_sitk(sitk.ReadImage(args.fixed), name="fixed")
        moving = from_sitk(sitk.ReadImage(args.moving), name="moving")
        mask = None
        if args.fixed_mask:
            mask = from_sitk(sitk.ReadImage(args.fixed_mask), name="fixed mask", dtype=None)
            mask.array = mask.array > 0
        result = register(
            fixed, moving, fixed_landmarks=load_points(args.fixed_landmarks),
            moving_landmarks=load_points(args.moving_landmarks), fixed_mask=mask, preset=args.preset,
            quality=args.quality, regularization=args.regularization, device=args.device,
            progress=lambda fraction, text: (_say("filter-progress", f"{fraction:.4f}"),
                                             _say("filter-comment", text)),
            seed=args.seed,
        )
    except (RegistrationError, ValueError) as exc:
        _say("filter-error", str(exc).replace("\n", " "))
        return 2
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        _say("filter-error", f"{type(exc).__name__}: {exc}".replace("\n", " "))
        return 3

    _say("filter-comment", "writing results")
    field = sitk.GetImageFromArray(np.moveaxis(result.disp_mm, 0, -1).astype(np.float64), isVector=True)
    result.geometry.apply_to_sitk(field)
    sitk.WriteImage(field, str(out / "displacement.nii.gz"))
    sitk.WriteImage(to_sitk(result.warped, np.float32), str(out / "warped.nii.gz"))
    sitk.WriteImage(to_sitk(result.jacobian, np.float32), str(out / "jacobian.nii.gz"))
    (out / "metrics.json").write_text(json.dumps(result.metrics, default=_json_default, indent=1))
    if result.warped_fixed_landmarks is not None:
        with open(out / "warped_fixed_landmarks.csv", "w") as f:
            f.write("x,y,z\n")
            for p in np.asarray(result.warped_fixed_landmarks, dtype=np.float64).reshape(-1, 3):
                f.write(f"{float(p[0])!r},{float(p[1])!r},{float(p[2])!r}\n")
    _say("filter-progress", "1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
