"""The shipped studies: every file validates and plans; quick.yaml runs end to end on the real
CIFAR-10 copy (the newcomer's first command)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from dwsearch.study.config import load_study_config
from dwsearch.study.plan import make_plan
from dwsearch.study.results import load_results
from dwsearch.study.runner import load_config, run_study
from dwsearch.study.worker import WorkerOptions

STUDIES = sorted((Path(__file__).resolve().parents[1] / "studies").glob("*.yaml"))


def test_the_shipped_studies_are_the_ones_documented() -> None:
    assert {p.stem for p in STUDIES} == {"baseline", "deploy", "kernel_size", "multiplier",
                                         "hybrid", "mobile", "quick", "distill",
                                         "prune_vs_replace"}
    readme = (STUDIES[0].parent.parent / "README.md").read_text()
    assert all(f"`{p.stem}`" in readme for p in STUDIES)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_shipped_study_validates_and_plans(path: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWSEARCH_STUDY_DIR", str(tmp_path))
    config = load_study_config(path)
    plan = make_plan(config)
    assert plan.trials >= 6 and config.name == path.stem
    assert not list(tmp_path.iterdir())  # planning touches no storage


def test_baseline_is_the_seed_experiment() -> None:
    config = load_study_config(STUDIES[0].parent / "baseline.yaml")
    train = config.train_config()
    assert (train.optimizer, train.lr, train.momentum, train.weight_decay, train.batch_size,
            train.epochs, train.augment) == ("sgd", 0.1, 0.9, 1e-4, 128, 10, False)
    assert config.model.space == {"model": ["seed_cnn", "seed_dwsep"]}
    assert config.model.repeats >= 3


@pytest.mark.slow
def test_quick_study_end_to_end_on_real_cifar10(tmp_path: Path, real_cifar10: Path) -> None:
    """studies/quick.yaml, the newcomer's first command, through the same path as `make
    run` (its grid, its repeats, real CIFAR-10), on a smaller budget: 1,000 training images
    and 1 epoch instead of 4,000 and 3 (make run measures the full one; whether small nets
    learn on real images is tests/test_integration.py's)."""
    config = load_config(STUDIES[0].parent / "quick.yaml", overrides={
        "data.train_subset": 1000, "data.val_size": 500, "data.test_subset": 500,
        "train.epochs": 1})
    storage = f"sqlite:///{tmp_path / 'quick.db'}"
    outcome = run_study(config, storage=storage, jobs=1,
                        options=WorkerOptions(device="cpu", data_dir=str(real_cifar10)))
    assert outcome.states == {"COMPLETE": 12} and outcome.ran == 12
    results = load_results("quick", storage)
    for trial in results.trials:
        record = trial.record
        assert record is not None and record.lossy_data and record.train_images == 1000
        assert record.val_images == 500 and record.test_images == 500
        assert record.val_accuracy is not None and 0 <= record.val_accuracy <= 1
    macs = {t.info.config["layers[2,4].block"]: t.record.macs for t in results.trials
            if t.record and t.info.config and t.info.config["layers[2,4].kernel_size"] == 3}
    assert macs["dwsep"] < macs["hybrid"] < macs["conv"]
    assert len(optuna.load_study(study_name="quick", storage=storage).best_trials) >= 1
