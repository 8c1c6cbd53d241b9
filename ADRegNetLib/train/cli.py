r"""``adregnet train``: the command-line entry of the trainer (the lead wires ``train_main`` into the CLI)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["add_train_arguments", "train_main"]


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser``."""
    parser.add_argument("--config", default="configs/train_default.json", help="training config JSON")
    parser.add_argument("--out-dir", default=None, help="override out_dir of the config")
    parser.add_argument("--steps", type=int, default=None, help="override the number of steps")
    parser.add_argument("--time-limit-min", type=float, default=None, help="stop after this many minutes")
    parser.add_argument("--no-resume", action="store_true", help="start again even if a checkpoint exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def train_main(args: argparse.Namespace | Sequence[str] | None = None) -> Path:
    """Train AD-RegNet from a config; returns the path of the final weights.

    Args:
        args: parsed arguments (see :func:`add_train_arguments`) or an argv list.
    """
    if not isinstance(args, argparse.Namespace):
        args = add_train_arguments(argparse.ArgumentParser(prog="adregnet train")).parse_args(args)
    from .trainer import TrainConfig, Trainer

    cfg = TrainConfig.from_json(args.config)
    if args.out_dir:
        cfg.out_dir = args.out_dir
    if args.steps is not None:
        cfg.steps = args.steps
    if args.time_limit_min is not None:
        cfg.time_limit_min = args.time_limit_min
    if args.no_resume:
        cfg.resume = False
    if args.no_progress:
        cfg.progress = False
    path = Trainer(cfg).train()
    print(f"weights written to {path}")
    return path


if __name__ == "__main__":
    train_main()
