"""The fuzz harness that keeps bad input from coming back: property-based tests that generate
specs, spec files, ``--set`` overrides, command-line option values and small data folders,
valid and broken, and check the one rule (see docs/bad-input.md):

    it works (and the result is right), or a DwsearchError with a located one-line message
    comes out, in bounded time and memory; never another exception, never a file changed
    that the user did not ask to write.

Every run draws new examples (Hypothesis replays earlier failures first). Budgets are sized for
a 2-core machine: the whole module takes under a minute; ``DWSEARCH_FUZZ_SCALE=20`` hunts
twenty times longer. Memory is bounded by setting ``DWSEARCH_MAX_MEMORY_GB`` low for the
module, which is itself part of what is tested.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from dwsearch import build_model, infer_shapes
from dwsearch.cli import main
from dwsearch.data import load_dataset
from dwsearch.errors import DwsearchError
from dwsearch.registry import BUILTIN_BLOCKS, block_signature
from dwsearch.spec import ModelSpec

# DWSEARCH_FUZZ_SCALE=20 runs twenty times the examples (a longer hunt, off CI).
SCALE = float(os.environ.get("DWSEARCH_FUZZ_SCALE", "1"))


def _n(examples: int) -> int:
    return max(1, int(examples * SCALE))


# Small enough that a valid-but-big generated model is refused rather than allocated.
MEMORY_GB = "0.05"
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
# An error message reads "where: what": a short place (a file and line, a key path, a layer,
# an option or value) before the first ": ".
LOCATED = re.compile(r"^\S.{0,160}?: \S")


@pytest.fixture(scope="module", autouse=True)
def _bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for the module, a low memory limit, no data folder from the environment."""
    base = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DWSEARCH_CACHE_DIR", str(base / "cache"))
        mp.setenv("DWSEARCH_MAX_MEMORY_GB", MEMORY_GB)
        mp.delenv("DWSEARCH_DATA_DIR", raising=False)
        from dwsearch.data import paths

        def no_network(root: Path) -> None:
            raise OSError("network disabled in tests")

        mp.setattr(paths, "download_cifar10", no_network)
        with _address_space_cap(AS_HEADROOM_GB):
            yield base


# A generated input that slips past the estimates must fail its test, with the example Hypothesis
# prints, rather than grow until the kernel kills the whole test run (seen once in a full run,
# not reproduced since): the module's address space is capped at what it holds plus this.
AS_HEADROOM_GB = 6


@contextlib.contextmanager
def _address_space_cap(headroom_gb: float) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        held = int(statm.read().split()[0]) * resource.getpagesize()
    cap = held + int(headroom_gb * 2**30)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _one_line(err: BaseException) -> str:
    message = str(err)
    assert message and "\n" not in message and message == message.strip(), repr(message)
    event(f"{type(err).__name__}: {_gist(message)}")
    return message


