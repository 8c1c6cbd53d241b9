r"""What kind of images these are: which preset (``auto``), and do the two share a contrast? (the last decides
the pre-alignment metric; CT or not, and CT stored otherwise, is ``engine.hounsfield``).

CT against anything else is multimodal, two CT images are not (Hounsfield units are calibrated).
Two non-CT images (MR/MR, generic) can still have different
contrasts (T1 against T2: tissue brightness inverted), and a correlation metric then pulls the
pre-alignment far off (measured on the benchmark's brain-t1t2 case: 3.97 -> 11.4 mm). The test: at
the starting alignment, on a coarse grid, the intensities of the two images where both show tissue
must correlate clearly (after one coarse voxel of blur, so that a misalignment of a few voxels
does not decide); a deformed same-contrast pair stays far above the threshold, inverted contrast
falls below it.

That test runs before any alignment, so it must tolerate misalignment and only catches contrasts far
apart. Tissues can also keep a positive overall correlation while some swap their brightness order
(images synthesised from label maps with a contrast per tissue, measured below; T1 against proton
density would be the clinical kind, no such pair was at hand), and then
the local-NCC refinement (same contrast) ends far worse than the two-contrast one: synthseg cases
1.20 / 1.04 / 2.08 mm against 0.88 / 0.87 / 1.43 (balanced, seeds 0-2). After the MIND optimisation the
images are aligned and :func:`inverted_edge_share` sees it: where both show tissue, the share of the
local covariance of the two (blurred) images that is negative; an edge between two tissues is then
of opposite sign. ``engine.pipeline`` refines as two contrasts above ``TWO_CONTRAST_EDGE_SHARE``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..metrics import ncc
from ..spatial.affine import AffineMap
from ..spatial.filters import box_filter, gaussian_smooth
from ..spatial.flow import identity_grid
from ..spatial.image import Image
from ..spatial.intensity_map import midway_knots, piecewise_linear, sample_quantiles
from ..spatial.overlap import physical_overlap
from ..spatial.warp import resample
from .hounsfield import is_ct, voxel_sample
from .optimizer import sample_through
from .settings import (NETWORK_CT_WINDOW, EDGE_CHECK_SIGMA_VOXELS,
                       EDGE_CHECK_WINDOW, MIN_PHYSICAL_OVERLAP, PREALIGN_CENTRES_APART_MM, REFINE_INTENSITY_KNOTS, SAME_CONTRAST_MIN_CORRELATION, SAME_CONTRAST_SPACING_MM,
                       TISSUE_THRESHOLD, TWO_CONTRAST_EDGE_SHARE)

__all__ = ["centre_of_mass", "rewindowed_for_network", "detect_preset", "contrast_correlation", "guess_multimodal", "inverted_edge_share",
           "contrasts_after_alignment", "midway_intensities", "tissue_in_both"]


def rewindowed_for_network(normalised: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """CT intensities normalised with ``window`` re-expressed in :data:`NETWORK_CT_WINDOW` (HU above the
    first window's top stay at its top): the network sees CT as in training."""
    lo, hi = window
    net_lo, net_hi = NETWORK_CT_WINDOW
    hu = normalised * (hi - lo) + lo
    return ((hu - net_lo) / (net_hi - net_lo)).clamp(0.0, 1.0)


def detect_preset(fixed: Image, moving: Image) -> tuple[str, str]:
    """Choose a preset from the images.

    CT (see :func:`is_ct`) with a large share of lung-density voxels (-950..-500 HU) in the field of
    view means a chest scan. MR with a mostly empty background and a head-sized field of view is taken
    as brain MRI; anything else is "generic".

    Returns:
        (preset name, one-line reason).
    """
    sample = voxel_sample(fixed)
    lo, hi = np.percentile(sample, [1, 99])
    if is_ct(fixed):
        lung_share = float(np.mean((sample > -950) & (sample < -500)))
        if lung_share > 0.05:
            return "lung-ct", f"CT intensities (HU) with {100 * lung_share:.0f}% lung-density voxels"
        return "generic", "CT intensities (HU) without lung tissue"
    extent = fixed.geometry.extent_mm
    # "empty" = within 5% of the robust range above the darkest voxels: scanner noise in the
    # background of a skull-stripped MR image must not hide that it is empty
    background = float(np.mean(sample <= lo + 0.05 * max(hi - lo, 1e-6)))
    if np.all(extent > 100) and np.all(extent < 300) and background > 0.3:
        return "brain-mri", f"non-CT intensities, head-sized field of view, {100 * background:.0f}% empty background"
    return "generic", "non-CT intensities without a head-sized, skull-stripped field of view"


def centre_of_mass(image: Image, tissue_only: bool = False) -> np.ndarray:
    """LPS mm centre of the image's intensity mass (normalised image, values >= 0), or with ``tissue_only`` of
    its voxels that show tissue, each counted once (a bias field does not move it)."""
    arr = np.clip(image.array, 0.0, None).astype(np.float64)
    if tissue_only:
        arr = (arr > TISSUE_THRESHOLD).astype(np.float64)
    total = float(arr.sum())
    if total <= 0:
        return image.geometry.center()
    idx = [np.arange(n, dtype=np.float64) for n in arr.shape]
    z = float((arr.sum(axis=(1, 2)) * idx[0]).sum()) / total
    y = float((arr.sum(axis=(0, 2)) * idx[1]).sum()) / total
    x = float((arr.sum(axis=(0, 1)) * idx[2]).sum()) / total
    return image.geometry.index_to_physical(np.array([[x, y, z]]))[0]


def contrast_correlation(fixed_n: Image, moving_n: Image, start: AffineMap | None = None) -> float:
    """Pearson correlation of the two normalised images where both show tissue, at the start alignment.

    Args:
        fixed_n, moving_n: images normalised to about [0, 1] (background near 0), any grids.
        start: fixed -> moving affine to look through; default: identity when the images overlap in
            physical space (or their tissue's centres brought together, whichever correlates better, when those
            lie more than ``PREALIGN_CENTRES_APART_MM`` apart), otherwise their centres of mass brought together.

    Returns:
        The correlation in [-1, 1]; 1.0 when too few voxels show tissue in both (nothing to judge).
    """
    if start is None:
        if physical_overlap(fixed_n.geometry, moving_n.geometry) <= MIN_PHYSICAL_OVERLAP:
            return contrast_correlation(fixed_n, moving_n,
                                        AffineMap(np.eye(3), centre_of_mass(moving_n) - centre_of_mass(fixed_n)))
        # images that overlap but whose tissue lies far apart (a head moved within the grid; one contrast 100 mm
        # off read -0.09): the better of both starts, as the pre-alignment (prealign._overlapping_start). Tissue
        # counted voxel by voxel: a 50-fold bias field moved the intensity-weighted centre 20 mm, not the tissue's
        r = contrast_correlation(fixed_n, moving_n, AffineMap.identity())
        offset = centre_of_mass(moving_n, tissue_only=True) - centre_of_mass(fixed_n, tissue_only=True)
        if np.linalg.norm(offset) > PREALIGN_CENTRES_APART_MM:
            r = max(r, contrast_correlation(fixed_n, moving_n, AffineMap(np.eye(3), offset)))
        return r
    geometry = fixed_n.geometry
    factor = np.maximum(1, np.round(SAME_CONTRAST_SPACING_MM / geometry.spacing)).astype(int)
    coarse = geometry.with_spacing(geometry.spacing * factor)
    f = resample(fixed_n, coarse).array
    m = resample(moving_n, coarse, affine=start).array
    both = (f > TISSUE_THRESHOLD) & (m > TISSUE_THRESHOLD)
    if int(both.sum()) < 100:
        return 1.0
    # one coarse voxel of blur: a misalignment of a few voxels barely changes the correlation
    # (same contrast shifted by 16 mm on a 4 mm brain grid: 0.69 blurred, 0.49 not)
    pair = gaussian_smooth(torch.from_numpy(np.stack([f, m]))[None], 1.0)[0].numpy()
    r = ncc(pair[0], pair[1], mask=both)
    return r if np.isfinite(r) else 1.0  # a constant image inside the region: nothing to judge


def guess_multimodal(fixed: Image, moving: Image, fixed_n: Image, moving_n: Image,
                     start: AffineMap | None = None) -> tuple[bool, str]:
    """Whether fixed and moving have different contrasts, and why.

    Args:
        fixed, moving: the images as given (CT is recognised by its Hounsfield values).
        fixed_n, moving_n: the same images normalised to about [0, 1].
        start: the fixed -> moving start of the pre-alignment, when the user gave one.

    Returns:
        (multimodal, one-line reason).
    """
    fixed_ct, moving_ct = is_ct(fixed), is_ct(moving)
    if fixed_ct != moving_ct:
        return True, "one image is CT (Hounsfield units), the other is not"
    if fixed_ct:  # calibrated units: a tissue has the same value in both (contrast agent aside)
        return False, "both images are CT (Hounsfield units)"
    r = contrast_correlation(fixed_n, moving_n, start)
    if r < SAME_CONTRAST_MIN_CORRELATION:
        return True, (f"intensities where both images show tissue correlate {r:.2f} "
                      f"(< {SAME_CONTRAST_MIN_CORRELATION}): different contrasts")
    return False, f"intensities where both images show tissue correlate {r:.2f}: same contrast"


def inverted_edge_share(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Share of the local covariance of two aligned images that is negative, where both show tissue.

    Both images are blurred by ``EDGE_CHECK_SIGMA_VOXELS`` (noise alone then seldom inverts a
    covariance: 20 % noise on a brain pair 0.003) and their covariance is taken in
    ``EDGE_CHECK_WINDOW``-voxel windows; the result is sum(max(-cov, 0)) / sum(|cov|), 0 when every
    edge keeps its sign (one contrast, whatever smooth intensity change), up to 1 (inverted).

    Args:
        fixed, warped: (1, 1, Z, Y, X) normalised intensities on one grid (the moving image warped).
        mask: optional (1, 1, Z, Y, X) bool region to judge in.

    Returns:
        the share in [0, 1]; 0 when the tissue has no structure to judge.
    """
    tissue = (fixed > TISSUE_THRESHOLD) & (warped > TISSUE_THRESHOLD)
    if mask is not None:
        tissue &= mask.bool()
    if int(tissue.sum()) < 100:
        return 0.0
    pair = gaussian_smooth(torch.cat([fixed, warped], dim=1), EDGE_CHECK_SIGMA_VOXELS)
    f, m = pair[:, :1], pair[:, 1:]
    means = box_filter(torch.cat([f, m, f * m], dim=1), EDGE_CHECK_WINDOW)
    cov = (means[:, 2:3] - means[:, :1] * means[:, 1:2])[tissue]
    total = float(cov.abs().sum())
    return float((-cov).clamp_min(0).sum()) / total if total > 0 else 0.0


def contrasts_after_alignment(fixed: torch.Tensor, moving: torch.Tensor, flow_norm: torch.Tensor,
                              mask: torch.Tensor | None = None, guessed_two: bool = False) -> tuple[bool, dict]:
    """Whether two images are of two contrasts once aligned, whatever the start test guessed, and why.

    The start test correlates the images before any alignment, so misalignment and strong intensity
    changes (a bias field doubling the brightness across the head) can lower the correlation of one
    contrast below its threshold; once aligned, every edge of one contrast keeps its sign.

    Args:
        fixed, moving: (1, 1, Z, Y, X) normalised intensities on the working grid.
        flow_norm: (1, 3, Z, Y, X) the optimisation's field, normalised ``grid_sample`` units.
        mask: optional (1, 1, Z, Y, X) bool region of interest.
        guessed_two: what the start test said (only the wording of the decision depends on it).

    Returns:
        (two contrasts, {"inverted_edge_share", "threshold", "decision"}).
    """
    warped = sample_through(moving, flow_norm, identity_grid(tuple(fixed.shape[2:]), moving))
    share = inverted_edge_share(fixed, warped, mask)
    two = share > TWO_CONTRAST_EDGE_SHARE
    limit = 100 * TWO_CONTRAST_EDGE_SHARE
    if two:
        decision = (f"two contrasts: after the optimisation {100 * share:.1f}% of the local covariance is negative "
                    f"(> {limit:.1f}%): some tissues differ in brightness order")
    else:
        decision = (f"one contrast{' after all' if guessed_two else ''}: after the optimisation {100 * share:.2f}% "
                    f"of the local covariance is negative (<= {limit:.1f}%)"
                    + (": every edge keeps its sign, the intensities differ smoothly" if guessed_two else ""))
    return two, {"inverted_edge_share": round(share, 4), "threshold": TWO_CONTRAST_EDGE_SHARE, "decision": decision}


def midway_intensities(fixed: torch.Tensor, moving: torch.Tensor, flow_norm: torch.Tensor,
                       mask: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict]:
    """Two images of one contrast mapped half-way between their intensity curves, once aligned.

    The curves are the quantiles of each image where both show tissue (above ``TISSUE_THRESHOLD``
    of their own 99th percentile) after the optimisation's field
    (``spatial.intensity_map.midway_knots``, ``REFINE_INTENSITY_KNOTS`` levels).

    Args:
        fixed, moving: (1, 1, Z, Y, X) non-negative intensities on the working grid (the moving one
            pre-aligned, not warped).
        flow_norm: (1, 3, Z, Y, X) the optimisation's field, normalised ``grid_sample`` units.
        mask: optional (1, 1, Z, Y, X) bool region of interest.

    Returns:
        (fixed mapped, moving mapped, slope of the moving image's map per voxel, info). With too
        little tissue in common both images come back unchanged, the slope is None and
        ``info["applied"]`` is False.
    """
    warped = sample_through(moving, flow_norm, identity_grid(tuple(fixed.shape[2:]), moving))
    tissue = tissue_in_both(fixed, warped, mask, moving_top=_top(moving))
    knots = midway_knots(fixed, warped, tissue, REFINE_INTENSITY_KNOTS)
    if knots is None:
        return fixed, moving, None, {"applied": False, "tissue_voxels": int(tissue.sum()),
                                     "reason": "too few voxels show tissue in both images, or their intensities "
                                               "have no range there"}
    fixed_knots, moving_knots, midway = knots
    fixed_mapped, _ = piecewise_linear(fixed, fixed_knots, midway)
    moving_mapped, slope = piecewise_linear(moving, moving_knots, midway)
    # how far the two curves were apart: the largest gap between matching quantiles, relative to the top one
    gap = float((fixed_knots - moving_knots).abs().max() / midway[-1])
    return fixed_mapped, moving_mapped, slope, {"applied": True, "knots": len(midway),
                                                "tissue_voxels": int(tissue.sum()),
                                                "largest_quantile_gap": round(gap, 4)}


def tissue_in_both(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None,
                   moving_top: float | None = None) -> torch.Tensor:
    """Where both images show tissue: above ``TISSUE_THRESHOLD`` of their own 99th percentile (``moving_top``
    instead of the moving image's, when given: a warped image's top, read before the warp), inside ``mask``."""
    top = _top(moving) if moving_top is None else moving_top
    tissue = (fixed > TISSUE_THRESHOLD * _top(fixed)) & (moving > TISSUE_THRESHOLD * top)
    if mask is not None:
        tissue &= mask.bool()
    return tissue


def _top(volume: torch.Tensor) -> float:
    """99th intensity percentile of a volume (on a regular subsample of at most about a million voxels)."""
    return float(sample_quantiles(volume, [0.99])[0])
