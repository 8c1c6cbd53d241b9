"""Tests of the AD-RegNet network, its attention modules and the checkpoint format."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from ADRegNetLib.model import ADRegNet, ADRegNetConfig, CheckpointError, load_model, save_model
from ADRegNetLib.model import checkpoint as ckpt
from ADRegNetLib.model import blocks
from ADRegNetLib.model.attention import CrossAttention3d, RegionalAttentionGate
from ADRegNetLib.model.blocks import Conv3d
from ADRegNetLib.spatial.flow import flow_norm_to_disp_mm
from ADRegNetLib.spatial.geometry import Geometry
from ADRegNetLib.spatial.jacobian import jacobian_determinant

SHAPE = (24, 28, 32)


def _pair(seed=0, shape=SHAPE):
    g = torch.Generator().manual_seed(seed)
    fixed = torch.rand(1, 1, *shape, generator=g)
    moving = torch.rand(1, 1, *shape, generator=g)
    return fixed, moving


def _model(seed=0, **overrides) -> ADRegNet:
    torch.manual_seed(seed)
    return ADRegNet(ADRegNetConfig(**overrides))


def test_output_shapes_levels_and_attention_maps():
    model = _model()
    fixed, moving = _pair()
    out = model(fixed, moving)
    assert out["flow_norm"].shape == (1, 3, *SHAPE)
    assert out["velocity_norm"].shape == (1, 3, *SHAPE)
    assert model.network_shape(SHAPE) == (16, 16, 16)
    assert [tuple(f.shape[2:]) for f in out["levels"]] == [(2, 2, 2), (4, 4, 4), (8, 8, 8), (16, 16, 16)]
    assert set(model.attention_maps) == {"cross_moving_L2", "cross_fixed_L2", "cross_moving_L3", "cross_fixed_L3",
                                         "gate_L2", "gate_L1", "gate_L0"}
    gate = model.attention_maps["gate_L0"]
    assert gate.shape == (1, 1, 16, 16, 16) and float(gate.min()) > 0 and float(gate.max()) < 1
    assert out["attention_maps"] is model.attention_maps


def test_wrong_input_shape_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(N, 1, D, H, W\)"):
        _model()(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 8))
    with pytest.raises(ValueError, match="decoder_channels needs"):
        ADRegNetConfig(channels=(8, 16), decoder_channels=(8, 8))
    with pytest.raises(ValueError, match="divisible by attention_heads"):
        ADRegNetConfig(channels=(16, 32, 32, 62))


def test_deterministic_on_cpu_with_a_seed():
    fixed, moving = _pair()
    a = _model(seed=3)(fixed, moving)["flow_norm"]
    b = _model(seed=3)(fixed, moving)["flow_norm"]
    assert torch.equal(a, b)
    c = _model(seed=4)(fixed, moving)["flow_norm"]
    assert not torch.equal(a, c)


def test_gradients_reach_every_parameter():
    model = _model()
    fixed, moving = _pair()
    out = model(fixed, moving)
    weights = torch.randn_like(out["flow_norm"])
    (out["flow_norm"] * weights).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0]
    assert missing == []
    groups = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert groups == {"encoder", "cross", "fuse", "bottleneck", "gates", "decoder", "heads"}


@pytest.mark.parametrize("part,prefix", [
    ("cross_attention", "cross."),
    ("regional_attention", "gates."),
])
def test_ablation_switch_removes_its_module_and_runs(part, prefix):
    full = _model()
    ablated = _model(**{part: False})
    assert any(n.startswith(prefix) for n, _ in full.named_parameters())
    assert not any(n.startswith(prefix) for n, _ in ablated.named_parameters())
    assert sum(p.numel() for p in ablated.parameters()) < sum(p.numel() for p in full.parameters())
    out = ablated(*_pair())
    assert out["flow_norm"].shape == (1, 3, *SHAPE)
    assert not any(k.startswith(prefix.split(".")[0][:4]) for k in ablated.attention_maps)


def test_multires_off_keeps_one_head_and_diffeomorphic_off_returns_the_raw_flow():
    single = _model(multires=False)
    assert list(single.heads.keys()) == ["0"]
    out = single(*_pair())
    assert len(out["levels"]) == 1 and out["flow_norm"].shape == (1, 3, *SHAPE)
    plain = _model(diffeomorphic=False)
    out = plain(*_pair())
    assert out["velocity_norm"] is None
    # Without integration the output is the upsampled synthesised field itself.
    assert torch.allclose(out["flow_norm"], F.interpolate(out["levels"][-1], size=SHAPE, mode="trilinear",
                                                          align_corners=True))


def _scale_heads(model: ADRegNet, factor: float) -> None:
    with torch.no_grad():
        for head in model.heads.values():
            head.conv.weight.mul_(factor)


def test_diffeomorphic_mode_has_no_folds_for_large_random_fields():
    geometry = Geometry(SHAPE[::-1], spacing=(1.5, 1.5, 1.5))
    diffeo = _model(seed=1)
    plain = _model(seed=1, diffeomorphic=False)
    _scale_heads(diffeo, 1e5)
    _scale_heads(plain, 1e5)
    fixed, moving = _pair(5)
    with torch.no_grad():
        flow = diffeo(fixed, moving)["flow_norm"]
        raw = plain(fixed, moving)["flow_norm"]
    disp = flow_norm_to_disp_mm(flow, geometry)
    # The field is large (several voxels) ...
    assert float(disp.norm(dim=1).max()) > 3 * 1.5
    # ... the same weights without integration fold, the integrated field does not.
    assert float((jacobian_determinant(flow_norm_to_disp_mm(raw, geometry), geometry) <= 0).sum()) > 0
    assert float(jacobian_determinant(disp, geometry).min()) > 0


def test_windowed_attention_with_one_window_equals_full_attention():
    torch.manual_seed(0)
    attn = CrossAttention3d(8, heads=2, full_attention_max_tokens=10_000, window=4)
    q, c = torch.rand(1, 8, 4, 4, 4), torch.rand(1, 8, 4, 4, 4)
    full = attn(q, c)
    assert attn.last_mode == "full"
    attn.full_attention_max_tokens = 0
    windowed = attn(q, c)
    assert attn.last_mode == "windowed"
    assert torch.allclose(full, windowed, atol=1e-6)


def test_windowed_attention_is_blockwise_full_attention_with_padding():
    torch.manual_seed(0)
    attn = CrossAttention3d(8, heads=2, full_attention_max_tokens=0, window=2)
    q, c = torch.rand(1, 8, 4, 4, 3), torch.rand(1, 8, 4, 4, 3)
    out = attn(q, c)
    assert out.shape == q.shape
    attn.full_attention_max_tokens = 10_000
    block = attn(q[..., 2:4, 0:2, 0:2].contiguous(), c[..., 2:4, 0:2, 0:2].contiguous())
    assert torch.allclose(out[..., 2:4, 0:2, 0:2], block, atol=1e-6)


def test_full_attention_matches_a_manual_softmax():
    torch.manual_seed(0)
    attn = CrossAttention3d(4, heads=1, full_attention_max_tokens=10_000)
    q, c = torch.rand(1, 4, 2, 2, 2), torch.rand(1, 4, 2, 2, 2)
    out = attn(q, c)
    qt, ct = q.flatten(2).transpose(1, 2), c.flatten(2).transpose(1, 2)
    qq = attn.to_q(attn.norm_q(qt))
    k, v = attn.to_kv(attn.norm_kv(ct)).chunk(2, dim=-1)
    w = torch.softmax(qq @ k.transpose(1, 2) / math.sqrt(4), dim=-1)
    x = qt + attn.proj(w @ v)
    ref = (x + attn.mlp(attn.norm_mlp(x))).transpose(1, 2).reshape(1, 4, 2, 2, 2)
    assert torch.allclose(out, ref, atol=1e-6)


def test_regional_gate_scales_skip_features_into_zero_one():
    gate = RegionalAttentionGate(4, 6)
    skip, g = torch.rand(2, 4, 3, 3, 3) + 0.5, torch.rand(2, 6, 3, 3, 3)
    out = gate(skip, g)
    ratio = out / skip
    assert torch.allclose(ratio, gate.last_map.expand_as(ratio), atol=1e-6)
    with pytest.raises(ValueError, match="share the grid"):
        gate(skip, torch.rand(2, 6, 3, 3, 2))


# ------------------------------------------------------------------------------------- checkpoint
def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = _model(seed=2, channels=(8, 16, 16, 32), decoder_channels=(16, 16, 8)).eval()
    path = save_model(model, tmp_path / "w.pt", extra={"training_steps": 7})
    loaded = load_model(path)
    fixed, moving = _pair()
    with torch.no_grad():
        assert torch.equal(model(fixed, moving)["flow_norm"], loaded(fixed, moving)["flow_norm"])
    assert loaded.config == model.config
    assert loaded.metadata["training_steps"] == 7 and loaded.metadata["parameters"] > 0
    assert path.stat().st_size < 25 * 2 ** 20


def test_missing_file_error_names_file_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*adregnet train.*ADREGNET_WEIGHTS"):
        load_model(tmp_path / "nope.pt")


def test_truncated_file_error(tmp_path):
    path = save_model(_model(channels=(8, 16), decoder_channels=(8,), cross_attention_levels=1), tmp_path / "w.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"w\.pt.*truncated"):
        load_model(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        load_model(path)


def test_mismatched_state_and_config_errors(tmp_path):
    model = _model(channels=(8, 16), decoder_channels=(8,), cross_attention_levels=1)
    path = save_model(model, tmp_path / "w.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["regional_attention"] = False  # weights still hold the gates
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"w\.pt: the weights do not match the saved architecture config"):
        load_model(path)
    payload["config"]["regional_attention"] = True
    payload["config"]["colour"] = "red"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="unknown AD-RegNet config keys"):
        load_model(path)
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not an AD-RegNet checkpoint"):
        load_model(path)


def test_default_weights_lookup_order(tmp_path, monkeypatch):
    monkeypatch.delenv(ckpt.WEIGHTS_ENV, raising=False)
    paths = ckpt.weights_search_paths()
    assert paths[0].parts[-3:] == ("Resources", "weights", "adregnet_default.pt")
    assert paths[0].parent.parent.parent.name != "ADRegNetLib"
    env_file = tmp_path / "mine.pt"
    save_model(_model(channels=(8, 16), decoder_channels=(8,), cross_attention_levels=1), env_file)
    monkeypatch.setenv(ckpt.WEIGHTS_ENV, str(env_file))
    assert ckpt.default_weights_path() == env_file
    monkeypatch.setenv(ckpt.WEIGHTS_ENV, str(tmp_path / "absent.pt"))
    assert ckpt.weights_search_paths()[0] == tmp_path / "absent.pt"
    assert ckpt.default_weights_path() != tmp_path / "absent.pt" or not any(p.is_file() for p in paths)


def test_ablation_config_roundtrip():
    cfg = replace(ADRegNetConfig(), cross_attention=False, multires=False)
    assert ADRegNetConfig.from_dict(cfg.to_dict()) == cfg


def test_integration_at_network_resolution_is_close_to_input_resolution():
    model = _model(seed=1)
    _scale_heads(model, 2e4)
    fixed, moving = _pair(2)
    with torch.no_grad():
        fine = model(fixed, moving)["flow_norm"]
        model.config.integration_resolution = "network"
        coarse = model(fixed, moving)["flow_norm"]
    assert float(fine.abs().max()) > 0.05
    assert float((fine - coarse).abs().max()) < 0.1 * float(fine.abs().max())
    with pytest.raises(ValueError, match="integration_resolution"):
        ADRegNetConfig(integration_resolution="half")


@pytest.mark.parametrize("resolution", ["network", "input"])
def test_flow_on_the_network_grid_is_the_output_flow_at_the_network_resolution(resolution):
    model = _model(seed=3, integration_resolution=resolution)
    _scale_heads(model, 2e4)
    fixed, moving = _pair(4)
    with torch.no_grad():
        out = model(fixed, moving)
    net = out["flow_norm_network"]
    assert tuple(net.shape[2:]) == model.network_shape(SHAPE) and float(net.abs().max()) > 0.01
    up = F.interpolate(net, size=SHAPE, mode="trilinear", align_corners=True)
    if resolution == "network":  # the output is exactly the upsampled network-grid field
        torch.testing.assert_close(up, out["flow_norm"])
    else:
        assert float((up - out["flow_norm"]).abs().max()) < 0.1 * float(out["flow_norm"].abs().max())


@pytest.mark.parametrize("options", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1),
                                     dict(kernel_size=3, padding=1, groups=4), dict(kernel_size=1)])
def test_conv3d_gives_torch_values_gradients_and_state_dict(options):
    torch.manual_seed(0)
    ours = Conv3d(4, 4, **options)
    reference = torch.nn.Conv3d(4, 4, **options)
    reference.load_state_dict(ours.state_dict())
    x = torch.rand(1, 4, 9, 10, 11, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = ours(x), reference(x_ref)
    assert torch.allclose(y, y_ref, atol=1e-6)
    weights = torch.rand_like(y)
    (y * weights).sum().backward()
    (y_ref * weights).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    assert torch.allclose(ours.weight.grad, reference.weight.grad, atol=1e-4)


@pytest.mark.skipif(not blocks._ONEDNN, reason="this torch build has no oneDNN")
def test_a_single_image_convolution_runs_on_onednn_where_aten_would_not():
    # N * C * D * H = 1 * 16 * 32 * 40 = 20,480: ATen's rule for one image picks its reference kernel here
    conv = Conv3d(16, 16, 3, padding=1)
    with torch.no_grad(), torch.profiler.profile() as prof:
        conv(torch.rand(1, 16, 32, 40, 44))
    names = {event.key for event in prof.key_averages()}
    assert "aten::mkldnn_convolution" in names and "aten::slow_conv3d_forward" not in names


def test_every_convolution_of_the_network_is_the_onednn_aware_one():
    convs = [m for m in _model().modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(isinstance(m, Conv3d) for m in convs)
