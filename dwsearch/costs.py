"""Exact costs of a network: parameters, multiply-adds (fvcore), activations, latency.

Convention (stated in every printed table):

* One multiply-add = one MAC; FLOPs = 2 x MACs. Counted at batch 1, in eval mode.
* Convolution and linear layers: their multiply-adds (fvcore), bias additions not counted.
  A k x k conv costs H_out x W_out x C_out x (C_in / groups) x k^2 MACs.
* Batch norm: ``bn="counted"`` charges 1 MAC per output element (at inference it is one
  scale-and-shift, y = a*x + b); ``bn="folded"`` charges 0, as after folding it into the
  preceding conv for deployment.
* Element-wise arithmetic: residual add and squeeze-excite's gating multiply, 1 MAC per output
  element. Average pooling (fixed or global/adaptive) and ``mean``: 1 MAC per input element
  accumulated (fixed windows: kernel area per output element).
* Comparisons and non-linearities cost 0 MACs: ReLU, ReLU6 (hardtanh), max pooling, sigmoid,
  hardswish, SiLU. Reshapes, concatenation and dropout (a no-op at inference) are free.

fvcore knows only some of these ops; the handles below cover the rest so that no registry
block leaves an op uncounted (``Profile.unsupported_ops`` says if a user block does).

Memory, per sample:

* Activations: elements output by conv and linear (matmul) ops, as fvcore's
  ``ActivationCountAnalysis`` counts them (batch 1, eval mode). Pooling, normalisation,
  non-linearities and reshapes add none: the count says how much the layer computes into, not
  how much autograd keeps.
* Saved bytes: what autograd keeps for the backward pass, measured with
  ``torch.autograd.graph.saved_tensors_hooks`` during one training-mode forward pass (fp32
  unless asked for bf16 autocast). Each saved storage counts once, in full, in the layer that
  first saves it (an in-place ReLU's output is also the next conv's input). Per sample: the
  slope between batch 2 and batch 3, which drops everything the batch does not scale
  (weights, BN's per-channel statistics).
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from dwsearch.builder import Network, build_model, infer_shapes
from dwsearch.convention import BN_MODES, CONVENTION, convention
from dwsearch.errors import ConfigError, CostError, first_line
from dwsearch.limits import check_memory
from dwsearch.runtime import device_name, resolve_device, torch_threads
from dwsearch.spec import ModelSpec
from dwsearch.zoo import load_spec

__all__ = [
    "CONVENTION",
    "ActivationCount",
    "LatencyResult",
    "LayerCost",
    "MacCount",
    "Profile",
    "SavedBytes",
    "check_latency_memory",
    "count_activations",
    "count_macs",
    "measure_latency",
    "measure_saved_bytes",
    "profile",
]

BNMode = Literal["counted", "folded"]
Precision = Literal["fp32", "bf16"]


def _numel(value: Any) -> int:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    return math.prod(shape) if shape else 0


def _per_output(inputs: list[Any], outputs: list[Any]) -> int:
    return _numel(outputs[0])


def _per_input(inputs: list[Any], outputs: list[Any]) -> int:
    return _numel(inputs[0])


def _free(inputs: list[Any], outputs: list[Any]) -> int:
    return 0


def _avg_pool(inputs: list[Any], outputs: list[Any]) -> int:
    kernel = inputs[1].toIValue()
    if kernel is None:  # traced as a list built at run time: read its constant elements
        kernel = [v.toIValue() for v in inputs[1].node().inputs()]
    if not isinstance(kernel, (list, tuple)):
        kernel = [kernel]
    area = math.prod(int(k) for k in kernel)
    if len(kernel) == 1:
        area *= area
    return area * _numel(outputs[0])


_HANDLES: dict[str, Callable[[list[Any], list[Any]], int]] = {
    "aten::add": _per_output,
    "aten::add_": _per_output,
    "aten::mul": _per_output,
    "aten::mul_": _per_output,
    "aten::avg_pool2d": _avg_pool,
    "aten::adaptive_avg_pool2d": _per_input,
    "aten::mean": _per_input,
    "aten::max_pool2d": _free,
    "aten::sigmoid": _free,
    "aten::sigmoid_": _free,
    "aten::hardtanh": _free,
    "aten::hardtanh_": _free,
    "aten::hardswish": _free,
    "aten::hardswish_": _free,
    "aten::silu": _free,
    "aten::silu_": _free,
    "aten::relu": _free,
    "aten::relu_": _free,
    "aten::dropout": _free,
    "aten::dropout_": _free,
    "aten::feature_dropout": _free,
    "aten::feature_dropout_": _free,
}


def _model_and_spec(
    model_or_spec: nn.Module | ModelSpec | Mapping[str, Any] | str | Path,
    input_shape: tuple[int, ...] | None,
) -> tuple[nn.Module, ModelSpec | None, tuple[int, ...]]:
    """The model, its spec (None for a plain module) and the input shape (C, H, W): the one
    given, else the spec's."""
    if isinstance(model_or_spec, nn.Module):
        model = model_or_spec
        spec = model_or_spec.spec if isinstance(model_or_spec, Network) else None
    else:
        spec = load_spec(model_or_spec)
        model = build_model(spec)
    if input_shape is None:
        if spec is None:
            raise ConfigError("input_shape is required for a model not built from a spec")
        return model, spec, spec.input_shape
    shape = _check_input_shape(input_shape)
    if spec is not None and shape != spec.input_shape:
        # The layers were built for the spec's input: check the new one through the builder
        # (shapes and memory, on the meta device) before running anything.
        infer_shapes(spec.with_overrides({"input": list(shape)}))
    check_memory(4 * math.prod(shape), f"input_shape {shape}: one sample")
    _probe(model, shape)
    return model, spec, shape


