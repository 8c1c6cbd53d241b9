r"""Training loop of AD-RegNet on synthetic pairs with known fields.

Loss (per pair, batch 1)::

    L = lambda_sim * L_sim(fixed, moving o phi) + lambda_reg * L_reg(u_mm) + lambda_landmark * L_landmark(u_mm)

``L_sim``: ``lncc`` (:func:`~ADRegNetLib.losses.functional.local_ncc`), ``mind``
(:func:`~ADRegNetLib.losses.functional.mind_ssc` + SSD) or ``mse``; ``L_reg``: ``diffusion`` or
``bending`` on the displacement in mm; ``L_landmark``: mean distance (mm) between x_k + u(x_k) and
the true y_k of the synthetic field. Adam, fixed seeds, resumable checkpoints (model, optimizer,
step, random states) in ``out_dir/checkpoint_last.pt``, a CSV of losses per step (``train_log.csv``)
and a JSON-lines validation log (``val_log.jsonl``).
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..losses import functional as LF
from ..model.checkpoint import save_model
from ..model.network import ADRegNet, ADRegNetConfig
from ..spatial.flow import flow_norm_to_disp_mm
from ..spatial.warp import warp_norm
from .data import PairSampler, load_sources
from .evaluate import evaluate_model, validation_pairs
from .synthetic import SyntheticPair

__all__ = ["TrainConfig", "Trainer", "pair_loss"]


@dataclass
class TrainConfig:
    """Training settings (a ``configs/train_*.json`` file holds these keys)."""

    out_dir: str = "runs/default"
    seed: int = 0
    steps: int = 4000
    time_limit_min: Optional[float] = None
    lr: float = 3e-4
    num_threads: int = 2
    similarity: str = "lncc"
    ncc_window: int = 7
    regularizer: str = "diffusion"
    lambda_sim: float = 1.0
    lambda_reg: float = 0.5
    lambda_landmark: float = 0.2
    sources: list = field(default_factory=lambda: ["brain_t1", "synthseg", "lung_ct", "shapes"])
    data_root: Optional[str] = None
    spacing_mm: float = 2.5
    crop_zyx: list = field(default_factory=lambda: [64, 64, 64])
    max_disp_mm: list = field(default_factory=lambda: [6.0, 20.0])
    smoothness_mm: list = field(default_factory=lambda: [20.0, 50.0])
    n_landmarks: int = 1024
    checkpoint_every: int = 50
    validate_every: int = 200
    val_pairs: int = 8
    val_seed: int = 1234
    model: dict = field(default_factory=dict)
    resume: bool = True
    progress: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known keys: {sorted(known)}")
        cfg = cls(**d)
        if cfg.similarity not in ("lncc", "mind", "mse"):
            raise ValueError(f"similarity must be 'lncc', 'mind' or 'mse', got {cfg.similarity!r}")
        if cfg.regularizer not in ("diffusion", "bending"):
            raise ValueError(f"regularizer must be 'diffusion' or 'bending', got {cfg.regularizer!r}")
        return cfg

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        return cls.from_dict(json.loads(path.read_text()))


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32)[None, None]


def pair_loss(model: ADRegNet, pair: SyntheticPair, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of one pair and its terms (floats)."""
    fixed, moving = _to_tensor(pair.fixed.array), _to_tensor(pair.moving.array)
    g = pair.fixed.geometry
    out = model(fixed, moving)
    flow = out["flow_norm"]
    warped = warp_norm(moving, flow)
    disp = flow_norm_to_disp_mm(flow, g)
    if cfg.similarity == "lncc":
        l_sim = LF.local_ncc(fixed, warped, cfg.ncc_window)
    elif cfg.similarity == "mind":
        l_sim = LF.mind_loss(LF.mind_ssc(fixed), LF.mind_ssc(warped))
    else:
        l_sim = LF.mse(fixed, warped)
    l_reg = LF.diffusion(disp, g.spacing) if cfg.regularizer == "diffusion" else LF.bending_energy(disp, g.spacing)
    l_lm = LF.landmark_loss(disp, g, pair.fixed_points, pair.moving_points)
    loss = cfg.lambda_sim * l_sim + cfg.lambda_reg * l_reg + cfg.lambda_landmark * l_lm
    terms = {"loss": loss.item(), "sim": l_sim.item(), "reg": l_reg.item(), "landmark_mm": l_lm.item(),
             "identity_mm": float(np.linalg.norm(pair.moving_points - pair.fixed_points, axis=1).mean())}
    return loss, terms


