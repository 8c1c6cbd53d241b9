r"""Turn a training run into shippable weights (config + weights + metadata, no optimizer state).

    python -m ADRegNetLib.train.export --run runs/default --out Resources/weights/adregnet_default.pt

Reads ``<run>/checkpoint_last.pt`` (see :mod:`.trainer`) and the run's logs, and writes a checkpoint
in the :mod:`ADRegNetLib.model.checkpoint` format whose metadata records the training steps, wall
time, data sources, the training config and the last validation.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..model.checkpoint import save_model
from ..model.network import ADRegNet, ADRegNetConfig

__all__ = ["export_run", "main"]


def export_run(run_dir: str | Path, out: str | Path, hardware: Optional[str] = None) -> Path:
    """Write shippable weights from the last checkpoint of ``run_dir``; returns ``out``."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint_last.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"no training checkpoint {ckpt}; train first with `adregnet train --config ...`")
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = ADRegNet(ADRegNetConfig.from_dict(dict(payload["model_config"])))
    model.load_state_dict(payload["model"])
    train_cfg = payload.get("train_config", {})
    validation = []
    val_log = run_dir / "val_log.jsonl"
    if val_log.is_file():
        validation = [json.loads(line) for line in val_log.read_text().splitlines() if line.strip()]
    extra = {
        "training_steps": int(payload["step"]),
        "training_wall_s": round(float(payload.get("elapsed_s", 0.0)), 1),
        "training_hardware": hardware or f"CPU ({platform.machine()}), torch threads={train_cfg.get('num_threads')}",
        "training_data": list(train_cfg.get("sources", [])),
        "training_config": train_cfg,
        "last_validation": validation[-1] if validation else {},
    }
    return save_model(model, out, extra=extra)


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m ADRegNetLib.train.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="training output folder (holds checkpoint_last.pt)")
    parser.add_argument("--out", required=True, help="weights file to write")
    parser.add_argument("--hardware", default=None, help="hardware note stored in the metadata")
    args = parser.parse_args(argv)
    path = export_run(args.run, args.out, args.hardware)
    print(f"weights written to {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return path


if __name__ == "__main__":
    main()
