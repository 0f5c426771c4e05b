"""Every registered block: shapes, gradients, parameter, MAC, activation and saved-byte counts
against closed forms."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from closed_form import (
    BLOCK_CASES,
    activations,
    input_shape,
    macs,
    output_shape,
    params,
    saved_bytes,
)
from torch.utils.flop_counter import FlopCounterMode

from dwsearch import get_block, list_blocks
from dwsearch.costs import count_activations, count_macs, measure_saved_bytes
from dwsearch.registry import block_info

CASES = [
    pytest.param(name, args, id=f"{name}-{i}")
    for name in list_blocks()
    for i, args in enumerate(BLOCK_CASES.get(name, [{}]))
]


def _build(name: str, args: dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_block(name)(**args)


def test_every_registered_block_has_test_cases() -> None:
    # Every block dwsearch or an installed plugin registers; blocks that test modules register
    # for themselves (an untraceable or unlowerable user block) are theirs to test, whichever
    # order (or pytest-xdist worker) the modules run in.
    missing = [name for name in list_blocks()
               if name not in BLOCK_CASES and not block_info(name).source.startswith("test")]
    assert not missing, f"add example arguments to tests/closed_form.py for {missing}"


@pytest.mark.parametrize(("name", "args"), CASES)
def test_output_shape(name: str, args: dict[str, Any]) -> None:
    block = _build(name, args)
    x = torch.randn(2, *input_shape(name, args))
    assert tuple(block(x).shape[1:]) == output_shape(name, args)


@pytest.mark.parametrize(("name", "args"), CASES)
def test_every_parameter_receives_a_gradient(name: str, args: dict[str, Any]) -> None:
    block = _build(name, args).train()
    x = torch.randn(4, *input_shape(name, args), requires_grad=True)
    block(x).square().sum().backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(("name", "args"), CASES)
def test_parameter_count_matches_closed_form(name: str, args: dict[str, Any]) -> None:
    block = _build(name, args)
    assert sum(p.numel() for p in block.parameters()) == params(name, args)


@pytest.mark.parametrize("bn_counted", [False, True], ids=["bn-folded", "bn-counted"])
@pytest.mark.parametrize(("name", "args"), CASES)
def test_macs_match_closed_form_with_no_unsupported_ops(
    name: str, args: dict[str, Any], bn_counted: bool
) -> None:
    block = _build(name, args)
    result = count_macs(block, input_shape(name, args), bn="counted" if bn_counted else "folded")
    assert not result.unsupported, f"{name} leaves ops uncounted: {result.unsupported}"
    assert result.total == macs(name, args, bn_counted)


@pytest.mark.parametrize(("name", "args"), CASES)
def test_activations_match_closed_form(name: str, args: dict[str, Any]) -> None:
    result = count_activations(_build(name, args), input_shape(name, args))
    assert result.total == activations(name, args)
    assert result.by_module[""] == result.total


@pytest.mark.parametrize(("name", "args"), CASES)
def test_saved_bytes_match_closed_form(name: str, args: dict[str, Any]) -> None:
    block = _build(name, args)
    result = measure_saved_bytes(block, input_shape(name, args))
    assert result.total == saved_bytes(name, args)


@pytest.mark.parametrize(("name", "args"), CASES)
def test_conv_and_linear_macs_agree_with_torch_flop_counter(
    name: str, args: dict[str, Any]
) -> None:
    """torch's FlopCounterMode counts 2 FLOPs per multiply-add of convs and matmuls only."""
    block = _build(name, args).eval()
    shape = input_shape(name, args)
    by_operator = count_macs(block, shape, bn="folded").by_operator
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        block(torch.zeros(1, *shape))
    ours = by_operator.get("conv", 0) + by_operator.get("linear", 0) + by_operator.get("addmm", 0)
    assert 2 * ours == counter.get_total_flops()


def test_baseline_conv_dw_is_dwsep_k3_m1() -> None:
    """The baseline's conv_dw, written out as in the reference, equals dwsep(k=3, m=1)."""
    inp, oup = 32, 64
    seed = torch.nn.Sequential(
        torch.nn.Conv2d(inp, inp, 3, 1, 1, groups=inp, bias=False),
        torch.nn.BatchNorm2d(inp),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        torch.nn.BatchNorm2d(oup),
        torch.nn.ReLU(inplace=True),
    )
    ours = get_block("dwsep")(in_channels=inp, out_channels=oup)
    seed_tensors = list(seed.state_dict().values())
    ours_tensors = list(ours.state_dict().values())
    assert [t.shape for t in seed_tensors] == [t.shape for t in ours_tensors]
    ours.load_state_dict(dict(zip(ours.state_dict(), seed_tensors, strict=True)))
    x = torch.randn(2, inp, 8, 8)
    torch.testing.assert_close(ours.eval()(x), seed.eval()(x))


@pytest.mark.parametrize(("ratio", "equivalent"), [(1.0, "conv"), (0.0, "dwsep")])
def test_hybrid_endpoints_equal_conv_and_dwsep(ratio: float, equivalent: str) -> None:
    args = {"in_channels": 8, "out_channels": 16, "kernel_size": 5}
    hybrid = get_block("hybrid")(**args, ratio=ratio).eval()
    other = get_block(equivalent)(**args).eval()
    assert sum(p.numel() for p in hybrid.parameters()) == sum(
        p.numel() for p in other.parameters()
    )
    other.load_state_dict(dict(zip(other.state_dict(), hybrid.state_dict().values(),
                                   strict=True)))
    x = torch.randn(2, 8, 10, 10)
    torch.testing.assert_close(hybrid(x), other(x))


def test_grouped_spans_standard_to_depthwise() -> None:
    standard = get_block("grouped")(in_channels=8, out_channels=8, groups=1)
    depthwise = get_block("grouped")(in_channels=8, out_channels=8, groups=8)
    assert standard.conv.weight.shape == (8, 8, 3, 3)
    assert depthwise.conv.weight.shape == (8, 1, 3, 3)


def test_inverted_residual_skip_rules() -> None:
    block = get_block("inverted_residual")
    assert block(in_channels=8, out_channels=8).has_skip
    assert not block(in_channels=8, out_channels=8, stride=2).has_skip
    assert not block(in_channels=8, out_channels=16).has_skip
    with pytest.raises(ValueError, match="skip=true needs stride 1"):
        block(in_channels=8, out_channels=16, skip=True)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("conv", {"in_channels": 3, "out_channels": 8, "kernel_size": 4}, "kernel_size must be odd"),
        ("conv", {"in_channels": 3, "out_channels": 8, "activation": "gelu"}, "unknown activation"),
        ("grouped", {"in_channels": 6, "out_channels": 8, "groups": 4}, "groups=4 must divide"),
        ("dwsep", {"in_channels": 3, "out_channels": 8, "multiplier": 0}, "multiplier"),
        ("hybrid", {"in_channels": 3, "out_channels": 8, "ratio": 1.5}, r"ratio must be in \[0, 1\]"),
        ("inverted_residual", {"in_channels": 3, "out_channels": 8, "se_ratio": -1}, "se_ratio"),
    ],
)
def test_bad_arguments_raise_value_error(name: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_block(name)(**args)
