r"""The network's stage of ``register()``: the weights loaded (once per file and device), the prediction on the
working grid, and the checks that keep it only where it helps (local NCC, then mutual information)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from ..losses.functional import local_ncc
from ..model.inference import predict_in_passes
from ..spatial.filters import gaussian_smooth
from ..spatial.warp import warp_norm
from .modality import rewindowed_for_network
from .refinement_stage import nmi_check
from .settings import NETWORK_CT_WINDOW, NETWORK_MIN_RELATIVE_GAIN, QUIET_AXIS_LOSS_MARGIN, QUIET_AXIS_SHARE

__all__ = ["load_network", "load_residual_network", "quiet_axes", "network_stage", "predicted_start"]

_MODEL_CACHE: dict[tuple[str, str], Any] = {}


def load_network(weights: Optional[str | Path], device: torch.device):
    """The network (cached per file and device), or (None, note) when no weights are available."""
    from ..model.checkpoint import default_weights_path, load_model

    path = Path(weights) if weights is not None else default_weights_path()
    if weights is None and not path.is_file():
        return None, f"no network weights at {path}; running instance optimisation only"
    key = (str(path.resolve()), str(device))
    if key not in _MODEL_CACHE:
        model = load_model(path, device=device).eval()
        if torch.device(device).type == "cpu":
            # channels-last oneDNN convolutions: the brain benchmark grid's forward at input / 1.25
            # 0.72 -> 0.51 s on 2 cores (same outputs to float rounding); on a GPU unmeasured, left as is
            model = model.to(memory_format=torch.channels_last_3d)
        _MODEL_CACHE[key] = model
    return _MODEL_CACHE[key], None


def load_residual_network(weights: Optional[str | Path], device: torch.device):
    """The residual-motion network beside the default weights (cached), or None.

    Only with the default weights (``weights`` None): it was trained to follow them, not the
    weights a user gives.
    """
    from ..model.checkpoint import default_residual_weights_path

    path = default_residual_weights_path()
    if weights is not None or not path.is_file():
        return None
    return load_network(path, device)[0]


def quiet_axes(*images: torch.Tensor) -> list[int]:
    """Flow channels (0: x, 1: y, 2: z, the working grid's array axes X, Y, Z) along whose axis none of the
    (1, 1, Z, Y, X) images changes much: the mean squared difference of neighbours along it is below
    ``QUIET_AXIS_SHARE`` of the largest along any axis, in every image (noise alone along an axis keeps it
    quiet: a 2-D image repeated over slices with independent noise per slice measures 0.0065)."""
    energies = []
    for image in images:
        volume = image[0, 0]
        energies.append([float(volume.diff(dim=d).square().mean()) if volume.shape[d] > 1 else 0.0
                         for d in (2, 1, 0)])
    return [c for c in range(3) if all(e[c] < QUIET_AXIS_SHARE * max(max(e), 1e-30) for e in energies)]


def network_stage(model, fixed_w: torch.Tensor, moving_w: torch.Tensor, mask_w: Optional[torch.Tensor],
                  always_keep: bool, passes: int = 1, refine_downsample: Optional[float] = None,
                  smooth_voxels: float = 0.0, residual: Optional[tuple] = None) -> tuple[Optional[torch.Tensor], dict]:
    """The network's prediction on the working grid, kept only when it really improves the similarity.

    With ``passes`` > 1 the network runs again on the moving image warped by its prediction so far
    (``model.inference.predict_in_passes``: a pass counts only when it lowers the local NCC loss).

    Args:
        model: the AD-RegNet network.
        fixed_w, moving_w: (1, 1, Z, Y, X) normalised images on the working grid (moving pre-aligned).
        mask_w: optional (1, 1, Z, Y, X) bool region of interest.
        always_keep: keep the prediction whatever it does (the engine never does: every quality,
            instant included, keeps only a prediction that passes the check).
        passes: most network passes (at least 1).
        refine_downsample: the network's input downsampling in the passes after the first (None: as the first).
        smooth_voxels: Gaussian sigma (voxels) smoothing the prediction before the check (0: none); the
            check and the reported loss are then those of the smoothed field.
        residual: optional (residual-motion network, its input downsampling) of a last pass
            (``model.inference.predict_in_passes``).

    Returns:
        (normalised flow (1, 3, Z, Y, X) on the working grid or None, info dict).
    """
    candidate, passed = predict_in_passes(model, fixed_w, moving_w, passes=passes, mask=mask_w,
                                          refine_downsample=refine_downsample, residual=residual)
    base, pred = passed["loss_identity"], passed["loss_prediction"]

    def loss(flow: torch.Tensor) -> float:
        return float(local_ncc(fixed_w, warp_norm(moving_w, flow), window=5, mask=mask_w))

    if smooth_voxels > 0:
        candidate = gaussian_smooth(candidate, smooth_voxels)
        pred = loss(candidate)
    # along an axis the images hardly change along (a 2-D image repeated over slices), the network's motion is
    # left out when the similarity does not need it: there it is invented (twentieth session: 20 slices 3 mm
    # apart, in-plane motion, balanced 0.747 mm, 0.686 of it a uniform shift along the slices; left out 0.169)
    left_out = []
    for channel in quiet_axes(fixed_w, moving_w):
        trial = candidate.clone()
        trial[:, channel] = 0.0
        trial_loss = loss(trial)
        if trial_loss <= pred + QUIET_AXIS_LOSS_MARGIN * abs(pred):
            candidate, pred = trial, trial_loss
            left_out.append("xyz"[channel])
    gain = (base - pred) / max(abs(base), 1e-12)
    info = {"loss_identity": round(base, 6), "loss_prediction": round(pred, 6), "relative_gain": round(gain, 4),
            "passes": passed["passes"], "refine_downsample": refine_downsample, "forward_s": passed["forward_s"],
            "smooth_voxels": smooth_voxels, "residual_kept": passed["residual_kept"], "axes_left_out": left_out}
    # A prediction is a starting point only when it is clearly better than no motion: a small
    # "gain" on identical images is noise, and keeping it would deform them; and when it does not lower the
    # images' mutual information (a CT against flat lungs: local NCC +4.7 %, NMI -7.8 %, 2.57 mm for 1.69 without)
    if always_keep:
        return candidate, dict(info, kept=True)
    if gain < NETWORK_MIN_RELATIVE_GAIN:
        return None, dict(info, kept=False, left_out_because=f"it changed the local similarity by {100 * gain:+.1f}% "
                          f"(a prediction must improve it by {100 * NETWORK_MIN_RELATIVE_GAIN:.0f}%)")
    info["nmi_check"] = check = nmi_check(fixed_w, moving_w, None, candidate, mask_w)
    if check["kept"]:
        return candidate, dict(info, kept=True)
    return None, dict(info, kept=False, left_out_because=(
        f"it lowered the images' normalised mutual information ({check['nmi_start']:.3f} -> "
        f"{check['nmi_after']:.3f}) although the local similarity rose by {100 * gain:.1f}%"))


def predicted_start(models: tuple, fixed_w: torch.Tensor, moving_w: torch.Tensor, mask_w: Optional[torch.Tensor],
                    cts: tuple[bool, bool], ct_window: tuple[float, float], quality, device: torch.device,
                    prediction_only: bool, multimodal: bool) -> tuple[Optional[torch.Tensor], dict, Optional[str]]:
    """The network stage as ``register()`` runs it: CT re-expressed in the window the network was trained on,
    the prediction kept only where :func:`network_stage`'s checks pass (every quality, ``instant`` included).

    Args:
        models: (the network, the residual-motion network or None).
        fixed_w, moving_w, mask_w: as :func:`network_stage`, normalised with ``ct_window`` where ``cts`` says CT.
        cts: (fixed is CT, moving is CT).
        ct_window: the preset's CT window (HU) the working images were normalised with.
        quality: the :class:`settings.QualitySettings` (passes, downsampling, smoothing).
        device: where the models run.
        prediction_only: the prediction is the whole result (``instant``, or no instance optimisation): a
            prediction left out is then worth a warning (otherwise the optimisation starts from the identity,
            as with ``--no-network``, and ``metrics["network"]`` says so).
        multimodal: two contrasts (said in that warning: the network was mostly trained on one).

    Returns:
        (normalised flow (1, 3, Z, Y, X) or None, the info dict with "used", a warning or None).
    """
    model, residual_model = models
    net_f, net_m = fixed_w, moving_w
    if ct_window != NETWORK_CT_WINDOW:
        net_f = rewindowed_for_network(fixed_w, ct_window) if cts[0] else fixed_w
        net_m = rewindowed_for_network(moving_w, ct_window) if cts[1] else moving_w
    flow, info = network_stage(model, net_f, net_m, mask_w, always_keep=False, passes=quality.network_passes,
                               refine_downsample=quality.refine_downsample_on(device),
                               smooth_voxels=quality.network_smooth_voxels,
                               residual=None if residual_model is None else
                               (residual_model, quality.residual_downsample_on(device)))
    info["used"] = flow is not None
    note = None
    if flow is None and prediction_only:
        note = (f"the network prediction was left out: {info['left_out_because']}, so no deformation was applied"
                + (" (two contrasts: the network was mostly trained on one)" if multimodal else "")
                + ": if the images do differ, use --quality fast")
    return flow, info, note
