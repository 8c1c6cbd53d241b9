"""Registration losses: pure functions (:mod:`.functional`) and thin ``nn.Module`` wrappers (:mod:`.modules`)."""
from __future__ import annotations

from .functional import (bending_energy, box_filter, diffusion, folding_penalty, landmark_loss, local_ncc,
                         mind_loss, mind_ssc, mse, ngf, sample_field_at_points)
from .modules import (BendingEnergyLoss, DiffusionLoss, FoldingLoss, LandmarkLoss, LocalNCCLoss, MINDSSCLoss,
                      MSELoss, NGFLoss)
from .registry import SIMILARITIES, Similarity, get_similarity

__all__ = [
    "bending_energy", "box_filter", "diffusion", "folding_penalty", "landmark_loss", "local_ncc", "mind_loss",
    "mind_ssc", "mse", "ngf", "sample_field_at_points",
    "BendingEnergyLoss", "DiffusionLoss", "FoldingLoss", "LandmarkLoss", "LocalNCCLoss", "MINDSSCLoss", "MSELoss",
    "NGFLoss", "SIMILARITIES", "Similarity", "get_similarity",
]
