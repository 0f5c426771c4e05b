"""Knowledge distillation: the loss, the teacher (loaded once, identified by its spec hash and
weights checksum) and its logits, kept beside the data where they do not change.

:func:`dwsearch.run.train_spec` calls :func:`prepare_distillation` when given a
:class:`DistillConfig`; the trainer sees only a :data:`dwsearch.train.Loss` and, on the fast
path, one more per-sample tensor in the batch loader. Where the inputs of an epoch do not
depend on augmentation (the baseline recipe has none), the teacher's logits are the same every
epoch: they are computed once per dataset, in one batched forward pass in inference mode, and
kept on the training device like the images, so an epoch costs what it costs without a
teacher. With augmentation the teacher runs in inference mode on each augmented batch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dwsearch.builder import Network
from dwsearch.compress.config import DistillConfig
from dwsearch.data.tensors import DataSplits, ImageTensors, tensor_crc
from dwsearch.errors import CompressError, DwsearchError
from dwsearch.limits import check_memory, format_bytes
from dwsearch.runtime import AMP_DTYPES
from dwsearch.spec import ModelSpec
from dwsearch.train.config import TrainConfig
from dwsearch.train.loop import Loss

__all__ = [
    "DistillCost",
    "Distillation",
    "Teacher",
    "check_teacher",
    "distillation_cost",
    "distillation_loss",
    "load_teacher",
    "prepare_distillation",
    "weights_checksum",
]

# Images per teacher forward pass when its logits are cached: no gradients, so as large as
# evaluation batches (run.EVAL_BATCH).
TEACHER_BATCH = 512


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss, in nats per image (mean over the batch):

    ``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(p_teacher || p_student)``

    with ``p = softmax(logits / T)``. The KL term is summed over classes and averaged over
    images; the ``T^2`` factor keeps its gradients the size they have at ``T = 1`` (they
    shrink as ``1 / T^2``), so ``alpha`` weighs the two terms alike at every temperature.
    ``label_smoothing`` applies to the hard-label term only. Computed in fp32.
    """
    student = student_logits.float()
    hard = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    if alpha == 0:
        return hard
    log_student = F.log_softmax(student / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    soft = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return (1 - alpha) * hard + alpha * temperature**2 * soft


def weights_checksum(model: nn.Module) -> str:
    """SHA-256 (hex, 16 characters) of a model's state: every name, dtype, shape and byte,
    in order. Equal weights, equal checksum, on any machine."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class Teacher:
    """A trained network that students learn from, in eval mode, with its identity."""

    model: Network
    spec: ModelSpec
    source: str  # the file it was loaded from
    checksum: str  # weights_checksum of its weights
    _logits: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict, repr=False)
    _seconds: dict[tuple[Any, ...], float] = field(default_factory=dict, repr=False)
    _placed: tuple[str, bool] = ("cpu", False)

    @property
    def name(self) -> str:
        return self.spec.name or self.source

    def identity(self) -> dict[str, Any]:
        """What distinguishes this teacher, as plain data for run records and reuse keys."""
        return {"teacher": self.source, "teacher_name": self.spec.name,
                "teacher_spec_hash": self.spec.hash(), "teacher_weights": self.checksum}

    def _place(self, device: str, channels_last: bool) -> nn.Module:
        """The model on ``device`` in the inputs' memory format (moved only on a change)."""
        if self._placed != (device, channels_last):
            self.model.to(device)
            self.model.to(memory_format=torch.channels_last if channels_last
                          else torch.contiguous_format)
            self._placed = (device, channels_last)
        return self.model

    def forward(self, inputs: torch.Tensor, *, precision: str) -> torch.Tensor:
        """Logits (fp32) for one batch on the batch's device, in inference mode; usable in
        a loss (a plain tensor, not an inference tensor)."""
        model = self._place(str(inputs.device), inputs.is_contiguous(
            memory_format=torch.channels_last) and inputs.dim() == 4)
        amp = AMP_DTYPES.get(precision, torch.bfloat16)
        with (torch.inference_mode(),
              torch.autocast(inputs.device.type, dtype=amp, enabled=precision != "fp32")):
            out = model(inputs).float()
        return out.clone()  # outside inference mode: autograd may save it for backward

    def logits(self, split: ImageTensors, *, device: str, precision: str,
               channels_last: bool = False, batch_size: int = TEACHER_BATCH) -> torch.Tensor:
        """The teacher's logits (N, classes, fp32, on ``device``) for every image of
        ``split`` in order, normalised as the trainer normalises them: one batched pass in
        inference mode, computed once per split (by content) and precision, then served from
        memory (a study worker distils trial after trial from one teacher)."""
        return self.logits_and_cost(split, device=device, precision=precision,
                                    channels_last=channels_last, batch_size=batch_size)[0]

    def logits_and_cost(self, split: ImageTensors, *, device: str, precision: str,
                        channels_last: bool = False, batch_size: int = TEACHER_BATCH
                        ) -> tuple[torch.Tensor, float, bool]:
        """:meth:`logits`, with the seconds computing them took (once) and whether they
        were served from memory (an earlier run of this process paid for them)."""
        from dwsearch.data.loader import BatchLoader

        key = _logits_key(split, device, precision, channels_last)
        reused = key in self._logits
        if not reused:
            start = time.perf_counter()
            loader = BatchLoader(split, batch_size=batch_size, device=device,
                                 channels_last=channels_last)
            parts = [self.forward(batch[0], precision=precision) for batch in loader]
            self._logits[key] = torch.cat(parts)
            self._seconds[key] = time.perf_counter() - start
        return self._logits[key], self._seconds[key], reused


def _logits_key(split: ImageTensors, device: str, precision: str,
                channels_last: bool) -> tuple[Any, ...]:
    """A split's logits are the same while its images (by content), the device, precision
    and memory format are."""
    return (tensor_crc(split.images), tuple(split.images.shape), device, precision,
            channels_last)


@functools.lru_cache(maxsize=2)
def _load(path: str, stamp: tuple[int, int], spec: tuple[str, str] | None) -> Teacher:
    """``spec``: ("named", a built-in name or file) or ("inline", a spec as JSON): hashable,
    as the cache needs."""
    from dwsearch.run import model_from_weights
    from dwsearch.train.checkpoint import load_checkpoint, read_weights
    from dwsearch.zoo import load_spec

    if spec is None:
        state = load_checkpoint(path)
        if state.get("spec") is None:
            raise CompressError(f"teacher: {path}: the checkpoint holds no spec; give the "
                                f"teacher's spec (teacher_spec, --teacher-spec)")
        model_spec = ModelSpec.from_dict(state["spec"], source=f"{path}: spec")
        weights = state["model"]
    else:
        kind, text = spec
        model_spec = (ModelSpec.from_dict(json.loads(text), "teacher_spec") if kind == "inline"
                      else load_spec(text))
        weights = read_weights(path)
    model = model_from_weights(model_spec, weights,
                               f"{path}: the weights do not fit the teacher's spec")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return Teacher(model, model_spec, path, weights_checksum(model))


def load_teacher(config: DistillConfig) -> Teacher:
    """The teacher ``config`` names, loaded on the CPU in eval mode with frozen weights.

    Loaded once per file (its path, size and modification time) and spec: a study worker
    distilling many students keeps one teacher and its cached logits. Every problem is one
    :class:`CompressError` line beginning ``teacher:`` (a missing or unreadable file,
    weights that do not fit the spec).
    """
    path = Path(config.teacher)
    if not path.is_file():
        raise CompressError(f"teacher: {path}: no such checkpoint file"
                            + ("" if not path.exists() else " (a folder)"))
    stat = path.stat()
    spec = config.teacher_spec
    key_spec = (None if spec is None else ("inline", json.dumps(spec.to_dict()))
                if isinstance(spec, ModelSpec) else ("named", str(spec)))
    try:
        return _load(str(path), (stat.st_size, stat.st_mtime_ns), key_spec)
    except CompressError:
        raise
    except DwsearchError as err:
        message = str(err)
        raise CompressError(message if message.startswith("teacher:")
                            else f"teacher: {message}") from err


def check_teacher(teacher: Teacher, student: ModelSpec, *, classes: bool = True) -> None:
    """Refuse a teacher that cannot teach ``student``: another input shape or (``classes``)
    another number of classes; one located line, before any training starts. (Before the
    data loads, only the input: a dataset of other classes resizes the student.)"""
    where = f"teacher: {teacher.source} ({teacher.name})"
    if teacher.spec.input_shape != student.input_shape:
        raise CompressError(f"{where} takes input {teacher.spec.input_shape} but the student "
                            f"takes {student.input_shape}; a teacher must see the student's "
                            f"images")
    if classes and teacher.spec.num_classes != student.num_classes:
        raise CompressError(f"{where} has {teacher.spec.num_classes} classes but the student "
                            f"has {student.num_classes}; a teacher must predict the student's "
                            f"classes")


@dataclass(frozen=True)
class Distillation:
    """What training with a teacher needs: the loss, the cached logits of the training split
    (None: the teacher runs on each batch) and what the run record keeps."""

    loss: Loss
    train_extra: torch.Tensor | None  # (N, classes) beside the training images, or None
    record: Mapping[str, Any]  # the teacher's identity, alpha, temperature, path taken


def prepare_distillation(
    config: DistillConfig,
    teacher: Teacher,
    student: ModelSpec,
    splits: DataSplits,
    train: TrainConfig,
    *,
    device: str,
    precision: str,
) -> Distillation:
    """The loss and data for training ``student`` with ``teacher`` on ``splits``.

    Without augmentation the teacher's logits of the training split are computed now (once
    per dataset, see :meth:`Teacher.logits`) and travel with the batches; with it, the
    teacher runs in inference mode on each augmented batch. ``precision`` is the student's
    resolved precision, which the teacher's forward passes share.
    """
    check_teacher(teacher, student)
    # As an evaluation batch is estimated (run._check_training_memory): the weights, and per
    # sample the largest input + output of any layer, in fp32.
    per_sample = 4 * max(math.prod(s.in_shape) + math.prod(s.out_shape)
                         for s in teacher.model.shapes)
    batch = max(train.batch_size, TEACHER_BATCH) if not train.augment else train.batch_size
    check_memory(teacher.model.estimate.param_bytes + batch * per_sample,
                 f"teacher {teacher.name}: a forward batch of {batch:,}",
                 detail=f"{format_bytes(per_sample)} of activations per sample",
                 hint="use a smaller teacher or --batch-size")
    alpha, temperature, smoothing = config.alpha, config.temperature, train.label_smoothing
    record: dict[str, Any] = {**teacher.identity(), "alpha": alpha, "temperature": temperature}
    if not train.augment:
        logits, seconds, reused = teacher.logits_and_cost(
            splits.train, device=device, precision=precision,
            channels_last=train.channels_last)
        # What computing them cost, once per dataset, also where an earlier run of this
        # process computed them (reused: true) and this one paid nothing.
        record.update(teacher_logits="cached", teacher_seconds=seconds,
                      teacher_logits_reused=reused)

        def cached(student_logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor,
                   extra: torch.Tensor | None) -> torch.Tensor:
            assert extra is not None  # the loader carries the cached logits
            return distillation_loss(student_logits, extra, labels, alpha=alpha,
                                     temperature=temperature, label_smoothing=smoothing)

        return Distillation(cached, logits, record)

    record.update(teacher_logits="per_batch")

    def per_batch(student_logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor,
                  extra: torch.Tensor | None) -> torch.Tensor:
        teacher_logits = teacher.forward(inputs, precision=precision)
        return distillation_loss(student_logits, teacher_logits, labels, alpha=alpha,
                                 temperature=temperature, label_smoothing=smoothing)

    return Distillation(per_batch, None, record)


@dataclass(frozen=True)
class DistillCost:
    """What a teacher costs a training run: training images per second (median over epochs)
    with and without it, both paths, measured in one call (so machine load hits all four)."""

    plain: float  # images/s, no teacher, no augmentation
    cached: float  # images/s, teacher logits cached beside the data (no augmentation)
    augmented: float  # images/s, no teacher, augmentation on
    per_batch: float  # images/s, the teacher run on each augmented batch
    teacher_seconds: float  # computing the cached logits, once per dataset
    images: int  # training images per epoch
    epochs: int

    def format(self) -> str:
        """Two lines: each path's throughput and its ratio to training without a teacher."""
        return (f"cached teacher logits (no augmentation): {self.cached:,.0f} images/s against "
                f"{self.plain:,.0f} without a teacher ({self.cached / self.plain:.2f}x), plus "
                f"{self.teacher_seconds:.1f} s once for {self.images:,} images' logits\n"
                f"teacher per batch (augmentation): {self.per_batch:,.0f} images/s against "
                f"{self.augmented:,.0f} without a teacher "
                f"({self.per_batch / self.augmented:.2f}x)")


def distillation_cost(student: Any, config: DistillConfig, splits: DataSplits,
                      recipe: TrainConfig) -> DistillCost:
    """Train ``student`` on ``splits`` four ways with ``recipe`` (its ``augment`` set for
    each): without a teacher and with ``config``'s, with and without augmentation; the
    throughputs and the one-off cost of the cached logits (measured on a fresh teacher, so
    nothing was cached before)."""
    from dataclasses import replace

    from dwsearch.run import train_spec

    def run(augment: bool, distill: DistillConfig | None) -> Any:
        return train_spec(student, splits, replace(recipe, augment=augment), test=False,
                          progress=False, distill=distill)

    _load.cache_clear()  # time the logits from scratch
    plain, cached = run(False, None), run(False, config)
    augmented, per_batch = run(True, None), run(True, config)

    def speed(record: Any) -> float:
        values = sorted(e.images_per_second for e in record.epochs)
        return float(values[len(values) // 2])

    return DistillCost(speed(plain), speed(cached), speed(augmented), speed(per_batch),
                       float(cached.compression["distill"]["teacher_seconds"]),
                       len(splits.train), recipe.epochs)
