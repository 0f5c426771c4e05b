"""Studies: YAML-described Optuna searches and ablations over blocks, resumable and shared by
many workers. The only package that imports optuna (never at ``import dwsearch``).

Modules: ``config`` (the study file schema), ``space`` (configurations -> specs), ``plan``
(validation, slots, the Optuna study), ``options`` (how a worker runs), ``worker`` (the trial
loop, heartbeats, reuse), ``pruning``, ``runner`` (``run_study``, several processes),
``storage`` and ``results`` (the read side for reports).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dwsearch._lazy import lazy_exports

if TYPE_CHECKING:
    from dwsearch.study.config import StudyConfig, json_schema, load_study_config
    from dwsearch.study.options import WorkerOptions
    from dwsearch.study.results import StudyResults, TrialResult, list_studies, load_results
    from dwsearch.study.runner import StudyOutcome, load_config, run_study

_EXPORTS = {
    "dwsearch.study.config": ("StudyConfig", "json_schema", "load_study_config"),
    "dwsearch.study.results": ("StudyResults", "TrialResult", "list_studies", "load_results"),
    "dwsearch.study.runner": ("StudyOutcome", "load_config", "run_study"),
    "dwsearch.study.options": ("WorkerOptions",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
