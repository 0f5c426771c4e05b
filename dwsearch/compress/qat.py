"""Quantization-aware training (QAT) where post-training INT8 loses too much accuracy.

The model is first quantized after training exactly as :mod:`dwsearch.deploy` quantizes it
(PT2E, :func:`dwsearch.deploy._runtimes.xnnpack_quantizer`: int8 activations per tensor,
int8 weights per output channel, symmetric; calibrated on training images) and lowered to
ExecuTorch with the XNNPACK delegate; the **deployed program** is run on every validation
image. When it is more than ``max_drop`` below the fp32 model, the model is exported, prepared
with ``prepare_qat_pt2e`` and the same quantizer in its QAT form (``is_qat=True``: fake
quantization in the forward pass, straight-through gradients), fine-tuned by the normal
trainer (fp32, no channels-last: the fake-quantized graph is what int8 will compute),
converted and lowered in its turn. Batch norm is folded into the convs before QAT (see
:func:`fold_batch_norms`). Accuracy before and after and the deployed INT8 latency
(interleaved with the post-training program and eager fp32, :mod:`dwsearch.deploy`'s
protocol) come back together.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dwsearch.builder import Network
from dwsearch.compress.config import QatConfig
from dwsearch.deploy._runtimes import get_runtime, xnnpack_quantizer
from dwsearch.deploy.images import split_images
from dwsearch.deploy.latency import EAGER, Candidate, LatencyTable, time_interleaved
from dwsearch.deploy.program import Lowered, eager_session, lower
from dwsearch.errors import CompressError
from dwsearch.records import EpochMetrics
from dwsearch.train.config import TrainConfig

__all__ = ["QatResult", "fold_batch_norms", "needs_qat", "quantization_aware"]

RUNTIME = "executorch"
# Validation images each lowered program is checked on as it is made (its accuracy is then
# measured on all of them).
CHECK_IMAGES = 128


@dataclass(frozen=True)
class QatResult:
    """Post-training INT8 against the fp32 model and, where it lost more than ``max_drop``,
    quantization-aware training. Accuracies are fractions of the validation split, int8 ones
    measured by running the deployed ExecuTorch program."""

    fp32_accuracy: float  # eager fp32
    ptq_accuracy: float  # the post-training int8 program
    qat_accuracy: float | None  # the int8 program after QAT; None where QAT did not run
    max_drop: float
    ran_qat: bool
    program: Lowered  # the int8 program to ship: QAT's where it ran, else post-training's
    ptq_program: Lowered
    quantized: nn.Module | None  # QAT's converted int8 model (None where QAT did not run)
    latency: LatencyTable | None  # eager fp32 and the int8 programs, interleaved
    epochs: tuple[EpochMetrics, ...]  # QAT's epochs (training loss and accuracy)
    val_images: int
    seconds: float  # wall time of everything
    source: Mapping[str, Any]  # what was quantized: spec hash, weights checksum, name, file

    @property
    def ptq_drop(self) -> float:
        """What post-training int8 lost against fp32 (fraction; negative: it gained)."""
        return self.fp32_accuracy - self.ptq_accuracy

    def record(self) -> dict[str, Any]:
        """Plain data for a run record's ``compression["qat"]``."""
        latency: dict[str, Any] = {}
        if self.latency is not None:
            for timing in self.latency.timings:
                latency[f"{timing.model}_{timing.precision}_ms"] = timing.median_ms
            latency["conditions"] = self.latency.conditions.summary()
        return {"from": dict(self.source), "fp32_accuracy": self.fp32_accuracy,
                "ptq_accuracy": self.ptq_accuracy, "qat_accuracy": self.qat_accuracy,
                "max_drop": self.max_drop,
                "ran_qat": self.ran_qat, "epochs": [asdict(e) for e in self.epochs],
                "val_images": self.val_images, "program_bytes": self.program.size_bytes,
                "runtime": RUNTIME, "runtime_version": self.program.version, **latency}

    def summary(self) -> str:
        """Lines for people: accuracies, what QAT bought, the latency table."""
        lines = [f"validation accuracy on {self.val_images:,} images: fp32 "
                 f"{self.fp32_accuracy:.2%}, int8 post-training {self.ptq_accuracy:.2%} "
                 f"(drop {self.ptq_drop * 100:+.2f} points, allowed {self.max_drop * 100:.2f})"]
        if self.ran_qat and self.qat_accuracy is not None:
            lines.append(f"int8 after {len(self.epochs)} epoch(s) of quantization-aware "
                         f"training: {self.qat_accuracy:.2%} (drop "
                         f"{(self.fp32_accuracy - self.qat_accuracy) * 100:+.2f} points)")
        else:
            lines.append("quantization-aware training not needed: post-training int8 is within "
                         "the allowed drop")
        lines.append(f"int8 program: {self.program.size_bytes:,} bytes, {RUNTIME} "
                     f"{self.program.version}, batch {self.program.batch_size}")
        if self.latency is not None:
            lines.append(self.latency.format_table())
        return "\n".join(lines)


