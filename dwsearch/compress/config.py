"""What each compression lever is asked to do, as plain frozen data (no torch import), so a
study file's schema and the command line can build and check them before anything loads.

Every value out of range is one :class:`ConfigError` line beginning with the field's name
(``alpha: expected a number in [0, 1], found 1.5``), as :class:`TrainConfig`'s are; callers
prefix the key path they read it from (``train.distill.``, ``prune.``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from dwsearch.errors import ConfigError
from dwsearch.spec import ModelSpec

__all__ = [
    "MAX_FINETUNE_EPOCHS",
    "MAX_TEMPERATURE",
    "DistillConfig",
    "Importance",
    "PruneConfig",
    "PruneTarget",
    "QatConfig",
    "TargetMetric",
]

Importance = Literal["magnitude", "taylor"]
TargetMetric = Literal["macs", "params"]
# Softened distributions flatten towards uniform long before this; a larger value is a typo.
MAX_TEMPERATURE = 100.0
# A fine-tuning budget in epochs; more is a typo (a fresh training run has no such bound).
MAX_FINETUNE_EPOCHS = 1000
# Calibration and gradient batches read from the training split; more is a typo.
MAX_IMAGES = 100_000
_COUNT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMG]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (Hinton et al., 2015): the student learns from the labels and
    from a trained teacher's softened outputs.

    The loss per batch is ``(1 - alpha) * CE(student, labels) + alpha * T^2 *
    KL(softmax(teacher / T) || softmax(student / T))`` with ``T = temperature``, the KL
    divergence averaged over the batch's images (nats per image). The ``T^2`` keeps the
    soft term's gradients the same size whatever ``T`` (they shrink as ``1 / T^2``
    otherwise), so ``alpha`` means the same at every temperature. ``alpha = 0`` is plain
    training; ``alpha = 1`` ignores the labels.
    """

    # A dwsearch checkpoint (its spec inside: `dwsearch train --checkpoint`, `dwsearch export
    # --format checkpoint`), or a weights file whose spec is teacher_spec.
    teacher: str | Path = field(metadata={"cli": False})
    # The teacher's spec (a ModelSpec, a spec file or a built-in name), where ``teacher`` is a
    # bare weights file (a study's kept weights); None: the checkpoint's own.
    teacher_spec: str | Path | ModelSpec | None = field(default=None, metadata={
        "help": "The teacher's spec (a file or built-in name) where --teacher holds only "
                "weights."})
    alpha: float = field(default=0.9, metadata={
        "help": "Weight of the teacher's soft targets, in [0, 1]; the labels get 1 - alpha."})
    temperature: float = field(default=4.0, metadata={
        "help": f"Softening temperature T, in (0, {MAX_TEMPERATURE:g}]; the soft term is "
                f"scaled by T^2."})

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, (str, Path)) or not str(self.teacher).strip():
            raise ConfigError(f"teacher: expected the path of a checkpoint or weights file, "
                              f"found {self.teacher!r}")
        if isinstance(self.teacher_spec, Mapping):
            object.__setattr__(self, "teacher_spec",
                               ModelSpec.from_dict(self.teacher_spec, "teacher_spec"))
        elif self.teacher_spec is not None and not isinstance(
                self.teacher_spec, (str, Path, ModelSpec)):
            raise ConfigError(f"teacher_spec: expected a spec file, a built-in name or a spec, "
                              f"found {type(self.teacher_spec).__name__}")
        if not _is_number(self.alpha) or not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha: expected a number in [0, 1] (the weight of the "
                              f"teacher's soft targets), found {self.alpha!r}")
        if not _is_number(self.temperature) or not 0 < self.temperature <= MAX_TEMPERATURE:
            raise ConfigError(f"temperature: expected a number in (0, {MAX_TEMPERATURE:g}], "
                              f"found {self.temperature!r}")


