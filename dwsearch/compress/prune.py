"""Structured pruning with Torch-Pruning, written back as a dwsearch spec.

Torch-Pruning traces a model into a dependency graph: channels that must go together (a conv's
outputs, its batch norm, the next conv's inputs, a depthwise conv's channels, both sides of a
residual add, the parts of a concatenation, squeeze-excite's gate) form one group, and a group
is pruned as a whole. dwsearch asks it for local pruning: every group loses the same share of
its channels, its least important ones, and the share is the smallest that meets a MAC or
parameter target (found by bisection, each try on a copy). The pruned network is then written
back as a spec (new ``out_channels``, ``groups``, hybrid ``ratio``, ``se_ratio`` and inverted
residual ``mid_channels``), rebuilt from it and loaded with the pruned weights with every key
and shape checked: what comes out is an ordinary dwsearch model whose costs, deployment,
export and reports need nothing special.

Never pruned: the classifier's outputs (the classes), any layer down to no channel, and a
depthwise conv with a channel multiplier (Torch-Pruning 1.6 cannot keep its groups
consistent; it and the channels feeding it keep their width). A target that cannot be met,
a block Torch-Pruning cannot trace, or pruned widths no spec can state are each one located
:class:`CompressError` line, raised before any fine-tuning.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dwsearch.blocks.common import SqueezeExcite, squeeze_channels
from dwsearch.builder import Network, build_model
from dwsearch.compress.config import PruneConfig, PruneTarget
from dwsearch.costs import BNMode, count_macs
from dwsearch.data.tensors import DataSplits, ImageTensors
from dwsearch.errors import CompressError, DwsearchError, first_line, reason
from dwsearch.registry import block_info, canonical_layer, canonical_name
from dwsearch.spec import LayerSpec, ModelSpec
from dwsearch.train.config import TrainConfig

__all__ = ["INSTALL_HINT", "PruneOutcome", "Pruned", "is_checkpoint", "load_source",
           "prune_and_finetune", "prune_model", "pruned_spec", "trained_source"]

INSTALL_HINT = "pip install 'dwsearch[compress]'"
# Layers whose parameters Torch-Pruning knows how to cut; a parameter anywhere else (a raw
# nn.Parameter used in a functional call) is outside its graph.
_KNOWN_PARAMETER_OWNERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
# Blocks that pass channels through unchanged (no arguments to rewrite).
_PASS_THROUGH = ("maxpool", "avgpool", "global_avgpool", "dropout", "dropout2d", "flatten")
# The pruned model must compute what the spec rebuilt from it computes: equal up to float
# summation order, as a fraction of the largest logit (at least 1).
_REBUILD_TOLERANCE = 1e-5


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError as err:
        raise CompressError(f"pruning: Torch-Pruning is not installed (cannot import "
                            f"{err.name or 'torch_pruning'}); {INSTALL_HINT}") from err
    return torch_pruning


@dataclass(frozen=True)
class Costs:
    """A model's size: parameters and MACs per sample (the :mod:`dwsearch.costs` convention,
    batch norm as ``bn`` says)."""

    params: int
    macs: int

    def of(self, metric: str) -> int:
        return self.params if metric == "params" else self.macs


@dataclass(frozen=True)
class Pruned:
    """A pruned model as an ordinary dwsearch model: ``model`` is built from ``spec`` with the
    pruned weights loaded (CPU, eval mode)."""

    model: Network
    spec: ModelSpec
    target: PruneTarget
    importance: str
    ratio: float  # share of its channels each prunable group lost (0..1)
    before: Costs
    after: Costs
    bn: str  # how batch norm counted in the MACs: "counted" or "folded"
    seconds: float  # wall time of the search and the rebuild

    def summary(self) -> str:
        """Two lines for people: the target and what was reached."""
        metric = self.target.metric
        kept = self.after.of(metric) / max(self.before.of(metric), 1)
        return (f"pruned {self.ratio:.1%} of the channels of every prunable layer "
                f"({self.importance}) for target {self.target}: {metric} "
                f"{self.before.of(metric):,} -> {self.after.of(metric):,} ({kept:.1%} kept)\n"
                f"params {self.before.params:,} -> {self.after.params:,}, MACs "
                f"{self.before.macs:,} -> {self.after.macs:,} ({self.seconds:.1f} s)")


def _costs(model: nn.Module, shape: tuple[int, ...], bn: BNMode) -> Costs:
    return Costs(sum(p.numel() for p in model.parameters()),
                 count_macs(model, shape, bn=bn).total)


def _layer_of(name: str) -> int:
    """The top-level layer index of a parameter or module name ("3.dw.conv" -> 3)."""
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def _where(spec: ModelSpec, index: int) -> str:
    if 0 <= index < len(spec.layers):
        return f"layers[{index}] ({spec.layers[index].block})"
    return "model"


def _check_traceable(model: Network) -> None:
    """Refuse parameters Torch-Pruning cannot see: held by a module other than a conv,
    linear or norm layer (a raw nn.Parameter in a functional call)."""
    for module_name, module in model.named_modules():
        if isinstance(module, _KNOWN_PARAMETER_OWNERS):
            continue
        for param_name, _ in module.named_parameters(recurse=False):
            index = _layer_of(module_name)
            inner = f"{module_name.partition('.')[2]}.{param_name}".lstrip(".")
            raise CompressError(
                f"{_where(model.spec, index)}: Torch-Pruning cannot trace it: its parameter "
                f"{inner!r} belongs to a {type(module).__name__}, not to a layer Torch-Pruning "
                f"knows (Conv2d, Linear, BatchNorm2d); prune a model without this block")


def _classifier(model: nn.Module) -> nn.Module:
    """The last layer with parameters: its outputs are the classes (or feed them unchanged,
    through pooling and flattening), so they are never pruned."""
    for layer in reversed(list(model.children())):
        if any(True for _ in layer.parameters()):
            return layer
    raise CompressError("model: no layer has parameters; nothing to prune")


def _depthwise_multipliers(model: nn.Module) -> list[str]:
    """Names of depthwise convs with a channel multiplier (groups == in < out)."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels != m.out_channels]


