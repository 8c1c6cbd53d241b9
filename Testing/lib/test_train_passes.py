"""Network passes in training and evaluation: second-pass batches score the two passes composed,
the second pass may run finer (``refine_downsample``), validation and ``evaluate`` use the passes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ADRegNetLib.spatial.warp import warp_norm
from ADRegNetLib.train import synthetic as S
from ADRegNetLib.train.sampler import PairSampler, load_prepared
from ADRegNetLib.train.trainer import TrainConfig, Trainer, batch_loss, second_pass_inputs
from train_helpers import TINY_MODEL, make_prepared, tiny_config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared"))


class _FieldModel(torch.nn.Module):
    """Predicts ``scale`` times a fixed normalised field (on the input grid and at half of it)."""

    def __init__(self, flow_norm: torch.Tensor):
        super().__init__()
        self.flow = flow_norm
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, fixed, moving, input_downsample=None):
        self.downsample = input_downsample
        half = tuple(s // 2 for s in fixed.shape[2:])
        flow = self.flow * self.scale
        net = torch.nn.functional.interpolate(flow, size=half, mode="trilinear", align_corners=True)
        return {"flow_norm": flow, "flow_norm_network": net, "levels": [net]}


def test_second_pass_batches_warp_by_the_first_prediction_and_score_the_composed_field(prepared):
    pairs = PairSampler(load_prepared(prepared), (32, 32, 32)).sample(2, torch.Generator().manual_seed(5))
    cfg = TrainConfig(lambda_sim=0.0)
    truth = S.mm_to_norm(pairs.disp_mm, pairs.spacing_mm)
    second, first = second_pass_inputs(_FieldModel(truth), pairs)
    assert torch.equal(first, truth) and first.grad_fn is None
    # the first pass was perfect: the warped moving labels match the fixed ones far better (up to
    # nearest-neighbour sampling and the crop's edge; the images differ by their intensity changes)
    assert float((second.moving_labels != pairs.fixed_labels).float().mean()) < 0.5 * float(
        (pairs.moving_labels != pairs.fixed_labels).float().mean())
    assert torch.allclose(second.moving, warp_norm(pairs.moving, truth))
    assert second.moving_labels.dtype == pairs.moving_labels.dtype
    assert torch.equal(second.fixed, pairs.fixed) and torch.equal(second.disp_mm, pairs.disp_mm)
    # a second pass that adds nothing keeps the first pass's error (here: none), and gets no velocity term
    still = _FieldModel(torch.zeros_like(truth))
    loss, terms = batch_loss(still, second, cfg, first)
    assert terms["epe_mm"] < 0.02 < terms["identity_mm"] and "vel" not in terms
    _, alone = batch_loss(still, pairs, cfg)
    assert alone["epe_mm"] == pytest.approx(alone["identity_mm"], rel=1e-4) and "vel" in alone
    # half the first pass, then a second pass predicting the rest: the composed error is small and differentiable
    half = truth * 0.5
    second, first = second_pass_inputs(_FieldModel(half), pairs)
    rest = _FieldModel(half)
    loss, terms = batch_loss(rest, second, cfg, first)
    assert terms["epe_mm"] < 0.25 * terms["identity_mm"] and rest.downsample is None
    batch_loss(rest, second, TrainConfig(lambda_sim=0.0, refine_downsample=1.5), first)
    assert rest.downsample == 1.5  # the second pass at the refinement resolution
    batch_loss(rest, pairs, TrainConfig(lambda_sim=0.0, refine_downsample=1.5))
    assert rest.downsample is None  # first-pass batches at the network's own
    loss.backward()
    assert rest.scale.grad is not None and torch.isfinite(rest.scale.grad)


def test_trainer_trains_second_passes_and_validates_with_two_passes(tmp_path, prepared):
    trainer = Trainer(tiny_config(tmp_path / "run", prepared, 2, second_pass_probability=1.0, val_passes=2,
                                   val_pairs=2, refine_downsample=1.0))
    trainer.train()
    rows = (tmp_path / "run" / "train_log.csv").read_text().strip().splitlines()
    assert rows[0].endswith(",pass") and [r.split(",")[-1] for r in rows[1:]] == ["2", "2"]
    assert all(r.split(",")[3] == "nan" for r in rows[1:])  # no velocity term on second-pass batches
    result = trainer.validate()
    assert np.isfinite(result["tre_mm"]) and result["pairs"] == 2
    one_pass = Trainer(tiny_config(tmp_path / "run", prepared, 2, val_pairs=2))  # resumes the same weights
    assert one_pass.step == 2 and one_pass._val_key() != trainer._val_key()  # another validation: best reset


def test_evaluate_cli_gives_a_row_per_pass_count_and_refinement_resolution(tmp_path, prepared):
    from ADRegNetLib.model.checkpoint import save_model
    from ADRegNetLib.model.network import ADRegNet, ADRegNetConfig
    from ADRegNetLib.train.evaluate import main as evaluate_main

    torch.manual_seed(0)
    weights = save_model(ADRegNet(ADRegNetConfig.from_dict(TINY_MODEL)), tmp_path / "w.pt")
    report = evaluate_main(["--weights", str(weights), "--prepared", str(prepared), "--pairs", "2", "--crop", "24", "24",
                            "24", "--threads", "1", "--passes", "1", "2", "--refine-downsample", "1", "--out",
                            str(tmp_path / "e.json")])
    rows = report["results"]["heldout"]
    assert list(rows) == ["AD-RegNet", "AD-RegNet, 2 passes (later ones at input / 1)"]
    assert all(r["pairs"] == 2 and np.isfinite(r["tre_mm"]) for r in rows.values())
    assert json.loads((tmp_path / "e.json").read_text())["results"]["heldout"].keys() == rows.keys()


def test_evaluate_cli_adds_a_residual_pass_twin_to_each_multi_pass_row(tmp_path, prepared):
    from ADRegNetLib.model.checkpoint import save_model
    from ADRegNetLib.model.network import ADRegNet, ADRegNetConfig
    from ADRegNetLib.train.evaluate import main as evaluate_main

    torch.manual_seed(0)
    weights = save_model(ADRegNet(ADRegNetConfig.from_dict(TINY_MODEL)), tmp_path / "w.pt")
    residual = save_model(ADRegNet(ADRegNetConfig.from_dict(dict(TINY_MODEL, input_downsample=1))), tmp_path / "r.pt")
    report = evaluate_main(["--weights", str(weights), "--prepared", str(prepared), "--pairs", "2", "--crop", "24", "24",
                            "24", "--threads", "1", "--passes", "1", "2", "--residual-weights", str(residual),
                            "--residual-downsample", "1.25", "--out", str(tmp_path / "e.json")])
    rows = report["results"]["heldout"]
    assert list(rows) == ["AD-RegNet", "AD-RegNet, 2 passes", "AD-RegNet, 2 passes + residual pass at / 1.25"]
    assert report["residual_weights"] == str(residual)
    # the residual pass is kept only where it lowers the local NCC loss: never a worse similarity, and
    # the twin differs from its row only by that pass
    assert all(r["pairs"] == 2 and np.isfinite(r["tre_mm"]) for r in rows.values())


def test_channels_last_training_computes_what_the_contiguous_layout_computes(tmp_path, prepared):
    # the same seeded steps in both memory layouts end at the same weights (only the speed differs)
    weights = {}
    for layout in (True, False):
        trainer = Trainer(tiny_config(tmp_path / f"cl{layout}", prepared, 2, channels_last=layout, seed=3))
        kernel = next(p for p in trainer.model.parameters() if p.ndim == 5 and p.shape[1] > 1)
        assert kernel.is_contiguous(memory_format=torch.channels_last_3d) == layout
        trainer.train()
        weights[layout] = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    for name, value in weights[True].items():
        torch.testing.assert_close(value, weights[False][name], rtol=1e-4, atol=1e-6, msg=name)
    # a run checkpointed in the contiguous layout (every run before the switch) resumes in the new one
    resumed = Trainer(tiny_config(tmp_path / "clFalse", prepared, 3, channels_last=True, seed=3))
    assert resumed.step == 2
    resumed.train()
    assert resumed.step == 3 and all(torch.isfinite(p).all() for p in resumed.model.parameters())
