"""Checkpoints: written atomically after every epoch, loaded safely (weights only), and
checked before a resume so a run only continues what it started."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from dwsearch.errors import CheckpointError
from dwsearch.records import EpochMetrics
from dwsearch.runtime import versions
from dwsearch.train.config import TrainConfig

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "SpecLike",
    "TrainingState",
    "checkpoint_state",
    "load_checkpoint",
        "plain_spec",
    "restore",
    "save_checkpoint",
    "unwrap",
]

CHECKPOINT_FORMAT_VERSION = 1
# Config fields that may change between a checkpoint and its resumption: they change speed
# or where the run executes, not what is being trained. Everything else must match.
_RESUMABLE_CHANGES = frozenset({"epochs", "threads", "compile", "device", "channels_last"})


class SpecLike(Protocol):
    """Anything with ``to_dict()`` (a ModelSpec): the trainer stores specs as plain data and
    knows nothing of the spec module."""

    def to_dict(self) -> dict[str, Any]: ...


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose state_dict has plain keys (torch.compile wraps it in ``_orig_mod``)."""
    inner = getattr(model, "_orig_mod", model)
    return inner if isinstance(inner, nn.Module) else model


def plain_spec(spec: Mapping[str, Any] | SpecLike | None) -> dict[str, Any] | None:
    """The spec as plain data (a ModelSpec is accepted too, via its ``to_dict``)."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return copy.deepcopy(dict(spec))
    if hasattr(spec, "to_dict"):
        return dict(spec.to_dict())
    raise TypeError(f"spec: expected a mapping or ModelSpec, found {type(spec).__name__}")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that ``path`` always holds either the old or the new checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            # fsync before the rename: otherwise a crash can leave a renamed but empty file.
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` onto the CPU.

    Loads with ``weights_only=True``: checkpoints hold only tensors and plain data, so no
    arbitrary code can run from a tampered file. Raises :class:`CheckpointError` (one line) for a
    missing file and for one that is corrupt or not a dwsearch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # Not torch's message: for foreign pickles it advises weights_only=False, which would
        # run whatever code the file holds.
        raise CheckpointError(
            f"{path}: not a readable dwsearch checkpoint (corrupt, truncated or another "
            f"program's file: {type(err).__name__})"
        ) from err
    if not isinstance(state, dict) or "format_version" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a dwsearch checkpoint (no format_version/model)")
    if state["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']!r} is not supported "
            f"(this dwsearch reads format {CHECKPOINT_FORMAT_VERSION})"
        )
    return state


def _check_resumable(path: Path, saved: Mapping[str, Any], config: TrainConfig) -> None:
    """Raise CheckpointError naming the first config field that may not change on resume."""
    current = asdict(config)
    for name in (f.name for f in fields(TrainConfig)):
        if name in _RESUMABLE_CHANGES:
            continue
        if name not in saved or saved[name] != current[name]:
            old = saved.get(name, "<missing>")
            raise CheckpointError(
                f"cannot resume from {path}: config field '{name}' differs (checkpoint "
                f"{old!r}, now {current[name]!r}); only "
                f"{', '.join(sorted(_RESUMABLE_CHANGES))} may change"
            )
    if saved["epochs"] > config.epochs:
        raise CheckpointError(
            f"cannot resume from {path}: it was planned for {saved['epochs']} epochs, "
            f"now epochs={config.epochs}; epochs may only grow"
        )


@dataclass
class TrainingState:
    """The objects a checkpoint saves and a resume restores, besides the metrics."""

    model: nn.Module  # the plain module (not a torch.compile wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def checkpoint_state(
    parts: TrainingState,
    *,
    config: TrainConfig,
    spec: dict[str, Any] | None,
    steps_per_epoch: int,
    history: list[EpochMetrics],
    device: torch.device,
    precision: str,
) -> dict[str, Any]:
    """Everything a resume needs, as a dict of tensors and plain data."""
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "spec": spec,
        "model": unwrap(parts.model).state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "config": asdict(config),
        "epoch": len(history),
        "steps_per_epoch": steps_per_epoch,
        "device": str(device),
        "precision": precision,
        "metrics": [asdict(m) for m in history],
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "versions": versions(),
    }


def restore(
    path: Path,
    parts: TrainingState,
    config: TrainConfig,
    spec: dict[str, Any] | None,
    steps_per_epoch: int,
) -> list[EpochMetrics]:
    """Load everything a checkpoint holds into the fresh objects; return its epoch metrics."""
    state = load_checkpoint(path)
    missing = [
        key
        for key in ("optimizer", "scheduler", "scaler", "config", "metrics", "rng", "epoch")
        if key not in state
    ]
    if missing:
        raise CheckpointError(f"{path}: cannot resume, checkpoint lacks {', '.join(missing)}")
    _check_resumable(path, state["config"], config)
    if spec is not None and state.get("spec") is not None and state["spec"] != spec:
        raise CheckpointError(f"cannot resume from {path}: it was trained from a different spec")
    if state["steps_per_epoch"] != steps_per_epoch:
        raise CheckpointError(
            f"cannot resume from {path}: the training loader has {steps_per_epoch} batches "
            f"per epoch, the checkpoint was written with {state['steps_per_epoch']}"
        )
    try:
        unwrap(parts.model).load_state_dict(state["model"])
    except RuntimeError as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"cannot resume from {path}: weights do not fit the model: {first}"
        ) from err
    parts.optimizer.load_state_dict(state["optimizer"])
    saved_sched = state["scheduler"]
    if state["config"]["epochs"] == config.epochs:
        parts.scheduler.load_state_dict(saved_sched)
    else:
        # More epochs than planned: keep this run's plan (its total steps), take only the
        # position from the checkpoint. The rest of the schedule is re-planned over the new
        # length, so the lr jumps for cosine/onecycle; constant is unaffected.
        fresh = parts.scheduler.state_dict()
        for key in ("last_epoch", "_step_count", "_last_lr"):
            if key in saved_sched:
                fresh[key] = saved_sched[key]
        parts.scheduler.load_state_dict(fresh)
    if state["scaler"] and parts.scaler.is_enabled():
        parts.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    cuda_states = state["rng"].get("cuda") or []
    if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return [EpochMetrics(**m) for m in state["metrics"]]
