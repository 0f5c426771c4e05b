"""Deployment with the real runtimes: models lowered to ExecuTorch (XNNPACK) and ONNX Runtime,
run, checked against eager PyTorch; int8 on real CIFAR-10 images; blocks that cannot be
lowered; missing runtimes; no temporary files left; the profile and export commands.

Both runtimes are installed by ``make test`` (the ``deploy`` extra and executorch). Lowering
costs about a second a program on a 2-core CPU, so programs are made once per module where
tests can share them, and inputs are small where size is not the point.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import synthetic_study as synthetic
import torch
from click.testing import CliRunner
from realdata import MISSING_OUTSIDE_CI, require_cifar10
from torch import nn

from dwsearch import build_model, register_block
from dwsearch.cli import main
from dwsearch.deploy import (
    FP32_TOLERANCE,
    Candidate,
    Lowered,
    eager_session,
    lower,
    measure,
    random_images,
    split_images,
    time_interleaved,
)
from dwsearch.errors import DeployError, RuntimeNotInstalledError
from dwsearch.registry import block_info, block_signature, list_blocks

RUNTIMES = ("executorch", "onnxruntime")


def conv_blocks() -> list[str]:
    """Every built-in block that maps channels to channels: the registry's conv blocks."""
    return [name for name in list_blocks()
            if block_info(name, load=False).source == "dwsearch"
            and {"in_channels", "out_channels"} <= set(block_signature(name).parameters)]


def every_block_spec() -> dict:
    """A small CIFAR net with one layer of each conv block (one with squeeze-excite and a
    residual skip): whatever is registered is lowered the moment it is. A strided first
    layer and a pooling keep the blocks at 8x8: what is tested is the ops, not the size."""
    required = {"grouped": {"groups": 4}, "inverted_residual": {"se_ratio": 0.25}}
    layers: list[dict] = [{"block": "conv", "out_channels": 8, "stride": 2},
                          {"block": "maxpool", "kernel_size": 2}]
    for name in conv_blocks():
        layers.append({"block": name, "out_channels": 8, **required.get(name, {})})
    layers += [{"block": "global_avgpool"}, {"block": "linear", "out_features": 10}]
    return {"name": "every_block", "input": [3, 32, 32], "num_classes": 10, "layers": layers}


@pytest.fixture(scope="module")
def cifar() -> tuple[torch.Tensor, torch.Tensor]:
    """Real CIFAR-10 (the lossy JPEG copy): 32 calibration images from the training split,
    128 check images from the validation split, normalised as the trainer does."""
    from dwsearch.data import load_dataset

    splits = load_dataset("cifar10", data_dir=require_cifar10(), val_size=1000, seed=0,
                          download=False)
    return split_images(splits.train, 32), split_images(splits.val, 128)


@pytest.fixture(scope="module")
def every_block() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(every_block_spec())
    # Running statistics as after training: BN's defaults (mean 0, variance 1) would make
    # the checks easier than on a trained model.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def programs(every_block: nn.Module, cifar: tuple[torch.Tensor, torch.Tensor]
             ) -> dict[tuple[str, str], Lowered]:
    """The every-block net lowered to both runtimes, fp32 and int8 (calibrated on training
    images, checked on validation images)."""
    calibration, check = cifar
    return {(runtime, precision): lower(every_block, runtime, precision, images=check,
                                        calibration=calibration, calibration_source="train")
            for runtime in RUNTIMES for precision in ("fp32", "int8")}


# -- fp32 and int8 programs ----------------------------------------------------------------


def test_the_test_net_holds_every_conv_block() -> None:
    assert {"conv", "grouped", "dwsep", "hybrid", "inverted_residual"} <= set(conv_blocks())


