"""The search space: from a study's ``space`` entries to concrete (spec, training recipe) pairs.

A *dimension* is one ``space`` entry. Its *parameters* are what a trial chooses: one per
dimension, or one per layer with ``per_layer: true``. A *configuration* is a mapping of
parameter names to values; :meth:`Space.apply` turns it into the ``ModelSpec`` and training
recipe it stands for. Keys:

* ``layers[SEL].ARG`` with SEL an index (``3``), a slice (``0:3``, ``-2:``) or a list
  (``0,1,2,4``): the argument ARG (``block``, ``kernel_size``, ``multiplier``,
  ``expand_ratio``, ``ratio``, ``se_ratio``...) of the selected layers. ``block`` is applied
  first; when a layer's block changes, the arguments the new block does not take are dropped.
  Other arguments apply only to layers whose (new) block takes them, and whose arguments
  match ``when`` (``when: {block: hybrid}``), so conditional spaces need no special syntax.
  An entry that could never apply (an argument no block its layers can have takes, a
  ``when`` no layer can match) is refused, and so are two entries for one layer's argument
  (unless they are conditioned on different blocks).
* ``width``: a multiplier of every layer's ``out_channels`` and of every hidden linear layer's
  ``out_features`` (the classifier keeps the number of classes), rounded as MobileNet does
  (to a multiple of 8, never below 90% of the exact value); 1.0 is the base itself.
* ``model``: whole specs (built-in names or files), for comparing given architectures.
* ``train.FIELD``: a training hyperparameter (lr, weight_decay, optimizer, batch_size, ...).

Parameters are chosen in a fixed order (model, width, blocks, other layer arguments, training),
so a parameter's applicability depends only on the ones chosen before it: Optuna's
define-by-run samplers, the grid and the ablation see the same space. No optuna import here:
samplers reach it through the small :class:`Suggest` protocol.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from dwsearch.arguments import describe_found
from dwsearch.errors import DwsearchError, SpecError, StudyError
from dwsearch.registry import INFERRED_ARGUMENTS, block_signature, canonical_name
from dwsearch.spec import LayerSpec, ModelSpec, parse_layer_key, select_layers
from dwsearch.study.config import Choices, Range, StudyConfig
from dwsearch.train.config import TrainConfig
from dwsearch.zoo import load_spec

__all__ = ["Dimension", "Space", "Suggest", "config_hash", "make_divisible"]

# Recipe fields a space may vary; device, threads, precision and the like are how a worker
# runs, not what is being compared.
TRAIN_FIELDS = ("optimizer", "lr", "momentum", "weight_decay", "nesterov", "batch_size",
                "epochs", "label_smoothing", "schedule", "augment")
# Distillation settings a space may vary (train.distill.alpha: [0, 0.9] compares training
# without the teacher and with it, paired by seed).
DISTILL_FIELDS = ("distill.alpha", "distill.temperature")


def _check_distill_value(name: str, value: Any) -> None:
    from dwsearch.compress.config import DistillConfig
    from dwsearch.errors import ConfigError

    try:
        DistillConfig("teacher", **{name.split(".")[1]: value})
    except ConfigError as err:
        raise StudyError(str(err)) from err


# Combinations a grid or an ablation may enumerate, counted before duplicates are removed (two
# names of one block, widths that round alike): enumerating is what costs. Also the limit on
# the values of all choice lists together (make_plan builds a model for each).
MAX_CONFIGURATIONS = 10_000
_ORDER = {"model": 0, "width": 1, "block": 2, "layer": 3, "train": 4}


class Suggest(Protocol):
    """What a sampler offers: Optuna's trial, behind three methods."""

    def categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    def integer(self, name: str, low: int, high: int, step: int, log: bool) -> int: ...

    def real(self, name: str, low: float, high: float, step: float | None, log: bool) -> float:
        ...


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: the nearest multiple of ``divisor`` (at least
    ``divisor``), never more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def config_hash(config: Mapping[str, Any]) -> str:
    """Identity of a configuration (parameter names and values), 16 hex characters."""
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Dimension:
    """One ``space`` entry, parsed."""

    key: str  # as written in the study file
    kind: str  # "model", "width", "block", "layer" or "train"
    arg: str = ""  # layer argument or training field
    layers: tuple[int, ...] = ()  # selected layer indices (layer dimensions)
    choices: tuple[Any, ...] = ()  # categorical values; empty for a range
    range: Range | None = None
    per_layer: bool = False
    when: Mapping[str, Any] = field(default_factory=dict)

    def values(self) -> list[Any]:
        """Every value (a range's grid), for the grid and the ablation."""
        if self.range is None:
            return list(self.choices)
        return self.range.values()

    def suggest(self, suggest: Suggest, name: str) -> Any:
        if self.range is None:
            return suggest.categorical(name, list(self.choices))
        r = self.range
        if r.is_int:
            return suggest.integer(name, int(r.low), int(r.high), int(r.step or 1), r.log)
        return suggest.real(name, float(r.low), float(r.high),
                            None if r.step is None else float(r.step), r.log)


