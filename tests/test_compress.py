"""Compression with real components: the distillation loss against its closed form, teacher
logits cached beside real CIFAR-10 images against the teacher run batch by batch, Torch-Pruning
on every registered conv block written back as a spec (rebuilt with identical outputs), MAC
and parameter targets checked with dwsearch's exact counts, quantization-aware training lowered
and run in ExecuTorch int8, the command group, and every bad input as one located line before
anything trains.

Tiny nets and a few hundred real images keep the module to about 40 s on a 2-core CPU.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch_pruning as tp
from click.testing import CliRunner
from realdata import MISSING_OUTSIDE_CI, require_cifar10
from torch import nn
from torch.nn import functional as F

from dwsearch import build_model, register_block
from dwsearch.cli import main
from dwsearch.compress import (
    DistillConfig,
    PruneConfig,
    PruneTarget,
    QatConfig,
    distillation_loss,
    load_teacher,
    prune_and_finetune,
    prune_model,
    pruned_spec,
    quantization_aware,
)
from dwsearch.costs import profile
from dwsearch.data import BatchLoader, DataSplits, load_dataset
from dwsearch.data.config import DataConfig
from dwsearch.errors import CompressError, ConfigError, DwsearchError
from dwsearch.registry import block_info, block_signature, list_blocks
from dwsearch.run import train_spec
from dwsearch.spec import ModelSpec
from dwsearch.train import TrainConfig
from dwsearch.train.checkpoint import CHECKPOINT_FORMAT_VERSION, save_checkpoint

needs_cifar = pytest.mark.skipif(MISSING_OUTSIDE_CI, reason="real CIFAR-10 copy not found")
RECIPE = TrainConfig(epochs=1, batch_size=64, device="cpu", precision="fp32",
                     channels_last=False, seed=0)


def tiny(layers: list[dict[str, Any]], classes: int = 10, size: int = 32) -> dict[str, Any]:
    """A small CIFAR net: a strided conv stem (16x16), the layers, pooling, a classifier."""
    return {"input": [3, size, size], "num_classes": classes,
            "layers": [{"block": "conv", "out_channels": 16, "stride": 2}, *layers,
                       {"block": "global_avgpool"}, {"block": "linear", "out_features": classes}]}


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norm statistics and weights spread as after training: BN's defaults (mean 0,
    variance 1) and equal magnitudes would make pruning and rebuilding checks too easy."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.num_features, generator=gen) - 0.5)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    return model.eval()


def write_checkpoint(path: Path, spec: dict[str, Any], seed: int = 0) -> Path:
    """A dwsearch checkpoint of ``spec`` with seeded weights (a teacher need not be good to
    be checked, cached or identified)."""
    torch.manual_seed(seed)
    model = trained_like(build_model(spec), seed)
    save_checkpoint(path, {"format_version": CHECKPOINT_FORMAT_VERSION,
                           "spec": ModelSpec.from_dict(spec).to_dict(),
                           "model": model.state_dict()})
    return path


@pytest.fixture(scope="module")
def splits(cifar10_cache: Path) -> Iterator[DataSplits]:
    """Real CIFAR-10 (the lossy JPEG copy): 512 training, 200 validation, 200 test images."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DWSEARCH_CACHE_DIR", str(cifar10_cache))
        yield load_dataset("cifar10", data_dir=require_cifar10(), val_size=200,
                           train_subset=512, test_subset=200, seed=0, download=False)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("teacher")
    return write_checkpoint(folder / "teacher.pt",
                            tiny([{"block": "conv", "out_channels": 32}]) | {"name": "teacher"})


# -- distillation -----------------------------------------------------------------------------


