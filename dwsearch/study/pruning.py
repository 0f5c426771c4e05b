"""Stopping unpromising trials early, for one objective or several.

Optuna's pruners (median, successive halving, hyperband) compare a trial's intermediate values
with other trials' and work for single-objective studies only: in a multi-objective study
``trial.report`` raises. dwsearch adds a rule that works for any number of objectives:

**cost_median**: after epoch ``e`` (``e >= warmup_epochs``), a trial stops when its validation
accuracy is below the median validation accuracy at epoch ``e`` of the finished trials whose
MACs lie within ``macs_ratio`` of its own (at least ``min_trials`` of them). Comparing with
models of similar cost keeps a cheap model from being pruned for being less accurate than an
expensive one at the same epoch: accuracy against cost is what a multi-objective study maps.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from dwsearch.study.config import PrunerSection, StudyConfig

__all__ = ["CostMedian", "make_optuna_pruner", "prune_reason"]


def make_optuna_pruner(config: StudyConfig) -> Any:
    """The Optuna pruner a single-objective study asks for (None for none/cost_median)."""
    import optuna

    section: PrunerSection = config.pruner
    epochs = config.train_config().epochs
    if section.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=section.startup_trials,
                                           n_warmup_steps=section.warmup_epochs)
    if section.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=section.min_epochs, reduction_factor=section.reduction_factor)
    if section.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=section.min_epochs, max_resource=max(epochs, section.min_epochs),
            reduction_factor=section.reduction_factor)
    return optuna.pruners.NopPruner()


class CostMedian:
    """The cost_median rule over finished trials' curves (see the module docstring).

    ``peers`` returns (MACs, validation accuracy per epoch) of every finished trial; it is
    called at most once per epoch of a trial.
    """

    def __init__(self, section: PrunerSection,
                 peers: Callable[[], list[tuple[int, list[float]]]]) -> None:
        self.section = section
        self.peers = peers

    def reason(self, epoch: int, val_accuracy: float | None, macs: int) -> str | None:
        """Why the trial should stop now, or None to go on."""
        s = self.section
        if val_accuracy is None or epoch < max(1, s.warmup_epochs):
            return None
        low, high = macs / s.macs_ratio, macs * s.macs_ratio
        values = [curve[epoch - 1] for peer_macs, curve in self.peers()
                  if low <= peer_macs <= high and len(curve) >= epoch]
        if len(values) < s.min_trials:
            return None
        median = statistics.median(values)
        if val_accuracy < median:
            return (f"validation accuracy {val_accuracy:.2%} at epoch {epoch} is below the "
                    f"median {median:.2%} of {len(values)} finished trials within "
                    f"{s.macs_ratio:g}x its MACs")
        return None


def prune_reason(trial: Any, epoch: int, val_accuracy: float | None) -> str | None:
    """Report to an Optuna pruner (single objective) and ask it."""
    if val_accuracy is None:
        return None
    trial.report(val_accuracy, step=epoch)
    if trial.should_prune():
        name = type(trial.study.pruner).__name__
        return f"{name} stopped it at epoch {epoch} (validation accuracy {val_accuracy:.2%})"
    return None
