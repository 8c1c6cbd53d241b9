r"""Speed and accuracy of the instance optimisers, end to end through ``register()``, in one run.

Every registration goes through the engine's ``register()``; only the instance optimisation is
swapped at run time (the module that defines ``register`` gets its optimiser function replaced), so
pre-alignment, resampling, network and outputs are the engine's own. For each case and quality the
previous optimiser (``engine.instance``, method "old") and the new one (``engine.optimizer`` with
:data:`RECOMMENDED` settings, method "new") run back to back, so their times share the machine's
load; compare ratios, not absolute seconds.

Printed per case, quality and method: TRE mean (mm), Dice, folds (%), wall time of ``register()``
and of its optimisation stage. Extra checks: a no-motion pair (the brain fixed image against a
copy with another intensity change: invented motion, mm) and two identical random images (NCC
before/after, mean displacement, mm); the demo pair's time; Greedy's time and TRE when
``picsl-greedy`` is installed (``--greedy``).

Usage (from the repository root, 2 threads)::

    nice -n 10 .venv/bin/python scripts/speed_eval.py --cases brain,lung --qualities fast,balanced --greedy
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.engine.optimizer import OptimizerSettings, optimize_field  # noqa: E402
from ADRegNetLib.io import read_image, read_landmarks  # noqa: E402
from ADRegNetLib.spatial.image import Image  # noqa: E402

#: the per-quality settings recommended for engine/settings.py (regularisation 1)
_COMMON = dict(step_voxels=1.0, sigma_update=5.0, sigma_field=1.5, mind_var_floor=0.03, landmark_fraction=1.0)
RECOMMENDED: dict[str, OptimizerSettings] = {
    "fast": OptimizerSettings(levels=((2, 10), (1, 2)), **_COMMON),
    "balanced": OptimizerSettings(levels=((2, 12), (1, 4)), **_COMMON),
    "best": OptimizerSettings(levels=((2, 20), (1, 8)), **_COMMON),
}
DEFAULT_CASE_DIR = Path("/work/bench/cases")


def case_api():
    """(build_case, evaluate_field) from ``benchmarks`` or, before the move, ``ADRegNetLib.benchmark``."""
    try:
        from benchmarks.cases import build_case  # noqa: PLC0415
        from benchmarks.evaluate import evaluate_field  # noqa: PLC0415
    except ImportError:
        from ADRegNetLib.benchmark.cases import build_case, evaluate_field  # noqa: PLC0415
    return build_case, evaluate_field


#: the previous optimiser's levels per quality (engine.instance; step 0.5 voxel, sigmas 1.5 / 1.0)
OLD_LEVELS = {"fast": ((4, 60), (2, 40), (1, 10)), "balanced": ((4, 80), (2, 60), (1, 30)),
              "best": ((4, 100), (2, 80), (1, 60))}


def pipeline_module():
    """The module that defines the engine's ``register`` and calls the instance optimiser.

    Returns:
        (module, name of the optimiser function it calls: "optimize_field" or "instance_optimize").
    """
    for name in ("ADRegNetLib.engine.pipeline", "ADRegNetLib.engine.register"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if not inspect.isfunction(getattr(mod, "register", None)):
            continue
        for attr in ("optimize_field", "instance_optimize"):
            if hasattr(mod, attr):
                return mod, attr
    raise RuntimeError("cannot find the engine module whose register() calls the instance optimiser")


def _regularization(quality: str, sigma_field: float, reference: float) -> float:
    return float(sigma_field) / float(reference) if reference > 0 else 1.0


#: the last commit that holds the previous optimiser, ADRegNetLib/engine/instance.py (removed in 475ddce)
OLD_OPTIMIZER_COMMIT = "00b8cf9"


def _previous_optimizer():
    """``engine.instance`` if it still exists, else its source from git history, loaded as that module."""
    try:
        return importlib.import_module("ADRegNetLib.engine.instance")
    except ImportError:
        pass
    import subprocess  # noqa: PLC0415
    import types  # noqa: PLC0415

    source = subprocess.run(["git", "show", f"{OLD_OPTIMIZER_COMMIT}:ADRegNetLib/engine/instance.py"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("ADRegNetLib.engine.instance")
    module.__package__ = "ADRegNetLib.engine"
    module.__file__ = f"git:{OLD_OPTIMIZER_COMMIT}:ADRegNetLib/engine/instance.py"
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - this repository's own code
    return module


def old_optimizer(quality: str, called: str) -> Callable:
    """A stand-in for the engine's optimiser call that runs the previous one (``engine.instance``)."""
    previous = _previous_optimizer()
    InstanceOptimizationSettings, instance_optimize = previous.InstanceOptimizationSettings, previous.instance_optimize

    def run(fixed, moving, geometry, settings, **kwargs):
        if called == "instance_optimize":  # the engine already passes the previous optimiser's settings
            return instance_optimize(fixed, moving, geometry, settings, **kwargs)
        from ADRegNetLib.engine.settings import QUALITY_SETTINGS  # noqa: PLC0415
        r = _regularization(quality, settings.sigma_field, QUALITY_SETTINGS[quality].sigma_field)
        old = InstanceOptimizationSettings(levels=OLD_LEVELS[quality], similarity="mind", step_voxels=0.5,
                                           sigma_update=1.5 * r ** 0.5, sigma_field=1.0 * r)
        return instance_optimize(fixed, moving, geometry, old, **kwargs)
    return run


