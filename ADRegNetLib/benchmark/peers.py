r"""Other registration tools, run on the benchmark's files, with fields in the library's convention.

Every adapter has the signature::

    run_<peer>(fixed_path, moving_path, out_dir, threads=2, **settings) -> PeerResult

and returns the displacement ``disp_mm`` (3, Z, Y, X) float32 on the FIXED grid, LPS mm, (x, y, z)
components, mapping a fixed point x to the moving point x + u(x) (ITK's resampling convention;
see DESIGN.md). Each tool's own transform files are converted here, once, and the direction is
checked on a pure translation (``check_peer`` and ``adregnet benchmark --check-peers``).

Peers:

* ``sitk``: SimpleITK (always there): histogram matching + multi-resolution diffeomorphic demons
  on the fixed grid.
* ``sitk-bspline``: SimpleITK affine (Mattes MI) then a cubic B-spline (Mattes MI, L-BFGS, three
  levels, control points every ~20 mm), composed into one field. On the brain case its affine
  stage made TRE worse (3.8 -> 4.1 mm) and L-BFGS stopped after a few iterations per level, so it
  is not the default SimpleITK peer.
* ``ants``: ANTsPy ``ants.registration(type_of_transform="SyN")`` (antspyx).
* ``elastix``: itk-elastix affine + B-spline (AdvancedMattesMutualInformation).
* ``greedy``: PICSL Greedy (picsl-greedy): affine then deformable, NCC.
* ``convexadam``: ConvexAdam (convexAdam, MIND-SSC features), on the moving image resampled
  onto the fixed grid.

The optional ones are used only when importable: :func:`available_peers` says which, and why not.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

__all__ = ["PEERS", "PeerResult", "available_peers", "check_peer", "run_peer",
           "run_sitk", "run_sitk_bspline", "run_ants", "run_elastix", "run_greedy", "run_convexadam", "make_translation_pair"]


@dataclass
class PeerResult:
    """What a peer returns.

    Attributes:
        disp_mm: (3, Z, Y, X) float32 on the fixed grid, LPS mm, fixed x -> moving x + u(x).
        seconds: wall time of the registration itself (reading/converting files excluded where possible).
        notes: settings used, tool version.
        transform_points: optional exact point mapping (K, 3) -> (K, 3), LPS mm.
    """

    disp_mm: np.ndarray
    seconds: float
    notes: dict = field(default_factory=dict)
    transform_points: Optional[Callable[[np.ndarray], np.ndarray]] = None


# --------------------------------------------------------------------------- helpers
def _read(path) -> sitk.Image:
    return sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)


def _field_from_sitk(disp: sitk.Image, fixed: sitk.Image) -> np.ndarray:
    """(3, Z, Y, X) float32 from an ITK displacement image, resampled onto ``fixed``'s grid if needed."""
    same = (disp.GetSize() == fixed.GetSize()
            and np.allclose(disp.GetSpacing(), fixed.GetSpacing(), atol=1e-5)
            and np.allclose(disp.GetOrigin(), fixed.GetOrigin(), atol=1e-4)
            and np.allclose(disp.GetDirection(), fixed.GetDirection(), atol=1e-6))
    if not same:
        disp = sitk.Resample(sitk.Cast(disp, sitk.sitkVectorFloat64), fixed, sitk.Transform(), sitk.sitkLinear, 0.0,
                             sitk.sitkVectorFloat64)
    arr = sitk.GetArrayFromImage(disp).astype(np.float32)
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0))


def _transform_to_field(transform: sitk.Transform, fixed: sitk.Image) -> np.ndarray:
    """Sample a SimpleITK transform T(x) - x on the fixed grid: (3, Z, Y, X) LPS mm."""
    f = sitk.TransformToDisplacementFieldFilter()
    f.SetReferenceImage(fixed)
    f.SetOutputPixelType(sitk.sitkVectorFloat64)
    return _field_from_sitk(f.Execute(transform), fixed)


