"""The similarity figures of ``register()`` and ``adregnet register`` leave out a CT's padding below air
(``engine.results.below_air``).

Before: the demo lung CT pair stored with -32768 outside a circular field of view summed up as
"NCC 1.000 -> 0.998": the padding of both scans lay on itself before registration, and its rim was
interpolated into the tissue after it, so both figures measured the padding (the same pair without
padding: 0.983 -> 0.995). Now the figures count only voxels with data in both images.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ADRegNetLib.cli.main import main
from ADRegNetLib.engine.results import below_air
from ADRegNetLib.io import read_image, write_image
from ADRegNetLib.io.image import Image
from ADRegNetLib.metrics import ncc

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "SampleData"


def _outside_circle(shape) -> np.ndarray:
    """(Z, Y, X) bool: outside a circle in every axial slice (a CT's reconstruction field of view)."""
    _, yy, xx = np.indices(shape)
    return (yy - shape[1] / 2) ** 2 + (xx - shape[2] / 2) ** 2 > (0.45 * shape[2]) ** 2


@pytest.fixture(scope="module")
def padded(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("padded_ct")
    images = {role: read_image(SAMPLE / f"lung_{role}.nii.gz", dtype=None) for role in ("fixed", "moving")}
    outside = _outside_circle(images["fixed"].array.shape)
    paths = {}
    for role, image in images.items():
        paths[role] = root / f"{role}.nii.gz"
        write_image(Image(np.where(outside, -32768, image.array).astype(np.int16), image.geometry, role), paths[role])
    out = root / "out"
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        rc = main(["register", str(paths["fixed"]), str(paths["moving"]), "-o", str(out), "--quality", "fast",
                   "--no-network", "--no-inverse", "-q"])
    assert rc == 0
    return {"images": images, "outside": outside, "out": out, "paths": paths, "summary": summary.getvalue()}


def test_summary_and_metrics_leave_the_padding_out(padded, capsys):
    metrics = json.loads((padded["out"] / "metrics.json").read_text())
    before, after = metrics["similarity_before"]["ncc"], metrics["similarity_after"]["ncc"]
    # counted, the padding read 1.000 before and a small drop after; without it the anatomy's own figures,
    # which registration raises
    assert before < 0.99 and after > before + 0.01, (before, after)
    assert "below air" in metrics["similarity_region"]
    # the same scans' voxels with data, compared directly (both on one grid, so "before" is the moving image as is)
    fixed, moving = (padded["images"][r].array.astype(np.float64) for r in ("fixed", "moving"))
    assert before == pytest.approx(ncc(fixed, moving, mask=~padded["outside"]), abs=2e-3)


def test_the_summary_line_shows_the_figures_without_padding(padded):
    line = padded["summary"].splitlines()[0]
    metrics = json.loads((padded["out"] / "metrics.json").read_text())
    match = re.search(r"NCC (\S+) -> (\S+);", line)
    assert match, line
    assert float(match.group(1)) == pytest.approx(metrics["similarity_before"]["ncc"], abs=5e-4)
    assert float(match.group(2)) == pytest.approx(metrics["similarity_after"]["ncc"], abs=5e-4)
    assert float(match.group(1)) < 0.99  # before: "NCC 1.000 -> 0.998"


def test_below_air_is_a_cts_padding_only(padded):
    image = read_image(padded["paths"]["fixed"], dtype=None)
    np.testing.assert_array_equal(below_air(image), padded["outside"])
    assert below_air(padded["images"]["fixed"]) is None  # the scan as it was: no padding
    # an image stored as full-range int16 (an MR export) has values far below -1500 HU, but not one padding
    # value below air: it is no CT, and its darkest voxels are data
    a = padded["images"]["fixed"].array.astype(np.float64)
    full_range = np.round((a - a.min()) / (a.max() - a.min()) * 65535.0 - 32768.0).astype(np.int16)
    assert below_air(Image(full_range, image.geometry, "full range")) is None


def test_the_python_api_reports_the_same_figures(padded):
    from ADRegNetLib.engine import register

    fixed, moving = (read_image(padded["paths"][r]) for r in ("fixed", "moving"))
    result = register(fixed, moving, quality="fast", use_network=False, compute_inverse=False, device="cpu")
    cli = json.loads((padded["out"] / "metrics.json").read_text())
    for when in ("similarity_before", "similarity_after"):
        assert result.metrics[when]["ncc"] == pytest.approx(cli[when]["ncc"], abs=1e-3)
