"""One spec end to end: data, model, costs, fit, final test numbers -> a :class:`RunRecord`.

This is the Python API behind ``dwsearch train``; the study workers call it once per trial
with the dataset already loaded (pass :class:`DataSplits` instead of a :class:`DataConfig`).
It is the one module that joins the model half (specs, builder, costs) and the training half
(data, trainer), which otherwise know nothing of each other.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dwsearch.builder import Network, build_model, infer_shapes
from dwsearch.costs import BNMode, LatencyResult, Profile, measure_latency, profile
from dwsearch.data.config import DataConfig
from dwsearch.data.load import load_dataset
from dwsearch.data.loader import BatchLoader
from dwsearch.data.tensors import DataSplits
from dwsearch.errors import CheckpointError, ConfigError, DataError, SpecError
from dwsearch.limits import check_memory, format_bytes
from dwsearch.records import RunRecord
from dwsearch.runtime import (
    device_name,
    resolve_device,
    resolve_precision,
    seed_everything,
    versions,
)
from dwsearch.spec import ModelSpec
from dwsearch.train.checkpoint import load_checkpoint, load_weights, prepare_checkpoint
from dwsearch.train.config import TrainConfig
from dwsearch.train.loop import Callback, evaluate, fit
from dwsearch.zoo import load_spec

if TYPE_CHECKING:
    from dwsearch.compress.config import DistillConfig

__all__ = [
    "CROP_PADDING",
    "DataConfig",
    "load_data",
    "make_loaders",
    "model_from_checkpoint",
    "model_from_weights",
    "train_spec",
]

# Padding of the random crop when augmentation is on: the usual CIFAR-10 choice.
CROP_PADDING = 4
# Evaluation batches are at least this large (no gradients: larger batches are cheaper).
EVAL_BATCH = 512


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
        test_fraction=data.test_fraction,
    )


def make_loaders(
    splits: DataSplits, config: TrainConfig, device: str, *,
    train_extra: torch.Tensor | None = None,
) -> tuple[BatchLoader, BatchLoader | None, BatchLoader]:
    """Train (shuffled, augmented if configured), validation and test batch loaders;
    ``train_extra`` (one row per training image, e.g. a teacher's logits) travels with the
    training batches."""
    train = BatchLoader(
        splits.train, batch_size=config.batch_size, shuffle=True, seed=config.seed,
        device=device, channels_last=config.channels_last,
        crop_padding=CROP_PADDING if config.augment else 0, hflip=config.augment,
        extra=train_extra,
    )
    eval_batch = max(config.batch_size, EVAL_BATCH)  # no gradients: larger batches are cheaper
    val = None
    if len(splits.val):
        val = BatchLoader(splits.val, batch_size=eval_batch, device=device,
                          channels_last=config.channels_last)
    test = BatchLoader(splits.test, batch_size=eval_batch, device=device,
                       channels_last=config.channels_last)
    return train, val, test


def fit_spec_to_data(spec: ModelSpec, splits: DataSplits) -> ModelSpec:
    """The spec with its classifier resized to the data's number of classes; raises when the
    images do not have the spec's input shape."""
    if len(splits.classes) != spec.num_classes:
        spec = spec.with_num_classes(len(splits.classes))
    image_shape = tuple(splits.train.images.shape[1:])
    if image_shape != spec.input_shape:
        raise DataError(
            f"input: the data's images are {image_shape} but the spec expects "
            f"{spec.input_shape}; change the spec's input or the data"
        )
    return spec


def train_spec(
    spec: ModelSpec | Mapping[str, Any] | str | Path,
    data: DataConfig | DataSplits,
    config: TrainConfig,
    *,
    test: bool = True,
    callbacks: Iterable[Callback] = (),
    checkpoint: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    latency: bool = False,
    bn: BNMode = "counted",
    data_config: DataConfig | None = None,
    extra: Mapping[str, Any] | None = None,
    check: Callable[[Profile, LatencyResult | None], None] | None = None,
    deploy: Callable[[nn.Module, DataSplits], Mapping[str, Any] | None] | None = None,
    distill: DistillConfig | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    compression: Mapping[str, Any] | None = None,
) -> RunRecord:
    """Train ``spec`` once and return its :class:`RunRecord`: costs (counted before
    training), per-epoch metrics, validation and (with ``test``) test accuracy, the configs,
    the device and the library versions.

    ``data`` is a :class:`DataConfig` to load, or splits already loaded (a study worker loads
    once); pass ``data_config`` with splits so the record says how they were made. The
    classifier is resized to the dataset's number of classes when they differ. Model
    initialisation is seeded by ``config.seed``, so a run is reproducible on one machine.
    ``latency`` also measures batch-1 forward latency on the training device. ``check`` is
    called with the costs (and latency) before training; whatever it raises stops the run
    there (a study's constraints). Only a run that completed is evaluated on the test set.
    ``deploy`` is called with the trained model and the splits after a completed run (to
    keep its weights, measure it where it ships); what it returns (plain data, or None) is
    the record's ``deploy``.
    ``distill`` trains with a teacher (:mod:`dwsearch.compress.distill`): the teacher is loaded
    and checked against the spec before the data loads, and its identity goes into the
    record's ``compression``. ``weights`` (a state dict fitting the spec) start the run from
    trained weights instead of a fresh initialisation: fine-tuning. ``compression`` is added
    to the record's ``compression`` as given (a pruned model's origin, say).
    ``checkpoint`` is checked before the data loads (see :func:`dwsearch.train.fit` for
    ``resume`` and ``overwrite``); a training step whose estimated memory exceeds the limit
    (``DWSEARCH_MAX_MEMORY_GB``) is refused before training.
    """
    if not isinstance(data, (DataConfig, DataSplits)):
        raise ConfigError(f"data: expected a DataConfig or DataSplits, found "
                          f"{type(data).__name__}")
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config: expected a TrainConfig, found {type(config).__name__}")
    model_spec = load_spec(spec)
    infer_shapes(model_spec)  # spec errors before the data loads (nothing is allocated)
    teacher = None
    if distill is not None:
        from dwsearch.compress.distill import check_teacher, load_teacher

        teacher = load_teacher(distill)
        check_teacher(teacher, model_spec, classes=False)  # classes: once the data is known
    if checkpoint is not None:
        prepare_checkpoint(checkpoint, resume=resume, overwrite=overwrite)
    start = time.perf_counter()
    if isinstance(data, DataSplits):
        splits, data_config = data, data_config
    else:
        splits, data_config = load_data(model_spec, data), data
    load_seconds = time.perf_counter() - start
    model_spec = fit_spec_to_data(model_spec, splits)
    if teacher is not None:
        check_teacher(teacher, model_spec)  # the data may have resized the classifier
    device = str(resolve_device(config.device))
    seed_everything(config.seed)
    model = build_model(model_spec)
    if weights is not None:
        load_weights(model, weights, "weights: they do not fit the spec")
    costs = profile(model, bn=bn)
    _check_training_memory(model, costs.saved_bytes, config.batch_size, splits)
    timing = None
    if latency:
        timing = measure_latency(model, 1, device, config.threads,
                                 channels_last=config.channels_last)
    if check is not None:
        check(costs, timing)
    compressed: dict[str, Any] = dict(compression or {})
    loss = train_extra = None
    if distill is not None and teacher is not None:
        from dwsearch.compress.distill import prepare_distillation

        plan = prepare_distillation(distill, teacher, model_spec, splits, config, device=device,
                                    precision=resolve_precision(config.precision, device))
        loss, train_extra = plan.loss, plan.train_extra
        compressed["distill"] = dict(plan.record)
    train_batches, val_batches, test_batches = make_loaders(splits, config, device,
                                                            train_extra=train_extra)
    result = fit(
        model, train_batches, val_batches, config, callbacks=callbacks, checkpoint=checkpoint,
        resume=resume, overwrite=overwrite, spec=model_spec.to_dict(),
        data_config=asdict(data_config) if data_config is not None else None,
        progress=progress, loss=loss,
    )
    test_loss = test_accuracy = None
    if test and result.status == "completed":
        precision = resolve_precision(config.precision, device)
        test_loss, test_accuracy = evaluate(model, test_batches, device=device,
                                            precision=precision)
    deployed = None
    if deploy is not None and result.status == "completed":
        measured = deploy(model, splits)
        deployed = dict(measured) if measured is not None else None
    final = result.final
    return RunRecord(
        spec=model_spec.to_dict(),
        spec_hash=model_spec.hash(),
        name=model_spec.name,
        params=costs.params,
        macs=costs.macs,
        bn=costs.bn,
        activations=costs.activations,
        saved_bytes=costs.saved_bytes,
        layers=tuple(costs.to_rows()),
        status=result.status,
        message=result.message,
        epochs=tuple(result.epochs),
        val_accuracy=final.val_accuracy if final is not None else None,
        val_loss=final.val_loss if final is not None else None,
        best_val_accuracy=result.best_val_accuracy,
        test_accuracy=test_accuracy,
        test_loss=test_loss,
        train_seconds=result.seconds,
        load_seconds=load_seconds,
        seed=config.seed,
        train=asdict(config),
        data=asdict(data_config) if data_config is not None else {},
        data_source=splits.source,
        train_images=len(splits.train),
        val_images=len(splits.val),
        test_images=len(splits.test),
        num_classes=model_spec.num_classes,
        device=result.device,
        device_name=device_name(result.device),
        precision=result.precision,
        threads=result.threads,
        host=socket.gethostname(),
        versions=versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        latency=_latency_dict(timing),
        deploy=deployed,
        compression=compressed or None,
        extra=dict(extra or {}),
    )


def _check_training_memory(
    model: Network, saved_per_sample: int, batch_size: int, splits: DataSplits
) -> None:
    """Refuse a training step estimated above the memory limit: weights, gradients and two
    optimizer states (AdamW's; SGD keeps one), and what autograd keeps for one batch (the
    saved bytes measured per sample in fp32, an upper bound for bf16); and an evaluation
    batch (see :func:`make_loaders`): the largest input + output of any layer per sample."""
    weights = model.estimate.param_bytes
    batch = min(batch_size, len(splits.train))
    check_memory(
        4 * weights + batch * saved_per_sample,
        f"batch_size {batch:,}: a training step",
        detail=f"{format_bytes(saved_per_sample)} kept for backward per sample and "
               f"{format_bytes(weights)} of weights, with gradients and optimizer state",
        hint="lower --batch-size",
    )
    eval_batch = min(max(batch_size, EVAL_BATCH), max(len(splits.val), len(splits.test), 1))
    peak = 4 * max(math.prod(s.in_shape) + math.prod(s.out_shape) for s in model.shapes)
    check_memory(
        weights + eval_batch * peak,
        f"batch_size {eval_batch:,}: an evaluation batch",
        detail=f"{format_bytes(peak)} of activations per sample at the widest layer",
        hint="lower --batch-size",
    )


def _latency_dict(timing: Any) -> dict[str, Any] | None:
    if timing is None:
        return None
    out = {k: v for k, v in asdict(timing).items() if k != "samples_ms"}
    out["input_shape"] = list(out["input_shape"])
    return out


def model_from_weights(spec: ModelSpec, weights: Mapping[str, Any], what: str) -> Network:
    """The network ``spec`` describes with ``weights`` (a state dict) loaded, on the CPU in
    eval mode: the one place a spec and weights become a model (checkpoints, exports).

    Weights that do not fit are one :class:`CheckpointError` line beginning with ``what``
    (e.g. ``run.pt: weights do not fit the stored spec``)."""
    model = build_model(spec)
    load_weights(model, weights, what)
    result: nn.Module = model.eval()
    assert isinstance(result, Network)
    return result


def model_from_checkpoint(path: str | Path) -> Network:
    """Rebuild the network from the spec stored in a checkpoint and load its weights.

    Returns the model on the CPU in eval mode. Raises :class:`CheckpointError` when the
    checkpoint has no spec (it was written by ``fit`` without ``spec=``) or the weights do
    not fit it.
    """
    state = load_checkpoint(path)
    if state.get("spec") is None:
        raise CheckpointError(
            f"{path}: checkpoint has no spec (pass spec= to fit); build the model yourself and "
            f"load_state_dict(load_checkpoint(path)['model'])"
        )
    try:
        spec = ModelSpec.from_dict(state["spec"], source=f"{path}: spec")
        return model_from_weights(spec, state["model"],
                                  f"{path}: weights do not fit the stored spec")
    except SpecError as err:
        raise CheckpointError(f"{err}") from err