def new_optimizer(quality: str, called: str) -> Callable:
    """A stand-in that runs :func:`optimize_field` with :data:`RECOMMENDED` ``[quality]``.

    The regularisation multiplier the engine folded into the settings it passes scales the
    recommended sigmas the same way (update by sqrt(r), field by r); the engine's feature choice
    (MIND or intensities) is kept.
    """
    recommended = RECOMMENDED[quality]

    def run(fixed, moving, geometry, settings, **kwargs):
        r = float(getattr(settings, "sigma_field", 1.0))
        if called == "optimize_field":
            from ADRegNetLib.engine.settings import QUALITY_SETTINGS  # noqa: PLC0415
            r = _regularization(quality, settings.sigma_field, QUALITY_SETTINGS[quality].sigma_field)
        features = getattr(settings, "features", "mind") if called == "optimize_field" else "mind"
        s = OptimizerSettings(**{**recommended.__dict__, "sigma_update": recommended.sigma_update * r ** 0.5,
                                 "sigma_field": recommended.sigma_field * r, "features": features})
        return optimize_field(fixed, moving, geometry, s, **kwargs)
    return run


@contextmanager
def optimizer_swapped(method: str, quality: str):
    """Within the block, ``register()`` uses the ``method`` optimiser.

    "old": the previous optimiser (``engine.instance``) with its own per-quality levels; "new":
    :func:`optimize_field` with :data:`RECOMMENDED` settings; "engine": whatever the engine calls
    now, with the settings in ``engine/settings.py``.
    """
    mod, called = pipeline_module()
    original = getattr(mod, called)
    if method == "old":
        setattr(mod, called, old_optimizer(quality, called))
    elif method == "new":
        setattr(mod, called, new_optimizer(quality, called))
    elif method != "engine":
        raise ValueError(f"method must be 'old', 'new' or 'engine', got {method!r}")
    try:
        yield
    finally:
        setattr(mod, called, original)


def read_case_images(case) -> tuple[Image, Image]:
    return read_image(case.fixed_path, name="fixed"), read_image(case.moving_path, name="moving")


def run_case(case, quality: str, method: str, evaluate_field) -> dict:
    """One registration of a benchmark case; returns its metrics."""
    fixed, moving = read_case_images(case)
    with optimizer_swapped(method, quality):
        t0 = time.perf_counter()
        result = register(fixed, moving, preset=case.preset, quality=quality, device="cpu", seed=0)
        seconds = time.perf_counter() - t0
    ev = evaluate_field(case, result.disp_mm)
    timings = result.metrics.get("timings_s", {})
    return {"tre": ev["tre_mean"], "dice": ev["dice"], "folds": ev["folds_pct"], "seconds": seconds,
            "optimize_s": timings.get("optimize"), "timings": timings,
            "levels": (result.metrics.get("instance_optimization") or {}).get("levels")}


