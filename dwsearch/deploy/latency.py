"""The latency protocol for deployed models: interleaved blocks, medians, quartiles and the
spread of per-block ratios, with the conditions they were measured under.

Everything compared in one run is timed in one process, interleaved: a block times each
candidate ``calls_per_block`` times in turn (A A A B B B C C C, then the next block starting
with B), so a change in machine load (other work on a shared CPU) lands on every candidate
rather than on whichever ran at that moment. Each candidate is warmed up first. A
candidate's median and quartiles are over all its timed calls; its ratio to a reference is
taken per block (median of its calls over the reference's, in the same block), and the
spread of those ratios says how far the comparison can be trusted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from dwsearch.deploy._runtimes import Session
from dwsearch.errors import DeployError
from dwsearch.runtime import device_name, torch_threads, usable_cpus

__all__ = ["Candidate", "Conditions", "LatencyTable", "Ratio", "Timing", "time_interleaved"]

EAGER = "eager"


@dataclass(frozen=True)
class Candidate:
    """One thing to time: a model (by label) loaded in a runtime, in a precision."""

    model: str  # the model's label ("seed_cnn", "conv", ...)
    runtime: str  # "eager", "executorch" or "onnxruntime"
    precision: str  # "fp32" or "int8"
    session: Session
    size_bytes: int | None = None  # of the serialized program; None for eager
    check: str = ""  # the correctness check, as one phrase


@dataclass(frozen=True)
class Ratio:
    """Per-block ratios of one candidate's median to a reference's (< 1: faster)."""

    reference: str  # what it is a ratio to, e.g. "eager" or "conv"
    median: float
    low: float  # smallest per-block ratio
    high: float  # largest per-block ratio

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"


@dataclass(frozen=True)
class Timing:
    """One candidate's latency for one batch, in milliseconds."""

    model: str
    runtime: str
    precision: str
    median_ms: float
    q1_ms: float  # 25th percentile
    q3_ms: float  # 75th percentile
    min_ms: float
    max_ms: float
    calls: int  # timed calls, after warm-up
    vs_eager: Ratio | None  # to the same model in eager PyTorch fp32, where it was timed
    vs_first: Ratio | None  # to the first model on the same runtime and precision
    size_bytes: int | None
    check: str


@dataclass(frozen=True)
class Conditions:
    """What a latency table was measured under."""

    cpu: str  # the CPU model, from /proc/cpuinfo
    cores: int  # CPU cores this process may use
    threads: int  # intra-op threads every runtime was given
    batch_size: int
    input_shape: tuple[int, ...]  # (C, H, W)
    warmup: int  # untimed calls per candidate before the first block
    blocks: int
    calls_per_block: int
    versions: Mapping[str, str]  # package -> version: torch and each runtime timed

    def summary(self) -> str:
        versions = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        return (f"batch {self.batch_size}, input {'x'.join(map(str, self.input_shape))}, "
                f"{self.threads} thread{'s' if self.threads > 1 else ''} on {self.cpu} "
                f"({self.cores} cores); {self.blocks} interleaved blocks x "
                f"{self.calls_per_block} calls after {self.warmup} warm-up; {versions}")


@dataclass(frozen=True)
class LatencyTable:
    """Latencies of several candidates measured together, interleaved."""

    conditions: Conditions
    timings: tuple[Timing, ...]

    def get(self, model: str, runtime: str, precision: str = "fp32") -> Timing:
        for timing in self.timings:
            if (timing.model, timing.runtime, timing.precision) == (model, runtime, precision):
                return timing
        raise KeyError((model, runtime, precision))

    def format_table(self) -> str:
        """The table as plain text, with its conditions under it."""
        models = {t.model for t in self.timings}
        head = ["model", "runtime", "precision", "median ms", "q1-q3 ms", "x eager (blocks)"]
        if len(models) > 1:
            first = self.timings[0].model
            head.append(f"x {first} (blocks)")
        head += ["size", "check"]
        rows = []
        for t in self.timings:
            row = [t.model, t.runtime, t.precision, f"{t.median_ms:.3f}",
                   f"{t.q1_ms:.3f}-{t.q3_ms:.3f}", str(t.vs_eager) if t.vs_eager else "-"]
            if len(models) > 1:
                row.append(str(t.vs_first) if t.vs_first else "-")
            row += [f"{t.size_bytes:,} B" if t.size_bytes is not None else "-", t.check or "-"]
            rows.append(row)
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        right = {3, 4, 5, 6} | ({7} if len(models) > 1 else set())

        def line(cells: list[str]) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(head), rule, *map(line, rows),
                          f"conditions: {self.conditions.summary()}"])


