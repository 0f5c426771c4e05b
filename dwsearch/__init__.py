"""dwsearch: architecture search and ablation of convolution blocks."""

from __future__ import annotations

from dwsearch.builder import Network, build_model, infer_shapes
from dwsearch.costs import LatencyResult, Profile, measure_latency, profile
from dwsearch.registry import get_block, list_blocks, register_block
from dwsearch.spec import LayerSpec, ModelSpec, SpecError, load_spec

__version__ = "0.1.0"

__all__ = [
    "LatencyResult",
    "LayerSpec",
    "ModelSpec",
    "Network",
    "Profile",
    "SpecError",
    "build_model",
    "get_block",
    "infer_shapes",
    "list_blocks",
    "load_spec",
    "measure_latency",
    "profile",
    "register_block",
]
