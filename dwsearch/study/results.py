"""The read side of a study: its trials as plain data, for reports and exports.

Reports import this module and :mod:`dwsearch.records`, never torch: a report opens in a
second. Optuna is imported here only to read the storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dwsearch.arguments import checked
from dwsearch.errors import RecordError, ReportError, SpecError, StudyError
from dwsearch.records import RunRecord, TrialInfo
from dwsearch.spec import ModelSpec
from dwsearch.study.storage import (
    ERROR_KEY,
    INFO_KEY,
    RECORD_KEY,
    STUDY_KEY,
    default_study_dir,
    describe_url,
    open_storage,
    resolve_storage_url,
)

__all__ = ["StudyResults", "StudySummary", "TrialResult", "find_trial", "kept_weights",
           "list_studies", "load_results", "storage_file", "trial_record", "trial_spec"]


@dataclass(frozen=True)
class TrialResult:
    """One Optuna trial as dwsearch stored it."""

    number: int
    state: str  # "COMPLETE", "PRUNED", "FAIL", "RUNNING" or "WAITING"
    values: tuple[float, ...] | None  # objective values, in the study's objective order
    params: Mapping[str, Any]  # Optuna's params: the choices made for this trial
    info: TrialInfo  # dwsearch's identity of the trial: slot, repeat, seed, config, status...
    record: RunRecord | None  # the run record (partial for pruned trials); None if none
    error: str | None  # one line: why it failed
    started: str | None  # ISO 8601
    finished: str | None

    @property
    def config(self) -> Mapping[str, Any]:
        """The configuration's choices (dimension -> value), as the study file names them."""
        return self.info.config if self.info.config is not None else self.params

    @property
    def superseded(self) -> bool:
        """A trial whose worker died or was interrupted, retried as another trial."""
        return self.info.superseded


@dataclass(frozen=True)
class StudyResults:
    """A study's stored configuration and trials."""

    name: str
    storage: str  # URL, password hidden
    meta: Mapping[str, Any]  # dwsearch's study attributes: format, config, source, base...
    directions: tuple[str, ...]  # "maximize" / "minimize" per objective
    trials: tuple[TrialResult, ...]

    @property
    def config(self) -> Mapping[str, Any]:
        """The study configuration as stored when the study began (defaults filled in)."""
        value = self.meta.get("config", {})
        return value if isinstance(value, Mapping) else {}

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(self.meta.get("objectives", ()))


@dataclass(frozen=True)
class StudySummary:
    name: str
    storage: str
    trials: int
    states: Mapping[str, int]
    problem: str | None = None  # why a file of the study folder could not be read


def _trial(frozen: Any) -> TrialResult:
    attrs = frozen.user_attrs
    record = None
    raw = attrs.get(RECORD_KEY)
    if raw is not None:
        try:
            record = RunRecord.from_dict(raw, where=f"trial {frozen.number}")
        except RecordError:
            raise
        except (TypeError, ValueError) as err:
            raise RecordError(f"trial {frozen.number}: unreadable record ({err})") from err
    values = tuple(float(v) for v in frozen.values) if frozen.values is not None else None
    info = TrialInfo.from_attrs(attrs.get(INFO_KEY), f"trial {frozen.number}")
    return TrialResult(
        number=frozen.number,
        state=frozen.state.name,
        values=values,
        params=dict(frozen.params),
        info=info,
        record=record,
        error=attrs.get(ERROR_KEY),
        started=frozen.datetime_start.isoformat() if frozen.datetime_start else None,
        finished=frozen.datetime_complete.isoformat() if frozen.datetime_complete else None,
    )


def _link_retries(trials: list[TrialResult]) -> tuple[TrialResult, ...]:
    """Fill in ``retried_as`` of each killed or interrupted trial from its retry's
    ``retry_of`` (Optuna freezes a finished trial, so the link is stored on the retry)."""
    retried_as = {t.info.retry_of: t.number for t in trials if t.info.retry_of is not None}
    return tuple(
        replace(t, info=t.info.replace(retried_as=retried_as[t.number]))
        if t.number in retried_as else t for t in trials)


@checked(StudyError)
def load_results(name: str, storage: str | None = None) -> StudyResults:
    """Every trial of study ``name`` in ``storage`` (default: its SQLite file)."""
    import optuna

    url = resolve_storage_url(storage, name)
    backend = open_storage(url, create=False, readonly=True)
    try:
        study = optuna.load_study(study_name=name, storage=backend)
    except KeyError as err:
        known = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        raise StudyError(f"storage {describe_url(url)}: no study named {name!r}; it holds: "
                         f"{', '.join(known) or 'none'}") from err
    meta = study.user_attrs.get(STUDY_KEY, {})
    trials = _link_retries([_trial(t) for t in study.get_trials(deepcopy=False)])
    return StudyResults(
        name=name,
        storage=describe_url(url),
        meta=meta if isinstance(meta, Mapping) else {},
        directions=tuple(d.name.lower() for d in study.directions),
        trials=trials,
    )


