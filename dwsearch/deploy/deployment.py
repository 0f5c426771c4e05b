"""Lower models to runtimes and time them together: what ``dwsearch profile --runtime``
prints and what a study's deployment metrics will call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dwsearch.deploy._runtimes import PRECISIONS, RUNTIMES, get_runtime
from dwsearch.deploy.latency import EAGER, Candidate, LatencyTable, time_interleaved
from dwsearch.deploy.program import Lowered, eager_session, lower
from dwsearch.errors import DeployError
from dwsearch.runtime import usable_cpus
from dwsearch.train.config import MAX_THREADS

__all__ = ["Deployment", "measure", "thread_counts"]


@dataclass(frozen=True)
class Deployment:
    """Models lowered to runtimes and timed: every program with its size and check, and one
    latency table per thread count."""

    lowered: Mapping[tuple[str, str, str], Lowered]  # (model, runtime, precision) -> program
    tables: tuple[LatencyTable, ...]  # one per thread count, in the order asked

    def format(self) -> str:
        """The tables as text, each under a line naming its thread count."""
        parts = []
        for table in self.tables:
            threads = table.conditions.threads
            parts.append(f"latency, {threads} thread{'s' if threads > 1 else ''}:\n"
                         f"{table.format_table()}")
        return "\n\n".join(parts)


def thread_counts(threads: int | Sequence[int] | None) -> tuple[int, ...]:
    """The thread counts to measure at: the ones given, or 1 and every usable core (one
    count where the machine has one core)."""
    if threads is None:
        return tuple(dict.fromkeys((1, usable_cpus())))
    counts = (threads,) if isinstance(threads, int) else tuple(threads)
    for count in counts:
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_THREADS:
            raise DeployError(f"threads: expected integers in 1..{MAX_THREADS}, found {count!r}")
    if not counts:
        raise DeployError("threads: expected at least one thread count")
    return tuple(dict.fromkeys(counts))


def measure(
    models: Mapping[str, nn.Module],
    runtimes: Sequence[str] = RUNTIMES,
    precisions: Sequence[str] = ("fp32",),
    *,
    images: torch.Tensor,
    calibration: torch.Tensor | None = None,
    calibration_source: str = "given",
    threads: int | Sequence[int] | None = 1,
    batch_size: int = 1,
    eager: bool = True,
    warmup: int = 10,
    blocks: int = 20,
    calls_per_block: int = 10,
) -> Deployment:
    """Lower every model (label -> model; all take one input shape) to every runtime in every
    precision, check each program on ``images`` (see :func:`dwsearch.deploy.program`), and time
    them all together, interleaved (:func:`time_interleaved`), with eager PyTorch fp32 for
    reference unless ``eager`` is false: one table per thread count in ``threads`` (None: 1
    and all usable cores). Latency is per batch of ``batch_size``, in milliseconds.

    int8 needs ``calibration``: a fixed number of **training** images, never validation or
    test images (``calibration_source`` says where they came from). Latency and size do not
    depend on the weights, so an untrained model measures them as well as a trained one;
    int8 agreement with fp32 does depend on them.
    """
    if not models:
        raise DeployError("models: nothing to measure")
    for runtime in runtimes:
        get_runtime(runtime)
    for precision in precisions:
        if precision not in PRECISIONS:
            raise DeployError(f"precision {precision!r}: unknown; allowed: "
                              f"{', '.join(PRECISIONS)}")
    counts = thread_counts(threads)
    shape = tuple(images.shape[1:]) if isinstance(images, torch.Tensor) else ()
    lowered: dict[tuple[str, str, str], Lowered] = {}
    for label, model in models.items():
        for runtime in runtimes:
            for precision in precisions:
                lowered[(label, runtime, precision)] = lower(
                    model, runtime, precision, images=images, calibration=calibration,
                    calibration_source=calibration_source, batch_size=batch_size)
    versions = {"torch": str(torch.__version__)}
    versions.update({runtime: get_runtime(runtime).version for runtime in runtimes})
    tables = []
    for count in counts:
        candidates = []
        for label, model in models.items():
            if eager:
                candidates.append(Candidate(label, EAGER, "fp32", eager_session(model, count)))
            for runtime in runtimes:
                for precision in precisions:
                    program = lowered[(label, runtime, precision)]
                    candidates.append(Candidate(
                        label, runtime, precision, program.load(count),
                        size_bytes=program.size_bytes, check=_check_phrase(program)))
        tables.append(time_interleaved(
            candidates, threads=count, batch_size=batch_size, input_shape=shape,
            warmup=warmup, blocks=blocks, calls_per_block=calls_per_block, versions=versions))
    return Deployment(lowered, tuple(tables))


def _check_phrase(program: Lowered) -> str:
    check = program.check
    if program.precision == "fp32":
        return f"max|d| {check.max_abs_diff:.1e}"
    return f"top-1 {check.top1_agreement:.0%} of {check.images}"