def test_distillation_loss_matches_its_closed_form_on_hand_made_logits() -> None:
    """Two images, three classes, computed by hand with math: (1 - a) CE + a T^2 KL."""
    student = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
    teacher = [[1.0, 0.5, -0.5], [0.0, 3.0, 1.0]]
    labels = [0, 2]
    alpha, temperature = 0.7, 3.0

    def softmax(row: list[float], t: float) -> list[float]:
        exps = [math.exp(v / t) for v in row]
        return [e / sum(exps) for e in exps]

    ce = sum(-math.log(softmax(s, 1)[y]) for s, y in zip(student, labels, strict=True)) / 2
    kl = sum(sum(p * math.log(p / q) for p, q in zip(softmax(t, temperature),
                                                      softmax(s, temperature), strict=True))
             for s, t in zip(student, teacher, strict=True)) / 2
    expected = (1 - alpha) * ce + alpha * temperature**2 * kl
    got = distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels),
                            alpha=alpha, temperature=temperature)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    hard = distillation_loss(torch.tensor(student), torch.tensor(teacher),
                             torch.tensor(labels), alpha=0.0, temperature=temperature)
    assert float(hard) == pytest.approx(ce, rel=1e-6)
    soft = distillation_loss(torch.tensor(student), torch.tensor(teacher),
                             torch.tensor(labels), alpha=1.0, temperature=temperature)
    assert float(soft) == pytest.approx(temperature**2 * kl, rel=1e-6)
    # A student equal to its teacher pays only the hard term.
    same = distillation_loss(torch.tensor(teacher), torch.tensor(teacher),
                             torch.tensor(labels), alpha=alpha, temperature=temperature)
    assert float(same) == pytest.approx((1 - alpha) * float(F.cross_entropy(
        torch.tensor(teacher), torch.tensor(labels))), rel=1e-6)


@needs_cifar
def test_cached_teacher_logits_equal_the_teacher_run_on_each_batch(
        splits: DataSplits, teacher_file: Path) -> None:
    """The logits kept beside the training images, gathered with each shuffled batch, are
    the teacher's outputs for exactly that batch (fp32; equal up to summation order)."""
    teacher = load_teacher(DistillConfig(teacher_file))
    cached = teacher.logits(splits.train, device="cpu", precision="fp32")
    assert cached.shape == (512, 10) and not cached.requires_grad
    assert teacher.logits(splits.train, device="cpu", precision="fp32") is cached  # once
    loader = BatchLoader(splits.train, batch_size=100, shuffle=True, seed=7, extra=cached)
    for images, _, rows in loader:
        assert torch.allclose(rows, teacher.forward(images, precision="fp32"), atol=1e-5)
    assert load_teacher(DistillConfig(teacher_file)) is teacher  # loaded once per file


@needs_cifar
def test_a_distilled_run_records_its_teacher_and_alpha_zero_is_plain_training(
        splits: DataSplits, teacher_file: Path) -> None:
    student = tiny([{"block": "dwsep", "out_channels": 16}])
    plain = train_spec(student, splits, RECIPE, test=False, progress=False)
    zero = train_spec(student, splits, RECIPE, test=False, progress=False,
                      distill=DistillConfig(teacher_file, alpha=0.0))
    taught = train_spec(student, splits, RECIPE, test=False, progress=False,
                        distill=DistillConfig(teacher_file, alpha=0.9, temperature=4.0))
    assert plain.compression is None and plain.flat()["compression"] is None
    assert zero.val_accuracy == plain.val_accuracy  # the cached path changes nothing else
    info = taught.compression["distill"]
    teacher = load_teacher(DistillConfig(teacher_file))
    assert info["teacher_spec_hash"] == teacher.spec.hash()
    assert info["teacher_weights"] == teacher.checksum and len(teacher.checksum) == 16
    assert (info["alpha"], info["temperature"], info["teacher_logits"]) == (0.9, 4.0, "cached")
    assert taught.flat()["compression"] == "distill"
    assert taught.epochs[0].train_loss != plain.epochs[0].train_loss
    augmented = train_spec(student, splits, replace(RECIPE, augment=True), test=False,
                           progress=False, distill=DistillConfig(teacher_file))
    assert augmented.compression["distill"]["teacher_logits"] == "per_batch"


