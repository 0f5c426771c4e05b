"""Bad input, hand-picked, one class at a time: every case ends in a located one-line
:class:`DwsearchError` (exit 1 on the command line, 2 for a usage error) or in the right
result; never a traceback, never a silently wrong result, never a file changed unasked.

The classes and what each gets are tabled in docs/bad-input.md; test_fuzz.py generates the
same kinds of input at random.
"""

from __future__ import annotations

import os
import pickle
import re
import resource
import struct
import threading
import time
import urllib.error
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from dwsearch import build_model, infer_shapes, load_spec, profile, register_block, registry
from dwsearch.blocks import ConvBlock, Linear
from dwsearch.builder import _constructor_kwargs
from dwsearch.cli import main
from dwsearch.data import CIFAR10_CLASSES, DataConfig, load_cifar10, load_dataset
from dwsearch.data import paths as data_paths
from dwsearch.errors import (
    CheckpointError,
    ConfigError,
    CostError,
    DataError,
    DwsearchError,
    ResourceError,
    SpecError,
)
from dwsearch.run import model_from_checkpoint, train_spec
from dwsearch.train import TrainConfig, load_checkpoint

TINY: dict[str, Any] = {
    "input": [3, 8, 8],
    "num_classes": 2,
    "layers": [
        {"block": "conv", "out_channels": 4},
        {"block": "global_avgpool"},
        {"block": "linear", "out_features": 2},
    ],
}
QUICK = {"epochs": 1, "batch_size": 8, "device": "cpu", "precision": "fp32", "threads": 1}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DWSEARCH_DATA_DIR", raising=False)
    monkeypatch.delenv("DWSEARCH_MAX_MEMORY_GB", raising=False)

    def no_network(root: Path) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(data_paths, "download_cifar10", no_network)


def _png(path: Path, value: int, size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def _folders(root: Path, counts: dict[str, dict[str, int]]) -> Path:
    """``counts``: split ("" for the flat layout) -> class -> number of images."""
    for split, classes in counts.items():
        for k, (cls, n) in enumerate(classes.items()):
            for i in range(n):
                _png((root / split / cls if split else root / cls) / f"{i}.png", 40 * k + i)
    return root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _folders(tmp_path / "data", {"train": {"ant": 12, "bee": 12},
                                        "test": {"ant": 4, "bee": 4}})


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(load_spec(TINY).to_yaml())
    return path


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"not a clean exit: {result.exception!r}\n{result.output}")
    return result.exit_code, result.output


def cli_error(*args: str, code: int = 1) -> str:
    """The one error line of a command that must fail cleanly with ``code``."""
    exit_code, out = cli(*args)
    assert exit_code == code, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("Error: "), out
    return lines[-1]


def raises(error: type[DwsearchError], call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ----------------------------------------------------------------- resource exhaustion


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "layers[0].out_channels=1000000000"],
         r"layers\[0\] \(conv\): the model up to this layer would need an estimated 111\.8 GiB"),
        (["--input", "3,512,512"],
         r"layers\[10\] \(linear\): .*4,294,968,320 parameters in this layer"),
        (["--input", "3,100000,100000"],
         r"input 3x100000x100000: one sample would need an estimated 111\.8 GiB"),
        (["--input", "3,99999999999999999999999,32"],
         r"input 3x9+x32: one sample would need an estimated"),
        (["--set", "layers[0].out_channels=99999999999999999999"],
         r"out_channels: expected an integer, found 9+ \(out of range\)"),
        (["--latency", "--batch-size", "100000000"],
         r"batch_size 100,000,000: a latency measurement would need"),
    ],
)
def test_sizes_are_refused_from_shapes_before_anything_is_allocated(
    args: list[str], expected: str
) -> None:
    before, start = peak_rss_gib(), time.perf_counter()
    line = cli_error("profile", "seed_cnn", *args)
    assert time.perf_counter() - start < 60
    assert peak_rss_gib() - before < 1.0  # nothing near the estimate was allocated
    assert re.search(expected, line), line
    if "estimated" in line:
        assert "over the limit of 8.0 GiB" in line and "DWSEARCH_MAX_MEMORY_GB" in line


def test_the_limit_is_overridable_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWSEARCH_MAX_MEMORY_GB", "0.05")  # seed_cnn's weights are 74 MB
    assert "over the limit of 51.2 MiB" in raises(ResourceError, build_model, "seed_cnn")
    monkeypatch.setenv("DWSEARCH_MAX_MEMORY_GB", "200")
    big = load_spec("seed_cnn").with_overrides({"input": [3, 512, 512]})
    assert infer_shapes(big)[10].in_shape == (4194304,)  # planned on meta, nothing allocated
    for bad in ("abc", "0", "-1", "nan"):
        monkeypatch.setenv("DWSEARCH_MAX_MEMORY_GB", bad)
        assert "DWSEARCH_MAX_MEMORY_GB" in raises(ConfigError, build_model, TINY)


