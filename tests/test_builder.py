"""Building networks from specs: shape propagation and errors that name the layer."""

from __future__ import annotations

import pytest
import torch

from dwsearch import SpecError, build_model, load_spec
from dwsearch.builder import Network

BASE = {"input": [3, 16, 16], "num_classes": 3}


def _spec(*layers: dict) -> dict:
    return {**BASE, "layers": list(layers)}


def test_seed_cnn_matches_the_documented_architecture() -> None:
    """Conv(3→32) BN ReLU, Conv(32→64), Conv(64→128), Conv(128→128) no BN, pool, dropout,
    Conv(128→256), Conv(256→256) no BN, pool, FC(16384→1024), FC(1024→512), FC(512→10)."""
    model = build_model("seed_cnn")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1)), (64, 128, (3, 3), (1, 1)),
        (128, 128, (3, 3), (1, 1)), (128, 256, (3, 3), (1, 1)), (256, 256, (3, 3), (1, 1)),
    ]
    assert all(c.bias is not None for c in convs)  # PyTorch's default, as the seed writes it
    norms = [m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms == [32, 64, 128, 256]  # the 128→128 and 256→256 convs have no BN
    fcs = [(m.in_features, m.out_features) for m in model.modules()
           if isinstance(m, torch.nn.Linear)]
    assert fcs == [(16384, 1024), (1024, 512), (512, 10)]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_seed_dwsep_replaces_exactly_the_documented_convs() -> None:
    model = build_model("seed_dwsep")
    depthwise = [(m.in_channels, m.groups) for m in model.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise == [(3, 3), (32, 32), (64, 64), (128, 128)]
    standard3x3 = [(m.in_channels, m.out_channels) for m in model.modules()
                   if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and m.kernel_size == (3, 3)]
    assert standard3x3 == [(128, 128), (256, 256)]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_shapes_are_recorded_and_spec_is_kept() -> None:
    model = build_model("seed_cnn")
    assert isinstance(model, Network) and model.spec == load_spec("seed_cnn")
    assert model.shapes[9].out_shape == (16384,)
    assert model.shapes[10].in_shape == (16384,)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            [{"block": "conv", "out_channels": 8}, {"block": "conv", "in_channels": 4,
                                                      "out_channels": 8}],
            r"layers\[1\] \(conv\): in_channels is 4 but the previous layer produces 8",
        ),
        (
            [{"block": "conv", "out_channels": 8}, {"block": "linear", "out_features": 3}],
            r"layers\[1\] \(linear\): expects a flat input .* add \{block: flatten\}",
        ),
        (
            [{"block": "global_avgpool"}, {"block": "conv", "out_channels": 3}],
            r"layers\[1\] \(conv\): expects an image input",
        ),
        ([{"block": "dwsp", "out_channels": 8}], r"layers\[0\]: unknown block 'dwsp'; did you mean dwsep"),
        ([{"block": "grouped", "out_channels": 8}], r"layers\[0\] \(grouped\): missing required .*groups"),
        ([{"block": "conv", "out_channels": 8, "kernel_size": 2}], r"layers\[0\] \(conv\): kernel_size must be odd"),
        ([{"block": "conv", "out_chanels": 8}], r"did you mean 'out_channels'"),
        (
            [{"block": "maxpool", "kernel_size": 2}] * 5,
            r"layers\[4\] \(maxpool\): fails on input of shape \(3, 1, 1\)",
        ),
        (
            [{"block": "flatten"}, {"block": "linear", "out_features": 7}],
            r"layers\[1\] \(linear\): the network ends with shape \(7,\) but num_classes is 3",
        ),
    ],
)
def test_errors_name_layer_block_and_expectation(layers: list, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        build_model(_spec(*layers))


def test_linear_in_features_is_inferred() -> None:
    model = build_model(_spec({"block": "flatten"}, {"block": "linear", "out_features": 3}))
    assert model[1].fc.in_features == 3 * 16 * 16


def test_built_model_is_in_training_mode() -> None:
    assert build_model("seed_dwsep").training
