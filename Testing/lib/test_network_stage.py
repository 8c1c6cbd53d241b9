"""The network stage (engine/prediction.py ``network_stage``): several passes compose, and a pass that
does not lower the local NCC loss is not kept. The "network" here is a module that returns given
fields in turn, so that the composition can be checked exactly."""
from __future__ import annotations

import pytest
import torch

from ADRegNetLib.engine.settings import QUALITY_SETTINGS
from ADRegNetLib.engine.prediction import network_stage
from ADRegNetLib.spatial.filters import gaussian_smooth

SHAPE = (24, 28, 32)


class FieldsInTurn(torch.nn.Module):
    """Returns constant x-shifts (voxels) in turn, in the network's output format; records its inputs."""

    def __init__(self, shifts_vox: list[float]) -> None:
        super().__init__()
        self.shifts = list(shifts_vox)
        self.seen: list[torch.Tensor] = []
        self.downsample: list = []

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, input_downsample=None) -> dict:
        self.seen.append(moving.clone())
        self.downsample.append(input_downsample)
        flow = torch.zeros((1, 3, *fixed.shape[2:]), dtype=fixed.dtype)
        flow[:, 0] = self.shifts.pop(0) * 2.0 / (fixed.shape[-1] - 1)
        return {"flow_norm": flow}


@pytest.fixture(scope="module")
def shifted_pair():
    """fixed, and moving = fixed moved by +2 voxels along x (so moving(x + 2) = fixed(x))."""
    gen = torch.Generator().manual_seed(0)
    wide = gaussian_smooth(torch.rand((1, 1, SHAPE[0], SHAPE[1], SHAPE[2] + 2), generator=gen), 1.5)
    return wide[..., 2:].contiguous(), wide[..., :-2].contiguous()


def _shift_vox(flow: torch.Tensor) -> torch.Tensor:
    return flow[0, 0, :, :, 4:-4] * (SHAPE[2] - 1) / 2.0  # away from the replicated border


def test_two_passes_compose_and_the_second_sees_the_first_result(shifted_pair):
    fixed, moving = shifted_pair
    one, info_one = network_stage(FieldsInTurn([1.0]), fixed, moving, None, always_keep=True, passes=1)
    model = FieldsInTurn([1.0, 1.0])
    two, info_two = network_stage(model, fixed, moving, None, always_keep=True, passes=2)
    assert info_one["passes"] == 1 and info_two["passes"] == 2
    assert torch.allclose(_shift_vox(one), torch.tensor(1.0), atol=1e-4)
    assert torch.allclose(_shift_vox(two), torch.tensor(2.0), atol=1e-4)
    assert info_two["loss_prediction"] < info_one["loss_prediction"] < info_one["loss_identity"]
    assert torch.equal(model.seen[0], moving) and not torch.equal(model.seen[1], moving)


def test_a_pass_that_does_not_help_is_dropped(shifted_pair):
    fixed, moving = shifted_pair
    flow, info = network_stage(FieldsInTurn([1.0, -3.0]), fixed, moving, None, always_keep=True, passes=3)
    assert info["passes"] == 1  # the second pass made it worse; no third pass
    assert torch.allclose(_shift_vox(flow), torch.tensor(1.0), atol=1e-4)


def test_later_passes_run_at_the_refinement_resolution(shifted_pair):
    fixed, moving = shifted_pair
    model = FieldsInTurn([1.0, 1.0])
    _, info = network_stage(model, fixed, moving, None, always_keep=True, passes=2, refine_downsample=1.5)
    assert model.downsample == [None, 1.5] and info["refine_downsample"] == 1.5 and info["passes"] == 2
    assert len(info["forward_s"]) == 2 and all(t >= 0 for t in info["forward_s"])


def test_the_real_network_runs_at_an_overridden_resolution():
    from ADRegNetLib.model.network import ADRegNet, ADRegNetConfig

    net = ADRegNet(ADRegNetConfig.from_dict({"channels": [4, 8, 8, 8], "decoder_channels": [8, 8, 4]})).eval()
    fixed, moving = torch.rand(1, 1, *SHAPE), torch.rand(1, 1, *SHAPE)
    with torch.no_grad():
        half, full = net(fixed, moving), net(fixed, moving, input_downsample=1)
    assert half["flow_norm"].shape == full["flow_norm"].shape == (1, 3, *SHAPE)
    assert tuple(half["flow_norm_network"].shape[2:]) == net.network_shape(SHAPE) == (16, 16, 16)
    assert tuple(full["flow_norm_network"].shape[2:]) == net.network_shape(SHAPE, 1) == (24, 32, 32)
    with pytest.raises(ValueError, match="input_downsample must be > 0"):
        net.network_shape(SHAPE, 0)


def test_instant_runs_two_passes_and_optimising_qualities_one():
    assert QUALITY_SETTINGS["instant"].network_passes == 2
    assert QUALITY_SETTINGS["instant"].network_refine_downsample == 1.5  # the residual pass runs at / 1.25
    # a GPU affords the full-resolution second pass; the CPU runs it at 1.5; other qualities the weights' own
    assert QUALITY_SETTINGS["instant"].refine_downsample_on("cuda") == 1.0
    assert QUALITY_SETTINGS["instant"].refine_downsample_on(torch.device("cpu")) == 1.5
    assert QUALITY_SETTINGS["instant"].residual_downsample_on(torch.device("cpu")) == 1.25
    assert QUALITY_SETTINGS["balanced"].refine_downsample_on("cuda") is None
    assert all(QUALITY_SETTINGS[q].network_passes == 1 for q in ("fast", "balanced", "best"))


