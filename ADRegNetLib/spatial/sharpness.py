r"""How much sharper one image is than the other, measured from their content (not their voxel size).

Two images of one anatomy can differ in sharpness on the same grid: a scan resampled onto a finer grid than it was
acquired on (a 5 mm-slice CT stored at 1 mm, a volume resampled to the other scan's grid before registration), a
smoother reconstruction kernel, a lower-field MR. The voxel sizes then say nothing (``spatial.resolution`` matches
those), and a similarity that matches edges is pulled by the blurrier image's weaker, wider edges.

A Gaussian blur of ``c`` voxels along each axis multiplies an image's power spectrum by ``exp(-sum c_a^2 w_a^2)``
(``w`` angular frequency, radians per voxel). For each image and axis ``a`` the *decay* is the log of how much the
energy of its forward differences along ``a`` falls when the image is blurred further by ``probe_voxels`` along
``a``: a sharper image decays more. Shifts and small deformations leave the power spectrum almost unchanged and an
intensity gain cancels in the log ratio, so this needs no alignment. If ``B = G_b S`` (same anatomy, ``S`` blurred by
``b``), the decay of ``S`` blurred by ``c`` equals that of ``B`` exactly at ``c = b``: found by bisection, axis by axis,
with the other axes' blurs held (three rounds, since blurring one axis changes what the others' differences see).

Everything runs on a binned power spectrum (``bins`` levels of ``|w|`` per axis), so each trial blur costs a few
thousand multiplications; the whole estimate about 0.1 s on 2 cores at 100^3 (one FFT per image). White noise
reads as sharpness (a flat spectrum on top): the engine acts only from half a voxel up
(``engine.sharpness.SHARPNESS_MATCH_MIN_SIGMA_VOXELS``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from .filters import gaussian_smooth

__all__ = ["edge_taper", "blur_to_match", "sharpness_decay"]


def edge_taper(shape: Sequence[int], width: int = 8, like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(Z, Y, X) window that falls to 0 over ``width`` voxels at each face (raised cosine; a quarter of a short
    axis at most), so that a Fourier transform does not read the grid's faces as edges."""
    axes = []
    for n in shape:
        ramp_len = min(int(width), int(n) // 4)
        t = torch.ones(int(n), dtype=torch.float64)
        if ramp_len > 0:
            ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(ramp_len, dtype=torch.float64) + 0.5) / ramp_len)
            t[:ramp_len] = ramp
            t[int(n) - ramp_len:] = ramp.flip(0)
        axes.append(t)
    window = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return window if like is None else window.to(device=like.device)


class _BinnedSpectrum:
    """An image's power spectrum summed into ``bins`` levels of ``|w|`` per axis (z, y, x)."""

    def __init__(self, volume: torch.Tensor, window: torch.Tensor, bins: int) -> None:
        x = volume[0, 0].to(torch.float64)
        w = window.to(x)
        x = (x - (x * w).sum() / w.sum().clamp_min(1e-12)) * w
        power = torch.fft.rfftn(x).abs().square()
        index = torch.zeros_like(power, dtype=torch.long)
        for dim, n in enumerate(x.shape):
            freq = torch.fft.rfftfreq(n) if dim == 2 else torch.fft.fftfreq(n)
            level = torch.clamp((freq.abs() * 2.0 * bins).long(), max=bins - 1).to(power.device)
            shape = [1, 1, 1]
            shape[dim] = -1
            index = index * bins + level.view(shape)
        self.hist = torch.zeros(bins ** 3, dtype=torch.float64, device=power.device).index_add_(
            0, index.reshape(-1), power.reshape(-1)).view(bins, bins, bins)
        centres = (torch.arange(bins, dtype=torch.float64, device=power.device) + 0.5) / bins * math.pi
        self.omega = torch.meshgrid(centres, centres, centres, indexing="ij")
        self.difference = [4.0 * torch.sin(o / 2.0).square() for o in self.omega]  # forward differences' response

    def energy(self, sigmas: Sequence[float], axis: int) -> float:
        """Energy of the forward differences along ``axis`` after a Gaussian blur of ``sigmas`` (z, y, x) voxels."""
        attenuation = torch.exp(-sum(float(s) ** 2 * o.square() for s, o in zip(sigmas, self.omega)))
        return float((self.hist * self.difference[axis] * attenuation).sum())


def sharpness_decay(spectrum: _BinnedSpectrum, sigmas: Sequence[float], axis: int, probe_voxels: float) -> float:
    """log(energy blurred by ``sigmas``) - log(energy blurred further by ``probe_voxels`` along ``axis``)."""
    further = list(sigmas)
    further[axis] = math.hypot(further[axis], probe_voxels)
    return (math.log(spectrum.energy(sigmas, axis) + 1e-300)
            - math.log(spectrum.energy(further, axis) + 1e-300))


def blur_to_match(fixed: torch.Tensor, moving: torch.Tensor, region: Optional[torch.Tensor] = None,
                  probe_voxels: float = 1.5, max_sigma_voxels: float = 3.0, bins: int = 24,
                  rounds: int = 3, iterations: int = 10) -> tuple[list[float], list[float]]:
    """The Gaussian blur, per axis, that brings the sharper image to the other's sharpness.

    Args:
        fixed, moving: (1, 1, Z, Y, X) the two images on one grid (the working grid; the moving one pre-aligned).
        region: optional (1, 1, Z, Y, X) where both show the anatomy (0/1 or bool; smoothed by 2 voxels here so
            that its edge adds no frequencies of its own); None: the whole grid. The grid's faces are tapered.
        probe_voxels: the further blur whose energy loss measures sharpness.
        max_sigma_voxels: the largest blur returned.
        bins: frequency levels per axis of the binned spectra.
        rounds, iterations: rounds over the three axes, bisection steps per axis.

    Returns:
        (fixed sigmas, moving sigmas): (z, y, x) Gaussian standard deviations in voxels; along each axis at most
        one of the two is above 0 (the sharper image's).
    """
    if fixed.ndim != 5 or fixed.shape[:2] != (1, 1) or moving.shape != fixed.shape:
        raise ValueError(f"fixed and moving must both be (1, 1, Z, Y, X), got {tuple(fixed.shape)} and "
                         f"{tuple(moving.shape)}")
    shape = tuple(fixed.shape[2:])
    window = edge_taper(shape, like=fixed)
    if region is not None:
        if tuple(region.shape) != tuple(fixed.shape):
            raise ValueError(f"region must be {tuple(fixed.shape)}, got {tuple(region.shape)}")
        window = window * gaussian_smooth(region.to(torch.float32), 2.0)[0, 0].to(window)
    spectra = (_BinnedSpectrum(fixed, window, bins), _BinnedSpectrum(moving, window, bins))
    blurs = ([0.0] * 3, [0.0] * 3)
    for _ in range(rounds):
        for axis in range(3):
            if shape[axis] < 8:
                continue
            held = [list(b) for b in blurs]
            for b in held:
                b[axis] = 0.0
            decays = [sharpness_decay(s, b, axis, probe_voxels) for s, b in zip(spectra, held)]
            sharper = 0 if decays[0] > decays[1] else 1
            target, trial = decays[1 - sharper], held[sharper]
            low, high = 0.0, float(max_sigma_voxels)
            for _ in range(iterations):
                trial[axis] = 0.5 * (low + high)
                if sharpness_decay(spectra[sharper], trial, axis, probe_voxels) > target:
                    low = trial[axis]
                else:
                    high = trial[axis]
            blurs[sharper][axis] = 0.5 * (low + high)
            blurs[1 - sharper][axis] = 0.0
    return blurs[0], blurs[1]
