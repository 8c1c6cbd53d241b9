r"""Attention modules of AD-RegNet: bidirectional cross-attention and regional attention gates.

Cross-attention lets every moving-image feature look for its match among the fixed-image features
(and the reverse) before the flow is decoded, which a plain concatenating U-Net can only do within
its convolutional receptive field.

* **Full attention** (every token attends to every token of the other image) is used when a level
  holds at most ``full_attention_max_tokens`` voxels (default 12^3 = 1728), i.e. at the coarsest
  levels, where the attention matrix is small.
* **Windowed (local) attention** is used above that: the volume is cut into non-overlapping
  ``window`` ^3 blocks (zero-padded to a multiple) and each block of one image attends to the *same*
  block of the other image. Cost is linear in the voxel count.

Tokens get a conditional positional encoding (a depthwise 3x3x3 convolution added to the features),
so attention knows where a token is without a fixed-size positional table, and any grid size works.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Conv3d

__all__ = ["CrossAttention3d", "BidirectionalCrossAttention", "RegionalAttentionGate"]


def _to_windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(N, C, D, H, W) -> (N * nwin, window^3, C) plus what :func:`_from_windows` needs."""
    n, c, d, h, w = x.shape
    pd, ph, pw = (-d) % window, (-h) % window, (-w) % window
    if pd or ph or pw:
        x = F.pad(x, (0, pw, 0, ph, 0, pd))
    dd, hh, ww = (d + pd) // window, (h + ph) // window, (w + pw) // window
    x = x.view(n, c, dd, window, hh, window, ww, window)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(n * dd * hh * ww, window ** 3, c)
    return x, (n, c, d, h, w, dd, hh, ww)


def _from_windows(tokens: torch.Tensor, window: int, info: tuple[int, ...]) -> torch.Tensor:
    n, c, d, h, w, dd, hh, ww = info
    x = tokens.view(n, dd, hh, ww, window, window, window, c)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(n, c, dd * window, hh * window, ww * window)
    return x[:, :, :d, :h, :w]


class CrossAttention3d(nn.Module):
    """One direction of cross-attention: ``query`` features attend to ``context`` features.

    A pre-norm transformer block: ``x = x + Attn(LN(x), LN(ctx)); x = x + MLP(LN(x))``.

    Args:
        channels: feature channels C of both inputs.
        heads: attention heads (C must be divisible by it).
        full_attention_max_tokens: above this many voxels, windowed attention is used.
        window: window edge (voxels) of windowed attention.
    """

    def __init__(self, channels: int, heads: int = 4, full_attention_max_tokens: int = 1728, window: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.full_attention_max_tokens = int(full_attention_max_tokens)
        self.window = int(window)
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(channels, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        self.norm_mlp = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))
        #: "full" or "windowed": what the last forward used.
        self.last_mode = ""

    def _attend(self, q_tokens: torch.Tensor, kv_tokens: torch.Tensor) -> torch.Tensor:
        b, lq, c = q_tokens.shape
        lk = kv_tokens.shape[1]
        hd = c // self.heads
        q = self.to_q(self.norm_q(q_tokens)).view(b, lq, self.heads, hd).transpose(1, 2)
        k, v = self.to_kv(self.norm_kv(kv_tokens)).view(b, lk, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(hd))
        x = q_tokens + self.proj(out.transpose(1, 2).reshape(b, lq, c))
        return x + self.mlp(self.norm_mlp(x))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) query and context on the same grid -> updated query (N, C, D, H, W)."""
        if query.shape != context.shape:
            raise ValueError(f"query and context must have the same shape (N, C, D, H, W), got "
                             f"{tuple(query.shape)} and {tuple(context.shape)}")
        n, c, d, h, w = query.shape
        if d * h * w <= self.full_attention_max_tokens:
            self.last_mode = "full"
            q = query.flatten(2).transpose(1, 2)
            kv = context.flatten(2).transpose(1, 2)
            return self._attend(q, kv).transpose(1, 2).reshape(n, c, d, h, w)
        self.last_mode = "windowed"
        q, info = _to_windows(query, self.window)
        kv, _ = _to_windows(context, self.window)
        return _from_windows(self._attend(q, kv), self.window, info)


class BidirectionalCrossAttention(nn.Module):
    """Moving attends to fixed and fixed attends to moving (two weight sets), both from the inputs.

    Both directions read the *input* features, so the result does not depend on an order.

    Args:
        channels, heads, full_attention_max_tokens, window: see :class:`CrossAttention3d`.
    """

    def __init__(self, channels: int, heads: int = 4, full_attention_max_tokens: int = 1728, window: int = 4) -> None:
        super().__init__()
        self.pos = Conv3d(channels, channels, 3, padding=1, groups=channels)
        self.moving_to_fixed = CrossAttention3d(channels, heads, full_attention_max_tokens, window)
        self.fixed_to_moving = CrossAttention3d(channels, heads, full_attention_max_tokens, window)
        #: (N, 1, D, H, W) mean absolute feature change of the moving / fixed stream (for display).
        self.last_maps: dict[str, torch.Tensor] = {}

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, D, H, W) moving and fixed features -> both updated, same shapes."""
        m = moving + self.pos(moving)
        f = fixed + self.pos(fixed)
        new_m = self.moving_to_fixed(m, f)
        new_f = self.fixed_to_moving(f, m)
        self.last_maps = {
            "moving": (new_m - moving).abs().mean(1, keepdim=True).detach(),
            "fixed": (new_f - fixed).abs().mean(1, keepdim=True).detach(),
        }
        return new_m, new_f


class RegionalAttentionGate(nn.Module):
    """Learned spatial gate on a skip connection (attention-gate style, Oktay et al. 2018).

    ``gate = sigmoid(psi(LeakyReLU(W_s skip + W_g gating)))`` in (0, 1) per voxel; the skip features
    are multiplied by it, so the decoder can favour regions (e.g. edges of moving organs) where the
    skip detail helps the flow, and damp those where it does not.

    Args:
        skip_channels: channels of the skip features.
        gating_channels: channels of the (upsampled) decoder features.
        inner_channels: width of the gate's hidden layer.
    """

    def __init__(self, skip_channels: int, gating_channels: int, inner_channels: int = 16) -> None:
        super().__init__()
        self.w_skip = Conv3d(skip_channels, inner_channels, 1)
        self.w_gate = Conv3d(gating_channels, inner_channels, 1)
        self.psi = Conv3d(inner_channels, 1, 1)
        nn.init.constant_(self.psi.bias, 1.0)  # start mostly open (sigmoid(1) = 0.73)
        self.act = nn.LeakyReLU(0.2)
        #: (N, 1, D, H, W) latest gate, detached (for display).
        self.last_map: torch.Tensor | None = None

    def forward(self, skip: torch.Tensor, gating: torch.Tensor) -> torch.Tensor:
        """Gate ``skip`` (N, Cs, D, H, W) by ``gating`` (N, Cg, D, H, W); returns (N, Cs, D, H, W)."""
        if skip.shape[2:] != gating.shape[2:]:
            raise ValueError(f"skip and gating must share the grid (D, H, W), got {tuple(skip.shape[2:])} "
                             f"and {tuple(gating.shape[2:])}")
        gate = torch.sigmoid(self.psi(self.act(self.w_skip(skip) + self.w_gate(gating))))
        self.last_map = gate.detach()
        return skip * gate

