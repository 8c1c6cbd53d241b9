r"""Convolutional building blocks of the AD-RegNet U-Net (all tensors (N, C, D, H, W))."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBlock", "DownBlock", "FlowHead"]


class ConvBlock(nn.Module):
    """Two 3x3x3 convolutions, each followed by LeakyReLU(0.2); a 1x1x1 projection adds a residual path.

    No normalisation layer: the coarsest levels hold only a few voxels, where instance statistics
    are noise, and registration networks (VoxelMorph-style) train well without it.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in, D, H, W) -> (N, out, D, H, W)."""
        y = self.act(self.conv1(x))
        return self.act(self.conv2(y) + self.skip(x))


class DownBlock(nn.Module):
    """Stride-2 3x3x3 convolution (halves D, H, W) then a :class:`ConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.down = nn.Conv3d(in_channels, out_channels, 3, stride=2, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.block = ConvBlock(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in, D, H, W) -> (N, out, ceil(D/2), ceil(H/2), ceil(W/2))."""
        return self.block(self.act(self.down(x)))


class FlowHead(nn.Module):
    """3x3x3 convolution to a 3-channel (x, y, z) normalised flow or velocity.

    Weights start near zero (std ``init_std``) so an untrained network predicts almost the
    identity transform, which keeps early training stable.
    """

    def __init__(self, in_channels: int, init_std: float = 1e-5) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, 3, 3, padding=1)
        nn.init.normal_(self.conv.weight, std=init_std)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) -> (N, 3, D, H, W) normalised (x, y, z) components."""
        return self.conv(x)
