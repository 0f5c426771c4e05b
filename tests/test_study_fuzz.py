"""Hostile study files: wrong types, unknown keys, empty choices, negative budgets, huge
numbers, bad YAML, control characters, and spaces that would silently do something else
(two names of one block, overlapping selectors, a `when` no layer matches, a misspelt
argument). Never a traceback: a located one-line StudyError (or a valid plan), in bounded time
and memory, and no storage created or touched. ``DWSEARCH_FUZZ_SCALE=20`` hunts longer."""

from __future__ import annotations

import copy
import os
import re
import time
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from studyutil import TINY_BASE, make_images
from test_fuzz import _address_space_cap

from dwsearch.cli import main
from dwsearch.errors import StudyError
from dwsearch.study import config as study_config
from dwsearch.study.config import parse_study_config
from dwsearch.study.plan import make_plan

SCALE = float(os.environ.get("DWSEARCH_FUZZ_SCALE", "1"))


def _n(examples: int) -> int:
    return max(1, int(examples * SCALE))

VALID: dict[str, Any] = {
    "name": "fuzz",
    "base": TINY_BASE,
    "data": {"dataset": "imagefolder", "data_dir": "/nonexistent", "val_size": 10},
    "train": {"epochs": 1},
    "space": {"layers[0,2].block": ["conv", "dwsep"], "layers[0,2].kernel_size": [3, 5]},
    "objectives": ["val_accuracy", "macs"],
    "sampler": "grid",
    "repeats": 1,
}
KEYS = [
    "name", "base", "data", "data.val_size", "data.train_subset", "data.dataset", "train",
    "train.lr", "train.epochs", "train.optimizer", "train.nesterov", "train.batch_size",
    "space", "space.width", "space.model", "space.train.lr", "space.layers[0].block",
    "space.layers[0:3].kernel_size", "space.layers[9].block", "space.layers[0,2].ratio",
    "objectives", "constraints", "constraints.macs", "sampler", "sampler.name", "pruner",
    "pruner.name", "n_trials", "timeout", "repeats", "seed", "seeds", "format", "storage",
    "test", "bogus", "space.bogus",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.sampled_from([0, 1, -1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["conv", "dwsep", "tpe", "grid", "<= 400M", "val_accuracy", "2h", "0:3",
                     "seed_cnn", "sqlite:///x.db", "cuda", ""]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["choices", "low", "high", "step",
                                                             "log", "per_layer", "when", "name",
                                                             "x"]), inner, max_size=4)),
    max_leaves=8,
)


def mutate(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    if key.startswith("space."):
        out.setdefault("space", {})
        if isinstance(out["space"], dict):
            out["space"][key[len("space."):]] = value
        return out
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return out


def check(data: Any, study_dir: Path, seconds: float = 30) -> str | None:
    """Plan ``data``: a valid plan (None) or one located line (returned)."""
    start = time.perf_counter()
    message = None
    try:
        make_plan(parse_study_config(data, "fuzz.yaml"))
    except StudyError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(("fuzz.yaml", "storage")), message
        assert message == message.strip() and len(message) < 1000, message
        # one line on any terminal: no control characters, no other line breaks
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", message), repr(message)
    assert time.perf_counter() - start < seconds
    assert not study_dir.exists() or not list(study_dir.iterdir())
    return message


@pytest.fixture(autouse=True)
def _study_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DWSEARCH_STUDY_DIR", str(tmp_path / "studies"))
    return tmp_path / "studies"


@pytest.fixture(scope="module", autouse=True)
def _bounded_memory() -> Iterator[None]:
    """A study file that slips past the limits (a plan of a billion slots, an enumeration of
    everything) fails its example with a MemoryError instead of growing until the kernel
    kills the run: the module's address space is capped at what it holds plus 6 GiB."""
    with _address_space_cap(6):
        yield


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_mutated_study_files(_study_dir: Path, mutations: list[tuple[str, Any]]) -> None:
    data = VALID
    for key, value in mutations:
        data = mutate(data, key, value)
    check(data, _study_dir)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.one_of(VALUES, st.text(max_size=40)))
def test_anything_at_the_top_level(_study_dir: Path, value: Any) -> None:
    check(value, _study_dir)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="abcnm:[]{}-,0123 \n'\"&*!", max_size=120))
