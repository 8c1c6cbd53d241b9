r"""``adregnet train``: the command-line entry of the trainer (also ``python -m ADRegNetLib.train.cli``).

Multi-process: ``torchrun --nproc_per_node=N -m ADRegNetLib.train.cli --config ...`` (see
:mod:`.trainer`: DistributedDataParallel, NCCL on GPUs, gloo on CPUs).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

# ADRegNetLib.numbers, not ADRegNetLib.io.numbers: ADRegNetLib/io/__init__.py imports SimpleITK, which the GPU
# host that trains does not have.
from ..numbers import argument_type

__all__ = ["add_train_arguments", "train_main"]


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser``."""
    parser.add_argument("--config", default="configs/train_default.json", help="training config JSON")
    parser.add_argument("--out-dir", default=None, help="override out_dir of the config")
    parser.add_argument("--prepared", default=None, help="override prepared_dir (volumes from train.prep)")
    parser.add_argument("--steps", type=argument_type(whole=True, example="2000", positive=True), default=None,
                        help="override the number of steps")
    parser.add_argument("--lr", type=argument_type(example="3e-5", positive=True), default=None,
                        help="override the learning rate (a resumed run takes it)")
    parser.add_argument("--time-limit-min", type=argument_type(example="90", positive=True), default=None,
                        help="stop after this many minutes of this run (a resumed run counts from its start)")
    parser.add_argument("--export", default=None, help="override export_path (weights written when held-out TRE improves)")
    parser.add_argument("--train-device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--no-resume", action="store_true", help="start again even if a checkpoint exists")
    parser.add_argument("--no-progress", action="store_true", help="(kept for compatibility; the log is the progress)")
    return parser


def train_main(args: argparse.Namespace | Sequence[str] | None = None) -> Path:
    """Train AD-RegNet from a config; returns the path of the last checkpoint.

    Args:
        args: parsed arguments (see :func:`add_train_arguments`) or an argv list.
    """
    if not isinstance(args, argparse.Namespace):
        args = add_train_arguments(argparse.ArgumentParser(prog="adregnet train")).parse_args(args)
    from .config import TrainConfig
    from .trainer import Trainer

    cfg = TrainConfig.from_json(args.config)
    for key, value in (("out_dir", args.out_dir), ("prepared_dir", args.prepared), ("steps", args.steps),
                       ("lr", args.lr),
                       ("time_limit_min", args.time_limit_min), ("export_path", args.export)):
        if value is not None:
            setattr(cfg, key, value)
    if args.no_resume:
        cfg.resume = False
    path = Trainer(cfg, device=getattr(args, "train_device", "cpu")).train()
    print(f"checkpoint written to {path}")
    return path


if __name__ == "__main__":
    train_main()
