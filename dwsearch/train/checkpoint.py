"""Checkpoints: written atomically after every epoch, loaded safely (weights only), and
checked before a resume so a run only continues what it started."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from dwsearch.errors import CheckpointError, first_line, reason
from dwsearch.files import atomic_file
from dwsearch.records import EpochMetrics
from dwsearch.runtime import versions
from dwsearch.train.config import TrainConfig

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "SpecLike",
    "TrainingState",
    "checkpoint_state",
    "load_checkpoint",
    "load_weights",
    "plain_spec",
    "prepare_checkpoint",
    "read_weights",
    "restore",
    "save_checkpoint",
    "unwrap",
]

CHECKPOINT_FORMAT_VERSION = 1
# Config fields that may change between a checkpoint and its resumption: they change speed
# or where the run executes, not what is being trained. Everything else must match.
_RESUMABLE_CHANGES = frozenset({"epochs", "threads", "compile", "device", "channels_last"})
# Data configuration fields that do not change what is trained (whether a missing copy may be
# fetched); every other field (folder, validation size, subsets, seed...) must match.
_DATA_RESUMABLE_CHANGES = frozenset({"download"})


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


def prepare_checkpoint(path: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """Check, before any training, that a checkpoint can be written at ``path``: its folder
    is created if needed and a probe file written and removed there. An existing file is
    another run's checkpoint until said otherwise: it is refused unless ``resume`` (continue
    it) or ``overwrite`` (replace it). Raises :class:`CheckpointError` with one line."""
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"checkpoint: expected a file path, found {path!r}")
    path = Path(path)
    if resume and overwrite:
        raise CheckpointError(f"{path}: resume and overwrite exclude each other (continue the "
                              f"checkpoint, or replace it)")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; name the checkpoint file, e.g. "
                              f"{path / 'checkpoint.pt'}")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise CheckpointError(f"{path}: exists and is not a regular file; name another "
                                  f"checkpoint path")
        if not resume and not overwrite:
            raise CheckpointError(
                f"{path}: a checkpoint already exists there (another run's?); resume it with "
                f"--resume, replace it with --overwrite, or name another path"
            )
        if overwrite and not _looks_like_checkpoint(path):
            # --overwrite replaces a checkpoint, not a spec or an image given by mistake.
            raise CheckpointError(f"{path}: exists and is not a checkpoint (torch.save writes a "
                                  f"zip archive); refusing to overwrite it, name another path")
    # Folders made for the probe are removed again: a run that fails before its first
    # checkpoint leaves nothing behind (the first save makes them for good).
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as err:
        raise CheckpointError(
            f"{path}: cannot write a checkpoint there ({err.strerror or reason(err)})"
        ) from err
    finally:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


def _looks_like_checkpoint(path: Path) -> bool:
    """An empty file or a zip archive (torch.save's format); anything else is someone's data."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head in (b"", b"PK\x03\x04")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that ``path`` always holds either the old or the new checkpoint."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as fh:
            torch.save(state, fh)
    except OSError as err:  # a full disk, a folder removed under the run
        raise CheckpointError(
            f"{path}: cannot write the checkpoint ({err.strerror or reason(err)})"
        ) from err


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` onto the CPU.

    Loads with ``weights_only=True``: checkpoints hold only tensors and plain data, so no
    arbitrary code can run from a tampered file. Raises :class:`CheckpointError` (one line) for a
    missing file and for one that is corrupt or not a dwsearch checkpoint.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"checkpoint: expected a file path, found {path!r}")
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


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights in ``path``: the ``model`` state of a dwsearch checkpoint, or a bare
    state dict saved with ``torch.save(model.state_dict(), path)``; both loaded safely
    (weights only). Anything else is one :class:`CheckpointError` line."""
    try:
        return dict(load_checkpoint(path)["model"])
    except CheckpointError as err:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise err from None
        if isinstance(state, dict) and state and all(
                isinstance(v, torch.Tensor) for v in state.values()):
            return state
        raise


def load_weights(model: nn.Module, weights: Mapping[str, Any], what: str) -> None:
    """Load ``weights`` (a state dict) into ``model``: every key, every shape. Weights that
    do not fit are one :class:`CheckpointError` line, ``what`` (where and whose, e.g.
    ``run.pt: weights do not fit the stored spec``) followed by torch's first line."""
    try:
        unwrap(model).load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{what}: {first_line(err)}") from err


def _check_same_data(
    path: Path, saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None
) -> None:
    """Raise CheckpointError naming the first data field that differs: a resumed run must
    train and validate on the same split it started on."""
    if saved is None and current is None:
        return
    if saved is None or current is None:
        has, lacks = ("the checkpoint", "this run") if current is None else (
            "this run", "the checkpoint")
        raise CheckpointError(
            f"cannot resume from {path}: {has} records a data configuration and {lacks} does "
            f"not, so they cannot be compared; start afresh with --overwrite"
        )
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"cannot resume from {path}: its data configuration is "
                              f"{type(saved).__name__}, not a mapping")
    for name in sorted(set(saved) | set(current)):
        if name in _DATA_RESUMABLE_CHANGES:
            continue
        old, new = saved.get(name, "<missing>"), current.get(name, "<missing>")
        if old != new:
            raise CheckpointError(
                f"cannot resume from {path}: data field '{name}' differs (checkpoint {old!r}, "
                f"now {new!r}); a resumed run must see the same data and splits"
            )


def _check_resumable(path: Path, saved: Mapping[str, Any], config: TrainConfig) -> None:
    """Raise CheckpointError naming the first config field that may not change on resume."""
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"cannot resume from {path}: its config is "
                              f"{type(saved).__name__}, not a mapping")
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
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a resume needs, as a dict of tensors and plain data."""
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "spec": spec,
        "data": copy.deepcopy(dict(data)) if data is not None else None,
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
    data: Mapping[str, Any] | None = None,
) -> list[EpochMetrics]:
    """Load everything a checkpoint holds into the fresh objects; return its epoch metrics.

    Refused with :class:`CheckpointError` when the checkpoint was written with another
    training config (beyond :data:`_RESUMABLE_CHANGES`), another data configuration
    (``data``), spec or number of batches per epoch, or when a part of it is malformed."""
    state = load_checkpoint(path)
    missing = [
        key
        for key in ("optimizer", "scheduler", "scaler", "config", "metrics", "rng", "epoch",
                    "steps_per_epoch")
        if key not in state
    ]
    if missing:
        raise CheckpointError(f"{path}: cannot resume, checkpoint lacks {', '.join(missing)}")
    _check_resumable(path, state["config"], config)
    _check_same_data(path, state.get("data"), data)
    if spec is not None and state.get("spec") is not None and state["spec"] != spec:
        raise CheckpointError(f"cannot resume from {path}: it was trained from a different spec")
    if state["steps_per_epoch"] != steps_per_epoch:
        raise CheckpointError(
            f"cannot resume from {path}: the training loader has {steps_per_epoch} batches "
            f"per epoch, the checkpoint was written with {state['steps_per_epoch']}"
        )
    load_weights(parts.model, state["model"],
                 f"cannot resume from {path}: weights do not fit the model")
    # The rest is the file's own data: a malformed part is the file's fault, said in one line.
    part = "optimizer"
    try:
        parts.optimizer.load_state_dict(state["optimizer"])
        part = "scheduler"
        _restore_scheduler(parts, state["scheduler"], state["config"]["epochs"] == config.epochs)
        part = "scaler"
        if state["scaler"] and parts.scaler.is_enabled():
            parts.scaler.load_state_dict(state["scaler"])
        part = "rng"
        torch.set_rng_state(state["rng"]["torch"])
        cuda_states = state["rng"].get("cuda") or []
        if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        part = "metrics"
        return [EpochMetrics(**m) for m in state["metrics"]]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as err:
        raise CheckpointError(
            f"cannot resume from {path}: its {part} state is malformed ({reason(err)})"
        ) from err


def _restore_scheduler(parts: TrainingState, saved: Mapping[str, Any], same_plan: bool
                       ) -> None:
    if same_plan:
        parts.scheduler.load_state_dict(dict(saved))
        return
    # More epochs than planned: keep this run's plan (its total steps), take only the
    # position from the checkpoint. The rest of the schedule is re-planned over the new
    # length, so the lr jumps for cosine/onecycle; constant is unaffected.
    fresh = parts.scheduler.state_dict()
    for key in ("last_epoch", "_step_count", "_last_lr"):
        if key in saved:
            fresh[key] = saved[key]
    parts.scheduler.load_state_dict(fresh)
