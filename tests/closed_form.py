"""Closed-form parameter and MAC counts of every built-in block, written from the math,
independently of the implementation, and example arguments for each registered block."""

from __future__ import annotations

import math
from typing import Any

# Example arguments per block; tests fail for a registered block missing here, so a new
# block is tested the moment it is registered.
CONV_LIKE_CASES: list[dict[str, Any]] = [
    {"in_channels": 3, "out_channels": 8, "kernel_size": 3, "stride": 1},
    {"in_channels": 8, "out_channels": 8, "kernel_size": 1, "stride": 1},
    {"in_channels": 4, "out_channels": 12, "kernel_size": 5, "stride": 2},
    {"in_channels": 6, "out_channels": 6, "kernel_size": 7, "stride": 1},
]

BLOCK_CASES: dict[str, list[dict[str, Any]]] = {
    "conv": [
        *CONV_LIKE_CASES,
        {"in_channels": 3, "out_channels": 8, "bn": False},
        {"in_channels": 3, "out_channels": 8, "bias": True, "activation": "hardswish"},
    ],
    "grouped": [
        {"in_channels": 4, "out_channels": 8, "groups": 2, "kernel_size": 3},
        {"in_channels": 6, "out_channels": 6, "groups": 6, "kernel_size": 5, "stride": 2},
        {"in_channels": 8, "out_channels": 16, "groups": 1, "activation": "silu"},
    ],
    "dwsep": [
        *CONV_LIKE_CASES,
        {"in_channels": 4, "out_channels": 8, "multiplier": 2},
        {"in_channels": 4, "out_channels": 12, "multiplier": 3, "kernel_size": 5, "stride": 2},
        {"in_channels": 8, "out_channels": 8, "se_ratio": 0.25, "skip": True},
        {"in_channels": 8, "out_channels": 16, "bn": False, "activation": "relu6"},
    ],
    "hybrid": [
        {"in_channels": 4, "out_channels": 8, "ratio": 0.5},
        {"in_channels": 4, "out_channels": 8, "ratio": 0.0},
        {"in_channels": 4, "out_channels": 8, "ratio": 1.0},
        {"in_channels": 3, "out_channels": 10, "ratio": 0.33, "kernel_size": 5, "stride": 2},
        {"in_channels": 4, "out_channels": 8, "ratio": 0.75, "multiplier": 2},
    ],
    "inverted_residual": [
        {"in_channels": 8, "out_channels": 8},
        {"in_channels": 8, "out_channels": 8, "expand_ratio": 1},
        {"in_channels": 4, "out_channels": 8, "expand_ratio": 4, "kernel_size": 5, "stride": 2},
        {"in_channels": 8, "out_channels": 8, "se_ratio": 0.25, "activation": "hardswish"},
        {"in_channels": 8, "out_channels": 8, "skip": False, "kernel_size": 7},
    ],
    "maxpool": [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1}],
    "avgpool": [{"kernel_size": 2}, {"kernel_size": 3, "stride": 1, "padding": 1}],
    "global_avgpool": [{}, {"flatten": False}],
    "dropout": [{"p": 0.5}],
    "dropout2d": [{"p": 0.2}],
    "flatten": [{}],
    "linear": [{"in_features": 12, "out_features": 5}, {"in_features": 7, "out_features": 3,
                                                          "bias": False, "activation": "relu"}],
}

IMAGE = (9, 9)  # odd size so that stride-2 'same' padding rounds up


def out_hw(h: int, w: int, stride: int) -> tuple[int, int]:
    return math.ceil(h / stride), math.ceil(w / stride)


def _pool_out(size: int, k: int, s: int | None, p: int) -> int:
    return (size + 2 * p - k) // (s or k) + 1


def input_shape(block: str, args: dict[str, Any]) -> tuple[int, ...]:
    if "in_features" in args:
        return (args["in_features"],)
    return (args.get("in_channels", 6), *IMAGE)


