"""dwsearch: architecture search and ablation of convolution blocks.

``from dwsearch import build_model, register_block, profile`` and the rest of the names below
are imported lazily, on first use, so ``import dwsearch`` costs nothing until a model is
built (and ``dwsearch --help`` never waits for torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dwsearch._lazy import lazy_exports

if TYPE_CHECKING:
    from dwsearch.builder import Network, build_model, infer_shapes
    from dwsearch.costs import LatencyResult, Profile, measure_latency, profile
    from dwsearch.errors import DwsearchError, SpecError
    from dwsearch.records import RunRecord
    from dwsearch.registry import get_block, list_blocks, register_alias, register_block
    from dwsearch.run import train_spec
    from dwsearch.spec import LayerSpec, ModelSpec
    from dwsearch.zoo import load_spec

__version__ = "0.1.0"

_EXPORTS = {
    "dwsearch.builder": ("Network", "build_model", "infer_shapes"),
    "dwsearch.costs": ("LatencyResult", "Profile", "measure_latency", "profile"),
    "dwsearch.errors": ("DwsearchError", "SpecError"),
    "dwsearch.records": ("RunRecord",),
    "dwsearch.registry": ("get_block", "list_blocks", "register_alias", "register_block"),
    "dwsearch.run": ("train_spec",),
    "dwsearch.spec": ("LayerSpec", "ModelSpec"),
    "dwsearch.zoo": ("load_spec",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
