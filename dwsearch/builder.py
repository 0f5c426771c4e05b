"""Build an ``nn.Module`` from a ModelSpec, inferring input sizes by shape propagation.

Building runs in two passes. The first checks every argument against its block's signature
(:mod:`dwsearch.arguments`), then builds each layer on torch's ``meta`` device, where tensors
have shapes but no storage, to find its output shape and parameter count; the estimated
memory (parameters and one sample's activations) is checked against the limit of
:mod:`dwsearch.limits` layer by layer, before anything is allocated. The second pass builds
the real layers, in order, so seeded initialisation is what it always was. A user's block
that cannot run on ``meta`` (data-dependent control flow, an op without a meta kernel) is
probed for real instead, once the estimate so far allows it.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dwsearch.arguments import argument_problem, factory_annotations
from dwsearch.errors import DwsearchError, SpecError, UnknownBlockError, first_line
from dwsearch.limits import check_memory, format_bytes
from dwsearch.registry import block_info
from dwsearch.spec import LayerSpec, ModelSpec
from dwsearch.zoo import load_spec

__all__ = ["LayerShape", "MemoryEstimate", "Network", "build_model", "infer_shapes"]

# Bytes per element the estimates assume: fp32, what a model is built in.
_ELEMENT_BYTES = 4
# Exceptions torch and the blocks raise for values or shapes they refuse.
_REFUSALS: tuple[type[Exception], ...] = (
    RuntimeError, ValueError, TypeError, IndexError, NotImplementedError
)


@dataclass(frozen=True)
class LayerShape:
    """Shapes around one layer, without the batch dimension."""

    index: int
    block: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass(frozen=True)
class MemoryEstimate:
    """What a network holds, estimated from shapes before it was built (fp32 bytes)."""

    params: int  # parameter count
    param_bytes: int
    activation_bytes: int  # one sample: the input and every layer's output

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.activation_bytes


class Network(nn.Sequential):
    """A network built from a spec: an ``nn.Sequential`` of blocks named "0", "1", ...

    ``spec`` is kept so the model can be profiled, checkpointed and rebuilt; ``shapes`` and
    ``estimate`` are what the builder found before building it.
    """

    def __init__(self, spec: ModelSpec, layers: list[nn.Module]) -> None:
        super().__init__(*layers)
        self.spec = spec
        self.shapes: tuple[LayerShape, ...] = ()
        self.estimate = MemoryEstimate(0, 0, 0)


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
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The block's factory and the keyword arguments to call it with, every value checked
    against the factory's signature and the inferred sizes filled in."""
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
    annotations = factory_annotations(info.factory)
    for key, value in kwargs.items():
        problem = argument_problem(key, value, annotations.get(key))
        if problem is not None:
            raise SpecError(f"{where}: {problem}")
    # Blocks that need an image (pooling, channel dropout) say so; a flat input would be
    # read as an unbatched image and give a wrong result rather than an error.
    needs = getattr(info.factory, "input_dims", None)
    if isinstance(needs, int) and len(shape) != needs:
        raise SpecError(f"{where}: expects an image input (C, H, W) but the previous layer "
                        f"produces {shape}")
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


def _construct(factory: Callable[..., Any], kwargs: dict[str, Any], where: str,
               refusals: tuple[type[Exception], ...] = (TypeError, ValueError)) -> nn.Module:
    try:
        module = factory(**kwargs)
    except refusals as err:
        raise SpecError(f"{where}: {first_line(err)}") from err
    if not isinstance(module, nn.Module):
        raise SpecError(f"{where}: the registered factory returned {type(module).__name__}, "
                        "not a torch.nn.Module")
    return module


def _output_shape(module: nn.Module, shape: tuple[int, ...], device: str, where: str
                  ) -> tuple[int, ...]:
    """The output shape (no batch dimension) of one zero sample, in eval mode so batch norm
    accepts batch 1; raises SpecError when the output is not one tensor."""
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *shape, device=device))
    finally:
        module.train()
    if not isinstance(out, torch.Tensor):
        raise SpecError(f"{where}: forward returned {type(out).__name__}, not a tensor; a "
                        f"block must return one tensor (the next layer's input)")
    return tuple(int(d) for d in out.shape[1:])


@dataclass
class _Planned:
    factory: Callable[..., Any]
    kwargs: dict[str, Any]
    out_shape: tuple[int, ...]
    params: int


