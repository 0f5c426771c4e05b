"""A study's compression levers (``train.distill``, ``prune:``, ``qat:``), resolved once per
process and applied per trial.

:func:`resolve` turns the study file's sections into what training needs: the teacher's file
and spec (a trial of another study is looked up in its storage), its identity (spec hash and
weights checksum, which go into every distilled run's reuse key), and a pruning target named
by a model (``{macs: seed_dwsep}``) counted. :func:`check` tries what can fail before anything
trains: the teacher against every model the space can build, the target by pruning the
untrained models, the runtimes QAT lowers to. :func:`for_trial` says what one configuration
gets. The training itself is :func:`dwsearch.study.objective.train`'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dwsearch.errors import DwsearchError, StudyError
from dwsearch.spec import ModelSpec
from dwsearch.study.config import STUDY_TRAIN_FIELDS, StudyConfig, prune_target
from dwsearch.study.space import DISTILL_FIELDS, Space

__all__ = ["Compression", "TrialCompression", "check", "for_trial", "resolve"]

# Untrained models pruned by check() to try a target before anything trains; a grid of more
# distinct prunable models is checked on its first few (the rest fail their trial if need be).
CHECKED_MODELS = 8


@dataclass(frozen=True)
class Compression:
    """The study's levers, resolved: what every trial may get."""

    distill: Any = None  # dwsearch.compress.DistillConfig (teacher file and spec), or None
    teacher: Mapping[str, Any] | None = None  # its identity: spec hash, weights checksum, name
    prune: Any = None  # dwsearch.compress.PruneConfig with a numeric target, or None
    prune_from: str = "trial"
    prune_when: Mapping[str, Any] | None = None
    base: ModelSpec | None = None  # prune from base: the model pruned in every trial
    qat: Any = None  # dwsearch.study.config.QatSection, or None


@dataclass(frozen=True)
class TrialCompression:
    """What one configuration gets: a distillation (None: alpha 0, or none in the study), a
    pruning (None: not pruned), QAT; and the payload of the run's reuse key."""

    distill: Any
    prune: Any
    prune_from: str
    base: ModelSpec | None
    qat: Any
    key: Mapping[str, Any]
    # prune from base: the recipe the base trains with (the study's, without the space's
    # changes, which apply to the fine-tuning), with the trial's seed and device.
    base_train: Any = None


def _where(study: StudyConfig, path: str) -> str:
    return f"{study.source}: {path}"


def _teacher(study: StudyConfig, storage: str | None) -> tuple[str, Any]:
    """The teacher's file and spec (None: the checkpoint's own)."""
    section = study.distill
    assert section is not None
    teacher = section.teacher
    if isinstance(teacher, str):
        path = Path(teacher)
        if not path.is_absolute():  # relative to the study file, shown without "dir/../"
            path = Path(os.path.normpath(study.directory / path))
        spec: Any = section.teacher_spec
        if isinstance(spec, dict):
            spec = ModelSpec.from_dict(spec, _where(study, "train.distill.teacher_spec"))
        elif isinstance(spec, str) and (study.directory / spec).is_file():
            spec = str(study.directory / spec)
        return str(path), spec
    from dwsearch.study.results import find_trial, kept_weights, load_results, trial_spec

    url = teacher.storage or storage
    where = _where(study, "train.distill.teacher")
    if url is None:
        raise StudyError(f"{where}: give the storage of study {teacher.study!r} "
                         f"(train.distill.teacher.storage)")
    try:
        results = load_results(teacher.study, url)
        trial = find_trial(results, teacher.trial)
        return str(kept_weights(results, trial)), trial_spec(results, trial)
    except DwsearchError as err:
        raise StudyError(f"{where}: {err}") from err


def _counted(study: StudyConfig, metric: str, model: str) -> int:
    """The MACs or parameters of the spec ``model`` names (a built-in or a spec file)."""
    from dwsearch.builder import build_model
    from dwsearch.costs import profile
    from dwsearch.zoo import load_spec

    where = _where(study, f"prune.target.{metric}")
    candidate = study.directory / model
    try:
        spec = load_spec(str(candidate) if candidate.is_file() else model)
        costs = profile(build_model(spec))
    except DwsearchError as err:
        raise StudyError(f"{where}: {err}") from err
    return int(getattr(costs, metric))


