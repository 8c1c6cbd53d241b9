"""Multi-process training: ``torchrun --nproc_per_node=2`` on the CPU (gloo) keeps both ranks identical."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ADRegNetLib.model.network import ADRegNet, ADRegNetConfig
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.train import synthetic as S
from ADRegNetLib.train.prep import save_volume

REPO = Path(__file__).resolve().parents[2]
MODEL = {"channels": [8, 8, 16, 16], "decoder_channels": [16, 8, 8], "integration_resolution": "network",
         "integration_steps": 3}


def test_torchrun_two_cpu_processes_end_with_identical_weights(tmp_path):
    gen = torch.Generator().manual_seed(0)
    shape = (24, 24, 24)
    for i in range(2):
        lab = S.random_label_map(shape, gen, n_labels=4, blob_voxels=6)[0, 0].numpy()
        save_volume(tmp_path / "prepared" / f"v{i}.npz", None, lab, Geometry(shape, spacing=(3.0,) * 3), "shapes",
                    "train")
    cfg = {"out_dir": str(tmp_path / "run"), "prepared_dir": str(tmp_path / "prepared"), "steps": 3,
           "crop_zyx": [16, 16, 16], "batch_size": 1, "export_every_min": 0, "num_threads": 1,
           "checkpoint_every": 100, "save_all_ranks": True, "model": MODEL}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "ADRegNetLib.train.cli", "--config", str(tmp_path / "c.json")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    w0 = torch.load(tmp_path / "run" / "rank0_weights.pt", weights_only=True)
    w1 = torch.load(tmp_path / "run" / "rank1_weights.pt", weights_only=True)
    torch.manual_seed(0)
    init = ADRegNet(ADRegNetConfig.from_dict(MODEL)).state_dict()
    assert w0.keys() == w1.keys() == init.keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    assert any(not torch.equal(w0[n], init[n]) for n in w0), "training did not change the weights"
    rows = (tmp_path / "run" / "train_log.csv").read_text().strip().splitlines()
    assert len(rows) == 4  # rank 0 logs every step; rank 1 writes nothing
    assert np.isfinite([float(r.split(",")[1]) for r in rows[1:]]).all()
