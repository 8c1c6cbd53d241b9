r"""``adregnet train``: the command-line entry of the trainer (also ``python -m ADRegNetLib.train.cli``).

Multi-process: ``torchrun --nproc_per_node=N -m ADRegNetLib.train.cli --config ...`` (see
:mod:`.trainer`: DistributedDataParallel, NCCL on GPUs, gloo on CPUs).
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = ["add_train_arguments", "train_main"]

# Numbers on the command line are read as strictly as every other adregnet command reads them (Python's int and
# float take '1_0' as 10, and 'nan', 'inf'). Those commands use ADRegNetLib.io.numbers, but importing it runs
# ADRegNetLib/io/__init__.py, which imports SimpleITK, and the GPU host that trains has none: so the same rules,
# in the same words, are repeated here (Testing/lib/test_train_cli.py checks that both agree).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_WHOLE = re.compile(r"[+-]?\d+", re.ASCII)
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def _number_problem(text: str, whole: bool) -> Optional[str]:
    """Why ``text`` is not a plain finite decimal number (``whole``: a whole one), or None (as io.numbers)."""
    token = str(text).strip()
    if not token:
        return "is empty"
    if "_" in token:
        return "holds '_', which Python would read as a digit separator (1_0 as 10)"
    if _NOT_FINITE.fullmatch(token):
        return "is not a finite number"
    if not _NUMBER.fullmatch(token):
        if "," in token and _NUMBER.fullmatch(token.replace(",", ".", 1)):
            return "uses ',' as the decimal point"
        if not token.isascii():
            return "holds characters other than the ASCII digits, '.', '+', '-' and 'e'"
        return "is not a number"
    if not math.isfinite(float(token)):
        return "is beyond the range of a 64-bit floating-point number (about 1.8e308)"
    if whole and not _WHOLE.fullmatch(token):
        return "is not a whole number"
    return None


def _strict(whole: bool, example: str) -> Callable[[str], float | int]:
    """An argparse ``type``: a plain finite number above 0 (``whole``: a whole number of at least 1)."""
    fix = (f"write it as a plain whole number (e.g. {example})" if whole else
           f"write it as a plain decimal number with '.' as the decimal point (e.g. {example})")

    def read(text: str) -> float | int:
        problem = _number_problem(text, whole)
        if problem is None:
            value = int(text) if whole else float(text)
            if whole and value < 1:
                problem = "is not at least 1"
            elif not whole and value <= 0:
                problem = "is not above 0"
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{str(text).strip()!r} {problem}; {fix}")
        return value

    read.__name__ = "whole number" if whole else "number"  # argparse names the type in some messages
    return read


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser``."""
    parser.add_argument("--config", default="configs/train_default.json", help="training config JSON")
    parser.add_argument("--out-dir", default=None, help="override out_dir of the config")
    parser.add_argument("--prepared", default=None, help="override prepared_dir (volumes from train.prep)")
    parser.add_argument("--steps", type=_strict(True, "2000"), default=None, help="override the number of steps")
    parser.add_argument("--lr", type=_strict(False, "3e-5"), default=None,
                        help="override the learning rate (a resumed run takes it)")
    parser.add_argument("--time-limit-min", type=_strict(False, "90"), default=None,
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
