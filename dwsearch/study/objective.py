"""A study's objective, apart from the storage: a configuration and its repeat become a spec
and a recipe (:func:`prepare`); :func:`dwsearch.run.train_spec` trains it (:func:`train`);
the record becomes objective values (:func:`values`), and the costs known before training a
constraint verdict (:func:`constraint_check`).

Pure: no Optuna, no storage, no heartbeats. The worker (:mod:`dwsearch.study.worker`) claims
a slot, calls these, and tells the storage what came out. Metrics are read through the one
table, :data:`dwsearch.metrics.METRICS`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dwsearch.data.config import DataConfig
from dwsearch.errors import StudyError
from dwsearch.metrics import METRICS, after_training, before_training, broken_constraints
from dwsearch.records import RunRecord
from dwsearch.spec import ModelSpec
from dwsearch.study.config import StudyConfig
from dwsearch.study.space import Space

__all__ = ["Infeasible", "Run", "after_training_check", "constraint_check", "prepare",
           "run_key", "train", "values"]


class Infeasible(Exception):
    """A configuration over a constraint, found before training (its message says which)."""


@dataclass(frozen=True)
class Run:
    """One training run of a study: what to train, how, on what, with which seed."""

    spec: ModelSpec
    train: Any  # dwsearch.train.TrainConfig
    data: DataConfig
    seed: int
    key: str  # equal keys: equal runs (architecture, recipe, data, seed, device kind)


def run_key(spec_hash: str, train: Any, data: DataConfig, test: bool, device: str) -> str:
    """What makes two runs the same run: the canonical spec hash, the recipe (without what
    only changes speed), the data configuration, whether the test set is evaluated and the
    kind of device (a CUDA run and a CPU run of one recipe differ in their numbers)."""
    recipe = asdict(train)
    for runtime in ("threads", "compile", "channels_last"):
        recipe.pop(runtime)  # how fast, not what is trained
    recipe["device"] = device.split(":")[0]
    data_fields = asdict(data)
    data_fields.pop("download")
    payload = {"spec": spec_hash, "train": recipe, "data": data_fields, "test": test}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def prepare(study: StudyConfig, space: Space, config: Mapping[str, Any], *, seed: int,
            device: str, threads: int | None, data: DataConfig, device_kind: str) -> Run:
    """The spec, recipe and run key of ``config`` (dimension -> value) trained with ``seed``
    on ``device``. A configuration that changes the model drops the base's name (it is
    another network)."""
    spec, train_changes = space.apply(config)
    if set(config) - {"model"}:
        spec = type(spec)(spec.input_shape, spec.num_classes, spec.layers, None)
    recipe = study.train_config(**train_changes, seed=seed, device=device, threads=threads)
    return Run(spec, recipe, data, seed,
               run_key(spec.hash(), recipe, data, study.model.test, device_kind))


def constraint_check(constraints: Sequence[Any], known: dict[str, Any]
                     ) -> Callable[[Any, Any], None]:
    """The check :func:`dwsearch.run.train_spec` calls with the costs and latency it knows
    before training: raises :class:`Infeasible` naming the broken constraints. It records
    when it ran (``known["at"]``, monotonic seconds) and the MACs (``known["macs"]``) for
    the worker's overhead accounting and the cost-aware pruner."""
    names = list(dict.fromkeys(c.metric for c in constraints))

    def check(costs: Any, timing: Any) -> None:
        known.update(at=time.monotonic(), macs=costs.macs)
        measured = before_training(costs, timing, names)
        broken = broken_constraints(constraints, measured)
        if broken:
            shown = ", ".join(f"{m} {measured[m]:,.4g}" for m in names
                              if measured[m] is not None)
            raise Infeasible(f"over the constraints {', '.join(broken)} ({shown})")

    return check


def train(run: Run, splits: Any, *, test: bool, callbacks: Iterable[Callable[[Any], None]],
          latency: bool, check: Callable[[Any, Any], None] | None,
          keep: Path | None, extra: Mapping[str, Any],
          deploy: Any = None) -> RunRecord:
    """Train ``run`` on ``splits`` (loaded once per worker); :class:`Infeasible` when the
    check refuses it before training. ``keep``: where to write the trained weights (a state
    dict, once, when the run completes). With ``deploy`` (the study's deploy: section, with
    at least one runtime) the trained model is measured where it ships (the record's
    ``deploy``); a model a runtime cannot take leaves its reason there (``error``)."""
    from dwsearch.run import train_spec

    measure = _deployer(deploy, run.seed) if deploy is not None and deploy.runtimes else None

    def after(model: Any, trained: Any) -> Mapping[str, Any] | None:
        if keep is not None:
            _keep_weights(model, keep)
        return measure(model, trained) if measure is not None else None

    return train_spec(run.spec, splits, run.train, test=test, callbacks=list(callbacks),
                      progress=False, latency=latency, data_config=run.data, extra=extra,
                      check=check, deploy=after)


def _keep_weights(model: Any, path: Path) -> None:
    """The trained weights, as a state dict on the CPU (read by dwsearch export), written
    once and whole. (Per-epoch checkpoints would write the optimizer's state too, every
    epoch: for seed_cnn 144 MB each.)"""
    import torch

    from dwsearch.files import atomic_file
    from dwsearch.train.checkpoint import unwrap

    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as fh:
        torch.save(state, fh)


def _deployer(section: Any, seed: int) -> Callable[[Any, Any], Mapping[str, Any]]:
    def measure(model: Any, splits: Any) -> Mapping[str, Any]:
        from dwsearch.deploy.trained import deploy_trained
        from dwsearch.errors import DeployError

        try:
            return deploy_trained(
                model, splits, runtimes=section.runtimes, precisions=section.precisions,
                threads=section.threads, batch_size=section.batch_size,
                calibration_images=section.calibration_images,
                check_images=section.check_images, warmup=section.warmup,
                blocks=section.blocks, calls_per_block=section.calls_per_block, seed=seed)
        except DeployError as err:  # this model cannot ship there: the trial says why
            return {"runtimes": list(section.runtimes), "error": str(err)}

    return measure


def after_training_check(constraints: Sequence[Any], record: RunRecord) -> str | None:
    """The constraints on metrics known only after training (int8 accuracy, deployed
    latency) that a finished run breaks, in words; None when it breaks none."""
    late = [c for c in constraints if METRICS[c.metric].before_training is None]
    if not late:
        return None
    measured = after_training(record, [c.metric for c in late])
    broken = broken_constraints(late, measured)
    if not broken:
        return None
    shown = ", ".join(f"{m} {v:,.4g}" for m, v in measured.items() if v is not None)
    return f"over the constraints {', '.join(broken)} ({shown}), measured after training"


def values(objectives: Sequence[Any], record: RunRecord) -> list[float]:
    """The objective values of a finished run, in the study's objective order."""
    out = []
    for objective in objectives:
        value = METRICS[objective.metric].read(record)
        if value is None:
            raise StudyError(f"objective {objective} was not measured (no validation split, "
                             f"latency off, or no deploy: runtime for it)")
        out.append(float(value))
    return out
