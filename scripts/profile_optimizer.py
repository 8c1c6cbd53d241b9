r"""Per-stage profile of the instance optimisers on the inputs ``register()`` gives them.

1. ``capture``: run ``register()`` on a benchmark case (or the demo pair) up to the instance
   optimisation and save exactly what the optimiser receives (working-grid images, geometry,
   initial flow, landmarks, mask) plus the pre-alignment, to ``--cache``;
2. ``profile``: run the previous optimiser (``engine.instance``, loaded from git history since its
   removal) and the new one (``engine.optimizer``) for ``--steps`` steps at the finest level under
   ``torch.profiler`` and print the time per stage (the new optimiser times its stages itself,
   ``info["stage_seconds"]``, also profiler labels ``opt.*``) and per operator; then time the new
   optimiser's recommended schedules (``--schedules``).

Usage (repository root)::

    nice -n 10 .venv/bin/python scripts/profile_optimizer.py --case brain --quality balanced --steps 5

Times on a shared 2-core machine are noisy: both optimisers run in the same process, one after
the other, and the report shows per-step figures of each.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_eval  # noqa: E402  (scripts/speed_eval.py: case and engine helpers)

_previous = speed_eval._previous_optimizer()  # engine.instance, from git history once removed
InstanceOptimizationSettings, instance_optimize = _previous.InstanceOptimizationSettings, _previous.instance_optimize
from ADRegNetLib.engine.optimizer import OptimizerSettings, optimize_field  # noqa: E402
from ADRegNetLib.spatial.geometry import Geometry  # noqa: E402


class _Captured(Exception):
    pass


def capture(case_name: str, quality: str, cache: Path, seed: int = 0) -> Path:
    """Save the optimiser's inputs for ``case_name`` ("demo" = the bundled pair) at ``quality``."""
    out = cache / f"{case_name}_s{seed}_{quality}.pt"
    if out.is_file():
        return out
    mod, called = speed_eval.pipeline_module()
    store: dict = {}

    def fake(fixed, moving, geometry, settings, init_flow_norm=None, fixed_points=None, moving_points=None,
             mask=None, progress=None, should_stop=None):
        store.update(fixed=fixed, moving=moving, geometry=geometry.to_dict(), init=init_flow_norm,
                     fixed_points=fixed_points, moving_points=moving_points, mask=mask,
                     settings=dict(settings.__dict__))
        raise _Captured

    original_prealign = mod.prealign

    def prealign(*args, **kwargs):
        affine, info = original_prealign(*args, **kwargs)
        store["affine"] = (affine.matrix, affine.offset)
        return affine, info

    original_optimize = getattr(mod, called)
    setattr(mod, called, fake)
    mod.prealign = prealign
    try:
        if case_name == "demo":
            from ADRegNetLib.io import read_image, read_landmarks  # noqa: PLC0415
            sample = speed_eval.REPO / "Resources" / "SampleData"
            fixed, moving = read_image(sample / "lung_fixed.nii.gz"), read_image(sample / "lung_moving.nii.gz")
            kwargs = dict(fixed_landmarks=read_landmarks(sample / "lung_fixed_landmarks.csv"),
                          moving_landmarks=read_landmarks(sample / "lung_moving_landmarks.csv"))
            preset = "auto"
        else:
            build_case, _ = speed_eval.case_api()
            case_dir = speed_eval.DEFAULT_CASE_DIR if seed == 0 else speed_eval.DEFAULT_CASE_DIR / f"seed{seed}"
            case = build_case(case_name, case_dir, seed=seed)
            fixed, moving = speed_eval.read_case_images(case)
            kwargs, preset = {}, case.preset
            store["case_dir"] = str(case.directory)
        try:
            speed_eval.register(fixed, moving, preset=preset, quality=quality, device="cpu", seed=0, **kwargs)
        except _Captured:
            pass
    finally:
        setattr(mod, called, original_optimize)
        mod.prealign = original_prealign
    if "fixed" not in store:
        raise RuntimeError("register() did not reach the instance optimisation")
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(store, out)
    return out


def load(path: Path) -> dict:
    data = torch.load(path, weights_only=False)
    data["geometry"] = Geometry.from_dict(data["geometry"])
    return data


def _args(data: dict) -> dict:
    return dict(init_flow_norm=data["init"], fixed_points=data["fixed_points"], moving_points=data["moving_points"],
                mask=data["mask"])


def profile_run(label: str, fn, steps: int) -> dict:
    """Run ``fn`` under the profiler; print its wall time, stage times and top operators."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    print(f"\n=== {label}: {wall:.2f} s wall ({steps} steps at the finest level)")
    info = result[1] if isinstance(result, tuple) else {}
    for key, sec in sorted((info.get("stage_seconds") or {}).items(), key=lambda kv: -kv[1]):
        print(f"  {key:16s} {1000 * sec:9.1f} ms")
    ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)[:10]
    for e in ops:
        print(f"    {e.key:34s} self {e.self_cpu_time_total / 1e3:9.1f} ms  calls {e.count}")
    return info


def schedule_run(data: dict, quality: str) -> None:
    """The new optimiser with the recommended settings of ``quality``: stage and level times."""
    settings = speed_eval.RECOMMENDED[quality]
    t0 = time.perf_counter()
    _, info = optimize_field(data["fixed"], data["moving"], data["geometry"], settings, **_args(data))
    print(f"\n=== new, recommended '{quality}' schedule {settings.levels}: {time.perf_counter() - t0:.2f} s")
    for key, sec in sorted(info["stage_seconds"].items(), key=lambda kv: -kv[1]):
        print(f"  {key:16s} {sec:7.3f} s")
    for level in info["levels"]:
        print(f"  level x{level['factor']} grid {level['grid']}: {level['iterations']} steps, {level['seconds']:.3f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="brain", help="benchmark case name or 'demo' (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", default="balanced")
    parser.add_argument("--steps", type=int, default=5, help="steps at the finest level (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=Path("/work/bench/profile"))
    parser.add_argument("--schedules", default="fast,balanced",
                        help="also time the new optimiser's recommended schedules (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    data = load(capture(args.case, args.quality, args.cache, args.seed))
    g = data["geometry"]
    print(f"working grid {g.size}, init flow: {data['init'] is not None}, "
          f"landmarks: {0 if data['fixed_points'] is None else len(data['fixed_points'])}")
    # finest level only, fixed step count (no early stop) so both do the same number of steps
    old = InstanceOptimizationSettings(levels=((1, args.steps),), similarity="mind")
    new = OptimizerSettings(levels=((1, args.steps),), min_improvement=-1.0)
    warm_up = InstanceOptimizationSettings(levels=((8, 1),), similarity="mind")
    instance_optimize(data["fixed"], data["moving"], g, warm_up)
    profile_run("previous (engine.instance)", lambda: instance_optimize(data["fixed"], data["moving"], g, old,
                                                                        **_args(data)), args.steps)
    profile_run("new (engine.optimizer)", lambda: optimize_field(data["fixed"], data["moving"], g, new, **_args(data)),
                args.steps)
    for quality in args.schedules.split(","):
        if quality:
            schedule_run(data, quality)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
