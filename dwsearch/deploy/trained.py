"""A trained model where it ships, as plain data for its run record: lowered to each runtime
in each precision, checked against eager PyTorch, timed together (interleaved) with eager,
and each int8 program's accuracy on the whole validation split.

Calibration uses a fixed, seeded selection of **training** images; the check and the
accuracy use validation images, which the quantizer never saw.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from dwsearch.data.loader import BatchLoader
from dwsearch.data.tensors import DataSplits, ImageTensors
from dwsearch.deploy.deployment import measure
from dwsearch.deploy.images import split_images
from dwsearch.deploy.latency import EAGER
from dwsearch.deploy.program import Lowered
from dwsearch.errors import DeployError

__all__ = ["DEPLOY_FORMAT", "deploy_trained"]

DEPLOY_FORMAT = 1
# Batch for running ONNX programs over the validation split (ExecuTorch programs take only
# the batch they were exported at).
_ACCURACY_BATCH = 256


def deploy_trained(
    model: nn.Module,
    splits: DataSplits,
    *,
    runtimes: Sequence[str],
    precisions: Sequence[str] = ("fp32",),
    threads: int = 1,
    batch_size: int = 1,
    calibration_images: int = 256,
    check_images: int = 256,
    warmup: int = 5,
    blocks: int = 10,
    calls_per_block: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Lower the trained ``model`` to every runtime in every precision and measure it.

    Returns plain data (the run record's ``deploy``): ``runtimes``, ``precisions``, the
    timing ``conditions``, ``eager`` (its timing in the same interleaved run) and
    ``programs`` keyed ``"runtime/precision"``, each with ``median_ms``, ``q1_ms``,
    ``q3_ms``, ``size_bytes``, the check (``max_abs_diff``, ``top1_agreement`` on
    ``check_images`` validation images) and, for int8, ``val_accuracy`` on the whole
    validation split. Raises :class:`DeployError` naming the layer, block and runtime when a
    block cannot be lowered.
    """
    if len(splits.val) == 0:
        raise DeployError("deploy: needs a validation split (the int8 accuracy and the check "
                          "are measured on it); set data.val_size")
    started = time.perf_counter()
    model = model.cpu().eval()
    val, train = _on_cpu(splits.val), _on_cpu(splits.train)
    images = split_images(val, check_images, seed=seed)
    calibration = None
    if "int8" in precisions:
        calibration = split_images(train, calibration_images, seed=seed)
    deployment = measure(
        {"model": model}, runtimes, precisions, images=images, calibration=calibration,
        calibration_source="training split", threads=threads, batch_size=batch_size,
        eager=True, warmup=warmup, blocks=blocks, calls_per_block=calls_per_block)
    (table,) = deployment.tables
    programs: dict[str, Any] = {}
    for runtime in runtimes:
        for precision in precisions:
            program = deployment.lowered[("model", runtime, precision)]
            timing = table.get("model", runtime, precision)
            entry: dict[str, Any] = {
                "median_ms": timing.median_ms, "q1_ms": timing.q1_ms, "q3_ms": timing.q3_ms,
                "vs_eager": None if timing.vs_eager is None else asdict(timing.vs_eager),
                "size_bytes": program.size_bytes, "version": program.version,
                "max_abs_diff": program.check.max_abs_diff,
                "top1_agreement": program.check.top1_agreement,
                "check_images": program.check.images,
                "calibration_images": program.calibration_images,
                "calibration_source": program.calibration_source,
                "lower_seconds": round(program.seconds, 3),
            }
            if precision == "int8":
                entry["val_accuracy"] = _accuracy(program, val, threads)
            programs[f"{runtime}/{precision}"] = entry
    eager = table.get("model", EAGER, "fp32")
    return {
        "format": DEPLOY_FORMAT,
        "runtimes": list(runtimes),
        "precisions": list(precisions),
        "conditions": {**asdict(table.conditions),
                       "input_shape": list(table.conditions.input_shape)},
        "eager": {"median_ms": eager.median_ms, "q1_ms": eager.q1_ms, "q3_ms": eager.q3_ms},
        "programs": programs,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _on_cpu(split: ImageTensors) -> ImageTensors:
    if split.images.device.type == "cpu":
        return split
    return ImageTensors(split.images.cpu(), split.labels.cpu(), split.classes)


def _accuracy(program: Lowered, split: ImageTensors, threads: int) -> float:
    """Top-1 accuracy of ``program`` on every image of ``split``."""
    session = program.load(threads)
    session.prepare()
    batch = program.batch_size if program.runtime == "executorch" else _ACCURACY_BATCH
    correct = total = 0
    for images, labels in BatchLoader(split, batch_size=batch, drop_last=False):
        if len(images) < batch and program.runtime == "executorch":
            # The program's batch is static: pad the last batch, count only the real images.
            padded = torch.cat([images, images.new_zeros(batch - len(images),
                                                         *images.shape[1:])])
            logits = session.run(padded)[:len(images)]
        else:
            logits = session.run(images)
        correct += int((logits.argmax(1) == labels).sum())
        total += len(labels)
    return correct / total
