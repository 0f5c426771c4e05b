"""The MobileNetV2 inverted residual block, with optional squeeze-and-excitation."""

from __future__ import annotations

import torch
from torch import nn

from dwsearch.blocks.common import (
    check_kernel_size,
    check_positive,
    check_skip,
    make_activation,
    make_se,
)

__all__ = ["InvertedResidual"]


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (x t) -> dw k x k -> [SE] -> linear 1x1 project [+ skip].

    No expansion conv when expand_ratio is 1, as in the paper. ``skip=None`` (default) adds
    the residual whenever stride is 1 and in_channels == out_channels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        expand_ratio: int = 6,
        activation: str = "relu6",
        se_ratio: float = 0.0,
        skip: bool | None = None,
    ) -> None:
        super().__init__()
        check_positive(
            in_channels=in_channels, out_channels=out_channels, stride=stride,
            expand_ratio=expand_ratio,
        )
        if not isinstance(expand_ratio, int) or isinstance(expand_ratio, bool):
            raise ValueError(f"expand_ratio must be a positive integer, found {expand_ratio!r}")
        padding = check_kernel_size(kernel_size)
        mid_channels = in_channels * expand_ratio
        self.has_skip = check_skip(
            skip, possible=stride == 1 and in_channels == out_channels, default=True
        )
        self.conv_pw: nn.Module = nn.Identity()
        self.bn1: nn.Module = nn.Identity()
        self.act1: nn.Module = nn.Identity()
        if expand_ratio != 1:
            self.conv_pw = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid_channels)
            self.act1 = make_activation(activation)
        self.conv_dw = nn.Conv2d(
            mid_channels, mid_channels, kernel_size, stride, padding, groups=mid_channels,
            bias=False,
        )
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.act2 = make_activation(activation)
        self.se = make_se(mid_channels, se_ratio)
        self.conv_pwl = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_pw(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv_dw(x)
        x = self.bn2(x)
        x = self.act2(x)
        x = self.se(x)
        x = self.conv_pwl(x)
        x = self.bn3(x)
        if self.has_skip:
            x = x + shortcut
        return x