def _plan_layer(
    index: int, layer: LayerSpec, shape: tuple[int, ...], held: int
) -> _Planned:
    """Check one layer and find its output shape and parameter count without allocating
    (``held``: bytes the estimate already holds, for the limit before any real probe)."""
    where = _where(index, layer)
    factory, kwargs = _constructor_kwargs(index, layer, shape)
    params: int | None = None
    module: nn.Module | None
    try:
        with torch.device("meta"):
            module = _construct(factory, kwargs, where)
    except DwsearchError:
        raise
    except Exception:  # a constructor that cannot run on meta: real below
        module = None
    if module is not None:
        params = sum(p.numel() for p in module.parameters())
        check_memory(held + params * _ELEMENT_BYTES, f"{where}: the model up to this layer",
                     detail=f"{params:,} parameters in this layer",
                     hint="use fewer channels or a smaller input")
        try:
            return _Planned(factory, kwargs, _output_shape(module, shape, "meta", where),
                            params)
        except DwsearchError:
            raise
        except Exception:  # refused, or not supported on meta: real below
            pass
    # Probing for real allocates the layer and one sample: only within the limit. Torch's
    # checks are the same there, so a refusal on meta is repeated here with its message.
    check_memory(held + (params or 0) * _ELEMENT_BYTES, f"{where}: the model up to this layer",
                 detail="probed for real, as it cannot run on torch's meta device")
    # What failed on meta and fails here too (sizes that overflow, ...) is the value's fault.
    module = _construct(factory, kwargs, where, (*_REFUSALS, OverflowError))
    params = sum(p.numel() for p in module.parameters())
    try:
        out_shape = _output_shape(module, shape, "cpu", where)
    except _REFUSALS as err:
        raise SpecError(f"{where}: fails on input of shape {shape}: {first_line(err)}"
                        ) from err
    return _Planned(factory, kwargs, out_shape, params)


def _plan(spec: ModelSpec) -> tuple[list[_Planned], tuple[LayerShape, ...], MemoryEstimate]:
    """Every layer checked and its shapes found, and the model's estimate within the limit;
    nothing real is built (a real probe's draws come from a forked RNG)."""
    shape = spec.input_shape
    params = 0
    activations = math.prod(shape) * _ELEMENT_BYTES
    check_memory(activations, f"input {'x'.join(map(str, shape))}: one sample")
    planned: list[_Planned] = []
    shapes: list[LayerShape] = []
    with torch.random.fork_rng(devices=[]):
        for index, layer in enumerate(spec.layers):
            held = params * _ELEMENT_BYTES + activations
            step = _plan_layer(index, layer, shape, held)
            params += step.params
            activations += math.prod(step.out_shape) * _ELEMENT_BYTES
            check_memory(
                params * _ELEMENT_BYTES + activations,
                f"{_where(index, layer)}: the model up to this layer",
                detail=f"{params:,} parameters and {format_bytes(activations)} of activations "
                       f"for one sample",
                hint="use fewer channels or a smaller input",
            )
            planned.append(step)
            shapes.append(LayerShape(index, layer.block, shape, step.out_shape))
            shape = step.out_shape
    if shape != (spec.num_classes,):
        raise SpecError(
            f"layers[{len(spec.layers) - 1}] ({spec.layers[-1].block}): the network ends with "
            f"shape {shape} but num_classes is {spec.num_classes}; end with "
            f"{{block: linear, out_features: {spec.num_classes}}}"
        )
    estimate = MemoryEstimate(params, params * _ELEMENT_BYTES, activations)
    return planned, tuple(shapes), estimate


def build_model(spec: ModelSpec | Mapping[str, Any] | str | Path) -> Network:
    """Build the network a spec describes (a ModelSpec, dict, YAML path or built-in name).

    Input channels and linear input sizes come from shape propagation; any mismatch or a
    value that does not fit the block's signature raises ``SpecError`` naming the layer
    index, the block and what was expected. A model whose parameters and one sample's
    activations would exceed the memory limit (``DWSEARCH_MAX_MEMORY_GB``) raises
    ``ResourceError`` before anything is allocated.
    """
    spec = load_spec(spec)
    planned, shapes, estimate = _plan(spec)
    modules = [
        _construct(step.factory, step.kwargs, _where(i, spec.layers[i]))
        for i, step in enumerate(planned)
    ]
    network = Network(spec, modules)
    network.shapes = shapes
    network.estimate = estimate
    return network


def infer_shapes(spec: ModelSpec | Mapping[str, Any] | str | Path) -> tuple[LayerShape, ...]:
    """Per-layer input and output shapes of a spec, found without building it."""
    return _plan(load_spec(spec))[1]