def _check_input_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (list, tuple)):
        raise ConfigError(f"input_shape: expected (C, H, W), found {input_shape!r}")
    shape = tuple(input_shape)
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ConfigError(f"input_shape: expected positive integers like (3, 32, 32), found "
                          f"{input_shape!r}")
    return shape


def _probe(model: nn.Module, shape: tuple[int, ...]) -> None:
    """One zero sample through a plain module, so a shape it cannot take is one line."""
    try:
        with _mode(model, training=False), torch.no_grad():
            model(torch.zeros(1, *shape, device=_device(model)))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ConfigError(f"input_shape {shape}: the model fails on it: "
                          f"{first_line(err)}") from err


@dataclass(frozen=True)
class MacCount:
    """MACs of one sample under the module convention."""

    total: int
    by_module: Mapping[str, int]  # every module name ("" is the whole model) -> MACs
    by_operator: Mapping[str, int]  # fvcore's operator names ("conv", "linear", ...) -> MACs
    unsupported: Mapping[str, int]  # ops with no handle -> how often they ran (not counted)


@dataclass(frozen=True)
class ActivationCount:
    """Elements output by conv and linear (matmul) ops for one sample, as fvcore counts them."""

    total: int
    by_module: Mapping[str, int]  # every module name ("" is the whole model) -> elements
    by_operator: Mapping[str, int]  # "conv", "linear", "addmm", ... -> elements


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextlib.contextmanager
def _mode(model: nn.Module, *, training: bool) -> Iterator[None]:
    """Put every module in training or eval mode, then give each its own mode back (a model
    may hold a frozen, eval-mode part while it trains)."""
    modes = [(module, module.training) for module in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


# What the tracer says when a forward turns a tensor into a Python value: the trace then
# holds only the path its input took (one branch of an ``if``, one loop count).
_VALUE_DEPENDENT = "Converting a tensor to a Python"


def _value_dependent(caught: list[warnings.WarningMessage]) -> str | None:
    for item in caught:
        if issubclass(item.category, torch.jit.TracerWarning) and _VALUE_DEPENDENT in str(
            item.message
        ):
            return str(item.message).strip().split(". ")[0]
    return None


def _probe_inputs(input_shape: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
    """Inputs that take different paths through value-dependent code: zero, positive,
    negative, large, random (seeded locally; the global RNG is untouched)."""
    ones = torch.ones(1, *input_shape, device=device)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(1, *input_shape, generator=gen).to(device)
    return [torch.zeros_like(ones), ones, -ones, 1000 * ones, noise]


def _macs_by_module(model: nn.Module, sample: torch.Tensor) -> dict[str, int]:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, sample)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    for op, handle in _HANDLES.items():
        analysis.set_op_handle(op, handle)
    analysis.set_op_handle("aten::batch_norm", _per_output)
    return {k: int(v) for k, v in analysis.by_module().items()}


def _refuse_value_dependent(model: nn.Module, input_shape: tuple[int, ...], message: str
                            ) -> None:
    """The tracer saw a tensor turned into a Python value. Branching on a shape is harmless
    here (the counts are for this shape); branching on values is not. Count again on inputs
    that take other paths, and raise CostError naming the first top-level layer whose count
    changes; equal counts everywhere pass."""
    samples = _probe_inputs(input_shape, _device(model))
    with _mode(model, training=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = [_macs_by_module(model, sample) for sample in samples]
    spec = model.spec if isinstance(model, Network) else None
    for index, (name, child) in enumerate(model.named_children()):
        if len({c.get(name, 0) for c in counts}) > 1:
            block = spec.layers[index].block if spec is not None else type(child).__name__
            found = ", ".join(f"{c.get(name, 0):,}" for c in counts)
            raise CostError(
                f"layers[{index}] ({block}): its forward branches on tensor values ({message}); "
                f"its MACs change with the input ({found} on zero, one, minus one, 1000 and "
                f"random inputs), so its costs cannot be counted exactly"
            )
    if len({c.get("", 0) for c in counts}) > 1:
        raise CostError(f"the model's forward branches on tensor values ({message}); its MACs "
                        f"change with the input, so its costs cannot be counted exactly")


@contextlib.contextmanager
def _fvcore_trace(model: nn.Module, input_shape: tuple[int, ...]) -> Iterator[torch.Tensor]:
    """Eval mode and quiet warnings while fvcore traces ``model``; yields a batch-1 zero input.

    fvcore analyses are lazy, so every query must run inside this block. A trace that turned
    a tensor into a Python value is checked afterwards (:func:`_refuse_value_dependent`): a
    model whose counts depend on its input's values is a :class:`CostError` naming the
    layer, not a count that silently misses a branch.
    """
    with _mode(model, training=False), warnings.catch_warnings(record=True) as caught:
        # Everything else is noise here (torch.jit's deprecation, fvcore's skipped ops, which
        # the results report); tracer warnings are kept and read.
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", torch.jit.TracerWarning)
        yield torch.zeros(1, *input_shape, device=_device(model))
    found = _value_dependent(caught)
    if found is not None:
        _refuse_value_dependent(model, input_shape, found)


def _quiet(analysis: Any) -> None:
    """Silence an fvcore analysis: ops it skips are reported through its results instead;
    tracer warnings pass through to :func:`_fvcore_trace`, which reads them."""
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("all")


def count_macs(
    model: nn.Module, input_shape: tuple[int, ...], *, bn: BNMode = "counted"
) -> MacCount:
    """MACs of ``model`` on one input of ``input_shape`` (C, H, W) under the module convention."""
    if bn not in BN_MODES:
        raise ConfigError(f"bn must be one of {', '.join(map(repr, BN_MODES))}, found {bn!r}")
    with _fvcore_trace(model, input_shape) as sample:
        from fvcore.nn import FlopCountAnalysis  # imported here: its import warns too

        analysis = FlopCountAnalysis(model, sample)
        _quiet(analysis)
        for op, handle in _HANDLES.items():
            analysis.set_op_handle(op, handle)
        analysis.set_op_handle("aten::batch_norm", _per_output if bn == "counted" else _free)
        return MacCount(
            total=int(analysis.total()),
            by_module={k: int(v) for k, v in analysis.by_module().items()},
            by_operator={k: int(v) for k, v in analysis.by_operator().items()},
            unsupported=dict(analysis.unsupported_ops()),
        )


def count_activations(model: nn.Module, input_shape: tuple[int, ...]) -> ActivationCount:
    """Elements output by the conv and linear ops of ``model`` for one input of ``input_shape``.

    fvcore's ``ActivationCountAnalysis`` on the eval-mode model at batch 1: every other op
    (pooling, batch norm, activations, adds, reshapes) counts 0, so it is not reported.
    """
    with _fvcore_trace(model, input_shape) as sample:
        from fvcore.nn import ActivationCountAnalysis  # imported here: its import warns too

        analysis = ActivationCountAnalysis(model, sample)
        _quiet(analysis)
        return ActivationCount(
            total=int(analysis.total()),
            by_module={k: int(v) for k, v in analysis.by_module().items()},
            by_operator={k: int(v) for k, v in analysis.by_operator().items()},
        )


# Batch sizes the saved-bytes slope is taken between. Not 1: batch norm refuses a single value
# per channel in training mode, which a BN after global pooling would see at batch 1.
_SAVED_BATCHES = (2, 3)


@dataclass(frozen=True)
class SavedBytes:
    """Bytes autograd keeps for the backward pass, per sample, by top-level layer."""

    total: int
    by_layer: Mapping[str, int]  # child name -> bytes; "" for ops run outside any child
    precision: Precision


def _storage_key_and_bytes(tensor: torch.Tensor) -> tuple[Any, int]:
    """What a saved tensor keeps alive: its whole storage, whichever view of it is saved."""
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # no plain storage (e.g. a tensor subclass)
        return ("tensor", id(tensor)), tensor.numel() * tensor.element_size()
    return (storage.device, storage.data_ptr()), storage.nbytes()


def _saved_by_layer(
    model: nn.Module, sample: torch.Tensor, precision: Precision
) -> dict[str, int]:
    """Bytes of the distinct storages autograd saves in one forward pass, by the top-level
    child running when each is first saved."""
    current = [""]
    first_saved: dict[Any, tuple[str, int]] = {}
    # Held until the pass ends so that no saved storage is freed and its address reused by
    # a later one (only a branch whose result is dropped could free it earlier).
    kept: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        # Two ops often save the same storage (an in-place ReLU's output is the next conv's
        # input); autograd keeps it once, so it is counted once, where it is first saved.
        key, nbytes = _storage_key_and_bytes(tensor)
        first_saved.setdefault(key, (current[0], nbytes))
        kept.append(tensor)
        return tensor

    def enter(name: str) -> Callable[..., None]:
        return lambda *_: current.__setitem__(0, name)

    hooks = []
    for name, child in model.named_children():
        hooks.append(child.register_forward_pre_hook(enter(name)))
        hooks.append(child.register_forward_hook(enter("")))
    try:
        with (
            torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
            torch.autocast(sample.device.type, dtype=torch.bfloat16,
                           enabled=precision == "bf16"),
        ):
            model(sample)
    finally:
        for handle in hooks:
            handle.remove()
        kept.clear()
    by_layer: dict[str, int] = {}
    for layer, nbytes in first_saved.values():
        by_layer[layer] = by_layer.get(layer, 0) + nbytes
    return by_layer


def measure_saved_bytes(
    model: nn.Module, input_shape: tuple[int, ...], *, precision: Precision = "fp32"
) -> SavedBytes:
    """Bytes per sample that autograd saves for the backward pass of ``model`` in training mode.

    Measured with saved-tensor hooks on one forward pass (no backward) at each of two batch
    sizes; the per-layer slope between them is the per-sample cost and drops what does not
    scale with the batch (parameters, BN statistics). A storage saved by several ops counts
    once, in full, in the top-level layer that saves it first; the input batch counts where
    a layer saves it. ``precision="bf16"`` runs under bf16 autocast. The measurement runs on
    the model's device (on CPU, dropout keeps an fp32 mask; CUDA keeps a 1-byte one).

    The model is left as it was: buffers (BN running statistics) restored, mode restored,
    and the global RNG (which dropout draws from) forked.
    """
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be 'fp32' or 'bf16', found {precision!r}")
    device = _device(model)
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    small, large = _SAVED_BATCHES
    try:
        with (
            _mode(model, training=True),
            torch.random.fork_rng(devices=[] if device.type == "cpu" else [device],
                                  device_type=None if device.type == "cpu" else device.type),
            torch.inference_mode(False),  # a graph must be recorded even if the caller is in
            torch.enable_grad(),  # inference mode or no_grad
        ):
            at_small = _saved_by_layer(
                model, torch.zeros(small, *input_shape, device=device), precision
            )
            at_large = _saved_by_layer(
                model, torch.zeros(large, *input_shape, device=device), precision
            )
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    by_layer = {
        name: (nbytes - at_small.get(name, 0)) // (large - small)
        for name, nbytes in at_large.items()
    }
    by_layer = {name: nbytes for name, nbytes in by_layer.items() if nbytes}
    return SavedBytes(total=sum(by_layer.values()), by_layer=by_layer, precision=precision)


def _layer_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Each top-level child's output shape (no batch dimension), from one eval-mode forward
    pass at batch 1; the model's mode is restored."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, child in model.named_children():

        def hook(_m: nn.Module, _inputs: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape[1:])

        hooks.append(child.register_forward_hook(hook))
    try:
        with _mode(model, training=False), torch.no_grad():
            model(torch.zeros(1, *input_shape, device=_device(model)))
    finally:
        for handle in hooks:
            handle.remove()
    return shapes


@dataclass(frozen=True)
class LayerCost:
    """Costs of one top-level layer; shapes exclude the batch dimension."""

    index: int
    name: str  # module name ("0", "1", ...) for built networks
    block: str  # registry block, or the module's class name for plain models
    args: str  # the layer's spec arguments, compact
    out_shape: tuple[int, ...]
    params: int
    macs: int
    activations: int  # elements its conv/linear ops output, one sample (fvcore)
    saved_bytes: int  # bytes autograd keeps for backward, per sample, training mode


@dataclass(frozen=True)
class Profile:
    """What a network costs, before any training; every count is per sample."""

    input_shape: tuple[int, ...]
    bn: BNMode
    params: int
    trainable_params: int
    macs: int  # batch 1, eval mode
    activations: int  # elements output by conv/linear ops (fvcore ActivationCountAnalysis)
    saved_bytes: int  # bytes autograd keeps for backward in training mode (see precision)
    layers: tuple[LayerCost, ...]
    by_operator: Mapping[str, int] = field(default_factory=dict)
    unsupported_ops: Mapping[str, int] = field(default_factory=dict)
    spec_name: str | None = None
    spec_hash: str | None = None
    precision: Precision = "fp32"  # of the saved-bytes measurement

    @property
    def flops(self) -> int:
        """FLOPs = 2 x MACs."""
        return 2 * self.macs

    @property
    def convention(self) -> str:
        return convention(self.bn, self.precision)

    def to_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "layer": c.index, "block": c.block, "args": c.args,
                "output": "x".join(map(str, c.out_shape)), "params": c.params,
                "macs": c.macs, "activations": c.activations, "saved_bytes": c.saved_bytes,
            }
            for c in self.layers
        ]

    def format_table(self) -> str:
        """The per-layer table with totals and the counting convention, as plain text."""
        head = ["layer", "block", "args", "output", "params", "MACs", "activations",
                "saved/sample KiB"]
        rows = [
            [str(c.index), c.block, c.args, "x".join(map(str, c.out_shape)),
             f"{c.params:,}", f"{c.macs:,}", f"{c.activations:,}", _kib(c.saved_bytes)]
            for c in self.layers
        ]
        rows.append(["", "total", "", "", f"{self.params:,}", f"{self.macs:,}",
                     f"{self.activations:,}", _kib(self.saved_bytes)])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        right = {0, 4, 5, 6, 7}

        def line(cells: list[str]) -> str:
            return "  ".join(
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        rule = "  ".join("-" * w for w in widths)
        title = f"{self.spec_name or 'model'}: input {'x'.join(map(str, self.input_shape))}"
        totals = (
            f"params {self.params:,} ({self.params / 1e6:.3f} M)   "
            f"MACs {self.macs:,} ({self.macs / 1e6:.2f} M)   "
            f"FLOPs {self.flops / 1e6:.2f} M   activations {self.activations:,}   "
            f"saved {self.saved_bytes / 2**20:.2f} MiB/sample"
        )
        out = [title, line(head), rule, *map(line, rows[:-1]), rule, line(rows[-1]), totals,
               f"convention: {self.convention}"]
        if self.unsupported_ops:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.unsupported_ops.items()))
            out.append(f"warning: ops not counted (no handle): {ops}")
        return "\n".join(out)


