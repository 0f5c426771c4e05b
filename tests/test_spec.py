"""Specs: parsing, round trips, stable hashes, overrides, and errors that say where."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dwsearch import ModelSpec, SpecError, load_spec
from dwsearch.zoo import list_specs

TINY = {
    "name": "tiny",
    "input": [3, 8, 8],
    "num_classes": 4,
    "layers": [
        {"block": "conv", "out_channels": 8},
        {"block": "dwsep", "out_channels": 16, "kernel_size": 5, "stride": 2},
        {"block": "global_avgpool"},
        {"block": "linear", "out_features": 4},
    ],
}


def test_dict_round_trip_is_unchanged() -> None:
    assert ModelSpec.from_dict(TINY).to_dict() == TINY


@pytest.mark.parametrize("name", list_specs())
def test_yaml_round_trip_is_unchanged(name: str) -> None:
    spec = load_spec(name)
    again = ModelSpec.from_yaml(spec.to_yaml())
    assert again == spec
    assert yaml.safe_load(spec.to_yaml()) == spec.to_dict()
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_yaml_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert load_spec(path) == ModelSpec.from_dict(TINY)
    assert load_spec(str(path)) == ModelSpec.from_dict(TINY)


def test_hash_is_stable_across_processes_and_argument_order() -> None:
    spec = ModelSpec.from_dict(TINY)
    reordered = dict(TINY, layers=[dict(reversed(list(layer.items()))) for layer in TINY["layers"]])
    assert ModelSpec.from_dict(reordered).hash() == spec.hash()
    assert ModelSpec.from_dict(dict(TINY, name="other")).hash() == spec.hash()
    code = f"from dwsearch import ModelSpec; print(ModelSpec.from_dict({TINY!r}).hash())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == spec.hash()


def test_hash_changes_with_the_architecture() -> None:
    spec = ModelSpec.from_dict(TINY)
    assert spec.with_overrides({"layers[1].kernel_size": 3}).hash() != spec.hash()


def test_overrides_by_index_slice_and_removal() -> None:
    spec = load_spec("seed_cnn")
    changed = spec.with_overrides({
        "layers[5].p": 0.2,
        "layers[0:3].block": "dwsep",
        "layers[0:3].bias": None,
        "layers[-1].out_features": 10,
    })
    assert changed.layers[5].args["p"] == 0.2
    assert [layer.block for layer in changed.layers[:4]] == ["dwsep"] * 3 + ["conv"]
    assert "bias" not in changed.layers[0].args
    assert spec.layers[5].args["p"] == 0.05  # the original is untouched


@pytest.mark.parametrize(
    ("key", "message"),
    [("layers[99].p", "out of range"), ("layers.p", "expected num_classes"), ("depth", "expected")],
)
def test_bad_override_keys(key: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec("seed_cnn").with_overrides({key: 1})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"input": [3, 8, 8], "num_classes": 2}, "missing key 'layers'"),
        (dict(TINY, colour="red"), "unknown key"),
        (dict(TINY, input=[3, 0, 8]), "input: expected positive integers"),
        (dict(TINY, num_classes=0), "num_classes"),
        (dict(TINY, layers=[{"out_channels": 3}]), r"layers\[0\]: missing key 'block'"),
        (dict(TINY, layers=["conv"]), r"layers\[0\]: expected a mapping"),
        (dict(TINY, layers=[]), "at least one layer"),
    ],
)
def test_parse_errors_name_the_place(data: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        ModelSpec.from_dict(data)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("input: [3, 32, 32]\nnum_classes: 10\nlayers:\n  - {block: conv, out: [\n")
    with pytest.raises(SpecError, match=r"broken.yaml:\d+: invalid YAML"):
        load_spec(path)


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec("does/not/exist.yaml")
    with pytest.raises(SpecError, match="did you mean seed_cnn"):
        load_spec("seed_cn")


def test_with_num_classes_resizes_the_classifier() -> None:
    spec = load_spec("seed_dwsep").with_num_classes(5)
    assert spec.num_classes == 5 and spec.layers[-1].args["out_features"] == 5


@pytest.mark.parametrize(("selector", "expected"), [
    ("2", (2,)), ("-1", (4,)), ("0:3", (0, 1, 2)), (":2", (0, 1)), ("3:", (3, 4)),
    ("::2", (0, 2, 4)), ("0,2,4", (0, 2, 4)), ("-1,0", (4, 0)),
])
def test_one_layer_key_grammar_for_overrides_spaces_and_labels(selector: str,
                                                              expected: tuple[int, ...]) -> None:
    from dwsearch.spec import parse_layer_key, select_layers

    assert parse_layer_key(f"layers[ {selector} ].block") == (selector, "block")
    assert select_layers(selector, 5) == expected


@pytest.mark.parametrize(("selector", "message"), [
    ("", "missing layer index"), ("5:5", "the slice selects no layer"),
    ("7", "layer index 7 out of range 0..4"), ("1,-4", "layer 1 selected twice"),
    ("a", "expected an index, a slice like 0:3 or a list like 0,1,2"), ("1:2:3:4", "expected"),
])
def test_bad_layer_selectors_say_why(selector: str, message: str) -> None:
    from dwsearch.spec import select_layers

    with pytest.raises(ValueError, match=message):
        select_layers(selector, 5)


def test_a_list_of_layers_in_a_spec_override() -> None:
    spec = load_spec("seed_dwsep").with_overrides({"layers[0,2].kernel_size": 5})
    assert [layer.args.get("kernel_size") for layer in spec.layers[:3]] == [5, 3, 5]
