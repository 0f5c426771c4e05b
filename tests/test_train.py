"""The trainer on tiny models and tiny seeded tensors: recipe, determinism, resume, failures."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dwsearch.builder import build_model
from dwsearch.errors import ConfigError
from dwsearch.run import model_from_checkpoint
from dwsearch.runtime import (
    cpu_supports_bf16,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from dwsearch.spec import ModelSpec
from dwsearch.train import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    EpochMetrics,
    StopTraining,
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
    make_optimizer,
)

NUM_CLASSES = 3
TINY_SPEC: dict[str, Any] = {
    "input": [3, 8, 8],
    "num_classes": NUM_CLASSES,
    "layers": [
        {"block": "conv", "out_channels": 4},
        {"block": "global_avgpool"},
        {"block": "linear", "out_features": NUM_CLASSES},
    ],
}


class TensorBatches:
    """The trainer's ``Batches`` protocol over in-memory tensors, shuffled per epoch."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False
    ) -> None:
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(1000 + self.epoch))
        else:
            order = torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]


def toy_data(n: int = 96, seed: int = 0, shift: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images whose class k has a brighter channel k: separable by a tiny conv net."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    x = torch.randn(n, 3, 8, 8, generator=gen)
    x[torch.arange(n), y] += shift
    return x, y


def loaders(
    batch_size: int = 16, n: int = 96, shuffle: bool = True
) -> tuple[TensorBatches, TensorBatches]:
    x, y = toy_data(n, seed=0)
    xv, yv = toy_data(48, seed=1)
    return TensorBatches(x, y, batch_size, shuffle=shuffle), TensorBatches(xv, yv, 32)


def tiny_model(dropout: float = 0.1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(dropout),  # consumes the RNG, so resume must restore it
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, NUM_CLASSES),
    )


def cfg(**changes: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "batch_size": 16,
        "epochs": 2,
        "lr": 0.05,
        "device": "cpu",
        "precision": "fp32",
    }
    return TrainConfig(**{**base, **changes})


def numbers(epochs: list[EpochMetrics]) -> list[tuple[Any, ...]]:
    """The deterministic part of the metrics (everything but timings)."""
    return [
        (m.epoch, m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy, m.lr) for m in epochs
    ]


def run(config: TrainConfig, **kwargs: Any) -> tuple[nn.Module, Any]:
    seed_everything(0)
    model = kwargs.pop("model", None) or tiny_model()
    train, val = loaders(batch_size=config.batch_size)
    return model, fit(model, train, val, config, progress=False, **kwargs)


# -- config ---------------------------------------------------------------------------------


def test_defaults_are_the_seed_recipe() -> None:
    c = TrainConfig()
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay, c.nesterov) == (
        "sgd",
        0.1,
        0.9,
        1e-4,
        False,
    )
    assert (c.batch_size, c.epochs, c.schedule, c.label_smoothing) == (128, 10, "constant", 0.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("optimizer", "adam"),
        ("lr", 0),
        ("lr", float("nan")),
        ("lr", "0.1"),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("nesterov", 1),
        ("batch_size", 0),
        ("batch_size", True),
        ("epochs", 1.5),
        ("label_smoothing", 1.0),
        ("schedule", "step"),
        ("augment", "yes"),
        ("precision", "fp64"),
        ("channels_last", None),
        ("compile", 0),
        ("device", "gpu"),
        ("threads", 0),
        ("seed", -1),
    ],
)
def test_config_rejects_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: expected"):
        TrainConfig(**{field: value})


def test_nesterov_needs_sgd_with_momentum() -> None:
    with pytest.raises(ValueError, match="nesterov"):
        TrainConfig(optimizer="adamw", nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        TrainConfig(momentum=0.0, nesterov=True)
    TrainConfig(nesterov=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(tiny_model(), *loaders(), cfg(device="cuda"), progress=False)


def test_precision_resolution_on_cpu() -> None:
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_supports_bf16() else "fp32")
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="fp16"):
        fit(tiny_model(), *loaders(), cfg(precision="fp16"), progress=False)


def test_loader_batch_size_must_match_config() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        fit(tiny_model(), *loaders(batch_size=16), cfg(batch_size=32), progress=False)


# -- training -------------------------------------------------------------------------------


def test_learns_a_separable_problem() -> None:
    _, result = run(cfg(epochs=8, lr=0.1, schedule="cosine"))
    assert result.status == "completed", result.message
    assert result.final.train_accuracy > 0.9
    assert result.best_val_accuracy > 0.9
    assert result.final.train_loss < result.epochs[0].train_loss