class Trainer:
    """Owns the model, optimizer, data and logs of one training run (see the module docstring)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out_dir = Path(cfg.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.model = ADRegNet(ADRegNetConfig.from_dict(dict(cfg.model)))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.step = 0
        self.elapsed_s = 0.0
        crop = tuple(int(c) for c in cfg.crop_zyx)
        self.sampler = PairSampler(
            load_sources(cfg.sources, cfg.data_root, cfg.spacing_mm, np.random.default_rng(cfg.seed + 1), crop),
            crop_zyx=crop, max_disp_mm=tuple(cfg.max_disp_mm), smoothness_mm=tuple(cfg.smoothness_mm),
            n_landmarks=cfg.n_landmarks)
        self._val_pairs: Optional[list[SyntheticPair]] = None
        self._last_validation: dict = {}
        self.checkpoint_path = self.out_dir / "checkpoint_last.pt"
        if cfg.resume and self.checkpoint_path.is_file():
            self.load_checkpoint(self.checkpoint_path)

    # ------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: Optional[Path] = None) -> Path:
        path = Path(path or self.checkpoint_path)
        payload = {
            "model": self.model.state_dict(), "model_config": self.model.config.to_dict(),
            "optimizer": self.optimizer.state_dict(), "step": self.step, "elapsed_s": self.elapsed_s,
            "numpy_rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "train_config": asdict(self.cfg),
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if ADRegNetConfig.from_dict(dict(payload["model_config"])) != self.model.config:
            raise ValueError(f"{path} was written with another model config; delete it or use another out_dir")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = int(payload["step"])
        self.elapsed_s = float(payload.get("elapsed_s", 0.0))
        self.rng.bit_generator.state = payload["numpy_rng"]
        torch.set_rng_state(payload["torch_rng"])

    # ------------------------------------------------------------------------------- validation
    def validate(self) -> dict:
        if self._val_pairs is None:
            self._val_pairs = validation_pairs(self.cfg.val_pairs, self.cfg.val_seed, self.cfg.spacing_mm,
                                               tuple(self.cfg.crop_zyx), self.cfg.data_root)
        self.model.eval()
        result = evaluate_model(self.model, self._val_pairs)
        self.model.train()
        return result

    # ------------------------------------------------------------------------------------ train
    def train(self) -> Path:
        """Run until ``steps`` (or ``time_limit_min``); returns the final weights path."""
        cfg = self.cfg
        log_path = self.out_dir / "train_log.csv"
        new_log = not log_path.is_file() or self.step == 0
        log = open(log_path, "w" if new_log else "a", newline="")
        writer = csv.writer(log)
        if new_log:
            writer.writerow(["step", "loss", "sim", "reg", "landmark_mm", "identity_mm", "seconds", "elapsed_s"])
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="adregnet train", dynamic_ncols=True)
        self.model.train()
        start_elapsed, t_start = self.elapsed_s, time.perf_counter()
        try:
            while self.step < cfg.steps:
                if cfg.time_limit_min is not None and self.elapsed_s >= cfg.time_limit_min * 60:
                    break
                t0 = time.perf_counter()
                pair = self.sampler.sample(self.rng)
                loss, terms = pair_loss(self.model, pair, cfg)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.step += 1
                self.elapsed_s = start_elapsed + time.perf_counter() - t_start
                writer.writerow([self.step, *(f"{terms[k]:.6g}" for k in ("loss", "sim", "reg", "landmark_mm", "identity_mm")),
                                 f"{time.perf_counter() - t0:.3f}", f"{self.elapsed_s:.1f}"])
                if self.step % 10 == 0:
                    log.flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{terms['loss']:.3f}", lm=f"{terms['landmark_mm']:.2f}")
                if self.step % cfg.checkpoint_every == 0:
                    log.flush()
                    self.save_checkpoint()
                if cfg.validate_every and self.step % cfg.validate_every == 0:
                    self._log_validation()
        finally:
            if bar is not None:
                bar.close()
            log.close()
        self.save_checkpoint()
        final = {}
        if cfg.validate_every:
            final = self._last_validation if self._last_validation.get("step") == self.step else self._log_validation()
        return save_model(self.model, self.out_dir / "model_final.pt", extra={
            "training_steps": self.step, "training_wall_s": round(self.elapsed_s, 1),
            "training_hardware": f"CPU, torch threads={cfg.num_threads}",
            "training_data": list(cfg.sources), "training_config": asdict(cfg), "final_validation": final,
        })

    def _log_validation(self) -> dict:
        result = {"step": self.step, "elapsed_s": round(self.elapsed_s, 1), **self.validate()}
        with open(self.out_dir / "val_log.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        self._last_validation = result
        return result
