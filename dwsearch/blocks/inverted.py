"""The MobileNetV2 inverted residual block, with optional squeeze-and-excitation."""

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

__all__ = ["InvertedResidual"]


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (x t) -> dw k x k -> [SE] -> linear 1x1 project [+ skip].

    No expansion conv when expand_ratio is 1, as in the paper. ``skip=None`` (default) adds
    the residual whenever stride is 1 and in_channels == out_channels. ``mid_channels``: the
    width of the expanded stage where it is not in_channels x expand_ratio (a pruned block
    states its own, as MobileNetV3's table does); only with an expansion conv.
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
        mid_channels: int | None = None,
    ) -> None:
        super().__init__()
        check_multiplier("expand_ratio", expand_ratio)
        check_positive_int(in_channels=in_channels)
        if mid_channels is None:
            mid_channels = in_channels * expand_ratio
        else:
            check_positive_int(mid_channels=mid_channels)
            if expand_ratio == 1 and mid_channels != in_channels:
                raise ValueError(f"mid_channels={mid_channels} needs an expansion conv: "
                                 f"expand_ratio 1 has none (its width is in_channels="
                                 f"{in_channels}); give expand_ratio > 1 or drop mid_channels")
        self.has_skip = check_skip(
            skip, possible=stride == 1 and in_channels == out_channels, default=True
        )
        self.expand: nn.Module = nn.Identity()
        if expand_ratio != 1:
            self.expand = ConvNormAct(in_channels, mid_channels, 1, activation=activation)
        self.dw = ConvNormAct(mid_channels, mid_channels, kernel_size, stride,
                              groups=mid_channels, activation=activation)
        self.se = make_se(mid_channels, se_ratio)
        self.project = ConvNormAct(mid_channels, out_channels, 1, activation="identity")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.expand(x)
        x = self.dw(x)
        x = self.se(x)
        x = self.project(x)
        return x + shortcut if self.has_skip else x
