"""The benchmark's pieces on tiny real workloads (speed itself is never asserted)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from realdata import require_cifar10

from dwsearch.bench import (
    BaselineStyleDataset,
    BenchResult,
    ThroughputResult,
    baseline_pipeline_throughput,
    dwsearch_throughput,
    peak_memory,
)
from dwsearch.data import BatchLoader, ImageTensors, load_dataset
from dwsearch.errors import ConfigError
from dwsearch.train import TrainConfig


@pytest.fixture(scope="module")
def real_test_split(cifar10_cache: Path) -> Iterator[ImageTensors]:
    path = require_cifar10()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DWSEARCH_CACHE_DIR", str(cifar10_cache))
        splits = load_dataset("cifar10", data_dir=path, val_size=0, download=False,
                              test_subset=256)
        yield splits.test


def test_both_pipelines_feed_the_model_the_same_inputs(real_test_split: ImageTensors) -> None:
    baseline_style = BaselineStyleDataset(real_test_split)
    ours = next(iter(BatchLoader(real_test_split, batch_size=8)))
    for i in range(8):
        image, label = baseline_style[i]
        torch.testing.assert_close(image, ours[0][i], atol=1e-6, rtol=0)
        assert label == int(ours[1][i])


def test_throughput_of_both_pipelines_runs_on_real_images(real_test_split: ImageTensors) -> None:
    theirs = baseline_pipeline_throughput("seed_dwsep", real_test_split, steps=2,
                                          warmup_steps=1, batch_size=16, num_workers=1,
                                          device="cpu")
    assert theirs.workers == 1 and theirs.pipeline == "baseline"
    ours = dwsearch_throughput("seed_dwsep", real_test_split,
                               TrainConfig(batch_size=16, threads=2), steps=2)
    assert theirs.images_per_second > 0 and ours.images_per_second > 0
    assert 0 < ours.data_seconds < ours.epoch_seconds
    with pytest.raises(ConfigError, match="need"):
        baseline_pipeline_throughput("seed_dwsep", real_test_split, steps=100, batch_size=16)


def test_peak_memory_in_a_fresh_process(real_test_split: ImageTensors) -> None:
    batch = (real_test_split.images[:4].float() / 127.5 - 1, real_test_split.labels[:4])
    result = peak_memory("seed_dwsep", "train", batch, TrainConfig(threads=1), steps=1)
    # The model's fp32 weights alone are 18,092,395 x 4 bytes = 69 MiB, plus SGD momentum.
    assert result.added_mib > 69
    assert result.peak_mib > result.added_mib


def test_ratios_and_markdown() -> None:
    result = BenchResult("cpu model", "cpu", 2, "2.x", "2026-11-25", "real data")
    result.throughput = [
        ThroughputResult("baseline", "seed_cnn", 40.0, 16, 128, "fp32", False),
        ThroughputResult("baseline", "seed_cnn", 50.0, 16, 128, "fp32", False, workers=2),
        ThroughputResult("dwsearch", "seed_cnn", 100.0, 16, 128, "bf16", True,
                         data_seconds=0.1, epoch_seconds=20.0),
    ]
    assert result.ratios() == {"seed_cnn": 2.5}
    assert result.ratios(workers=2) == {"seed_cnn": 2.0}
    text = result.to_markdown()
    assert "| seed_cnn | baseline-style | 0 | fp32 | 40.0 | 2.50x | - |" in text
    assert "| seed_cnn | baseline-style | 2 | fp32 | 50.0 | 2.00x | - |" in text
    assert "| seed_cnn | dwsearch | - | bf16, channels_last | 100.0 | 1.00x | 0.50% |" in text


@pytest.mark.parametrize("flag", ["--baseline-workers", "--seed-workers"])
def test_baseline_workers_and_its_deprecated_name(monkeypatch: pytest.MonkeyPatch,
                                                  flag: str) -> None:
    """--seed-workers (its name before "seed" meant only RNG seeds) still works, hidden, with
    a one-line notice; the two names together are a usage error."""
    from click.testing import CliRunner

    import dwsearch.bench
    from dwsearch.cli import main

    seen: dict[str, object] = {}

    def fake_run_bench(specs: list[str], **kwargs: object) -> BenchResult:
        seen.update(kwargs, specs=specs)
        return BenchResult("cpu model", "cpu", 2, "2.x", "2026-11-25", "real data")

    monkeypatch.setattr(dwsearch.bench, "run_bench", fake_run_bench)
    result = CliRunner().invoke(main, ["bench", flag, "0,2"])
    assert result.exit_code == 0, result.output
    assert seen["baseline_workers"] == (0, 2) and seen["specs"] == ["seed_cnn", "seed_dwsep"]
    notice = "dwsearch bench: --seed-workers is deprecated; use --baseline-workers\n"
    assert (notice in result.stderr) == (flag == "--seed-workers")
    assert result.stderr.count("\n") == (1 if flag == "--seed-workers" else 0)
    result = CliRunner().invoke(main, ["bench", flag, "99"])
    assert result.exit_code == 2 and f"Invalid value for {flag}: expected integers" in result.stderr
    result = CliRunner().invoke(main, ["bench", "--seed-workers", "0", "--baseline-workers", "1"])
    assert result.exit_code == 2 and "give one of them" in result.stderr
    help_text = CliRunner().invoke(main, ["bench", "--help"]).output
    assert "--baseline-workers" in help_text and "--seed-workers" not in help_text


def test_study_rates_by_hand_and_with_run_study(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from studyutil import make_images, study_dict, write_study

    from dwsearch.bench import study_rates

    monkeypatch.setenv("DWSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    images = make_images(tmp_path / "images", per_class=8, test_per_class=2)
    study = write_study(tmp_path / "s.yaml", study_dict(images, data={
        "dataset": "imagefolder", "data_dir": str(images), "val_size": 6}))
    rates = study_rates(study, jobs=(1,), thread_jobs=(2,), log=lambda line: None)
    assert [r.mode for r in rates] == ["by hand (dwsearch train per trial)", "run-study",
                                       "2 worker threads (measurement only)"]
    assert all(r.trials == 2 and r.trials_per_hour > 0 for r in rates)
    with pytest.raises(ConfigError, match="needs a grid or ablation study"):
        sampled = write_study(tmp_path / "t.yaml", study_dict(images, sampler="random",
                                                              n_trials=2))
        study_rates(sampled, jobs=(1,))
