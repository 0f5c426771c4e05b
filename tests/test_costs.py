"""Whole-network costs against a hand calculation from the baseline study's documented architecture."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dwsearch import build_model, get_block, measure_latency, profile
from dwsearch.costs import measure_saved_bytes

# The baseline's layers as (in, out, spatial size the conv runs at, has BN, kind).
SEED_CONVS = [(3, 32, 32, True), (32, 64, 32, True), (64, 128, 32, True), (128, 128, 32, False),
              (128, 256, 16, True), (256, 256, 16, False)]
SEED_FCS = [(16384, 1024), (1024, 512), (512, 10)]
DWSEP_AT = {0, 1, 2, 4}  # which of SEED_CONVS the depthwise net replaces with conv_dw


def hand_count(depthwise: bool) -> tuple[int, int]:
    """(params, MACs with BN folded) from the baseline's formulas: standard conv
    C_in*C_out*K^2 (+bias, +BN 2*C_out); conv_dw C_in*K^2 + C_in*C_out (+BN 2*C_in + 2*C_out);
    MACs H*W*C_in*C_out*K^2 and H*W*C_in*(K^2 + C_out)."""
    params = macs = 0
    for i, (ci, co, hw, bn) in enumerate(SEED_CONVS):
        if depthwise and i in DWSEP_AT:
            params += ci * 9 + 2 * ci + ci * co + 2 * co
            macs += hw * hw * ci * (9 + co)
        else:
            params += ci * co * 9 + co + (2 * co if bn else 0)
            macs += hw * hw * ci * co * 9
    for fi, fo in SEED_FCS:
        params += fi * fo + fo
        macs += fi * fo
    return params, macs


@pytest.mark.parametrize(("name", "depthwise"), [("seed_cnn", False), ("seed_dwsep", True)])
def test_baseline_totals_match_hand_calculation(name: str, depthwise: bool) -> None:
    params, macs = hand_count(depthwise)
    result = profile(name, bn="folded")
    assert result.params == params
    assert result.macs == macs
    assert result.flops == 2 * macs
    assert not result.unsupported_ops
    assert sum(layer.params for layer in result.layers) == result.params
    assert sum(layer.macs for layer in result.layers) == result.macs


@pytest.mark.parametrize("name", ["seed_cnn", "seed_dwsep"])
def test_counted_bn_adds_one_mac_per_bn_output_element(name: str) -> None:
    model = build_model(name)
    sizes: list[int] = []
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_hook(lambda _m, _i, out: sizes.append(out[0].numel()))
    model.eval()(torch.zeros(1, 3, 32, 32))
    bn_elements = sum(sizes)
    assert profile(model, bn="counted").macs - profile(model, bn="folded").macs == bn_elements


@pytest.mark.parametrize("name", ["seed_cnn", "seed_dwsep"])
def test_totals_agree_with_torch_flop_counter(name: str) -> None:
    model = build_model(name).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    result = profile(model, bn="folded")
    # No residual adds, SE or average pooling in the baseline nets: every MAC is a conv or matmul.
    assert 2 * result.macs == counter.get_total_flops()


def test_baseline_ratios_the_readme_reports() -> None:
    """The baseline document claims ~8-9x fewer parameters and FLOPs; per replaced layer that
    holds, for the whole network it does not (the 16.8M-parameter FC layer dominates)."""
    cnn, dw = profile("seed_cnn", bn="folded"), profile("seed_dwsep", bn="folded")
    layer6 = cnn.layers[6].macs / dw.layers[6].macs
    assert 8.0 < layer6 < 9.0  # the document's own example: 301.99M / 34.7M = 8.7x at 32x32
    assert cnn.params / dw.params < 1.1
    assert cnn.macs / dw.macs < 1.5


@pytest.mark.parametrize(("name", "depthwise"), [("seed_cnn", False), ("seed_dwsep", True)])
def test_activations_count_conv_and_linear_outputs(name: str, depthwise: bool) -> None:
    """fvcore's convention: conv_dw outputs its depthwise and its pointwise map; pooling,
    dropout and flatten output no conv/linear elements."""
    expected = 0
    for i, (ci, co, hw, _bn) in enumerate(SEED_CONVS):
        expected += hw * hw * (ci + co if depthwise and i in DWSEP_AT else co)
    expected += sum(fo for _fi, fo in SEED_FCS)
    result = profile(name)
    assert result.activations == expected  # 493,066 and 627,210
    assert result.layers[0].activations == 32 * 32 * (3 + 32 if depthwise else 32)
    assert all(result.layers[i].activations == 0 for i in (4, 5, 8, 9, 12))
    assert result.activations == sum(layer.activations for layer in result.layers)


F32, I64 = 4, 8  # bytes per element


def hand_saved(depthwise: bool) -> list[int]:
    """Bytes per sample autograd saves in each baseline layer (fp32, CPU), by the rules in
    tests/closed_form.py. Inside the net a layer's input is mostly the previous layer's
    in-place ReLU output, saved there already, so it is not counted again."""
    convs = []
    for i, (ci, co, hw, bn) in enumerate(SEED_CONVS):
        area = hw * hw
        # Only the first conv and the one after channel dropout see an input no layer saved.
        new_input = ci * area if i in (0, 4) else 0
        if depthwise and i in DWSEP_AT:
            # depthwise output (BN's input), its ReLU output, pointwise output, its ReLU output
            convs.append(F32 * (new_input + 2 * ci * area + 2 * co * area))
        else:
            convs.append(F32 * (new_input + (co * area if bn else 0) + co * area))
    pool1 = I64 * 128 * 16 * 16  # max pooling's indices; its input is the ReLU output above
    channel_mask = F32 * 128  # dropout2d on CPU: input * a float mask per channel
    pool2 = I64 * 256 * 8 * 8
    fc1 = F32 * (16384 + 1024)  # the flattened pooled map, the ReLU output
    fc2 = F32 * 512  # the ReLU output
    mask = F32 * 512  # dropout on CPU: input * a float mask per element
    fc3 = F32 * 512  # the dropout's output
    return [*convs[:4], pool1, channel_mask, convs[4], convs[5], pool2, 0, fc1, fc2, mask, fc3]


@pytest.mark.parametrize(("name", "depthwise"), [("seed_cnn", False), ("seed_dwsep", True)])
def test_saved_bytes_per_layer_match_hand_count(name: str, depthwise: bool) -> None:
    result = profile(name)
    assert [layer.saved_bytes for layer in result.layers] == hand_saved(depthwise)
    assert result.saved_bytes == sum(layer.saved_bytes for layer in result.layers)


def test_dwsep_saves_more_for_backward_than_conv() -> None:
    """Why seed_dwsep needs more training memory: each conv_dw keeps its depthwise stage's BN
    input and ReLU output (C_in x H x W each) besides what the standard conv keeps."""
    cnn, dw = profile("seed_cnn"), profile("seed_dwsep")
    extra = sum(F32 * 2 * ci * hw * hw
                for i, (ci, _co, hw, _bn) in enumerate(SEED_CONVS) if i in DWSEP_AT)
    assert dw.saved_bytes - cnn.saved_bytes == extra  # 1,073,152 bytes per sample
    assert dw.saved_bytes > cnn.saved_bytes


def test_bf16_autocast_halves_a_conv_block() -> None:
    """Under bf16 autocast the conv saves its input cast to bf16, and BN and ReLU run in bf16."""
    block = get_block("conv")(in_channels=3, out_channels=8)
    fp32 = measure_saved_bytes(block, (3, 9, 9))
    bf16 = measure_saved_bytes(block, (3, 9, 9), precision="bf16")
    assert fp32.total == F32 * (3 * 81 + 2 * 8 * 81)
    assert bf16.total * 2 == fp32.total and bf16.precision == "bf16"
    assert "bf16" in profile("seed_cnn", precision="bf16").convention


def test_saved_bytes_are_measured_under_no_grad_and_inference_mode() -> None:
    model = build_model("seed_cnn")
    expected = measure_saved_bytes(model, (3, 32, 32)).total
    with torch.no_grad():
        assert measure_saved_bytes(model, (3, 32, 32)).total == expected
    with torch.inference_mode():
        assert measure_saved_bytes(model, (3, 32, 32)).total == expected


def test_profile_leaves_model_mode_alone() -> None:
    model = build_model("seed_dwsep").train()
    profile(model)
    assert model.training


def test_profile_leaves_model_and_rng_unchanged() -> None:
    """Profiling runs before training: BN statistics, each module's mode (a frozen part
    included), weights and the RNG stream that dropout draws from must be as they were."""
    model = build_model("seed_dwsep").train()
    model[1].eval()  # a frozen block inside a training model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    profile(model)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_table_states_the_convention() -> None:
    text = profile("seed_dwsep", bn="folded").format_table()
    assert "FLOPs = 2 x MACs" in text and "folded" in text
    assert "18,092,395" in text.splitlines()[-3]
    assert "saved/sample KiB" in text.splitlines()[1]
    assert "fvcore ActivationCountAnalysis" in text and "fp32" in text


def test_profile_of_a_plain_module_needs_an_input_shape() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    with pytest.raises(ValueError, match="input_shape is required"):
        profile(net)
    assert profile(net, (3, 5, 5)).macs == 3 * 3 * 4 * 3 * 9


def test_latency_reports_conditions_and_restores_threads() -> None:
    before = torch.get_num_threads()
    result = measure_latency("seed_dwsep", batch_size=2, device="cpu", threads=1,
                             warmup=1, repeats=3, channels_last=True)
    assert torch.get_num_threads() == before
    assert result.threads == 1 and result.batch_size == 2 and result.channels_last
    assert result.repeats == len(result.samples_ms) == 3
    assert result.min_ms <= result.median_ms <= result.max_ms
    assert result.torch_version == torch.__version__ and result.device_name
    assert "median" in result.summary()


def test_latency_on_missing_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        measure_latency("seed_dwsep", device="cuda", repeats=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_latency_on_cuda() -> None:
    result = measure_latency("seed_dwsep", batch_size=8, device="cuda", warmup=2, repeats=5)
    assert result.device.startswith("cuda") and result.median_ms > 0


def test_the_batch_norm_modes_are_costs_own() -> None:
    """Every command's --bn offers exactly what the cost counter takes (written once)."""
    from typing import get_args

    from dwsearch.convention import BN_MODES
    from dwsearch.costs import BNMode

    assert get_args(BNMode) == BN_MODES