def needs_qat(fp32_accuracy: float, ptq_accuracy: float, config: QatConfig) -> bool:
    """Whether post-training int8 lost more than ``config.max_drop`` (or QAT is forced)."""
    return config.force or fp32_accuracy - ptq_accuracy > config.max_drop


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with each conv-norm-activation unit's batch norm
    folded into its conv: what the int8 program computes anyway (XNNPACK runs convs with BN
    folded), and what QAT then fine-tunes, with the normalisation's statistics frozen at
    their trained values. Folding first also spares torchao's convert its conv-BN pattern
    search (about 20 s on this project's 2-core CPU, whatever the model's size). A user's
    block keeps its batch norms; torchao folds those at convert."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from dwsearch.blocks.common import ConvNormAct

    folded = copy.deepcopy(model).cpu().eval()
    for unit in folded.modules():
        if isinstance(unit, ConvNormAct) and isinstance(unit.bn, nn.BatchNorm2d):
            unit.conv = fuse_conv_bn_eval(unit.conv, unit.bn)
            unit.bn = nn.Identity()
    return folded


def _program_accuracy(program: Lowered, batches: Iterable[tuple[torch.Tensor, ...]],
                      threads: int) -> float:
    """Top-1 accuracy of a lowered program over labelled batches, run in its runtime at its
    own batch size (the last batch filled up with copies of its first image)."""
    session = program.load(threads)
    size = program.batch_size
    correct = total = 0
    for batch in batches:
        images, labels = batch[0].contiguous(), batch[1]
        for start in range(0, len(images), size):
            chunk = images[start:start + size]
            real = len(chunk)
            if real < size:
                chunk = torch.cat([chunk, chunk[:1].expand(size - real, *chunk.shape[1:])])
            predicted = session.run(chunk.contiguous())[:real].argmax(1)
            correct += int((predicted == labels[start:start + real]).sum())
            total += real
    return correct / max(total, 1)


