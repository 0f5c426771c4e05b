"""Training: the recipe (``config``, no torch), the loop (``loop``), optimizer and schedule
factories (``optim``) and checkpoints (``checkpoint``). Names are imported lazily from here,
so reading the config does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dwsearch._lazy import lazy_exports

if TYPE_CHECKING:
    from dwsearch.errors import CheckpointError
    from dwsearch.records import EpochMetrics
    from dwsearch.train.checkpoint import CHECKPOINT_FORMAT_VERSION, load_checkpoint
    from dwsearch.train.config import TrainConfig
    from dwsearch.train.loop import (
        FINITE_CHECK_EVERY,
        Batches,
        Callback,
        Loss,
        Status,
        StopTraining,
        TrainResult,
        evaluate,
        fit,
    )
    from dwsearch.train.optim import make_optimizer, make_scheduler

_EXPORTS = {
    "dwsearch.errors": ("CheckpointError",),
    "dwsearch.records": ("EpochMetrics",),
    "dwsearch.train.checkpoint": ("CHECKPOINT_FORMAT_VERSION", "load_checkpoint"),
    "dwsearch.train.config": ("TrainConfig",),
    "dwsearch.train.loop": (
        "FINITE_CHECK_EVERY",
        "Batches",
        "Callback",
        "Loss",
        "Status",
        "StopTraining",
        "TrainResult",
        "evaluate",
        "fit",
    ),
    "dwsearch.train.optim": ("make_optimizer", "make_scheduler"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
