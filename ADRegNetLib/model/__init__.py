"""AD-RegNet network: blocks, attention, the network and its checkpoint format."""
from __future__ import annotations

from .checkpoint import CheckpointError, default_weights_path, load_model, save_model, weights_search_paths
from .network import ADRegNet, ADRegNetConfig

__all__ = ["ADRegNet", "ADRegNetConfig", "CheckpointError", "default_weights_path", "load_model", "save_model",
           "weights_search_paths"]