@dataclass(frozen=True)
class PruneTarget:
    """What pruning must reach: ``metric`` (``macs`` or ``params``, counted as
    :func:`dwsearch.costs.profile` counts them) at most ``value``. A value below 1 is a
    ratio of the model's own (``{macs: 0.5}`` keeps half its MACs); 1 or more is an absolute
    count (``{macs: 120M}``)."""

    metric: TargetMetric
    value: float

    def __post_init__(self) -> None:
        if self.metric not in get_args(TargetMetric):
            raise ConfigError(f"target: expected macs or params, found {self.metric!r}")
        if not _is_number(self.value) or self.value <= 0:
            raise ConfigError(f"target: {self.metric}: expected a ratio in (0, 1) or a count "
                              f">= 1, found {self.value!r}")
        if self.value == 1:
            raise ConfigError(f"target: {self.metric}: 1 keeps everything; give a ratio in "
                              f"(0, 1) or a count")

    @property
    def is_ratio(self) -> bool:
        return self.value < 1

    def resolve(self, current: int) -> int:
        """The largest count allowed, for a model that has ``current`` now."""
        return int(self.value * current) if self.is_ratio else int(self.value)

    def __str__(self) -> str:
        shown = f"{self.value:g}" if self.is_ratio else f"{int(self.value):,}"
        return f"{{{self.metric}: {shown}}}"

    @classmethod
    def parse(cls, value: Any) -> PruneTarget:
        """``{macs: 0.5}``, ``{params: 2M}``, ``"macs=0.5"`` or ``"params=150K"``, or a
        PruneTarget; counts take K, M and G (thousands, millions, billions)."""
        if isinstance(value, PruneTarget):
            return value
        if isinstance(value, str):
            key, sep, raw = value.partition("=")
            if not sep:
                raise ConfigError(f"target: expected macs=VALUE or params=VALUE, found "
                                  f"{value!r}")
            value = {key.strip(): raw.strip()}
        if not isinstance(value, Mapping) or len(value) != 1:
            raise ConfigError(f"target: expected one of {{macs: VALUE}} or {{params: VALUE}}, "
                              f"found {value!r}")
        ((metric, amount),) = value.items()
        if metric not in get_args(TargetMetric):
            raise ConfigError(f"target: expected macs or params, found {metric!r}")
        if isinstance(amount, str):
            match = _COUNT.match(amount)
            if match is None:
                raise ConfigError(f"target: {metric}: expected a ratio like 0.5 or a count "
                                  f"like 120M, found {amount!r}")
            amount = float(match[1]) * _SCALE[match[2].upper()]
        return cls(metric, amount)


@dataclass(frozen=True)
class PruneConfig:
    """Structured pruning of a trained model's channels (Torch-Pruning), then fine-tuning.

    Every prunable layer loses the same share of its channels (Torch-Pruning's local
    pruning: the least important within each dependency group), the share the smallest one
    that meets ``target``. ``importance``: ``magnitude`` (L2 norm of each channel's weights
    across its group) or ``taylor`` (|weight x gradient|, gradients of the cross-entropy on
    ``taylor_batches`` batches of **training** images). ``finetune_epochs`` of the normal
    trainer follow (0: none).
    """

    target: PruneTarget
    importance: Importance = "magnitude"
    finetune_epochs: int = 1
    taylor_batches: int = 4  # batches of training images whose gradients rank channels
    taylor_batch_size: int = 64  # images per such batch

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", PruneTarget.parse(self.target))
        if self.importance not in get_args(Importance):
            raise ConfigError(f"importance: expected magnitude or taylor, found "
                              f"{self.importance!r}")
        if not _is_int(self.finetune_epochs) or not 0 <= self.finetune_epochs <= (
                MAX_FINETUNE_EPOCHS):
            raise ConfigError(f"finetune_epochs: expected an integer in 0..{MAX_FINETUNE_EPOCHS}"
                              f", found {self.finetune_epochs!r}")
        for name in ("taylor_batches", "taylor_batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= MAX_IMAGES:
                raise ConfigError(f"{name}: expected an integer in 1..{MAX_IMAGES:,}, found "
                                  f"{value!r}")


@dataclass(frozen=True)
class QatConfig:
    """Quantization-aware training when post-training INT8 loses too much.

    The model is quantized post-training as :mod:`dwsearch.deploy` does (PT2E,
    ``XNNPACKQuantizer``, per-channel symmetric int8 weights, int8 activations) on
    ``calibration_images`` training images, and its deployed program's validation accuracy
    compared with the fp32 model's. When it loses more than ``max_drop`` (a fraction:
    0.01 is one point), the same quantizer (``is_qat=True``) fine-tunes the model with fake
    quantization for ``epochs`` epochs of the recipe, and the converted model is lowered
    instead.
    """

    max_drop: float = field(default=0.01, metadata={
        "help": "Accuracy loss of post-training int8 that triggers QAT, a fraction (0.01 = "
                "1 point)."})
    epochs: int = field(default=1, metadata={
        "help": "Epochs of quantization-aware training (a fine-tuning budget).",
        "flag": "--qat-epochs"})
    calibration_images: int = field(default=128, metadata={
        "help": "Training images the post-training quantizer observes."})
    force: bool = field(default=False, metadata={
        "help": "Run QAT whatever post-training int8 loses."})

    def __post_init__(self) -> None:
        if not _is_number(self.max_drop) or not 0 <= self.max_drop <= 1:
            raise ConfigError(f"max_drop: expected a fraction in [0, 1] (0.01 is one point), "
                              f"found {self.max_drop!r}")
        if not _is_int(self.epochs) or not 1 <= self.epochs <= MAX_FINETUNE_EPOCHS:
            raise ConfigError(f"epochs: expected an integer in 1..{MAX_FINETUNE_EPOCHS}, found "
                              f"{self.epochs!r}")
        if not _is_int(self.calibration_images) or not 1 <= self.calibration_images <= (
                MAX_IMAGES):
            raise ConfigError(f"calibration_images: expected an integer in 1..{MAX_IMAGES:,}, "
                              f"found {self.calibration_images!r}")
        if not isinstance(self.force, bool):
            raise ConfigError(f"force: expected true or false, found {self.force!r}")