def test_any_text_as_a_study_file_through_the_command_line(_study_dir: Path, tmp_path: Path,
                                                           text: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["run-study", str(path), "--dry-run"])
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_a_valid_file_through_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(VALID))
    result = CliRunner().invoke(main, ["run-study", str(path), "--dry-run"])
    assert result.exit_code == 0 and "4 configuration(s) x 1 repeat(s)" in result.output
    # --dry-run shows the storage the run would use, and creates nothing there
    db = tmp_path / "elsewhere.db"
    result = CliRunner().invoke(main, ["run-study", str(path), "--dry-run",
                                       "--storage", f"sqlite:///{db}"])
    assert result.exit_code == 0 and f"storage sqlite:///{db}" in result.output
    assert not db.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["run-study", "missing.yaml"], "missing.yaml: no such study file"),
    (["run-study", "STUDY", "--jobs", "0"], "--jobs: expected a number of processes"),
    (["run-study", "STUDY", "--device", "gpu"], "device: expected 'auto', 'cpu', 'cuda'"),
    (["run-study", "STUDY", "--timeout", "soon"], "--timeout: expected seconds"),
    (["run-study", "STUDY", "--set", "train.lr=-1", "--dry-run"], "train.lr: expected a finite"),
    (["run-study", "STUDY", "--storage", "redis://x"], "unknown kind of storage"),
    (["run-study", "STUDY", "--storage", "postgresql://u:secret@127.0.0.1:9/db"],
     "cannot open"),
    (["run-study", "STUDY", "--set", "data.data_dir=/nonexistent/x"], "/nonexistent/x"),
])
def test_command_line_mistakes_are_one_line(tmp_path: Path, args: list[str],
                                            message: str) -> None:
    path = tmp_path / "s.yaml"
    images = make_images(tmp_path / "images", per_class=4, test_per_class=2)
    path.write_text(yaml.safe_dump({**VALID, "data": {"dataset": "imagefolder", "val_size": 3,
                                                      "data_dir": str(images)}}))
    args = [str(path) if a == "STUDY" else a for a in args]
    start = time.perf_counter()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert message in result.output and result.output.count("\n") == 1, result.output
    assert "secret" not in result.output
    assert time.perf_counter() - start < 30  # an unreachable database answers in bounded time


# -- spaces that would silently do something else ---------------------------------------------
# TINY_BASE: conv, maxpool, conv, global_avgpool, linear.
SELECTORS = ["0", " 0 ", "2", "0,2", "0,2", "2,0", "0:3", ":3", "-3", "1", "4", "2:"]
# Plausible arguments more often than misspelt or foreign ones.
ARGUMENTS = ["block", "block", "block", "kernel_size", "kernel_size", "multiplier", "ratio",
             "se_ratio", "expand_ratio", "bn", "out_channels", "stride", "kernal_size", "ratoi",
             "p", "in_channels", "foo"]
BLOCK_NAMES = ["conv", "conv", "dwsep", "dwsep", "hybrid", "inverted_residual", "conv_dw",
               "depthwise_separable", "mbconv", "grouped", "maxpool", "dwsepp"]
SENSIBLE: dict[str, list[Any]] = {
    "kernel_size": [3, 5, 7], "multiplier": [1, 2], "ratio": [0.25, 0.5, 0.75],
    "se_ratio": [0.0, 0.25], "expand_ratio": [2, 4], "bn": [True, False],
    "out_channels": [8, 12, 16], "stride": [1, 2], "p": [0.1],
}
ARGUMENT_VALUES = st.sampled_from([1, 3, 5, 0.25, 0.0, True, "1e-3", "relu", 4, -1])
WHEN = st.one_of(
    st.fixed_dictionaries({"block": st.sampled_from(BLOCK_NAMES)}),
    st.dictionaries(st.sampled_from(["block", "kernel_size", "ratio", "se_ratio", "bn", "foo",
                                     "in_channels"]), ARGUMENT_VALUES, max_size=2))


@st.composite
def entries(draw: Any) -> tuple[str, Any]:
    arg = draw(st.sampled_from(ARGUMENTS))
    key = f"layers[{draw(st.sampled_from(SELECTORS))}].{arg}"
    sensible = st.sampled_from(SENSIBLE.get(arg, [3]))
    values: Any
    if arg == "block":
        values = draw(st.lists(st.sampled_from(BLOCK_NAMES), min_size=1, max_size=3,
                               unique=True))
    elif draw(st.integers(0, 3)):
        values = draw(st.lists(st.one_of(sensible, sensible, ARGUMENT_VALUES), min_size=1,
                               max_size=3))
        values = list({repr(v): v for v in values}.values())
    else:
        low = draw(st.sampled_from([1, 3, 0.125, 0.0, -1]))
        values = {"low": low, "high": low + draw(st.sampled_from([0, 2, 4, 0.5, 2**40])),
                  **draw(st.fixed_dictionaries({}, optional={
                      "step": st.sampled_from([2, 0.125, 1, 0]), "log": st.booleans()}))}
    form = draw(st.sampled_from(["list", "mapping", "when"]))
    if form == "list" or isinstance(values, dict):
        entry: Any = values
    else:
        entry = {"choices": values}
    if form != "list":
        entry = {"choices": entry} if isinstance(entry, list) else entry
        entry["per_layer"] = draw(st.booleans())
        if form == "when":
            entry["when"] = draw(WHEN)
    return key, entry


