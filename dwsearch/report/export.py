"""A chosen trial's architecture as a spec file, and what every export shares: finding the
trial, its spec, its kept weights' file, writing a file whole.

Nothing here imports torch (the report package never does). The exports that need the model
(a checkpoint, ONNX, ExecuTorch programs, int8) live in :mod:`dwsearch.export`, beside
:func:`dwsearch.run.model_from_checkpoint`, and call these.
"""

from __future__ import annotations

from pathlib import Path

from dwsearch.errors import ReportError, reason
from dwsearch.files import write_atomically
from dwsearch.study.results import (
    StudyResults,
    TrialResult,
    find_trial,
    kept_weights,
    trial_record,
    trial_spec,
)

__all__ = ["SUFFIXES", "default_path", "export_spec", "find_trial", "kept_weights",
           "trial_record", "trial_spec", "write_file"]

# Every export format and the suffix of the file it writes.
SUFFIXES = {"spec": ".yaml", "checkpoint": ".pt", "onnx": ".onnx", "onnx-int8": ".onnx",
            "pte": ".pte", "pte-int8": ".pte"}


def default_path(results: StudyResults, number: int, fmt: str) -> Path:
    return Path(f"{results.name}-trial{number}{SUFFIXES[fmt]}")


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


def export_spec(results: StudyResults, number: int, out: str | Path | None = None) -> Path:
    """Write trial ``number``'s architecture as spec YAML (with a header saying where it came
    from) to ``out`` (default ``<study>-trial<N>.yaml``); returns the path written."""
    trial = find_trial(results, number)
    path = Path(out) if out is not None else default_path(results, number, "spec")
    spec = trial_spec(results, trial)  # a trial without a record stops here, in one line
    write_file(path, _header(results, trial) + spec.to_yaml())
    return path
