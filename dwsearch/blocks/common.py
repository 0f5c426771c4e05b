"""Pieces the block families share: activation lookup by name, argument checks, the
conv-norm-activation unit every convolutional block is built from, and squeeze-excite."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "ConvNormAct",
    "SqueezeExcite",
    "check_flag",
    "check_kernel_size",
    "check_positive",
    "check_positive_int",
    "make_activation",
]

# Name -> factory. In-place where the input is never reused, as torchvision does.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """An activation module by name: relu, relu6, hardswish, silu or identity."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    if name == "identity":
        return nn.Identity()
    return ACTIVATIONS[name](inplace=True)


def check_positive(**values: int | float) -> None:
    """Raise ValueError naming the first argument that is not a positive finite number."""
    for key, value in values.items():
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 < value < math.inf):  # written so that NaN fails too
            raise ValueError(f"{key} must be a positive number, found {value!r}")


def check_positive_int(**values: int) -> None:
    """Raise ValueError naming the first argument that is not a positive integer (channel
    counts, strides, groups: 8.5 channels or a stride of 2.0 is a mistake, not a number)."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, found {value!r}")


def check_flag(**values: bool | None) -> None:
    """Raise ValueError naming the first argument that is not true, false or None: any
    non-empty string, 'false' included, would otherwise switch an option on."""
    for key, value in values.items():
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, found {value!r}")


def check_kernel_size(kernel_size: int) -> int:
    """Kernel sizes are odd so that 'same' padding (k - 1) / 2 keeps H and W at stride 1."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise ValueError(f"kernel_size must be an odd integer (1, 3, 5, 7), found {kernel_size!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (1, 3, 5, 7), found {kernel_size}")
    return (kernel_size - 1) // 2


def check_skip(skip: bool | None, *, possible: bool, default: bool) -> bool:
    """Resolve a skip flag: None means ``default`` where shapes allow; True insists."""
    check_flag(skip=skip)
    if skip is None:
        return default and possible
    if skip and not possible:
        raise ValueError(
            "skip=true needs stride 1 and in_channels == out_channels; "
            "change them or set skip: false"
        )
    return bool(skip)


def squeeze_channels(channels: int, se_ratio: float) -> int:
    """Channels in the squeeze bottleneck: round(channels * se_ratio), at least 1."""
    return max(1, round(channels * se_ratio))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global average -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid gate.

    The squeeze width is ``max(1, round(channels * se_ratio))`` of the channels it gates.
    """

    def __init__(self, channels: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        check_positive_int(channels=channels)
        if isinstance(se_ratio, bool) or not isinstance(se_ratio, (int, float)) or not (
            0 < se_ratio <= 1
        ):
            raise ValueError(f"se_ratio must be in (0, 1], found {se_ratio!r}")
        squeezed = squeeze_channels(channels, se_ratio)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(channels, squeezed, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(squeezed, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.pool(x)
        scale = self.conv_reduce(scale)
        scale = self.act(scale)
        scale = self.conv_expand(scale)
        scale = self.gate(scale)
        return x * scale


def make_se(channels: int, se_ratio: float) -> nn.Module:
    """SqueezeExcite when se_ratio > 0, else an identity (no parameters, no cost)."""
    # "not >=" so that NaN, which fails every comparison, is refused instead of meaning "off".
    if isinstance(se_ratio, bool) or not isinstance(se_ratio, (int, float)) or not (
        se_ratio >= 0
    ):
        raise ValueError(f"se_ratio must be >= 0 (0 disables squeeze-excite), found {se_ratio}")
    return SqueezeExcite(channels, se_ratio) if se_ratio > 0 else nn.Identity()


class ConvNormAct(nn.Module):
    """k x k conv (same padding, ``groups``) -> BatchNorm (optional) -> activation.

    The one unit every convolutional block is assembled from (as torchvision's
    ``Conv2dNormActivation``). ``bias`` defaults to ``not bn``: a bias before batch norm is
    cancelled by its mean subtraction.
    """

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
        check_positive_int(
            in_channels=in_channels, out_channels=out_channels, stride=stride, groups=groups
        )
        check_flag(bn=bn, bias=bias)
        padding = check_kernel_size(kernel_size)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and "
                f"out_channels={out_channels}"
            )
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


def check_multiplier(name: str, value: int) -> None:
    """Channel multipliers (``multiplier``, ``expand_ratio``) are positive integers."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, found {value!r}")
