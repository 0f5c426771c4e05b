"""The cost convention as one line of text, for every table and report that prints costs.

A leaf (no torch): :mod:`dwsearch.costs` states it on each profile, and reports print it
from the stored run records without importing torch. The full convention is in
:mod:`dwsearch.costs` and README's "Cost convention".
"""

from __future__ import annotations

__all__ = ["BN_MODES", "CONVENTION", "convention"]

# How batch norm enters the MAC count (every command's --bn takes these).
BN_MODES = ("counted", "folded")

CONVENTION = (
    "1 multiply-add = 1 MAC, FLOPs = 2 x MACs; batch 1, eval mode; conv/linear multiply-adds; "
    "batch norm {bn}; residual add, SE multiply, average pooling 1 MAC per element; "
    "ReLU/ReLU6/max-pool/sigmoid/hardswish/SiLU 0; activations: elements output by conv/linear "
    "ops (fvcore ActivationCountAnalysis), per sample; saved: bytes autograd keeps for backward "
    "per sample, training mode, {precision}, each storage once, slope between batch 2 and 3"
)


def convention(bn: str, precision: str = "fp32") -> str:
    """The convention of costs counted with batch norm ``bn`` ("counted" or "folded") and
    saved bytes measured in ``precision`` ("fp32" or "bf16")."""
    bn_text = "1 MAC per element (counted)" if bn == "counted" else "folded into conv (0)"
    precision_text = "fp32" if precision == "fp32" else "bf16 autocast"
    return CONVENTION.format(bn=bn_text, precision=precision_text)
