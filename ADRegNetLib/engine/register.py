r"""``register()``: the one registration pipeline every front end calls.

Stages, each its own function: validate -> pre-align (SimpleITK affine) -> resample to the working
grid -> normalise intensities for the preset -> AD-RegNet prediction -> instance optimisation ->
compose with the pre-alignment -> full-resolution field, warped image, Jacobian, metrics.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk
import torch

from ..io.image import Image, to_sitk
from ..io.images import normalize_intensity, validate_image
from ..io.landmarks import check_landmark_pairs
from ..losses.functional import local_ncc
from ..metrics import jacobian_stats, ncc, tre
from ..spatial.flow import flow_norm_to_disp_mm
from ..spatial.geometry import Geometry
from ..spatial.jacobian import jacobian_determinant
from ..spatial.transforms import resize_flow
from ..spatial.warp import warp_image, warp_norm
from ..typing import DeviceLike, ProgressCallback, StopCallback
from .api import PRESETS, QUALITIES, RegistrationCancelled, RegistrationError, RegistrationResult
from .device import resolve_device
from .instance import InstanceOptimizationSettings, instance_optimize
from .prealign import AffineMap, prealign
from .settings import PRESET_SETTINGS, QUALITY_SETTINGS, detect_preset

__all__ = ["register", "working_geometry", "estimate_memory_gb"]

log = logging.getLogger(__name__)

_MODEL_CACHE: dict[tuple[str, str], Any] = {}
#: bytes per working-grid voxel during instance optimisation (images, pyramid, gradients), measured
_BYTES_PER_WORKING_VOXEL = 220
#: bytes per fixed-grid voxel while building the full-resolution outputs (slab-wise Jacobian)
_BYTES_PER_FIXED_VOXEL = 40


class _Stages:
    """Maps per-stage progress onto [0, 1] and checks for cancellation between stages."""

    def __init__(self, progress: Optional[ProgressCallback], should_stop: Optional[StopCallback]) -> None:
        self.progress = progress
        self.should_stop = should_stop
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise RegistrationCancelled("registration cancelled by the user")

    def report(self, fraction: float, text: str) -> None:
        if self.progress is not None:
            self.progress(float(min(max(fraction, 0.0), 1.0)), text)

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._t, 3)
        self._t = now
        self.check()

    def sub(self, start: float, end: float):
        return lambda f, text: self.report(start + (end - start) * f, text)


def estimate_memory_gb(fixed_geometry: Geometry, working: Geometry) -> float:
    """Rough peak memory of a run (GB) from the working and fixed grid sizes."""
    return (working.num_voxels * _BYTES_PER_WORKING_VOXEL + fixed_geometry.num_voxels * _BYTES_PER_FIXED_VOXEL) / 1e9


def working_geometry(fixed_geometry: Geometry, spacing_mm: float, max_voxels: int) -> tuple[Geometry, Optional[str]]:
    """The working grid: the fixed grid at about ``spacing_mm`` (never finer than the fixed image).

    Larger grids than ``max_voxels`` get a coarser spacing, and the returned note says so.

    Returns:
        (working geometry, note or None).
    """
    spacing = np.maximum(fixed_geometry.spacing, spacing_mm)
    work = fixed_geometry.with_spacing(spacing)
    note = None
    if work.num_voxels > max_voxels:
        factor = (work.num_voxels / max_voxels) ** (1.0 / 3.0)
        work = fixed_geometry.with_spacing(spacing * factor)
        note = (f"large input: working at {np.round(work.spacing, 2).tolist()} mm "
                f"({work.size[0]}x{work.size[1]}x{work.size[2]}) to stay within the memory budget")
    return work, note


def _check_settings(preset: str, quality: str, regularization: float) -> None:
    if preset not in PRESETS:
        raise RegistrationError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if quality not in QUALITIES:
        raise RegistrationError(f"unknown quality {quality!r}; choose one of {', '.join(QUALITIES)}")
    if not np.isfinite(regularization) or regularization <= 0:
        raise RegistrationError(f"regularization must be a positive number (1 = default), got {regularization}")


def _resample(image: Image, geometry: Geometry, affine: AffineMap, mode: str = "linear", default: float = 0.0) -> np.ndarray:
    """``image`` sampled at ``affine(x)`` for every voxel x of ``geometry``: (Z, Y, X) float32."""
    ref = sitk.Image(list(geometry.size), sitk.sitkFloat32)
    geometry.apply_to_sitk(ref)
    interp = sitk.sitkNearestNeighbor if mode == "nearest" else sitk.sitkLinear
    out = sitk.Resample(to_sitk(image, np.float32), ref, affine.to_sitk(), interp, float(default), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _load_network(weights: Optional[str | Path], device: torch.device):
    from ..model.checkpoint import default_weights_path, load_model

    path = Path(weights) if weights is not None else default_weights_path()
    if weights is None and not path.is_file():
        return None, f"no network weights at {path}; running instance optimisation only"
    key = (str(path.resolve()), str(device))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(path, device=device).eval()
    return _MODEL_CACHE[key], None


def _network_flow(model, fixed_w: torch.Tensor, moving_w: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(fixed_w, moving_w)
    return resize_flow(out["flow_norm"], tuple(fixed_w.shape[2:]))


def _full_resolution_field(flow_w: torch.Tensor, fixed_geometry: Geometry, affine: AffineMap,
                           slab: int = 32) -> np.ndarray:
    """Total displacement on the fixed grid: u(x) = A(x + d(x)) - x, (3, Z, Y, X) float32 LPS mm."""
    disp = flow_norm_to_disp_mm(resize_flow(flow_w, fixed_geometry.shape), fixed_geometry)[0].cpu().numpy()
    if affine.is_identity():
        return disp.astype(np.float32)
    m = affine.matrix
    out = np.empty_like(disp, dtype=np.float32)
    zs, ys, xs = fixed_geometry.shape
    jj, ii = np.meshgrid(np.arange(ys), np.arange(xs), indexing="ij")
    for z0 in range(0, zs, slab):
        z1 = min(zs, z0 + slab)
        kk = np.arange(z0, z1)[:, None, None] * np.ones((1, ys, xs))
        idx = np.stack([np.broadcast_to(ii, kk.shape), np.broadcast_to(jj, kk.shape), kk], axis=-1).reshape(-1, 3)
        x = fixed_geometry.index_to_physical(idx)  # (P, 3) float64
        d = disp[:, z0:z1].reshape(3, -1).T.astype(np.float64)
        u = (x + d) @ m.T + affine.offset - x
        out[:, z0:z1] = u.T.reshape(3, z1 - z0, ys, xs)
    return out


def _jacobian_slabs(disp: np.ndarray, geometry: Geometry, slab: int = 32) -> np.ndarray:
    """det J on the fixed grid computed in z-slabs (bounded memory), (Z, Y, X) float32."""
    zs = geometry.shape[0]
    out = np.empty(geometry.shape, dtype=np.float32)
    for z0 in range(0, zs, slab):
        z1 = min(zs, z0 + slab)
        lo, hi = max(0, z0 - 1), min(zs, z1 + 1)
        origin = geometry.index_to_physical(np.array([[0, 0, lo]]))[0]
        sub = Geometry((geometry.size[0], geometry.size[1], hi - lo), geometry.spacing, origin, geometry.direction)
        det = jacobian_determinant(torch.from_numpy(np.ascontiguousarray(disp[:, lo:hi]))[None], sub)[0].numpy()
        out[z0:z1] = det[z0 - lo:z0 - lo + (z1 - z0)]
    return out


def register(fixed: Image, moving: Image, *, fixed_landmarks: Optional[np.ndarray] = None,
             moving_landmarks: Optional[np.ndarray] = None, fixed_mask: Optional[Image] = None,
             preset: str = "auto", quality: str = "balanced", regularization: float = 1.0,
             device: DeviceLike = "auto", progress: Optional[ProgressCallback] = None,
             should_stop: Optional[StopCallback] = None, seed: int = 0, instance_optimization: bool = True,
             use_network: bool = True, weights: Optional[str | Path] = None, prealignment: Optional[str] = None,
             max_working_voxels: Optional[int] = None, multimodal: Optional[bool] = None) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` (deformable, diffeomorphic).

    Args:
        fixed: the reference image (its grid is the output grid).
        moving: the image to deform.
        fixed_landmarks, moving_landmarks: optional (K, 3) LPS mm pairs (matched by order); they are
            reported as TRE and pull the registration.
        fixed_mask: optional region of interest on the fixed grid (similarity measured inside).
        preset: "auto", "lung-ct", "brain-mri" or "generic"; "auto" decides and says what it chose
            (``metrics["preset"]``, ``metrics["preset_reason"]``).
        quality: "fast", "balanced" or "best".
        regularization: smoothness multiplier: > 1 smoother, < 1 more local detail.
        device: "auto", "cpu" or "cuda" (a missing GPU falls back to the CPU with a warning).
        progress: progress(fraction in [0, 1], stage text); reaches 1.0 on success.
        should_stop: returns True to cancel; checked between stages and optimisation steps.
        seed: random seed (CPU results are repeatable).
        instance_optimization: run the test-time optimisation (False: network prediction only).
        use_network: use the AD-RegNet network when weights are available.
        weights: a weights file (default: the shipped weights).
        prealignment: "affine", "rigid" or "none" (default from the quality).
        max_working_voxels: cap on the working grid (default from the quality).
        multimodal: images of different modalities (MIND similarity); default: guessed.

    Returns:
        RegistrationResult on the fixed grid.

    Raises:
        RegistrationError / ImageError: bad input, with what is wrong and what to do.
        RegistrationCancelled: the user cancelled; nothing partial is returned.
    """
    stages = _Stages(progress, should_stop)
    stages.report(0.0, "checking inputs")
    t_start = time.perf_counter()
    _check_settings(preset, quality, regularization)
    warnings_: list[str] = []
    for image, role in ((fixed, "fixed"), (moving, "moving")):
        if not isinstance(image, Image):
            raise RegistrationError(f"{role} must be an ADRegNetLib Image (read it with ADRegNetLib.io.read_image)")
        warnings_ += [w for w in (validate_image(image, role=role) or []) if isinstance(w, str)]
    if fixed_mask is not None and fixed_mask.geometry.shape != fixed.geometry.shape:
        raise RegistrationError(f"the fixed mask's grid {fixed_mask.geometry.size} differs from the fixed image's "
                                f"{fixed.geometry.size}; resample the mask onto the fixed image first")
    has_landmarks = fixed_landmarks is not None or moving_landmarks is not None
    if has_landmarks:
        if fixed_landmarks is None or moving_landmarks is None:
            raise RegistrationError("landmarks were given for only one image; give fixed and moving landmarks in pairs")
        fixed_landmarks = np.asarray(fixed_landmarks, dtype=np.float64).reshape(-1, 3)
        moving_landmarks = np.asarray(moving_landmarks, dtype=np.float64).reshape(-1, 3)
        check_landmark_pairs(fixed_landmarks, moving_landmarks, fixed.geometry, moving.geometry)
    torch_device, device_warning = resolve_device(device)
    if device_warning:
        warnings_.append(device_warning)
    model = None
    if use_network:  # load (and check) the weights now: a bad file fails before minutes of work
        model, net_note = _load_network(weights, torch_device)
        if net_note:
            warnings_.append(net_note)
    torch.manual_seed(seed)
    stages.done("validate")

    # ---- preset and normalisation
    reason = "chosen by the user"
    if preset == "auto":
        preset, reason = detect_preset(fixed, moving)
    p = PRESET_SETTINGS[preset]
    q = QUALITY_SETTINGS[quality]
    fixed_is_ct = float(np.percentile(fixed.array[::4, ::4, ::4], 1)) < -500
    moving_is_ct = float(np.percentile(moving.array[::4, ::4, ::4], 1)) < -500
    if multimodal is None:
        multimodal = fixed_is_ct != moving_is_ct
    mask_arr = fixed_mask.array.astype(bool) if fixed_mask is not None else None
    fixed_n = normalize_intensity(fixed, "ct" if fixed_is_ct else p.modality if p.modality != "ct" else "generic",
                                  window=p.ct_window if fixed_is_ct else None, mask=mask_arr)
    moving_n = normalize_intensity(moving, "ct" if moving_is_ct else p.modality if p.modality != "ct" else "generic",
                                   window=p.ct_window if moving_is_ct else None)
    stages.report(0.03, f"preset {preset}: pre-aligning")
    stages.done("normalize")

    # ---- pre-alignment
    mode = prealignment or q.prealign
    affine, prealign_info = prealign(fixed_n, moving_n, mode=mode, fixed_mask=fixed_mask,
                                     iterations=q.prealign_iterations, same_modality=not multimodal, seed=seed,
                                     should_stop=should_stop)
    stages.report(0.15, "resampling to the working grid")
    stages.done("prealign")

    # ---- working grid
    cap = max_working_voxels or q.max_working_voxels
    work, note = working_geometry(fixed.geometry, q.working_spacing_mm, cap)
    if note:
        warnings_.append(note)
    fixed_w_np = _resample(fixed_n, work, AffineMap.identity())
    moving_w_np = _resample(moving_n, work, affine)
    if float(np.count_nonzero(moving_w_np > 0.01)) < 0.01 * moving_w_np.size and float(moving_n.array.max()) > 0.01:
        raise RegistrationError(
            "the moving image does not overlap the fixed image after pre-alignment; check that both scans show "
            "the same anatomy, or give landmark pairs / an initial alignment")
    fixed_w = torch.from_numpy(fixed_w_np)[None, None].to(torch_device)
    moving_w = torch.from_numpy(moving_w_np)[None, None].to(torch_device)
    mask_w = None
    if fixed_mask is not None:
        mask_w = torch.from_numpy(_resample(Image(fixed_mask.array.astype(np.float32), fixed_mask.geometry), work,
                                            AffineMap.identity(), mode="nearest") > 0.5)[None, None].to(torch_device)
    stages.done("resample")

    # ---- network
    flow = None
    network_used = False
    if use_network:
        stages.report(0.2, "AD-RegNet prediction")
        if model is not None:
            candidate = _network_flow(model, fixed_w, moving_w)
            with torch.no_grad():
                base = float(local_ncc(fixed_w, moving_w, window=5, mask=mask_w))
                pred = float(local_ncc(fixed_w, warp_norm(moving_w, candidate), window=5, mask=mask_w))
            # The network is a starting point; keep it only when it improves the similarity.
            if pred < base or not instance_optimization:
                flow, network_used = candidate, True
            else:
                warnings_.append("the network prediction did not improve the similarity; started from the identity")
    stages.done("network")

    # ---- instance optimisation
    if instance_optimization:
        levels = q.levels
        io = InstanceOptimizationSettings(
            levels=levels, similarity="mind" if multimodal else p.similarity,
            sigma_update=1.5 * float(np.sqrt(regularization)), sigma_field=1.0 * regularization,
            step_voxels=q.step_voxels)
        moving_pts_w = affine.inverse_apply(moving_landmarks) if has_landmarks else None
        flow, io_info = instance_optimize(fixed_w, moving_w, work, io, init_flow_norm=flow,
                                          fixed_points=fixed_landmarks, moving_points=moving_pts_w, mask=mask_w,
                                          progress=stages.sub(0.25, 0.9), should_stop=should_stop)
    else:
        io_info = None
        if flow is None:
            flow = torch.zeros((1, 3, *work.shape), dtype=fixed_w.dtype, device=torch_device)
    stages.done("optimize")

    # ---- full-resolution outputs
    stages.report(0.9, "building the full-resolution field")
    disp = _full_resolution_field(flow.float().cpu(), fixed.geometry, affine)
    stages.check()
    moving_t = torch.from_numpy(np.ascontiguousarray(moving.array, dtype=np.float32))[None, None]
    warped = warp_image(moving_t, torch.from_numpy(disp)[None], fixed.geometry, moving.geometry)[0, 0].numpy()
    stages.check()
    det = _jacobian_slabs(disp, fixed.geometry)
    stages.done("outputs")

    # ---- metrics
    before = _resample(moving, fixed.geometry, AffineMap.identity())
    metrics: dict[str, Any] = {
        "preset": preset,
        "preset_reason": reason,
        "quality": quality,
        "regularization": regularization,
        "device": str(torch_device),
        "multimodal": bool(multimodal),
        "network_used": network_used,
        "instance_optimization": io_info,
        "prealignment": {**prealign_info, **affine.to_dict()},
        "working_grid": {"size": list(work.size), "spacing_mm": np.round(work.spacing, 4).tolist()},
        "memory_estimate_gb": round(estimate_memory_gb(fixed.geometry, work), 2),
        "jacobian": jacobian_stats(det, mask=mask_arr),
        "similarity_before": {"ncc": _safe(ncc(fixed.array, before, mask=mask_arr))},
        "similarity_after": {"ncc": _safe(ncc(fixed.array, warped, mask=mask_arr))},
        "warnings": warnings_,
    }
    warped_points = None
    if has_landmarks:
        from ..io.transforms import transform_points

        warped_points = np.asarray(transform_points(disp, fixed.geometry, fixed_landmarks))
        metrics["tre_before"] = tre(fixed_landmarks, moving_landmarks)
        metrics["tre_after"] = tre(warped_points, moving_landmarks)
    stages.done("metrics")
    metrics["timings_s"] = dict(stages.timings, total=round(time.perf_counter() - t_start, 3))
    stages.report(1.0, "done")
    return RegistrationResult(
        disp_mm=disp,
        geometry=fixed.geometry,
        warped=Image(warped.astype(np.float32), fixed.geometry, "warped"),
        jacobian=Image(det, fixed.geometry, "jacobian"),
        metrics=metrics,
        warped_fixed_landmarks=warped_points,
    )


def _safe(value) -> Optional[float]:
    v = float(value)
    return v if np.isfinite(v) else None