def output_shape(block: str, args: dict[str, Any]) -> tuple[int, ...]:
    c, h, w = (6, *IMAGE)
    if block == "linear":
        return (args["out_features"],)
    if block in ("maxpool", "avgpool"):
        k, s, p = args["kernel_size"], args.get("stride"), args.get("padding", 0)
        return (c, _pool_out(h, k, s, p), _pool_out(w, k, s, p))
    if block == "global_avgpool":
        return (c,) if args.get("flatten", True) else (c, 1, 1)
    if block == "flatten":
        return (c * h * w,)
    if block in ("dropout", "dropout2d"):
        return (c, h, w)
    return (args["out_channels"], *out_hw(h, w, args.get("stride", 1)))


def _se_params(c: int, ratio: float) -> int:
    s = max(1, round(c * ratio))
    return c * s + s + s * c + c


def _se_macs(c: int, ratio: float, hw: int) -> int:
    s = max(1, round(c * ratio))
    return hw * c + c * s + s * c + hw * c  # pool, reduce, expand, gating multiply


def params(block: str, a: dict[str, Any]) -> int:
    """Trainable parameters from the block's definition (BN: weight and bias per channel)."""
    k = a.get("kernel_size", 3)
    bn = a.get("bn", True)
    if block in ("conv", "grouped"):
        g = a.get("groups", 1)
        bias = a.get("bias", not bn)
        ci, co = a["in_channels"], a["out_channels"]
        return ci * co * k * k // g + (co if bias else 0) + (2 * co if bn else 0)
    if block == "dwsep":
        ci, co, m = a["in_channels"], a["out_channels"], a.get("multiplier", 1)
        mid = ci * m
        total = mid * k * k + mid * co
        total += 2 * mid + 2 * co if bn else mid + co
        if a.get("se_ratio", 0):
            total += _se_params(mid, a["se_ratio"])
        return total
    if block == "hybrid":
        ci, co, r = a["in_channels"], a["out_channels"], a.get("ratio", 0.5)
        cs = round(r * co)
        total = 0
        if cs:
            total += params("conv", {"in_channels": ci, "out_channels": cs, "kernel_size": k})
        if co - cs:
            total += params("dwsep", {"in_channels": ci, "out_channels": co - cs, "kernel_size": k,
                                      "multiplier": a.get("multiplier", 1)})
        return total
    if block == "inverted_residual":
        ci, co, t = a["in_channels"], a["out_channels"], a.get("expand_ratio", 6)
        mid = ci * t
        total = (ci * mid + 2 * mid) if t != 1 else 0
        total += mid * k * k + 2 * mid + mid * co + 2 * co
        if a.get("se_ratio", 0):
            total += _se_params(mid, a["se_ratio"])
        return total
    if block == "linear":
        return a["in_features"] * a["out_features"] + (a["out_features"] if a.get("bias", True)
                                                       else 0)
    return 0


