"""Resuming training: a resumed run matches an uninterrupted one, and a time limit counts the run itself.

(Split from ``test_train.py``: the trainer's resume behaviour.)
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ADRegNetLib.model import load_model
from ADRegNetLib.train.export import export_run
from ADRegNetLib.train.trainer import Trainer
from train_helpers import make_prepared, tiny_config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared"))


def test_trainer_runs_resumes_and_matches_an_uninterrupted_run(tmp_path, prepared):
    straight = Trainer(tiny_config(tmp_path / "a", prepared, 3))
    straight.train()
    interrupted = Trainer(tiny_config(tmp_path / "b", prepared, 2))
    interrupted.train()
    resumed = Trainer(tiny_config(tmp_path / "b", prepared, 3))
    assert resumed.step == 2
    resumed.train()
    assert resumed.step == 3
    for (name, pa), (_, pb) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(pa, pb), name
    rows = (tmp_path / "b" / "train_log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,loss,sup,vel,sim,epe_mm,identity_mm,sample_s,forward_s,backward_s") and len(rows) == 4
    shipped = load_model(export_run(tmp_path / "b", tmp_path / "ship" / "w.pt", hardware="test CPU"))
    assert shipped.metadata["training_steps"] == 3 and shipped.metadata["training_hardware"] == "test CPU"
    out = shipped(torch.rand(1, 1, 24, 24, 24), torch.rand(1, 1, 24, 24, 24))
    assert out["flow_norm"].shape == (1, 3, 24, 24, 24)
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        export_run(tmp_path / "nothing", tmp_path / "x.pt")


def test_time_limit_counts_this_run_not_the_checkpoints_earlier_runs(tmp_path, prepared):
    """A checkpoint that already trained for hours resumes under a 1-minute limit and still trains."""
    first = Trainer(tiny_config(tmp_path / "run", prepared, 1))
    first.train()
    payload = torch.load(first.checkpoint_path, weights_only=False)
    payload["elapsed_s"] = 3600.0  # as after an hour of earlier runs
    torch.save(payload, first.checkpoint_path)
    resumed = Trainer(tiny_config(tmp_path / "run", prepared, 3, time_limit_min=1.0))
    assert resumed.step == 1 and resumed.elapsed_s == 3600.0
    resumed.train()
    assert resumed.step == 3 and resumed.elapsed_s > 3600.0


def test_a_checkpoint_from_another_device_type_resumes_with_a_fresh_seed(tmp_path, prepared, capsys):
    """A CPU run's checkpoint resumed on a GPU (or back): the generator states differ in kind, so the
    resumed run reseeds its pairs (and says so) instead of failing on a state it cannot take."""
    first = Trainer(tiny_config(tmp_path / "run", prepared, 1))
    first.train()
    payload = torch.load(first.checkpoint_path, weights_only=False)
    assert payload["generator"].numel() > 16  # the CPU generator's Mersenne Twister state
    payload["generator"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's (seed, offset)
    torch.save(payload, first.checkpoint_path)
    resumed = Trainer(tiny_config(tmp_path / "run", prepared, 2))
    assert "generator state of another device type" in capsys.readouterr().out
    expected = torch.Generator().manual_seed(resumed.cfg.seed + 1)  # seed + 1000 * rank + the resumed step
    assert torch.equal(resumed.generator.get_state(), expected.get_state())
    resumed.train()
    assert resumed.step == 2
