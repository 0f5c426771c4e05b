"""A chosen trial as a file: its spec, a checkpoint with its kept weights, or a program ready
to ship (ONNX or ExecuTorch, fp32 or int8), checked against eager PyTorch and timed.

This is the torch side of ``dwsearch export``; what needs no model (finding the trial, its
spec, writing a file whole) is :mod:`dwsearch.report.export`, which never imports torch.
The model is rebuilt from the trial's spec and kept weights by
:func:`dwsearch.run.model_from_weights`, the one function that does that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dwsearch.deploy._runtimes import get_runtime
from dwsearch.deploy.images import random_images, split_images
from dwsearch.deploy.latency import EAGER, Candidate, LatencyTable, time_interleaved
from dwsearch.deploy.program import Lowered, eager_session, lower
from dwsearch.errors import CheckpointError, ReportError, reason
from dwsearch.report.export import (
    SUFFIXES,
    default_path,
    export_spec,
    find_trial,
    kept_weights,
    trial_record,
    trial_spec,
    write_file,
)
from dwsearch.study.results import StudyResults, TrialResult
from dwsearch.urls import mask_url

__all__ = ["CALIBRATION_IMAGES", "CHECK_IMAGES", "FORMATS", "Exported", "export_trial"]

FORMATS = tuple(SUFFIXES)
# The formats that are programs for a runtime: format -> (runtime, precision).
PROGRAMS = {"onnx": ("onnxruntime", "fp32"), "onnx-int8": ("onnxruntime", "int8"),
            "pte": ("executorch", "fp32"), "pte-int8": ("executorch", "int8")}
# Training images the int8 quantizer observes: enough for stable activation ranges on
# CIFAR-sized inputs, few enough to calibrate in seconds.
CALIBRATION_IMAGES = 128
# Images a program is checked on.
CHECK_IMAGES = 256
CALIBRATIONS = ("train", "random")


@dataclass(frozen=True)
class Exported:
    """What an export wrote and, for a program, how it was checked and how fast it runs."""

    path: Path
    format: str
    program: Lowered | None = None  # for onnx, onnx-int8, pte, pte-int8
    latency: LatencyTable | None = None  # the program against eager PyTorch, interleaved
    images: str = ""  # which images calibrated and checked the program

    def summary(self) -> str:
        """Lines for the command line: size, check, images used, latency table."""
        if self.program is None:
            return ""
        program = self.program
        lines = [f"size {program.size_bytes:,} bytes; {program.runtime} {program.version}, "
                 f"{program.precision}, batch {program.batch_size}",
                 f"check: {program.check.summary(program.precision)}",
                 f"images: {self.images}"]
        if self.latency is not None:
            lines.append(self.latency.format_table())
        return "\n".join(lines)


def export_trial(
    results: StudyResults,
    number: int,
    fmt: str = "spec",
    out: str | Path | None = None,
    *,
    untrained: bool = False,
    calibration: str = "train",
    data_dir: str | Path | None = None,
    threads: int = 1,
    batch_size: int = 1,
    latency: bool = True,
) -> Exported:
    """Write trial ``number`` of a study as ``fmt`` to ``out`` (default
    ``<study>-trial<N>`` with the format's suffix).

    ``spec``: its architecture as YAML. ``checkpoint``: spec and kept weights, readable by
    :func:`dwsearch.run.model_from_checkpoint`. ``onnx``, ``onnx-int8``, ``pte``,
    ``pte-int8``: a program for ONNX Runtime or ExecuTorch (XNNPACK), lowered by
    :func:`dwsearch.deploy.program` and so checked against the eager model: fp32 on random
    images (equality needs no real ones), int8 by top-1 agreement on validation images.
    int8 calibrates on :data:`CALIBRATION_IMAGES` **training** images of the trial's own
    data (``calibration="train"``; ``data_dir`` where the data moved), never validation or
    test images, or on random images (``"random"``: no data needed, not representative).
    With ``latency`` the program is timed against eager PyTorch (interleaved, ``threads``
    threads, batch ``batch_size``, the batch a ``.pte`` program takes).

    Needs the weights the trial kept; ``untrained`` exports a trial that kept none with
    fresh weights (latency and size do not depend on training; accuracy does).
    """
    if fmt not in FORMATS:
        raise ReportError(f"format {fmt!r}: allowed {', '.join(FORMATS)}")
    if calibration not in CALIBRATIONS:
        raise ReportError(f"calibration {calibration!r}: allowed {', '.join(CALIBRATIONS)}")
    if fmt == "spec":
        return Exported(export_spec(results, number, out), fmt)
    trial = find_trial(results, number)
    trial_record(results, trial)
    path = Path(out) if out is not None else default_path(results, number, fmt)
    if fmt == "checkpoint":
        return Exported(_export_checkpoint(results, trial, path), fmt)
    runtime, precision = PROGRAMS[fmt]
    get_runtime(runtime).require()  # before the model is built or any data loads
    model = _model(results, trial, fresh=untrained and not trial.info.weights)
    spec = model.spec
    images = random_images(CHECK_IMAGES, spec.input_shape)
    said = f"checked on {CHECK_IMAGES} random images"
    calib = None
    if precision == "int8":
        if calibration == "random":
            calib = random_images(CALIBRATION_IMAGES, spec.input_shape, seed=1)
            said = (f"calibrated on {CALIBRATION_IMAGES} random images (not representative: "
                    f"use --calibration train), checked on {CHECK_IMAGES} random images")
        else:
            calib, images, said = _trial_images(results, trial, data_dir)
    program = lower(model, runtime, precision, images=images, calibration=calib,
                    calibration_source=said, batch_size=batch_size)
    write_file(path, program.program)
    table = None
    if latency:
        candidates = [Candidate(f"trial {number}", EAGER, "fp32", eager_session(model, threads)),
                      Candidate(f"trial {number}", runtime, precision, program.load(threads),
                                size_bytes=program.size_bytes)]
        table = time_interleaved(
            candidates, threads=threads, batch_size=batch_size, input_shape=spec.input_shape,
            versions={"torch": str(torch.__version__), runtime: program.version})
    return Exported(path, fmt, program, table, said)


def _model(results: StudyResults, trial: TrialResult, *, fresh: bool) -> Any:
    """The trial's network with its kept weights (or fresh ones), CPU, eval mode."""
    from dwsearch.builder import build_model
    from dwsearch.run import model_from_weights
    from dwsearch.train.checkpoint import read_weights

    spec = trial_spec(results, trial)
    if fresh:
        return build_model(spec).eval()
    path = kept_weights(results, trial)
    try:
        weights = read_weights(path)
        return model_from_weights(spec, weights, f"trial {trial.number}: the kept weights "
                                                 f"do not fit its spec")
    except CheckpointError as err:
        message = str(err)
        if not message.startswith(f"trial {trial.number}"):
            message = f"trial {trial.number}: {message}"
        raise ReportError(message) from err


def _trial_images(results: StudyResults, trial: TrialResult, data_dir: str | Path | None
                  ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Calibration images from the trial's training split and check images from its
    validation split (its training split, another selection, where it has none)."""
    from dwsearch.data.config import DataConfig
    from dwsearch.run import load_data

    record = trial_record(results, trial)
    known = {f.name for f in dataclasses.fields(DataConfig)}
    values = {k: v for k, v in dict(record.data or {}).items() if k in known}
    if not values.get("dataset"):
        raise ReportError(f"trial {trial.number}: its record names no dataset to calibrate "
                          f"on; use --calibration random")
    if data_dir is not None:
        values["data_dir"] = str(data_dir)
    values["download"] = False  # calibrating reads the trial's data, never fetches other
    try:
        config = DataConfig(**values)
    except (TypeError, ValueError) as err:
        raise ReportError(f"trial {trial.number}: its data configuration is unusable "
                          f"({reason(err)}); use --calibration random") from err
    splits = load_data(trial_spec(results, trial), config)
    calib = split_images(splits.train, CALIBRATION_IMAGES, seed=0)
    if len(splits.val):
        check, where = split_images(splits.val, CHECK_IMAGES, seed=0), "validation"
    else:
        check, where = split_images(splits.train, CHECK_IMAGES, seed=1), "other training"
    said = (f"calibrated on {len(calib)} training images, checked on {len(check)} {where} "
            f"images of {splits.source}")
    return calib, check, said


def _export_checkpoint(results: StudyResults, trial: TrialResult, path: Path) -> Path:
    from dwsearch.train.checkpoint import CHECKPOINT_FORMAT_VERSION, save_checkpoint

    model = _model(results, trial, fresh=False)  # checks that the weights fit the spec
    record = trial.record
    assert record is not None
    state = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "spec": trial_spec(results, trial).to_dict(),
        "model": model.state_dict(),
        "metrics": [asdict(e) for e in record.epochs],
        "config": dict(record.train),
        "versions": dict(record.versions),
        "source": {"study": results.name, "trial": trial.number,
                   "storage": mask_url(results.storage)},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"{path}: cannot create its folder ({reason(err)})") from err
    if path.is_dir():
        raise ReportError(f"{path} is a folder; name the file to write")
    try:
        save_checkpoint(path, state)
    except CheckpointError as err:
        raise ReportError(str(err)) from err
    return path
