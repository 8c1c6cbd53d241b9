r"""Time the parts of a training step (sampling, forward + loss, backward, optimizer) on this machine.

    OMP_NUM_THREADS=2 python -m ADRegNetLib.train.profile_step --config configs/train_default.json --steps 20

Runs the trainer's own code for ``--steps`` steps after 3 warm-up steps (weights are not saved) and
prints the mean and median of each part, in seconds per step and per pair, with the machine's load
average so numbers from a busy machine read as such.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np
import torch

from ..numbers import argument_type
from .config import TrainConfig
from .trainer import Trainer, _pick_crop, batch_loss

__all__ = ["profile_steps", "build_parser", "main"]


def profile_steps(cfg: TrainConfig, steps: int = 20, warmup: int = 3) -> dict:
    """Seconds of each part of a step: dict of name -> list of per-step times."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(replace(cfg, out_dir=tmp, resume=False, export_every_min=0.0, init_weights=None))
        times: dict[str, list] = {"sample": [], "forward_loss": [], "backward": [], "optimizer": [], "step": []}
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            pairs = trainer.sampler.sample(cfg.batch_size, trainer.generator, _pick_crop(cfg.crop_sizes, trainer.generator))
            t1 = time.perf_counter()
            loss, _ = batch_loss(trainer.model, pairs, cfg)
            t2 = time.perf_counter()
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
            trainer.optimizer.step()
            t4 = time.perf_counter()
            if i >= warmup:
                for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                    times[key].append(dt)
    return times


def build_parser() -> argparse.ArgumentParser:
    """The command's options; numbers are read strictly (``--steps 1_0`` was 10 to Python's ``int``)."""
    parser = argparse.ArgumentParser(prog="python -m ADRegNetLib.train.profile_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/train_default.json")
    parser.add_argument("--steps", type=argument_type(whole=True, example="20", positive=True), default=20)
    parser.add_argument("--threads", type=argument_type(whole=True, example="2", positive=True), default=None,
                        help="torch threads (default: the config's)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    cfg = TrainConfig.from_json(args.config)
    if args.threads:
        cfg.num_threads = args.threads
    load0 = os.getloadavg()[0]
    times = profile_steps(cfg, args.steps)
    load1 = os.getloadavg()[0]
    crops = cfg.crop_sizes or [cfg.crop_zyx]
    print(f"{args.steps} steps, batch {cfg.batch_size}, crops {crops}, torch threads {cfg.num_threads}, "
          f"load average {load0:.1f} -> {load1:.1f} (cores: {os.cpu_count()})")
    print("| part | mean s/step | median s/step | mean s/pair |")
    print("|---|---|---|---|")
    for key, vals in times.items():
        print(f"| {key} | {np.mean(vals):.3f} | {np.median(vals):.3f} | {np.mean(vals) / cfg.batch_size:.3f} |")
    return times


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    main()
