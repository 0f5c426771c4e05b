"""Plain layers the documented backbones need, under torch's own argument names."""

from __future__ import annotations

import torch
from torch import nn

from dwsearch.blocks.common import make_activation

__all__ = ["AvgPool", "Dropout", "Dropout2d", "Flatten", "GlobalAvgPool", "Linear", "MaxPool"]


class MaxPool(nn.MaxPool2d):
    """2-D max pooling (torch.nn.MaxPool2d; stride defaults to kernel_size)."""


class AvgPool(nn.AvgPool2d):
    """2-D average pooling (torch.nn.AvgPool2d; stride defaults to kernel_size)."""


class GlobalAvgPool(nn.Module):
    """Average over H and W, then flatten (C, H, W) -> (C,) unless flatten is false."""

    def __init__(self, flatten: bool = True) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1) if flatten else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        x = self.flatten(x)
        return x


class Dropout(nn.Dropout):
    """Element-wise dropout with probability p (torch.nn.Dropout)."""


class Dropout2d(nn.Dropout2d):
    """Channel-wise dropout with probability p (torch.nn.Dropout2d)."""


class Flatten(nn.Flatten):
    """Flatten (C, H, W) to (C*H*W,) (torch.nn.Flatten)."""


class Linear(nn.Module):
    """Fully connected layer -> activation (identity by default); in_features is inferred."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, activation: str = "identity"
    ) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features, bias=bias)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        x = self.act(x)
        return x