def _quartiles(samples: Sequence[float]) -> tuple[float, float, float]:
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q1, median, q3 = statistics.quantiles(samples, n=4)
    return q1, median, q3


def _ratio(reference: str, mine: Sequence[float], theirs: Sequence[float]) -> Ratio:
    ratios = [a / b for a, b in zip(mine, theirs, strict=True) if b > 0]
    return Ratio(reference, statistics.median(ratios), min(ratios), max(ratios))


def time_interleaved(
    candidates: Sequence[Candidate],
    *,
    threads: int,
    batch_size: int,
    input_shape: tuple[int, ...],
    warmup: int = 10,
    blocks: int = 20,
    calls_per_block: int = 10,
    versions: Mapping[str, str] | None = None,
) -> LatencyTable:
    """Time every candidate on one random batch (seeded), interleaved in ``blocks`` blocks
    of ``calls_per_block`` calls each, after ``warmup`` untimed calls per candidate.

    The candidates' sessions must have been loaded with ``threads`` threads; torch's own
    thread count is set to ``threads`` for the measurement and restored afterwards. The
    block order rotates (A B C, B C A, C A B, ...) so that no candidate always runs right
    after the same other one. Ratios are per block: to the same model's eager fp32 run
    (``vs_eager``), and with several models, to the first model on the same runtime and
    precision (``vs_first``).
    """
    for name, value, least in (("warmup", warmup, 0), ("blocks", blocks, 1),
                               ("calls_per_block", calls_per_block, 1),
                               ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DeployError(f"{name}: expected an integer >= {least}, found {value!r}")
    if not candidates:
        raise DeployError("candidates: nothing to time")
    keys = [(c.model, c.runtime, c.precision) for c in candidates]
    if len(set(keys)) != len(keys):
        raise DeployError(f"candidates: one (model, runtime, precision) given twice: {keys}")
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(batch_size, *input_shape, generator=generator)
    samples: list[list[float]] = [[] for _ in candidates]
    per_block: list[list[float]] = [[] for _ in candidates]
    with torch_threads(threads):
        for candidate in candidates:
            candidate.session.prepare()
            for _ in range(warmup):
                candidate.session.run(batch)
        for block in range(blocks):
            start = block % len(candidates)
            for i in [*range(start, len(candidates)), *range(start)]:
                session = candidates[i].session
                session.prepare()
                times = []
                for _ in range(calls_per_block):
                    begin = time.perf_counter()
                    session.run(batch)
                    times.append((time.perf_counter() - begin) * 1000.0)
                samples[i].extend(times)
                per_block[i].append(statistics.median(times))
    index = {key: i for i, key in enumerate(keys)}
    first_model = candidates[0].model
    timings = []
    for i, candidate in enumerate(candidates):
        q1, median, q3 = _quartiles(samples[i])
        eager = index.get((candidate.model, EAGER, "fp32"))
        first = index.get((first_model, candidate.runtime, candidate.precision))
        timings.append(Timing(
            model=candidate.model, runtime=candidate.runtime, precision=candidate.precision,
            median_ms=median, q1_ms=q1, q3_ms=q3, min_ms=min(samples[i]),
            max_ms=max(samples[i]), calls=len(samples[i]),
            vs_eager=_ratio(EAGER, per_block[i], per_block[eager]) if eager is not None
            else None,
            vs_first=_ratio(first_model, per_block[i], per_block[first])
            if first is not None and len({c.model for c in candidates}) > 1 else None,
            size_bytes=candidate.size_bytes, check=candidate.check,
        ))
    conditions = Conditions(
        cpu=device_name("cpu"), cores=usable_cpus(), threads=threads, batch_size=batch_size,
        input_shape=tuple(input_shape), warmup=warmup, blocks=blocks,
        calls_per_block=calls_per_block,
        versions=dict(versions or {"torch": str(torch.__version__)}),
    )
    return LatencyTable(conditions, tuple(timings))
