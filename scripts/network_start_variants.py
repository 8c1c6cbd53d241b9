r"""Can the network's two-pass start replace part of ``balanced``'s schedule? TRE and times per variant.

An experiment behind the model card's ``balanced`` paragraph, not an engine feature: each variant
patches the ``balanced`` quality (``engine.settings.QUALITY_SETTINGS``) and, for "no MIND level",
the engine's optimisation call, then runs ``register()`` on each benchmark case folder given.
``base`` runs the shipped schedule without and with the network (one pass), the others start from
the network's two passes (the second at input / 1.5, as ``instant`` ran them in the fifth session):

* ``refN``: no MIND level, N local-NCC refinement steps; ``refN_sK``: the same with a first refinement
  step K times the default;
* ``halfN_ref10``: N local-NCC steps at half resolution, then 10 at full resolution;
* ``fine2_ref10``, ``fine1_ref8``: the full-resolution MIND level (2 or 1 steps) and the refinement;
* ``n3_*`` (sixth session): three network passes, the later ones at / 1.25, then ``refN`` alone or
  ``hA_fB_refN`` (A half-resolution MIND steps, B full-resolution ones, N refinement steps);
  ``h12_ref8``: the cut schedule without the network.
* ninth session: ``h6_f1_ref14`` / ``h6_ref14`` (without and with the network's one pass) and
  ``n3_h6_f1_ref14``: the MIND levels cut, balanced's 14 refinement steps kept.
* tenth session (step-32,148 weights): ``n2_*`` start from ``instant``'s two passes (the second at
  / 1.25): ``n2_refN`` (no MIND level), ``n2_h4_ref14`` (4 half-resolution MIND steps),
  ``n2_h4_f1_ref14``, ``n2_f2_ref14``; ``n2_refN_sS``: the network's field Gaussian-smoothed
  (sigma S working voxels) before the refinement.

* twelfth session: ``gpu_ref14``, ``gpu3_ref14`` (two or three passes and the residual pass, all at
  full resolution, as on a GPU), ``gpu_f1_ref14`` (then one full-resolution MIND step).

Usage (from the repository root; times are only comparable with nothing else running)::

    .venv/bin/python scripts/network_start_variants.py CASE_DIR [CASE_DIR ...] [--variants base,ref10,...]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import ADRegNetLib.engine.pipeline as pipeline  # noqa: E402
import ADRegNetLib.engine.refinement_stage as refinement_stage  # noqa: E402
import ADRegNetLib.model.checkpoint as checkpoint  # noqa: E402
from ADRegNetLib.engine import register  # noqa: E402
from ADRegNetLib.engine.optimizer import _at_level, level_geometry  # noqa: E402
from ADRegNetLib.engine.refine import RefineSettings  # noqa: E402
from ADRegNetLib.engine.settings import QUALITY_SETTINGS  # noqa: E402
from ADRegNetLib.io import read_image  # noqa: E402
from ADRegNetLib.spatial.filters import gaussian_smooth  # noqa: E402
from benchmarks.cases import Case  # noqa: E402
from benchmarks.evaluate import evaluate_field  # noqa: E402

NO_LEVEL = ((9.0, 0),)  # marker of "no MIND level" (the patched optimisation returns its start)
TWO_PASSES = dict(network_passes=2, network_refine_downsample=1.5)
THREE_PASSES = dict(network_passes=3, network_refine_downsample=1.25)
INSTANT_PASSES = dict(network_passes=2, network_refine_downsample=1.25)
RESIDUAL_PASSES = dict(INSTANT_PASSES, residual_pass=True, residual_downsample=1.25)
GPU_PASSES = dict(network_passes=2, network_refine_downsample=1.0, residual_pass=True, residual_downsample=1.0)
#: name -> (QualitySettings overrides, network on/off runs, half-resolution NCC steps, first-step factor)
VARIANTS = {
    "base": ({}, (False, True), 0, 1.0),
    "ref10": (dict(levels=NO_LEVEL, refine_steps=10, **TWO_PASSES), (True,), 0, 1.0),
    "ref14": (dict(levels=NO_LEVEL, refine_steps=14, **TWO_PASSES), (True,), 0, 1.0),
    "ref10_s2": (dict(levels=NO_LEVEL, refine_steps=10, **TWO_PASSES), (True,), 0, 2.0),
    "ref10_s4": (dict(levels=NO_LEVEL, refine_steps=10, **TWO_PASSES), (True,), 0, 4.0),
    "half10_ref10": (dict(levels=NO_LEVEL, refine_steps=10, **TWO_PASSES), (True,), 10, 1.0),
    "half20_ref10": (dict(levels=NO_LEVEL, refine_steps=10, **TWO_PASSES), (True,), 20, 1.0),
    "fine2_ref10": (dict(levels=((1, 2),), refine_steps=10, **TWO_PASSES), (True,), 0, 1.0),
    "fine1_ref8": (dict(levels=((1, 1),), refine_steps=8, **TWO_PASSES), (True,), 0, 1.0),
    # sixth session: three passes at / 1.25, and the cut schedules with and without the network
    "n3_ref10": (dict(levels=NO_LEVEL, refine_steps=10, **THREE_PASSES), (True,), 0, 1.0),
    "n3_ref12": (dict(levels=NO_LEVEL, refine_steps=12, **THREE_PASSES), (True,), 0, 1.0),
    "n3_h6_f1_ref6": (dict(levels=((2, 6), (1, 1)), refine_steps=6, **THREE_PASSES), (True,), 0, 1.0),
    "n3_h8_f1_ref6": (dict(levels=((2, 8), (1, 1)), refine_steps=6, **THREE_PASSES), (True,), 0, 1.0),
    "n3_h12_ref8": (dict(levels=((2, 12),), refine_steps=8, **THREE_PASSES), (True,), 0, 1.0),
    "n3_h8_ref9": (dict(levels=((2, 8),), refine_steps=9, **THREE_PASSES), (True,), 0, 1.0),
    "h12_ref8": (dict(levels=((2, 12),), refine_steps=8), (False,), 0, 1.0),
    # ninth session: the MIND levels cut, the refinement kept at balanced's 14 steps
    "h6_f1_ref14": (dict(levels=((2, 6), (1, 1)), refine_steps=14), (False, True), 0, 1.0),
    "n3_h6_f1_ref14": (dict(levels=((2, 6), (1, 1)), refine_steps=14, **THREE_PASSES), (True,), 0, 1.0),
    "h6_ref14": (dict(levels=((2, 6),), refine_steps=14), (False, True), 0, 1.0),
    # tenth session: instant's two passes (the second at / 1.25) as the start
    "n2_ref14": (dict(levels=NO_LEVEL, refine_steps=14, **INSTANT_PASSES), (True,), 0, 1.0),
    "n2_ref20": (dict(levels=NO_LEVEL, refine_steps=20, **INSTANT_PASSES), (True,), 0, 1.0),
    "n2_ref28": (dict(levels=NO_LEVEL, refine_steps=28, **INSTANT_PASSES), (True,), 0, 1.0),
    "n2_h4_ref14": (dict(levels=((2, 4),), refine_steps=14, **INSTANT_PASSES), (True,), 0, 1.0),
    "n2_h4_f1_ref14": (dict(levels=((2, 4), (1, 1)), refine_steps=14, **INSTANT_PASSES), (True,), 0, 1.0),
    "n2_f2_ref14": (dict(levels=((1, 2),), refine_steps=14, **INSTANT_PASSES), (True,), 0, 1.0),
    "n2_ref14_s4": (dict(levels=NO_LEVEL, refine_steps=14, **INSTANT_PASSES), (True,), 0, 1.0),
    "n2_ref20_s4": (dict(levels=NO_LEVEL, refine_steps=20, **INSTANT_PASSES), (True,), 0, 1.0),
    "n2_ref20_s8": (dict(levels=NO_LEVEL, refine_steps=20, **INSTANT_PASSES), (True,), 0, 1.0),
    # eleventh session: the residual-motion pass after instant's two passes (at / 1.25), then
    # half-resolution local-NCC steps (a step there costs about an eighth of a full-resolution one)
    "n2r_ref14": (dict(levels=NO_LEVEL, refine_steps=14, **RESIDUAL_PASSES), (True,), 0, 1.0),
    "n2r_s2_ref14": (dict(levels=NO_LEVEL, refine_steps=14, **RESIDUAL_PASSES), (True,), 0, 1.0),
    "n2r_half10_ref10": (dict(levels=NO_LEVEL, refine_steps=10, **RESIDUAL_PASSES), (True,), 10, 1.0),
    "n2r_s2_half10_ref10": (dict(levels=NO_LEVEL, refine_steps=10, **RESIDUAL_PASSES), (True,), 10, 1.0),
    "n2_s4_half10_ref10": (dict(levels=NO_LEVEL, refine_steps=10, **INSTANT_PASSES), (True,), 10, 1.0),
    "n2_s4_half20_ref8": (dict(levels=NO_LEVEL, refine_steps=8, **INSTANT_PASSES), (True,), 20, 1.0),
    # twelfth session: the passes as on a GPU (second and residual at full resolution), three passes
    "gpu_ref14": (dict(levels=NO_LEVEL, refine_steps=14, **GPU_PASSES), (True,), 0, 1.0),
    "gpu3_ref14": (dict(levels=NO_LEVEL, refine_steps=14, **dict(GPU_PASSES, network_passes=3)), (True,), 0, 1.0),
    "gpu_f1_ref14": (dict(levels=((1, 1),), refine_steps=14, **GPU_PASSES), (True,), 0, 1.0),
    # twenty-fifth session (the one-pass start now ends closer than no network on balanced's full schedule):
    # balanced's schedule cut, with and without the network's one pass
    "h6_f1_ref10": (dict(levels=((2, 6), (1, 1)), refine_steps=10), (False, True), 0, 1.0),
    "h8_f1_ref12": (dict(levels=((2, 8), (1, 1)), refine_steps=12), (False, True), 0, 1.0),
    "h12_f1_ref10": (dict(levels=((2, 12), (1, 1)), refine_steps=10), (False, True), 0, 1.0),
    "h6_ref10": (dict(levels=((2, 6),), refine_steps=10), (False, True), 0, 1.0),
    "h12_ref12": (dict(levels=((2, 12),), refine_steps=12), (False, True), 0, 1.0),
    "n2_h6_f1_ref10": (dict(levels=((2, 6), (1, 1)), refine_steps=10, **INSTANT_PASSES), (True,), 0, 1.0),
    "n1_ref20": (dict(levels=NO_LEVEL, refine_steps=20), (True,), 0, 1.0),
    "n1_f1_ref20": (dict(levels=((1, 1),), refine_steps=20), (True,), 0, 1.0),
    "h4_ref20": (dict(levels=((2, 4),), refine_steps=20), (False, True), 0, 1.0),
    "h6_ref20": (dict(levels=((2, 6),), refine_steps=20), (False, True), 0, 1.0),
    "n2r_ref20": (dict(levels=NO_LEVEL, refine_steps=20, **RESIDUAL_PASSES), (True,), 0, 1.0),
}
#: variants whose network field is Gaussian-smoothed (sigma, working voxels) before the optimisation
SMOOTHED = {"n2_ref14_s4": 4.0, "n2_ref20_s4": 4.0, "n2_ref20_s8": 8.0, "n2r_s2_ref14": 2.0, "n2r_s2_half10_ref10": 2.0,
            "n2_s4_half10_ref10": 4.0, "n2_s4_half20_ref8": 4.0}
_state = {"half_steps": 0, "step_factor": 1.0, "smooth": 0.0}
# the refinement is called from engine.refinement_stage since the thirteenth session
_optimize, _refine, _network_stage = pipeline.optimize_field, refinement_stage.refine_field, pipeline.network_stage


def _patched_network_stage(*args, **kw):
    flow, info = _network_stage(*args, **kw)
    if flow is not None and _state["smooth"] > 0:
        flow = gaussian_smooth(flow, _state["smooth"])
    return flow, info


def _patched_optimize(fixed, moving, geometry, settings, init_flow_norm=None, **kw):
    if settings.levels == NO_LEVEL:
        return init_flow_norm, {"levels": []}
    return _optimize(fixed, moving, geometry, settings, init_flow_norm=init_flow_norm, **kw)


def _patched_refine(fixed, moving, geometry, flow, settings, **kw):
    if _state["half_steps"]:
        half = level_geometry(geometry, 2.0)
        f_half, m_half, flow_half = (_at_level(t, half.shape) for t in (fixed, moving, flow))
        coarse = dataclasses.replace(settings, steps=_state["half_steps"], sigma_update=settings.sigma_update / 2,
                                     sigma_field=settings.sigma_field / 2)
        refined, _ = _refine(f_half, m_half, half, flow_half, coarse)
        flow = flow + _at_level(refined - flow_half, geometry.shape)
    settings = dataclasses.replace(settings, step_voxels=RefineSettings().step_voxels * _state["step_factor"])
    return _refine(fixed, moving, geometry, flow, settings, **kw)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", help="benchmark case folders (case.json inside)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--residual-weights", type=Path, default=None,
                        help="residual-motion weights of the n2r_* variants (default: the shipped ones)")
    args = parser.parse_args(argv)
    if args.residual_weights is not None:
        if not args.residual_weights.is_file():
            parser.error(f"no residual weights at {args.residual_weights}")
        checkpoint.default_residual_weights_path = lambda: args.residual_weights
    torch.set_num_threads(args.threads)
    pipeline.optimize_field, refinement_stage.refine_field = _patched_optimize, _patched_refine
    pipeline.network_stage = _patched_network_stage
    shipped = QUALITY_SETTINGS["balanced"]
    print("| case | variant | network | TRE (mm) | network (s) | optimisation (s) | refinement (s) | both (s) |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for index, folder in enumerate(args.cases):
            case = Case.load(folder)
            fixed, moving = read_image(case.fixed_path, name="fixed"), read_image(case.moving_path, name="moving")
            if index == 0:  # untimed: the process's first registration pays about 1 s of start-up
                register(fixed, moving, preset=case.preset, quality="fast", device="cpu", seed=0, compute_inverse=False)
            for name in args.variants.split(","):
                overrides, runs, _state["half_steps"], _state["step_factor"] = VARIANTS[name]
                _state["smooth"] = SMOOTHED.get(name, 0.0)
                pipeline.QUALITY_SETTINGS["balanced"] = dataclasses.replace(shipped, **overrides)
                for use_network in runs:
                    result = register(fixed, moving, preset=case.preset, quality="balanced", device="cpu", seed=0,
                                      use_network=use_network, compute_inverse=False)
                    tre = evaluate_field(case, result.disp_mm)["tre_mean"]
                    t = result.metrics["timings_s"]
                    print(f"| {Path(folder).name} | {name} | {'yes' if use_network else 'no'} | {tre:.3f} | "
                          f"{t.get('network', 0.0):.2f} | {t.get('optimize', 0.0):.2f} | {t.get('refine', 0.0):.2f} | "
                          f"{t.get('optimize', 0.0) + t.get('refine', 0.0):.2f} |", flush=True)
    finally:
        pipeline.QUALITY_SETTINGS["balanced"] = shipped
        pipeline.optimize_field, refinement_stage.refine_field = _optimize, _refine
        pipeline.network_stage = _network_stage


if __name__ == "__main__":
    main()