def test_training_memory_is_estimated_before_training(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {**TINY, "input": [3, 32, 32], "layers": [{"block": "conv", "out_channels": 64},
                                                     *TINY["layers"][1:]]}
    monkeypatch.setenv("DWSEARCH_MAX_MEMORY_GB", "0.005")  # the model fits, a batch of 16 not
    called: list[int] = []
    message = raises(ResourceError, train_spec, spec,
                     DataConfig("imagefolder", str(data), val_size=0),
                     TrainConfig(**{**QUICK, "batch_size": 16}),
                     callbacks=[lambda m: called.append(m.epoch)], progress=False)
    assert message.startswith("batch_size 16: a training step would need an estimated")
    assert "lower --batch-size" in message and called == []


def test_decoded_sizes_are_estimated_before_decoding(tmp_path: Path, data: Path) -> None:
    message = raises(ResourceError, load_dataset, "imagefolder", data_dir=data,
                     image_size=(20000, 20000), val_size=0)
    assert "decoding 24 images of 20000x20000 would need an estimated 53.6 GiB" in message
    # A few bytes of PNG header can declare a 100,000 x 100,000 image: refused unread.
    bomb = tmp_path / "data" / "train" / "ant" / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
                     + struct.pack(">I", zlib.crc32(chunk)))
    message = raises(ResourceError, load_dataset, "imagefolder", data_dir=data, val_size=0,
                     image_size=(8, 8))
    assert "bomb.png: decoding this 100000x100000 image would need" in message


def _write_batches(folder: Path, per_batch: int = 20) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        labels = [i % 10 for i in range(per_batch)]
        batch = {b"labels": labels, b"data": rng.integers(0, 256, (per_batch, 3072), np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_resizing_is_estimated_before_resizing(tmp_path: Path) -> None:
    _write_batches(tmp_path / "cifar-10-batches-py")
    message = raises(ResourceError, load_dataset, "cifar10", data_dir=tmp_path,
                     image_size=(6000, 6000), val_size=0)
    assert message.startswith("train: 100 images resized to 6000x6000 would need an estimated "
                              "10.1 GiB")


# ----------------------------------------------------------------- loose types


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        ({"block": "conv", "out_channels": 4, "bn": "false"},
         "layers[0] (conv): bn: expected true or false, found 'false' (text; write true or "
         "false without quotes)"),
        ({"block": "conv", "out_channels": 4, "bn": float("nan")},
         "layers[0] (conv): bn: expected true or false, found nan"),
        ({"block": "conv", "out_channels": 4, "bias": 1},
         "layers[0] (conv): bias: expected true or false or null, found 1"),
        ({"block": "conv", "out_channels": 4, "stride": 1.5},
         "layers[0] (conv): stride: expected an integer, found 1.5"),
        ({"block": "conv", "out_channels": 4, "stride": 2.0},
         "layers[0] (conv): stride: expected an integer, found 2.0 (a float; write 2)"),
        ({"block": "conv", "out_channels": 8.5},
         "layers[0] (conv): out_channels: expected an integer, found 8.5"),
        ({"block": "grouped", "groups": 3, "out_channels": 8.5},
         "layers[0] (grouped): out_channels: expected an integer, found 8.5"),
        ({"block": "conv", "out_channels": True},
         "layers[0] (conv): out_channels: expected an integer, found true (a boolean)"),
        ({"block": "conv", "out_channels": 4, "kernel_size": [3]},
         "layers[0] (conv): kernel_size: expected an integer, found [3]"),
        ({"block": "conv", "out_channels": 4, "activation": 7},
         "layers[0] (conv): activation: expected text, found 7"),
        ({"block": "dwsep", "out_channels": 4, "se_ratio": float("nan")},
         "layers[0] (dwsep): se_ratio: expected a finite number, found nan"),
        ({"block": "dwsep", "out_channels": 4, "se_ratio": "1e-3"},
         "layers[0] (dwsep): se_ratio: expected a finite number, found '1e-3' (text: YAML "
         "reads 1e-3 as text; write it with a point, 1.0e-3)"),
        ({"block": "dwsep", "out_channels": 4, "multiplier": 2.0},
         "layers[0] (dwsep): multiplier: expected an integer, found 2.0 (a float; write 2)"),
        ({"block": "dwsep", "out_channels": 4, "skip": "yes"},
         "layers[0] (dwsep): skip: expected true or false, found 'yes' (text; write true or "
         "false without quotes)"),
        ({"block": "hybrid", "out_channels": 4, "ratio": float("inf")},
         "layers[0] (hybrid): ratio: expected a finite number, found inf"),
        ({"block": "inverted_residual", "out_channels": 4, "se_ratio": 2},
         "layers[0] (inverted_residual): se_ratio must be in (0, 1], found 2"),
        ({"block": "maxpool", "kernel_size": 2, "return_indices": True},
         "layers[0] (maxpool): return_indices must be false: a layer passes one tensor on"),
        ({"block": "maxpool", "kernel_size": 2.5},
         "layers[0] (maxpool): kernel_size: expected an integer or a list of 2 integers, "
         "found 2.5"),
        ({"block": "maxpool", "kernel_size": 0},
         "layers[0] (maxpool): kernel_size must be an integer >= 1 (or a pair of them), "
         "found 0"),
        ({"block": "avgpool", "kernel_size": 2, "ceil_mode": "maybe"},
         "layers[0] (avgpool): ceil_mode: expected true or false, found 'maybe'"),
        ({"block": "dropout2d", "p": float("nan")},
         "layers[0] (dropout2d): p: expected a finite number, found nan"),
        ({"block": "dropout2d", "p": [0.1]},
         "layers[0] (dropout2d): p: expected a finite number, found [0.1]"),
        ({"block": "dropout2d", "p": 2},
         "layers[0] (dropout2d): p must be a probability in [0, 1], found 2"),
        ({"block": "flatten", "start_dim": 0},
         "layers[0] (flatten): start_dim must be >= 1 (dimension 0 is the batch), found 0"),
        ({"block": "global_avgpool", "flatten": "no"},
         "layers[0] (global_avgpool): flatten: expected true or false, found 'no' (text; "
         "write true or false without quotes)"),
    ],
)
def test_values_are_checked_against_the_block_signature(layer: dict, expected: str) -> None:
    spec = {**TINY, "layers": [layer, {"block": "flatten"}, {"block": "linear",
                                                              "out_features": 2}]}
    assert raises(SpecError, build_model, spec) == expected


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ([{"block": "flatten"}, {"block": "linear", "out_features": -3}],
         "layers[1] (linear): out_features must be a positive integer, found -3"),
        ([{"block": "flatten"}, {"block": "linear", "out_features": 2}, {"block": "dropout2d"}],
         "layers[2] (dropout2d): expects an image input (C, H, W) but the previous layer "
         "produces (2,)"),
        ([{"block": "conv", "out_channels": 4, "in_channels": 3.0}],
         "layers[0] (conv): in_channels: expected an integer, found 3.0 (a float; write 3)"),
    ],
)
def test_layers_in_context(layers: list, expected: str) -> None:
    assert raises(SpecError, build_model, {**TINY, "layers": layers}) == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"num_classes": True}, "num_classes: expected a positive integer, found true"),
        ({"num_classes": "1e9"}, "num_classes: expected a positive integer, found '1e9' (text)"),
        ({"input": [True, 8, 8]}, "input: expected positive integers like [3, 32, 32], "
                                  "found [true, 8, 8]"),
    ],
)
def test_spec_numbers_are_not_booleans_or_text(change: dict, expected: str) -> None:
    assert raises(SpecError, load_spec, {**TINY, **change}) == f"spec: {expected}"


