r"""The similarity registry: one name -> one measure, used by the engine and the trainer.

Adding a similarity measure means adding one entry here (and its function in ``functional.py``).
A measure with ``features`` is SSD between feature volumes (MIND-SSC, raw intensities): the
engine's optimiser then uses the analytic SSD gradient on those features; one without ``features``
is optimised through its loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from . import functional as LF
from .modules import LocalNCCLoss, MINDSSCLoss, MSELoss, NGFLoss

__all__ = ["Similarity", "SIMILARITIES", "get_similarity"]


@dataclass(frozen=True)
class Similarity:
    """One similarity measure.

    Attributes:
        name: registry key.
        loss: ``nn.Module`` class; ``loss()(fixed, warped, mask=None)`` on (N, 1, Z, Y, X) images
            returns a 0-d tensor to minimise.
        features: optional ``features(image (N, 1, Z, Y, X)) -> (N, C, Z, Y, X)``; when set, the
            measure is the mean squared difference of these features.
        description: one line for users.
    """

    name: str
    loss: type[nn.Module]
    features: Optional[Callable[[torch.Tensor], torch.Tensor]]
    description: str


SIMILARITIES: dict[str, Similarity] = {
    "mind": Similarity("mind", MINDSSCLoss, LF.mind_ssc,
                       "MIND-SSC descriptors compared by SSD: robust to intensity changes and across modalities"),
    "mse": Similarity("mse", MSELoss, lambda image: image, "mean squared intensity difference (same modality and scale)"),
    "lncc": Similarity("lncc", LocalNCCLoss, None, "local normalised cross-correlation (same modality)"),
    "ngf": Similarity("ngf", NGFLoss, None, "normalised gradient fields (edges; multi-modal)"),
}


def get_similarity(name: str) -> Similarity:
    """The registry entry for ``name``; a ``ValueError`` listing the known names otherwise."""
    try:
        return SIMILARITIES[name]
    except KeyError:
        raise ValueError(f"unknown similarity {name!r}; choose one of {', '.join(SIMILARITIES)}") from None
