"""Rebuild the demo pair in this folder from the real lung CT in ../shared/data (run from the repo root).

The fixed image is the real CT (elastix test data, right lung, 57x78x64 voxels at 2.73x2.73x5 mm).
The moving image is the same scan deformed by a known smooth breathing-like diffeomorphism (mostly
superior-inferior, largest at the lung base, plus a small random smooth part) with scanner-like
noise added. Fixed landmarks are the expert landmarks of the source that lie inside the image; the
moving landmarks are the same points mapped through the known deformation (fixed x -> x + u(x)).

    .venv/bin/python Resources/SampleData/make_sample_data.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ADRegNetLib.io import read_image, read_landmarks, write_image, write_landmarks
from ADRegNetLib.io.image import Image
from ADRegNetLib.io.transforms import transform_points
from ADRegNetLib.spatial import disp_mm_to_flow_norm, flow_norm_to_disp_mm, integrate_velocity, warp_image
from ADRegNetLib.train.synthetic import random_smooth_velocity

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / ".." / "shared" / "data" / "lung-ct-elastix-small"


def breathing_velocity(geometry, amplitude_mm: float) -> np.ndarray:
    """(3, Z, Y, X) mm: inferior-superior motion growing towards the lung base (LPS z = superior)."""
    zz = np.linspace(0.0, 1.0, geometry.shape[0])[:, None, None]  # 0 = most inferior slice
    yy = np.linspace(-1.0, 1.0, geometry.shape[1])[None, :, None]
    xx = np.linspace(-1.0, 1.0, geometry.shape[2])[None, None, :]
    weight = (1.0 - zz) * np.exp(-(xx ** 2 + yy ** 2) / 0.8)
    v = np.zeros((3, *geometry.shape), dtype=np.float32)
    v[2] = amplitude_mm * weight  # exhale->inhale: lung base moves down to the moving position
    v[1] = -0.25 * amplitude_mm * weight * (yy < 0.3)  # a little anterior motion
    return v


def main() -> None:
    rng = np.random.default_rng(2026)
    fixed = read_image(SHARED / "baseline_small.nii.gz", name="lung_fixed")
    g = fixed.geometry
    velocity = breathing_velocity(g, 10.0) + random_smooth_velocity(g, 2.0, 40.0, rng)
    v = torch.from_numpy(velocity)[None]
    u = flow_norm_to_disp_mm(integrate_velocity(disp_mm_to_flow_norm(v, g), 7), g)
    u_inv = flow_norm_to_disp_mm(integrate_velocity(disp_mm_to_flow_norm(-v, g), 7), g)
    moving = warp_image(torch.from_numpy(fixed.array)[None, None], u_inv, g, padding_mode="border")[0, 0].numpy()
    moving = moving + rng.normal(0.0, 15.0, moving.shape).astype(np.float32)  # 15 HU noise
    points = read_landmarks(SHARED / "landmarks_baseline.csv")
    inside = g.contains(points, margin_voxels=-1.0)
    fixed_pts = points[inside]
    moving_pts = np.asarray(transform_points(u[0].numpy(), g, fixed_pts))
    write_image(fixed, HERE / "lung_fixed.nii.gz")
    write_image(Image(np.round(moving).astype(np.int16), g, "lung_moving"), HERE / "lung_moving.nii.gz")
    write_landmarks(fixed_pts, HERE / "lung_fixed_landmarks.csv")
    write_landmarks(moving_pts, HERE / "lung_moving_landmarks.csv")
    print(f"{len(fixed_pts)} landmark pairs; initial TRE {np.linalg.norm(moving_pts - fixed_pts, axis=1).mean():.2f} mm")


if __name__ == "__main__":
    main()