@pytest.mark.skipif(MISSING_OUTSIDE_CI, reason="real CIFAR-10 copy not found")
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fp32_programs_match_eager(programs: dict[tuple[str, str], Lowered],
                                   every_block: nn.Module, runtime: str,
                                   cifar: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Tolerance: 1e-5 of the logit scale (lower() refuses above 1e-4); measured ~1e-7."""
    program = programs[(runtime, "fp32")]
    assert program.check.images == 128
    assert program.check.max_abs_diff <= 1e-5 * program.check.logit_scale
    assert program.check.top1_agreement == 1.0
    assert FP32_TOLERANCE > 1e-5
    # The program runs again, loaded anew, on other threads and a batch it was not checked on.
    _, check = cifar
    session = program.load(threads=2)
    with torch.inference_mode():
        expected = every_block(check[:1])
    assert torch.allclose(session.run(check[:1]), expected, atol=1e-5, rtol=0)
    magic = program.program[4:8] if runtime == "executorch" else b""
    assert magic == b"ET12" or runtime == "onnxruntime"
    assert program.size_bytes == len(program.program) > 1000
    assert program.suffix == (".pte" if runtime == "executorch" else ".onnx")


@pytest.mark.skipif(MISSING_OUTSIDE_CI, reason="real CIFAR-10 copy not found")
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_int8_programs_agree_with_fp32_on_real_images(
        programs: dict[tuple[str, str], Lowered], runtime: str) -> None:
    """int8 (calibrated on 32 training images) picks eager fp32's class on at least 85% of
    128 validation images (measured: 100%)."""
    int8, fp32 = programs[(runtime, "int8")], programs[(runtime, "fp32")]
    assert int8.check.top1_agreement >= 0.85, int8.check
    assert int8.calibration_images == 32 and int8.calibration_source == "train"
    assert fp32.calibration_images == 0
    assert int8.check.max_abs_diff > 0  # quantized: close, not equal


@pytest.mark.parametrize("spec", ["seed_cnn", "seed_dwsep"])
def test_the_seed_backbones_lower_and_match_eager(spec: str) -> None:
    """The built-in backbones, layer for layer, at 8x8 input (their FC layer then takes
    1,024 features instead of 16,384: the same blocks, a 16th of the weights), on
    ExecuTorch, the mobile runtime (ONNX Runtime lowers the same blocks above; each
    lowering costs seconds here)."""
    runtime = "executorch"
    from dwsearch.zoo import load_spec

    torch.manual_seed(0)
    model = build_model(load_spec(spec).with_overrides({"input": [3, 8, 8]}))
    program = lower(model, runtime, images=random_images(8, (3, 8, 8)), batch_size=2)
    assert program.check.max_abs_diff <= 1e-5 * program.check.logit_scale
    assert program.batch_size == 2


# -- what cannot be lowered ------------------------------------------------------------------


class ErfBlock(nn.Module):
    """Uses an op neither runtime has (erfinv: not core ATen, no ONNX function)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erfinv(torch.tanh(x) * 0.5)


class BranchBlock(nn.Module):
    """Branches on tensor values: torch.export cannot capture one graph."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


@pytest.fixture(scope="module")
def user_blocks() -> dict[str, nn.Module]:
    for name, cls in (("deploy_test_erf", ErfBlock), ("deploy_test_branch", BranchBlock)):
        if name not in list_blocks():
            register_block(name)(cls)
    out = {}
    for name in ("deploy_test_erf", "deploy_test_branch"):
        out[name] = build_model({"input": [3, 8, 8], "num_classes": 10, "layers": [
            {"block": "conv", "out_channels": 4}, {"block": "dwsep", "out_channels": 4},
            {"block": name}, {"block": "global_avgpool"},
            {"block": "linear", "out_features": 10}]})
    return out


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(("block", "why"), [
    ("deploy_test_erf", {"executorch": "aten.erfinv.default is not in Core ATen opset",
                         "onnxruntime": "No ONNX function found for"}),
    ("deploy_test_branch", {"executorch": "its forward branches on tensor values",
                            "onnxruntime": "its forward branches on tensor values"}),
])
def test_a_block_that_cannot_be_lowered_is_one_located_line(
        user_blocks: dict[str, nn.Module], block: str, why: dict[str, str], runtime: str,
        capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DeployError) as caught:
        lower(user_blocks[block], runtime, images=random_images(2, (3, 8, 8)))
    message = str(caught.value)
    assert message.startswith(f"layers[2] ({block}): runtime {runtime!r} (fp32) cannot lower "
                              f"it: "), message
    assert why[runtime] in message and "\n" not in message, message
    out, err = capfd.readouterr()
    assert "def forward" not in out + err  # torch.export's graph dump is not shown


@pytest.mark.parametrize(("runtime", "module"), [("executorch", "executorch.exir"),
                                                 ("onnxruntime", "onnxruntime")])
def test_a_missing_runtime_names_the_extra(runtime: str, module: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    model = build_model({"input": [3, 8, 8], "num_classes": 10, "layers": [
        {"block": "global_avgpool"}, {"block": "linear", "out_features": 10}]})
    with pytest.raises(RuntimeNotInstalledError) as caught:
        lower(model, runtime, images=random_images(2, (3, 8, 8)))
    message = str(caught.value)
    assert message.startswith(f"runtime {runtime!r}: not installed (cannot import {module})")
    assert "pip install 'dwsearch[deploy]'" in message and "\n" not in message
    if runtime == "executorch":
        assert "pip install --no-deps executorch==1.5.1" in message
    code, out = run("profile", "seed_cnn", "--runtime", runtime)
    assert code == 1 and out.startswith("Error: runtime") and out.count("\n") == 1, out


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"runtime": "tflite"}, "runtime 'tflite': unknown; allowed: executorch, onnxruntime"),
    ({"precision": "int4"}, "precision 'int4': unknown; allowed: fp32, int8"),
    ({"precision": "int8"}, "calibration: int8 needs calibration images"),
    ({"images": torch.zeros(2, 3, 9, 9)}, "images: images of shape (3, 9, 9), but the model "
                                          "takes (3, 8, 8)"),
    ({"images": torch.full((2, 3, 8, 8), float("nan"))}, "non-finite"),
    ({"batch_size": 0}, "batch_size: expected an integer >= 1, found 0"),
])
def test_bad_arguments_are_one_line(kwargs: dict, message: str) -> None:
    model = build_model({"input": [3, 8, 8], "num_classes": 10, "layers": [
        {"block": "global_avgpool"}, {"block": "linear", "out_features": 10}]})
    args = {"runtime": "onnxruntime", "images": random_images(2, (3, 8, 8)), **kwargs}
    with pytest.raises(DeployError, match=re.escape(message)):
        lower(model, args.pop("runtime"), args.pop("precision", "fp32"), **args)


def test_a_batch_over_the_memory_limit_is_refused_before_lowering() -> None:
    from dwsearch.errors import ResourceError

    model = build_model({"input": [3, 8, 8], "num_classes": 10, "layers": [
        {"block": "global_avgpool"}, {"block": "linear", "out_features": 10}]})
    with pytest.raises(ResourceError, match=r"^batch_size 100,000,000: a latency measurement"):
        lower(model, "executorch", images=random_images(2, (3, 8, 8)), batch_size=10**8)


def test_no_temporary_file_is_left(user_blocks: dict[str, nn.Module],
                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Programs stay in memory; ONNX Runtime's quantizer works in a temporary folder that
    goes when it returns or fails: after many lowerings, failed ones too, the temporary
    folder is as it was."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    model = build_model({"input": [3, 8, 8], "num_classes": 10, "layers": [
        {"block": "conv", "out_channels": 4}, {"block": "global_avgpool"},
        {"block": "linear", "out_features": 10}]})
    images, calibration = random_images(4, (3, 8, 8)), random_images(8, (3, 8, 8), seed=1)
    lower(model, "executorch", "fp32", images=images)
    for _ in range(3):
        lower(model, "onnxruntime", "int8", images=images, calibration=calibration)
    with pytest.raises(DeployError):
        lower(user_blocks["deploy_test_branch"], "onnxruntime", "int8", images=images,
              calibration=calibration)
    # Ours would be programs or dwsearch-* folders. (ONNX Runtime 1.32 itself keeps a small
    # id file, .ses, in the temporary folder, once per machine: not a program.)
    left = [p.name for p in tmp_path.rglob("*")]
    assert [n for n in left if n.endswith((".pte", ".onnx", ".data")) or
            n.startswith("dwsearch-")] == [], left


# -- the latency protocol ----------------------------------------------------------------------


def test_interleaved_timing_records_its_conditions(programs: dict[tuple[str, str], Lowered],
                                                   every_block: nn.Module) -> None:
    from dwsearch.runtime import device_name, usable_cpus

    threads_before = torch.get_num_threads()
    candidates = [Candidate("a", "eager", "fp32", eager_session(every_block, 1)),
                  Candidate("a", "onnxruntime", "fp32",
                            programs[("onnxruntime", "fp32")].load(1), size_bytes=5),
                  Candidate("a", "executorch", "int8",
                            programs[("executorch", "int8")].load(1))]
    table = time_interleaved(candidates, threads=1, batch_size=1, input_shape=(3, 32, 32),
                             warmup=2, blocks=4, calls_per_block=3,
                             versions={"torch": "x", "onnxruntime": "y"})
    assert torch.get_num_threads() == threads_before
    assert [t.calls for t in table.timings] == [12, 12, 12]
    eager = table.get("a", "eager")
    assert eager.vs_eager is not None and eager.vs_eager.median == 1.0
    for timing in table.timings:
        assert 0 < timing.min_ms <= timing.q1_ms <= timing.median_ms <= timing.q3_ms
        assert timing.vs_eager is not None
        assert timing.vs_eager.low <= timing.vs_eager.median <= timing.vs_eager.high
        assert timing.vs_first is None  # one model: no model to compare with
    conditions = table.conditions
    assert (conditions.cpu, conditions.cores, conditions.threads) == (
        device_name("cpu"), usable_cpus(), 1)
    assert (conditions.blocks, conditions.calls_per_block, conditions.warmup) == (4, 3, 2)
    text = table.format_table()
    assert "onnxruntime" in text and "5 B" in text and "onnxruntime y" in text
    with pytest.raises(DeployError, match="given twice"):
        time_interleaved(candidates * 2, threads=1, batch_size=1, input_shape=(3, 32, 32))


def test_measure_compares_models_block_by_block() -> None:
    """Two models on one runtime: each timing carries its ratio to the first model, taken
    per block; the deployment keeps every program."""
    spec = {"input": [3, 8, 8], "num_classes": 10, "layers": [
        {"block": "conv", "out_channels": 8}, {"block": "global_avgpool"},
        {"block": "linear", "out_features": 10}]}
    dwsep = {**spec, "layers": [{"block": "dwsep", "out_channels": 8}, *spec["layers"][1:]]}
    models = {"conv": build_model(spec), "dwsep": build_model(dwsep)}
    done = measure(models, ["onnxruntime"], images=random_images(4, (3, 8, 8)), threads=[1],
                   blocks=3, calls_per_block=2, warmup=1)
    assert set(done.lowered) == {("conv", "onnxruntime", "fp32"),
                                 ("dwsep", "onnxruntime", "fp32")}
    (table,) = done.tables
    ratio = table.get("dwsep", "onnxruntime").vs_first
    assert ratio is not None and ratio.reference == "conv"
    assert table.get("conv", "onnxruntime").vs_first.median == 1.0  # type: ignore[union-attr]
    assert "x conv (blocks)" in done.format()


# -- the command line --------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


TINY = {"name": "tiny", "input": [3, 8, 8], "num_classes": 10, "layers": [
    {"block": "conv", "out_channels": 4}, {"block": "dwsep", "out_channels": 8},
    {"block": "global_avgpool"}, {"block": "linear", "out_features": 10}]}


def test_profile_prints_a_latency_table_per_runtime(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    code, out = run("profile", str(path), "--runtime", "onnxruntime,executorch",
                    "--threads", "1")
    assert code == 0, out
    assert "deployment of the untrained model (programs checked on 64 random images)" in out
    assert "accuracy does: train it to measure that" in out
    assert "latency, 1 thread:" in out and "latency, 2 threads" not in out
    rows = [line.split()[:3] for line in out.splitlines() if line.startswith("tiny ")]
    assert rows == [["tiny", "eager", "fp32"], ["tiny", "onnxruntime", "fp32"],
                    ["tiny", "executorch", "fp32"]]
    assert "conditions: batch 1, input 3x8x8, 1 thread on" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--int8"], "--int8 only applies with --runtime"),
    (["--runtime", "tflite"], "expected a comma-separated list of executorch, onnxruntime"),
    (["--threads", "2"], "--threads only applies with --latency or --runtime"),
    (["--runtime", "onnxruntime", "--device", "cpu"], "--device only applies with --latency"),
])
def test_profile_refuses_options_it_would_ignore(args: list[str], message: str) -> None:
    code, out = run("profile", "seed_cnn", *args)
    assert code == 2 and message in out, out


# What the synthetic study writer models: conv, dwsep, pooling, flatten, linear.
EXPORTED = {"name": "tiny32", "input": [3, 32, 32], "num_classes": 10, "layers": [
    {"block": "conv", "out_channels": 4}, {"block": "dwsep", "out_channels": 8},
    {"block": "maxpool", "kernel_size": 8}, {"block": "flatten"},
    {"block": "linear", "out_features": 10}]}


@pytest.fixture(scope="module")
def kept_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A study whose trial 0 kept weights, its record naming the real CIFAR-10 copy."""
    from dwsearch.train.checkpoint import CHECKPOINT_FORMAT_VERSION, save_checkpoint

    folder = tmp_path_factory.mktemp("deploy-export")
    spec = EXPORTED
    torch.manual_seed(0)
    weights = folder / "t0.pt"
    save_checkpoint(weights, {"format_version": CHECKPOINT_FORMAT_VERSION, "spec": spec,
                              "model": build_model(spec).state_dict()})
    trial = synthetic.Trial({}, spec, 0, 0, "base", weights=str(weights))
    url = f"sqlite:///{folder / 's.db'}"
    name = synthetic.write_study(url, {"name": "deploy-export", "base": "seed_cnn",
                                       "sampler": "grid", "repeats": 1, "keep_weights": True},
                                 [trial], base_name="tiny32", base_spec=spec, baselines=[spec])
    return name, url


@pytest.fixture()
def real_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = require_cifar10()
    monkeypatch.setenv("DWSEARCH_DATA_DIR", str(path))
    yield path


@pytest.mark.parametrize("fmt", ["pte", "onnx-int8"])
def test_export_writes_a_checked_program(kept_study: tuple[str, str], real_data: Path,
                                         tmp_path: Path, fmt: str) -> None:
    """The exported file runs in its runtime as the kept weights do in eager PyTorch; int8
    calibrates on the trial's training images and is checked on its validation images."""
    from dwsearch.deploy._runtimes import get_runtime
    from dwsearch.export import export_trial
    from dwsearch.study.results import load_results

    name, url = kept_study
    out = tmp_path / f"m{'.pte' if fmt == 'pte' else '.onnx'}"
    code, text = run("export", name, "--storage", url, "--trial", "0", "--format", fmt,
                     "--out", str(out))
    assert code == 0, text
    # (In this process ExecuTorch's native library may log its CPU probing first, the first
    # time it loads; a real command keeps those lines out: see profile's test.)
    assert f"\n{out}  (trial 0 of {name}, {fmt})" in f"\n{text}"
    assert "check: " in text and "x eager (blocks)" in text and "conditions: batch 1" in text
    runtime = "executorch" if fmt == "pte" else "onnxruntime"
    session = get_runtime(runtime).load(out.read_bytes(), threads=1)
    results = load_results(name, url)
    images = random_images(1, (3, 32, 32))
    from dwsearch.run import model_from_weights
    from dwsearch.train.checkpoint import read_weights

    trial = results.trials[0]
    model = model_from_weights(build_model(EXPORTED).spec,
                               read_weights(trial.info.weights), "t0")
    with torch.inference_mode():
        expected = model(images)
    tolerance = 1e-5 if fmt == "pte" else 0.5
    assert torch.allclose(session.run(images), expected, atol=tolerance, rtol=0)
    if fmt == "onnx-int8":
        assert "calibrated on 128 training images, checked on 256 validation images" in text
        done = export_trial(results, 0, fmt, tmp_path / "again.onnx", calibration="random",
                            latency=False)
        assert done.latency is None and "random images (not representative" in done.images