def test_blocks_used_from_python_refuse_loose_values_too() -> None:
    with pytest.raises(ValueError, match="bn must be true or false, found 'false'"):
        ConvBlock(3, 8, bn="false")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out_channels must be a positive integer"):
        ConvBlock(3, 8.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out_features must be a positive integer"):
        Linear(4, -3)


class Untyped(nn.Module):
    """No annotations: only what needs none is checked (no NaN, a tensor out)."""

    def __init__(self, in_channels, scale=1.0):  # type: ignore[no-untyped-def]
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(self.scale)


class Pair(nn.Module):
    """Returns two tensors, which no next layer can take."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


@pytest.fixture
def user_blocks() -> Iterator[None]:
    """Registered for one test and removed after it: test_blocks.py requires closed forms
    for every block the registry lists."""
    blocks = {"bad_input_untyped": Untyped, "bad_input_pair": Pair,
              "bad_input_branchy": Branchy, "bad_input_shapey": Shapey}
    for name, cls in blocks.items():
        register_block(name)(cls)
    try:
        yield
    finally:
        with registry._lock:
            for name in blocks:
                registry._registry.pop(name, None)


@pytest.mark.usefixtures("user_blocks")
def test_user_blocks_get_the_checks_that_are_safe() -> None:
    head = [{"block": "global_avgpool"}, {"block": "linear", "out_features": 2}]
    build_model({**TINY, "layers": [{"block": "bad_input_untyped", "scale": "2"}, *head]})
    assert raises(SpecError, build_model, {**TINY, "layers": [
        {"block": "bad_input_untyped", "scale": float("nan")}, *head]}) == (
        "layers[0] (bad_input_untyped): scale: expected a finite number, found nan")
    assert raises(SpecError, build_model, {**TINY, "layers": [
        {"block": "bad_input_pair"}, *head]}).startswith(
        "layers[0] (bad_input_pair): forward returned tuple, not a tensor")


def test_planning_on_meta_changes_neither_weights_nor_hashes() -> None:
    """The same seed gives the weights of constructing the layers one by one (as before
    the meta pass existed), and the specs' hashes are those recorded before it."""
    spec = load_spec("seed_dwsep")
    shapes = infer_shapes(spec)
    torch.manual_seed(0)
    built = build_model(spec).state_dict()
    after_build = torch.rand(1)
    torch.manual_seed(0)
    direct = nn.Sequential(*(
        _constructor_kwargs(i, layer, shapes[i].in_shape)[0](
            **_constructor_kwargs(i, layer, shapes[i].in_shape)[1])
        for i, layer in enumerate(spec.layers)
    )).state_dict()
    assert torch.equal(torch.rand(1), after_build)
    assert list(built) == list(direct)
    assert all(torch.equal(built[k], direct[k]) for k in built)
    assert load_spec("seed_cnn").hash() == "14202931d895804c"
    assert spec.hash() == "d1f9b2c7d1f695ea"


# ----------------------------------------------------------------- ambiguous input


@pytest.mark.parametrize(
    ("sets", "code", "expected"),
    [
        (["layers[5:5].p=0.1"], 1, "the slice selects no layer (the spec has layers 0..13)"),
        (["layers[0].pp=null"], 1, "'pp' is not set on layer 0, so null has nothing to remove"),
        (["layers[0:3].p=null"], 1, "'p' is not set on any selected layer"),
        (["layers[0].out_channels=32", "layers[0].out_channels=16"], 2,
         "layers[0].out_channels is set twice"),
        (["layers[5].p=&a [*a]"], 2, "expands to more than 200,000 values"),
        (["layers[5].p={a: 1, a: 2}"], 2, "key 'a' appears twice"),
    ],
)
def test_set_that_would_change_nothing_or_is_ambiguous(
    sets: list[str], code: int, expected: str
) -> None:
    args = [a for s in sets for a in ("--set", s)]
    assert expected in cli_error("show", "seed_cnn", *args, code=code)


def test_show_prints_only_specs_that_build() -> None:
    assert "bn: expected true or false" in cli_error(
        "show", "seed_cnn", "--set", "layers[0].bn='false'")


# ----------------------------------------------------------------- torch errors at the boundary


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["profile", "seed_cnn", "--device", "foo"], 2, "--device only applies with --latency"),
        (["profile", "seed_cnn", "--latency", "--device", "foo"], 1,
         "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'foo'"),
        (["profile", "seed_cnn", "--latency", "--threads", "99999999999"], 2,
         "is not in the range 1<=x<=1024"),
        (["train", "seed_cnn", "--threads", "99999999999"], 1,
         "--threads: expected null or an integer in 1..1024"),
        (["train", "seed_cnn", "--seed", "99999999999999999999"], 1,
         "--seed: expected an integer in 0..2^63-1"),
        (["bench", "--baseline-workers", "99999999999"], 2, "expected integers in 0..64"),
        (["bench", "--accuracy-seeds", "99999999999999999999999"], 2,
         "expected integers in 0..9223372036854775807"),
    ],
)
def test_values_torch_would_choke_on_are_refused_where_they_enter(
    args: list[str], code: int, expected: str
) -> None:
    assert expected in cli_error(*args, code=code)