def _kib(nbytes: int) -> str:
    return f"{nbytes / 1024:,.1f}"


def _compact_args(args: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items())


def profile(
    model_or_spec: nn.Module | ModelSpec | Mapping[str, Any] | str | Path,
    input_shape: tuple[int, ...] | None = None,
    *,
    bn: BNMode = "counted",
    precision: Precision = "fp32",
) -> Profile:
    """Parameters, MACs, activations and saved bytes (all per sample), by layer and in total.

    ``model_or_spec``: a built model, a ModelSpec or dict, a YAML path or a built-in name.
    ``input_shape`` (C, H, W) defaults to the spec's. ``precision`` is that of the
    saved-bytes measurement (``measure_saved_bytes``). The model is left as it was: mode,
    buffers and the global RNG state.
    """
    model, spec, input_shape = _model_and_spec(model_or_spec, input_shape)
    macs = count_macs(model, input_shape, bn=bn)
    activations = count_activations(model, input_shape)
    saved = measure_saved_bytes(model, input_shape, precision=precision)
    shapes = _layer_shapes(model, input_shape)
    layers = []
    for index, (name, child) in enumerate(model.named_children()):
        if spec is not None and index < len(spec.layers):
            block, args = spec.layers[index].block, _compact_args(spec.layers[index].args)
        else:
            block, args = type(child).__name__, ""
        layers.append(
            LayerCost(
                index=index, name=name, block=block, args=args,
                out_shape=shapes.get(name, ()),
                params=sum(p.numel() for p in child.parameters()),
                macs=macs.by_module.get(name, 0),
                activations=activations.by_module.get(name, 0),
                saved_bytes=saved.by_layer.get(name, 0),
            )
        )
    return Profile(
        input_shape=input_shape,
        bn=bn,
        params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=macs.total,
        activations=activations.total,
        saved_bytes=saved.total,
        layers=tuple(layers),
        by_operator=macs.by_operator,
        unsupported_ops=macs.unsupported,
        spec_name=spec.name if spec is not None else type(model).__name__,
        spec_hash=spec.hash() if spec is not None else None,
        precision=precision,
    )