def test_the_engine_runs_the_network_channels_last_on_the_cpu():
    from ADRegNetLib.engine.prediction import load_network
    from ADRegNetLib.model.checkpoint import default_weights_path, load_model

    if not default_weights_path().is_file():
        pytest.skip("no shipped weights")
    model, note = load_network(None, torch.device("cpu"))
    assert note is None
    kernels = [p for p in model.parameters() if p.dim() == 5]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in kernels)
    fixed, moving = torch.rand(1, 1, *SHAPE), torch.rand(1, 1, *SHAPE)
    plain = load_model(default_weights_path()).eval()
    with torch.no_grad():
        assert torch.allclose(model(fixed, moving)["flow_norm"], plain(fixed, moving)["flow_norm"], atol=1e-6)


class RoughField(FieldsInTurn):
    """The given x-shift, 50 % short and 50 % long in alternate x columns: rough, right on average."""

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, input_downsample=None) -> dict:
        out = super().forward(fixed, moving, input_downsample)
        out["flow_norm"][..., ::2] *= 0.5
        out["flow_norm"][..., 1::2] *= 1.5
        return out


def test_a_smoothed_prediction_is_checked_and_reported_as_smoothed(shifted_pair):
    fixed, moving = shifted_pair
    raw, raw_info = network_stage(FieldsInTurn([2.0]), fixed, moving, None, always_keep=True, passes=1)
    smooth, info = network_stage(FieldsInTurn([2.0]), fixed, moving, None, always_keep=True, passes=1,
                                 smooth_voxels=1.0)
    assert torch.allclose(smooth, gaussian_smooth(raw, 1.0), atol=1e-7)
    assert info["smooth_voxels"] == 1.0 and raw_info["smooth_voxels"] == 0.0
    # a constant shift survives smoothing, so the smoothed field's own check gives the same loss
    assert info["loss_prediction"] == pytest.approx(raw_info["loss_prediction"], abs=1e-5)
    # a rough field: smoothing brings it to the true shift, and the reported loss is recomputed
    rough, rough_info = network_stage(RoughField([2.0]), fixed, moving, None, always_keep=True, passes=1)
    eased, eased_info = network_stage(RoughField([2.0]), fixed, moving, None, always_keep=True, passes=1,
                                      smooth_voxels=1.0)
    assert torch.allclose(eased, gaussian_smooth(rough, 1.0), atol=1e-7)
    assert eased_info["loss_prediction"] < rough_info["loss_prediction"]


def test_instant_smooths_the_network_field_and_optimising_qualities_do_not():
    assert QUALITY_SETTINGS["instant"].network_smooth_voxels == 1.0
    assert all(QUALITY_SETTINGS[q].network_smooth_voxels == 0.0 for q in ("fast", "balanced", "best"))


def test_a_residual_pass_by_another_network_is_kept_only_when_it_helps(shifted_pair):
    fixed, moving = shifted_pair
    residual = FieldsInTurn([1.0])
    flow, info = network_stage(FieldsInTurn([1.0]), fixed, moving, None, always_keep=True, passes=1,
                               residual=(residual, 1.25))
    assert info["residual_kept"] is True and info["passes"] == 1 and len(info["forward_s"]) == 2
    assert torch.allclose(_shift_vox(flow), torch.tensor(2.0), atol=1e-4)  # 1 voxel, then 1 more
    assert residual.downsample == [1.25] and not torch.equal(residual.seen[0], moving)  # it saw the warped image
    worse, info = network_stage(FieldsInTurn([1.0]), fixed, moving, None, always_keep=True, passes=1,
                                residual=(FieldsInTurn([-3.0]), 1.0))
    assert info["residual_kept"] is False
    assert torch.allclose(_shift_vox(worse), torch.tensor(1.0), atol=1e-4)
    _, without = network_stage(FieldsInTurn([1.0]), fixed, moving, None, always_keep=True, passes=1)
    assert without["residual_kept"] is None


def test_the_residual_weights_are_used_only_beside_the_default_weights(tmp_path, monkeypatch):
    from ADRegNetLib.engine import prediction
    from ADRegNetLib.model import checkpoint
    from ADRegNetLib.model.checkpoint import save_model
    from ADRegNetLib.model.network import ADRegNet, ADRegNetConfig

    tiny = {"channels": [4, 8], "decoder_channels": [4], "cross_attention": False}
    default = save_model(ADRegNet(ADRegNetConfig.from_dict(tiny)), tmp_path / "adregnet_default.pt")
    monkeypatch.setenv(checkpoint.WEIGHTS_ENV, str(default))
    assert prediction.load_residual_network(None, torch.device("cpu")) is None  # no residual file: no pass
    save_model(ADRegNet(ADRegNetConfig.from_dict(dict(tiny, input_downsample=1))), tmp_path / "adregnet_residual.pt")
    assert checkpoint.default_residual_weights_path() == tmp_path / "adregnet_residual.pt"
    model = prediction.load_residual_network(None, torch.device("cpu"))
    assert model is not None and model.config.input_downsample == 1
    # weights the user gives were not what the residual network was trained to follow
    assert prediction.load_residual_network(str(default), torch.device("cpu")) is None


def test_instant_ends_with_the_residual_pass_and_optimising_qualities_do_not():
    assert QUALITY_SETTINGS["instant"].residual_pass
    assert QUALITY_SETTINGS["instant"].residual_downsample_on("cuda") == 1.0
    assert not any(QUALITY_SETTINGS[q].residual_pass for q in ("fast", "balanced", "best"))