def test_bench_checks_its_specs_before_loading_anything(spec_file: Path) -> None:
    line = cli_error("bench", spec_file, "--no-memory", "--no-load-times")
    assert "the benchmark trains on CIFAR-10 as it comes (input [3, 32, 32]" in line
    line = cli_error("bench", "seed_cnn", "--output", spec_file / "x.json")
    assert "--output" in line and "cannot write there" in line


def test_profile_of_a_plain_module_on_a_shape_it_cannot_take() -> None:
    message = raises(ConfigError, profile, nn.Linear(3, 2), input_shape=(5,))
    assert message.startswith("input_shape (5,): the model fails on it: mat1 and mat2")


# ----------------------------------------------------------------- data


def test_a_small_class_never_vanishes_from_the_test_set(tmp_path: Path) -> None:
    flat = _folders(tmp_path / "flat", {"": {"ant": 50, "bee": 2}})
    splits = load_dataset("imagefolder", data_dir=flat, val_size=0)
    # 20% of 52 is 10 test images; bee's share rounds to 0 but it keeps one.
    assert torch.bincount(splits.test.labels).tolist() == [9, 1]
    assert torch.bincount(splits.train.labels).tolist() == [41, 1]
    lone = _folders(tmp_path / "lone", {"": {"ant": 50, "bee": 1}})
    message = raises(DataError, load_dataset, "imagefolder", data_dir=lone, val_size=0)
    assert "class 'bee' has 1 sample(s); a stratified split needs at least 2" in message
    assert str(lone) in message


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"val_size": 1}, "val_size=1: cannot hold 1 sample(s) of each of the 2 classes"),
        ({"val_size": 0, "train_subset": 1}, "subset size 1: cannot hold 1 sample(s) of each"),
        ({"val_size": 0, "test_subset": 1}, "test subset size 1: cannot hold 1 sample(s)"),
        ({"val_size": 23}, "val_size=23: cannot hold 1 sample(s) of each of the 2 classes and "
                           "leave 1 of each; use at most 22"),
    ],
)
def test_splits_and_subsets_keep_every_class(data: Path, kwargs: dict, expected: str) -> None:
    assert expected in raises(DataError, load_dataset, "imagefolder", data_dir=data, **kwargs)


def test_named_data_folders_are_read_never_created(tmp_path: Path, spec_file: Path) -> None:
    typo = tmp_path / "dat"
    line = cli_error("train", spec_file, "--data-dir", typo, "--epochs", "1")
    assert line == f"Error: {typo}: no such folder (named by --data-dir); check the path"
    assert not typo.exists()
    half = _folders(tmp_path / "half", {"train": {"ant": 2}})
    assert "has train/ but no test/" in raises(DataError, load_cifar10, half)


