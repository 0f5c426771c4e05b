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
        Status,
        StopTraining,
        TrainResult,
        evaluate,
        fit,
    )
    from dwsearch.train.optim import make_optimizer, make_scheduler

_EXPORTS = {
    "CheckpointError": "dwsearch.errors",
    "EpochMetrics": "dwsearch.records",
    "CHECKPOINT_FORMAT_VERSION": "dwsearch.train.checkpoint",
    "load_checkpoint": "dwsearch.train.checkpoint",
    "TrainConfig": "dwsearch.train.config",
    "FINITE_CHECK_EVERY": "dwsearch.train.loop",
    "Batches": "dwsearch.train.loop",
    "Callback": "dwsearch.train.loop",
    "Status": "dwsearch.train.loop",
    "StopTraining": "dwsearch.train.loop",
    "TrainResult": "dwsearch.train.loop",
    "evaluate": "dwsearch.train.loop",
    "fit": "dwsearch.train.loop",
    "make_optimizer": "dwsearch.train.optim",
    "make_scheduler": "dwsearch.train.optim",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
