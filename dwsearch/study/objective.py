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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dwsearch.data.config import DataConfig
from dwsearch.errors import StudyError
from dwsearch.metrics import METRICS, after_training, before_training, broken_constraints
from dwsearch.records import RunRecord
from dwsearch.spec import ModelSpec
from dwsearch.study.compression import Compression, TrialCompression, for_trial, train_changes
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
    # Distillation, pruning, QAT this run gets (dwsearch.study.compression); None: none.
    compression: TrialCompression | None = None


def run_key(spec_hash: str, train: Any, data: DataConfig, test: bool, device: str,
            compression: Mapping[str, Any] | None = None) -> str:
    """What makes two runs the same run: the canonical spec hash, the recipe (without what
    only changes speed), the data configuration, whether the test set is evaluated, the
    kind of device (a CUDA run and a CPU run of one recipe differ in their numbers) and how
    it is compressed (the teacher's spec hash and weights checksum, the pruning, QAT)."""
    recipe = asdict(train)
    for runtime in ("threads", "compile", "channels_last"):
        recipe.pop(runtime)  # how fast, not what is trained
    recipe["device"] = device.split(":")[0]
    data_fields = asdict(data)
    data_fields.pop("download")
    payload = {"spec": spec_hash, "train": recipe, "data": data_fields, "test": test}
    if compression:  # absent for uncompressed runs: their keys are what they always were
        payload["compression"] = dict(compression)
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def prepare(study: StudyConfig, space: Space, config: Mapping[str, Any], *, seed: int,
            device: str, threads: int | None, data: DataConfig, device_kind: str,
            compression: Compression | None = None) -> Run:
    """The spec, recipe and run key of ``config`` (dimension -> value) trained with ``seed``
    on ``device``, and what of the study's ``compression`` (resolved once per process) it
    gets. A configuration that changes the model drops the base's name (it is another
    network)."""
    spec, changes = space.apply(config)
    if set(config) - {"model"}:
        spec = type(spec)(spec.input_shape, spec.num_classes, spec.layers, None)
    recipe = study.train_config(**train_changes(changes), seed=seed, device=device,
                                threads=threads)
    compressed = for_trial(compression, config, changes)
    if compressed is not None and compressed.prune is not None and (
            compressed.prune_from == "base"):
        compressed = replace(compressed, base_train=study.train_config(
            seed=seed, device=device, threads=threads))
    return Run(spec, recipe, data, seed,
               run_key(spec.hash(), recipe, data, study.model.test, device_kind,
                       compressed.key if compressed is not None else None), compressed)


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
          deploy: Any = None, sources: Path | None = None) -> RunRecord:
    """Train ``run`` on ``splits`` (loaded once per worker); :class:`Infeasible` when the
    check refuses it before training. ``keep``: where to write the trained weights (a state
    dict, once, when the run completes). With ``deploy`` (the study's deploy: section, with
    at least one runtime) the trained model is measured where it ships (the record's
    ``deploy``); a model a runtime cannot take leaves its reason there (``error``)."""
    from dwsearch.run import train_spec

    measure = _deployer(deploy, run.seed) if deploy is not None and deploy.runtimes else None
    compressed = run.compression
    qat: dict[str, Any] = {}

    def after(model: Any, trained: Any) -> Mapping[str, Any] | None:
        if keep is not None:
            _keep_weights(model, keep)
        measured = measure(model, trained) if measure is not None else None
        if compressed is not None and compressed.qat is not None:
            qat.update(_quantization_aware(model, trained, run, compressed.qat, deploy))
        return measured

    distill = compressed.distill if compressed is not None else None
    if compressed is None or compressed.prune is None:
        record = train_spec(run.spec, splits, run.train, test=test, callbacks=list(callbacks),
                            progress=False, latency=latency, data_config=run.data,
                            extra=extra, check=check, deploy=after, distill=distill)
    else:
        from dwsearch.compress.prune import prune_trained

        source = _source(run, compressed, splits, callbacks, sources)
        if isinstance(source, RunRecord):
            return source  # the source's training did not complete: its record says why
        model, origin, source_seconds = source
        pruned, info = prune_trained(model, origin, compressed.prune, splits, run.train)
        info["source_train_seconds"] = source_seconds
        recipe = replace(run.train, epochs=compressed.prune.finetune_epochs)
        record = train_spec(pruned.spec, splits, recipe, test=test,
                            callbacks=list(callbacks) if compressed.prune_from == "base" else [],
                            progress=False, latency=latency, data_config=run.data,
                            extra=extra, check=check, deploy=after, distill=distill,
                            weights=pruned.model.state_dict(), compression={"prune": info})
    if qat:
        record = replace(record, compression={**(record.compression or {}), "qat": qat})
    return record


def _source(run: Run, compressed: TrialCompression, splits: Any,
            callbacks: Iterable[Callable[[Any], None]], sources: Path | None
            ) -> tuple[Any, dict[str, Any], float] | RunRecord:
    """The trained model a trial prunes: its configuration trained with the recipe (from
    trial), or the study's base trained with the recipe and the trial's seed, kept in
    ``sources`` and reused by the next trials of that seed (from base). Returns the model
    (CPU, eval mode), its identity and its training seconds (0 where reused); or the
    source's record where its training did not complete."""
    from dwsearch.builder import build_model
    from dwsearch.compress.distill import weights_checksum
    from dwsearch.run import train_spec
    from dwsearch.train.checkpoint import load_weights, read_weights

    from_base = compressed.prune_from == "base"
    spec = compressed.base if from_base and compressed.base is not None else run.spec
    recipe = compressed.base_train if from_base and compressed.base_train else run.train
    cached = None
    if from_base and sources is not None:
        key = run_key(spec.hash(), recipe, run.data, False, str(recipe.device),
                      {"distill": dict(compressed.key.get("distill") or {})})
        cached = sources / f"source-{key}.pt"
    seconds = 0.0
    if cached is not None and cached.is_file():
        model = build_model(spec)
        load_weights(model, read_weights(cached), f"{cached}: the weights do not fit the base")
    else:
        trained: dict[str, Any] = {}

        def keep(model: Any, splits: Any) -> None:
            trained["model"] = model
            if cached is not None:
                _keep_weights(model, cached)

        record = train_spec(spec, splits, recipe, test=False, progress=False, latency=False,
                            data_config=run.data, distill=compressed.distill,
                            callbacks=[] if from_base else list(callbacks), deploy=keep)
        if record.status != "completed":
            return record
        model, seconds = trained["model"], record.train_seconds
    model = model.cpu().eval()
    origin = {"spec_hash": spec.hash(), "weights": weights_checksum(model), "name": spec.name,
              "file": str(cached) if cached is not None else None,
              "source": compressed.prune_from}
    return model, origin, seconds


def _quantization_aware(model: Any, splits: Any, run: Run, section: Any, deploy: Any
                        ) -> dict[str, Any]:
    """Post-training int8 of the trained model and, where it loses more than the section's
    max_drop, QAT (dwsearch.compress.qat); plain data for the record's compression."""
    import copy

    from dwsearch.compress.config import QatConfig
    from dwsearch.compress.qat import quantization_aware

    config = QatConfig(section.max_drop, section.epochs, section.calibration_images,
                       section.force)
    lr = section.lr if section.lr is not None else run.train.lr / 10
    threads = deploy.threads if deploy is not None else 1
    result = quantization_aware(copy.deepcopy(model).cpu().eval(), splits,
                                replace(run.train, lr=lr), config, threads=threads,
                                progress=False)
    return {**result.record(), "lr": lr}


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
