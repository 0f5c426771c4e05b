"""The metrics a study can optimize, constrain and report: one table, one entry per metric.

Each :class:`Metric` says its name (as study files write it), its default direction, its unit
and label, how it is read from a run record, how it is read from the costs known before
training (if it is), whether it may be an objective or a constraint, and which columns of the
report's tables hold it. The study config validates objectives, constraints and claims against
it, the objective reads values and checks constraints through it, and the report finds its
columns in it: a new metric is one entry here.

This module imports only the standard library and :mod:`dwsearch.records` (no torch, no
Optuna, no pandas), so the report reads it too.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dwsearch.records import RunRecord

__all__ = ["DEPLOY_PRECISIONS", "DEPLOY_RUNTIMES", "METRICS", "Metric", "after_training",
           "before_training", "broken_constraints", "constraint_metrics", "deployed",
           "median_train_ips", "objective_metrics"]


def _field(name: str) -> Callable[[RunRecord], float | None]:
    def read(record: RunRecord) -> float | None:
        value = getattr(record, name)
        return None if value is None else float(value)

    return read


def _cost(name: str) -> Callable[[Any, Any], float | None]:
    """Read ``name`` from the costs profile known before training (params, MACs, ...)."""

    def read(costs: Any, timing: Any) -> float | None:
        value = getattr(costs, name, None)
        return None if value is None else float(value)

    return read


def median_train_ips(record: RunRecord) -> float | None:
    """Training images/s of a run: the median over its epochs (one slow epoch, say the first
    while other work ran, does not move it)."""
    values = [e.images_per_second for e in record.epochs if e.images_per_second > 0]
    return statistics.median(values) if values else None


# The runtimes and precisions dwsearch.deploy lowers to (a test checks they are its own).
DEPLOY_RUNTIMES = ("executorch", "onnxruntime")
DEPLOY_PRECISIONS = ("fp32", "int8")
_RUNTIME_LABELS = {"executorch": "ExecuTorch", "onnxruntime": "ONNX Runtime"}


def _deployed(runtime: str, precision: str, key: str) -> Callable[[RunRecord], float | None]:
    def read(record: RunRecord) -> float | None:
        entry = deployed(record, runtime, precision)
        value = entry.get(key) if entry is not None else None
        return None if value is None else float(value)

    return read


def _int8_accuracy(record: RunRecord) -> float | None:
    for runtime in (record.deploy or {}).get("runtimes", ()):
        value = _deployed(runtime, "int8", "val_accuracy")(record)
        if value is not None:
            return value
    return None


def _int8_drop(record: RunRecord) -> float | None:
    int8 = _int8_accuracy(record)
    if int8 is None or record.val_accuracy is None:
        return None
    return float(record.val_accuracy) - int8


def _qat(key: str) -> Callable[[RunRecord], float | None]:
    """From the qat: section's measurement (dwsearch.compress.qat.QatResult.record)."""

    def read(record: RunRecord) -> float | None:
        qat = (record.compression or {}).get("qat")
        if not isinstance(qat, Mapping):
            return None
        value = qat.get(key)
        if key == "qat_accuracy" and value is None:  # QAT not needed: post-training ships
            value = qat.get("ptq_accuracy")
        return None if value is None else float(value)

    return read


def _latency_before_training(costs: Any, timing: Any) -> float | None:
    return None if timing is None else float(timing.median_ms)


@dataclass(frozen=True)
class Metric:
    """One metric: what it is, where it is read, what it may be used for."""

    name: str  # as written in study files (objectives, constraints)
    direction: str  # "maximize" or "minimize": the default when written without :max/:min
    unit: str  # "fraction", "parameters", "MACs", "elements", "bytes" or "ms"
    label: str  # for people (tables, plot axes)
    read: Callable[[RunRecord], float | None]  # its value in a run record (None: not measured)
    # Its value from the costs (dwsearch.costs.Profile) and latency timing known before
    # training, for metrics that are known then: a constraint on it is checked before any
    # training and a configuration over it never trains. None: known only after training.
    before_training: Callable[[Any, Any], float | None] | None = None
    objective: bool = True  # may be an objective
    # May be a constraint: checked before training where ``before_training`` reads it, else
    # on the finished run (a run over it fails as infeasible, its record kept).
    constrainable: bool = False
    column: str | None = None  # column of the report's per-configuration table
    run_column: str | None = None  # column of the report's per-run table (one row a seed)
    # (runtime, precision) the study's deploy: section must measure for it ("*": any
    # runtime); None: measured without a deploy: section.
    deploy: tuple[str, str] | None = None
    # Another section of the study file that measures it ("qat"); None: none needed.
    section: str | None = None


