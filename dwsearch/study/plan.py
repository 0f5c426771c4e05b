"""Planning a study before anything trains: validate every configuration, create or resume the
Optuna study, and lay out its trials as *slots*.

A slot is a trial waiting in the storage (Optuna's WAITING state). Every trial a study will run
is a slot laid out here, so workers on any number of machines only ever pop slots, atomically,
and the study ends with exactly the planned number of trials:

* grid and ablation: one slot per configuration and repeat, its configuration fixed;
* tpe, nsga2, random: ``n_trials / repeats`` empty slots; the worker that samples one adds the
  configuration's other repeats as fixed slots.

A trial whose worker dies (no heartbeat) or is interrupted gets a fresh slot with the same
configuration (see :mod:`dwsearch.study.worker`); a sampled configuration that breaks a
constraint or cannot be built gets a fresh empty slot, a bounded number of times.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, overload

from dwsearch.arguments import checked, describe_found
from dwsearch.errors import DwsearchError, StudyError
from dwsearch.metrics import before_training, broken_constraints
from dwsearch.records import TrialInfo
from dwsearch.spec import ModelSpec
from dwsearch.study.config import (
    MAX_TRIALS,
    SECOND_MODEL_KEY,
    StudyConfig,
    config_defaults,
    relocating,
)
from dwsearch.study.space import Space, config_hash
from dwsearch.study.storage import (
    INFO_KEY,
    STUDY_KEY,
    describe_url,
    open_storage,
    resolve_storage_url,
)

__all__ = [
    "IDENTITY_KEYS",
    "Plan",
    "SlotPlan",
    "StudyHandle",
    "check_data",
    "derive_seed",
    "lay_out_next",
    "make_plan",
    "open_study",
]

# The parts of a study file that define what it measures; a study cannot change them once it
# has begun (n_trials, timeout, storage, description, latency and keep_weights may change).
IDENTITY_KEYS = ("base", "data", "train", "space", "objectives", "constraints", "sampler",
                 "pruner", "repeats", "seed", "seeds", "test")
PLANNED_KEY = "dwsearch:planned"  # study system attr: slots laid out so far
REPLACED_KEY = "dwsearch:replaced"  # study system attr: empty slots added for bad samples
# How long a worker that finds a study being created waits for its slots to be laid out.
LAYOUT_WAIT_SECONDS = 120.0
# Slots are laid out this many at a time (each is a storage write of ~20 ms on SQLite).
LAYOUT_BATCH = 512


def derive_seed(study_seed: int, repeat: int, trial_number: int | None = None) -> int:
    """A training seed from the study seed and the repeat (and the trial number for
    ``seeds: per_trial``): 31 bits, stable across machines and Python versions."""
    key = f"{study_seed}:{repeat}" if trial_number is None else (
        f"{study_seed}:{trial_number}:{repeat}")
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little") >> 1


@dataclass(frozen=True)
class SlotPlan:
    """One trial to lay out: its configuration (None: a sampler chooses) and attributes."""

    config: Mapping[str, Any] | None
    repeat: int
    role: str  # "base", "ablation", "grid" or "sample"
    factor: str | None = None


class _EmptySlots(Sequence[SlotPlan]):
    """``n`` empty sampler slots, without ``n`` objects."""

    _SLOT = SlotPlan(None, 0, "sample")

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> SlotPlan: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SlotPlan]: ...

    def __getitem__(self, index: int | slice) -> SlotPlan | Sequence[SlotPlan]:
        if isinstance(index, slice):
            return _EmptySlots(len(range(*index.indices(self._n))))
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return self._SLOT

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _EmptySlots) and other._n == self._n

    def __hash__(self) -> int:
        return hash(("_EmptySlots", self._n))


@dataclass(frozen=True)
class Plan:
    """What a study will run, known before anything trains."""

    config: StudyConfig
    space: Space
    slots: Sequence[SlotPlan]  # a tuple; for samplers n empty slots, held as one
    skipped: tuple[tuple[Mapping[str, Any], str], ...]  # (configuration, why) left out
    configurations: int  # distinct configurations (sampled studies: n_trials / repeats)

    @property
    def trials(self) -> int:
        """Trials the study will run: planned slots plus the other repeats of sampled
        configurations (0 for an open-ended study that runs until its timeout)."""
        if self.config.sampler.name in ("grid", "ablation"):
            return len(self.slots)
        return len(self.slots) * self.config.model.repeats

    @property
    def open_ended(self) -> bool:
        return not self.slots


def _check_configuration(space: Space, config: Mapping[str, Any], where: str) -> ModelSpec:
    """Build a configuration's model once (shape inference): a bad combination is found now,
    not after hours of training."""
    from dwsearch.builder import build_model

    spec, _train = space.apply(config)
    try:
        build_model(spec)
    except DwsearchError as err:
        shown = json.dumps(dict(config)) if config else "the base"
        raise StudyError(f"{where}: configuration {shown}: {err}") from err
    return spec


def _constraint_failures(plan_config: StudyConfig, spec: ModelSpec) -> str | None:
    """The constraints ``spec`` breaks on the costs known before training (latency, which
    needs a timing, is checked when the trial runs)."""
    if not plan_config.constraints:
        return None
    from dwsearch.costs import profile

    names = [c.metric for c in plan_config.constraints]
    broken = broken_constraints(plan_config.constraints,
                                before_training(profile(spec), None, names))
    return ", ".join(broken) or None


@checked(StudyError)
@relocating
def make_plan(config: StudyConfig, n_trials: int | None = None) -> Plan:
    """Validate the space against the base model and lay out the slots. Enumerated studies
    build (and, with constraints, profile) every configuration here, so a bad one is a
    located error before any training; configurations over a constraint are left out and
    listed. ``n_trials`` overrides the file's."""
    if n_trials is not None and not 1 <= n_trials <= MAX_TRIALS:
        raise StudyError(f"n_trials: expected an integer in 1..{MAX_TRIALS:,} (a study runs at "
                         f"most {MAX_TRIALS:,} trials), found {describe_found(n_trials)}")
    space = Space(config)
    where = f"{config.source}: space"
    _check_configuration(space, {}, f"{config.source}: base")
    _check_claims(config, space)
    for dim in space.dimensions:  # each value on its own, so a typo names its entry
        for value in (dim.values() if dim.range is None else ()):
            if dim.per_layer:
                probe = {f"layers[{i}].{dim.arg}": value for i in dim.layers}
            else:
                probe = {"model" if dim.kind == "model" else dim.key: value}
            _check_configuration(space, probe, f"{where}.{dim.key}")
    repeats = config.model.repeats
    limit = n_trials if n_trials is not None else config.model.n_trials
    name = config.sampler.name
    if n_trials is not None and name not in ("grid", "ablation") and n_trials % repeats:
        raise StudyError(f"--n-trials {n_trials}: a sampled study trains each configuration "
                         f"{repeats} times (repeats), so n_trials must be a multiple of "
                         f"{repeats}; found {n_trials}")
    slots: Sequence[SlotPlan] = ()
    skipped: list[tuple[Mapping[str, Any], str]] = []
    if name in ("grid", "ablation"):
        enumerated: list[SlotPlan] = []
        entries: list[tuple[str | None, dict[str, Any]]] = (
            [(None, c) for c in space.grid()] if name == "grid" else space.ablation())
        if len(entries) * repeats > MAX_TRIALS:
            raise StudyError(f"{config.source}: repeats: {len(entries):,} configurations x "
                             f"{repeats} repeats = {len(entries) * repeats:,} trials; a study "
                             f"runs at most {MAX_TRIALS:,}")
        kept = 0
        for factor, conf in entries:
            spec = _check_configuration(space, conf, where)
            broken = _constraint_failures(config, spec)
            if broken:
                skipped.append((conf, f"over the constraints: {broken}"))
                continue
            kept += 1
            role = "grid" if name == "grid" else ("base" if factor is None else "ablation")
            enumerated.extend(SlotPlan(conf, r, role, factor) for r in range(repeats))
        slots = tuple(enumerated[:limit] if limit is not None else enumerated)
        configurations = kept
    elif limit is None:  # a timeout alone: open-ended, workers add trials until it passes
        return Plan(config, space, (), tuple(skipped), 0)
    else:
        slots = _EmptySlots(limit // repeats)  # a million slots need no million objects
        configurations = limit // repeats
    if not slots:
        raise StudyError(f"{config.source}: nothing to run: every configuration is over the "
                         f"constraints ({len(skipped)} left out)")
    return Plan(config, space, slots, tuple(skipped), configurations)


def _check_claims(config: StudyConfig, space: Space) -> None:
    """Every model a claim names is one the study trains (the base or a ``model:`` choice,
    by its spec name, as the report finds it): a misspelt name would only ever be "not
    measured"."""
    if config.claims is None:
        return
    names = list(dict.fromkeys(n for n in (space.base.name, *(m.name for m in
                                                                space.models.values())) if n))
    for claim in config.claims.items:
        rule = claim.rule
        keys = ("of", SECOND_MODEL_KEY[rule.kind] or "")
        for key, name in zip(keys, rule.models, strict=False):
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                models = (f"its models: {', '.join(names)}" if names else
                          "it names none (the base has no name and there is no model: choice)")
                raise config.error(f"{claim.where}.{rule.kind}.{key}",
                                   f"{name!r} is not a model of this study; {hint}{models}")


def _identity(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: data.get(k) for k in IDENTITY_KEYS}


_ABSENT = object()


def _first_difference(old: Any, new: Any, path: str, defaults: Any = None) -> str | None:
    """The first key path where a stored study (``old``) and the file (``new``) differ. A key
    the stored study lacks (it was begun by an older dwsearch, before the key existed) counts
    as equal when the file holds that key's default: a new option whose default keeps the old
    behaviour must not lock users out of their studies."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        known = defaults if isinstance(defaults, Mapping) else {}
        for key in sorted(set(old) | set(new), key=str):
            default = known.get(key, _ABSENT)
            if key not in old and default is not _ABSENT and new.get(key) == default:
                continue
            found = _first_difference(old.get(key), new.get(key), f"{path}.{key}",
                                      None if default is _ABSENT else default)
            if found:
                return found
        return None
    return None if old == new else path


def resolved_models(plan: Plan) -> dict[str, Any]:
    """What each model of the study resolved to (the base and every ``model:`` choice; a
    choice may be a spec file): name -> {hash, spec}. A resumed study compares these, so an
    edited spec file is not averaged with the network it replaced."""
    models = {"(base)": plan.space.base, **plan.space.models}
    return {name: {"hash": spec.hash(), "spec": spec.to_dict()} for name, spec in models.items()}


def _changed_model(stored: Any, plan: Plan) -> str | None:
    """The first model whose file now resolves to another network than when the study
    began, in words; None when all are the same (or the study predates this record)."""
    if not isinstance(stored, Mapping):
        return None
    for name, now in resolved_models(plan).items():
        then = stored.get(name)
        if isinstance(then, Mapping) and then.get("hash") != now["hash"]:
            what = "the base" if name == "(base)" else f"model choice {name!r}"
            return (f"{what} resolves to another network than when the study began (spec hash "
                    f"{then.get('hash')} then, {now['hash']} now: "
                    f"{_layers_summary(then.get('spec'))} then, "
                    f"{_layers_summary(now['spec'])} now)")
    return None


def _layers_summary(spec: Any) -> str:
    layers = spec.get("layers") if isinstance(spec, Mapping) else None
    return f"{len(layers)} layers" if isinstance(layers, list) else "unknown"


DATA_KEY = "dwsearch:data"  # study system attr: {"fingerprint", "source"} of the data trained on


def check_data(handle: StudyHandle, fingerprint: str, source: str) -> None:
    """The data a worker loaded must be the data the study began with: other images would
    make its trials incomparable. The first worker of a study records its data."""
    stored = handle.system_attr(DATA_KEY)
    if not isinstance(stored, Mapping) or "fingerprint" not in stored:
        handle.set_system_attr(DATA_KEY, {"fingerprint": fingerprint, "source": source})
        return
    if stored["fingerprint"] != fingerprint:
        raise StudyError(
            f"data: {source} holds other images than the study {handle.study.study_name!r} "
            f"began with ({stored.get('source', '?')}; content checksums "
            f"{stored['fingerprint'][:12]} then, {fingerprint[:12]} now); a study cannot "
            f"change its data: pass the same --data-dir, or give the study a new name")


def study_meta(plan: Plan) -> dict[str, Any]:
    """What a study stores about itself (study user attribute ``dwsearch``)."""
    from dwsearch.runtime import versions

    base = plan.space.base
    config = plan.config.to_dict()
    config["base"] = base.to_dict()  # resolved: the study stays reproducible if files change
    if config.get("storage"):
        config["storage"] = describe_url(str(config["storage"]))  # never a password
    baselines = [{"name": base.name, "hash": base.hash()}]
    baselines += [{"name": m.name, "hash": m.hash()} for m in plan.space.models.values()
                  if m.hash() != base.hash()]
    return {
        "format": 1,
        "name": plan.config.name,
        "source": plan.config.source,
        "config": config,
        "objectives": [str(o) for o in plan.config.objectives],
        "base": {"name": base.name, "hash": base.hash(), "spec": base.to_dict()},
        "baselines": baselines,
        "models": resolved_models(plan),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }


@dataclass(frozen=True)
class StudyHandle:
    """An open Optuna study with the storage handle and id workers use directly."""

    study: Any  # optuna.Study
    storage: Any  # optuna BaseStorage
    study_id: int
    url: str  # password hidden: for messages
    created: bool  # this call created the study
    raw_url: str = ""  # with the password: for worker processes, never printed

    def system_attr(self, key: str, default: Any = None) -> Any:
        return self.storage.get_study_system_attrs(self.study_id).get(key, default)

    def set_system_attr(self, key: str, value: Any) -> None:
        self.storage.set_study_system_attr(self.study_id, key, value)

    def trials(self, states: tuple[Any, ...] | None = None) -> list[Any]:
        return list(self.storage.get_all_trials(self.study_id, deepcopy=False, states=states))


def make_sampler(config: StudyConfig, worker: str) -> Any:
    """The Optuna sampler of a study, seeded per worker: workers of one study must not all
    propose the same configuration (Optuna reseeds samplers itself only within one process,
    optuna#4412), and training seeds are dwsearch's own, so this costs no reproducibility of
    any run."""
    import optuna

    seed = derive_seed(config.model.seed, 0, int(hashlib.sha256(worker.encode()).hexdigest()[:8],
                                                 16))
    section = config.sampler
    if section.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=section.multivariate,
                                          n_startup_trials=section.n_startup_trials,
                                          constant_liar=True)
    if section.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=section.population_size)
    # random; grid and ablation fix every parameter in advance, so the sampler is not asked
    return optuna.samplers.RandomSampler(seed=seed)


def _stored_meta(study: Any, wait: float = 10.0) -> Any:
    """The study's dwsearch description. A worker that loses the race to create the study can
    load it in the instant between its creation and the winner storing this: wait for it."""
    deadline = time.monotonic() + wait
    while True:
        stored = study.user_attrs.get(STUDY_KEY)
        if stored is not None or time.monotonic() > deadline:
            return stored
        time.sleep(0.1)


def open_study(plan: Plan, storage: str | None, *, create: bool = True,
               worker: str = "main") -> StudyHandle:
    """Create the Optuna study (laying out its slots) or load it to resume. A study whose
    file has changed in what it measures is refused, naming the first key that differs."""
    import optuna

    from dwsearch.study.pruning import make_optuna_pruner

    url = resolve_storage_url(storage or plan.config.model.storage, plan.config.name)
    backend = open_storage(url, create=create)
    sampler = make_sampler(plan.config, worker)
    pruner = make_optuna_pruner(plan.config) if not plan.config.multi_objective else None
    directions: list[Any] = [o.direction for o in plan.config.objectives]
    meta = study_meta(plan)
    try:
        study = optuna.create_study(study_name=plan.config.name, storage=backend,
                                    directions=directions, load_if_exists=False,
                                    sampler=sampler, pruner=pruner)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=plan.config.name, storage=backend,
                                  sampler=sampler, pruner=pruner)
        created = False
    if created:
        study.set_user_attr(STUDY_KEY, meta)
        # Named objectives for Optuna's own tools (optuna-dashboard showed "Objective 0..3").
        with warnings.catch_warnings():  # "experimental since 3.2": stable in use since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in plan.config.objectives])
    else:
        stored = _stored_meta(study)
        if not isinstance(stored, Mapping) or "config" not in stored:
            raise StudyError(f"storage {describe_url(url)}: a study named {plan.config.name!r} "
                             f"exists and was not made by dwsearch; choose another name")
        diff = _first_difference(_identity(stored["config"]), _identity(meta["config"]), "",
                                 config_defaults())
        if diff:
            raise StudyError(
                f"{plan.config.source}: {diff.lstrip('.')} differs from the study "
                f"{plan.config.name!r} begun {stored.get('created', '?')} in "
                f"{describe_url(url)}; a study cannot change what it measures: give it a new "
                f"name, or use another --storage"
            )
        if [d.name.lower() for d in study.directions] != directions:
            raise StudyError(f"{plan.config.source}: objectives differ from the stored study")
        changed = _changed_model(stored.get("models"), plan)
        if changed:
            raise StudyError(
                f"{plan.config.source}: {changed}; a study cannot change what it measures: "
                f"restore the file, or give the study a new name")
    # Workers pop slots and write heartbeats through the storage object the study itself
    # uses (for RDB storages Optuna wraps the one we opened in a cache); a second handle on
    # the same database would not see the study's cached trials.
    storage_in_use = study._storage
    handle = StudyHandle(study, storage_in_use, study._study_id, describe_url(url), created,
                         url)
    _lay_out(handle, plan)
    return handle


def _planned(handle: StudyHandle) -> int:
    """Slots laid out so far. A worker that finds a study another has just created waits for
    its layout to finish; if it never does (that worker died), the slots present count."""
    deadline = time.monotonic() + LAYOUT_WAIT_SECONDS
    while True:
        planned = handle.system_attr(PLANNED_KEY)
        if planned is not None:
            return int(planned)
        if handle.created or time.monotonic() > deadline:
            slots = [TrialInfo.from_attrs(t.user_attrs.get(INFO_KEY)).slot
                     for t in handle.trials()]
            return max((s for s in slots if s is not None), default=-1) + 1
        time.sleep(1.0)


def _lay_out(handle: StudyHandle, plan: Plan) -> None:
    """Lay out the first batch of slots of a new study, or, on resume, the slots up to the
    end of the batch in progress (more when n_trials grew). Later batches are laid out by
    the workers as they go (:func:`lay_out_next`), so a study of a million trials starts
    training at once instead of after hours of bookkeeping."""
    planned = _planned(handle)
    upto = max(LAYOUT_BATCH, -(-planned // LAYOUT_BATCH) * LAYOUT_BATCH)
    lay_out_slots(handle, plan, planned, min(len(plan.slots), upto))


def lay_out_slots(handle: StudyHandle, plan: Plan, start: int, stop: int) -> None:
    """Enqueue slots ``start .. stop-1`` of the plan (WAITING trials) and record how many
    are laid out."""
    study = handle.study
    for index in range(start, stop):
        slot = plan.slots[index]
        config = dict(slot.config) if slot.config is not None else None
        info = TrialInfo(slot=index, repeat=slot.repeat, role=slot.role, factor=slot.factor,
                         config=config,
                         config_hash=config_hash(config) if config is not None else None)
        study.enqueue_trial(config or {}, user_attrs={INFO_KEY: info.to_attrs()})
    if stop > start or handle.system_attr(PLANNED_KEY) is None:
        handle.set_system_attr(PLANNED_KEY, max(start, stop))


def lay_out_next(handle: StudyHandle, plan: Plan, claimed: TrialInfo | None) -> None:
    """Lay out the next batch when a worker has just claimed the slot half-way through the
    last one. Each slot is claimed by exactly one worker, so exactly one worker lays out
    each batch, with no lock. ``claimed=None`` is a worker that found nothing left to run
    while slots remain unlaid (the worker due to lay them out died at that instant)."""
    if claimed is not None:
        slot = claimed.slot
        first_time = (claimed.retry_of is None and not claimed.replaces_a_failed_sample
                      and claimed.repeat == 0)
        if not (slot is not None and first_time and slot % LAYOUT_BATCH == LAYOUT_BATCH // 2):
            return
        start = (slot // LAYOUT_BATCH + 1) * LAYOUT_BATCH
    else:
        start = 0
    planned = _planned(handle)
    start = max(start, planned)
    stop = min(len(plan.slots), -(-(start + 1) // LAYOUT_BATCH) * LAYOUT_BATCH)
    if start < stop:
        lay_out_slots(handle, plan, start, stop)