def test_adamw_is_built_from_the_config() -> None:
    config = cfg(optimizer="adamw", lr=1e-2, momentum=0.8, weight_decay=0.05)
    optimizer = make_optimizer(tiny_model(), config)
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-2, (0.8, 0.999), 0.05)
    # And the trainer uses it: the same start and batches end elsewhere than with SGD.
    adamw_model, adamw = run(config)
    sgd_model, sgd = run(cfg(lr=1e-2, momentum=0.8, weight_decay=0.05))
    assert adamw.status == sgd.status == "completed"
    assert not torch.equal(adamw_model[0].weight, sgd_model[0].weight)


def test_label_smoothing_is_the_objective_reported() -> None:
    """With a learning rate too small to move the weights, the first epoch's train loss is
    the smoothed cross-entropy of the initial model over the same batches."""
    smoothing = 0.4
    config = cfg(epochs=1, lr=1e-12, label_smoothing=smoothing, momentum=0.0,
                 weight_decay=0.0, channels_last=False)
    torch.manual_seed(0)
    model = tiny_model(dropout=0.0)
    initial = copy.deepcopy(model)
    train, _ = loaders()
    result = fit(model, train, None, config, progress=False)
    train.set_epoch(0)
    total = plain = 0.0
    initial.train()
    with torch.no_grad():
        for x, y in train:
            logits = initial(x)
            total += float(F.cross_entropy(logits, y, label_smoothing=smoothing)) * len(y)
            plain += float(F.cross_entropy(logits, y)) * len(y)
    n = len(train.y)
    assert result.epochs[0].train_loss == pytest.approx(total / n, rel=1e-5)
    assert abs(total - plain) / n > 1e-3  # smoothing really changes the number


def test_same_seed_gives_identical_metrics() -> None:
    config = cfg(epochs=3, schedule="onecycle")
    model_a, a = run(config)
    model_b, b = run(config)
    assert numbers(a.epochs) == numbers(b.epochs)
    for pa, pb in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def test_callbacks_get_one_sane_metrics_per_epoch() -> None:
    seen: list[EpochMetrics] = []
    _, result = run(cfg(epochs=3), callbacks=[seen.append])
    assert [m.epoch for m in seen] == [1, 2, 3]
    assert seen == result.epochs
    for m in seen:
        assert 0.0 <= m.train_accuracy <= 1.0 and 0.0 <= (m.val_accuracy or 0.0) <= 1.0
        assert m.train_loss > 0 and m.val_loss is not None and m.val_loss > 0
        assert m.seconds > 0 and m.images_per_second > 0 and m.eval_seconds > 0
        assert m.lr == pytest.approx(0.05)
    assert result.seconds >= sum(m.seconds for m in seen)


def test_without_val_loader_val_fields_are_none() -> None:
    seed_everything(0)
    train, _ = loaders()
    result = fit(tiny_model(), train, None, cfg(epochs=1), progress=False)
    assert result.final is not None
    assert result.final.val_loss is None and result.final.val_accuracy is None
    assert result.best_val_accuracy is None


def one_step_epochs(schedule: str, epochs: int = 10) -> list[float]:
    """Per-step learning rates: one batch per epoch, so each epoch's lr is one step's."""
    seed_everything(0)
    x, y = toy_data(16)
    train = TensorBatches(x, y, 16)
    result = fit(
        tiny_model(), train, None, cfg(epochs=epochs, schedule=schedule, lr=0.1), progress=False
    )
    return [m.lr for m in result.epochs]


def test_constant_schedule() -> None:
    assert one_step_epochs("constant", epochs=3) == [0.1] * 3


def test_cosine_schedule_decays_to_zero() -> None:
    lrs = one_step_epochs("cosine")  # the lr each of 10 steps used
    assert lrs[0] == 0.1
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert lrs[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 9 / 10)))
    assert lrs[-1] < 0.003


def test_onecycle_schedule_peaks_at_lr() -> None:
    lrs = one_step_epochs("onecycle")
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(0.1)
    assert 0 < peak < len(lrs) - 1
    assert all(a < b for a, b in itertools.pairwise(lrs[: peak + 1]))  # warm-up
    assert all(a > b for a, b in itertools.pairwise(lrs[peak:]))  # anneal
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[-1] < 1e-5


@pytest.mark.skipif(not cpu_supports_bf16(), reason="CPU lacks avx512_bf16/amx_bf16")
def test_bf16_autocast_on_cpu() -> None:
    _, result = run(cfg(precision="bf16"))
    assert result.status == "completed" and result.precision == "bf16"
    assert all(
        math.isfinite(m.train_loss) and math.isfinite(m.val_loss or 0.0) for m in result.epochs
    )