# -- latency ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyResult:
    """Forward-pass latency of one batch, in milliseconds, and the conditions measured under."""

    median_ms: float
    q1_ms: float  # 25th percentile
    q3_ms: float  # 75th percentile
    min_ms: float
    max_ms: float
    repeats: int
    warmup: int
    batch_size: int
    input_shape: tuple[int, ...]
    device: str  # "cpu" or "cuda:0"
    device_name: str
    threads: int  # torch intra-op threads used
    channels_last: bool
    torch_version: str
    samples_ms: tuple[float, ...] = ()

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    @property
    def images_per_second(self) -> float:
        return self.batch_size / (self.median_ms / 1000.0)

    def summary(self) -> str:
        return (
            f"latency {self.median_ms:.3f} ms median (IQR {self.q1_ms:.3f}-{self.q3_ms:.3f}, "
            f"{self.repeats} repeats after {self.warmup} warm-up) at batch {self.batch_size} on "
            f"{self.device_name} ({self.device}, {self.threads} threads"
            f"{', channels_last' if self.channels_last else ''}), torch {self.torch_version}"
        )


def check_latency_memory(model: nn.Module, input_shape: tuple[int, ...], batch_size: int
                          ) -> None:
    """Refuse a latency batch whose inference would exceed the memory limit: per sample, the
    largest input + output of any layer (what inference holds at once), for the batch, plus
    a copy of the weights."""
    per_sample = 2 * math.prod(input_shape)
    if isinstance(model, Network) and model.shapes:
        per_sample = max(math.prod(s.in_shape) + math.prod(s.out_shape) for s in model.shapes)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    check_memory(batch_size * per_sample * 4 + weights,
                 f"batch_size {batch_size:,}: a latency measurement",
                 detail=f"{per_sample * 4:,} bytes of activations per sample",
                 hint="use a smaller --batch-size")