def test_cifar_folders_of_mixed_sizes_name_no_missing_option(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for k, cls in enumerate(CIFAR10_CLASSES):
            _png(tmp_path / split / cls / "a.png", k, (32, 32))
    _png(tmp_path / "train" / "cat" / "b.png", 1, (30, 32))
    message = raises(DataError, load_cifar10, tmp_path)
    assert "CIFAR-10 images are 32x32" in message and "image_size" not in message


def test_test_fraction_is_an_option(tmp_path: Path, spec_file: Path) -> None:
    flat = _folders(tmp_path / "flat", {"": {"ant": 6, "bee": 6}})
    code, out = cli("train", spec_file, "--dataset", "imagefolder", "--data-dir", flat,
                    "--test-fraction", "0.5", "--val-size", "0", "--epochs", "1", "-q",
                    "--json", "--device", "cpu", "--precision", "fp32")
    assert code == 0, out
    assert '"test_images": 6' in out and '"test_fraction": 0.5' in out


# ----------------------------------------------------------------- checkpoints


def _train(data: Path, checkpoint: Path, **kwargs: Any) -> Any:
    data_kwargs = {"val_size": kwargs.pop("val_size", 4)}
    return train_spec(TINY, DataConfig("imagefolder", str(data), **data_kwargs),
                      TrainConfig(**{**QUICK, **kwargs.pop("train", {})}),
                      checkpoint=checkpoint, progress=False, test=False, **kwargs)


def test_an_unwritable_checkpoint_fails_before_training(tmp_path: Path, data: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    called: list[int] = []
    target = blocker / "sub" / "run.pt"
    message = raises(CheckpointError, _train, data, target,
                     callbacks=[lambda m: called.append(m.epoch)])
    assert message == f"{target}: cannot write a checkpoint there (Not a directory)"
    assert called == [] and blocker.read_text() == "a file, not a folder"


def test_an_existing_checkpoint_is_never_overwritten_unasked(
    tmp_path: Path, data: Path, spec_file: Path
) -> None:
    ckpt = tmp_path / "run.pt"
    _train(data, ckpt)
    before = ckpt.read_bytes()
    assert "a checkpoint already exists there" in raises(CheckpointError, _train, data, ckpt)
    assert ckpt.read_bytes() == before
    _train(data, ckpt, overwrite=True, train={"seed": 1})
    assert ckpt.read_bytes() != before
    # The classic slip: the spec file given as the checkpoint.
    text = spec_file.read_text()
    line = cli_error("train", spec_file, "--checkpoint", spec_file, "--dataset", "imagefolder",
                     "--data-dir", data)
    assert "a checkpoint already exists there" in line and spec_file.read_text() == text
    line = cli_error("train", spec_file, "--checkpoint", spec_file, "--overwrite")
    assert "is not a checkpoint" in line and spec_file.read_text() == text
    assert "exclude each other" in cli_error("train", spec_file, "--checkpoint", ckpt,
                                             "--resume", "--overwrite", code=2)


def test_resume_refuses_another_data_configuration(tmp_path: Path, data: Path) -> None:
    ckpt = tmp_path / "run.pt"
    _train(data, ckpt)
    message = raises(CheckpointError, _train, data, ckpt, val_size=6, resume=True,
                     train={"epochs": 2})
    assert "data field 'val_size' differs (checkpoint 4, now 6)" in message
    assert load_checkpoint(ckpt)["data"]["val_size"] == 4
    record = _train(data, ckpt, resume=True, train={"epochs": 2})
    assert [m.epoch for m in record.epochs] == [1, 2]


def test_malformed_checkpoints_are_one_line(tmp_path: Path, data: Path) -> None:
    ckpt = tmp_path / "run.pt"
    _train(data, ckpt)
    state = load_checkpoint(ckpt)
    state["metrics"] = [{"epoch": "one"}]
    torch.save(state, ckpt)
    message = raises(CheckpointError, _train, data, ckpt, resume=True, train={"epochs": 2})
    assert "its metrics state is malformed" in message
    state["spec"] = {**TINY, "layers": [{"block": "conv", "out_channels": 10**9}]}
    torch.save(state, ckpt)
    assert "would need an estimated" in raises(ResourceError, model_from_checkpoint, ckpt)


def test_a_failed_write_names_the_checkpoint(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    ckpt = tmp_path / "run.pt"
    with pytest.warns(UserWarning, match="could not write the tensor cache"):  # the same disk
        message = raises(CheckpointError, _train, data, ckpt)
    assert message == f"{ckpt}: cannot write the checkpoint (No space left on device)"
    assert list(tmp_path.glob(".run.pt*")) == []


# ----------------------------------------------------------------- the cache


def test_a_corrupted_cache_is_rebuilt_with_a_warning(data: Path, tmp_path: Path) -> None:
    first = load_dataset("imagefolder", data_dir=data, val_size=0)
    assert first.load_info is not None and first.load_info.cache_path is not None
    path = first.load_info.cache_path
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)  # inside the image tensor's bytes
    (tmp_path / "swap").write_bytes(bytes(raw))
    os.replace(tmp_path / "swap", path)
    with pytest.warns(UserWarning, match="fail their checksum"):
        second = load_dataset("imagefolder", data_dir=data, val_size=0)
    assert second.load_info is not None and not second.load_info.cache_hit
    assert torch.equal(second.train.images, first.train.images)
    third = load_dataset("imagefolder", data_dir=data, val_size=0)
    assert third.load_info is not None and third.load_info.cache_hit


def test_concurrent_writers_of_one_cache_agree(data: Path) -> None:
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def load() -> None:
        try:
            barrier.wait()
            results.append(load_dataset("imagefolder", data_dir=data, val_size=0))
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for other in results[1:]:
        assert torch.equal(other.train.images, results[0].train.images)
    again = load_dataset("imagefolder", data_dir=data, val_size=0)
    assert again.load_info is not None and again.load_info.cache_hit
    tensors = Path(os.environ["DWSEARCH_CACHE_DIR"]) / "tensors"
    assert [p.name for p in tensors.iterdir() if p.suffix == ".pt"] == [
        again.load_info.cache_path.name]  # type: ignore[union-attr]


# ----------------------------------------------------------------- costs


class Branchy(nn.Module):
    """Runs its conv only when the input sums positive: data-dependent control flow."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.conv(x)
        return x


class Shapey(nn.Module):
    """Branches on the input's width: exact at any one shape, so it is counted."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if x.shape[-1] > 4 else x


@pytest.mark.usefixtures("user_blocks")
def test_value_dependent_branches_cannot_be_counted() -> None:
    head = [{"block": "global_avgpool"}, {"block": "linear", "out_features": 2}]
    spec = {**TINY, "layers": [{"block": "conv", "out_channels": 4},
                               {"block": "bad_input_branchy"}, *head]}
    message = raises(CostError, profile, spec)
    assert message.startswith("layers[1] (bad_input_branchy): its forward branches on tensor "
                              "values (Converting a tensor to a Python boolean")
    spec["layers"][1] = {"block": "bad_input_shapey"}
    assert profile(spec).layers[1].macs == 4 * 4 * 9 * 8 * 8


# ----------------------------------------------------------------- study files

STUDY: dict[str, Any] = {
    "name": "bad",
    "base": "seed_cnn",
    "data": {"dataset": "imagefolder", "data_dir": "/nonexistent", "val_size": 10},
    "objectives": ["val_accuracy", "macs"],
    "sampler": "grid",
}


@pytest.fixture
def study_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DWSEARCH_STUDY_DIR", str(tmp_path / "studies"))
    return tmp_path


def study_error(folder: Path, text: str, *args: str) -> str:
    """The one error line of ``run-study --dry-run`` on a study file holding ``text``; nothing
    may be created in the study folder."""
    from test_fuzz import _address_space_cap

    path = folder / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    start = time.perf_counter()
    with _address_space_cap(4):  # a plan of a billion slots fails here, not the machine
        line = cli_error("run-study", path, "--dry-run", *args)
    assert time.perf_counter() - start < 60
    assert not (folder / "studies").exists()
    assert line.startswith((f"Error: {path}", "Error: --set ")), line
    return line


def study_text(**changes: Any) -> str:
    import yaml

    return yaml.safe_dump({**STUDY, **changes}, sort_keys=False)


def test_control_characters_in_study_and_spec_files_are_one_line(study_dir: Path) -> None:
    line = study_error(study_dir, study_text().replace("name: bad", "name: b\x07ad"))
    assert line.endswith("bad.yaml:1: invalid YAML: character #x0007 is not allowed (of the "
                         "control characters only tab and line breaks are; write others as "
                         'escapes in a double-quoted string, e.g. "\\x07")')
    spec = study_dir / "spec.yaml"
    spec.write_text("input: [3, 8, 8]\nnum_classes: 2\x00\n")
    assert f"{spec}:2: invalid YAML: character #x0000 is not allowed" in cli_error("show", spec)


def space_text(space: dict[str, Any], **changes: Any) -> str:
    return study_text(space=space, **changes)


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        # a typo in an argument: the dimension never varied, and the study said "is valid"
        ({"layers[2].kernal_size": [3, 5]},
         "space.layers[2].kernal_size: 'kernal_size' is not an argument of conv, the block "
         "layer 2 can have; did you mean 'kernel_size'? allowed: activation, bias, bn, "
         "kernel_size, out_channels, stride"),
        ({"layers[2].block": ["conv", "hybrid"], "layers[2].ratoi": [0.5]},
         "space.layers[2].ratoi: 'ratoi' is not an argument of conv, hybrid, the blocks layer "
         "2 can have; did you mean 'ratio'?"),
        # two entries for one layer's argument: the second silently replaced the first
        ({"layers[2].block": ["conv", "dwsep"], "layers[ 2 ].block": ["conv", "hybrid"]},
         "space.layers[ 2 ].block: layer 2's block is also varied by space.layers[2].block; "
         "one would silently override the other: keep one entry per layer and argument"),
        ({"layers[0:3].block": ["conv", "dwsep"], "layers[1].block": ["conv", "hybrid"]},
         "space.layers[1].block: layer 1's block is also varied by space.layers[0:3].block"),
        # a `when` that no layer can match removed the dimension silently
        ({"layers[0].kernel_size": {"choices": [3, 5], "when": {"foo": 1}}},
         "space.layers[0].kernel_size: when.foo: 'foo' is not an argument of conv, the block "
         "layer 0 can have; allowed: activation"),
        ({"layers[0].kernel_size": {"choices": [3, 5], "when": {"kernel_size": 7}}},
         "space.layers[0].kernel_size: when.kernel_size: layer 0 never has kernel_size = 7 "
         "when this entry is applied, so it would never apply"),
        ({"layers[0].bn": {"choices": [True, False], "when": {"kernel_size": 5}},
          "layers[0].kernel_size": [3, 5]},
         "(space.layers[0].kernel_size varies kernel_size, but entries apply in the order they "
         "are listed, blocks first: list it before this one)"),
        ({"layers[0].kernel_size": {"choices": [3, 5], "when": {"block": "hybrid"}}},
         "space.layers[0].kernel_size: when.block: 'hybrid' is never the block of layer 0 (it "
         "can be conv); the entry would never apply"),
        ({"layers[0].kernel_size": {"choices": [3, 5], "when": {"block": "dwsepp"}}},
         "space.layers[0].kernel_size: when.block: unknown block 'dwsepp'; did you mean dwsep?"),
        ({"layers[0].ratio": {"choices": [0.5], "when": {"block": "conv"}}},
         "space.layers[0].ratio: 'ratio' is not an argument of conv, the block layer 0 can "
         "have"),
        # two names of one block: 2^14 equal configurations enumerated one by one
        ({"layers[0:14].block": {"choices": ["dwsep", "conv_dw"], "per_layer": True}},
         "space.layers[0:14].block: 'conv_dw' and 'dwsep' are two names of one block (dwsep); "
         "keep one"),
        # log and step: Optuna refuses them together, at the first trial
        ({"train.lr": {"low": 0.01, "high": 0.1, "log": True, "step": 0.01}},
         "space.train.lr: log: true cannot be combined with step (Optuna samples a log scale "
         "only without a step); drop step, or list the values"),
        ({"train.lr": {"low": 0.0, "high": 0.1, "log": True}},
         "space.train.lr: log: true needs low > 0, found low 0.0"),
        ({"layers[0].kernel_size": {"low": 3, "high": 7, "step": 0}},
         "space.layers[0].kernel_size: step must be > 0, found 0"),
        ({"layers[0].kernel_size": {"low": 1, "high": 9, "log": True}},
         "space.layers[0].kernel_size: log: true has no meaning for sampler 'grid', which "
         "enumerates every value of a range (low to high by step); drop log, or list the "
         "values"),
        # YAML 1.1 reads 1e-3 as text
        ({"train.lr": ["1e-3", 0.1]},
         "space.train.lr: lr: expected a finite number > 0, found '1e-3' (text: YAML reads "
         "1e-3 as text; write it with a point, 1.0e-3)"),
        ({"train.lr": {"low": "1e-3", "high": 0.1}},
         "space.train.lr.low: expected a number, found '1e-3' (text: YAML reads 1e-3 as text; "
         "write it with a point, 1.0e-3)"),
    ],
)
def test_study_spaces_that_would_silently_do_something_else(
    study_dir: Path, space: dict[str, Any], expected: str
) -> None:
    line = study_error(study_dir, space_text(space))
    assert line.startswith(f"Error: {study_dir / 'bad.yaml'}: ") and expected in line, line


