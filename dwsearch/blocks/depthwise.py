"""Depthwise separable convolution and the hybrid that interpolates it with a standard conv."""

from __future__ import annotations

import torch
from torch import nn

from dwsearch.blocks.common import (
    ConvNormAct,
    check_multiplier,
    check_positive_int,
    check_skip,
    make_se,
)
from dwsearch.blocks.standard import ConvBlock

__all__ = ["DepthwiseSeparable", "HybridConv"]


class DepthwiseSeparable(nn.Module):
    """Depthwise k x k (x multiplier) -> BN -> act -> [SE] -> pointwise 1x1 -> BN -> act [+ skip].

    With kernel_size=3, multiplier=1 this is the baseline study's ``conv_dw``. The skip adds the
    input after the last activation; it needs stride 1 and in_channels == out_channels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        multiplier: int = 1,
        bn: bool = True,
        activation: str = "relu",
        se_ratio: float = 0.0,
        skip: bool = False,
    ) -> None:
        super().__init__()
        check_multiplier("multiplier", multiplier)
        check_positive_int(in_channels=in_channels)
        mid_channels = in_channels * multiplier
        self.has_skip = check_skip(
            skip, possible=stride == 1 and in_channels == out_channels, default=False
        )
        self.dw = ConvNormAct(in_channels, mid_channels, kernel_size, stride,
                              groups=in_channels, bn=bn, activation=activation)
        self.se = make_se(mid_channels, se_ratio)
        self.pw = ConvNormAct(mid_channels, out_channels, 1, bn=bn, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dw(x)
        x = self.se(x)
        x = self.pw(x)
        return x + shortcut if self.has_skip else x


class HybridConv(nn.Module):
    """Output channels split: round(ratio x out) from a standard conv, the rest from dwsep.

    ratio=1 is exactly ``conv`` (no bias, BN), ratio=0 exactly ``dwsep``; between them the
    two paths run side by side on the same input and their outputs are concatenated.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        ratio: float = 0.5,
        multiplier: int = 1,
        bn: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_positive_int(out_channels=out_channels)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise ValueError(f"ratio must be in [0, 1], found {ratio!r}")
        self.standard_channels = round(ratio * out_channels)
        self.separable_channels = out_channels - self.standard_channels
        self.conv: nn.Module | None = None
        self.dwsep: nn.Module | None = None
        if self.standard_channels:
            self.conv = ConvBlock(
                in_channels, self.standard_channels, kernel_size, stride, bn=bn,
                activation=activation,
            )
        if self.separable_channels:
            self.dwsep = DepthwiseSeparable(
                in_channels, self.separable_channels, kernel_size, stride, multiplier=multiplier,
                bn=bn, activation=activation,
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dwsep is None:
            assert self.conv is not None
            return self.conv(x)
        if self.conv is None:
            return self.dwsep(x)
        standard = self.conv(x)
        separable = self.dwsep(x)
        return torch.cat([standard, separable], dim=1)