def macs(block: str, a: dict[str, Any], bn_counted: bool = False) -> int:
    """MACs at batch 1 on input ``input_shape(block, a)``, per dwsearch's stated convention."""
    h, w = IMAGE
    k = a.get("kernel_size", 3)
    s = a.get("stride", 1)
    ho, wo = out_hw(h, w, s)
    bn = a.get("bn", True) and bn_counted
    if block in ("conv", "grouped"):
        g = a.get("groups", 1)
        ci, co = a["in_channels"], a["out_channels"]
        return ho * wo * ci * co * k * k // g + (ho * wo * co if bn else 0)
    if block == "dwsep":
        ci, co, m = a["in_channels"], a["out_channels"], a.get("multiplier", 1)
        total = ho * wo * ci * m * (k * k + co)  # the baseline's H*W*C_in*(K^2 + C_out), x m
        if bn:
            total += ho * wo * (ci * m + co)
        if a.get("se_ratio", 0):
            total += _se_macs(ci * m, a["se_ratio"], ho * wo)
        if a.get("skip"):
            total += ho * wo * co
        return total
    if block == "hybrid":
        ci, co, r = a["in_channels"], a["out_channels"], a.get("ratio", 0.5)
        cs = round(r * co)
        sub = {"kernel_size": k, "stride": s, "in_channels": ci}
        total = 0
        if cs:
            total += macs("conv", {**sub, "out_channels": cs}, bn_counted)
        if co - cs:
            total += macs("dwsep", {**sub, "out_channels": co - cs,
                                    "multiplier": a.get("multiplier", 1)}, bn_counted)
        return total
    if block == "inverted_residual":
        ci, co, t = a["in_channels"], a["out_channels"], a.get("expand_ratio", 6)
        mid = ci * t
        total = h * w * ci * mid if t != 1 else 0
        total += ho * wo * mid * k * k + ho * wo * mid * co
        if bn_counted:
            total += (h * w * mid if t != 1 else 0) + ho * wo * mid + ho * wo * co
        if a.get("se_ratio", 0):
            total += _se_macs(mid, a["se_ratio"], ho * wo)
        skip = a.get("skip")
        if skip or (skip is None and s == 1 and ci == co):
            total += ho * wo * co
        return total
    if block == "linear":
        return a["in_features"] * a["out_features"]
    if block == "avgpool":
        c, oh, ow = output_shape(block, a)
        return a["kernel_size"] ** 2 * c * oh * ow
    if block == "global_avgpool":
        return 6 * h * w
    return 0  # max pooling, dropout, flatten


def _se_activations(c: int, ratio: float) -> int:
    return max(1, round(c * ratio)) + c  # the reduce and expand 1x1 convs' outputs


def activations(block: str, a: dict[str, Any]) -> int:
    """Elements output by conv and linear ops for one sample (fvcore's ActivationCountAnalysis):
    pooling, batch norm, activations, adds and reshapes output none."""
    h, w = IMAGE
    ho, wo = out_hw(h, w, a.get("stride", 1))
    if block in ("conv", "grouped"):
        return a["out_channels"] * ho * wo
    if block == "dwsep":
        mid = a["in_channels"] * a.get("multiplier", 1)
        total = mid * ho * wo + a["out_channels"] * ho * wo  # depthwise, then pointwise
        if a.get("se_ratio", 0):
            total += _se_activations(mid, a["se_ratio"])
        return total
    if block == "hybrid":
        co, r = a["out_channels"], a.get("ratio", 0.5)
        cs = round(r * co)
        sub = {"kernel_size": a.get("kernel_size", 3), "stride": a.get("stride", 1),
               "in_channels": a["in_channels"]}
        return ((activations("conv", {**sub, "out_channels": cs}) if cs else 0)
                + (activations("dwsep", {**sub, "out_channels": co - cs,
                                         "multiplier": a.get("multiplier", 1)}) if co - cs else 0))
    if block == "inverted_residual":
        t = a.get("expand_ratio", 6)
        mid = a["in_channels"] * t
        total = mid * h * w if t != 1 else 0  # expansion at the input's resolution
        total += mid * ho * wo + a["out_channels"] * ho * wo  # depthwise, projection
        if a.get("se_ratio", 0):
            total += _se_activations(mid, a["se_ratio"])
        return total
    if block == "linear":
        return a["out_features"]
    return 0  # pooling, dropout, flatten


# -- bytes autograd saves for backward, per sample, fp32, training mode, on CPU ---------------
# Rules, each checked against torch's saved-tensor hooks (every storage counted once, in full):
# * conv and linear save their input (for the weight's gradient); batch norm saves its input.
# * In-place ReLU saves its output. The other in-place activations (ReLU6 = hardtanh_,
#   hardswish_, SiLU) need their input for the gradient, so autograd saves a *copy* of it; the
#   overwritten storage is new again when the next op saves it. Identity saves nothing.
# * Squeeze-excite: the pooled vector (by the reduce conv), the ReLU and sigmoid outputs, the
#   gated tensor x (by the multiply) and the product (by the next conv). Adds, cat and the
#   global mean save nothing that scales with the batch.
# * A block fed a tensor that needs no gradient, with no parameters, records nothing: pools,
#   dropout and flatten save 0 on their own (see tests/test_costs.py for them inside a net).