@checked(StudyError)
def list_studies(storage: str | None = None) -> list[StudySummary]:
    """The studies in ``storage``, or, without one, in every SQLite file of the default
    study folder (``dwsearch report`` with no argument). Nothing is written: a file of the
    folder that is not a study database (or one Optuna cannot read) is listed with its
    problem instead."""
    import optuna

    urls = [storage] if storage else [
        f"sqlite:///{p}" for p in sorted(default_study_dir().glob("*.db"))
    ]
    out = []
    for url in urls:
        try:
            backend = open_storage(resolve_storage_url(url, "_"), create=False, readonly=True)
        except StudyError as err:
            if storage:
                raise
            shown = describe_url(url)
            out.append(StudySummary(Path(url[len("sqlite:///"):]).stem, shown, 0, {},
                                    str(err).removeprefix(f"storage {shown}: ")))
            continue
        for summary in optuna.get_all_study_summaries(backend, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=backend)
            states: dict[str, int] = {}
            for t in study.get_trials(deepcopy=False):
                states[t.state.name] = states.get(t.state.name, 0) + 1
            out.append(StudySummary(summary.study_name, describe_url(url), summary.n_trials,
                                    states))
    return out


@checked(StudyError)
def study_file_name(path: str | Path) -> str | None:
    """The ``name:`` of a study file without validating the rest (for ``dwsearch report
    FILE``); None when the file has none."""
    from dwsearch.study.config import load_study_config

    return load_study_config(path).name


# -- one trial: for exports, teachers, pruning sources ----------------------------------

def find_trial(results: StudyResults, number: int) -> TrialResult:
    """Trial ``number`` of the study, or a :class:`ReportError` naming the trials there are."""
    for trial in results.trials:
        if trial.number == number:
            return trial
    numbers = [t.number for t in results.trials]
    held = f"trials {min(numbers)}..{max(numbers)}" if numbers else "no trials"
    raise ReportError(f"study {results.name!r} has no trial {number}; it holds {held}")


def trial_record(results: StudyResults, trial: TrialResult) -> Any:
    """The trial's run record, or a :class:`ReportError` saying why it has none."""
    if trial.record is None:
        status = trial.info.status or trial.state.lower()
        why = f": {trial.error}" if trial.error else ""
        raise ReportError(f"trial {trial.number} of study {results.name!r} has no run record "
                          f"(status {status}{why}); nothing to export")
    return trial.record


def trial_spec(results: StudyResults, trial: TrialResult) -> ModelSpec:
    """The trial's spec, named after the trial where its configuration changed the base."""
    record = trial_record(results, trial)
    try:
        spec = ModelSpec.from_dict(record.spec, source=f"trial {trial.number}: spec")
    except SpecError as err:
        raise ReportError(f"trial {trial.number}: the stored spec is unreadable ({err})") from err
    if spec.name is None or set(trial.config) - {"model"}:
        # A changed configuration is not its base model any more: name it after the trial.
        spec = ModelSpec(spec.input_shape, spec.num_classes, spec.layers,
                         f"{results.name}-trial{trial.number}")
    return spec


def kept_weights(results: StudyResults, trial: TrialResult) -> Path:
    """The file holding the weights trial ``trial`` kept: the path stored with it, as given
    or (relative paths) beside the storage. A :class:`ReportError` when it kept none or the
    file is gone."""
    kept = trial.info.weights
    policy = results.config.get("keep_weights", False)
    if not kept:
        why = ("it did not complete" if trial.state != "COMPLETE" else
               "the study ran with keep_weights: false" if policy is False else
               "it was run before the study kept weights")
        raise ReportError(
            f"trial {trial.number} of study {results.name!r} kept no weights ({why}); "
            f"--format spec exports its architecture")
    path = Path(str(kept)).expanduser()
    where = ""
    folder = _storage_folder(results.storage)
    if not path.is_file() and not path.is_absolute() and folder is not None:
        where = f" (looked in the current folder and in {folder}, beside the storage)"
        path = folder / path
    if not path.is_file():
        if policy == "front":
            raise ReportError(
                f"trial {trial.number}: its weights file {kept} is gone (keep_weights: front "
                f"removes the weights of configurations another dominates for good); "
                f"--format spec exports its architecture, or run with keep_weights: true")
        raise ReportError(f"trial {trial.number}: its weights file {kept} is missing{where}")
    return path


def storage_file(url: str) -> Path | None:
    """The file of a SQLite or journal file storage (None for a database server)."""
    scheme, _, rest = url.partition(":")
    if scheme.split("+")[0] not in ("sqlite", "journal") or not rest.startswith("//"):
        return None
    path = Path(rest[3:] if scheme.startswith("sqlite") else rest[2:])
    return path if str(path) not in ("", ".", ":memory:") else None


def _storage_folder(url: str) -> Path | None:
    """The folder of a SQLite or journal file storage (None for a database server)."""
    path = storage_file(url)
    return path.parent if path is not None else None
