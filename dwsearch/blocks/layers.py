"""Plain layers the documented backbones need, under torch's own argument names.

The torch-derived layers restate torch's signature with annotations (torch's own has none), so
the builder checks a spec's values against them, and refuse what would pass through torch
unnoticed: ``return_indices`` (a pair of tensors is no layer output), a ``p`` that is not a
probability, a ``start_dim`` of 0 (it would flatten the batch). Names and defaults are
torch's, so canonical forms and hashes of specs are unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from dwsearch.blocks.common import check_flag, check_positive_int, make_activation

__all__ = ["AvgPool", "Dropout", "Dropout2d", "Flatten", "GlobalAvgPool", "Linear", "MaxPool"]

Size2 = int | tuple[int, int]


def _pair(name: str, value: Size2 | None, *, minimum: int, optional: bool = False) -> None:
    """An int, or a list/tuple of two ints, each >= minimum (None where ``optional``)."""
    if value is None and optional:
        return
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and len(items) != 2:
        raise ValueError(f"{name} must be an integer or a pair of integers, found {value!r}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ValueError(
                f"{name} must be an integer >= {minimum} (or a pair of them), found {value!r}"
            )


def _window(kernel_size: Size2, stride: Size2 | None, padding: Size2) -> None:
    _pair("kernel_size", kernel_size, minimum=1)
    _pair("stride", stride, minimum=1, optional=True)
    _pair("padding", padding, minimum=0)


class MaxPool(nn.MaxPool2d):
    """2-D max pooling (torch.nn.MaxPool2d; stride defaults to kernel_size)."""

    input_dims: ClassVar[int] = 3  # (C, H, W): the builder refuses a flat input

    def __init__(
        self,
        kernel_size: Size2,
        stride: Size2 | None = None,
        padding: Size2 = 0,
        dilation: Size2 = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        _window(kernel_size, stride, padding)
        _pair("dilation", dilation, minimum=1)
        check_flag(return_indices=return_indices, ceil_mode=ceil_mode)
        if return_indices:
            raise ValueError("return_indices must be false: a layer passes one tensor on")
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)


class AvgPool(nn.AvgPool2d):
    """2-D average pooling (torch.nn.AvgPool2d; stride defaults to kernel_size)."""

    input_dims: ClassVar[int] = 3

    def __init__(
        self,
        kernel_size: Size2,
        stride: Size2 | None = None,
        padding: Size2 = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        _window(kernel_size, stride, padding)
        check_flag(ceil_mode=ceil_mode, count_include_pad=count_include_pad)
        if divisor_override is not None:
            check_positive_int(divisor_override=divisor_override)
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override)


class GlobalAvgPool(nn.Module):
    """Average over H and W, then flatten (C, H, W) -> (C,) unless flatten is false."""

    input_dims: ClassVar[int] = 3

    def __init__(self, flatten: bool = True) -> None:
        super().__init__()
        check_flag(flatten=flatten)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1) if flatten else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        x = self.flatten(x)
        return x


def _probability(p: float) -> None:
    # "not <=" so that NaN, which fails every comparison, is refused.
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"p must be a probability in [0, 1], found {p!r}")


class Dropout(nn.Dropout):
    """Element-wise dropout with probability p (torch.nn.Dropout)."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        _probability(p)
        check_flag(inplace=inplace)
        super().__init__(p, inplace)


class Dropout2d(nn.Dropout2d):
    """Channel-wise dropout with probability p (torch.nn.Dropout2d)."""

    input_dims: ClassVar[int] = 3  # on a flat input torch would drop per sample, not channel

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        _probability(p)
        check_flag(inplace=inplace)
        super().__init__(p, inplace)


class Flatten(nn.Flatten):
    """Flatten (C, H, W) to (C*H*W,) (torch.nn.Flatten)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, found {value!r}")
        if start_dim < 1:
            raise ValueError(f"start_dim must be >= 1 (dimension 0 is the batch), found "
                             f"{start_dim}")
        super().__init__(start_dim, end_dim)


class Linear(nn.Module):
    """Fully connected layer -> activation (identity by default); in_features is inferred."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, activation: str = "identity"
    ) -> None:
        super().__init__()
        check_positive_int(in_features=in_features, out_features=out_features)
        check_flag(bias=bias)
        self.fc = nn.Linear(in_features, out_features, bias=bias)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        x = self.act(x)
        return x