F32 = 4  # bytes


def _act_saves(activation: str) -> int:
    """Elements an activation saves per output element: all but identity keep one copy."""
    return 0 if activation == "identity" else 1


def _output_is_saved(activation: str) -> bool:
    """Whether the activation's output storage is already saved (only in-place ReLU saves
    it), so the next op saving it as its input adds nothing."""
    return activation == "relu"


def saved_bytes(block: str, a: dict[str, Any]) -> int:
    """Bytes saved for backward per sample, fp32, with the block's input needing no gradient."""
    h, w = IMAGE
    ho, wo = out_hw(h, w, a.get("stride", 1))
    bn = a.get("bn", True)
    if block in ("conv", "grouped"):
        act = a.get("activation", "relu")
        co = a["out_channels"]
        total = a["in_channels"] * h * w  # conv input
        total += (co * ho * wo if bn else 0) + _act_saves(act) * co * ho * wo
        return F32 * total
    if block == "dwsep":
        act = a.get("activation", "relu")
        ci, co = a["in_channels"], a["out_channels"]
        mid = ci * a.get("multiplier", 1)
        total = ci * h * w  # depthwise conv input
        total += (mid * ho * wo if bn else 0) + _act_saves(act) * mid * ho * wo
        if a.get("se_ratio", 0):
            total += _se_saved(mid, a["se_ratio"], ho * wo, act)  # includes pointwise input
        elif not _output_is_saved(act):
            total += mid * ho * wo  # pointwise conv input
        total += (co * ho * wo if bn else 0) + _act_saves(act) * co * ho * wo
        return F32 * total
    if block == "hybrid":
        co, r = a["out_channels"], a.get("ratio", 0.5)
        cs = round(r * co)
        sub = {"kernel_size": a.get("kernel_size", 3), "stride": a.get("stride", 1),
               "in_channels": a["in_channels"]}
        total = 0
        if cs:
            total += saved_bytes("conv", {**sub, "out_channels": cs})
        if co - cs:
            total += saved_bytes("dwsep", {**sub, "out_channels": co - cs,
                                           "multiplier": a.get("multiplier", 1)})
        if cs and co - cs:
            total -= F32 * a["in_channels"] * h * w  # both paths save the same input
        return total
    if block == "inverted_residual":
        act = a.get("activation", "relu6")
        ci, co, t = a["in_channels"], a["out_channels"], a.get("expand_ratio", 6)
        mid = ci * t
        total = ci * h * w  # input of the first conv (expansion, or depthwise when t == 1)
        if t != 1:
            total += mid * h * w + _act_saves(act) * mid * h * w  # expansion's BN and act
            if not _output_is_saved(act):
                total += mid * h * w  # depthwise conv input
        total += mid * ho * wo + _act_saves(act) * mid * ho * wo  # depthwise's BN and act
        if a.get("se_ratio", 0):
            total += _se_saved(mid, a["se_ratio"], ho * wo, act)
        elif not _output_is_saved(act):
            total += mid * ho * wo  # projection input
        total += co * ho * wo  # projection's BN; no activation after it (linear bottleneck)
        return F32 * total
    if block == "linear":
        return F32 * (a["in_features"] + _act_saves(a.get("activation", "identity"))
                      * a["out_features"])
    return 0


def _se_saved(c: int, ratio: float, hw: int, activation: str) -> int:
    """Elements squeeze-excite saves on a c x hw input that ``activation`` produced, including
    its output, which the next conv saves."""
    s = max(1, round(c * ratio))
    total = c + s + c  # pooled input of reduce, its ReLU's output, the sigmoid's output
    if not _output_is_saved(activation):
        total += c * hw  # the gated tensor, saved by the multiply
    return total + c * hw  # the product, saved by the conv after it