def _accepts(block: str, arg: str) -> bool:
    params = block_signature(block).parameters
    return arg in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _takes_anything(block: str) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD
               for p in block_signature(block).parameters.values())


def _arguments(block: str) -> list[str]:
    """The arguments a space may vary on ``block`` (not the inferred ones)."""
    return [name for name, p in block_signature(block).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and name not in INFERRED_ARGUMENTS]


def _default(block: str, arg: str) -> Any:
    """What a layer of ``block`` has for ``arg`` when it does not say (as _layer_value)."""
    param = block_signature(block).parameters.get(arg)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def _layer_list(indices: Sequence[int]) -> str:
    if len(indices) == 1:
        return f"layer {indices[0]}"
    shown = ",".join(map(str, indices[:12])) + (",..." if len(indices) > 12 else "")
    return f"layers {shown}"


def _layer_value(layer: LayerSpec, arg: str) -> Any:
    """The layer's value of ``arg``: as written, else the block's default (None if none)."""
    if arg == "block":
        return layer.block
    if arg in layer.args:
        return layer.args[arg]
    param = block_signature(layer.block).parameters.get(arg)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


@dataclass
class _Draft:
    """A configuration being applied: the spec's layers as plain dicts, and recipe changes."""

    spec: ModelSpec
    layers: list[dict[str, Any]]
    train: dict[str, Any]

    def layer(self, index: int) -> LayerSpec:
        data = self.layers[index]
        return LayerSpec(data["block"], {k: v for k, v in data.items() if k != "block"})


