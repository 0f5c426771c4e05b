"""End to end on the real CIFAR-10 copy: train from the API and the CLI on small subsets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from realdata import require_cifar10

from dwsearch.cli import main
from dwsearch.data import DataConfig
from dwsearch.run import train_spec
from dwsearch.runtime import cpu_supports_bf16
from dwsearch.train import TrainConfig

# A small network from registry blocks: cheap enough to train for real in a test.
SMALL = {
    "name": "small",
    "input": [3, 32, 32],
    "num_classes": 10,
    "layers": [
        {"block": "conv", "out_channels": 32},
        {"block": "maxpool", "kernel_size": 2},
        {"block": "dwsep", "out_channels": 64},
        {"block": "maxpool", "kernel_size": 2},
        {"block": "dwsep", "out_channels": 128},
        {"block": "global_avgpool"},
        {"block": "linear", "out_features": 10},
    ],
}


@pytest.fixture(scope="module")
def cifar10_dir(cifar10_cache: Path) -> Iterator[str]:
    """The real CIFAR-10 copy, with the session's decoded-tensor cache (tests never touch
    ~/.cache)."""
    path = require_cifar10()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DWSEARCH_CACHE_DIR", str(cifar10_cache))
        yield str(path)


def test_small_net_learns_real_cifar10(cifar10_dir: str) -> None:
    data = DataConfig(data_dir=cifar10_dir, val_size=1000, train_subset=4000, test_subset=1000)
    report = train_spec(SMALL, data, TrainConfig(epochs=3, threads=2), progress=False)
    assert report.status == "completed"
    assert report.train_images == 4000 and report.val_images == 1000
    assert "JPEG" in report.data_source
    # Chance is 10%; three epochs on 4,000 real images reach well above it.
    assert report.val_accuracy is not None and report.val_accuracy > 0.30
    assert report.test_accuracy is not None and report.test_accuracy > 0.30
    losses = [m.train_loss for m in report.epochs]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("spec", ["seed_cnn", "seed_dwsep"])
def test_cli_trains_the_seed_backbones_end_to_end(cifar10_dir: str, spec: str) -> None:
    result = CliRunner().invoke(main, [
        "train", spec, "--data-dir", cifar10_dir, "--subset", "256", "--val-size", "256",
        "--test-subset", "256", "--epochs", "1", "--threads", "2", "--quiet", "--json",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["status"] == "completed"
    assert report["params"] == {"seed_cnn": 18_435_210, "seed_dwsep": 18_092_395}[spec]
    assert 0.0 <= report["test_accuracy"] <= 1.0 and report["val_accuracy"] is not None
    assert report["epochs"][0]["images_per_second"] > 0


@pytest.mark.skipif(not cpu_supports_bf16(), reason="CPU without bf16 support")
def test_bf16_and_fp32_both_train(cifar10_dir: str) -> None:
    data = DataConfig(data_dir=cifar10_dir, val_size=500, train_subset=1000, test_subset=500)
    reports = {
        p: train_spec(SMALL, data, TrainConfig(epochs=1, threads=2, precision=p), test=False,
                      progress=False)
        for p in ("fp32", "bf16")
    }
    assert {p: r.precision for p, r in reports.items()} == {"fp32": "fp32", "bf16": "bf16"}
    assert all(r.status == "completed" for r in reports.values())


def test_missing_data_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "seed_dwsep", "--data-dir", str(tmp_path),
                                       "--epochs", "1", "--quiet"],
                                env={"DWSEARCH_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code != 0
    assert "Error:" in result.output and "DWSEARCH_DATA_DIR" in result.output
    assert "Traceback" not in result.output


def test_imagefolder_of_your_own_resizes_images_and_classifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three classes of 20x24 images train a 10-class spec at 16x16: both adapt."""
    from PIL import Image

    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for split, count in (("train", 24), ("test", 6)):
        for name, rgb in colours.items():
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                shade = tuple(max(0, c - 3 * i) for c in rgb)
                Image.new("RGB", (24, 20), shade).save(folder / f"{i}.png")
    spec = dict(SMALL, input=[3, 16, 16])
    data = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "images"), val_size=9)
    monkeypatch.setenv("DWSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    report = train_spec(spec, data, TrainConfig(epochs=3, lr=0.05, threads=2), progress=False)
    assert report.num_classes == 3 and report.spec["num_classes"] == 3
    assert report.spec["layers"][-1]["out_features"] == 3
    assert (report.train_images, report.val_images, report.test_images) == (63, 9, 18)
    assert report.status == "completed" and report.test_accuracy is not None