@settings(max_examples=_n(40), deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(entries(), min_size=1, max_size=3), st.booleans(),
       st.sampled_from(["grid", "ablation", "random"]), st.sampled_from([None, 1.0, 0.5]))
def test_generated_spaces(_study_dir: Path, space: list[tuple[str, Any]], blocks: bool,
                          sampler: str, width: float | None) -> None:
    """Aliases, overlapping and duplicate selectors, dead `when`, misspelt arguments: every
    space plans or is refused in one line; what plans, varies what it says."""
    if blocks:  # most arguments are some block's: give the layers several
        space = [("layers[0, 2].block", ["conv", "hybrid", "inverted_residual"]), *space]
    data = {**VALID, "space": dict(space), "sampler": sampler, "n_trials": 4}
    if width is not None:
        data["space"]["width"] = [width]
    message = check(data, _study_dir)
    event("refused: " + re.sub(r"[\d,.]+|'[^']*'", "#", message.split(": ", 2)[-1])[:40]
          if message else "planned")
    if message is None:
        from dwsearch.study.space import Space

        built = Space(parse_study_config(data, "fuzz.yaml"))
        covered: set[tuple[int, str]] = set()
        for dim in built.dimensions:
            # no silent overrides: two entries on one layer's argument only when they are
            # conditioned on different blocks
            if dim.kind in ("block", "layer") and "block" not in dim.when:
                assert not {(i, dim.arg) for i in dim.layers} & covered, dim.key
                covered |= {(i, dim.arg) for i in dim.layers}
            if dim.kind == "block":  # one name per block
                from dwsearch.registry import canonical_name

                names = [canonical_name(str(c)) for c in dim.choices]
                assert len(set(names)) == len(names), dim.choices
        if sampler == "grid":  # no entry that never applies (a typo, a dead when)
            grid = built.grid()
            for dim in built.dimensions:
                params = {dim.key, *(f"layers[{i}].{dim.arg}" for i in dim.layers)}
                assert any(params & set(config) for config in grid), (dim.key, grid)


# -- huge numbers in every numeric field -------------------------------------------------------


def _numeric_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every key path of the study schema whose value may be a number (from the schema, so a
    field added later is covered)."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        parts = typing.get_args(annotation) or (annotation,)
        flat: list[Any] = []
        for part in parts:
            flat.extend(typing.get_args(part) or (part,))
        if any(p in (int, float) for p in flat):
            yield prefix + name
        for part in flat:
            if isinstance(part, type) and issubclass(part, BaseModel) and part not in (
                    study_config.Choices, study_config.Range):
                yield from _numeric_fields(part, f"{prefix}{name}.")


NUMERIC_FIELDS = sorted({
    *_numeric_fields(study_config.StudyModel),
    "constraints.macs", "constraints.params", "constraints.latency",
    "space.train.lr", "space.width", "space.layers[0].kernel_size",
    "base.num_classes", "base.input",
})
RANGE_FIELDS = ["low", "high", "step"]
HUGE = st.one_of(
    st.sampled_from([2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 10**30, 10**400, -(10**400),
                     1.0e308, -1.0e308, 1.7976931348623157e308, 5e-324, 2**62]),
    st.integers(min_value=2**62, max_value=10**500),
    st.integers(min_value=-(10**500), max_value=-(2**62)),
)


@settings(max_examples=_n(50), deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(NUMERIC_FIELDS), HUGE, st.sampled_from(["plain", "list", "range", "text"]),
       st.sampled_from(["grid", "random", "tpe"]))
def test_huge_numbers_in_every_numeric_field(_study_dir: Path, field: str, value: Any,
                                             form: str, sampler: str) -> None:
    if form == "list":
        value = [1, value]
    elif form == "range":
        value = {"low": 1, "high": 2, RANGE_FIELDS[abs(hash(field)) % 3]: value}
    elif form == "text":
        value = f"<= {value}" if field.startswith("constraints") else str(value)
    data = {**VALID, "sampler": sampler, "n_trials": 4}
    if field == "base.input":
        data = mutate(data, "base", {**TINY_BASE, "input": [3, value, 16]})
    elif field == "base.num_classes":
        data = mutate(data, "base", {**TINY_BASE, "num_classes": value})
    else:
        data = mutate(data, field, value)
    check(data, _study_dir)


