"""Shared pieces of the training tests: tiny prepared volumes, a tiny network config, a tiny run."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import torch

from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.train import synthetic as S
from ADRegNetLib.train.prep import save_volume
from ADRegNetLib.train.trainer import TrainConfig

TINY_MODEL = {"channels": [8, 8, 16, 16], "decoder_channels": [16, 8, 8], "integration_resolution": "network",
              "integration_steps": 4}


def make_prepared(folder: Path, shape=(40, 40, 40), spacing=3.0) -> Path:
    """Tiny prepared volumes: 2 train (one with a real-looking image), 1 held out."""
    gen = torch.Generator().manual_seed(0)
    g = Geometry(shape[::-1], spacing=(spacing,) * 3)
    for i, split in enumerate(("train", "train", "heldout")):
        lab = S.random_label_map(shape, gen, n_labels=5, blob_voxels=6)[0, 0].numpy()
        image = S.synth_image_from_labels(torch.as_tensor(lab)[None, None], gen)[0, 0].numpy() if i == 0 else None
        save_volume(folder / f"vol{i}.npz", image, lab, g, "brain_t1" if i == 0 else "shapes", split)
    return folder


def tiny_config(out_dir: Path, prepared: Path, steps: int, **kw) -> TrainConfig:
    """A few-step run of the tiny network on 24^3 crops, checkpointing every step."""
    return TrainConfig(out_dir=str(out_dir), prepared_dir=str(prepared), steps=steps, crop_zyx=[24, 24, 24],
                       batch_size=2, checkpoint_every=1, export_every_min=0, num_threads=1, model=TINY_MODEL, **kw)


def sitk_modules_loaded(code: str, cwd: Path) -> list[str]:
    """Run ``code`` in a fresh Python and return the SimpleITK / ``ADRegNetLib.io`` modules it loaded (the training
    path runs on a GPU host without SimpleITK: it must load none)."""
    probe = code + "\nimport sys\nprint(sorted(m for m in sys.modules if m == 'SimpleITK' or m.startswith('ADRegNetLib.io')))\n"
    done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip())
