"""Build an ``nn.Module`` from a ModelSpec, inferring input sizes by shape propagation."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dwsearch.errors import SpecError, UnknownBlockError
from dwsearch.registry import block_info
from dwsearch.spec import LayerSpec, ModelSpec
from dwsearch.zoo import load_spec

__all__ = ["LayerShape", "Network", "build_model", "infer_shapes"]


@dataclass(frozen=True)
class LayerShape:
    """Shapes around one layer, without the batch dimension."""

    index: int
    block: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


class Network(nn.Sequential):
    """A network built from a spec: an ``nn.Sequential`` of blocks named "0", "1", ...

    ``spec`` is kept so the model can be profiled, checkpointed and rebuilt.
    """

    def __init__(self, spec: ModelSpec, layers: list[nn.Module]) -> None:
        super().__init__(*layers)
        self.spec = spec
        self.shapes: tuple[LayerShape, ...] = ()


def _where(index: int, layer: LayerSpec) -> str:
    return f"layers[{index}] ({layer.block})"


def _infer_input_size(
    kwargs: dict[str, Any], where: str, shape: tuple[int, ...], arg: str, kind: str, dims: int
) -> None:
    """Fill ``arg`` (in_channels or in_features) from the incoming shape, or explain."""
    if len(shape) != dims:
        hint = (
            "; add {block: flatten} or {block: global_avgpool} before it" if dims == 1 else ""
        )
        raise SpecError(
            f"{where}: expects {kind} but the previous layer produces {shape}{hint}"
        )
    given = kwargs.get(arg, shape[0])
    if given != shape[0]:
        unit = "channels" if arg == "in_channels" else "features"
        raise SpecError(
            f"{where}: {arg} is {given} but the previous layer produces {shape[0]} {unit}; "
            f"drop {arg} to infer it"
        )
    kwargs[arg] = shape[0]


def _constructor_kwargs(
    index: int, layer: LayerSpec, shape: tuple[int, ...]
) -> tuple[Any, dict[str, Any]]:
    """The block's factory and the keyword arguments to call it with, inferred sizes filled."""
    where = _where(index, layer)
    try:
        info = block_info(layer.block)
    except UnknownBlockError as err:
        raise SpecError(f"layers[{index}]: {err}") from err
    assert info.factory is not None  # block_info loads it
    params = inspect.signature(info.factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [
        n for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    kwargs = dict(layer.args)
    if not takes_any:
        for key in kwargs:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise SpecError(
                    f"{where}: unknown argument {key!r}; {hint}allowed: {', '.join(allowed)}"
                )
    if "in_channels" in params:
        _infer_input_size(kwargs, where, shape, "in_channels", "an image input (C, H, W)", 3)
    if "in_features" in params:
        _infer_input_size(kwargs, where, shape, "in_features", "a flat input (features,)", 1)
    missing = [
        n for n in allowed if params[n].default is inspect.Parameter.empty and n not in kwargs
    ]
    if missing:
        raise SpecError(f"{where}: missing required argument(s) {', '.join(missing)}")
    return info.factory, kwargs


def _build_layer(
    index: int, layer: LayerSpec, shape: tuple[int, ...]
) -> tuple[nn.Module, tuple[int, ...]]:
    factory, kwargs = _constructor_kwargs(index, layer, shape)
    where = _where(index, layer)
    try:
        module = factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise SpecError(f"{where}: {err}") from err
    if not isinstance(module, nn.Module):
        raise SpecError(f"{where}: the registered factory returned {type(module).__name__}, "
                        "not a torch.nn.Module")
    # Probe the output shape with one zero sample; eval mode so batch norm accepts batch 1.
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *shape))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SpecError(f"{where}: fails on input of shape {shape}: {first}") from err
    module.train()
    return module, tuple(out.shape[1:])


def build_model(spec: ModelSpec | Mapping[str, Any] | str | Path) -> Network:
    """Build the network a spec describes (a ModelSpec, dict, YAML path or built-in name).

    Input channels and linear input sizes come from shape propagation; any mismatch raises
    ``SpecError`` naming the layer index, the block and what was expected.
    """
    spec = load_spec(spec)
    shape = spec.input_shape
    modules: list[nn.Module] = []
    shapes: list[LayerShape] = []
    for index, layer in enumerate(spec.layers):
        module, out_shape = _build_layer(index, layer, shape)
        modules.append(module)
        shapes.append(LayerShape(index, layer.block, shape, out_shape))
        shape = out_shape
    if shape != (spec.num_classes,):
        raise SpecError(
            f"layers[{len(spec.layers) - 1}] ({spec.layers[-1].block}): the network ends with "
            f"shape {shape} but num_classes is {spec.num_classes}; end with "
            f"{{block: linear, out_features: {spec.num_classes}}}"
        )
    network = Network(spec, modules)
    network.shapes = tuple(shapes)
    return network


def infer_shapes(spec: ModelSpec | Mapping[str, Any] | str | Path) -> tuple[LayerShape, ...]:
    """Per-layer input and output shapes of a spec (builds the model once to find them)."""
    return build_model(spec).shapes
