"""The registry: built-ins reserved from the start, aliases, thread safety, listing without
torch. Tests that depend on a fresh registry run in their own interpreter."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest

from dwsearch import ModelSpec, build_model, get_block, list_blocks, register_block
from dwsearch.errors import UnknownBlockError
from dwsearch.registry import (
    BUILTIN_BLOCKS,
    block_info,
    canonical_layer,
    canonical_name,
    register_alias,
)


def fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(BUILTIN_BLOCKS))
def test_builtin_table_matches_the_classes(name: str) -> None:
    entry = BUILTIN_BLOCKS[name]
    factory = get_block(name)
    module, _, attribute = entry.target.partition(":")
    assert (factory.__module__, factory.__name__) == (module, attribute)
    assert entry.description == (inspect.getdoc(factory) or "").splitlines()[0]


def test_a_user_cannot_take_a_builtin_name_even_before_any_lookup() -> None:
    """The bug this guards: a user's @register_block("conv") made before the built-ins were
    loaded used to succeed and break every later build of a built-in spec."""
    proc = fresh_python("""
        from torch import nn
        from dwsearch import register_block, build_model
        try:
            @register_block("conv")
            class Mine(nn.Module):
                pass
        except ValueError as err:
            print("refused:", err)
        print(type(build_model("seed_cnn")[0]).__name__)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "refused: block name 'conv' is already taken (a built-in block)" in proc.stdout
    assert proc.stdout.strip().endswith("ConvBlock")


def test_aliases_build_the_same_block_and_hash_the_same() -> None:
    assert canonical_name("conv_dw") == "dwsep"
    assert "conv_dw" not in list_blocks()  # listed once, under its name
    assert "conv_dw" in block_info("dwsep").aliases
    spec = {"input": [3, 8, 8], "num_classes": 2, "layers": [
        {"block": "conv_dw", "out_channels": 4}, {"block": "global_avgpool"},
        {"block": "linear", "out_features": 2}]}
    model = build_model(spec)
    assert type(model[0]) is get_block("dwsep")
    renamed = {**spec, "layers": [{"block": "dwsep", "out_channels": 4}, *spec["layers"][1:]]}
    assert ModelSpec.from_dict(spec).hash() == ModelSpec.from_dict(renamed).hash()
    assert ModelSpec.from_dict(spec).written_hash() != ModelSpec.from_dict(renamed).written_hash()


def test_names_and_aliases_share_one_namespace() -> None:
    with pytest.raises(ValueError, match="'conv_dw' is already taken \\(an alias of 'dwsep'\\)"):
        register_block("conv_dw")(type("X", (), {}))
    with pytest.raises(ValueError, match="already taken"):
        register_alias("conv", "dwsep")
    with pytest.raises(UnknownBlockError, match="did you mean"):
        register_alias("fresh_alias_name", "dwsepp")
    with pytest.raises(ValueError, match="identifier"):
        register_block("not a name")


def test_user_block_with_alias_in_a_fresh_process() -> None:
    proc = fresh_python("""
        from torch import nn
        from dwsearch import register_block, build_model, ModelSpec
        from dwsearch.registry import register_alias

        @register_block("scaled_conv", aliases=("old_scaled",))
        class ScaledConv(nn.Module):
            '''A conv times a learned scalar.'''
            def __init__(self, in_channels: int, out_channels: int, scale: float = 1.0):
                super().__init__()
                self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
            def forward(self, x):
                return self.conv(x)

        register_alias("older_scaled", "old_scaled")
        tail = [{"block": "global_avgpool"}, {"block": "linear", "out_features": 2}]
        a = {"input": [3, 8, 8], "num_classes": 2,
             "layers": [{"block": "older_scaled", "out_channels": 4}, *tail]}
        b = {"input": [3, 8, 8], "num_classes": 2,
             "layers": [{"block": "scaled_conv", "out_channels": 4, "scale": 1.0}, *tail]}
        print(type(build_model(a)[0]).__name__,
              ModelSpec.from_dict(a).hash() == ModelSpec.from_dict(b).hash())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ScaledConv", "True"]


def test_defaults_filled_hash() -> None:
    short = {"input": [3, 8, 8], "num_classes": 2, "layers": [
        {"block": "conv", "out_channels": 4}, {"block": "global_avgpool"},
        {"block": "linear", "out_features": 2}]}
    explicit = {**short, "name": "other name", "layers": [
        {"block": "conv", "out_channels": 4, "kernel_size": 3, "in_channels": 3},
        {"block": "global_avgpool", "flatten": True},
        {"block": "linear", "out_features": 2, "in_features": 4, "bias": True}]}
    different = {**short, "layers": [{"block": "conv", "out_channels": 4, "kernel_size": 5},
                                     *short["layers"][1:]]}
    h = ModelSpec.from_dict(short).hash()
    assert ModelSpec.from_dict(explicit).hash() == h
    assert ModelSpec.from_dict(different).hash() != h
    # The as-written form is kept for display.
    assert ModelSpec.from_dict(short).to_dict()["layers"][0] == {"block": "conv",
                                                                 "out_channels": 4}
    name, args = canonical_layer("conv", {"out_channels": 4})
    assert name == "conv" and args["kernel_size"] == 3 and "in_channels" not in args


def test_building_from_eight_threads_at_once_in_a_fresh_process() -> None:
    """Optuna runs trials in threads: the first lookups, plugin discovery and builds race."""
    proc = fresh_python("""
        import threading
        from dwsearch import build_model, ModelSpec
        names = ["seed_cnn", "seed_dwsep"] * 4
        barrier = threading.Barrier(len(names))
        results, errors = [], []
        def work(name):
            try:
                barrier.wait()
                spec = ModelSpec.from_dict({"input": [3, 16, 16], "num_classes": 3, "layers": [
                    {"block": b, "out_channels": 8} for b in
                    ("conv", "dwsep", "hybrid", "inverted_residual", "grouped")[:4]
                ] + [{"block": "global_avgpool"}, {"block": "linear", "out_features": 3}]})
                results.append((len(build_model(spec)), len(build_model(name)), spec.hash()))
            except Exception as err:
                errors.append(repr(err))
        threads = [threading.Thread(target=work, args=(n,)) for n in names]
        for t in threads: t.start()
        for t in threads: t.join()
        print(len(results), len(set(r[2] for r in results)), errors)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "8 1 []"


@pytest.mark.parametrize("args", [["--help"], ["blocks"], ["blocks", "dw*"], ["train", "--help"],
                                  ["bench", "--help"]])
def test_help_and_block_listing_do_not_import_torch(args: list[str]) -> None:
    proc = fresh_python(f"""
        import sys
        from dwsearch.cli import main
        try:
            main({args!r})
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print("torch imported:", "torch" in sys.modules, file=sys.stderr)
    """)
    assert "torch imported: False" in proc.stderr, proc.stderr
    assert proc.stdout.strip()
