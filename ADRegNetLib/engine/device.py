"""Resolving the compute device ("auto" / "cpu" / "cuda"), and returning freed memory to the system."""
from __future__ import annotations

import ctypes
import ctypes.util
import warnings

import torch

from ..typing import DeviceLike

__all__ = ["resolve_device", "release_freed_memory"]


def resolve_device(device: DeviceLike = "auto") -> tuple[torch.device, str | None]:
    """Turn a user's device choice into a ``torch.device``.

    A CUDA device asked for where none exists falls back to the CPU with a warning (a clinician
    gets a result, slower, instead of an error); the warning text is returned so front ends can
    show it.

    Args:
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N" or a torch.device.

    Returns:
        (device, warning or None).

    Raises:
        ValueError: for a device string torch does not know.
    """
    if isinstance(device, torch.device):
        requested = device
    else:
        name = str(device).strip().lower()
        if name == "auto":
            return (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")), None
        if name == "gpu":
            name = "cuda"
        try:
            requested = torch.device(name)
        except RuntimeError:
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from None
    if requested.type == "cuda":
        if not torch.cuda.is_available():
            msg = "CUDA was requested but no CUDA GPU is available here; running on the CPU instead (slower)."
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            return torch.device("cpu"), msg
        if requested.index is not None and requested.index >= torch.cuda.device_count():
            raise ValueError(f"CUDA device {requested.index} does not exist (this machine has {torch.cuda.device_count()})")
        return requested, None
    if requested.type != "cpu":
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu' or 'cuda'")
    return requested, None


def release_freed_memory() -> bool:
    """Ask the C library to return freed heap memory to the system (glibc ``malloc_trim``).

    Many slab-sized temporaries (tens of MB each) are served from the heap once glibc's dynamic
    mmap threshold has grown, and stay resident after they are freed: on a 512x512x300 pair about
    0.6 GB before the inverse's full-size field was allocated. Elsewhere (no glibc) nothing happens.

    Returns:
        True when memory was trimmed.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return False
    return bool(trim(0))
