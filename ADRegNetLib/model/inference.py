r"""The network's prediction in one or more passes (torch only: used by the engine and the trainer's evaluation).

A pass runs the network on the moving image warped by the field so far and composes the new field
with it (``x -> x + s(x) + f(x + s(x))``, normalised units). A pass is kept only when it lowers the
local NCC loss (5-voxel windows) of the warped moving image; otherwise the passes stop.

Coarse to fine: the first pass runs at the network's own resolution (input / ``input_downsample``
of its config, 2 for the default weights), later passes may run finer (``refine_downsample``; 1 =
the input's own grid), where the small motion left after the first pass is visible. On the 24
held-out pairs of the model card (step-28,347 weights) one pass leaves 2.25 mm of 3.84; a second
pass at input / 2 2.07, at / 1.5 1.93, at / 1.25 (what ``instant`` runs on a CPU) 1.82, at full
resolution (on a GPU) 1.75 mm.

A **residual pass** may follow with another network (``residual``: weights of the same architecture
trained on the small motion such passes leave, ``configs/train_residual.json``), under the same
rule: kept only when it lowers the local NCC loss.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

from ..losses.functional import local_ncc
from ..spatial.transforms import compose_flows, resize_flow
from ..spatial.warp import warp_norm

__all__ = ["predict_in_passes"]


@torch.no_grad()
def predict_in_passes(model: torch.nn.Module, fixed: torch.Tensor, moving: torch.Tensor, passes: int = 1,
                      mask: Optional[torch.Tensor] = None, refine_downsample: Optional[float] = None,
                      residual: Optional[tuple[torch.nn.Module, Optional[float]]] = None) -> tuple[torch.Tensor, dict]:
    """The network's field after at most ``passes`` passes.

    Args:
        model: an AD-RegNet network (returns ``{"flow_norm": (1, 3, z, y, x)}``).
        fixed, moving: (1, 1, Z, Y, X) normalised images on one grid.
        passes: most passes (at least 1; the first is always kept).
        mask: optional (1, 1, Z, Y, X) region where the local NCC loss is measured.
        refine_downsample: the network's input downsampling in the passes after the first
            (None: the config's, as in the first pass).
        residual: optional (network, input downsampling or None) of one more pass after those of
            ``model``, by another network (the residual-motion weights).

    Returns:
        (normalised flow (1, 3, Z, Y, X) on the images' grid, info: ``loss_identity``,
        ``loss_prediction`` (local NCC loss before and after), ``passes`` kept (of ``model``),
        ``residual_kept`` (None without ``residual``), ``forward_s``: seconds of each network forward
        pass run, kept or not, the residual pass last).
    """
    shape = tuple(fixed.shape[2:])
    base = float(local_ncc(fixed, moving, window=5, mask=mask))
    # the moving image warped by the field kept so far: the next pass's input (its loss was measured on it)
    flow, warped, loss_kept, kept, forward_s = None, moving, base, 0, []

    def one_pass(net: torch.nn.Module, downsample: Optional[float]) -> tuple[torch.Tensor, torch.Tensor, float]:
        t0 = time.perf_counter()
        out = net(fixed, warped, input_downsample=downsample)
        forward_s.append(round(time.perf_counter() - t0, 4))
        step = resize_flow(out["flow_norm"], shape)
        if flow is not None:  # the new field first, then the one so far
            step = compose_flows(step, flow)
        step_warped = warp_norm(moving, step)
        return step, step_warped, float(local_ncc(fixed, step_warped, window=5, mask=mask))

    for index in range(max(1, int(passes))):
        step, step_warped, loss = one_pass(model, refine_downsample if index > 0 else None)
        if flow is not None and not loss < loss_kept:
            break
        flow, warped, loss_kept, kept = step, step_warped, loss, kept + 1
    residual_kept = None
    if residual is not None:
        step, step_warped, loss = one_pass(*residual)
        residual_kept = loss < loss_kept
        if residual_kept:
            flow, loss_kept = step, loss
    return flow, {"loss_identity": base, "loss_prediction": loss_kept, "passes": kept,
                  "residual_kept": residual_kept, "forward_s": forward_s}
