"""One training run of one spec, end to end: data, model, costs, fit, final test numbers.

This is the Python API behind ``dwsearch train``; the study layer calls it per trial.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dwsearch.builder import build_model
from dwsearch.costs import profile
from dwsearch.data import BatchLoader, DataSplits, load_dataset
from dwsearch.spec import ModelSpec, load_spec
from dwsearch.train import (
    Callback,
    TrainConfig,
    TrainResult,
    evaluate,
    fit,
    resolve_device,
    resolve_precision,
    seed_everything,
)

__all__ = ["DataConfig", "TrainReport", "load_data", "make_loaders", "train_spec"]

# Padding of the random crop when augmentation is on: the usual CIFAR-10 choice.
CROP_PADDING = 4


@dataclass(frozen=True)
class DataConfig:
    """Which data a run trains and evaluates on."""

    dataset: str = "cifar10"  # "cifar10" or "imagefolder"
    data_dir: str | None = None  # None: $DWSEARCH_DATA_DIR, else the cache directory
    val_size: int = 5000  # images carved from the training set for model selection
    train_subset: int | None = None  # train on this many images (stratified); None: all
    test_subset: int | None = None  # evaluate on this many test images; None: all 10,000
    seed: int = 0  # seeds the split and the subsets
    download: bool = True  # fetch the official archive when no copy is found


@dataclass
class TrainReport:
    """What ``train_spec`` measured. Accuracies are fractions in [0, 1]."""

    spec: ModelSpec
    params: int
    macs: int  # per sample, BN counted (see dwsearch.costs)
    result: TrainResult
    val_accuracy: float | None  # at the end of training
    test_accuracy: float | None  # None unless evaluated on the test set
    test_loss: float | None
    data_source: str
    train_images: int
    val_images: int
    test_images: int
    load_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for people."""
        res = self.result
        final = res.final
        lines = [
            f"{self.spec.name or 'model'} ({self.spec.hash()}): {self.params:,} params, "
            f"{self.macs / 1e6:.2f} M MACs",
            f"data: {self.data_source}; train {self.train_images:,}, val {self.val_images:,}, "
            f"test {self.test_images:,} images",
            f"status: {res.status}" + (f" ({res.message})" if res.status != "completed" else ""),
        ]
        if final is not None:
            lines.append(
                f"trained {len(res.epochs)} epoch(s) in {res.seconds:.1f} s on {res.device} "
                f"({res.precision}), {final.images_per_second:.0f} images/s in the last epoch"
            )
        if self.val_accuracy is not None:
            lines.append(f"validation accuracy: {self.val_accuracy:.2%}")
        if self.test_accuracy is not None:
            lines.append(
                f"test accuracy: {self.test_accuracy:.2%} (test loss {self.test_loss:.4f})"
            )
        return "\n".join(lines)


def load_data(spec: ModelSpec, data: DataConfig) -> DataSplits:
    """Load the splits ``data`` names, resized to the spec's input size where it differs."""
    size = (spec.input_shape[1], spec.input_shape[2]) if len(spec.input_shape) == 3 else None
    return load_dataset(
        data.dataset,
        data_dir=data.data_dir,
        val_size=data.val_size,
        train_subset=data.train_subset,
        test_subset=data.test_subset,
        image_size=size,
        seed=data.seed,
        download=data.download,
    )


def make_loaders(
    splits: DataSplits, config: TrainConfig, device: str
) -> tuple[BatchLoader, BatchLoader | None, BatchLoader]:
    """Train (shuffled, augmented if configured), validation and test batch loaders."""
    train = BatchLoader(
        splits.train, batch_size=config.batch_size, shuffle=True, seed=config.seed,
        device=device, channels_last=config.channels_last,
        crop_padding=CROP_PADDING if config.augment else 0, hflip=config.augment,
    )
    eval_batch = max(config.batch_size, 512)  # no gradients: larger batches are cheaper
    val = None
    if len(splits.val):
        val = BatchLoader(splits.val, batch_size=eval_batch, device=device,
                          channels_last=config.channels_last)
    test = BatchLoader(splits.test, batch_size=eval_batch, device=device,
                       channels_last=config.channels_last)
    return train, val, test


def train_spec(
    spec: ModelSpec | Mapping[str, Any] | str | Path,
    data: DataConfig | DataSplits,
    config: TrainConfig,
    *,
    test: bool = True,
    callbacks: Iterable[Callback] = (),
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> TrainReport:
    """Train ``spec`` once and report validation (and, with ``test``, test) accuracy.

    The classifier is resized to the dataset's number of classes when they differ. Model
    initialisation is seeded by ``config.seed``, so a run is reproducible on one machine.
    """
    model_spec = load_spec(spec)
    start = time.perf_counter()
    splits = data if isinstance(data, DataSplits) else load_data(model_spec, data)
    load_seconds = time.perf_counter() - start
    if len(splits.classes) != model_spec.num_classes:
        model_spec = model_spec.with_num_classes(len(splits.classes))
    image_shape = tuple(splits.train.images.shape[1:])
    if image_shape != model_spec.input_shape:
        raise ValueError(
            f"the data's images are {image_shape} but the spec expects input "
            f"{model_spec.input_shape}; change the spec's input or the data"
        )
    device = str(resolve_device(config.device))
    seed_everything(config.seed)
    model = build_model(model_spec)
    costs = profile(model)
    train_batches, val_batches, test_batches = make_loaders(splits, config, device)
    result = fit(
        model, train_batches, val_batches, config, callbacks=callbacks, checkpoint=checkpoint,
        resume=resume, spec=model_spec.to_dict(), progress=progress,
    )
    test_loss = test_accuracy = None
    if test and result.status != "diverged":
        precision = resolve_precision(config.precision, device)
        test_loss, test_accuracy = evaluate(model, test_batches, device=device,
                                            precision=precision)
    final = result.final
    return TrainReport(
        spec=model_spec,
        params=costs.params,
        macs=costs.macs,
        result=result,
        val_accuracy=final.val_accuracy if final is not None else None,
        test_accuracy=test_accuracy,
        test_loss=test_loss,
        data_source=splits.source,
        train_images=len(splits.train),
        val_images=len(splits.val),
        test_images=len(splits.test),
        load_seconds=load_seconds,
    )