@dataclass
class _Search:
    """What every pruning try shares: the model, what stays unpruned, the importance."""

    model: Network
    example: torch.Tensor
    importance: str
    frozen: tuple[str, ...]  # module names whose output channels stay
    gradients: Mapping[str, torch.Tensor]  # taylor: parameter name -> gradient

    def pruner(self, model: nn.Module, ratio: float) -> Any:
        tp = _torch_pruning()
        modules = dict(model.named_modules())
        ignored = [_classifier(model)] + [modules[n] for n in self.frozen]
        if self.importance == "taylor":
            for name, param in model.named_parameters():
                param.grad = self.gradients[name].clone() if name in self.gradients else None
            importance = tp.importance.TaylorImportance()
        else:
            importance = tp.importance.MagnitudeImportance(p=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its notes on unwrapped parameters and such
            return tp.pruner.BasePruner(model, self.example, importance=importance,
                                        pruning_ratio=ratio, ignored_layers=ignored)

    def attempt(self, ratio: float) -> nn.Module:
        """A copy of the model pruned by ``ratio`` (gradients dropped afterwards)."""
        pruned = copy.deepcopy(self.model)
        if ratio > 0:
            pruner = self.pruner(pruned, ratio)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pruner.step()
        for param in pruned.parameters():
            param.grad = None
        return pruned


def _inspect(model: Network, example: torch.Tensor) -> tuple[str, ...]:
    """Trace the model once: refuse one whose graph, traced back from its output, misses a
    conv or linear layer (a block that detaches its input or runs under no_grad cuts
    Torch-Pruning off from everything before it), and return the modules that keep their
    widths: depthwise convs with a multiplier and every layer whose outputs feed them
    (Torch-Pruning would cut those inconsistently)."""
    tp = _torch_pruning()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    modules = dict(model.named_modules())
    unreached = [name for name, m in modules.items()
                 if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in graph.module2node]
    if unreached:
        last = max(_layer_of(name) for name in unreached)
        cut = min(last + 1, len(model.spec.layers) - 1)
        raise CompressError(
            f"{_where(model.spec, cut)}: Torch-Pruning cannot trace it: the graph traced back "
            f"from the output stops there, so {_where(model.spec, last)} before it is never "
            f"reached (a detach, no_grad or non-differentiable op in its forward?); prune a "
            f"model without this block")
    by_module = {m: n for n, m in modules.items()}
    frozen = set(_depthwise_multipliers(model))
    for name in sorted(frozen):
        conv = modules[name]
        group = graph.get_pruning_group(conv, graph.get_pruner_of_module(conv).prune_in_channels,
                                        [0])
        for dep, _ in group:
            if graph.is_out_channel_pruning_fn(dep.handler) and dep.target.module in by_module:
                frozen.add(by_module[dep.target.module])
    return tuple(sorted(frozen))


def _largest_ratio(search: _Search) -> tuple[float, int, int]:
    """The largest share of channels every group can lose while each keeps at least one
    channel (per channel group of a grouped conv), with the layer that limits it and its
    channel count. Above it Torch-Pruning would skip the group (it refuses to empty one), so
    MACs would stop falling: the bisection stays below."""
    model = copy.deepcopy(search.model)
    pruner = search.pruner(model, 0.5)
    by_module = {m: n for n, m in model.named_modules()}
    best = (1.0, -1, 0)
    groups = pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                      root_module_types=pruner.root_module_types)
    for group in groups:
        root = group[0].dep.target.module
        channels = pruner.DG.get_out_channels(root)
        # Torch-Pruning 1.6 (pinned below 1.7): the channel groups of a grouped conv.
        size = channels // pruner._get_channel_groups(group)
        if size <= 1:
            continue  # one channel: never pruned
        limit = 1.0 - 1.0 / size - 1e-9
        if limit < best[0]:
            best = (limit, _layer_of(by_module.get(root, "")), channels)
    return best