def test_space_arguments_of_a_reachable_block_stay_accepted(study_dir: Path) -> None:
    """``ratio`` is hybrid's: fine on a layer that can become hybrid, with or without when;
    a slice over layers of which only some take the argument is fine too."""
    path = study_dir / "ok.yaml"
    for space in (
        {"layers[2].block": ["conv", "hybrid"], "layers[2].ratio": [0.25, 0.75]},
        {"layers[2].ratio": {"choices": [0.25, 0.75], "when": {"block": "hybrid"}},
         "layers[2].block": ["conv", "hybrid"]},
        {"layers[0:6].kernel_size": [3, 5]},  # convs and a maxpool take it; dropout2d not
        # different blocks may share a layer's argument: at most one applies
        {"layers[0:2].block": ["conv", "dwsep"],
         "layers[0:2].kernel_size": {"choices": [3, 5], "when": {"block": "conv"}},
         "layers[0,1].kernel_size": {"choices": [5, 7], "when": {"block": "dwsep"}}},
        {"layers[0].kernel_size": {"choices": [5], "when": {"kernel_size": 3}}},
    ):
        path.write_text(space_text(space))
        code, out = cli("run-study", path, "--dry-run")
        assert code == 0 and "is valid" in out, (space, out)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"constraints": {"macs": 10**400}},
         "constraints.macs: 100000...000 (401 digits) is out of range: integers in a study file "
         "are within +-(2^63-1); write a bound this large as text, e.g. '<= 1e30'"),
        ({"constraints": {"macs": 99999999999999999999999999999}},
         "constraints.macs: 999999...999 (29 digits) is out of range"),
        ({"constraints": {"macs": "<= 1e400"}},
         "constraints.macs: the bound must be a finite number (at most about 1.8e308), found "
         "'<= 1e400'"),
        ({"timeout": 10**30}, "timeout: 100000...000 (31 digits) is out of range"),
        ({"timeout": "1e12"}, "timeout: expected a positive duration of at most 10 years, found "
                              "'1e12'"),
        ({"seed": 2**63}, "seed: 9223372036854775808 is out of range"),
        ({"format": 10**100}, "format: 100000...000 (101 digits) is out of range"),
        ({"repeats": 10**20}, "repeats: 100000000000000000000 is out of range"),
        ({"sampler": "random", "n_trials": 10**20}, "n_trials: 100000000000000000000 is out of "
                                                   "range"),
        ({"sampler": "random", "n_trials": 10**7},
         "n_trials: Input should be less than or equal to 1000000, found 10000000"),
        ({"space": {"layers[0].out_channels": {"low": 8, "high": 10**30}}},
         "space.layers[0].out_channels.high: 100000...000 (31 digits) is out of range"),
        ({"space": {"layers[0].out_channels": {"low": -(2**62), "high": 2**62}}},
         "space.layers[0].out_channels: 9,223,372,036,854,775,809 values from "
         "-4611686018427387904 to 4611686018427387904; at most 10,000 can be enumerated"),
        ({"space": {"train.lr": {"low": 1.0e-300, "high": 1.0, "step": 1.0e-300}}},
         "space.train.lr: more than 10,000 values from 1e-300 to 1.0; at most 10,000 can be "
         "enumerated"),
        ({"space": {"train.lr": {"low": -1.0e308, "high": 1.0e308, "step": 1.0}}},
         "space.train.lr: the range -1e+308..1e+308 is wider than the largest float"),
        ({"space": {"train.epochs": [1, 10**19]}},
         "space.train.epochs[1]: 10000000000000000000 is out of range"),
        ({"base": {**TINY, "layers": [{"block": "conv", "out_channels": 10**20}, *TINY["layers"][1:]]}},
         "base.layers[0].out_channels: 100000000000000000000 is out of range"),
        ({"train": {"lr": "1e-3"}},
         "train.lr: Input should be a valid number, found '1e-3' (text: YAML reads 1e-3 as "
         "text; write it with a point, 1.0e-3)"),
        ({"train": {"lr": "1.0e3"}},
         "train.lr: Input should be a valid number, found '1.0e3' (text: YAML reads 1e3 and "
         "1.0e3 as text; write a point and a signed exponent, 1.0e+3)"),
    ],
)
def test_study_numbers_out_of_range_are_located(
    study_dir: Path, changes: dict[str, Any], expected: str
) -> None:
    line = study_error(study_dir, study_text(**changes))
    assert line.startswith(f"Error: {study_dir / 'bad.yaml'}: ") and expected in line, line