def resolve(study: StudyConfig, space: Space, storage: str | None) -> Compression | None:
    """The study's levers resolved (teacher loaded, targets counted), or None when it has
    none. Raises one located :class:`StudyError` or :class:`CompressError` line."""
    from dwsearch.errors import CompressError

    model = study.model
    distill_section = study.distill
    if distill_section is None and model.prune is None and model.qat is None:
        return None
    distill = teacher = prune = None
    if distill_section is not None:
        from dwsearch.compress.config import DistillConfig
        from dwsearch.compress.distill import load_teacher

        path, spec = _teacher(study, storage)
        distill = DistillConfig(path, spec, distill_section.alpha, distill_section.temperature)
        try:
            teacher = load_teacher(distill).identity()
        except CompressError as err:
            raise CompressError(f"{_where(study, 'train.distill.')}{err}") from err
    if model.prune is not None:
        from dwsearch.compress.config import PruneConfig, PruneTarget

        metric, value, named = prune_target(model.prune, _where(study, "prune.target"))
        if value is None:
            assert named is not None
            value = _counted(study, metric, named)
        section = model.prune
        prune = PruneConfig(PruneTarget.parse({metric: float(value)}), section.importance,
                            section.finetune_epochs, section.taylor_batches,
                            section.taylor_batch_size)
    return Compression(distill, teacher, prune,
                       model.prune.from_ if model.prune is not None else "trial",
                       dict(model.prune.when) if model.prune is not None else None,
                       space.base if model.prune is not None else None, model.qat)


def _selected(when: Mapping[str, Any] | None, config: Mapping[str, Any]) -> bool:
    for key, wanted in (when or {}).items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if config.get(key) not in allowed:
            return False
    return True


def for_trial(compression: Compression | None, config: Mapping[str, Any],
              train_changes: Mapping[str, Any]) -> TrialCompression | None:
    """What the configuration ``config`` gets (``train_changes``: its train.distill.* values
    among the space's training changes); None: nothing."""
    if compression is None:
        return None
    distill = compression.distill
    if distill is not None:
        changes = {k.split(".")[1]: v for k, v in train_changes.items() if k in DISTILL_FIELDS}
        distill = replace(distill, **changes) if changes else distill
        if distill.alpha == 0:  # plain training: the undistilled run, no teacher loaded
            distill = None
    prune = compression.prune
    if prune is not None and not _selected(compression.prune_when, config):
        prune = None
    key: dict[str, Any] = {}
    if distill is not None:
        key["distill"] = {**dict(compression.teacher or {}), "alpha": distill.alpha,
                          "temperature": distill.temperature}
        key["distill"].pop("teacher", None)  # the file's path: its checksum says what it is
    if prune is not None:
        key["prune"] = {"target": [prune.target.metric, prune.target.value],
                        "importance": prune.importance,
                        "finetune_epochs": prune.finetune_epochs,
                        "taylor": [prune.taylor_batches, prune.taylor_batch_size]
                        if prune.importance == "taylor" else None,
                        "from": compression.prune_from,
                        "base": compression.base.hash()
                        if compression.prune_from == "base" and compression.base else None}
    if compression.qat is not None:
        key["qat"] = compression.qat.model_dump(mode="json")
    if not key:
        return None
    return TrialCompression(distill, prune, compression.prune_from, compression.base,
                            compression.qat, key)


def train_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration's recipe changes without the study's own fields (train.distill.*)."""
    return {k: v for k, v in changes.items() if k.split(".")[0] not in STUDY_TRAIN_FIELDS}


def check(study: StudyConfig, space: Space, compression: Compression | None,
          configs: list[Mapping[str, Any]]) -> None:
    """Everything that can be tried before training: the teacher against each model the
    configurations build (input shape, classes), the pruning target on the untrained
    models (at most :data:`CHECKED_MODELS` of them), and that QAT's runtime is installed.
    One located line on the first problem."""
    if compression is None:
        return
    from dwsearch.errors import CompressError

    specs: dict[str, tuple[ModelSpec, Mapping[str, Any]]] = {}
    for config in configs:
        spec, _ = space.apply(config)
        specs.setdefault(spec.hash(), (spec, config))
    if compression.distill is not None:
        from dwsearch.compress.distill import check_teacher, load_teacher

        teacher = load_teacher(compression.distill)
        for spec, _config in specs.values():
            try:
                check_teacher(teacher, spec)
            except CompressError as err:
                raise CompressError(f"{_where(study, 'train.distill.')}{err}") from err
    if compression.prune is not None:
        from dwsearch.builder import build_model
        from dwsearch.compress.prune import prune_model

        if compression.prune_from == "base":
            assert compression.base is not None
            pruned: list[tuple[ModelSpec, Mapping[str, Any]]] = [(compression.base, {})]
        else:
            pruned = [(spec, config) for spec, config in specs.values()
                      if _selected(compression.prune_when, config)]
            if not pruned and configs:
                raise StudyError(f"{_where(study, 'prune.when')}: selects none of the study's "
                                 f"configurations ({dict(compression.prune_when or {})})")
        for spec, config in pruned[:CHECKED_MODELS]:
            try:
                prune_model(build_model(spec), compression.prune.target,
                            importance="magnitude")
            except CompressError as err:
                label = " ".join(f"{k}={v}" for k, v in config.items()) or (
                    spec.name or "the base")
                raise CompressError(f"{study.source}: prune: {label}: {err}") from err
    if compression.qat is not None:
        from dwsearch.compress.qat import RUNTIME
        from dwsearch.deploy._runtimes import get_runtime

        get_runtime(RUNTIME).require()