def _gradients(model: Network, train: ImageTensors, batches: int, batch_size: int, seed: int
               ) -> dict[str, torch.Tensor]:
    """Gradients of the cross-entropy summed over ``batches`` batches of training images, in
    eval mode (batch norm's running statistics stay as trained)."""
    from dwsearch.data.loader import BatchLoader

    loader = BatchLoader(train, batch_size=min(batch_size, len(train)), shuffle=True, seed=seed)
    model = copy.deepcopy(model).eval()
    model.zero_grad(set_to_none=True)
    for step, batch in enumerate(loader):
        if step == batches:
            break
        F.cross_entropy(model(batch[0]), batch[1]).backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()
            if p.grad is not None}


def _first_failing_layer(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, Exception]:
    x = torch.zeros(1, *shape)
    with torch.no_grad():
        for index, layer in enumerate(model.children()):
            try:
                x = layer(x)
            except Exception as err:
                return index, err
    raise AssertionError("no layer failed")


def prune_model(
    model: Network,
    target: PruneTarget | Mapping[str, Any] | str,
    *,
    importance: str = "magnitude",
    train: ImageTensors | None = None,
    taylor_batches: int = 4,
    taylor_batch_size: int = 64,
    bn: BNMode = "counted",
    seed: int = 0,
) -> Pruned:
    """Prune ``model``'s channels until ``target`` holds and return the result as a spec and a
    model rebuilt from it (``model`` itself is not changed).

    ``target``: :class:`PruneTarget`, ``{macs: 0.5}`` (keep at most half the MACs),
    ``{params: 100K}`` (at most 100,000 parameters) or ``"macs=0.5"``; MACs are counted as
    :func:`dwsearch.costs.profile` counts them (``bn``). Every prunable group loses the same
    share of its channels: the smallest share (to within one channel of the widest group)
    for which the target holds, so the result lies at or just below it. ``importance``:
    ``magnitude`` or ``taylor``, which needs ``train`` (the **training** split):
    ``taylor_batches`` batches of ``taylor_batch_size`` images (drawn with ``seed``) give
    the gradients.

    Raises :class:`CompressError` (one line, nothing fine-tuned yet) when Torch-Pruning is
    missing, a block cannot be traced, the target is met already or cannot be met without
    emptying a layer, or the pruned widths cannot be stated in a spec.
    """
    start = time.perf_counter()
    if not isinstance(model, Network):
        raise CompressError(f"model: expected a network built from a spec (build_model), "
                            f"found {type(model).__name__}")
    target = PruneTarget.parse(target)
    if importance not in ("magnitude", "taylor"):
        raise CompressError(f"importance: expected magnitude or taylor, found {importance!r}")
    if importance == "taylor" and train is None:
        raise CompressError("importance: taylor needs the training split (train=) for its "
                            "gradients")
    _torch_pruning()
    spec = model.spec
    shape = spec.input_shape
    model = copy.deepcopy(model).cpu().eval()
    _check_traceable(model)
    example = torch.zeros(1, *shape)
    before = _costs(model, shape, bn)
    current = before.of(target.metric)
    limit = target.resolve(current)
    if limit >= current:
        raise CompressError(f"target {target}: the model has {current:,} {target.metric} "
                            f"already; nothing to prune; give a ratio in (0, 1) or a count "
                            f"below {current:,}")
    gradients: dict[str, torch.Tensor] = {}
    if importance == "taylor":
        assert train is not None
        gradients = _gradients(model, train, taylor_batches, taylor_batch_size, seed)
    try:
        search = _Search(model, example, importance, _inspect(model, example), gradients)
        largest, limiting_layer, limiting_channels = _largest_ratio(search)
    except DwsearchError:
        raise
    except Exception as err:
        raise _untraceable(model, err) from err

    def measure(ratio: float) -> tuple[nn.Module, int]:
        try:
            pruned = search.attempt(ratio)
            value = _costs(pruned, shape, bn).of(target.metric)
        except DwsearchError:
            raise
        except Exception as err:
            raise _untraceable(model, err) from err
        return pruned, value

    best, reached = measure(largest)
    if reached > limit:
        floor = reached / max(current, 1)
        raise CompressError(
            f"target {target}: cannot be met without removing a whole layer: "
            f"{_where(spec, limiting_layer)} keeps 1 of its {limiting_channels} channels when "
            f"every layer loses {largest:.1%}, and the model still has {reached:,} "
            f"{target.metric} ({floor:.1%}); allowed: a target of at least {reached:,} "
            f"({floor:.3f} as a ratio)")
    low, high = 0.0, largest
    widest = max((m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)),
                 default=1)
    while high - low > 1.0 / (4 * widest):
        middle = (low + high) / 2
        pruned, value = measure(middle)
        if value <= limit:
            best, high = pruned, middle
        else:
            low = middle
    new_spec = pruned_spec(spec, best)
    rebuilt = _rebuild(new_spec, best)
    after = _costs(rebuilt, shape, bn)
    return Pruned(rebuilt, new_spec, target, importance, high, before, after, bn,
                  time.perf_counter() - start)