def test_enumerations_are_bounded_before_duplicates_are_removed(study_dir: Path) -> None:
    """A grid is counted before anything is built or compared: equal configurations (widths
    that round alike) once took minutes to enumerate and then collapsed to a few."""
    convs = [{"block": "conv", "out_channels": 8} for _ in range(16)]
    base = {**TINY, "layers": [*convs, *TINY["layers"][1:]]}
    start = time.perf_counter()
    line = study_error(study_dir, space_text(
        {"layers[0:16].block": {"choices": ["conv", "dwsep"], "per_layer": True}}, base=base))
    assert line.endswith("space: more than 10,000 combinations to enumerate (65,536 = the "
                         "product of every entry's values); the limit counts them before "
                         "duplicates are removed; use a sampler (tpe, nsga2, random) or fewer "
                         "values"), line
    line = study_error(study_dir, space_text(
        {"width": {"low": 0.9601, "high": 1.04, "step": 0.00001}, "layers[0].bn": [True, False]},
        base=TINY))
    assert "space: more than 10,000 combinations to enumerate (15,982 = " in line
    assert time.perf_counter() - start < 40


def test_a_study_runs_at_most_a_million_trials(study_dir: Path) -> None:
    """Every trial is a slot laid out before anything trains: configurations x repeats,
    n_trials and --n-trials are bounded (10^20 once allocated slot after slot)."""
    line = study_error(study_dir, space_text(
        {"layers[0].out_channels": {"low": 8, "high": 1008}}, base=TINY, repeats=1000))
    assert line.endswith("repeats: 1,001 configurations x 1000 repeats = 1,001,000 trials; a "
                         "study runs at most 1,000,000"), line
    path = study_dir / "sampled.yaml"
    path.write_text(space_text({}, sampler="random", n_trials=4))
    line = cli_error("run-study", path, "--dry-run", "--n-trials", "100000000000000000000")
    assert line == ("Error: n_trials: expected an integer in 1..1,000,000 (a study runs at most "
                    "1,000,000 trials), found 100000000000000000000 (out of range)"), line


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["train.lr=1e-3"], "Error: --set train.lr: Input should be a valid number, found "
                            "'1e-3' (text: YAML reads 1e-3 as text; write it with a point, "
                            "1.0e-3)"),
        (["space.train.lr=[1e-3, 0.1]"],
         "Error: --set space.train.lr: lr: expected a finite number > 0, found '1e-3' (text: "
         "YAML reads 1e-3 as text; write it with a point, 1.0e-3)"),
        (["space.layers[2].kernal_size=[3, 5]"],
         "Error: --set space.layers[2].kernal_size: 'kernal_size' is not an argument of conv, "
         "the block layer 2 can have; did you mean 'kernel_size'?"),
        (["space.layers[0].kernel_size={choices: [3], when: {block: dwsepp}}"],
         "Error: --set space.layers[0].kernel_size: when.block: unknown block 'dwsepp'"),
        (["seed=99999999999999999999"],
         "Error: --set seed: 99999999999999999999 is out of range: integers in a study file are "
         "within +-(2^63-1)"),
    ],
)
def test_study_errors_name_the_set_that_wrote_the_value(
    study_dir: Path, sets: list[str], expected: str
) -> None:
    args = [a for s in sets for a in ("--set", s)]
    line = study_error(study_dir, study_text(), *args)
    assert line.startswith(expected), line


