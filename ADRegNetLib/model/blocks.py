r"""Convolutional building blocks of the AD-RegNet U-Net (all tensors (N, C, D, H, W))."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv3d", "ConvBlock", "DownBlock", "FlowHead"]

#: oneDNN (MKL-DNN) convolutions available in this torch build
_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that sends a single image on the CPU to oneDNN, where ATen's own choice fails for 3D.

    ATen picks oneDNN for a batch of one only when ``N * C * D * H`` exceeds 20,480 (``use_mkldnn``
    in ATen's ``Convolution.cpp``, a rule written for 2D images: it ignores the last axis), so the
    3D decoder levels of a registration network at inference (N = 1, C = 16-64, a few tens of
    voxels per axis) fall back to the slow reference kernel. Measured on 2 cores: a 16 -> 16
    3x3x3 convolution on a 32x40x44 grid 52 ms with one image, 10 ms with two; the whole network
    on the brain benchmark grid at input / 2 0.28 -> 0.15 s. Same operation, same parameters (the
    state dict is ``nn.Conv3d``'s); outputs agree to float rounding (1e-8 on flows of 1e-2). 1x1x1
    convolutions stay with ATen (a matrix product, where its own kernel is as fast or faster).
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        if (_ONEDNN and input.device.type == "cpu" and input.dtype == torch.float32 and input.shape[0] == 1
                and weight[0, 0].numel() > 1 and self.padding_mode == "zeros" and not isinstance(self.padding, str)):
            return torch.mkldnn_convolution(input, weight, bias, self.padding, self.stride, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


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
        self.conv1 = Conv3d(in_channels, out_channels, 3, padding=1)
        self.conv2 = Conv3d(out_channels, out_channels, 3, padding=1)
        self.skip = Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in, D, H, W) -> (N, out, D, H, W)."""
        y = self.act(self.conv1(x))
        return self.act(self.conv2(y) + self.skip(x))


class DownBlock(nn.Module):
    """Stride-2 3x3x3 convolution (halves D, H, W) then a :class:`ConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.down = Conv3d(in_channels, out_channels, 3, stride=2, padding=1)
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
        self.conv = Conv3d(in_channels, 3, 3, padding=1)
        nn.init.normal_(self.conv.weight, std=init_std)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) -> (N, 3, D, H, W) normalised (x, y, z) components."""
        return self.conv(x)