def test_evaluate_restores_mode_and_counts_accuracy() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES))
    x, y = toy_data(32)
    loss, acc = evaluate(model, TensorBatches(x, y, 10), device="cpu")
    with torch.no_grad():
        logits = model(x)
    assert model.training
    assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


def test_progress_bar_writes_epoch_lines(capsys: pytest.CaptureFixture[str]) -> None:
    seed_everything(0)
    fit(tiny_model(), *loaders(), cfg(epochs=1), progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


# -- failures -------------------------------------------------------------------------------


class InfAfter(nn.Module):
    """Outputs inf from the ``after``-th training forward call on (a stand-in for blow-up)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.body = tiny_model()
        self.after, self.calls = after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.after:
                return out * math.inf
        return out


def test_inf_output_is_reported_with_epoch_and_step() -> None:
    # 6 steps per epoch: call 10 is epoch 2, step 4
    _, result = run(cfg(epochs=3), model=InfAfter(after=10))
    assert result.status == "diverged"
    assert "epoch 2, step 4" in result.message and "lower learning rate" in result.message
    assert [m.epoch for m in result.epochs] == [1]


def test_huge_learning_rate_diverges_without_traceback() -> None:
    _, result = run(cfg(epochs=3, lr=1e6, momentum=0.0))
    assert result.status == "diverged"
    assert "loss became" in result.message and "epoch 1" in result.message


def test_stop_training_from_callback(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"

    def stop_at_two(m: EpochMetrics) -> None:
        if m.epoch == 2:
            raise StopTraining("plateau")

    _, result = run(cfg(epochs=4), callbacks=[stop_at_two], checkpoint=ckpt)
    assert result.status == "stopped" and result.message == "plateau"
    assert len(result.epochs) == 2
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and len(state["metrics"]) == 2
    assert state["metrics"][-1]["train_loss"] == result.final.train_loss


def test_other_callback_exceptions_propagate() -> None:
    class Pruned(Exception):
        pass

    def prune(m: EpochMetrics) -> None:
        raise Pruned(f"epoch {m.epoch}")

    with pytest.raises(Pruned, match="epoch 1"):
        run(cfg(), callbacks=[prune])


# -- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_contents(tmp_path: Path) -> None:
    ckpt = tmp_path / "sub" / "run.pt"
    model, result = run(cfg(), checkpoint=ckpt, spec={"name": "tiny"})
    state = load_checkpoint(ckpt)
    assert state["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert state["spec"] == {"name": "tiny"}
    assert state["epoch"] == 2 and state["config"] == result.to_dict()["config"]
    assert [m["train_loss"] for m in state["metrics"]] == [m.train_loss for m in result.epochs]
    assert {"torch", "python", "dwsearch"} <= set(state["versions"])
    assert state["rng"]["torch"].dtype == torch.uint8
    assert {"optimizer", "scheduler", "scaler"} <= set(state)
    for name, value in model.state_dict().items():
        assert torch.equal(state["model"][name], value)
    assert not list(tmp_path.glob("sub/.*tmp"))  # the temporary file was renamed away


def test_missing_and_corrupt_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable dwsearch checkpoint") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)
    # A pickle of an arbitrary object: torch's own message would advise weights_only=False,
    # which runs the file's code. Ours never does.
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": Path("x")}, foreign)
    with pytest.raises(CheckpointError, match="not a readable") as info:
        load_checkpoint(foreign)
    assert "weights_only" not in str(info.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a dwsearch checkpoint"):
        load_checkpoint(other)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_resume_equals_uninterrupted(tmp_path: Path, schedule: str) -> None:
    config = cfg(epochs=3, schedule=schedule)
    straight_model, straight = run(config)

    def stop_after_one(m: EpochMetrics) -> None:
        raise StopTraining("preempted")

    ckpt = tmp_path / "run.pt"
    _, first = run(config, checkpoint=ckpt, callbacks=[stop_after_one])
    assert first.status == "stopped" and len(first.epochs) == 1
    # A fresh process would rebuild the model from another seed: resume must not care.
    torch.manual_seed(123)
    resumed_model = tiny_model()
    train, val = loaders(batch_size=config.batch_size)
    resumed = fit(resumed_model, train, val, config, checkpoint=ckpt, resume=True, progress=False)
    assert resumed.status == "completed"
    assert numbers(resumed.epochs) == numbers(straight.epochs)
    for a, b in zip(
        straight_model.state_dict().values(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_resume_with_more_epochs_continues(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    _, straight = run(cfg(epochs=2))
    run(cfg(epochs=1), checkpoint=ckpt)
    _, resumed = run(cfg(epochs=2), checkpoint=ckpt, resume=True)
    assert numbers(resumed.epochs) == numbers(straight.epochs)
    # Nothing left to do: the stored metrics come back untouched.
    _, again = run(cfg(epochs=2), checkpoint=ckpt, resume=True)
    assert numbers(again.epochs) == numbers(straight.epochs)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_growing_epochs_replans_the_schedule(tmp_path: Path, schedule: str) -> None:
    ckpt = tmp_path / "run.pt"
    _, first = run(cfg(epochs=1, schedule=schedule), checkpoint=ckpt)
    _, grown = run(cfg(epochs=3, schedule=schedule), checkpoint=ckpt, resume=True)
    assert grown.status == "completed", grown.message
    assert numbers(grown.epochs[:1]) == numbers(first.epochs)
    assert [m.epoch for m in grown.epochs] == [1, 2, 3]
    assert grown.epochs[-1].lr < 0.01  # annealed again by the end of the longer plan


def test_resume_without_checkpoint_file_starts_fresh(tmp_path: Path) -> None:
    _, result = run(cfg(epochs=1), checkpoint=tmp_path / "new.pt", resume=True)
    assert result.status == "completed" and (tmp_path / "new.pt").is_file()


@pytest.mark.parametrize(
    ("change", "field"),
    [({"lr": 0.01}, "lr"), ({"optimizer": "adamw"}, "optimizer"), ({"seed": 1}, "seed")],
)
def test_resume_rejects_changed_config(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    ckpt = tmp_path / "run.pt"
    run(cfg(epochs=1), checkpoint=ckpt)
    with pytest.raises(ValueError, match=rf"config field '{field}' differs"):
        run(cfg(epochs=2, **change), checkpoint=ckpt, resume=True)


def test_resume_rejects_fewer_epochs_and_other_batch_size(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    run(cfg(epochs=2), checkpoint=ckpt)
    with pytest.raises(ValueError, match="epochs may only grow"):
        run(cfg(epochs=1), checkpoint=ckpt, resume=True)
    with pytest.raises(ValueError, match="'batch_size' differs"):
        run(cfg(epochs=2, batch_size=32), checkpoint=ckpt, resume=True)


def test_model_from_checkpoint_rebuilds_from_spec(tmp_path: Path) -> None:
    seed_everything(0)
    model = build_model(TINY_SPEC)
    train, val = loaders()
    ckpt = tmp_path / "run.pt"
    spec = ModelSpec.from_dict(TINY_SPEC)  # a ModelSpec is stored as its plain dict
    result = fit(model, train, val, cfg(), checkpoint=ckpt, spec=spec, progress=False)
    assert result.status == "completed"
    assert load_checkpoint(ckpt)["spec"] == spec.to_dict()
    rebuilt = model_from_checkpoint(ckpt)
    assert not rebuilt.training
    x, _ = toy_data(8, seed=5)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x), atol=1e-5)


def test_model_from_checkpoint_without_spec(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    run(cfg(epochs=1), checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="no spec"):
        model_from_checkpoint(ckpt)


def test_fit_restores_the_thread_count_it_changes() -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    _, result = run(cfg(epochs=1, threads=wanted))
    assert result.threads == wanted
    assert torch.get_num_threads() == before


def test_a_loss_hook_sees_each_batch_with_the_extra_rows_that_travel_with_it() -> None:
    """``fit(loss=...)`` replaces cross-entropy; a BatchLoader's ``extra`` rows (here each
    sample's own index) are gathered with the shuffled batch, so row i belongs to image i."""
    from dwsearch.data import BatchLoader, ImageTensors

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (40,), generator=gen)
    data = ImageTensors(images, labels, ("a", "b", "c"))
    loader = BatchLoader(data, batch_size=16, shuffle=True, seed=3,
                         extra=torch.arange(40, dtype=torch.float32)[:, None])
    seen: list[torch.Tensor] = []

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
             extra: torch.Tensor | None) -> torch.Tensor:
        assert extra is not None
        rows = extra[:, 0].long()
        assert torch.equal(labels[rows], y)  # the rows of exactly this batch's samples
        seen.append(rows)
        return F.cross_entropy(logits, y) * 0.0 + logits.sum() * 0.0 + 1.0

    seed_everything(0)
    model = build_model(TINY_SPEC)
    result = fit(model, loader, None, TrainConfig(epochs=1, batch_size=16, device="cpu",
                                                  precision="fp32", channels_last=False),
                 loss=loss, progress=False)
    assert result.status == "completed" and result.final is not None
    assert result.final.train_loss == pytest.approx(1.0)  # the hook's value is what is logged
    assert sorted(torch.cat(seen).tolist()) == list(range(40))
    with pytest.raises(Exception, match=r"extra: expected one row per sample \(40, \.\.\.\)"):
        BatchLoader(data, batch_size=16, extra=torch.zeros(39, 10))
