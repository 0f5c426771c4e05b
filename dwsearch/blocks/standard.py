"""Standard and grouped k x k convolutions with optional batch norm and activation."""

from __future__ import annotations

import torch
from torch import nn

from dwsearch.blocks.common import check_kernel_size, check_positive, make_activation

__all__ = ["ConvBlock", "GroupedConvBlock"]


class _ConvNormAct(nn.Module):
    """k x k conv (same padding) -> BatchNorm (optional) -> activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        bn: bool = True,
        activation: str = "relu",
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, out_channels=out_channels, stride=stride)
        padding = check_kernel_size(kernel_size)
        check_positive(groups=groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and "
                f"out_channels={out_channels}"
            )
        # A bias before batch norm is cancelled by its mean subtraction; default it off then.
        use_bias = (not bn) if bias is None else bool(bias)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=use_bias
        )
        self.bn = nn.BatchNorm2d(out_channels) if bn else nn.Identity()
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.bn(x)
        x = self.act(x)
        return x


class ConvBlock(_ConvNormAct):
    """Standard k x k convolution -> optional BatchNorm -> activation (bias defaults to not bn)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bn: bool = True,
        activation: str = "relu",
        bias: bool | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, 1, bn, activation, bias
        )


class GroupedConvBlock(_ConvNormAct):
    """k x k convolution with groups=g -> BN -> activation: g=1 is standard, g=in is depthwise."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        kernel_size: int = 3,
        stride: int = 1,
        bn: bool = True,
        activation: str = "relu",
        bias: bool | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, groups, bn, activation, bias
        )
