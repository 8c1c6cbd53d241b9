r"""Large-input check: register a 512x512x300 CT pair and print wall time and peak memory.

The fixed image is the real chest CT of ../shared/data/lung-ct-thorax resampled onto a
512x512x300 grid (0.95 x 0.7 x 0.94 mm); the moving image is the same scan shifted by a known
translation (3, -2, 4) mm. The engine must finish within the machine's memory by working at a
reduced resolution (it says so in its warnings), and map points by about the known shift.

    .venv/bin/python -m benchmarks.large_input [--quality balanced] [--threads 2]
"""
from __future__ import annotations

import argparse
import resource
import time
from typing import Optional, Sequence

import numpy as np
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.io import read_image, resample_image, transform_points
from ADRegNetLib.numbers import argument_type
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.image import Image

from .sources import default_data_dir

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The check's options; ``--threads`` is read strictly (``1_0`` was 10 to Python's ``int``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_input", description=__doc__.splitlines()[0])
    parser.add_argument("--quality", default="balanced")
    parser.add_argument("--threads", type=argument_type(whole=True, example="2", positive=True), default=2)
    parser.add_argument("--data-dir", default=None, help="the shared real data folder (default: <repo>/../shared/data)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the check; prints the grid, wall time, peak RSS, the recovered shift, warnings and timings."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = default_data_dir() if args.data_dir is None else args.data_dir
    ct = read_image(f"{data_dir}/lung-ct-thorax/thorax_ct.nii.gz", name="thorax")
    g = ct.geometry
    span = g.spacing * (np.asarray(g.size) - 1)
    big = Geometry((512, 512, 300), span / np.array([511, 511, 299]), g.origin, g.direction)
    fixed = resample_image(ct, big, default=-1024)
    shift = np.array([3.0, -2.0, 4.0])
    moving_geom = Geometry(big.size, big.spacing, big.origin + shift, big.direction)
    moving = Image(fixed.array.copy(), moving_geom, "moving")  # same voxels, frame shifted: x -> x + shift
    del ct  # a user's process holds the two images only
    start_gb = _rss_gb()
    reset = _reset_peak()  # the peak then covers register() alone (with the two images it is given)
    t = time.perf_counter()
    result = register(fixed, moving, quality=args.quality, use_network=False, prealignment="none")
    wall = time.perf_counter() - t
    peak_gb = _status_gb("VmHWM:") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    centre = big.center()[None]
    mapped = np.asarray(transform_points(result.disp_mm, big, centre))[0] - centre[0]
    print(f"grid {big.size} ({big.num_voxels / 1e6:.0f} M voxels), quality {args.quality}")
    print(f"wall {wall:.1f} s, peak RSS {peak_gb:.2f} GB ({'during register()' if reset else 'whole process'}; "
          f"{start_gb:.2f} GB before it, the two images included), working grid {result.metrics['working_grid']}")
    print(f"displacement at the centre {np.round(mapped, 2).tolist()} mm (true {shift.tolist()})")
    print(f"warnings: {result.metrics['warnings']}")
    print(f"timings: {result.metrics['timings_s']}")
    return 0


def _status_gb(key: str) -> float:
    """A memory line of /proc/self/status (VmRSS: current, VmHWM: peak), GB; 0 where there is none."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


def _rss_gb() -> float:
    """Current resident memory of this process, GB."""
    return _status_gb("VmRSS:")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