def _untraceable(model: Network, err: Exception) -> CompressError:
    """A located error for a model Torch-Pruning failed on: the first layer that fails
    alone, else the whole model."""
    tp = _torch_pruning()
    shape = model.spec.input_shape
    x = torch.zeros(1, *shape)
    for index, layer in enumerate(model.children()):
        if any(True for _ in layer.parameters()):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    probe = tp.pruner.BasePruner(
                        copy.deepcopy(layer), x, importance=tp.importance.MagnitudeImportance(),
                        pruning_ratio=0.5)
                    probe.step()
            except Exception as inner:
                return CompressError(f"{_where(model.spec, index)}: Torch-Pruning cannot "
                                     f"trace it ({reason(inner, 120)}); prune a model "
                                     f"without this block")
        with torch.no_grad():
            x = layer(x)
    return CompressError(f"model: Torch-Pruning cannot trace it ({reason(err, 160)})")


def _output_shapes(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    x = torch.zeros(1, *shape)
    shapes = []
    with torch.no_grad():
        for layer in model.children():
            x = layer(x)
            shapes.append(tuple(x.shape[1:]))
    return shapes


def _se_args(args: dict[str, Any], se: nn.Module, written: float) -> None:
    """``se_ratio`` for a pruned squeeze-excite: the one written where it still gives the
    pruned squeeze width, else squeeze / channels exactly (round() gives the width back)."""
    if not isinstance(se, SqueezeExcite):
        return
    channels, squeezed = se.conv_reduce.in_channels, se.conv_reduce.out_channels
    if squeeze_channels(channels, written) != squeezed:
        args["se_ratio"] = squeezed / channels


def pruned_spec(spec: ModelSpec, model: nn.Module) -> ModelSpec:
    """The spec of a pruned copy of ``spec``'s network: each layer's widths as the pruned
    modules have them (``out_channels``, ``out_features``, ``groups``, hybrid ``ratio``,
    ``se_ratio``, inverted residual ``mid_channels``, an explicit ``skip: false`` where equal
    widths would now add a residual the block did not have). A user's block gets
    ``out_channels`` / ``out_features`` from its output shape. Raises :class:`CompressError`
    when the shapes cannot run."""
    layers_in: list[Any] = list(model.children())  # block modules, read by their fields
    try:
        shapes = _output_shapes(model, spec.input_shape)
    except Exception as err:
        index, cause = _first_failing_layer(model, spec.input_shape)
        raise CompressError(f"{_where(spec, index)}: Torch-Pruning cannot trace it: pruned, "
                            f"it fails on its input ({first_line(cause)[:160]}); prune a model "
                            f"without this block") from err
    layers = []
    channels_in = spec.input_shape[0]
    for index, (layer, module) in enumerate(zip(spec.layers, layers_in, strict=True)):
        block = canonical_name(layer.block)
        written = canonical_layer(block, layer.args)[1]
        args = {k: v for k, v in layer.args.items() if k not in ("in_channels", "in_features")}
        out = shapes[index]
        if block in ("conv", "grouped"):
            args["out_channels"] = module.conv.out_channels
            if block == "grouped":
                args["groups"] = module.conv.groups
        elif block == "dwsep":
            args["out_channels"] = module.pw.conv.out_channels
            _se_args(args, module.se, written["se_ratio"])
        elif block == "hybrid":
            standard = module.conv.conv.out_channels if module.conv is not None else 0
            separable = module.dwsep.pw.conv.out_channels if module.dwsep is not None else 0
            total = standard + separable
            args["out_channels"] = total
            if round(written["ratio"] * total) != standard:
                args["ratio"] = standard / total
        elif block == "inverted_residual":
            out_channels = module.project.conv.out_channels
            mid = module.dw.conv.out_channels
            args["out_channels"] = out_channels
            args.pop("mid_channels", None)
            if written["expand_ratio"] != 1 and mid != channels_in * written["expand_ratio"]:
                args["mid_channels"] = mid
            _se_args(args, module.se, written["se_ratio"])
            if (written["skip"] is None and not module.has_skip and written["stride"] == 1
                    and channels_in == out_channels):
                args["skip"] = False  # equal widths now: the default would add a residual
        elif block == "linear":
            args["out_features"] = module.fc.out_features
        elif block not in _PASS_THROUGH:
            parameters = block_info(block).factory
            names = _parameter_names(parameters)
            if "out_channels" in names and len(out) == 3:
                args["out_channels"] = out[0]
            elif "out_features" in names and len(out) == 1:
                args["out_features"] = out[0]
        layers.append(LayerSpec(layer.block, args))
        channels_in = out[0] if out else channels_in
    name = f"{spec.name}-pruned" if spec.name and not spec.name.endswith("-pruned") else spec.name
    return ModelSpec(spec.input_shape, spec.num_classes, tuple(layers), name)


def _parameter_names(factory: Any) -> set[str]:
    import inspect

    return set(inspect.signature(factory).parameters)


def _rebuild(spec: ModelSpec, pruned: nn.Module) -> Network:
    """``spec`` built and loaded with the pruned weights, every key and shape checked, and
    its outputs checked against the pruned module's: a spec that does not state the pruned
    widths is a located error, never a different model."""
    try:
        rebuilt = build_model(spec)
    except DwsearchError as err:
        raise CompressError(f"the pruned widths cannot be stated in a spec: {err}") from err
    expected = rebuilt.state_dict()
    weights = pruned.state_dict()
    for key in sorted(set(expected) | set(weights), key=_layer_of):
        mine = expected.get(key)
        theirs = weights.get(key)
        if mine is None or theirs is None or mine.shape != theirs.shape:
            found = "missing" if theirs is None else f"shape {tuple(theirs.shape)}"
            built = "no such weight" if mine is None else f"{tuple(mine.shape)}"
            inner = key.partition(".")[2]
            raise CompressError(
                f"{_where(spec, _layer_of(key))}: its pruned widths cannot be stated in a spec: "
                f"{inner!r} pruned is {found}, built from the spec {built}; prune a model "
                f"without this block")
    rebuilt.load_state_dict(weights, strict=True)
    rebuilt.eval()
    pruned.eval()
    sample = torch.randn(4, *spec.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, mine = pruned(sample), rebuilt(sample)
    scale = max(1.0, float(reference.abs().max()))
    difference = float((reference - mine).abs().max())
    if not difference <= _REBUILD_TOLERANCE * scale:
        raise CompressError(f"model: rebuilt from its pruned spec it computes other outputs "
                            f"(max |difference| {difference:.3g}); the spec misses a width a "
                            f"block derives")
    return rebuilt


# -- pruning a trained model, then fine-tuning it ----------------------------------------------


@dataclass(frozen=True)
class PruneOutcome:
    """A pruned and fine-tuned model: the pruning, validation accuracy before pruning, right
    after it, and the fine-tuning's run record (None with ``finetune_epochs`` 0)."""

    pruned: Pruned
    original: Network  # the trained model that was pruned (CPU, eval mode)
    source: Mapping[str, Any]  # what was pruned: spec hash, weights checksum, name, file
    val_accuracy_before: float | None
    val_accuracy_pruned: float | None
    record: Any  # dwsearch.records.RunRecord of the fine-tuning, or None

    def summary(self) -> str:
        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.2%}"

        after = self.record.val_accuracy if self.record is not None else None
        epochs = self.record.train["epochs"] if self.record is not None else 0
        return (f"{self.pruned.summary()}\nvalidation accuracy: {pct(self.val_accuracy_before)}"
                f" before, {pct(self.val_accuracy_pruned)} pruned, {pct(after)} after {epochs} "
                f"epoch(s) of fine-tuning")


def is_checkpoint(source: object) -> bool:
    """Whether ``source`` names a file to load weights from, not a spec (a file or a
    built-in name): a file that is not YAML or JSON, or any name ending in a checkpoint's
    suffix (so a missing one is said to be a missing checkpoint)."""
    if not isinstance(source, (str, Path)):
        return False
    suffix = Path(source).suffix.lower()
    return suffix in (".pt", ".pth", ".ckpt") or (
        Path(source).is_file() and suffix not in (".yaml", ".yml", ".json"))


def load_source(source: Network | str | Path) -> tuple[Network, dict[str, Any]]:
    """A trained model (a built network, or a dwsearch checkpoint with its spec), CPU, eval
    mode, and its identity for the record (spec hash, weights checksum, name, file)."""
    from dwsearch.compress.distill import weights_checksum

    path = None
    if isinstance(source, (str, Path)):
        from dwsearch.run import model_from_checkpoint

        path = str(source)
        model = model_from_checkpoint(source)
    elif isinstance(source, Network):
        model = source
    else:
        raise CompressError(f"source: expected a checkpoint file or a network, found "
                            f"{type(source).__name__}")
    identity = {"spec_hash": model.spec.hash(), "weights": weights_checksum(model),
                "name": model.spec.name, "file": path}
    return model.cpu().eval(), identity


def trained_source(
    source: Any, data: Any, recipe: TrainConfig, *, progress: bool | None = None
) -> tuple[Network, dict[str, Any], DataSplits, Any]:
    """The trained model to compress, its identity, the data splits and their configuration.

    ``source``: a network or a dwsearch checkpoint (trained already), or a spec (a file,
    built-in name, mapping or ModelSpec), trained first with ``recipe``. ``data``: a
    :class:`DataConfig` or splits already loaded. The model must have the data's classes
    and input shape.
    """
    import tempfile

    from dwsearch.data.config import DataConfig
    from dwsearch.run import fit_spec_to_data, load_data, train_spec
    from dwsearch.zoo import load_spec

    if not isinstance(data, (DataConfig, DataSplits)):
        raise CompressError(f"data: expected a DataConfig or DataSplits, found "
                            f"{type(data).__name__}")
    data_config = data if isinstance(data, DataConfig) else None
    if isinstance(source, Network) or is_checkpoint(source):
        model, identity = load_source(source)
        splits = data if isinstance(data, DataSplits) else load_data(model.spec, data)
        if fit_spec_to_data(model.spec, splits) != model.spec:
            raise CompressError(f"source: {identity['name'] or 'the model'} has "
                                f"{model.spec.num_classes} classes but the data "
                                f"{len(splits.classes)}; compress a model trained on this data")
        return model, identity, splits, data_config
    spec = load_spec(source)
    splits = data if isinstance(data, DataSplits) else load_data(spec, data)
    with tempfile.TemporaryDirectory(prefix="dwsearch-compress-") as folder:
        checkpoint = Path(folder) / "trained.pt"
        record = train_spec(spec, splits, recipe, test=False, checkpoint=checkpoint,
                            progress=progress, data_config=data_config)
        if record.status != "completed":
            raise CompressError(f"source: training {spec.name or 'the spec'} ended "
                                f"{record.status}: {record.message}")
        model, identity = load_source(checkpoint)
    identity.update(file=None, trained_epochs=recipe.epochs, seed=recipe.seed)
    return model, identity, splits, data_config


def prune_and_finetune(
    source: Any,
    data: Any,
    recipe: TrainConfig,
    prune: PruneConfig,
    *,
    test: bool = True,
    progress: bool | None = None,
    bn: BNMode = "counted",
    data_config: Any = None,
    callbacks: Iterable[Callable[[Any], None]] = (),
    extra: Mapping[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    overwrite: bool = False,
) -> PruneOutcome:
    """Prune a trained model to ``prune.target`` and fine-tune it with the normal trainer for
    ``prune.finetune_epochs`` epochs of ``recipe`` (its ``epochs`` replaced), on ``data`` (a
    :class:`DataConfig` or splits already loaded; pass ``data_config`` with splits so the
    record says how they were made).

    ``source``: a network or checkpoint (trained), or a spec, first trained with ``recipe``
    as it is. Taylor importance reads gradients of training images. Validation accuracy is
    measured before pruning and right after it; the fine-tuning's record keeps what was
    pruned (spec hash and weights checksum), the target, the importance and the costs before
    and after under ``compression["prune"]``. ``checkpoint`` receives the fine-tuned model
    (spec and weights). Every pruning error is raised before fine-tuning starts.
    """
    from dataclasses import replace

    from dwsearch.run import train_spec

    if not isinstance(prune, PruneConfig):
        raise CompressError(f"prune: expected a PruneConfig, found {type(prune).__name__}")
    if not isinstance(recipe, TrainConfig):
        raise CompressError(f"recipe: expected a TrainConfig, found {type(recipe).__name__}")
    _torch_pruning()  # before any data loads or anything trains
    if checkpoint is not None:
        from dwsearch.train.checkpoint import prepare_checkpoint

        prepare_checkpoint(checkpoint, resume=False, overwrite=overwrite)
    model, identity, splits, loaded_config = trained_source(source, data, recipe,
                                                            progress=progress)
    data_config = data_config if data_config is not None else loaded_config
    pruned, info = prune_trained(model, identity, prune, splits, recipe, bn=bn)
    record = None
    if prune.finetune_epochs:
        record = train_spec(pruned.spec, splits, replace(recipe, epochs=prune.finetune_epochs),
                            test=test, progress=progress, bn=bn, data_config=data_config,
                            callbacks=callbacks, extra=extra, checkpoint=checkpoint,
                            overwrite=overwrite, weights=pruned.model.state_dict(),
                            compression={"prune": info})
    return PruneOutcome(pruned, model, identity, info["val_accuracy_before"],
                        info["val_accuracy_pruned"], record)


def prune_trained(model: Network, identity: Mapping[str, Any], prune: PruneConfig,
                  splits: DataSplits, recipe: TrainConfig, *, bn: BNMode = "counted"
                  ) -> tuple[Pruned, dict[str, Any]]:
    """Prune the trained ``model`` (``identity``: what it is, see :func:`load_source`) as
    ``prune`` says, measuring validation accuracy before and right after: the pruned model
    and plain data for the fine-tuning record's ``compression["prune"]``."""
    from dwsearch.compress.compare import val_accuracy

    before = val_accuracy(model, splits, recipe)
    pruned = prune_model(model, prune.target, importance=prune.importance, train=splits.train,
                         taylor_batches=prune.taylor_batches,
                         taylor_batch_size=prune.taylor_batch_size, bn=bn, seed=recipe.seed)
    info = {"from": dict(identity), "target": str(pruned.target),
            "metric": pruned.target.metric, "value": pruned.target.value,
            "importance": pruned.importance, "ratio": pruned.ratio,
            "before": asdict(pruned.before), "after": asdict(pruned.after), "bn": bn,
            "finetune_epochs": prune.finetune_epochs, "val_accuracy_before": before,
            "val_accuracy_pruned": val_accuracy(pruned.model, splits, recipe)}
    return pruned, info
