r"""The similarity registry: one name -> one differentiable measure, for scripts and training code.

Each entry pairs an ``nn.Module`` loss with, for SSD-type measures, the feature map it compares
(MIND-SSC, raw intensities). The registry is a catalogue, not the engine's dispatch: the engine's
instance optimisation uses the analytic SSD gradient of ``losses.features`` (MIND-SSC or intensity
features, chosen in ``engine/pipeline.py`` from the preset's ``similarity``, "mind" or "mse" of
this registry), its refinement ``losses.lncc`` / ``losses.ngf`` directly, and the trainer
``losses.functional``. Adding a measure here makes it available to those scripts; the engine needs
its own analytic gradient for it.
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