def test_study_and_report_functions_check_their_arguments(tmp_path: Path) -> None:
    from dwsearch.errors import ReportError, StudyError
    from dwsearch.report import make_report, open_study, study_name_and_storage
    from dwsearch.study import load_config, load_results, load_study_config, run_study
    from dwsearch.study.config import parse_study_config
    from dwsearch.study.plan import make_plan

    config = parse_study_config(STUDY, "s.yaml")
    cases: list[tuple[type[DwsearchError], Any, str]] = [
        (StudyError, lambda: make_plan(config, n_trials="5"),
         "make_plan: n_trials: expected an integer or null, found '5'"),
        (StudyError, lambda: make_plan(config, n_trials=-1),
         "n_trials: expected an integer in 1..1,000,000 (a study runs at most 1,000,000 "
         "trials), found -1"),
        (StudyError, lambda: make_plan(config, n_trials=0), "found 0"),
        (StudyError, lambda: make_plan("s.yaml"),
         "make_plan: config: expected StudyConfig, found 's.yaml'"),
        (StudyError, lambda: load_study_config(123),
         "load_study_config: path: expected text or Path, found 123"),
        (StudyError, lambda: run_study("file.yaml"),
         "run_study: config: expected StudyConfig, found 'file.yaml'; read a study file with "
         "load_config(path) first"),
        (StudyError, lambda: run_study(config, jobs="2"),
         "run_study: jobs: expected an integer or null, found '2'"),
        (StudyError, lambda: run_study(config, on_event=5),
         "run_study: on_event: expected a function or null, found 5"),
        (StudyError, lambda: load_config(tmp_path, overrides=[("a", 1)]),
         "load_config: overrides: expected a mapping or null, found a value of type list"),
        (StudyError, lambda: load_results(None), "load_results: name: expected text, found null"),
        (StudyError, lambda: parse_study_config(STUDY, source=5),
         "parse_study_config: source: expected text, found 5"),
        (ReportError, lambda: make_report(config, tmp_path),
         "make_report: results: expected StudyResults, found a value of type StudyConfig"),
        (ReportError, lambda: make_report(), "make_report: missing a required argument: "
                                             "'results'"),
        (ReportError, lambda: open_study(5), "open_study: study: expected text, found 5"),
        (ReportError, lambda: study_name_and_storage("x", storage=1.5),
         "study_name_and_storage: storage: expected text or null, found 1.5"),
    ]
    for error, call, expected in cases:
        assert raises(error, call).endswith(expected)
    assert not list(tmp_path.iterdir())
