r"""Intensity changes between fixed and moving images of the benchmark cases, and images from labels.

Every function takes a (Z, Y, X) array on ``geometry`` (the bias fields are smooth in mm) and a numpy
random generator (the only source of randomness), and returns float32 (Z, Y, X).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ADRegNetLib.spatial.geometry import Geometry

from .deformations import smooth_noise

__all__ = ["bias_field", "intensity_change_mri", "intensity_change_ct", "synth_image_from_labels", "render_t2_like",
           "render_flair_like"]


def bias_field(shape, geometry: Geometry, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """(Z, Y, X) smooth random field (control points 80 mm apart) times ``amplitude``."""
    return amplitude * smooth_noise(shape, geometry, 80.0, rng, 1)[0]


def intensity_change_mri(image: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """MRI-like change: random gamma, multiplicative smooth bias, Rician-like noise, random scale.

    Args:
        image: (Z, Y, X) non-negative intensities (about [0, 1]) on ``geometry``.
        geometry: its grid.
        rng: random generator.

    Returns:
        (Z, Y, X) float32, scaled to about [0, 200..1000].
    """
    hi = float(np.percentile(image, 99.5)) or 1.0
    img = np.clip(image / hi, 0, None)
    gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    img = img ** gamma
    img = img * np.exp(bias_field(image.shape, geometry, rng, 0.2))
    sigma = rng.uniform(0.01, 0.03)
    n1 = rng.standard_normal(image.shape) * sigma
    n2 = rng.standard_normal(image.shape) * sigma
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)
    return (img * rng.uniform(200.0, 1000.0)).astype(np.float32)


def intensity_change_ct(hu: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """CT-like change in HU: small scale and offset, smooth additive bias, noise (HU stay HU-like).

    Args:
        hu: (Z, Y, X) Hounsfield units on ``geometry``.
        geometry: its grid.
        rng: random generator.
    """
    out = hu * rng.uniform(0.96, 1.04) + rng.uniform(-20.0, 20.0)
    out = out + bias_field(hu.shape, geometry, rng, 20.0)
    out = out + rng.standard_normal(hu.shape) * rng.uniform(10.0, 25.0)
    return out.astype(np.float32)


def synth_image_from_labels(labels: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """SynthMorph-style image from a label map: random mean per label, blur, bias field, gamma, noise.

    Args:
        labels: (Z, Y, X) integer labels on ``geometry``.
        geometry: its grid (the blur is in mm).
        rng: random generator.

    Returns:
        (Z, Y, X) float32 image in about [0, 1].
    """
    ids, inverse = np.unique(labels, return_inverse=True)
    means = rng.uniform(0.05, 1.0, size=len(ids))
    means[ids == 0] = rng.uniform(0.0, 0.1)
    stds = rng.uniform(0.0, 0.05, size=len(ids))
    inverse = inverse.reshape(labels.shape)
    img = means[inverse] + stds[inverse] * rng.standard_normal(labels.shape)
    blur_mm = rng.uniform(0.5, 1.5)
    img = ndimage.gaussian_filter(img, sigma=blur_mm / geometry.spacing[::-1])
    img = img * np.exp(bias_field(labels.shape, geometry, rng, 0.25))
    img = np.clip(img, 0, None)
    img = img / max(float(img.max()), 1e-6)
    img = img ** float(np.exp(rng.normal(0.0, 0.25)))
    img = img + rng.standard_normal(labels.shape) * rng.uniform(0.005, 0.02)
    return img.astype(np.float32)


#: T1 intensity (as a fraction of the white-matter median) -> T2-like intensity. Background stays
#: dark, CSF (about 0.2-0.4 x WM in T1) becomes the brightest tissue, grey matter (about 0.6 x WM)
#: mid-grey and white matter dark: the contrast of a T2-weighted scan, non-monotonic in T1.
T2_KNOTS_T1 = (0.0, 0.1, 0.35, 0.62, 1.0, 2.5)
T2_KNOTS_T2 = (0.0, 0.85, 1.0, 0.62, 0.35, 0.3)
#: T1 -> FLAIR-like intensity on the same knots: CSF stays dark, grey matter becomes brighter than
#: white matter. Unlike T2 the tissues still correlate positively with T1 (0.58 on the brain case),
#: so only some edges are inverted: two contrasts that a global correlation test takes for one.
FLAIR_KNOTS_FLAIR = (0.0, 0.05, 0.12, 0.8, 0.5, 0.45)


def render_t2_like(t1: np.ndarray, white_matter: np.ndarray) -> np.ndarray:
    """A T2-weighted-looking rendering of a skull-stripped T1 (same anatomy, inverted tissue contrast).

    Each voxel's T1 intensity, relative to the white-matter median, goes through the piecewise-linear
    map :data:`T2_KNOTS_T1` -> :data:`T2_KNOTS_T2`. The texture and partial volumes of the real scan
    are kept; the relation between the two images is not monotonic, so intensity-difference
    similarity measures fail on it (a cross-modality pair).

    Args:
        t1: (Z, Y, X) non-negative T1 intensities (background 0).
        white_matter: (Z, Y, X) bool white-matter voxels of ``t1`` (for the reference intensity).

    Returns:
        (Z, Y, X) float32 T2-like image in [0, 1].

    Raises:
        ValueError: no white matter in the mask.
    """
    return _rendered(t1, white_matter, T2_KNOTS_T2, "render_t2_like")


def render_flair_like(t1: np.ndarray, white_matter: np.ndarray) -> np.ndarray:
    """A FLAIR-looking rendering of a skull-stripped T1: CSF dark, grey matter brighter than white.

    As :func:`render_t2_like`, with :data:`FLAIR_KNOTS_FLAIR` as the map's values.

    Args:
        t1: (Z, Y, X) non-negative T1 intensities (background 0).
        white_matter: (Z, Y, X) bool white-matter voxels of ``t1``.

    Returns:
        (Z, Y, X) float32 FLAIR-like image in [0, 1].

    Raises:
        ValueError: no white matter in the mask.
    """
    return _rendered(t1, white_matter, FLAIR_KNOTS_FLAIR, "render_flair_like")


def _rendered(t1: np.ndarray, white_matter: np.ndarray, values: tuple, name: str) -> np.ndarray:
    """``t1`` relative to its white-matter median, through the map ``T2_KNOTS_T1`` -> ``values``."""
    if not white_matter.any():
        raise ValueError(f"{name} needs white-matter voxels to set its reference intensity; the mask is empty")
    wm = float(np.median(t1[white_matter]))
    return np.interp(t1 / wm, T2_KNOTS_T1, values).astype(np.float32)
