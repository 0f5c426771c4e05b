"""A chosen trial's architecture as a spec file, and what every export shares: finding the
trial, its spec, its kept weights' file, writing a file whole.

Nothing here imports torch (the report package never does). The exports that need the model
(a checkpoint, ONNX, ExecuTorch programs, int8) live in :mod:`dwsearch.export`, beside
:func:`dwsearch.run.model_from_checkpoint`, and call these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dwsearch.errors import ReportError, SpecError, reason
from dwsearch.files import write_atomically
from dwsearch.spec import ModelSpec
from dwsearch.study.results import StudyResults, TrialResult

__all__ = ["SUFFIXES", "default_path", "export_spec", "find_trial", "kept_weights",
           "trial_record", "trial_spec", "write_file"]

# Every export format and the suffix of the file it writes.
SUFFIXES = {"spec": ".yaml", "checkpoint": ".pt", "onnx": ".onnx", "onnx-int8": ".onnx",
            "pte": ".pte", "pte-int8": ".pte"}


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


def default_path(results: StudyResults, number: int, fmt: str) -> Path:
    return Path(f"{results.name}-trial{number}{SUFFIXES[fmt]}")


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


def _prepare(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"{out}: cannot create its folder ({reason(err)})") from err
    if out.is_dir():
        raise ReportError(f"{out} is a folder; name the file to write")


def write_file(out: Path, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8) to ``out`` whole or not at all: through a temporary
    file beside it, renamed over it; its folder is made if missing."""
    _prepare(out)
    try:
        write_atomically(out, content)
    except OSError as err:
        raise ReportError(f"{out}: cannot write ({reason(err)})") from err


def _header(results: StudyResults, trial: TrialResult) -> str:
    record = trial.record
    assert record is not None
    parts = [f"status {trial.info.status or trial.state.lower()}"]
    if record.val_accuracy is not None:
        parts.append(f"validation {record.val_accuracy:.2%}")
    if record.test_accuracy is not None:
        parts.append(f"test {record.test_accuracy:.2%}")
    return (f"# Exported by dwsearch export from study {results.name}, trial {trial.number} "
            f"({', '.join(parts)}).\n# {record.params:,} params, {record.macs:,} MACs "
            f"(batch norm {record.bn}); spec hash {record.spec_hash}; seed {record.seed}.\n")


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


def _storage_folder(url: str) -> Path | None:
    """The folder of a SQLite or journal file storage (None for a database server)."""
    scheme, _, rest = url.partition(":")
    if scheme.split("+")[0] not in ("sqlite", "journal") or not rest.startswith("//"):
        return None
    path = Path(rest[3:] if scheme.startswith("sqlite") else rest[2:])
    return path.parent if str(path) not in ("", ".", ":memory:") else None


def export_spec(results: StudyResults, number: int, out: str | Path | None = None) -> Path:
    """Write trial ``number``'s architecture as spec YAML (with a header saying where it came
    from) to ``out`` (default ``<study>-trial<N>.yaml``); returns the path written."""
    trial = find_trial(results, number)
    path = Path(out) if out is not None else default_path(results, number, "spec")
    spec = trial_spec(results, trial)  # a trial without a record stops here, in one line
    write_file(path, _header(results, trial) + spec.to_yaml())
    return path
