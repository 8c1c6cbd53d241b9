"""Input conversion shared by the metrics (numpy or torch in, float64 numpy or torch out)."""
from __future__ import annotations

import numpy as np
import torch


def to_numpy(x, name: str, dtype=np.float64) -> np.ndarray:
    """Detach a tensor or convert array-likes to numpy (cast to ``dtype`` unless None)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    return arr if dtype is None else arr.astype(dtype, copy=False)


def check_same_shape(a: np.ndarray, b: np.ndarray, names: str = "a and b") -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {a.shape} and {b.shape}")


def as_mask(mask, shape, name: str = "mask"):
    if mask is None:
        return None
    m = to_numpy(mask, name, dtype=None).astype(bool)
    if m.shape != tuple(shape):
        raise ValueError(f"{name} shape {m.shape} does not match the images' shape {tuple(shape)}")
    if not m.any():
        raise ValueError(f"{name} is empty: no voxel to measure")
    return m