def _set_threads(threads: int) -> None:
    threads = max(int(threads), 1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    for var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS",
                "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


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
    _set_threads(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed, moving = _read(fixed_path), _read(moving_path)
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
    disp = _transform_to_field(composite, fixed)

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
    _set_threads(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = _read(fixed_path)
    t0 = time.perf_counter()
    moving = sitk.Resample(_read(moving_path), fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
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
    return PeerResult(_field_from_sitk(disp, fixed), seconds,
                      {"tool": f"SimpleITK {sitk.Version.VersionString()}",
                       "settings": f"histogram matching + diffeomorphic demons (symmetric), {levels} levels "
                                   f"{'x'.join(str(i) for i in iters)} it, sigma {sigma_vox:g} vox"})


# --------------------------------------------------------------------------- ANTs
def run_ants(fixed_path, moving_path, out_dir, threads: int = 2, *, transform: str = "SyN",
             syn_metric: str = "CC", syn_sampling: int = 2, reg_iterations: tuple = (100, 70, 40),
             seed: int = 1) -> PeerResult:
    """ANTsPy ``ants.registration``: affine (MI) + SyN with local cross-correlation (radius 2).

    ANTsPy's "SyN" defaults (Mattes MI, iterations 40x20x0: no iteration at full resolution) gave
    2.7 mm TRE on the brain case; CC with 100x70x40 is the usual setting for intensity-changed pairs.

    The forward transforms (``fwdtransforms``) map fixed points to moving points; they are composed
    into one displacement field on the fixed grid with ``ants.apply_transforms(..., compose=...)``.
    """
    _set_threads(threads)
    os.environ["ANTS_RANDOM_SEED"] = str(seed)
    import ants  # noqa: PLC0415 - optional

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = ants.image_read(str(fixed_path), pixeltype="float")
    moving = ants.image_read(str(moving_path), pixeltype="float")
    t0 = time.perf_counter()
    reg = ants.registration(fixed=fixed, moving=moving, type_of_transform=transform, syn_metric=syn_metric,
                            syn_sampling=syn_sampling, reg_iterations=tuple(reg_iterations),
                            outprefix=str(out_dir / "ants_"), random_seed=seed, verbose=False)
    seconds = time.perf_counter() - t0
    composed = ants.apply_transforms(fixed=fixed, moving=moving, transformlist=reg["fwdtransforms"],
                                     compose=str(out_dir / "ants_composed_"))
    disp = _field_from_sitk(sitk.ReadImage(str(composed)), _read(fixed_path))
    return PeerResult(disp, seconds, {"tool": f"antspyx {getattr(ants, '__version__', '?')}",
                                      "settings": f"{transform} {syn_metric}[{syn_sampling}] "
                                                  f"{'x'.join(str(i) for i in reg_iterations)}"})


# --------------------------------------------------------------------------- elastix
def run_elastix(fixed_path, moving_path, out_dir, threads: int = 2, *, grid_spacing_mm: float = 16.0,
                iterations: int = 250, resolutions: int = 3, seed: int = 1) -> PeerResult:
    """itk-elastix: affine then B-spline, AdvancedMattesMutualInformation, 3 resolutions.

    elastix's transform maps fixed points to moving points; ``transformix`` writes it as a
    deformation field on the fixed grid (physical LPS mm), which is what the contract wants.
    """
    _set_threads(threads)
    import itk  # noqa: PLC0415 - optional

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = itk.imread(str(fixed_path), itk.F)
    moving = itk.imread(str(moving_path), itk.F)
    params = itk.ParameterObject.New()
    affine = params.GetDefaultParameterMap("affine", resolutions)
    bspline = params.GetDefaultParameterMap("bspline", resolutions, grid_spacing_mm)
    for pm in (affine, bspline):
        pm["MaximumNumberOfIterations"] = [str(iterations)]
        pm["RandomSeed"] = [str(seed)]
        pm["NumberOfSpatialSamples"] = ["2048"]
    params.AddParameterMap(affine)
    params.AddParameterMap(bspline)
    t0 = time.perf_counter()
    # itk-elastix 0.25.4 segfaults in the B-spline stage when given number_of_threads=...; the
    # global ITK default (also set through the environment by _set_threads) limits threads safely.
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(max(int(threads), 1))
    _, result_params = itk.elastix_registration_method(fixed, moving, parameter_object=params,
                                                       log_to_console=False, output_directory=str(out_dir))
    seconds = time.perf_counter() - t0
    deformation = itk.transformix_deformation_field(moving, result_params, log_to_console=False)
    arr = np.asarray(itk.array_from_image(deformation), dtype=np.float32)  # (Z, Y, X, 3)
    disp_img = sitk.GetImageFromArray(arr, isVector=True)
    disp_img.SetSpacing(tuple(float(v) for v in deformation.GetSpacing()))
    disp_img.SetOrigin(tuple(float(v) for v in deformation.GetOrigin()))
    disp_img.SetDirection(tuple(float(v) for v in np.asarray(deformation.GetDirection()).reshape(-1)))
    disp = _field_from_sitk(disp_img, _read(fixed_path))
    from importlib.metadata import version  # noqa: PLC0415
    return PeerResult(disp, seconds, {"tool": f"itk-elastix {version('itk-elastix')}",
                                      "settings": f"affine+bspline {grid_spacing_mm:g} mm, AdvancedMattesMI, {resolutions} res, {iterations} it"})


# --------------------------------------------------------------------------- Greedy
def run_greedy(fixed_path, moving_path, out_dir, threads: int = 2, *, iterations: Optional[str] = None,
               metric: str = "NCC 2x2x2", smoothing: str = "2.0vox 0.5vox") -> PeerResult:
    """PICSL Greedy: affine (12 dof) then deformable; the affine and warp are composed with ``-rc``.

    Greedy's warps are ITK displacement fields (LPS mm on the fixed grid) that map fixed points to
    moving points when applied as ``warp, affine`` (the order ``greedy -r`` uses to reslice moving).
    """
    _set_threads(threads)
    from picsl_greedy import Greedy3D  # noqa: PLC0415 - optional

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # This wheel's ITK has no image IO factories registered: pass SimpleITK images in memory.
    fixed, moving = _read(fixed_path), _read(moving_path)
    # Pyramid depth from the image size: NMI affine diverged (and differently from run to run) on a
    # 40x40x32 image with 3 levels, whose coarsest level has 8 voxels across.
    levels = int(min(3, 1 + np.floor(np.log2(max(min(fixed.GetSize()) / 16.0, 1.0)))))
    affine_iters = "x".join(["100", "50", "10"][:levels])
    iterations = iterations or "x".join(["100", "50", "20"][:levels])
    g = Greedy3D()
    t0 = time.perf_counter()
    g.execute(f"-threads {threads} -d 3 -a -dof 12 -i fix mov -ia-image-centers -m NMI -n {affine_iters} -o aff",
              fix=fixed, mov=moving, aff=None)
    g.execute(f"-threads {threads} -d 3 -i fix mov -it aff -m {metric} -n {iterations} -s {smoothing} -sv -o warp",
              warp=None)
    seconds = time.perf_counter() - t0
    g.execute(f"-threads {threads} -d 3 -rf fix -rc comp -r warp aff", comp=None)
    composed = g["comp"]
    sitk.WriteImage(composed, str(out_dir / "greedy_composed.nii.gz"))
    disp = _field_from_sitk(composed, fixed)
    from importlib.metadata import version  # noqa: PLC0415
    return PeerResult(disp, seconds, {"tool": f"picsl-greedy {version('picsl-greedy')}",
                                      "settings": f"affine NMI {affine_iters} + deformable {metric}, {iterations}"})


# --------------------------------------------------------------------------- ConvexAdam
def run_convexadam(fixed_path, moving_path, out_dir, threads: int = 2, *, grid_sp: int = 4, disp_hw: int = 4,
                   niter: int = 80, lambda_weight: float = 1.25) -> PeerResult:
    """ConvexAdam (MIND-SSC, coupled convex + Adam) on the fixed grid.

    ConvexAdam works on arrays on one voxel grid: the moving image is first resampled onto the
    fixed grid (identity, physical space), so the result composes with nothing. Its output is a
    voxel displacement in the array axes, which is turned into LPS mm with the fixed grid's
    direction and spacing.
    """
    _set_threads(threads)
    import torch  # noqa: PLC0415
    from convexAdam.convex_adam_MIND import convex_adam_pt  # noqa: PLC0415 - optional

    torch.set_num_threads(max(int(threads), 1))
    fixed = _read(fixed_path)
    moving = sitk.Resample(_read(moving_path), fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)

    def norm(img: sitk.Image) -> np.ndarray:
        a = sitk.GetArrayFromImage(img).astype(np.float32)
        lo, hi = np.percentile(a, [0.5, 99.5])
        return np.ascontiguousarray(np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1).transpose(2, 1, 0))  # (X, Y, Z)

    t0 = time.perf_counter()
    disp_vox = convex_adam_pt(norm(fixed), norm(moving), grid_sp=grid_sp, disp_hw=disp_hw, selected_niter=niter,
                              lambda_weight=lambda_weight, dtype=torch.float32, device=torch.device("cpu"))
    seconds = time.perf_counter() - t0
    disp_vox = np.asarray(disp_vox, dtype=np.float64)  # (X, Y, Z, 3), voxel units along x, y, z
    m = np.asarray(fixed.GetDirection()).reshape(3, 3) @ np.diag(fixed.GetSpacing())
    disp = np.einsum("ij,xyzj->izyx", m, disp_vox).astype(np.float32)
    from importlib.metadata import version  # noqa: PLC0415
    return PeerResult(np.ascontiguousarray(disp), seconds,
                      {"tool": f"convexAdam {version('convexAdam')}",
                       "settings": f"MIND-SSC grid_sp={grid_sp} disp_hw={disp_hw} niter={niter}"})


# --------------------------------------------------------------------------- registry
PEERS: dict[str, tuple[Callable[..., PeerResult], Optional[str]]] = {
    "sitk": (run_sitk, None),
    "sitk-bspline": (run_sitk_bspline, None),
    "ants": (run_ants, "ants"),
    "elastix": (run_elastix, "itk"),
    "greedy": (run_greedy, "picsl_greedy"),
    "convexadam": (run_convexadam, "convexAdam"),
}


def available_peers() -> dict[str, Optional[str]]:
    """Map each peer to None when usable, else the reason (what to install)."""
    import importlib  # noqa: PLC0415

    hints = {"ants": "antspyx", "elastix": "itk-elastix", "greedy": "picsl-greedy", "convexadam": "convexAdam"}
    out: dict[str, Optional[str]] = {}
    for name, (_, module) in PEERS.items():
        if module is None:
            out[name] = None
            continue
        try:
            importlib.import_module(module)
            if name == "elastix":
                import itk  # noqa: PLC0415

                if not hasattr(itk, "elastix_registration_method"):
                    raise ImportError("itk is installed without itk-elastix")
            out[name] = None
        except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
            out[name] = (f"not importable ({type(exc).__name__}: {exc}); install it with "
                         f"`pip install -c requirements.txt -r requirements-peers.txt` ({hints[name]})")
    return out


def run_peer(name: str, fixed_path, moving_path, out_dir, threads: int = 2, **settings) -> PeerResult:
    """Run the peer called ``name`` (see :data:`PEERS`)."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; expected one of {', '.join(PEERS)}")
    return PEERS[name][0](fixed_path, moving_path, out_dir, threads, **settings)


# --------------------------------------------------------------------------- convention check
def make_translation_pair(out_dir, shift_mm=(3.0, -2.0, 4.0), size: int = 40, spacing: float = 2.0,
                          seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    """A fixed/moving pair related by a pure translation, for checking a peer's direction convention.

    The moving image is the fixed one shifted so that the fixed point x matches the moving point
    x + shift (the contract's u(x) = shift). The grids are oblique (10 degrees about z) with
    anisotropic spacing so that frame mistakes show too.

    Returns:
        (fixed_path, moving_path, shift as (3,) LPS mm).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shift = np.asarray(shift_mm, dtype=np.float64)
    a = np.deg2rad(10.0)
    direction = np.asarray([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    spacing_xyz = np.asarray([spacing, spacing, spacing * 1.25])
    size_xyz = np.asarray([size, size, int(size * 0.8)])
    origin = -direction @ (spacing_xyz * (size_xyz - 1) / 2)
    # A smooth random "anatomy": blobs defined in physical space, so it can be sampled anywhere.
    centres = rng.uniform(-0.3, 0.3, size=(12, 3)) * spacing_xyz * size_xyz
    radii = rng.uniform(4.0, 9.0, size=12)
    weights = rng.uniform(0.3, 1.0, size=12)

    def anatomy(points: np.ndarray) -> np.ndarray:
        val = np.zeros(len(points))
        for c, r, w in zip(centres, radii, weights):
            val += w * np.exp(-np.sum((points - c) ** 2, axis=1) / (2 * r * r))
        return val

    def grid_points(org):
        zz, yy, xx = np.meshgrid(*(np.arange(n) for n in size_xyz[::-1]), indexing="ij")
        idx = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1).astype(np.float64)
        return idx @ (direction @ np.diag(spacing_xyz)).T + org

    paths = []
    for name, org, offset in (("fixed", origin, 0.0), ("moving", origin + 0.5 * shift, shift)):
        # moving(y) = anatomy(y - shift): then moving(x + shift) = anatomy(x) = fixed(x).
        vals = anatomy(grid_points(org) - offset).reshape(tuple(size_xyz[::-1])).astype(np.float32)
        img = sitk.GetImageFromArray(vals)
        img.SetSpacing(tuple(spacing_xyz))
        img.SetOrigin(tuple(org))
        img.SetDirection(tuple(direction.reshape(-1)))
        path = out_dir / f"{name}.nii.gz"
        sitk.WriteImage(img, str(path))
        paths.append(path)
    return paths[0], paths[1], shift


def check_peer(name: str, work_dir, threads: int = 2, shift_mm=(3.0, -2.0, 4.0), **settings) -> dict:
    """Run a peer on :func:`make_translation_pair` and compare its field with the true shift.

    Returns:
        dict with ``truth`` (3,), ``recovered`` (3,) = median of the field over the central half of
        the fixed grid, ``error_mm`` = |recovered - truth|, ``seconds``.
    """
    work_dir = Path(work_dir)
    fixed_path, moving_path, shift = make_translation_pair(work_dir / "pair", shift_mm)
    res = run_peer(name, fixed_path, moving_path, work_dir / name, threads, **settings)
    z, y, x = res.disp_mm.shape[1:]
    core = res.disp_mm[:, z // 4: 3 * z // 4, y // 4: 3 * y // 4, x // 4: 3 * x // 4].reshape(3, -1)
    recovered = np.median(core, axis=1)
    shutil.rmtree(work_dir / name, ignore_errors=True)
    return {"peer": name, "truth": shift.tolist(), "recovered": recovered.tolist(),
            "error_mm": float(np.linalg.norm(recovered - shift)), "seconds": res.seconds}