@needs_cifar
def test_distillation_cost_against_training_without_a_teacher(
        splits: DataSplits, teacher_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Printed, not asserted on timings (the CPU is shared): both paths train."""
    from dwsearch.compress import distillation_cost

    cost = distillation_cost(tiny([{"block": "dwsep", "out_channels": 16}]),
                             DistillConfig(teacher_file), splits, RECIPE)
    with capsys.disabled():
        print(f"\n{cost.format()}")
    assert min(cost.plain, cost.cached, cost.augmented, cost.per_batch) > 0
    assert cost.teacher_seconds > 0 and cost.images == 512


# -- structured pruning -----------------------------------------------------------------------


def conv_blocks() -> list[str]:
    """Every built-in block that maps channels to channels: the registry's conv blocks."""
    return [name for name in list_blocks()
            if block_info(name, load=False).source == "dwsearch"
            and {"in_channels", "out_channels"} <= set(block_signature(name).parameters)]


VARIANTS: dict[str, list[dict[str, Any]]] = {
    "conv": [{"block": "conv", "out_channels": 24}],
    "grouped": [{"block": "grouped", "out_channels": 32, "groups": 4}],
    "grouped_depthwise": [{"block": "grouped", "out_channels": 16, "groups": 16}],
    "dwsep": [{"block": "dwsep", "out_channels": 24}],
    "dwsep_se_skip": [{"block": "dwsep", "out_channels": 16, "se_ratio": 0.25, "skip": True}],
    "dwsep_multiplier": [{"block": "dwsep", "out_channels": 24, "multiplier": 2}],
    "hybrid": [{"block": "hybrid", "out_channels": 24, "ratio": 0.5}],
    "inverted_residual": [{"block": "inverted_residual", "out_channels": 24,
                           "expand_ratio": 4}],
    "inverted_residual_se_skip": [{"block": "inverted_residual", "out_channels": 16,
                                   "expand_ratio": 3, "se_ratio": 0.25}],
    "fc_head": [{"block": "maxpool", "kernel_size": 2}, {"block": "dropout2d", "p": 0.1},
                {"block": "conv", "out_channels": 24}],
}


def test_the_variants_cover_every_registered_conv_block() -> None:
    assert set(conv_blocks()) <= {v[0]["block"] for v in VARIANTS.values()}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_pruned_model_rebuilds_from_its_spec_with_the_pruned_modules_outputs(
        variant: str) -> None:
    """Torch-Pruning prunes the net itself (ratio 0.4); the spec dwsearch writes back builds
    a model that takes the pruned weights with every key and shape, computes the pruned
    module's outputs, keeps depthwise convs depthwise and the classifier's classes."""
    torch.manual_seed(0)
    model = trained_like(build_model(tiny(VARIANTS[variant])))
    example = torch.zeros(1, 3, 32, 32)
    frozen = [m for m in model.modules() if isinstance(m, nn.Conv2d)
              and 1 < m.groups == m.in_channels != m.out_channels]
    if frozen:  # dwsearch keeps a depthwise conv with a multiplier (and what feeds it)
        pruned = prune_model(model, {"macs": 0.8}).model
    else:
        pruner = tp.pruner.BasePruner(model, example, tp.importance.MagnitudeImportance(),
                                      pruning_ratio=0.4, ignored_layers=[model[-1]])
        pruner.step()
        pruned = model
    spec = pruned_spec(ModelSpec.from_dict(tiny(VARIANTS[variant])), pruned)
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), pruned.eval()(x), atol=1e-5, rtol=0)
    for conv in rebuilt.modules():
        if isinstance(conv, nn.Conv2d) and conv.groups > 1:
            assert conv.in_channels % conv.groups == 0 == conv.out_channels % conv.groups
            if "depthwise" in variant or variant.startswith(("dwsep", "inverted", "hybrid")):
                assert conv.groups == conv.in_channels  # still depthwise
    assert spec.num_classes == 10 and rebuilt[-1].fc.out_features == 10
    widths = [m.out_channels for m in rebuilt.modules() if isinstance(m, nn.Conv2d)]
    assert min(widths) >= 1 and sum(widths) < sum(
        m.out_channels for m in build_model(tiny(VARIANTS[variant])).modules()
        if isinstance(m, nn.Conv2d))


