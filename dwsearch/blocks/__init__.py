"""Built-in block types. They are listed as data in :data:`dwsearch.registry.BUILTIN_BLOCKS`,
which imports each class on first use; importing this package is not needed to use them."""

from __future__ import annotations

from dwsearch.blocks.common import ConvNormAct, SqueezeExcite, make_activation
from dwsearch.blocks.depthwise import DepthwiseSeparable, HybridConv
from dwsearch.blocks.inverted import InvertedResidual
from dwsearch.blocks.layers import (
    AvgPool,
    Dropout,
    Dropout2d,
    Flatten,
    GlobalAvgPool,
    Linear,
    MaxPool,
)
from dwsearch.blocks.standard import ConvBlock, GroupedConvBlock

__all__ = [
    "AvgPool",
    "ConvBlock",
    "ConvNormAct",
    "DepthwiseSeparable",
    "Dropout",
    "Dropout2d",
    "Flatten",
    "GlobalAvgPool",
    "GroupedConvBlock",
    "HybridConv",
    "InvertedResidual",
    "Linear",
    "MaxPool",
    "SqueezeExcite",
    "make_activation",
]