METRICS: Mapping[str, Metric] = {m.name: m for m in (
    # The search sees validation accuracy only; the test set is for the report.
    Metric("val_accuracy", "maximize", "fraction", "validation accuracy",
           _field("val_accuracy"), column="val_mean", run_column="val_accuracy"),
    Metric("best_val_accuracy", "maximize", "fraction", "best validation accuracy",
           _field("best_val_accuracy"), column="best_val_mean", run_column="best_val_accuracy"),
    # Reported and claimed, never optimized: the search must not see the test set.
    Metric("test_accuracy", "maximize", "fraction", "test accuracy", _field("test_accuracy"),
           objective=False, column="test_mean", run_column="test_accuracy"),
    Metric("params", "minimize", "parameters", "parameters", _field("params"),
           _cost("params"), constrainable=True, column="params", run_column="params"),
    Metric("macs", "minimize", "MACs", "multiply-adds per image", _field("macs"),
           _cost("macs"), constrainable=True, column="macs", run_column="macs"),
    Metric("activations", "minimize", "elements", "activations per image",
           _field("activations"), _cost("activations"), constrainable=True,
           column="activations", run_column="activations"),
    Metric("saved_bytes", "minimize", "bytes", "bytes saved for backward per image",
           _field("saved_bytes"), _cost("saved_bytes"), constrainable=True,
           column="saved_bytes", run_column="saved_bytes"),
    # Median batch-1 forward latency on the worker's device (PyTorch eager), ms.
    Metric("latency", "minimize", "ms", "latency (ms)", _field("latency_ms"),
           _latency_before_training, constrainable=True, column="latency_ms",
           run_column="latency_ms"),
    # Median training images/s over a run's epochs on the worker's device: a device's speed,
    # not the architecture's, so claims compare it between models but studies do not optimize
    # it.
    Metric("train_ips", "maximize", "images/s", "training images/s", median_train_ips,
           objective=False, column="train_ips", run_column="train_ips"),
    # Where models ship (a study's deploy: section): the trained model lowered to each
    # runtime in each precision, timed interleaved, its program's size, and the accuracy of
    # the int8 program on the validation split (calibrated on training images in the trial).
    *(m for runtime in DEPLOY_RUNTIMES for precision in DEPLOY_PRECISIONS for m in (
        Metric(f"latency_{runtime}_{precision}", "minimize", "ms",
               f"{_RUNTIME_LABELS[runtime]} {precision} latency (ms)",
               _deployed(runtime, precision, "median_ms"), constrainable=True,
               column=f"latency_{runtime}_{precision}",
               run_column=f"latency_{runtime}_{precision}", deploy=(runtime, precision)),
        Metric(f"size_{runtime}_{precision}", "minimize", "bytes",
               f"{_RUNTIME_LABELS[runtime]} {precision} program size (bytes)",
               _deployed(runtime, precision, "size_bytes"), constrainable=True,
               column=f"size_{runtime}_{precision}",
               run_column=f"size_{runtime}_{precision}", deploy=(runtime, precision)))),
    *(Metric(f"int8_val_accuracy_{runtime}", "maximize", "fraction",
             f"{_RUNTIME_LABELS[runtime]} int8 validation accuracy",
             _deployed(runtime, "int8", "val_accuracy"), constrainable=True,
             column=f"int8_val_{runtime}_mean", run_column=f"int8_val_accuracy_{runtime}",
             deploy=(runtime, "int8")) for runtime in DEPLOY_RUNTIMES),
    # The first runtime's (in the deploy: section's order) int8 accuracy, and what int8
    # costs in accuracy there (validation accuracy minus it, a fraction).
    Metric("int8_val_accuracy", "maximize", "fraction", "int8 validation accuracy",
           _int8_accuracy, constrainable=True, column="int8_val_mean",
           run_column="int8_val_accuracy", deploy=("*", "int8")),
    Metric("int8_accuracy_drop", "minimize", "fraction", "int8 accuracy drop",
           _int8_drop, constrainable=True, column="int8_drop_mean",
           run_column="int8_accuracy_drop", deploy=("*", "int8")),
    # The qat: section (ExecuTorch XNNPACK programs run on the whole validation split): the
    # post-training int8 program's accuracy, and that of the int8 program to ship (QAT's
    # where post-training lost more than max_drop, else post-training's).
    Metric("ptq_int8_val_accuracy", "maximize", "fraction",
           "post-training int8 validation accuracy", _qat("ptq_accuracy"),
           constrainable=True, column="ptq_int8_val_mean",
           run_column="ptq_int8_val_accuracy", section="qat"),
    Metric("qat_int8_val_accuracy", "maximize", "fraction",
           "shipped int8 validation accuracy (after QAT where it ran)",
           _qat("qat_accuracy"), constrainable=True, column="qat_int8_val_mean",
           run_column="qat_int8_val_accuracy", section="qat"),
)}


def deployed(record: RunRecord, runtime: str, precision: str) -> Mapping[str, Any] | None:
    """What the record measured of its model lowered to ``runtime`` in ``precision``
    (see :func:`dwsearch.deploy.trained.deploy_trained`), None when not measured."""
    programs = (record.deploy or {}).get("programs")
    entry = programs.get(f"{runtime}/{precision}") if isinstance(programs, Mapping) else None
    return entry if isinstance(entry, Mapping) else None


def objective_metrics() -> list[str]:
    return [m.name for m in METRICS.values() if m.objective]


def constraint_metrics() -> list[str]:
    return [m.name for m in METRICS.values() if m.constrainable]


def broken_constraints(constraints: Iterable[Any], measured: Mapping[str, float | None]
                       ) -> list[str]:
    """The constraints (``dwsearch.study.config.Constraint``: ``metric`` and ``holds``) that
    ``measured`` breaks, as written; a metric not measured breaks nothing."""
    return [str(c) for c in constraints
            if measured.get(c.metric) is not None and not c.holds(measured[c.metric])]


def before_training(costs: Any, timing: Any, names: Iterable[str]) -> dict[str, float | None]:
    """The values of ``names`` known before training, from a costs profile and a latency
    timing (None where a metric is not known then or was not measured)."""
    out: dict[str, float | None] = {}
    for name in names:
        reader = METRICS[name].before_training
        out[name] = reader(costs, timing) if reader is not None else None
    return out


def after_training(record: RunRecord, names: Iterable[str]) -> dict[str, float | None]:
    """The values of ``names`` that a finished run measured (None where not measured)."""
    return {name: METRICS[name].read(record) for name in names}