def test_an_inverted_residual_states_its_pruned_expansion_and_keeps_old_hashes() -> None:
    """mid_channels is written only where the pruned width is not in x expand_ratio; specs
    without it hash as before it existed (hash computed on the commit before it)."""
    spec = ModelSpec.from_dict(tiny([{"block": "inverted_residual", "out_channels": 16,
                                      "se_ratio": 0.25},
                                     {"block": "mbconv", "out_channels": 24,
                                      "expand_ratio": 4, "stride": 2}]))
    assert spec.hash() == "612e854aae358355"
    with_mid = spec.with_overrides({"layers[2].mid_channels": 90})
    assert with_mid.hash() != spec.hash()
    model = build_model(with_mid)
    block = model[2]
    assert block.expand.conv.out_channels == block.dw.conv.groups == 90
    m, ci, co = 90, 16, 24
    assert sum(p.numel() for p in block.parameters()) == ci * m + 2 * m + m * 9 + 2 * m + (
        m * co + 2 * co)
    with pytest.raises(DwsearchError, match=r"layers\[1\] \(inverted_residual\): mid_channels=9 "
                                            r"needs an expansion conv"):
        build_model(spec.with_overrides({"layers[1].expand_ratio": 1,
                                         "layers[1].mid_channels": 9}))


@pytest.mark.parametrize(("metric", "value"), [("macs", 0.5), ("params", 0.4), ("macs", 600_000)])
def test_a_target_is_met_within_five_percent_by_exact_counts(metric: str, value: float) -> None:
    """At most the target and within 5% of it (nets whose layers have 16 channels or more);
    counts are dwsearch.costs.profile's, the same convention as every report."""
    torch.manual_seed(0)
    model = trained_like(build_model(tiny([{"block": "conv", "out_channels": 32},
                                           {"block": "dwsep", "out_channels": 64},
                                           {"block": "conv", "out_channels": 64}])))
    pruned = prune_model(model, {metric: value})
    counted = profile(pruned.model)
    reached = counted.macs if metric == "macs" else counted.params
    limit = int(value * getattr(profile(model), metric)) if value < 1 else int(value)
    assert reached == pruned.after.of(metric)
    assert 0.95 * limit <= reached <= limit, pruned.summary()
    assert model[1].conv.out_channels == 32  # the model given is not changed


@needs_cifar
def test_taylor_pruning_reads_training_gradients_then_the_normal_trainer_fine_tunes(
        splits: DataSplits, tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "source.pt", tiny([{"block": "conv",
                                                             "out_channels": 32}]))
    outcome = prune_and_finetune(source, splits, RECIPE,
                                 PruneConfig(PruneTarget("macs", 0.5), "taylor", 1),
                                 test=False, progress=False)
    record = outcome.record
    assert record is not None and record.status == "completed"
    info = record.compression["prune"]
    assert info["importance"] == "taylor" and info["from"]["file"] == str(source)
    assert info["after"]["macs"] <= 0.5 * info["before"]["macs"]
    assert record.macs == profile(outcome.pruned.spec).macs  # an ordinary spec
    assert record.spec_hash == outcome.pruned.spec.hash()
    assert outcome.val_accuracy_before is not None and outcome.val_accuracy_pruned is not None


# -- quantization-aware training --------------------------------------------------------------


@pytest.mark.slow
@needs_cifar
def test_qat_end_to_end_lowers_and_runs_in_executorch_int8(splits: DataSplits) -> None:
    torch.manual_seed(0)
    model = trained_like(build_model(tiny([{"block": "dwsep", "out_channels": 16,
                                            "se_ratio": 0.25}])))
    result = quantization_aware(model, splits, replace(RECIPE, lr=0.01),
                                QatConfig(force=True, calibration_images=64))
    assert result.ran_qat and len(result.epochs) == 1 and result.quantized is not None
    assert result.program.runtime == "executorch" and result.program.precision == "int8"
    assert result.program is not result.ptq_program
    assert 0 <= result.qat_accuracy <= 1 and 0 <= result.ptq_accuracy <= 1
    session = result.program.load(threads=1)
    out = session.run(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10) and bool(torch.isfinite(out).all())
    assert result.latency is not None
    assert result.latency.get("qat", "executorch", "int8").median_ms > 0
    assert result.record()["ran_qat"] and "int8 after 1 epoch" in result.summary()


def test_qat_runs_only_where_post_training_int8_loses_more_than_allowed() -> None:
    from dwsearch.compress.qat import needs_qat

    assert not needs_qat(0.70, 0.695, QatConfig(max_drop=0.01))
    assert needs_qat(0.70, 0.68, QatConfig(max_drop=0.01))
    assert not needs_qat(0.70, 0.71, QatConfig(max_drop=0.0))
    assert needs_qat(0.70, 0.71, QatConfig(max_drop=0.0, force=True))


