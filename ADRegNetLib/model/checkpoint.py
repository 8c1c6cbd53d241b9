r"""Saving and loading AD-RegNet weights together with their architecture settings.

A checkpoint is a ``torch.save`` dict of plain types (loaded with ``weights_only=True``)::

    {"format": "adregnet-checkpoint", "format_version": 1,
     "config": ADRegNetConfig.to_dict(), "state_dict": {...}, "metadata": {...}}

``metadata`` holds what a reader needs to trust the weights: training steps, data, date, versions.

Where the default weights are looked up (:func:`weights_search_paths`, first existing file wins):

1. the ``ADREGNET_WEIGHTS`` environment variable (a file path), when set;
2. ``<ADRegNetLib>/../Resources/weights/adregnet_default.pt`` — the repository checkout, and the
   Slicer module layout where ``ADRegNetLib`` sits inside the module folder next to ``Resources``;
3. ``<ADRegNetLib>/../ADRegNet/Resources/weights/adregnet_default.pt`` — a checkout whose Slicer
   module folder holds the weights;
4. ``<ADRegNetLib>/Resources/weights/adregnet_default.pt`` — weights packaged inside the library.

The **residual-motion weights** (``adregnet_residual.pt``, :func:`default_residual_weights_path`) sit
next to the default weights found there: they were trained to follow those weights (a last pass on
the small motion they leave), so they are looked up beside them and nowhere else.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import torch

from .network import ADRegNet, ADRegNetConfig

__all__ = ["CheckpointError", "save_model", "load_model", "load_checkpoint", "load_matching", "default_weights_path",
           "weights_search_paths", "default_residual_weights_path", "WEIGHTS_ENV", "DEFAULT_WEIGHTS_NAME",
           "RESIDUAL_WEIGHTS_NAME"]

FORMAT = "adregnet-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_ENV = "ADREGNET_WEIGHTS"
DEFAULT_WEIGHTS_NAME = "adregnet_default.pt"
RESIDUAL_WEIGHTS_NAME = "adregnet_residual.pt"


class CheckpointError(ValueError):
    """A weights file cannot be used; the message names the file and the fix."""


def weights_search_paths() -> list[Path]:
    """Candidate paths of the default weights, in lookup order (see the module docstring)."""
    lib = Path(__file__).resolve().parents[1]
    paths = []
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        paths.append(Path(env).expanduser())
    paths += [
        lib.parent / "Resources" / "weights" / DEFAULT_WEIGHTS_NAME,
        lib.parent / "ADRegNet" / "Resources" / "weights" / DEFAULT_WEIGHTS_NAME,
        lib / "Resources" / "weights" / DEFAULT_WEIGHTS_NAME,
    ]
    return paths


def default_weights_path() -> Path:
    """The first existing default weights file; if none exists, the first candidate (for the error message)."""
    paths = weights_search_paths()
    for p in paths:
        if p.is_file():
            return p
    return paths[0]


def default_residual_weights_path() -> Path:
    """The residual-motion weights: ``adregnet_residual.pt`` beside the default weights (may not exist)."""
    return default_weights_path().with_name(RESIDUAL_WEIGHTS_NAME)


def save_model(model: ADRegNet, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s config, weights and metadata to ``path`` (parent folders are created).

    Args:
        model: the network.
        path: output file (``.pt``).
        extra: metadata of plain types (str, numbers, lists, dicts) merged into ``metadata``.

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .. import __version__

    metadata = {"saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "adregnet_version": __version__, "torch_version": str(torch.__version__),
                "parameters": int(sum(p.numel() for p in model.parameters()))}
    metadata.update(extra or {})
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
               "state_dict": state, "metadata": metadata}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the real name
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a checkpoint dict (see the module docstring) without building the model.

    Raises:
        FileNotFoundError: the file does not exist (message says how to get one).
        CheckpointError: the file is truncated, not a checkpoint, or of an unknown version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"AD-RegNet weights not found: {path}. Train them with `adregnet train --config configs/train_default.json`, "
            f"point the {WEIGHTS_ENV} environment variable at a weights file, or reinstall the extension "
            f"(it ships Resources/weights/{DEFAULT_WEIGHTS_NAME})."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file (IndexError for plain text, ...)
        # torch's own text is long and suggests weights_only=False, which would run code from the file: not shown
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        kind = ("not a file of tensors torch can load safely" if "weights only load failed" in str(exc).lower()
                else f"torch: {first.split('. ')[0][:150]}")
        raise CheckpointError(
            f"cannot read AD-RegNet weights {path}: the file is truncated or not a torch checkpoint ({kind}). "
            "Give a .pt file saved by adregnet train (or the shipped Resources/weights), copy the file again, or "
            "retrain it."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an AD-RegNet checkpoint (no '{FORMAT}' marker); "
                              "save weights with ADRegNetLib.model.checkpoint.save_model")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {payload.get('format_version')}, this "
                              f"ADRegNetLib reads version {FORMAT_VERSION}; update ADRegNetLib or retrain")
    for key in ("config", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{path} lacks '{key}'; the file is damaged: copy it again or retrain")
    return payload


def load_matching(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy into ``model`` the tensors of ``state_dict`` whose name and shape it has; leave the rest.

    Used to start an architecture variant (an ablation without one part) from a full model's weights:
    the parts both share start trained, the variant's own parts keep their fresh initialisation.

    Returns:
        {"loaded": names copied, "fresh": the model's names not in ``state_dict`` (or of another
        shape), "unused": names of ``state_dict`` the model has no place for}.
    """
    own = model.state_dict()
    matching = {k: v for k, v in state_dict.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    model.load_state_dict(matching, strict=False)
    return {"loaded": sorted(matching), "fresh": sorted(set(own) - set(matching)),
            "unused": sorted(set(state_dict) - set(matching))}


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> ADRegNet:
    """Build the network from a checkpoint's config and load its weights (eval mode).

    Args:
        path: weights file; None = :func:`default_weights_path`.
        device: where to put the model.

    Returns:
        The model, with ``model.metadata`` set to the checkpoint's metadata dict.

    Raises:
        FileNotFoundError, CheckpointError: see :func:`load_checkpoint`; also when the config and
        the weights disagree.
    """
    path = Path(path) if path is not None else default_weights_path()
    payload = load_checkpoint(path)
    try:
        config = ADRegNetConfig.from_dict(dict(payload["config"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its architecture config is not valid for this ADRegNetLib ({exc}); "
                              "use weights saved by this version or retrain") from exc
    model = ADRegNet(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{path}: the weights do not match the saved architecture config ({' '.join(first[:3])[:400]}). "
            "The file was edited or saved by another version: retrain, or use the matching ADRegNetLib version."
        ) from exc
    model.metadata = dict(payload.get("metadata", {}))
    return model.to(device).eval()