@contextmanager
def _quiet_stdout():
    """Silence the C++ tools' stdout (file descriptor 1) inside the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def run_greedy(case, work: Path) -> Optional[dict]:
    """Greedy as in the reference table (benchmark peer adapter), or None when not installed."""
    _, evaluate_field = case_api()
    try:
        from benchmarks.peers.external import run_greedy as greedy  # noqa: PLC0415
    except ImportError:
        try:
            from ADRegNetLib.benchmark.peers import run_greedy as greedy  # noqa: PLC0415
        except ImportError:
            return None
    try:
        import picsl_greedy  # noqa: F401,PLC0415
    except ImportError:
        return None
    with _quiet_stdout():  # Greedy prints every iteration
        res = greedy(case.fixed_path, case.moving_path, work / case.name / "greedy", threads=2)
    ev = evaluate_field(case, res.disp_mm, getattr(res, "transform_points", None))
    return {"tre": ev["tre_mean"], "dice": ev["dice"], "folds": ev["folds_pct"], "seconds": res.seconds}


# ------------------------------------------------------------------------------ extra checks
def no_motion_check(case, quality: str, method: str, seed: int = 1) -> float:
    """Mean |u| (mm) inside the fixed mask for the fixed image against a re-contrasted copy of itself."""
    fixed, _ = read_case_images(case)
    rng = np.random.default_rng(seed)
    arr = fixed.array.astype(np.float64)
    hi = float(np.percentile(arr, 99.5)) or 1.0
    img = np.clip(arr / hi, 0, None) ** float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in arr.shape), indexing="ij")
    img = img * np.exp(0.15 * (0.6 * xx - 0.4 * yy + 0.5 * zz * xx))
    img = img + rng.standard_normal(arr.shape) * 0.02
    moving = Image((np.abs(img) * 500.0).astype(np.float32), fixed.geometry, "moving")
    mask = read_image(case.fixed_mask_path).array > 0
    with optimizer_swapped(method, quality):
        result = register(fixed, moving, preset=case.preset, quality=quality, device="cpu", seed=0)
    return float(np.linalg.norm(result.disp_mm, axis=0)[mask].mean())


def identical_check(quality: str, method: str, size: int = 48) -> dict:
    """Two identical smooth random images: NCC before/after and mean |u| (mm)."""
    from ADRegNetLib.metrics import ncc  # noqa: PLC0415
    from ADRegNetLib.spatial.filters import gaussian_smooth  # noqa: PLC0415
    from ADRegNetLib.spatial.geometry import Geometry  # noqa: PLC0415

    gen = torch.Generator().manual_seed(0)
    noise = torch.rand((1, 1, size, size, size), generator=gen)
    arr = gaussian_smooth(noise, 1.5)[0, 0].numpy() * 1000.0
    geom = Geometry((size, size, size), (2.0, 2.0, 2.0))
    img = Image(arr.astype(np.float32), geom, "random")
    with optimizer_swapped(method, quality):
        result = register(img, Image(arr.copy(), geom, "copy"), preset="generic", quality=quality, device="cpu",
                          seed=0)
    return {"ncc_before": float(ncc(arr, arr)), "ncc_after": float(ncc(arr, result.warped.array)),
            "mean_disp_mm": float(np.linalg.norm(result.disp_mm, axis=0).mean())}


def demo_time(quality: str, method: str) -> dict:
    """The demo pair (Resources/SampleData/lung_*) with its landmarks: wall time and TRE."""
    sample = REPO / "Resources" / "SampleData"
    fixed = read_image(sample / "lung_fixed.nii.gz", name="fixed")
    moving = read_image(sample / "lung_moving.nii.gz", name="moving")
    fp = read_landmarks(sample / "lung_fixed_landmarks.csv")
    mp = read_landmarks(sample / "lung_moving_landmarks.csv")
    with optimizer_swapped(method, quality):
        t0 = time.perf_counter()
        result = register(fixed, moving, fixed_landmarks=fp, moving_landmarks=mp, quality=quality, device="cpu")
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tre_after": result.metrics["tre_after"]["mean"],
            "timings": result.metrics.get("timings_s")}


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="brain,lung", help="comma-separated benchmark cases (default: %(default)s)")
    parser.add_argument("--seeds", default="0", help="comma-separated case seeds (default: %(default)s)")
    parser.add_argument("--qualities", default="fast,balanced", help="default: %(default)s")
    parser.add_argument("--methods", default="old,new",
                        help="old (engine.instance), new (engine.optimizer with RECOMMENDED settings), engine "
                             "(as engine/settings.py wires it) (default: %(default)s)")
    parser.add_argument("--case-dir", type=Path, default=DEFAULT_CASE_DIR)
    parser.add_argument("--greedy", action="store_true", help="also run Greedy (picsl-greedy) on each case")
    parser.add_argument("--checks", action="store_true", help="no-motion, identical-images and demo checks")
    parser.add_argument("--json", type=Path, default=None, help="write every result to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    build_case, evaluate_field = case_api()
    qualities = [q for q in args.qualities.split(",") if q]
    methods = [m for m in args.methods.split(",") if m]
    rows: list[dict] = []

    def show(row: dict) -> None:
        rows.append(row)
        keys = ("tre", "dice", "folds", "seconds", "optimize_s")
        vals = "  ".join(f"{k}={row[k]:.3f}" if isinstance(row.get(k), float) else f"{k}={row.get(k)}" for k in keys)
        print(f"[{row['case']}/s{row['seed']}] {row['quality']:>8s} {row['method']:>8s}  {vals}", flush=True)

    for seed in [int(s) for s in args.seeds.split(",") if s]:
        for name in [c for c in args.cases.split(",") if c]:
            case = build_case(name, args.case_dir if seed == 0 else args.case_dir / f"seed{seed}", seed=seed)
            if args.greedy:
                g = run_greedy(case, args.case_dir / "_runs")
                if g is not None:
                    show({"case": name, "seed": seed, "quality": "-", "method": "greedy", **g})
            for quality in qualities:
                for method in methods:
                    show({"case": name, "seed": seed, "quality": quality, "method": method,
                          **run_case(case, quality, method, evaluate_field)})
    if args.checks:
        case = build_case("brain", args.case_dir, seed=0)
        for quality in qualities:
            for method in methods:
                t0 = time.perf_counter()
                nm = no_motion_check(case, quality, method)
                ident = identical_check(quality, method)
                demo = demo_time(quality, method)
                row = {"case": "checks", "quality": quality, "method": method, "no_motion_mm": nm, **ident,
                       "demo_s": demo["seconds"], "demo_tre": demo["tre_after"], "check_s": time.perf_counter() - t0}
                rows.append(row)
                print(f"[checks] {quality:>8s} {method:>8s}  no-motion {nm:.3f} mm; identical: NCC "
                      f"{ident['ncc_before']:.4f} -> {ident['ncc_after']:.4f}, "
                      f"mean |u| {ident['mean_disp_mm']:.4f} mm; demo {demo['seconds']:.2f} s "
                      f"(TRE {demo['tre_after']:.3f} mm)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
