r"""The pre-alignment's SimpleITK pieces (:mod:`.prealign`): the images bin-averaged to its levels, its
registration method (seeded, one thread; mutual information with all of SimpleITK on one, :func:`one_thread`), the
short rigid fit that compares starts, the rule a start must pass to beat another, and the local structure
(MIND-SSC) mismatch that confirms a fit."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import SimpleITK as sitk
import torch

from ..losses.functional import mind_loss, mind_ssc

__all__ = ["one_thread", "shrunk", "registration_method", "short_rigid_fit", "coarse_pair", "relative_gain",
           "clearly_better", "local_mismatches"]


class _OneThread:
    """How many blocks in this process hold SimpleITK on one thread, and the default they found (registrations
    may run in threads of one process: the last to leave puts the default back)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.before = 0


_ONE_THREAD = _OneThread()


@contextmanager
def one_thread(active: bool = True):
    """SimpleITK's global default of threads set to one for the block (put back after), when ``active``. The
    registration method's own ``SetNumberOfThreads(1)`` leaves part of Mattes mutual information threaded, whose
    partial sums then add in the order the threads finish: an inter-subject pair of two contrasts registered
    (balanced) to fields up to 2.9 mm apart from run to run, a moving image of noise only to fields 21 mm apart.
    Correlation repeats exactly with two threads and keeps them (on one, the lung case's pre-alignment took 2.4 s
    instead of 1.1)."""
    if not active:
        yield
        return
    with _ONE_THREAD.lock:
        if _ONE_THREAD.count == 0:
            _ONE_THREAD.before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        _ONE_THREAD.count += 1
    try:
        yield
    finally:
        with _ONE_THREAD.lock:
            _ONE_THREAD.count -= 1
            if _ONE_THREAD.count == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_ONE_THREAD.before)


def shrunk(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``image`` bin-averaged to about ``spacing_mm``, never coarser than 4 voxels along an axis (BinShrink needs
    whole bins)."""
    factors = [max(1, min(int(round(spacing_mm / s)), n // 4)) for s, n in zip(image.GetSpacing(), image.GetSize())]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def registration_method(same_modality: bool, seed: int, iterations: int, shrink: list[int],
                        sigmas: list[float]) -> sitk.ImageRegistrationMethod:
    """The pre-alignment's registration method: correlation (one contrast) or Mattes mutual information,
    20 % random samples seeded, linear interpolation, regular-step gradient descent, one thread (the
    metric's per-thread partial sums would otherwise be added in an order that depends on the thread
    count, so --threads 1 and 2 would differ; coarse images: cheap)."""
    reg = sitk.ImageRegistrationMethod()
    if same_modality:
        reg.SetMetricAsCorrelation()
    else:
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # SimpleITK reads a sampling seed of 0 as "seed from the wall clock" (sitkWallClock): runs with the
    # default seed=0 sampled differently every time. Shift the user's seed past 0.
    reg.SetMetricSamplingPercentage(0.2, int(seed) + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SetNumberOfThreads(1)
    return reg


def short_rigid_fit(f_coarse: sitk.Image, m_coarse: sitk.Image, start: sitk.Euler3DTransform, same_modality: bool,
                     seed: int) -> tuple[float, sitk.Euler3DTransform] | None:
    """A short rigid fit (30 iterations, one level) from ``start``: (metric, fitted), None where the overlap
    holds too few samples."""
    reg = registration_method(same_modality, seed, 30, [1], [0.0])
    reg.SetInitialTransform(start, inPlace=False)
    try:
        with one_thread(not same_modality):
            fitted = reg.Execute(f_coarse, m_coarse)
    except RuntimeError:  # too few samples in the overlap
        return None
    while isinstance(fitted, sitk.CompositeTransform):  # Execute wraps the fitted Euler3D
        fitted = fitted.GetNthTransform(0)
    return float(reg.GetMetricValue()), sitk.Euler3DTransform(fitted)


def coarse_pair(f: sitk.Image, m: sitk.Image) -> tuple[sitk.Image, sitk.Image, float]:
    """Both images at four times the finer one's spacing (16 mm at the default pre-alignment spacing), and it."""
    coarse_mm = 4.0 * float(min(f.GetSpacing()))
    return shrunk(f, coarse_mm), shrunk(m, coarse_mm), coarse_mm


def relative_gain(value: float, usual: float, same_modality: bool) -> float:
    """How much better a metric value fits than ``usual``: the share of the mismatch 1 - NCC^2 it removes (the
    correlation metric is -NCC^2 >= -1, its mismatch 1 + metric falls to 0 at a perfect fit), or the relative
    improvement of the mutual information (two contrasts)."""
    return (usual - value) / max(1.0 + usual if same_modality else abs(usual), 1e-12)


def clearly_better(value: float, usual: float, same_modality: bool, min_cut: float, min_gain: float) -> bool:
    """``value`` removes ``min_cut`` of ``usual``'s mismatch (one contrast) or gains ``min_gain`` (two)."""
    gain = relative_gain(value, usual, same_modality)
    return bool(np.isfinite(gain)) and gain >= (min_cut if same_modality else min_gain)


def local_mismatches(fixed: sitk.Image, moving: sitk.Image, transforms: list[sitk.Transform],
                      mask: sitk.Image | None) -> list[float]:
    """MIND-SSC mismatch (the deformable stage's own similarity) of ``moving`` through each transform on ``fixed``'s grid."""
    def volume(image: sitk.Image) -> torch.Tensor:
        return torch.from_numpy(sitk.GetArrayFromImage(image).astype(np.float32))[None, None]

    fixed_mind = mind_ssc(volume(fixed))
    region = None if mask is None else (volume(mask) > 0).float()
    return [float(mind_loss(fixed_mind, mind_ssc(volume(sitk.Resample(moving, fixed, t, sitk.sitkLinear, 0.0))), region))
            for t in transforms]