def _gist(message: str) -> str:
    """A message without its numbers and paths, so statistics group alike errors."""
    words = re.sub(r"\S*/\S*|\d[\d,.]*", "#", message).split()
    return " ".join(words[:8])


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` (folders or files): (size, mtime in ns)."""
    out = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = (root.stat().st_size, root.stat().st_mtime_ns)
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                st_ = os.stat(os.path.join(dirpath, name))
                out[os.path.join(dirpath, name)] = (st_.st_size, st_.st_mtime_ns)
    return out


# ----------------------------------------------------------------- generated values

_INTS = st.one_of(st.integers(-2, 40), st.sampled_from([0, 10**9, 2**63, 10**30, -(2**70)]))
_FLOATS = st.one_of(
    st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, -0.5]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)
_TEXTS = st.sampled_from(["false", "true", "no", "1e-3", "3", "relu", "relu6", "silu",
                          "identity", "", "x", "__class__", "None"])
_SCALARS = st.one_of(_INTS, _FLOATS, st.booleans(), st.none(), _TEXTS)
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3),
                    st.dictionaries(st.sampled_from(["a", "b"]), _SCALARS, max_size=2))
# Plausible values are drawn more often, so generated specs reach the deeper checks.
_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "out_channels": st.integers(1, 12), "out_features": st.integers(1, 12),
    "kernel_size": st.sampled_from([1, 2, 3, 5]), "stride": st.sampled_from([1, 2]),
    "groups": st.sampled_from([1, 2, 3]), "multiplier": st.integers(1, 3),
    "expand_ratio": st.integers(1, 4), "se_ratio": st.sampled_from([0.0, 0.25, 1.0]),
    "ratio": st.sampled_from([0.0, 0.5, 1.0]), "p": st.sampled_from([0.0, 0.1, 0.5]),
    "activation": st.sampled_from(["relu", "relu6", "hardswish", "silu", "identity"]),
    "padding": st.sampled_from([0, 1]), "start_dim": st.sampled_from([1, 2]),
}
_BLOCKS = [*sorted(BUILTIN_BLOCKS), "conv_dw", "mbconv", "no_such_block"]


@st.composite
def layers(draw: st.DrawFn) -> dict[str, Any]:
    block = draw(st.sampled_from(_BLOCKS))
    layer: dict[str, Any] = {"block": block}
    names = ["bogus"]
    if block in BUILTIN_BLOCKS or block in ("conv_dw", "mbconv"):
        names = [n for n in block_signature(block).parameters if n not in ("in_channels",
                                                                           "in_features")]
        for required in ("out_channels", "out_features", "groups", "kernel_size"):
            if required in names and draw(st.integers(0, 9)):
                layer[required] = draw(_PLAUSIBLE.get(required, _INTS))
        names.append("bogus")
    for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
        plausible = _PLAUSIBLE.get(name)
        if plausible is not None and draw(st.booleans()):
            layer[name] = draw(plausible)
        else:
            layer[name] = draw(_VALUES)
    return layer


@st.composite
def spec_dicts(draw: st.DrawFn) -> dict[str, Any]:
    plausible = st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12)).map(list)
    odd = st.one_of(
        st.lists(_INTS, max_size=4),
        st.sampled_from([[3, 100000, 100000], [3, 512, 512], [True, 8, 8], [3, 8.0, 8]]),
    )
    shape = draw(odd if draw(st.integers(0, 5)) == 0 else plausible)
    num_classes = draw(_SCALARS if draw(st.integers(0, 7)) == 0 else st.integers(1, 5))
    body = draw(st.lists(layers(), min_size=0, max_size=4))
    if draw(st.integers(0, 3)):  # usually end with a head that fits num_classes
        out = num_classes if isinstance(num_classes, int) else 3
        body += [{"block": "global_avgpool"}, {"block": "linear", "out_features": out}]
    return {"input": shape, "num_classes": num_classes, "layers": body}


# ----------------------------------------------------------------- specs through the API


@settings(FUZZ, max_examples=_n(500))
@given(spec=spec_dicts())
def test_generated_specs_build_or_fail_in_one_located_line(spec: dict[str, Any]) -> None:
    start = time.perf_counter()
    try:
        model = build_model(spec)
    except DwsearchError as err:
        assert LOCATED.match(_one_line(err)), str(err)
        return
    finally:
        assert time.perf_counter() - start < 60
    event("built")
    # It built: then it must be what the spec says, on a real batch of two.
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, *spec["input"]))
    assert out.shape == (2, spec["num_classes"])
    assert model.estimate.param_bytes == 4 * sum(p.numel() for p in model.parameters())


@settings(FUZZ, max_examples=_n(400))
@given(spec=spec_dicts(), data=st.data())
def test_generated_spec_files_parse_or_fail_in_one_located_line(
    spec: dict[str, Any], data: st.DataObject
) -> None:
    """The spec written as YAML, then cut or spliced at random: a file a person edited."""
    text = yaml.safe_dump(spec, default_flow_style=data.draw(st.booleans()), sort_keys=False)
    if data.draw(st.booleans()) and text:
        i = data.draw(st.integers(0, len(text) - 1))
        j = data.draw(st.integers(i, min(len(text), i + 12)))
        text = text[:i] + data.draw(st.sampled_from(["", "- ", ": ", "&a ", "*a", "[", "{",
                                                     "layers: []\n", "\n", "'", "!!python"]))
        text += text[j:]
    try:
        infer_shapes(ModelSpec.from_yaml(text, source="f.yaml"))
    except DwsearchError as err:
        assert LOCATED.match(_one_line(err)), str(err)
        return
    event("built")


# ----------------------------------------------------------------- the command line


def _cli(args: list[str], base: Path) -> tuple[int, str]:
    """Run the command in a fresh, empty working folder; afterwards that folder may hold only
    what the command was asked to write."""
    previous = os.getcwd()
    work = Path(tempfile.mkdtemp(prefix="cwd-", dir=base))
    os.chdir(work)
    try:
        result = CliRunner().invoke(main, args)
    finally:
        os.chdir(previous)
    left = sorted(os.listdir(work))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {result.exception!r}\n{result.output}")
    out = result.output
    assert "Traceback" not in out, out
    assert result.exit_code in (0, 1, 2, 3), (result.exit_code, out)
    lines = [line for line in out.splitlines() if line.strip()]
    event(f"exit {result.exit_code}: {_gist(lines[-1]) if result.exit_code else ''}")
    if result.exit_code == 1:
        assert len(lines) == 1 and lines[0].startswith("Error: "), out
        assert LOCATED.match(lines[0][len("Error: "):]), lines[0]
    if result.exit_code == 2:
        assert lines[-1].startswith("Error: "), out
    allowed = {"ck.pt", "sub"} if "--checkpoint" in args else set()
    assert set(left) <= allowed, left  # nothing written that was not asked for
    return result.exit_code, out


_KEYS = st.one_of(
    st.builds(lambda i, a: f"layers[{i}].{a}", st.integers(-16, 16),
              st.sampled_from(["p", "block", "out_channels", "kernel_size", "bn", "stride",
                               "pp", "se_ratio", "out_features", "in_channels"])),
    st.builds(lambda i, j, a: f"layers[{i}:{j}].{a}", st.integers(-16, 16),
              st.integers(-16, 16), st.sampled_from(["p", "bn", "block", "stride"])),
    st.sampled_from(["num_classes", "input", "name", "layers", "layers[].p", "layers[0]",
                     "layers[0].", "[0].p", " layers[1].p ", "layers[1.5].p"]),
)
_YAML_VALUES = st.one_of(
    st.sampled_from(["0.1", "null", "~", "true", "'false'", "1e-3", "1.0e-3", "-1", "2.0",
                     "[3, 64, 64]", "[3, 8]", "[]", "{}", "dwsep", "conv", "nope", ".nan",
                     ".inf", "&a [*a, *a]", "{a: 1, a: 2}", "[[[[]]]]", "'", "99999999999999",
                     "10", "5", ""]),
    st.text(alphabet="[]{}:,&*!'\" 0123456789.-abenul", max_size=12),
)


@settings(FUZZ, max_examples=_n(300))
@given(overrides=st.lists(st.tuples(_KEYS, _YAML_VALUES), max_size=3,
                          unique_by=lambda pair: pair[0].replace(" ", "")))
def test_generated_overrides(overrides: list[tuple[str, str]], _bounded: Path) -> None:
    args = ["show", "seed_dwsep"]
    for key, value in overrides:
        args += ["--set", f"{key}={value}"]
    code, out = _cli(args, _bounded)
    if code == 0:
        ModelSpec.from_yaml(out)  # what show prints is a spec that parses


@pytest.fixture(scope="module")
def tiny_spec(_bounded: Path) -> Path:
    path = _bounded / "tiny.yaml"
    path.write_text("input: [3, 8, 8]\nnum_classes: 2\nlayers:\n  - {block: conv, "
                    "out_channels: 4}\n  - {block: global_avgpool}\n  - {block: linear, "
                    "out_features: 2}\n")
    return path


@pytest.fixture(scope="module")
def tiny_data(_bounded: Path) -> Path:
    root = _bounded / "data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 3)):
        for cls in ("ant", "bee"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


_NUMBERS = st.sampled_from(["-1", "0", "1", "2", "3", "0.5", "1e309", "nan", "x", "",
                            "99999999999999999999999", "3,8,8", "1.5"])
_PROFILE_OPTIONS = {
    "--input": st.sampled_from(["3,8,8", "3x16x16", "1,8,8", "3,8", "3,0,8", "3,a,8",
                                "3,99999999999999999999,8", "3,20000,20000", "", ",,"]),
    "--bn": st.sampled_from(["counted", "folded", "x"]),
    "--format": st.sampled_from(["table", "json", "csv", "xml"]),
    "--batch-size": _NUMBERS,
    "--device": st.sampled_from(["cpu", "auto", "cuda", "cuda:7", "foo"]),
    "--threads": st.sampled_from(["1", "0", "99999999999", "x"]),
    "--set": _YAML_VALUES.map(lambda v: f"layers[0].out_channels={v}"),
}


@settings(FUZZ, max_examples=_n(40))
@given(chosen=st.dictionaries(st.sampled_from(sorted(_PROFILE_OPTIONS)), st.just(None),
                              max_size=3),
       latency=st.booleans(), data=st.data())
def test_generated_profile_options(
    chosen: dict[str, None], latency: bool, data: st.DataObject, tiny_spec: Path,
    _bounded: Path,
) -> None:
    args = ["profile", str(tiny_spec)]
    for flag in chosen:
        args += [flag, data.draw(_PROFILE_OPTIONS[flag])]
    if latency:
        args.append("--latency")
    before = _peak_gib()
    _cli(args, _bounded)
    assert _peak_gib() - before < 1.0


# Values that end quickly whether valid or not: no option can ask for a long run.
_TRAIN_OPTIONS = {
    "--epochs": st.sampled_from(["-1", "0", "1", "2", "x", "1.5", "nan"]),
    "--batch-size": st.sampled_from(["-1", "0", "1", "4", "1000000000", "x", "2.5"]),
    "--lr": _NUMBERS, "--momentum": _NUMBERS, "--weight-decay": _NUMBERS,
    "--label-smoothing": _NUMBERS,
    "--val-size": st.sampled_from(["-1", "0", "1", "2", "4", "19", "20", "x"]),
    "--subset": st.sampled_from(["0", "1", "2", "10", "100", "x"]),
    "--test-subset": st.sampled_from(["0", "1", "2", "6", "7", "x"]),
    "--test-fraction": st.sampled_from(["0", "0.2", "1", "nan", "x"]),
    "--seed": st.sampled_from(["0", "1", "-1", "99999999999999999999", "x"]),
    "--threads": st.sampled_from(["1", "0", "99999999999", "x"]),
    "--device": st.sampled_from(["cpu", "auto", "cuda", "foo"]),
    "--precision": st.sampled_from(["fp32", "fp16", "auto", "fp64"]),
    "--optimizer": st.sampled_from(["sgd", "adamw", "adam"]),
    "--schedule": st.sampled_from(["constant", "cosine", "onecycle", "step"]),
    "--dataset": st.sampled_from(["imagefolder", "cifar10", "mnist"]),
    "--data-dir": st.sampled_from(["DATA", "DATA/train", "DATA/nope", "", "SPEC"]),
    "--checkpoint": st.sampled_from(["ck.pt", "SPEC", "DATA", "sub/ck.pt", "DATA/train/ant"]),
    "--set": _YAML_VALUES.map(lambda v: f"layers[0].out_channels={v}"),
}
_TRAIN_FLAGS = ["--resume", "--overwrite", "--no-test", "--augment", "--nesterov",
                "--no-channels-last", "--json"]


@settings(FUZZ, max_examples=_n(60))
@given(chosen=st.dictionaries(st.sampled_from(sorted(_TRAIN_OPTIONS)), st.just(None),
                              max_size=4),
       flags=st.lists(st.sampled_from(_TRAIN_FLAGS), max_size=2, unique=True), data=st.data())
def test_generated_train_options(
    chosen: dict[str, None], flags: list[str], data: st.DataObject, tiny_spec: Path,
    tiny_data: Path, _bounded: Path,
) -> None:
    options = {"--dataset": "imagefolder", "--data-dir": "DATA", "--epochs": "1",
               "--val-size": "4", "--precision": "fp32", "--threads": "1"}
    for flag in chosen:
        options[flag] = data.draw(_TRAIN_OPTIONS[flag])
    args = ["train", str(tiny_spec), "-q"]
    for flag, value in options.items():
        value = value.replace("DATA", str(tiny_data)).replace("SPEC", str(tiny_spec))
        args += [flag, value]
    args += flags
    before = _snapshot(tiny_data, tiny_spec)
    start = time.perf_counter()
    _cli(args, _bounded)
    assert time.perf_counter() - start < 120
    assert _snapshot(tiny_data, tiny_spec) == before


# ----------------------------------------------------------------- data folders


@st.composite
def folder_layouts(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly loadable layouts, and now and then a broken one: an empty class, one class
    only, a split missing, a file that is no image, mixed sizes, sizes that cannot fit."""
    flat = draw(st.integers(0, 3)) == 0
    classes = draw(st.sampled_from([["ant", "bee"], ["ant", "bee", "cat"],
                                    ["ant", "bee", "cat", "dog"]] * 3 + [["ant"]]))
    splits = [""] if flat else draw(st.sampled_from([["train", "test"]] * 5 + [["train"]]))
    sizes = st.sampled_from([0, 1] + [2, 3, 4, 5, 6] * 6)
    counts = {s: {c: draw(sizes) for c in classes} for s in splits}
    maybe = st.integers(0, 4)
    return {
        "counts": counts,
        "sizes": [(6, 6), (5, 7)] if draw(maybe) == 0 else [(6, 6)],
        "junk": draw(st.sampled_from(["broken.png", "notes.txt", ".hidden.png"]))
        if draw(maybe) == 0 else None,
        "val_size": draw(st.sampled_from([0, 0, 2, 3, 4, 8])),
        "test_fraction": draw(st.sampled_from([0.2, 0.5, 0.9])),
        "image_size": draw(st.sampled_from([None, (6, 6), (4, 9)])),
        "train_subset": draw(st.sampled_from([1, 3, 8])) if draw(maybe) == 0 else None,
        "test_subset": draw(st.sampled_from([1, 2, 4])) if draw(maybe) == 0 else None,
    }


def _write_layout(root: Path, layout: dict[str, Any]) -> None:
    """Solid-colour images whose red value is a unique id: resizing keeps it, so every
    loaded image says which file it came from."""
    k = 0
    for split, counts in layout["counts"].items():
        for cls, n in counts.items():
            folder = root / split / cls if split else root / cls
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = layout["sizes"][k % len(layout["sizes"])]
                pixels = np.zeros((h, w, 3), dtype=np.uint8)
                pixels[..., 0] = k
                pixels[..., 1] = 255
                Image.fromarray(pixels).save(folder / f"{i}.png")
                k += 1
            if layout["junk"] and n:
                (folder / layout["junk"]).write_bytes(b"not an image at all")


def _ids(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].tolist()


@settings(FUZZ, max_examples=_n(200))
@given(layout=folder_layouts())
def test_generated_data_folders_load_right_or_fail_in_one_line(
    layout: dict[str, Any], _bounded: Path
) -> None:
    root = Path(tempfile.mkdtemp(prefix="layout-", dir=_bounded))
    _write_layout(root, layout)
    before = _snapshot(root)
    try:
        splits = load_dataset(
            "imagefolder", data_dir=root, val_size=layout["val_size"],
            test_fraction=layout["test_fraction"], image_size=layout["image_size"],
            train_subset=layout["train_subset"], test_subset=layout["test_subset"],
        )
    except DwsearchError as err:
        _one_line(err)
        return
    finally:
        assert _snapshot(root) == before  # read, never written
    event("loaded")
    # It loaded: no class is missing from any split, the sizes are as asked, and no image
    # is in two splits.
    everywhere = set(range(len(splits.classes)))
    assert set(splits.train.labels.tolist()) == everywhere
    assert set(splits.test.labels.tolist()) == everywhere
    assert len(splits.val) == layout["val_size"]
    if layout["val_size"]:
        assert set(splits.val.labels.tolist()) == everywhere
    if layout["train_subset"] is not None:
        assert len(splits.train) == layout["train_subset"]
    if layout["test_subset"] is not None:
        assert len(splits.test) == layout["test_subset"]
    if layout["image_size"] is not None:
        assert splits.train.image_shape[1:] == layout["image_size"]
    train, val, test = _ids(splits.train.images), _ids(splits.val.images), _ids(splits.test.images)
    assert len(set(train + val + test)) == len(train) + len(val) + len(test)
    assert set(splits.train.images[:, 1].flatten().tolist()) == {255}  # pixels intact