# -- control characters ------------------------------------------------------------------------
CONTROL = st.sampled_from(["\n", "\x00", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85",
                           "\u2028", "\ud800", "\ufeff", "\t", "\r"])


@settings(max_examples=_n(25), deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_control_characters_in_study_files(_study_dir: Path, tmp_path: Path,
                                           data: st.DataObject) -> None:
    """Raw in the file, the YAML reader refuses them (the command line: one line, exit 1);
    escaped in a quoted key or value, they reach the messages, which show them escaped."""
    char = data.draw(CONTROL)
    if data.draw(st.booleans()):
        text = yaml.safe_dump(VALID, sort_keys=False)
        position = data.draw(st.integers(0, len(text)))
        path = tmp_path / "s.yaml"
        path.write_text(text[:position] + char + text[position:], encoding="utf-8",
                        errors="surrogatepass")
        result = CliRunner().invoke(main, ["run-study", str(path), "--dry-run"])
        assert result.exit_code in (0, 1), result.output
        assert "Traceback" not in result.output
        if result.exit_code == 1:
            assert result.output.startswith("Error: ") and result.output.count("\n") == 1, (
                result.output)
        assert not _study_dir.exists() or not list(_study_dir.iterdir())
        return
    key = data.draw(st.sampled_from(KEYS))
    at = data.draw(st.sampled_from(["key", "value", "both"]))
    value = data.draw(st.sampled_from([f"a{char}b", char, "conv", 3]))
    if at != "value":
        key = key + char if data.draw(st.booleans()) else key.replace(".", char + ".", 1)
    check(mutate(VALID, key, value if at != "key" else [3]), _study_dir)


# -- claims sections ---------------------------------------------------------------------------
CLAIMS_STUDY: dict[str, Any] = {**VALID, "base": "seed_cnn",
                                "space": {"model": ["seed_cnn", "seed_dwsep"]}}
CLAIMS: dict[str, Any] = {
    "document": "doc.md",
    "recipe": {"epochs": 10, "train_images": 45000},
    "items": [
        {"claim": "a", "source": "s", "value": {"metric": "test_accuracy", "of": "seed_cnn",
                                                "between": ["70%", "75%"]}},
        {"claim": "b", "ratio": {"metric": "params", "of": "seed_cnn", "to": "seed_dwsep",
                                 "between": [7, 10]}, "note": "n"},
        {"claim": "c", "difference": {"metric": "test_accuracy", "of": "seed_dwsep",
                                      "minus": "seed_cnn", "at_least": "-3%"}},
        {"claim": "d", "speed": {"metric": "latency", "of": "seed_dwsep", "over": "seed_cnn",
                                 "above": 1}},
    ],
}


@pytest.mark.parametrize(("claims", "message"), [
    ({"items": []}, "claims.items: List should have at least 1 item"),
    ({"items": [{"claim": "x"}]},
     "claims.items[0]: give one rule (value, ratio, difference or speed), found none"),
    ({"items": [{"claim": "x", "value": {"metric": "test_acc", "of": "seed_cnn", "above": 0}}]},
     "claims.items[0].value.metric: unknown metric 'test_acc'; did you mean 'test_accuracy'?"),
    ({"items": [{"claim": "x", "value": {"metric": "test_accuracy", "of": "seed_cnn",
                                         "at_least": 70}}]},
     "claims.items[0].value: at_least: test_accuracy is a fraction: write 70% or 0.7, found 70"),
    ({"items": [{"claim": "x", "value": {"metric": "params", "of": "seed_cnn",
                                         "betwen": [1, 2]}}]},
     "claims.items[0].value.betwen: unknown key; did you mean 'between'?"),
    ({"items": [{"claim": "x", "value": {"metric": "params", "of": "seed_cnn",
                                         "between": [3, 2]}}]},
     "claims.items[0].value: between: low (3) must be <= high (2)"),
    ({"items": [{"claim": "x", "ratio": {"metric": "params", "of": "seed_cnn",
                                         "to": "seed_dwsep", "at_least": "7O%"}}]},
     "claims.items[0].ratio.at_least: expected a number, a percentage like 70% or a count like "
     "10M, found '7O%'"),
    ({"items": [{"claim": "x", "ratio": {"metric": "params", "of": "seed_cnn",
                                         "to": "seed_dwsep", "at_least": 1, "below": 2}}]},
     "claims.items[0].ratio: give one bound (between, at_least, at_most, above or below), found "
     "at_least and below"),
    ({"items": [{"claim": "x", "speed": {"metric": "params", "of": "seed_dwsep",
                                         "over": "seed_cnn", "above": 1}}]},
     "claims.items[0].speed.metric: 'params' is not a speed; allowed: latency, train_ips"),
    ({"items": [{"claim": "x", "ratio": {"metric": "params", "of": "seed_cnn",
                                         "to": "seed_cnn", "above": 1}}]},
     "claims.items[0]: ratio: of and to name the same model, 'seed_cnn'"),
    ({"items": [{"claim": "x", "difference": {"metric": "params", "of": "seed_cnm",
                                              "minus": "seed_cnn", "above": 1}}]},
     "claims.items[0].difference.of: 'seed_cnm' is not a model of this study; did you mean "
     "'seed_cnn'? its models: seed_cnn, seed_dwsep"),
    ({**CLAIMS, "recipe": {"epoch": 10}},
     "claims.recipe.epoch: unknown key; did you mean 'epochs'? allowed: epochs, train_images"),
])
def test_claims_mistakes_are_one_located_line(_study_dir: Path, claims: dict[str, Any],
                                              message: str) -> None:
    found = check({**CLAIMS_STUDY, "claims": claims}, _study_dir)
    assert found is not None and found.startswith(f"fuzz.yaml: {message}"), found


def _set(data: Any, path: str, value: Any) -> Any:
    """``data`` with ``value`` at ``path`` (``items[1].ratio.to``), making the way there; a
    step into something that is not a mapping or list (an earlier mutation) changes nothing."""
    out = copy.deepcopy(data)
    node = out
    parts: list[Any] = [int(p[1:-1]) if p.startswith("[") else p
                        for p in re.findall(r"[^.\[\]]+|\[\d+\]", path)]
    for i, key in enumerate(parts):
        if isinstance(node, list) and isinstance(key, int):
            if not node:
                node.append({})
            key = min(key, len(node) - 1)
        elif not (isinstance(node, dict) and isinstance(key, str)):
            return out
        if i == len(parts) - 1:
            node[key] = value
            return out
        if not isinstance(node[key] if isinstance(node, list) else node.get(key), (dict, list)):
            node[key] = [] if isinstance(parts[i + 1], int) else {}
        node = node[key]
    return out


CLAIM_PATHS = [
    "document", "recipe", "recipe.epochs", "recipe.train_images", "items", "items[0]",
    "items[0].claim", "items[0].source", "items[0].note", "items[0].ratio", "items[0].value",
    "items[0].value.metric", "items[0].value.of", "items[0].value.between",
    "items[0].value.at_most", "items[1].ratio.to", "items[1].ratio.metric", "items[1].ratio.bogus",
    "items[1].ratio.between", "items[2].difference.minus", "items[2].difference.at_least",
    "items[3].speed.metric", "items[3].speed.over", "items[3].speed.above", "items[3].value",
    "bogus",
]
# Plausible values (right and wrong) more often than arbitrary ones.
CLAIM_WORDS = st.sampled_from([
    "70%", "10M", "-3%", "7O%", "1e999", "%", [1, 2], [2, 1], [0.7], ["70%", "75%"], [1, 2, 3],
    "seed_cnn", "seed_dwsep", "seed_cnm", "params", "latency", "train_ips", "test_accuracy",
    "val_accuracy", 70, -0.5, 1.3, {"metric": "params", "of": "seed_cnn", "to": "seed_dwsep",
                                     "between": [7, 10]}])
CLAIM_VALUES = st.one_of(CLAIM_WORDS, CLAIM_WORDS, VALUES)


@settings(max_examples=_n(60), deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(CLAIM_PATHS), CLAIM_VALUES), max_size=3))
def test_generated_claims_sections(_study_dir: Path, mutations: list[tuple[str, Any]]) -> None:
    """Every claims section a user might write plans, or is refused in one line that locates
    the mistake under ``claims``; what plans reads back the same from the stored config."""
    claims: Any = CLAIMS
    for path, value in mutations:
        claims = _set(claims, path, value)
    data = {**CLAIMS_STUDY, "claims": claims}
    message = check(data, _study_dir)
    event("refused: " + re.sub(r"[\d,.]+|'[^']*'", "#", message.split(": ", 2)[-1])[:30]
          if message else "planned")
    if message is not None:
        assert message.startswith("fuzz.yaml: claims"), message
    else:
        parsed = parse_study_config(data, "fuzz.yaml")
        assert parsed.claims is not None
        assert study_config.parse_claims(parsed.to_dict()["claims"]) == parsed.claims
