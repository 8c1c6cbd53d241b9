"""The edge parameter of normalised gradient fields for one contrast, from the working images' noise
(``engine.refinement_stage.ngf_edge``): the noisier image decides, the grid's spacing converts noise into
gradient, a clean image keeps the floor, and ``register()`` uses and reports it for a CT of one contrast only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ADRegNetLib.engine import register
from ADRegNetLib.engine.refine_settings import (LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS,
                                                LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS, NGF_EDGE_NOISE_SHARE)
from ADRegNetLib.engine.refinement_stage import ngf_edge
from ADRegNetLib.io.image import from_sitk
from ADRegNetLib.spatial.filters import gaussian_smooth
from ADRegNetLib.spatial.geometry import Geometry

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
FLOOR = 0.0025


def _volume(noise: float, seed: int, shape=(40, 44, 48)) -> torch.Tensor:
    """A smooth tissue-like volume about 0.5 (gradients far below the floor) plus white noise of ``noise``."""
    gen = torch.Generator().manual_seed(seed)
    smooth = gaussian_smooth(torch.rand((1, 1, *shape), generator=gen), 6.0)
    smooth = 0.4 + 0.2 * (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return smooth + noise * torch.randn((1, 1, *shape), generator=gen)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 1.0, 3.0)])
def test_the_edge_is_a_share_of_the_noisier_images_gradient_noise(spacing):
    work = Geometry((48, 44, 40), spacing, (0.0, 0.0, 0.0))
    clean, noisy = _volume(0.005, 1), _volume(0.04, 2)
    edge = ngf_edge(clean, noisy, work, FLOOR)
    assert ngf_edge(noisy, clean, work, FLOOR) == edge | {"noise_std": edge["noise_std"][::-1]}
    assert edge["noise_std"][1] == pytest.approx(0.04, rel=0.1) and edge["noise_std"][0] < 0.01
    # central differences of white noise: variance sigma^2 / (2 h^2) per axis
    expected = 0.04 * np.sqrt(sum(0.5 / h ** 2 for h in spacing))
    assert edge["noise_gradient_per_mm"] == pytest.approx(expected, rel=0.1)
    assert edge["eps_per_mm"] == pytest.approx(NGF_EDGE_NOISE_SHARE * edge["noise_gradient_per_mm"], abs=1e-5)
    quiet = _volume(0.002, 3)
    assert ngf_edge(quiet, quiet, work, FLOOR)["eps_per_mm"] == FLOOR  # clean images keep the floor


def _crop(name: str) -> "object":
    return from_sitk(sitk.ReadImage(str(SAMPLE / name))[8:48, 20:60, 16:48], name.split(".")[0])


def test_register_raises_the_edge_for_a_noisy_ct_and_reports_it():
    """The demo CT pair cropped, the moving image with noise of 100 HU: the edge parameter rises with the noise and
    ``metrics.json`` names it; two contrasts keep the floor."""
    fixed, moving = _crop("lung_fixed.nii.gz"), _crop("lung_moving.nii.gz")
    noisy = moving.with_array(moving.array + np.random.default_rng(0).normal(0.0, 100.0, moving.array.shape)
                              .astype(np.float32))
    kw = dict(preset="lung-ct", quality="fast", use_network=False, device="cpu", compute_inverse=False, seed=0)
    edges = {}
    for label, image in (("clean", moving), ("noisy", noisy)):
        info = register(fixed, image, **kw).metrics["refinement"]
        edges[label] = info["ngf_edge"]
        assert f"edge parameter {info['ngf_edge']['eps_per_mm']} per mm" in info["similarity"]
        assert info["local_continuation"] == {"applied": False,
                                              "reason": "edge directions of one contrast (CT): not continued"}
    assert edges["noisy"]["noise_std"][1] > 2 * edges["clean"]["noise_std"][1]
    assert edges["noisy"]["eps_per_mm"] > 2 * edges["clean"]["eps_per_mm"] >= 2 * FLOOR
    two = register(fixed, moving.with_array(-moving.array), multimodal=True, **kw).metrics["refinement"]
    assert two["contrasts"] == "two contrasts" and two["ngf_edge"] == {"eps_per_mm": FLOOR}
    gate = two["local_continuation"]  # two contrasts: gated by the update's fine share and its length, not the gain
    assert gate["min_gain"] is None and gate["min_fine_share"] == LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS
    assert gate["min_fine_mm"] == LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS and gate["fine_mm"] >= 0
    assert gate["applied"] == (gate["fine_share"] >= LOCAL_REFINE_MIN_FINE_SHARE_TWO_CONTRASTS
                               and gate["fine_mm"] >= LOCAL_REFINE_MIN_FINE_MM_TWO_CONTRASTS)