class Space:
    """The parsed space of one study, bound to its base model."""

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        self.base = self._resolve_base(config)
        self.models: dict[str, ModelSpec] = {}
        self.dimensions: list[Dimension] = []
        # The model dimension first: layer selectors are checked against every model.
        entries = sorted(config.model.space.items(), key=lambda item: item[0] != "model")
        for key, raw in entries:
            self.dimensions.append(self._parse(key, raw))
        self.dimensions.sort(key=lambda d: _ORDER[d.kind])
        self._check_sizes()
        self._check_overlaps()
        for position, dim in enumerate(self.dimensions):
            if dim.kind in ("block", "layer"):
                self._check_reachable(position, dim)

    # -- parsing --------------------------------------------------------------------------
    def _resolve_base(self, config: StudyConfig) -> ModelSpec:
        base = config.model.base
        where = f"{config.source}: base"
        try:
            if isinstance(base, str):
                return self._spec_named(base, where)
            return ModelSpec.from_dict(base, source=where)
        except SpecError as err:
            message = str(err)
            raise StudyError(message if message.startswith(config.source)
                             else f"{where}: {message}") from err

    def _spec_named(self, name: str, where: str) -> ModelSpec:
        """A built-in spec name, or a spec file relative to the study file."""
        path = Path(name)
        if path.suffix in (".yaml", ".yml", ".json") and not path.is_absolute():
            path = self.config.directory / path
            return load_spec(path)
        try:
            return load_spec(name)
        except SpecError as err:
            raise SpecError(f"{where}: {err}") from err

    def _parse(self, key: str, raw: Any) -> Dimension:
        where = f"{self.config.source}: space.{key}"
        spec_choices: Choices | Range = Choices(choices=raw) if isinstance(raw, list) else raw
        choices = tuple(spec_choices.choices) if isinstance(spec_choices, Choices) else ()
        rng = spec_choices if isinstance(spec_choices, Range) else None
        per_layer, when = spec_choices.per_layer, dict(spec_choices.when)
        if len(set(map(repr, choices))) != len(choices):
            raise StudyError(f"{where}: the same value appears twice in {list(choices)}")
        if key == "model":
            return self._parse_model(where, choices, rng, per_layer, when)
        if key == "width":
            if rng is None and not all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and 0 < c <= 16
                for c in choices
            ):
                raise StudyError(f"{where}: widths are numbers in (0, 16], found {list(choices)}")
            if rng is not None and not 0 < rng.low <= rng.high <= 16:
                raise StudyError(f"{where}: widths are numbers in (0, 16], found "
                                 f"{rng.low}..{rng.high}")
            self._no_layer_options(where, per_layer, when)
            return Dimension(key, "width", choices=choices, range=rng)
        if key.startswith("train."):
            name = key[len("train."):]
            if name not in TRAIN_FIELDS + DISTILL_FIELDS:
                hint = _close(name, TRAIN_FIELDS + DISTILL_FIELDS)
                raise StudyError(f"{where}: {name!r} is not a training field a space can vary; "
                                 f"{hint}allowed: {', '.join(TRAIN_FIELDS + DISTILL_FIELDS)}")
            if name in DISTILL_FIELDS and self.config.distill is None:
                raise StudyError(f"{where}: the study has no train.distill section (the "
                                 f"teacher) to vary {name.split('.')[1]} of; add one")
            self._no_layer_options(where, per_layer, when)
            dim = Dimension(key, "train", arg=name, choices=choices, range=rng)
            probe: tuple[Any, ...] = choices if rng is None else (rng.low, rng.high)
            for value in probe:
                changes: dict[str, Any] = {name: value}
                try:
                    if name in DISTILL_FIELDS:
                        _check_distill_value(name, value)
                    else:
                        replace(self.config.train_config(), **changes)
                except DwsearchError as err:
                    hint = describe_found(value)[len(repr(value)):] if isinstance(
                        value, str) else ""  # '1e-3': YAML's text, with how to write it
                    raise StudyError(f"{where}: {err}{hint}") from err
            return dim
        parsed = parse_layer_key(key)
        if parsed is None:
            raise StudyError(
                f"{where}: unknown key; allowed: layers[i].ARG, layers[i:j].ARG, "
                f"layers[i,j].ARG, width, model, train.FIELD"
            )
        selector, arg = parsed
        layers = self._select(selector, where)
        if arg in ("in_channels", "in_features"):
            raise StudyError(f"{where}: {arg} is inferred from the previous layer; vary the "
                             f"previous layer's out_channels instead")
        if "block" in when:
            wanted = when["block"]
            try:
                canonical_name(wanted) if isinstance(wanted, str) else None
            except SpecError as err:
                raise StudyError(f"{where}: when.block: {err}") from err
            if not isinstance(wanted, str):
                raise StudyError(f"{where}: when.block: expected a block name, found "
                                 f"{describe_found(wanted)}")
        if arg == "block":
            if rng is not None or not all(isinstance(c, str) for c in choices):
                raise StudyError(f"{where}: blocks are names, found {raw!r}")
            named: dict[str, str] = {}
            for value in choices:
                try:
                    canonical = canonical_name(str(value))
                except SpecError as err:
                    raise StudyError(f"{where}: {err}") from err
                if canonical in named:
                    raise StudyError(f"{where}: {value!r} and {named[canonical]!r} are two "
                                     f"names of one block ({canonical}); keep one")
                named[canonical] = str(value)
            return Dimension(key, "block", "block", layers, choices, None, per_layer, when)
        return Dimension(key, "layer", arg, layers, choices, rng, per_layer, when)

    def _parse_model(self, where: str, choices: tuple[Any, ...], rng: Range | None,
                     per_layer: bool, when: Mapping[str, Any]) -> Dimension:
        if rng is not None or not all(isinstance(c, str) for c in choices):
            raise StudyError(f"{where}: models are built-in spec names or spec files")
        self._no_layer_options(where, per_layer, when)
        for name in choices:
            try:
                self.models[name] = self._spec_named(name, where)
            except SpecError as err:
                message = str(err)
                raise StudyError(message if message.startswith(where)
                                 else f"{where}: {message}") from err
        return Dimension("model", "model", choices=choices)

    @staticmethod
    def _no_layer_options(where: str, per_layer: bool, when: Mapping[str, Any]) -> None:
        if per_layer or when:
            raise StudyError(f"{where}: per_layer and when apply to layers[...] keys only")

    def _select(self, selector: str, where: str) -> tuple[int, ...]:
        n = min([len(self.base.layers), *(len(m.layers) for m in self.models.values())])
        try:
            return select_layers(selector, n)
        except ValueError as err:
            raise StudyError(f"{where}: {err}") from None

    # -- whole-space checks -----------------------------------------------------------------
    def _where(self, dim: Dimension) -> str:
        return f"{self.config.source}: space.{dim.key}"

    def _check_sizes(self) -> None:
        """make_plan builds a model for every listed value: bound how many there are."""
        total = 0
        for dim in self.dimensions:
            total += len(dim.choices)
            if total > MAX_CONFIGURATIONS:
                raise StudyError(f"{self._where(dim)}: the space lists more than "
                                 f"{MAX_CONFIGURATIONS:,} values in all (each is checked by "
                                 f"building its model); use ranges or fewer values")

    def _check_overlaps(self) -> None:
        """One entry per layer and argument: a second would silently override the first
        (``layers[2].block`` and ``layers[ 2 ].block``, ``layers[0:3].block`` and
        ``layers[1].block``). Entries for different blocks (``when: {block: ...}``) may
        share layers: at most one of them applies to a layer."""
        owners: dict[tuple[int, str], Dimension] = {}
        for dim in self.dimensions:
            if dim.kind not in ("block", "layer"):
                continue
            for index in dim.layers:
                first = owners.setdefault((index, dim.arg), dim)
                if first is dim or self._exclusive(first, dim):
                    continue
                raise StudyError(
                    f"{self._where(dim)}: layer {index}'s {dim.arg} is also varied by "
                    f"space.{first.key}; one would silently override the other: keep one "
                    f"entry per layer and argument (entries with different when: {{block: ...}}"
                    f" may share layers)")

    @staticmethod
    def _exclusive(a: Dimension, b: Dimension) -> bool:
        """Whether ``a`` and ``b`` never apply to the same layer: both are conditioned on
        different blocks (blocks are all chosen before any other layer argument)."""
        if a.kind != "layer" or b.kind != "layer" or "block" not in a.when or (
                "block" not in b.when):
            return False
        return canonical_name(str(a.when["block"])) != canonical_name(str(b.when["block"]))

    def _specs(self) -> list[ModelSpec]:
        return [self.base, *self.models.values()]

    def _blocks(self, index: int, position: int) -> set[str]:
        """Every block layer ``index`` can have when the dimension at ``position`` applies:
        the base's (or a model's), and the choices of earlier block entries for it."""
        out = {canonical_name(spec.layers[index].block) for spec in self._specs()
               if index < len(spec.layers)}
        for dim in self.dimensions[:position]:
            if dim.kind == "block" and index in dim.layers:
                out.update(canonical_name(str(c)) for c in dim.choices)
        return out

    def _possible(self, index: int, arg: str, wanted: Any, position: int,
                  blocks: set[str]) -> bool:
        """Whether layer ``index`` can have ``arg == wanted`` when the dimension at
        ``position`` applies (an over-estimate: each argument on its own)."""
        values: list[Any] = [_layer_value(spec.layers[index], arg) for spec in self._specs()
                             if index < len(spec.layers)]
        values += [_default(block, arg) for block in blocks]
        for dim in self.dimensions[:position]:
            if dim.kind == "width" and arg in ("out_channels", "out_features"):
                return True
            if dim.kind == "layer" and dim.arg == arg and index in dim.layers:
                rng = dim.range
                if rng is None:
                    values += list(dim.choices)
                elif (isinstance(wanted, (int, float)) and not isinstance(wanted, bool)
                      and rng.low <= wanted <= rng.high):
                    return True
        return any(v == wanted and isinstance(v, bool) == isinstance(wanted, bool)
                   for v in values)

    def _check_reachable(self, position: int, dim: Dimension) -> None:
        """An entry that can never apply is a mistake, not a smaller space: an argument no
        block of its layers takes (``kernal_size``), a ``when`` no layer can match."""
        where = self._where(dim)
        blocks = {i: self._blocks(i, position) for i in dim.layers}
        if "block" in dim.when:
            wanted = canonical_name(str(dim.when["block"]))
            every = sorted(set().union(*blocks.values()))
            blocks = {i: {b for b in found if b == wanted} for i, found in blocks.items()}
            if not any(blocks.values()):
                raise StudyError(f"{where}: when.block: {dim.when['block']!r} is never the block "
                                 f"of {_layer_list(dim.layers)} (it can be {', '.join(every)});"
                                 f" the entry would never apply")
        candidates = [i for i in dim.layers if blocks[i]]
        every = sorted(set().union(*(blocks[i] for i in candidates)))
        names = sorted({a for b in every for a in _arguments(b)})

        def unknown(arg: str, what: str) -> StudyError:
            close = difflib.get_close_matches(arg, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            them = "the block" if len(every) == 1 else "the blocks"
            return StudyError(f"{where}{what}: {arg!r} is not an argument of {', '.join(every)},"
                              f" {them} {_layer_list(candidates)} can have; {hint}allowed: "
                              f"{', '.join(names)}")

        if dim.kind == "layer":
            if not any(_accepts(b, dim.arg) for i in candidates for b in blocks[i]):
                raise unknown(dim.arg, "")
            candidates = [i for i in candidates if any(_accepts(b, dim.arg) for b in blocks[i])]
        if not any(_takes_anything(b) for b in every):
            for arg in dim.when:
                if arg != "block" and arg not in names:
                    raise unknown(arg, f": when.{arg}")
        conditions = [(a, w) for a, w in dim.when.items() if a != "block"]
        if any(all(self._possible(i, a, w, position, blocks[i]) for a, w in conditions)
               for i in candidates):
            return
        for arg, wanted in conditions:
            if not any(self._possible(i, arg, wanted, position, blocks[i]) for i in candidates):
                later = next((d for d in self.dimensions[position + 1:] if d.kind == "layer"
                              and d.arg == arg and set(d.layers) & set(candidates)), None)
                hint = (f" (space.{later.key} varies {arg}, but entries apply in the order "
                        f"they are listed, blocks first: list it before this one)"
                        if later is not None else "")
                raise StudyError(f"{where}: when.{arg}: {_layer_list(candidates)} never "
                                 f"{'has' if len(candidates) == 1 else 'have'} {arg} = "
                                 f"{describe_found(wanted)} when this entry is applied, so it "
                                 f"would never apply{hint}")
        raise StudyError(f"{where}: when: no layer of {_layer_list(candidates)} can match "
                         f"every condition of {dict(dim.when)} at once, so the entry would "
                         f"never apply")

    # -- configurations ---------------------------------------------------------------------
    def _draft(self, model: str | None) -> _Draft:
        spec = self.models[model] if model is not None else self.base
        return _Draft(spec, [layer.to_dict() for layer in spec.layers], {})

    def _params(self, dim: Dimension, draft: _Draft) -> list[tuple[str, tuple[int, ...]]]:
        """The parameters ``dim`` has for the configuration drafted so far: (name, layers)."""
        if dim.kind in ("model", "width", "train"):
            return [(dim.key, ())]
        applicable = tuple(i for i in dim.layers if self._applies(dim, draft, i))
        if not applicable:
            return []
        if dim.per_layer:
            return [(f"layers[{i}].{dim.arg}", (i,)) for i in applicable]
        return [(dim.key, applicable)]

    def _applies(self, dim: Dimension, draft: _Draft, index: int) -> bool:
        if index >= len(draft.layers):
            return False
        layer = draft.layer(index)
        if dim.kind == "layer" and not _accepts(canonical_name(layer.block), dim.arg):
            return False
        for arg, wanted in dim.when.items():
            current = _layer_value(layer, arg)
            if arg == "block":
                current, wanted = canonical_name(current), canonical_name(str(wanted))
            if current != wanted:
                return False
        return True

    def _set(self, dim: Dimension, draft: _Draft, layers: tuple[int, ...], value: Any) -> None:
        if dim.kind == "width":
            self._scale(draft, float(value))
        elif dim.kind == "train":
            draft.train[dim.arg] = value
        elif dim.kind == "block":
            for i in layers:
                old = draft.layers[i]
                new_block = canonical_name(value)
                if canonical_name(old["block"]) == new_block:
                    continue
                kept = {k: v for k, v in old.items() if k != "block" and _accepts(new_block, k)}
                draft.layers[i] = {"block": value, **kept}
        else:
            for i in layers:
                draft.layers[i][dim.arg] = value

    @staticmethod
    def _scale(draft: _Draft, width: float) -> None:
        if width == 1:  # the base network itself, not its channels rounded to multiples of 8
            return
        last_linear = max((i for i, d in enumerate(draft.layers) if "out_features" in d),
                          default=None)
        for i, layer in enumerate(draft.layers):
            if isinstance(layer.get("out_channels"), int):
                layer["out_channels"] = make_divisible(layer["out_channels"] * width)
            if i != last_linear and isinstance(layer.get("out_features"), int):
                layer["out_features"] = make_divisible(layer["out_features"] * width)

    def _finish(self, draft: _Draft) -> tuple[ModelSpec, dict[str, Any]]:
        spec = ModelSpec(draft.spec.input_shape, draft.spec.num_classes,
                         tuple(draft.layer(i) for i in range(len(draft.layers))),
                         draft.spec.name)
        return spec, dict(draft.train)

    def apply(self, config: Mapping[str, Any]) -> tuple[ModelSpec, dict[str, Any]]:
        """The spec and training-recipe changes a configuration stands for. Parameters that
        do not apply (a ``ratio`` where no layer is ``hybrid``) are ignored."""
        draft = self._draft(config.get("model"))
        for dim in self.dimensions:
            if dim.kind == "model":
                continue
            for name, layers in self._params(dim, draft):
                if name in config:
                    self._set(dim, draft, layers, config[name])
        return self._finish(draft)

    def record(self, config: Mapping[str, Any], suggest: Suggest) -> None:
        """Tell the sampler about a configuration fixed in advance (grid, ablation, repeats),
        so Optuna stores its parameters; values come back unchanged."""
        draft = self._draft(config.get("model"))
        for dim in self.dimensions:
            if dim.kind == "model":
                if "model" in config:
                    dim.suggest(suggest, "model")
                continue
            for name, layers in self._params(dim, draft):
                if name in config:
                    dim.suggest(suggest, name)
                    self._set(dim, draft, layers, config[name])

    def suggest(self, suggest: Suggest) -> dict[str, Any]:
        """Choose a configuration through a sampler, parameter by parameter."""
        chosen: dict[str, Any] = {}
        model_dim = next((d for d in self.dimensions if d.kind == "model"), None)
        if model_dim is not None:
            chosen["model"] = model_dim.suggest(suggest, "model")
        draft = self._draft(chosen.get("model"))
        for dim in self.dimensions:
            if dim.kind == "model":
                continue
            for name, layers in self._params(dim, draft):
                value = dim.suggest(suggest, name)
                chosen[name] = value
                self._set(dim, draft, layers, value)
        return chosen

    def _combinations(self) -> Iterator[dict[str, Any]]:
        """Every combination of values, before duplicates are removed."""
        model_dim = next((d for d in self.dimensions if d.kind == "model"), None)
        models = model_dim.values() if model_dim is not None else [None]
        for model in models:
            start = {"model": model} if model is not None else {}
            yield from self._expand(self._draft(model), 0, start)

    def _product(self) -> int | None:
        """The product of every entry's numbers of values (each per_layer layer counted), an
        upper bound of the combinations; None where a range cannot be counted."""
        total = 1
        for dim in self.dimensions:
            try:
                count = dim.range.count() if dim.range is not None else len(dim.choices)
            except ValueError:
                return None
            total *= count ** (len(dim.layers) if dim.per_layer else 1)
        return total

    def grid(self) -> list[dict[str, Any]]:
        """Every configuration (the cartesian product, conditional parameters only where they
        apply), without duplicates of the same architecture and recipe. The combinations are
        counted first, before anything is built or compared, and more than
        :data:`MAX_CONFIGURATIONS` are refused."""
        raw = sum(1 for _ in itertools.islice(self._combinations(), MAX_CONFIGURATIONS + 1))
        if raw > MAX_CONFIGURATIONS:
            product = self._product()
            shown = f" ({product:,} = the product of every entry's values)" if (
                product is not None and product > MAX_CONFIGURATIONS) else ""
            raise StudyError(f"{self.config.source}: space: more than {MAX_CONFIGURATIONS:,} "
                             f"combinations to enumerate{shown}; the limit counts them before "
                             f"duplicates are removed; use a sampler (tpe, nsga2, random) or "
                             f"fewer values")
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for config in self._combinations():
            spec, train = self.apply(config)
            identity = spec.hash() + json.dumps(train, sort_keys=True)
            if identity in seen:
                continue
            seen.add(identity)
            out.append(config)
        return out

    def _expand(self, draft: _Draft, index: int, chosen: dict[str, Any]
                ) -> Iterator[dict[str, Any]]:
        dims = [d for d in self.dimensions if d.kind != "model"]
        if index == len(dims):
            yield dict(chosen)
            return
        dim = dims[index]
        params = self._params(dim, draft)
        if not params:
            yield from self._expand(draft, index + 1, chosen)
            return
        try:
            values = dim.values()
        except ValueError as err:
            raise StudyError(f"{self.config.source}: space.{dim.key}: {err}") from err
        for combo in itertools.product(values, repeat=len(params)):
            child = _Draft(draft.spec, [dict(layer) for layer in draft.layers], dict(draft.train))
            picked = dict(chosen)
            for (name, layers), value in zip(params, combo, strict=True):
                picked[name] = value
                self._set(dim, child, layers, value)
            yield from self._expand(child, index + 1, picked)

    def ablation(self) -> list[tuple[str | None, dict[str, Any]]]:
        """The base, then one factor changed at a time: (factor key or None, configuration).
        A factor's value equal to the base's is skipped (it is the base)."""
        out: list[tuple[str | None, dict[str, Any]]] = [(None, {})]
        base_draft = self._draft(None)
        train = self.config.train_config()
        for dim in self.dimensions:
            try:
                values = dim.values()
            except ValueError as err:
                raise StudyError(f"{self.config.source}: space.{dim.key}: {err}") from err
            if dim.kind == "model":
                for value in values:
                    if self.models[value].hash() != self.base.hash():
                        out.append((dim.key, {"model": value}))
                continue
            for name, layers in self._params(dim, base_draft):
                base_value = self._base_value(dim, base_draft, layers, train)
                for value in values:
                    same = (canonical_name(value) if dim.kind == "block" else value)
                    if same == base_value:
                        continue
                    out.append((dim.key, {name: value}))
                    if len(out) > MAX_CONFIGURATIONS:
                        raise StudyError(f"{self.config.source}: space: more than "
                                         f"{MAX_CONFIGURATIONS:,} configurations in the "
                                         f"ablation; use fewer values or layers")
        return out

    def _base_value(self, dim: Dimension, draft: _Draft, layers: tuple[int, ...],
                    train: TrainConfig) -> Any:
        if dim.kind == "width":
            return 1.0
        if dim.kind == "train" and dim.arg in DISTILL_FIELDS:
            distill = self.config.distill
            return getattr(distill, dim.arg.split(".")[1])
        if dim.kind == "train":
            return getattr(train, dim.arg)
        found = {json.dumps(_layer_value(draft.layer(i), dim.arg)) for i in layers}
        if len(found) != 1:
            return object()  # the layers differ: every value is a change
        value = _layer_value(draft.layer(layers[0]), dim.arg)
        return canonical_name(value) if dim.kind == "block" else value


def _close(name: str, allowed: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f"did you mean {close[0]!r}? " if close else ""

