"""Standard and grouped k x k convolutions with optional batch norm and activation."""

from __future__ import annotations

from dwsearch.blocks.common import ConvNormAct

__all__ = ["ConvBlock", "GroupedConvBlock"]


class ConvBlock(ConvNormAct):
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
        super().__init__(in_channels, out_channels, kernel_size, stride, groups=1, bn=bn,
                         activation=activation, bias=bias)


class GroupedConvBlock(ConvNormAct):
    """k x k convolution with groups=g -> BN -> activation: g=1 is standard, g=in is depthwise.

    The unit itself, registered with ``groups`` required (and first) so that a spec says it.
    """

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
        super().__init__(in_channels, out_channels, kernel_size, stride, groups, bn, activation,
                         bias)
