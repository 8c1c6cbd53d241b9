r"""Optional peers, used when importable: ANTs (antspyx), elastix (itk-elastix), Greedy (picsl-greedy), ConvexAdam.

Each returns the field on the FIXED grid, LPS mm, fixed x -> moving x + u(x) (see :mod:`.common`);
the tools' own transform files are converted here, once. Install them with
``benchmarks/requirements-peers.txt`` (it says how).
"""
from __future__ import annotations

import os
import time
from importlib.metadata import version
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ADRegNetLib.io import field_to_sitk
from ADRegNetLib.spatial.geometry import Geometry

from .common import PeerResult, field_on_fixed, read_sitk, set_threads

__all__ = ["run_ants", "run_elastix", "run_greedy", "run_convexadam"]


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
    set_threads(threads)
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
    disp = field_on_fixed(sitk.ReadImage(str(composed)), read_sitk(fixed_path))
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
    set_threads(threads)
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
    geom = Geometry(arr.shape[2::-1], np.asarray(deformation.GetSpacing(), float),
                    np.asarray(deformation.GetOrigin(), float), np.asarray(deformation.GetDirection(), float))
    disp_img = field_to_sitk(np.moveaxis(arr, -1, 0), geom, dtype=np.float32)
    disp = field_on_fixed(disp_img, read_sitk(fixed_path))
    return PeerResult(disp, seconds, {"tool": f"itk-elastix {version('itk-elastix')}",
                                      "settings": f"affine+bspline {grid_spacing_mm:g} mm, AdvancedMattesMI, "
                                                  f"{resolutions} res, {iterations} it"})


# --------------------------------------------------------------------------- Greedy
def run_greedy(fixed_path, moving_path, out_dir, threads: int = 2, *, iterations: Optional[str] = None,
               metric: str = "NCC 2x2x2", smoothing: str = "2.0vox 0.5vox", rigid_first: bool = False) -> PeerResult:
    """PICSL Greedy: affine (12 dof) then deformable; the affine and warp are composed with ``-rc``.

    ``rigid_first`` (peer ``greedy-rigid``): a rigid fit (6 dof, same metric) from the image centres first,
    and the affine from its result, as Greedy's documentation does between subjects: the affine from the
    image centres diverged on some inter-subject pairs (heads pitched 35 degrees apart).

    Greedy's warps are ITK displacement fields (LPS mm on the fixed grid) that map fixed points to
    moving points when applied as ``warp, affine`` (the order ``greedy -r`` uses to reslice moving).
    """
    set_threads(threads)
    from picsl_greedy import Greedy3D  # noqa: PLC0415 - optional

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # This wheel's ITK has no image IO factories registered: pass SimpleITK images in memory.
    fixed, moving = read_sitk(fixed_path), read_sitk(moving_path)
    # Pyramid depth from the image size: NMI affine diverged (and differently from run to run) on a
    # 40x40x32 image with 3 levels, whose coarsest level has 8 voxels across.
    levels = int(min(3, 1 + np.floor(np.log2(max(min(fixed.GetSize()) / 16.0, 1.0)))))
    affine_iters = "x".join(["100", "50", "10"][:levels])
    iterations = iterations or "x".join(["100", "50", "20"][:levels])
    g = Greedy3D()
    t0 = time.perf_counter()
    if rigid_first:
        g.execute(f"-threads {threads} -d 3 -a -dof 6 -i fix mov -ia-image-centers -m NMI -n {affine_iters} -o rig",
                  fix=fixed, mov=moving, rig=None)
        g.execute(f"-threads {threads} -d 3 -a -dof 12 -i fix mov -ia rig -m NMI -n {affine_iters} -o aff", aff=None)
    else:
        g.execute(f"-threads {threads} -d 3 -a -dof 12 -i fix mov -ia-image-centers -m NMI -n {affine_iters} -o aff",
                  fix=fixed, mov=moving, aff=None)
    g.execute(f"-threads {threads} -d 3 -i fix mov -it aff -m {metric} -n {iterations} -s {smoothing} -sv -o warp",
              warp=None)
    seconds = time.perf_counter() - t0
    g.execute(f"-threads {threads} -d 3 -rf fix -rc comp -r warp aff", comp=None)
    composed = g["comp"]
    sitk.WriteImage(composed, str(out_dir / "greedy_composed.nii.gz"))
    disp = field_on_fixed(composed, fixed)
    return PeerResult(disp, seconds, {"tool": f"picsl-greedy {version('picsl-greedy')}",
                                      "settings": f"{'rigid then ' if rigid_first else ''}affine NMI {affine_iters} + "
                                                  f"deformable {metric}, {iterations}"})


# --------------------------------------------------------------------------- ConvexAdam
def run_convexadam(fixed_path, moving_path, out_dir, threads: int = 2, *, grid_sp: int = 4, disp_hw: int = 4,
                   niter: int = 80, lambda_weight: float = 1.25) -> PeerResult:
    """ConvexAdam (MIND-SSC, coupled convex + Adam) on the fixed grid.

    ConvexAdam works on arrays on one voxel grid: the moving image is first resampled onto the
    fixed grid (identity, physical space), so the result composes with nothing. Its output is a
    voxel displacement in the array axes, which is turned into LPS mm with the fixed grid's
    direction and spacing.
    """
    set_threads(threads)
    import torch  # noqa: PLC0415
    from convexAdam.convex_adam_MIND import convex_adam_pt  # noqa: PLC0415 - optional

    torch.set_num_threads(max(int(threads), 1))
    fixed = read_sitk(fixed_path)
    moving = sitk.Resample(read_sitk(moving_path), fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)

    def norm(img: sitk.Image) -> np.ndarray:
        a = sitk.GetArrayFromImage(img).astype(np.float32)
        lo, hi = np.percentile(a, [0.5, 99.5])
        return np.ascontiguousarray(np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1).transpose(2, 1, 0))  # (X, Y, Z)

    t0 = time.perf_counter()
    disp_vox = convex_adam_pt(norm(fixed), norm(moving), grid_sp=grid_sp, disp_hw=disp_hw, selected_niter=niter,
                              lambda_weight=lambda_weight, dtype=torch.float32, device=torch.device("cpu"))
    seconds = time.perf_counter() - t0
    disp_vox = np.asarray(disp_vox, dtype=np.float64)  # (X, Y, Z, 3), voxel units along x, y, z
    m = Geometry.from_sitk(fixed).index_to_physical_matrix  # index steps (x, y, z) -> LPS mm
    disp = np.einsum("ij,xyzj->izyx", m, disp_vox).astype(np.float32)
    return PeerResult(np.ascontiguousarray(disp), seconds,
                      {"tool": f"convexAdam {version('convexAdam')}",
                       "settings": f"MIND-SSC grid_sp={grid_sp} disp_hw={disp_hw} niter={niter}"})


