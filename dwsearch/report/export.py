"""A chosen trial as a file: its spec (YAML that :func:`dwsearch.build_model` rebuilds), a
checkpoint with its kept weights (readable by :func:`dwsearch.run.model_from_checkpoint`), or
an ONNX graph.

The spec export reads only the run record. The checkpoint and ONNX exports need the model,
so they import torch (inside the functions: the rest of :mod:`dwsearch.report` never does);
ONNX also needs the ``onnx`` and ``onnxscript`` packages (``pip install 'dwsearch[onnx]'``).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dwsearch.errors import CheckpointError, ReportError, SpecError, reason
from dwsearch.spec import ModelSpec
from dwsearch.study.results import StudyResults, TrialResult
from dwsearch.urls import mask_url

__all__ = ["FORMATS", "default_path", "export_trial", "find_trial"]

FORMATS = ("spec", "checkpoint", "onnx")
_SUFFIX = {"spec": ".yaml", "checkpoint": ".pt", "onnx": ".onnx"}
ONNX_OPSET = 18


def find_trial(results: StudyResults, number: int) -> TrialResult:
    """Trial ``number`` of the study, or a :class:`ReportError` naming the trials there are."""
    for trial in results.trials:
        if trial.number == number:
            return trial
    numbers = [t.number for t in results.trials]
    held = f"trials {min(numbers)}..{max(numbers)}" if numbers else "no trials"
    raise ReportError(f"study {results.name!r} has no trial {number}; it holds {held}")


def _record(results: StudyResults, trial: TrialResult) -> Any:
    if trial.record is None:
        status = trial.info.status or trial.state.lower()
        why = f": {trial.error}" if trial.error else ""
        raise ReportError(f"trial {trial.number} of study {results.name!r} has no run record "
                          f"(status {status}{why}); nothing to export")
    return trial.record


def default_path(results: StudyResults, number: int, fmt: str) -> Path:
    return Path(f"{results.name}-trial{number}{_SUFFIX[fmt]}")


def _spec(results: StudyResults, trial: TrialResult) -> ModelSpec:
    record = _record(results, trial)
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


def _write_text(out: Path, text: str) -> None:
    _prepare(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
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


def _weights(results: StudyResults, trial: TrialResult) -> dict[str, Any]:
    """The trial's kept weights as a state dict (from a dwsearch checkpoint or a bare
    state dict)."""
    import torch

    from dwsearch.train.checkpoint import load_checkpoint

    kept = trial.info.weights
    if not kept:
        raise ReportError(
            f"trial {trial.number} of study {results.name!r} kept no weights (the study ran "
            f"with keep_weights: false); --format spec exports its architecture")
    path = Path(str(kept)).expanduser()
    where = ""
    folder = _storage_folder(results.storage)
    if not path.is_file() and not path.is_absolute() and folder is not None:
        where = f" (looked in the current folder and in {folder}, beside the storage)"
        path = folder / path
    if not path.is_file():
        raise ReportError(f"trial {trial.number}: its weights file {kept} is missing{where}")
    try:
        return dict(load_checkpoint(path)["model"])
    except CheckpointError as err:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise ReportError(f"trial {trial.number}: {err}") from err
        if isinstance(state, dict) and state and all(
                isinstance(v, torch.Tensor) for v in state.values()):
            return state
        raise ReportError(f"trial {trial.number}: {err}") from err


def _storage_folder(url: str) -> Path | None:
    """The folder of a SQLite or journal file storage (None for a database server)."""
    scheme, _, rest = url.partition(":")
    if scheme.split("+")[0] not in ("sqlite", "journal") or not rest.startswith("//"):
        return None
    path = Path(rest[3:] if scheme.startswith("sqlite") else rest[2:])
    return path.parent if str(path) not in ("", ".", ":memory:") else None


def _model(results: StudyResults, trial: TrialResult, weights: dict[str, Any] | None) -> Any:
    from dwsearch.builder import build_model

    spec = _spec(results, trial)
    model = build_model(spec)
    if weights is not None:
        try:
            model.load_state_dict(weights)
        except RuntimeError as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise ReportError(f"trial {trial.number}: the kept weights do not fit its spec: "
                              f"{first}") from err
    return model.eval()


def export_trial(
    results: StudyResults, number: int, fmt: str = "spec", out: str | Path | None = None, *,
    untrained: bool = False,
) -> Path:
    """Write trial ``number`` as ``fmt`` (spec, checkpoint or onnx) to ``out`` (default
    ``<study>-trial<N>.yaml|.pt|.onnx``); returns the path written.

    ``checkpoint`` and ``onnx`` need the weights the trial kept (``keep_weights: true`` in
    the study); ``untrained`` lets ``onnx`` export the architecture with fresh weights.
    """
    if fmt not in FORMATS:
        raise ReportError(f"format {fmt!r}: allowed {', '.join(FORMATS)}")
    trial = find_trial(results, number)
    path = Path(out) if out is not None else default_path(results, number, fmt)
    if fmt == "spec":
        spec = _spec(results, trial)
        _write_text(path, _header(results, trial) + spec.to_yaml())
        return path
    _record(results, trial)
    if fmt == "checkpoint":
        return _export_checkpoint(results, trial, path)
    return _export_onnx(results, trial, path, untrained=untrained)


def _export_checkpoint(results: StudyResults, trial: TrialResult, path: Path) -> Path:
    from dwsearch.train.checkpoint import CHECKPOINT_FORMAT_VERSION, save_checkpoint

    weights = _weights(results, trial)
    model = _model(results, trial, weights)  # checks that the weights fit the spec
    record = trial.record
    assert record is not None
    state = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "spec": _spec(results, trial).to_dict(),
        "model": model.state_dict(),
        "metrics": [asdict(e) for e in record.epochs],
        "config": dict(record.train),
        "versions": dict(record.versions),
        "source": {"study": results.name, "trial": trial.number,
                   "storage": mask_url(results.storage)},
    }
    _prepare(path)
    try:
        save_checkpoint(path, state)
    except OSError as err:
        raise ReportError(f"{path}: cannot write ({reason(err)})") from err
    return path


def _export_onnx(results: StudyResults, trial: TrialResult, path: Path, *,
                 untrained: bool) -> Path:
    try:
        import onnx  # noqa: F401  (torch.onnx needs both; say so before any work)
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ReportError(f"--format onnx needs the onnx and onnxscript packages ({err.name} "
                          f"is missing): pip install 'dwsearch[onnx]'") from err
    import torch

    weights = None
    if not (untrained and not trial.info.weights):
        weights = _weights(results, trial)
    model = _model(results, trial, weights)
    spec = _spec(results, trial)
    sample = torch.zeros(1, *spec.input_shape)
    _prepare(path)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), torch.no_grad():
            torch.onnx.export(
                model, (sample,), str(path), dynamo=True, input_names=["images"],
                output_names=["logits"], dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
                external_data=False, opset_version=ONNX_OPSET, verbose=False,
            )
    except OSError as err:
        raise ReportError(f"{path}: cannot write ({reason(err)})") from err
    return path
