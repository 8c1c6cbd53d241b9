r"""SimpleITK peers (always available): diffeomorphic demons (``sitk``) and affine + B-spline (``sitk-bspline``).

Both return the field on the FIXED grid, LPS mm, fixed x -> moving x + u(x) (see :mod:`.common`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .common import PeerResult, field_on_fixed, read_sitk, set_threads, transform_to_field

__all__ = ["run_sitk", "run_sitk_bspline"]


# --------------------------------------------------------------------------- SimpleITK
def run_sitk_bspline(fixed_path, moving_path, out_dir, threads: int = 2, *, grid_spacing_mm: float = 20.0,
                     affine_iterations: int = 200, bspline_iterations: int = 100, sampling: float = 0.1,
                     levels: int = 3, seed: int = 1) -> PeerResult:
    """SimpleITK affine + cubic B-spline registration, Mattes mutual information.

    Args:
        fixed_path, moving_path: image files (any grids; LPS geometry from the headers).
        out_dir: folder for the tool's files (``sitk_transform.h5``).
        threads: ITK threads.
        grid_spacing_mm: B-spline control-point spacing at the finest level.
        affine_iterations, bspline_iterations: iterations per level.
        sampling: fraction of voxels sampled for the metric (random, seeded).
        levels: pyramid levels (shrink 2**k, smoothing 2**k / 2 voxels... down to 0).
        seed: metric sampling seed.

    Returns:
        :class:`PeerResult` with the composed field on the fixed grid.
    """
    set_threads(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed, moving = read_sitk(fixed_path), read_sitk(moving_path)
    shrink = [2 ** k for k in range(levels - 1, -1, -1)]
    smooth = [float(max(s // 2, 0)) for s in shrink]
    t0 = time.perf_counter()

    def method(iterations: int, lbfgs: bool) -> sitk.ImageRegistrationMethod:
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(sampling, seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetShrinkFactorsPerLevel(shrink)
        reg.SetSmoothingSigmasPerLevel(smooth)
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        if lbfgs:
            # LBFGSB cannot follow the parameter count growing between levels (its scales keep the
            # coarse size); L-BFGS (LBFGS2) can.
            reg.SetOptimizerAsLBFGS2(solutionAccuracy=1e-5, numberOfIterations=iterations, hessianApproximateAccuracy=5)
        else:
            reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4,
                                                         numberOfIterations=iterations, relaxationFactor=0.6)
            reg.SetOptimizerScalesFromPhysicalShift()
        return reg

    # 1) affine, initialised at the image centres (geometry), which pure translations need.
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = method(affine_iterations, lbfgs=False)
    reg.SetInitialTransform(init, inPlace=True)
    reg.Execute(fixed, moving)
    affine = sitk.AffineTransform(init)

    # 2) B-spline on top of the affine: fixed x -> affine(bspline(x)).
    extent = np.asarray(fixed.GetSpacing()) * (np.asarray(fixed.GetSize()) - 1)
    final_mesh = np.maximum(np.round(extent / grid_spacing_mm).astype(int), 1)
    coarse_mesh = [int(max(m // 2 ** (levels - 1), 1)) for m in final_mesh]
    bspline = sitk.BSplineTransformInitializer(fixed, coarse_mesh, order=3)
    reg = method(bspline_iterations, lbfgs=True)
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransformAsBSpline(bspline, inPlace=True, scaleFactors=[2 ** k for k in range(levels)])
    reg.Execute(fixed, moving)
    seconds = time.perf_counter() - t0

    composite = sitk.CompositeTransform([affine, bspline])  # applied last-first: affine(bspline(x))
    sitk.WriteTransform(composite, str(out_dir / "sitk_transform.h5"))
    disp = transform_to_field(composite, fixed)

    def transform_points(points: np.ndarray) -> np.ndarray:
        return np.asarray([composite.TransformPoint(tuple(float(v) for v in p)) for p in points])

    return PeerResult(disp, seconds, {"tool": f"SimpleITK {sitk.Version.VersionString()}",
                                      "settings": f"affine+BSpline {grid_spacing_mm:g} mm, MattesMI, {levels} levels"},
                      transform_points)


def run_sitk(fixed_path, moving_path, out_dir, threads: int = 2, *, levels: int = 3,
             iterations: tuple = (50, 40, 20), sigma_vox: float = 3.0, max_step_vox: float = 1.0) -> PeerResult:
    """SimpleITK diffeomorphic demons (symmetric forces), multi-resolution, on the fixed grid.

    The moving image is resampled onto the fixed grid (identity, physical space) and its histogram
    matched to the fixed one (demons compares intensities directly; histogram matching removes the
    global part of an intensity change, not a bias field). The field is estimated coarse to fine
    (shrink 4, 2, 1; Gaussian pre-smoothing) and smoothed with ``sigma_vox`` voxels each step.
    ITK's demons field maps fixed points to moving points, the contract's convention.

    Args:
        fixed_path, moving_path: image files (any grids; LPS geometry from the headers).
        out_dir: folder for the tool's files (``sitk_demons_disp.nii.gz``).
        threads: ITK threads.
        levels: pyramid levels (shrink 2**(levels-1) ... 1).
        iterations: iterations per level, coarse to fine (the last ``levels`` entries are used).
        sigma_vox: Gaussian smoothing of the displacement field (voxels of each level).
        max_step_vox: largest update per iteration (voxels).
    """
    set_threads(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = read_sitk(fixed_path)
    t0 = time.perf_counter()
    moving = sitk.Resample(read_sitk(moving_path), fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    moving = sitk.HistogramMatching(moving, fixed, 256, 15, True)
    iters = list(iterations)[-levels:]
    disp = None
    for level, n_iter in enumerate(iters):
        shrink = 2 ** (levels - 1 - level)
        if shrink > 1:
            sigma_mm = 0.5 * shrink * min(fixed.GetSpacing())
            fs = sitk.Shrink(sitk.SmoothingRecursiveGaussian(fixed, sigma_mm), [shrink] * 3)
            ms = sitk.Shrink(sitk.SmoothingRecursiveGaussian(moving, sigma_mm), [shrink] * 3)
        else:
            fs, ms = fixed, moving
        if disp is None:
            disp = sitk.Image(fs.GetSize(), sitk.sitkVectorFloat64)
            disp.CopyInformation(fs)
        else:  # physical mm vectors: resampling to the finer grid needs no rescaling
            disp = sitk.Resample(disp, fs, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
        demons = sitk.DiffeomorphicDemonsRegistrationFilter()
        demons.SetNumberOfIterations(int(n_iter))
        demons.SetStandardDeviations(float(sigma_vox))
        demons.SetSmoothDisplacementField(True)
        demons.SetUseGradientType(demons.Symmetric)
        demons.SetMaximumUpdateStepLength(float(max_step_vox))
        disp = demons.Execute(fs, ms, disp)
    seconds = time.perf_counter() - t0
    sitk.WriteImage(disp, str(out_dir / "sitk_demons_disp.nii.gz"))
    return PeerResult(field_on_fixed(disp, fixed), seconds,
                      {"tool": f"SimpleITK {sitk.Version.VersionString()}",
                       "settings": f"histogram matching + diffeomorphic demons (symmetric), {levels} levels "
                                   f"{'x'.join(str(i) for i in iters)} it, sigma {sigma_vox:g} vox"})
