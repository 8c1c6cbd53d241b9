r"""AD-RegNet: attention-driven U-Net that predicts a (diffeomorphic) displacement between two images.

After "Attention-Driven Framework for Non-Rigid Medical Image Registration" (AD-RegNet). This is our
own implementation of the ideas described there:

1. **Shared-weight encoder** (a 3-D U-Net encoder applied to moving and fixed separately).
2. **Bidirectional cross-attention** between moving and fixed features at the
   ``cross_attention_levels`` coarsest levels (full attention where a level holds at most
   ``full_attention_max_tokens`` voxels, windowed attention above; see :mod:`.attention`).
3. **Regional adaptive attention**: learned spatial gates on the skip connections
   (:class:`.attention.RegionalAttentionGate`); the latest maps are in ``model.attention_maps``.
4. **Multi-resolution field synthesis**: a flow head at the bottleneck and at every decoder level;
   each level adds a residual to the upsampled field of the coarser level (coarse to fine). Heads
   predict in voxels of the network grid (converted to normalised units).
5. **Diffeomorphic mode** (default): the synthesised field is a stationary velocity, upsampled to
   the input grid and integrated there by scaling and squaring (``spatial.integrate_velocity``).

Each part can be switched off in :class:`ADRegNetConfig` for ablations (``cross_attention``,
``regional_attention``, ``multires``, ``diffeomorphic``); a switched-off part has no module and no
parameters.

Units: inputs (N, 1, D, H, W) in [0, 1] on the same grid; all fields are normalised ``grid_sample``
flows (N, 3, D, H, W), (x, y, z) channels, ``align_corners=True`` (see ``spatial.flow``), so they
can be resized between resolutions without rescaling. The network runs at the input size divided
by ``input_downsample`` (rounded to a multiple of 2^(levels-1)) and the field is upsampled back.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config_keys import from_known_keys
from ..spatial.transforms import integrate_velocity, resize_flow
from .attention import BidirectionalCrossAttention, RegionalAttentionGate
from .blocks import Conv3d, ConvBlock, DownBlock, FlowHead

__all__ = ["ADRegNetConfig", "ADRegNet"]


@dataclass
class ADRegNetConfig:
    """Architecture settings (saved with the weights).

    Attributes:
        channels: encoder channels per level, finest first; len = number of levels (>= 2).
        decoder_channels: decoder channels per level below the bottleneck, coarsest first
            (len = len(channels) - 1).
        input_downsample: the network works at the input size / this (field upsampled back).
        cross_attention: bidirectional cross-attention on/off.
        cross_attention_levels: how many of the coarsest levels get cross-attention.
        attention_heads: heads of the cross-attention.
        full_attention_max_tokens: above this many voxels per level, windowed attention.
        attention_window: window edge (voxels) of windowed attention.
        regional_attention: spatial gates on skip connections on/off.
        multires: flow heads at every decoder level (coarse-to-fine residuals) on/off; off = one
            head at the finest level.
        diffeomorphic: integrate a stationary velocity (scaling and squaring) on/off.
        integration_steps: scaling-and-squaring steps.
        integration_resolution: "input" integrates the velocity after upsampling it to the input
            grid (exactly diffeomorphic on that grid, cost grows with the input size); "network"
            integrates at the network grid and upsamples the displacement (about 8x cheaper for
            ``input_downsample=2``; smooth fields stay fold-free in practice, not by construction).
    """

    channels: tuple[int, ...] = (16, 32, 32, 64)
    decoder_channels: tuple[int, ...] = (32, 32, 16)
    input_downsample: int = 2
    cross_attention: bool = True
    cross_attention_levels: int = 2
    attention_heads: int = 4
    full_attention_max_tokens: int = 1728
    attention_window: int = 4
    regional_attention: bool = True
    multires: bool = True
    diffeomorphic: bool = True
    integration_steps: int = 7
    integration_resolution: str = "input"

    def __post_init__(self) -> None:
        if self.integration_resolution not in ("input", "network"):
            raise ValueError(f"integration_resolution must be 'input' or 'network', got {self.integration_resolution!r}")
        self.channels = tuple(int(c) for c in self.channels)
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        if len(self.channels) < 2:
            raise ValueError(f"channels needs >= 2 levels, got {self.channels}")
        if len(self.decoder_channels) != len(self.channels) - 1:
            raise ValueError(f"decoder_channels needs len(channels) - 1 = {len(self.channels) - 1} entries, "
                             f"got {self.decoder_channels}")
        if self.input_downsample < 1:
            raise ValueError(f"input_downsample must be >= 1, got {self.input_downsample}")
        if not 0 <= self.cross_attention_levels <= len(self.channels):
            raise ValueError(f"cross_attention_levels must be in [0, {len(self.channels)}], got {self.cross_attention_levels}")
        for level in range(len(self.channels) - self.cross_attention_levels, len(self.channels)):
            if self.cross_attention and self.channels[level] % self.attention_heads:
                raise ValueError(f"channels[{level}] = {self.channels[level]} must be divisible by "
                                 f"attention_heads = {self.attention_heads}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["decoder_channels"] = list(self.decoder_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ADRegNetConfig":
        return from_known_keys(cls, d, "AD-RegNet")


class ADRegNet(nn.Module):
    """The AD-RegNet registration network (see the module docstring).

    Args:
        config: architecture settings; defaults to :class:`ADRegNetConfig` ().
    """

    def __init__(self, config: ADRegNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ADRegNetConfig()
        ch = config.channels
        n_levels = len(ch)
        self.encoder = nn.ModuleList([ConvBlock(1, ch[0])] + [DownBlock(ch[i - 1], ch[i]) for i in range(1, n_levels)])
        self.cross = nn.ModuleDict()
        if config.cross_attention:
            for level in range(n_levels - config.cross_attention_levels, n_levels):
                self.cross[str(level)] = BidirectionalCrossAttention(
                    ch[level], config.attention_heads, config.full_attention_max_tokens, config.attention_window)
        # Fusion of moving and fixed features at every level (skip connections and bottleneck).
        self.fuse = nn.ModuleList([nn.Sequential(Conv3d(2 * c, c, 3, padding=1), nn.LeakyReLU(0.2)) for c in ch])
        self.bottleneck = ConvBlock(ch[-1], ch[-1])
        self.gates = nn.ModuleDict()
        self.decoder = nn.ModuleDict()
        in_ch = ch[-1]
        for i, level in enumerate(range(n_levels - 2, -1, -1)):
            out_ch = config.decoder_channels[i]
            if config.regional_attention:
                self.gates[str(level)] = RegionalAttentionGate(ch[level], in_ch, inner_channels=max(8, ch[level] // 2))
            self.decoder[str(level)] = ConvBlock(in_ch + ch[level], out_ch)
            in_ch = out_ch
        self.heads = nn.ModuleDict()
        if config.multires:
            self.heads[str(n_levels - 1)] = FlowHead(ch[-1])
            for i, level in enumerate(range(n_levels - 2, -1, -1)):
                self.heads[str(level)] = FlowHead(config.decoder_channels[i])
        else:
            self.heads["0"] = FlowHead(config.decoder_channels[-1])
        #: latest attention maps (N, 1, d, h, w), detached, by name; filled by ``forward``.
        self.attention_maps: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------------------------ helpers
    def network_shape(self, shape_zyx: tuple[int, int, int],
                      input_downsample: Optional[float] = None) -> tuple[int, int, int]:
        """Internal grid (D, H, W) for an input grid: size / input_downsample rounded to a multiple of 2^(levels-1).

        ``input_downsample``: overrides the config's (e.g. 1 for a full-resolution refinement pass).
        """
        m = 2 ** (len(self.config.channels) - 1)
        factor = self.config.input_downsample if input_downsample is None else float(input_downsample)
        if factor <= 0:
            raise ValueError(f"input_downsample must be > 0, got {input_downsample}")
        return tuple(max(m, int(round(s / factor / m)) * m) for s in shape_zyx)

    def _head(self, level: int, features: torch.Tensor, net_shape: tuple[int, int, int]) -> torch.Tensor:
        """Flow head of ``level``: predicts in voxels of the network grid, returned in normalised units.

        Voxel units keep the raw output O(1) whatever the grid size (one normalised unit is half
        the volume, far too large a step for a freshly initialised head), and the same unit at
        every level keeps the coarse heads from making huge early moves.
        """
        raw = self.heads[str(level)](features)
        d, h, w = net_shape
        scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1), 2.0 / max(d - 1, 1)],
                             dtype=raw.dtype, device=raw.device)
        return raw * scale.view(1, 3, 1, 1, 1)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor,
                input_downsample: Optional[float] = None) -> dict[str, Any]:
        """Predict the field that aligns ``moving`` to ``fixed``.

        Args:
            fixed: (N, 1, D, H, W) fixed image in [0, 1].
            moving: (N, 1, D, H, W) moving image in [0, 1], same grid.
            input_downsample: the network grid is the input size / this (default: the config's).
                A refinement pass runs at 1, the input's own resolution (``model.inference``).

        Returns:
            dict with
            ``flow_norm``: (N, 3, D, H, W) normalised (x, y, z) displacement on the input grid
            (fixed x -> moving x + u(x); warp with ``spatial.warp_norm(moving, flow_norm)``);
            ``flow_norm_network``: (N, 3, d, h, w) the same field on the network grid (same span; the
            training loss uses it, so the loss runs at the resolution the network predicts);
            ``velocity_norm``: (N, 3, D, H, W) stationary velocity (None unless diffeomorphic);
            ``levels``: list of per-level fields (velocity or flow) at their own resolution,
            coarse to fine; ``attention_maps``: dict of (N, 1, d, h, w) maps.
        """
        if fixed.ndim != 5 or fixed.shape[1] != 1 or fixed.shape != moving.shape:
            raise ValueError("fixed and moving must both be (N, 1, D, H, W) on the same grid, got "
                             f"{tuple(fixed.shape)} and {tuple(moving.shape)}")
        cfg = self.config
        n = fixed.shape[0]
        shape = tuple(fixed.shape[2:])
        net_shape = self.network_shape(shape, input_downsample)
        x = torch.cat([moving, fixed], dim=0)
        if net_shape != shape:
            x = F.interpolate(x, size=net_shape, mode="trilinear", align_corners=True)
        maps: dict[str, torch.Tensor] = {}
        feats = []
        for block in self.encoder:
            x = block(x)
            feats.append(x)
        fused = []
        for level, f in enumerate(feats):
            m_feat, f_feat = f[:n], f[n:]
            if str(level) in self.cross:
                m_feat, f_feat = self.cross[str(level)](m_feat, f_feat)
                for key, val in self.cross[str(level)].last_maps.items():
                    maps[f"cross_{key}_L{level}"] = val
            fused.append(self.fuse[level](torch.cat([m_feat, f_feat], dim=1)))
        n_levels = len(cfg.channels)
        y = self.bottleneck(fused[-1])
        levels = []
        field = None
        if str(n_levels - 1) in self.heads:
            field = self._head(n_levels - 1, y, net_shape)
            levels.append(field)
        for level in range(n_levels - 2, -1, -1):
            up = F.interpolate(y, size=fused[level].shape[2:], mode="trilinear", align_corners=True)
            skip = fused[level]
            if str(level) in self.gates:
                skip = self.gates[str(level)](skip, up)
                maps[f"gate_L{level}"] = self.gates[str(level)].last_map
            y = self.decoder[str(level)](torch.cat([up, skip], dim=1))
            if str(level) in self.heads:
                residual = self._head(level, y, net_shape)
                field = residual if field is None else resize_flow(field, tuple(y.shape[2:])) + residual
                levels.append(field)
        if cfg.diffeomorphic and cfg.integration_resolution == "network":
            velocity = resize_flow(field, shape)
            flow_network = integrate_velocity(field, cfg.integration_steps)
            flow = resize_flow(flow_network, shape)
        elif cfg.diffeomorphic:
            velocity = resize_flow(field, shape)
            flow = integrate_velocity(velocity, cfg.integration_steps)
            flow_network = resize_flow(flow, tuple(field.shape[2:]))
        else:
            velocity = None
            flow_network = field
            flow = resize_flow(field, shape)
        self.attention_maps = maps
        return {"flow_norm": flow, "flow_norm_network": flow_network, "velocity_norm": velocity, "levels": levels,
                "attention_maps": maps}

    def extra_repr(self) -> str:
        return f"config={self.config}"
