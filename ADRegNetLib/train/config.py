r"""The training settings: one ``TrainConfig`` per run, read from a ``configs/train_*.json`` file.

What each setting does is described where it acts: the loss terms, second passes, memory layout and
distributed training in ``train/trainer.py``, the sampler's ranges in ``train/sampler.py``, the
architecture (``model``) in ``model/network.py``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config_keys import from_known_keys

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Training settings (a ``configs/train_*.json`` file holds these keys)."""

    out_dir: str = "runs/default"
    prepared_dir: str = "runs/prepared"
    seed: int = 0
    steps: int = 100000
    time_limit_min: Optional[float] = None
    lr: float = 5e-4
    num_threads: int = 2
    batch_size: int = 1
    crop_zyx: list = field(default_factory=lambda: [64, 64, 64])
    crop_sizes: Optional[list] = None
    mean_disp_mm: list = field(default_factory=lambda: [0.5, 7.0])
    smoothness_mm: list = field(default_factory=lambda: [20.0, 60.0])
    lambda_sup: float = 1.0
    lambda_vel: float = 0.25
    lambda_sim: float = 1.0
    lambda_reg: float = 0.0
    background_weight: float = 0.25
    grad_clip: Optional[float] = 10.0
    ncc_window: int = 5
    sampler_workers: int = 0
    checkpoint_every: int = 50
    export_every_min: float = 10.0
    export_path: Optional[str] = None
    val_pairs: int = 12
    val_seed: int = 1234
    init_weights: Optional[str] = None
    init_matching_only: bool = False
    channels_last: bool = True
    second_pass_probability: float = 0.0
    refine_downsample: Optional[float] = None
    subject_augmentation: float = 0.0
    val_passes: int = 1
    model: dict = field(default_factory=dict)
    resume: bool = True
    save_all_ranks: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return from_known_keys(cls, d, "training")

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        return cls.from_dict(json.loads(path.read_text()))
