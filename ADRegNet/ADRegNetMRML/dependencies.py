r"""Is PyTorch usable, and what may the module do about it (no Qt, no ADRegNetLib import).

The engine's attention layer calls ``scaled_dot_product_attention(..., scale=...)``, which needs
torch 2.1 or later; an older torch failed in the middle of a run. A broken install (a missing DLL,
a CUDA mismatch) raises ``OSError`` or ``RuntimeError`` on import, not only ``ImportError``.
In Slicer's testing mode nothing is ever installed (tests must run offline).
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["TORCH_MINIMUM", "TORCH_VERSION_REQUIREMENT", "TORCH_PIP_REQUIREMENT", "TorchStatus", "DependencyAction",
           "parse_version", "torch_status", "dependency_action"]

#: oldest torch the engine runs on (scaled_dot_product_attention with ``scale=``)
TORCH_MINIMUM = (2, 1)
#: what PyTorchUtils.installTorch(torchVersionRequirement=...) gets
TORCH_VERSION_REQUIREMENT = ">=" + ".".join(map(str, TORCH_MINIMUM))
#: the pip requirement used when the PyTorch extension is not installed
TORCH_PIP_REQUIREMENT = "torch" + TORCH_VERSION_REQUIREMENT


@dataclass(frozen=True)
class TorchStatus:
    """What importing torch gave.

    Attributes:
        state: "ok", "missing", "too-old" or "broken".
        version: torch.__version__ when it imported, else None.
        message: one sentence for the user (empty when ok).
    """

    state: str
    version: Optional[str] = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


class DependencyAction(enum.Enum):
    """What to do before a run."""

    READY = "ready"  # torch is usable
    ASK = "ask"  # ask the user, then install
    INSTALL = "install"  # install without asking (non-interactive API use)
    SKIP = "skip"  # testing mode: never install, skip what needs torch


def parse_version(text: str) -> tuple[int, ...]:
    """Leading numeric parts of a version string: "2.1.0+cu121" -> (2, 1, 0), "2.13.0a0" -> (2, 13, 0)."""
    parts = []
    for token in str(text).split("+")[0].split("."):
        match = re.match(r"\d+", token)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def _import_torch():
    import torch

    return torch


def torch_status(importer: Optional[Callable[[], object]] = None) -> TorchStatus:
    """Import torch and check that it is recent enough.

    Args:
        importer: returns the torch module (default: ``import torch``); tests pass stand-ins.

    Returns:
        TorchStatus; never raises.
    """
    try:
        torch = (importer or _import_torch)()
    except ImportError:
        return TorchStatus("missing", None, "PyTorch is not installed.")
    except Exception as exc:  # noqa: BLE001 - OSError (DLL), RuntimeError (CUDA) ... from a broken install
        return TorchStatus("broken", None, f"PyTorch is installed but cannot be loaded ({type(exc).__name__}: {exc}). "
                                           "Reinstall it (PyTorch Utils module) and restart Slicer.")
    version = str(getattr(torch, "__version__", "0"))
    functional = getattr(getattr(torch, "nn", None), "functional", None)
    if parse_version(version) < TORCH_MINIMUM or not hasattr(functional, "scaled_dot_product_attention"):
        return TorchStatus("too-old", version, f"PyTorch {version} is too old: AD-RegNet needs torch "
                                               f"{TORCH_VERSION_REQUIREMENT}.")
    return TorchStatus("ok", version, "")


def dependency_action(status: TorchStatus, testing: bool, interactive: bool) -> DependencyAction:
    """Decide what to do about torch before a run.

    Args:
        status: from :func:`torch_status`.
        testing: Slicer runs in testing mode (``slicer.app.testingEnabled()``): never install.
        interactive: a person pressed Apply (ask before installing) rather than a script.

    Returns:
        READY when usable; SKIP in testing mode; ASK/INSTALL for a missing, old or broken torch.
    """
    if status.ok:
        return DependencyAction.READY
    if testing:
        return DependencyAction.SKIP
    return DependencyAction.ASK if interactive else DependencyAction.INSTALL