def quantization_aware(
    source: Network | str | Path,
    data: Any,
    recipe: TrainConfig,
    qat: QatConfig | None = None,
    *,
    threads: int = 1,
    batch_size: int = 1,
    latency: bool = True,
    progress: bool | None = None,
    callbacks: Iterable[Callable[[EpochMetrics], None]] = (),
) -> QatResult:
    """Post-training INT8 of a trained model and, where it loses more than ``qat.max_drop`` of
    validation accuracy (or ``qat.force``), quantization-aware training for ``qat.epochs``
    epochs of ``recipe`` (fine-tuning: give it a small ``lr``), on ``data`` (a
    :class:`DataConfig` or splits). ``source``: a network or a dwsearch checkpoint, or a spec
    trained first with ``recipe`` as it is.

    Both int8 programs are ExecuTorch (XNNPACK) programs at batch ``batch_size``; their
    accuracy is measured by running them on every validation image, and with ``latency``
    they are timed against eager fp32, interleaved, with ``threads`` threads. Needs a
    validation split. Raises :class:`CompressError` (or the deploy package's errors: a
    runtime missing, a block it cannot lower) before any training.
    """
    from dwsearch.compress.prune import trained_source
    from dwsearch.run import make_loaders
    from dwsearch.train.loop import evaluate, fit

    start = time.perf_counter()
    qat = qat if qat is not None else QatConfig()
    if not isinstance(qat, QatConfig):
        raise CompressError(f"qat: expected a QatConfig, found {type(qat).__name__}")
    if not isinstance(recipe, TrainConfig):
        raise CompressError(f"recipe: expected a TrainConfig, found {type(recipe).__name__}")
    get_runtime(RUNTIME).require()  # before the model or the data load (and torchao, quietly)
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    model, identity, splits, _ = trained_source(source, data, recipe, progress=progress)
    if not len(splits.val):
        raise CompressError("data: quantization-aware training compares accuracies on a "
                            "validation split; give val_size > 0")
    # The fake-quantized graph computes what int8 will: in fp32, in its own memory format.
    recipe = replace(recipe, epochs=qat.epochs, precision="fp32", channels_last=False,
                     compile=False)
    train_batches, val_batches, _ = make_loaders(splits, recipe, "cpu")
    assert val_batches is not None
    calibration = split_images(splits.train, qat.calibration_images, seed=recipe.seed)
    check = split_images(splits.val, CHECK_IMAGES, seed=recipe.seed)
    said = f"{len(calibration)} training images of {splits.source}"

    fp32_accuracy = evaluate(model, val_batches, device="cpu")[1]
    ptq_program = lower(model, RUNTIME, "int8", images=check, calibration=calibration,
                        calibration_source=f"calibrated on {said}", batch_size=batch_size)
    ptq_accuracy = _program_accuracy(ptq_program, val_batches, threads)
    ran = needs_qat(fp32_accuracy, ptq_accuracy, qat)
    program, quantized, qat_accuracy = ptq_program, None, None
    epochs: tuple[EpochMetrics, ...] = ()
    if ran:
        example = calibration[:2]  # batch 2: torch.export specialises a dimension of size 1
        graph = torch.export.export(fold_batch_norms(model), (example,),
                                    dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()
        prepared = prepare_qat_pt2e(graph, xnnpack_quantizer(qat=True))
        allow_exported_model_train_eval(prepared)  # so the trainer's train()/eval() work
        # No validation between epochs: each switch of an exported graph between train and
        # eval mode rebuilds its patterns (seconds), and what counts is the deployed
        # program's accuracy, measured below.
        result = fit(prepared, train_batches, None, recipe, progress=progress,
                     callbacks=callbacks)
        if result.status != "completed":
            raise CompressError(f"qat: quantization-aware training ended {result.status}: "
                                f"{result.message}")
        epochs = tuple(result.epochs)
        prepared.cpu().eval()
        quantized = convert_pt2e(prepared)
        allow_exported_model_train_eval(quantized)
        program = lower(quantized, RUNTIME, "int8", images=check, quantized=True,
                        calibration_source=f"quantization-aware training on "
                                           f"{len(splits.train):,} training images",
                        batch_size=batch_size)
        qat_accuracy = _program_accuracy(program, val_batches, threads)
    table = None
    if latency:
        # "qat" after "ptq": its int8 row gets its ratio to the post-training program.
        candidates = [Candidate("ptq", EAGER, "fp32", eager_session(model, threads)),
                      Candidate("ptq", RUNTIME, "int8", ptq_program.load(threads),
                                size_bytes=ptq_program.size_bytes)]
        if ran:
            candidates.append(Candidate("qat", RUNTIME, "int8", program.load(threads),
                                        size_bytes=program.size_bytes))
        table = time_interleaved(candidates, threads=threads, batch_size=batch_size,
                                 input_shape=model.spec.input_shape,
                                 versions={"torch": str(torch.__version__),
                                           RUNTIME: program.version})
    return QatResult(fp32_accuracy, ptq_accuracy, qat_accuracy, qat.max_drop, ran, program,
                     ptq_program, quantized, table, epochs, len(splits.val),
                     time.perf_counter() - start, identity)