def measure_latency(
    model_or_spec: nn.Module | ModelSpec | Mapping[str, Any] | str | Path,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    channels_last: bool = False,
    warmup: int = 10,
    repeats: int = 50,
) -> LatencyResult:
    """Median inference latency (eval mode, ``torch.inference_mode``) of a copy of the model.

    Each repeat times one forward pass; on CUDA the device is synchronised before and after,
    so the time covers the kernels, not just their launch. ``threads`` sets torch's intra-op
    threads for the measurement and restores the previous value afterwards.
    """
    for name, value, least in (("batch_size", batch_size, 1), ("repeats", repeats, 1),
                               ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name}: expected an integer >= {least}, found {value!r}")
    model, _spec, input_shape = _model_and_spec(model_or_spec, input_shape)
    dev = resolve_device(device)
    check_latency_memory(model, input_shape, batch_size)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).to(dev).to(memory_format=memory_format).eval()
    sample = torch.randn(batch_size, *input_shape, device=dev).contiguous(
        memory_format=memory_format
    )
    samples: list[float] = []
    with torch_threads(threads) as used_threads, torch.inference_mode():
        for _ in range(warmup):
            model(sample)
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            model(sample)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            samples.append((time.perf_counter() - start) * 1000.0)
    quartiles = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return LatencyResult(
        median_ms=statistics.median(samples),
        q1_ms=quartiles[0],
        q3_ms=quartiles[2],
        min_ms=min(samples),
        max_ms=max(samples),
        repeats=repeats,
        warmup=warmup,
        batch_size=batch_size,
        input_shape=tuple(input_shape),
        device=str(dev) if dev.type == "cpu" else f"cuda:{dev.index or 0}",
        device_name=device_name(dev),
        threads=used_threads,
        channels_last=channels_last,
        torch_version=torch.__version__,
        samples_ms=tuple(samples),
    )

