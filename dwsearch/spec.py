"""Model specs: plain data describing a network as a list of registry blocks.

A spec knows nothing of torch: it is parsed from YAML or dicts, validated for shape of the
data (not of the network; that is the builder's job), round-trips unchanged and hashes stably.
This module imports nothing of dwsearch but its error types and safe YAML reader;
:meth:`ModelSpec.hash` asks the registry for the blocks' defaults when it is called.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from dwsearch.errors import SpecError
from dwsearch.yamlio import load_yaml

__all__ = ["LayerSpec", "ModelSpec", "SpecError"]

_SCALAR = (bool, int, float, str, type(None))


def _check_value(value: Any, where: str) -> Any:
    """Return a deep copy of a YAML/JSON-style value, or raise naming ``where``."""
    if isinstance(value, _SCALAR):
        return value
    if isinstance(value, (list, tuple)):
        return [_check_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SpecError(f"{where}: keys must be strings, found {k!r}")
            out[k] = _check_value(v, f"{where}.{k}")
        return out
    raise SpecError(
        f"{where}: {type(value).__name__} is not allowed; use numbers, strings, booleans, lists"
    )


def _is_int(value: Any) -> bool:
    # bool is an int subclass; True is no channel count.
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"{value!r} (text)"
    return repr(value)


@dataclass(frozen=True)
class LayerSpec:
    """One layer: a registry block name and the keyword arguments for its constructor."""

    block: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.block, str) or not self.block:
            raise SpecError(f"block must be a non-empty string, found {self.block!r}")
        if not isinstance(self.args, Mapping):
            raise SpecError(f"{self.block}: args must be a mapping, found "
                            f"{type(self.args).__name__}")
        object.__setattr__(self, "args", _check_value(dict(self.args), self.block))

    @classmethod
    def from_dict(cls, data: Any, where: str = "layer") -> LayerSpec:
        if not isinstance(data, Mapping):
            raise SpecError(
                f"{where}: expected a mapping like {{block: conv, out_channels: 32}}, "
                f"found {type(data).__name__}"
            )
        if "block" not in data:
            raise SpecError(f"{where}: missing key 'block' (the registry name of the layer)")
        args = {k: v for k, v in data.items() if k != "block"}
        try:
            return cls(block=data["block"], args=_check_value(args, where))
        except SpecError as err:
            if str(err).startswith(where):
                raise
            raise SpecError(f"{where}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"block": self.block, **copy.deepcopy(dict(self.args))}

    def with_args(self, **changes: Any) -> LayerSpec:
        """A copy with some arguments replaced (``block=`` changes the block type)."""
        block = changes.pop("block", self.block)
        return LayerSpec(block=block, args={**self.args, **changes})


@dataclass(frozen=True)
class ModelSpec:
    """A whole network: input shape (C, H, W), number of classes and the layers in order."""

    input_shape: tuple[int, ...]
    num_classes: int
    layers: tuple[LayerSpec, ...]
    name: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("input", self.input_shape), ("layers", self.layers)):
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise SpecError(f"{name}: expected a list, found {type(value).__name__}")
        shape = tuple(self.input_shape)
        if not shape or not all(_is_int(d) and d > 0 for d in shape):
            found = "[" + ", ".join(_shown(d) for d in shape) + "]"
            raise SpecError(f"input: expected positive integers like [3, 32, 32], found {found}")
        object.__setattr__(self, "input_shape", shape)
        if not _is_int(self.num_classes) or self.num_classes < 1:
            raise SpecError(f"num_classes: expected a positive integer, found "
                            f"{_shown(self.num_classes)}")
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise SpecError("layers: a model needs at least one layer")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, LayerSpec):
                raise SpecError(f"layers[{i}]: expected a LayerSpec, found {type(layer).__name__}")

    # -- parsing -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "spec") -> ModelSpec:
        """Parse a mapping ``{input, num_classes, layers, [name]}``; errors name ``source``."""
        if not isinstance(data, Mapping):
            raise SpecError(f"{source}: expected a mapping with keys input, num_classes, layers")
        allowed = {"name", "input", "num_classes", "layers"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SpecError(
                f"{source}: unknown key(s) {', '.join(map(str, unknown))}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        for key in ("input", "num_classes", "layers"):
            if key not in data:
                raise SpecError(f"{source}: missing key '{key}'")
        if not isinstance(data["input"], Sequence) or isinstance(data["input"], str):
            raise SpecError(f"{source}: input: expected a list like [3, 32, 32]")
        if not isinstance(data["layers"], Sequence) or isinstance(data["layers"], str):
            raise SpecError(f"{source}: layers: expected a list of {{block: NAME, ...}}")
        layers = tuple(
            LayerSpec.from_dict(layer, where=f"{source}: layers[{i}]")
            for i, layer in enumerate(data["layers"])
        )
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise SpecError(f"{source}: name: expected a string, found {name!r}")
        try:
            return cls(
                input_shape=tuple(data["input"]),
                num_classes=data["num_classes"],
                layers=layers,
                name=name,
            )
        except SpecError as err:
            raise SpecError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, text: str, source: str = "<yaml>") -> ModelSpec:
        """Parse YAML text (duplicate keys, deep nesting and alias bombs refused, see
        :mod:`dwsearch.yamlio`); errors name ``source`` and the line."""
        return cls.from_dict(load_yaml(text, source, SpecError), source=source)

    # -- output --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        out["input"] = list(self.input_shape)
        out["num_classes"] = self.num_classes
        out["layers"] = [layer.to_dict() for layer in self.layers]
        return out

    def to_yaml(self) -> str:
        """YAML with one flow-style line per layer, as a person would write it."""
        head = {k: v for k, v in self.to_dict().items() if k != "layers"}
        text = yaml.safe_dump(head, sort_keys=False, default_flow_style=None)
        lines = [
            "  - " + yaml.safe_dump(layer.to_dict(), default_flow_style=True, sort_keys=False,
                                    width=10_000).strip()
            for layer in self.layers
        ]
        return text + "layers:\n" + "\n".join(lines) + "\n"

    def canonical(self) -> ModelSpec:
        """The same architecture in the form that identifies it: registered block names (not
        aliases), every argument with the block's default filled in, and no ``in_channels`` /
        ``in_features`` (the builder infers them). ``to_dict`` of the original keeps the
        form as written, for display."""
        # Imported here, not at the top: parsing and printing a spec need no registry.
        from dwsearch.registry import canonical_layer

        layers = []
        for i, layer in enumerate(self.layers):
            try:
                block, args = canonical_layer(layer.block, layer.args)
            except SpecError as err:
                raise SpecError(f"layers[{i}]: {err}") from err
            layers.append(LayerSpec(block, args))
        return ModelSpec(self.input_shape, self.num_classes, tuple(layers), self.name)

    def hash(self) -> str:
        """Stable content hash (hex, 16 chars) of the architecture: of :meth:`canonical`, so
        ``{block: conv, out_channels: 32}`` and the same with ``kernel_size: 3`` written out
        hash equal. The name and argument order are not part of it; the same spec hashes the
        same in every process. Studies deduplicate trials on it."""
        return _digest(self.canonical())

    def written_hash(self) -> str:
        """Hash of the spec exactly as written (aliases and omitted defaults make it differ)."""
        return _digest(self)

    # -- edits ---------------------------------------------------------------------------
    def with_overrides(self, overrides: Mapping[str, Any]) -> ModelSpec:
        """A copy with values replaced by key path.

        Keys: ``num_classes``, ``input``, ``name``, ``layers[i].ARG``, ``layers[i:j].ARG``
        (a slice sets the argument on every layer in it), ``layers[i].block``. An ARG of
        ``null`` removes the argument so the block's default applies.
        """
        if not isinstance(overrides, Mapping):
            raise SpecError(f"overrides: expected a mapping of key path to value, found "
                            f"{type(overrides).__name__}")
        data = self.to_dict()
        for key, value in overrides.items():
            if not isinstance(key, str):
                raise SpecError(f"override {key!r}: keys are paths like 'layers[5].p'")
            _apply_override(data, key, value)
        return ModelSpec.from_dict(data, source="override")

    def with_num_classes(self, num_classes: int) -> ModelSpec:
        """A copy whose final linear layer outputs ``num_classes`` (for other datasets)."""
        for i in range(len(self.layers) - 1, -1, -1):
            if "out_features" in self.layers[i].args:
                layers = list(self.layers)
                layers[i] = layers[i].with_args(out_features=num_classes)
                return ModelSpec(self.input_shape, num_classes, tuple(layers), self.name)
        raise SpecError(
            f"the spec has no layer with out_features to resize to {num_classes} classes; "
            f"end it with {{block: linear, out_features: {num_classes}}}"
        )


def _digest(spec: ModelSpec) -> str:
    payload = {k: v for k, v in spec.to_dict().items() if k != "name"}
    # repr for defaults that are not JSON (a user block may default to any object).
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The one grammar of layer keys, for spec overrides (--set), study spaces and report labels:
# layers[SEL].ARG, SEL an index (negative from the end), a slice i:j (either end may be left
# out) or a list i,j,k.
_LAYER_KEY = re.compile(r"^layers\[(?P<sel>[^\]]*)\]\.(?P<arg>[A-Za-z_]\w*)$")


def parse_layer_key(key: str) -> tuple[str, str] | None:
    """``(selector, argument)`` of a key ``layers[SEL].ARG`` (spaces ignored), None when
    ``key`` is not a layer key."""
    match = _LAYER_KEY.match(key.replace(" ", ""))
    return None if match is None else (match["sel"], match["arg"])


def select_layers(selector: str, n: int) -> tuple[int, ...]:
    """The indices (0..n-1, in order given) that ``selector`` picks among ``n`` layers: an
    index (negative counts from the end), a slice ``i:j`` or ``i:j:k``, or a list ``i,j,k``.
    A selector that picks nothing, an index out of range, a layer picked twice or text that
    is none of these is a :class:`ValueError` whose message says which."""
    if not selector:
        raise ValueError("missing layer index")
    parts = selector.split(":") if ":" in selector else selector.split(",")
    try:
        numbers = [int(p) if p else None for p in parts]
    except ValueError:
        numbers = []
    if not numbers or (":" in selector and len(parts) > 3) or (
            ":" not in selector and None in numbers):
        raise ValueError(f"layer selector [{selector}]: expected an index, a slice like 0:3 "
                         f"or a list like 0,1,2")
    if ":" in selector:
        indices = tuple(range(n)[slice(*numbers)])
        if not indices:
            raise ValueError(f"the slice selects no layer (the spec has layers 0..{n - 1})")
        return indices
    picked = [i for i in numbers if i is not None]
    for i in picked:
        if not -n <= i < n:
            raise ValueError(f"layer index {i} out of range 0..{n - 1}")
    normalized = tuple(i % n for i in picked)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"layer {normalized[0]} selected twice")
    return normalized


def _apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    if key in ("num_classes", "input", "name"):
        data[key] = value
        return
    parsed = parse_layer_key(key)
    if parsed is None:
        raise SpecError(
            f"override {key!r}: expected num_classes, input, name, layers[i].ARG, "
            f"layers[i:j].ARG or layers[i,j].ARG"
        )
    selector, arg = parsed
    layers = data["layers"]
    try:
        # An empty slice would change nothing and exit 0: surely not what was meant.
        indices = select_layers(selector, len(layers))
    except ValueError as err:
        raise SpecError(f"override {key!r}: {err}") from None
    if value is None and arg != "block" and not any(arg in layers[i] for i in indices):
        # Removing an argument no selected layer has changes nothing: a typo, most likely.
        where = f"layer {indices[0]}" if len(indices) == 1 else "any selected layer"
        raise SpecError(f"override {key!r}: {arg!r} is not set on {where}, so null has "
                        f"nothing to remove")
    for i in indices:
        if value is None and arg != "block":
            layers[i].pop(arg, None)
        else:
            layers[i][arg] = copy.deepcopy(value)