def test_qat_folds_batch_norm_into_the_convs_it_fine_tunes() -> None:
    from dwsearch.compress.qat import fold_batch_norms

    torch.manual_seed(0)
    model = trained_like(build_model(tiny([{"block": "dwsep", "out_channels": 16}])))
    folded = fold_batch_norms(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


# -- the command line -------------------------------------------------------------------------


@needs_cifar
def test_compress_commands_print_before_and_after(cifar10_cache: Path, teacher_file: Path,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWSEARCH_CACHE_DIR", str(cifar10_cache))
    data = ["--data-dir", str(require_cifar10()), "--subset", "512", "--val-size", "200",
            "--test-subset", "200", "--epochs", "1", "--batch-size", "64", "--device", "cpu",
            "-q"]
    runner = CliRunner()
    out = tmp_path / "pruned.yaml"
    result = runner.invoke(main, ["compress", "prune", str(teacher_file), "--target",
                                  "params=0.5", "--out", str(out), *data])
    assert result.exit_code == 0, result.output
    assert "before" in result.output and "fine-tuned (1 ep)" in result.output
    assert ModelSpec.from_yaml(out.read_text()).hash() != load_teacher(
        DistillConfig(teacher_file)).spec.hash()
    result = runner.invoke(main, ["compress", "distill", str(out), "--teacher",
                                  str(teacher_file), "--alpha", "0.5", *data])
    assert result.exit_code == 0, result.output
    assert "teacher teacher" in result.output and "student (distilled)" in result.output


# -- bad input: one located line, before anything trains ---------------------------------------


def refuse_training(*_: Any) -> None:
    raise AssertionError("trained despite the bad input")


@needs_cifar
@pytest.mark.parametrize(("teacher", "message"), [
    (tiny([], classes=5), r"^teacher: .*teacher\.pt \(\w+\) has 5 classes but the student has "
                          r"10; a teacher must predict the student's classes$"),
    (tiny([], size=16), r"^teacher: .*teacher\.pt \(\w+\) takes input \(3, 16, 16\) but the "
                        r"student takes \(3, 32, 32\); a teacher must see the student's images$"),
])
def test_a_teacher_that_does_not_fit_is_refused(splits: DataSplits, tmp_path: Path,
                                                teacher: dict[str, Any], message: str) -> None:
    path = write_checkpoint(tmp_path / "teacher.pt", teacher | {"name": "wrong"})
    with pytest.raises(CompressError, match=message):
        train_spec(tiny([]), splits, RECIPE, progress=False, callbacks=[refuse_training],
                   distill=DistillConfig(path))


def test_a_missing_teacher_checkpoint_is_one_line_before_the_data_loads(tmp_path: Path) -> None:
    empty = DataConfig(data_dir=str(tmp_path), download=False)  # no images: never read
    with pytest.raises(CompressError, match=r"^teacher: .*nope\.pt: no such checkpoint file$"):
        train_spec(tiny([]), empty, RECIPE, distill=DistillConfig(tmp_path / "nope.pt"))


@needs_cifar
def test_targets_that_empty_a_layer_or_are_met_already_stop_before_fine_tuning(
        splits: DataSplits, tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "source.pt", tiny([{"block": "conv",
                                                             "out_channels": 8}]))
    with pytest.raises(CompressError, match=r"^target \{macs: 0\.01\}: cannot be met without "
                                            r"removing a whole layer: layers\[\d\] \(conv\) "
                                            r"keeps 1 of its \d+ channels"):
        prune_and_finetune(source, splits, RECIPE, PruneConfig(PruneTarget("macs", 0.01)),
                           callbacks=[refuse_training])
    with pytest.raises(CompressError, match=r"^target \{params: 1,000,000\}: the model has "
                                            r"[\d,]+ params already; nothing to prune"):
        prune_and_finetune(source, splits, RECIPE, PruneConfig("params=1M"),
                           callbacks=[refuse_training])


@register_block("raw_param_conv")
class RawParamConv(nn.Module):
    """A user's block Torch-Pruning cannot trace: a raw parameter in a functional conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv2d(x, self.weight, padding=1))


@register_block("detaching_conv")
class DetachingConv(nn.Module):
    """A user's block that cuts the graph: Torch-Pruning never reaches what comes before."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.detach())


@pytest.mark.parametrize(("block", "message"), [
    ("raw_param_conv", r"^layers\[1\] \(raw_param_conv\): Torch-Pruning cannot trace it: its "
                       r"parameter 'weight' belongs to a RawParamConv"),
    ("detaching_conv", r"^layers\[1\] \(detaching_conv\): Torch-Pruning cannot trace it: the "
                       r"graph traced back from the output stops there, so layers\[0\] \(conv\)"),
])
def test_a_block_torch_pruning_cannot_trace_is_located(block: str, message: str) -> None:
    model = build_model(tiny([{"block": block, "out_channels": 16}]))
    with pytest.raises(CompressError, match=message):
        prune_model(model, {"macs": 0.5})


@pytest.mark.parametrize(("make", "message"), [
    (lambda: DistillConfig("t.pt", alpha=1.5), r"^alpha: expected a number in \[0, 1\]"),
    (lambda: DistillConfig("t.pt", alpha=float("nan")), r"^alpha: expected a number in"),
    (lambda: DistillConfig("t.pt", temperature=0), r"^temperature: expected a number in \(0, 100\]"),
    (lambda: DistillConfig("t.pt", temperature=1e6), r"^temperature: expected a number in"),
    (lambda: DistillConfig("t.pt", temperature=True), r"^temperature: expected a number in"),
    (lambda: DistillConfig(""), r"^teacher: expected the path of a checkpoint"),
    (lambda: PruneConfig("macs=0.5", finetune_epochs=-1), r"^finetune_epochs: expected an integer in 0\.\.1000"),
    (lambda: PruneConfig("macs=0.5", finetune_epochs=10**6), r"^finetune_epochs: expected an integer"),
    (lambda: PruneConfig("macs=0.5", finetune_epochs=True), r"^finetune_epochs: expected an integer"),
    (lambda: PruneConfig("macs=0.5", importance="random"), r"^importance: expected magnitude or taylor"),
    (lambda: PruneConfig("flops=0.5"), r"^target: expected macs or params, found 'flops'"),
    (lambda: PruneConfig("macs=half"), r"^target: macs: expected a ratio like 0\.5 or a count"),
    (lambda: PruneConfig({"macs": -1}), r"^target: macs: expected a ratio in \(0, 1\) or a count"),
    (lambda: PruneConfig({"macs": 1}), r"^target: macs: 1 keeps everything"),
    (lambda: QatConfig(max_drop=2), r"^max_drop: expected a fraction in \[0, 1\]"),
    (lambda: QatConfig(epochs=0), r"^epochs: expected an integer in 1\.\.1000"),
])
def test_absurd_values_are_refused_by_the_configs(make: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_missing_torch_pruning_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(CompressError, match=r"^pruning: Torch-Pruning is not installed \(cannot "
                                            r"import torch_pruning\); pip install "
                                            r"'dwsearch\[compress\]'$"):
        prune_model(build_model(tiny([])), {"macs": 0.5})


@pytest.mark.parametrize(("args", "message"), [
    (["prune", "x.pt", "--target", "macs=1"], "Error: --target: macs: 1 keeps everything"),
    (["prune", "x.pt", "--target", "macs=0.5"], "Error: x.pt: no such checkpoint file"),
    (["prune", "x.pt", "--target", "macs=0.5", "--finetune-epochs", "-3"],
     "Error: --finetune-epochs: expected an integer in 0..1000, found -3"),
    (["distill", "seed_dwsep", "--teacher", "nope.pt"],
     "Error: teacher: nope.pt: no such checkpoint file"),
    (["distill", "seed_dwsep", "--teacher", "nope.pt", "--alpha", "7"],
     "Error: --alpha: expected a number in [0, 1]"),
    (["qat", "x.pt", "--max-drop", "-1"], "Error: --max-drop: expected a fraction in [0, 1]"),
])
def test_bad_command_lines_are_one_line(args: list[str], message: str,
                                        tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compress", *args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
