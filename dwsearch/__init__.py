"""dwsearch: architecture search and ablation of convolution blocks.

``from dwsearch import build_model, register_block, profile`` and the rest of the names below
are imported lazily, on first use, so ``import dwsearch`` costs nothing until a model is
built (and ``dwsearch --help`` never waits for torch): models and costs (``build_model``,
``profile``, ...), one training run (``train_spec`` with ``TrainConfig`` and ``DataConfig``),
studies (``load_config``, ``run_study`` with ``WorkerOptions``; ``load_results``) and reports
(``open_study``, ``make_report``)::

    import dwsearch

    outcome = dwsearch.run_study(dwsearch.load_config("studies/quick.yaml"))
    dwsearch.make_report(dwsearch.open_study("quick"), "reports/quick")
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING

from dwsearch._lazy import lazy_exports

if TYPE_CHECKING:
    from dwsearch.builder import Network, build_model, infer_shapes
    from dwsearch.costs import LatencyResult, Profile, measure_latency, profile
    from dwsearch.data.config import DataConfig
    from dwsearch.errors import DwsearchError, SpecError
    from dwsearch.records import RunRecord
    from dwsearch.registry import get_block, list_blocks, register_alias, register_block
    from dwsearch.report import ReportPaths, make_report, open_study
    from dwsearch.run import train_spec
    from dwsearch.spec import LayerSpec, ModelSpec
    from dwsearch.study.config import StudyConfig
    from dwsearch.study.options import WorkerOptions
    from dwsearch.study.results import StudyResults, load_results
    from dwsearch.study.runner import StudyOutcome, load_config, run_study
    from dwsearch.train.config import TrainConfig
    from dwsearch.zoo import load_spec

try:
    __version__ = importlib.metadata.version("dwsearch")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "dwsearch.builder": ("Network", "build_model", "infer_shapes"),
    "dwsearch.costs": ("LatencyResult", "Profile", "measure_latency", "profile"),
    "dwsearch.data.config": ("DataConfig",),
    "dwsearch.errors": ("DwsearchError", "SpecError"),
    "dwsearch.records": ("RunRecord",),
    "dwsearch.registry": ("get_block", "list_blocks", "register_alias", "register_block"),
    "dwsearch.report": ("ReportPaths", "make_report", "open_study"),
    "dwsearch.run": ("train_spec",),
    "dwsearch.spec": ("LayerSpec", "ModelSpec"),
    "dwsearch.study.config": ("StudyConfig",),
    "dwsearch.study.options": ("WorkerOptions",),
    "dwsearch.study.results": ("StudyResults", "load_results"),
    "dwsearch.study.runner": ("StudyOutcome", "load_config", "run_study"),
    "dwsearch.train.config": ("TrainConfig",),
    "dwsearch.zoo": ("load_spec",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
