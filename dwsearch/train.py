"""Training loop: one model, one recipe, per-epoch metrics, checkpoints and early stopping.

The trainer knows nothing of Optuna, YAML or datasets. It consumes any iterable of ``(x, y)``
batches with ``len()`` and ``set_epoch()`` (:class:`Batches`), reports each finished epoch to
callbacks (which may end the run with :class:`StopTraining`, or raise anything else to abort),
and turns a loss that becomes nan/inf into a ``"diverged"`` result instead of a traceback.

Numbers on the hot path stay on the device: loss and accuracy sums are accumulated as tensors
and read back at most once per :data:`FINITE_CHECK_EVERY` steps, so a GPU never waits on the
host between steps.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import math
import os
import platform
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

if TYPE_CHECKING:  # only for annotations: the trainer works on plain spec data
    from dwsearch.spec import ModelSpec

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "FINITE_CHECK_EVERY",
    "Batches",
    "Callback",
    "CheckpointError",
    "EpochMetrics",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "cpu_supports_bf16",
    "evaluate",
    "fit",
    "load_checkpoint",
    "model_from_checkpoint",
    "resolve_device",
    "resolve_precision",
    "seed_everything",
]

CHECKPOINT_FORMAT_VERSION = 1

# Divergence policy: the running loss sum is read back (one host sync) every this many steps
# and at the end of every epoch. Once a step produces nan/inf the weights are poisoned and
# every later loss is nan too, so the running sum catches it and at most this many - 1 steps
# are wasted; the per-step losses of the window are kept on the device so the message can
# still name the exact step. Syncing every step would stall a GPU's queue for nothing.
FINITE_CHECK_EVERY = 16

Status = Literal["completed", "diverged", "stopped"]

_OPTIMIZERS = ("sgd", "adamw")
_SCHEDULES = ("constant", "cosine", "onecycle")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Config fields that may change between a checkpoint and its resumption: they change speed
# or where the run executes, not what is being trained. Everything else must match.
_RESUMABLE_CHANGES = frozenset({"epochs", "threads", "compile", "device", "channels_last"})


class Batches(Protocol):
    """What the trainer needs from a data loader (``dwsearch.data.BatchLoader`` fits).

    ``len()`` must be the exact number of batches one iteration yields (the LR schedule is
    planned from it); ``set_epoch(i)`` (0-based) lets a shuffling loader vary its order per
    epoch reproducibly.
    """

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


class StopTraining(Exception):
    """Raised by a callback to end the run after the current epoch (status ``"stopped"``).

    The message, if any, becomes :attr:`TrainResult.message`. Any other exception raised by a
    callback propagates out of :func:`fit` unchanged.
    """


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the run; the message says why."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run besides the model and the data.

    Defaults reproduce the seed recipe (SGD 0.1, momentum 0.9, wd 1e-4, batch 128, 10 epochs).
    """

    optimizer: str = "sgd"  # "sgd" or "adamw" (for adamw, momentum is beta1)
    lr: float = 0.1  # peak learning rate (per step, unitless); onecycle's max_lr
    momentum: float = 0.9  # SGD momentum / AdamW beta1, in [0, 1)
    weight_decay: float = 1e-4  # L2 (sgd) or decoupled (adamw) decay per step, >= 0
    nesterov: bool = False  # Nesterov momentum (sgd with momentum > 0 only)
    batch_size: int = 128  # images per training step
    epochs: int = 10  # full passes over the training set
    label_smoothing: float = 0.0  # cross-entropy target smoothing, in [0, 1)
    schedule: str = "constant"  # "constant", "cosine" (per step to 0) or "onecycle"
    augment: bool = False  # random crop + flip; applied by the data layer, recorded here
    precision: str = "auto"  # "auto", "fp32", "bf16" (autocast) or "fp16" (autocast + scaler)
    channels_last: bool = True  # NHWC memory format for model and inputs
    compile: bool = False  # wrap the model in torch.compile
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda" or "cuda:N"
    threads: int | None = None  # torch intra-op CPU threads; None leaves torch's default
    seed: int = 0  # seeds torch's RNG for training-time randomness (dropout, ...)

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(
                f"TrainConfig.{name}: expected {allowed}, found {getattr(self, name)!r}"
            )

        if self.optimizer not in _OPTIMIZERS:
            raise bad("optimizer", " or ".join(map(repr, _OPTIMIZERS)))
        if not _is_number(self.lr) or self.lr <= 0:
            raise bad("lr", "a finite number > 0")
        if not _is_number(self.momentum) or not 0 <= self.momentum < 1:
            raise bad("momentum", "a number in [0, 1)")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise bad("weight_decay", "a finite number >= 0")
        if not isinstance(self.nesterov, bool):
            raise bad("nesterov", "true or false")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise bad("nesterov", "false unless optimizer is 'sgd' with momentum > 0")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise bad("batch_size", "an integer >= 1")
        if not _is_int(self.epochs) or self.epochs < 1:
            raise bad("epochs", "an integer >= 1")
        if not _is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "a number in [0, 1)")
        if self.schedule not in _SCHEDULES:
            raise bad("schedule", " or ".join(map(repr, _SCHEDULES)))
        if not isinstance(self.augment, bool):
            raise bad("augment", "true or false")
        if self.precision not in _PRECISIONS:
            raise bad("precision", " or ".join(map(repr, _PRECISIONS)))
        if not isinstance(self.channels_last, bool):
            raise bad("channels_last", "true or false")
        if not isinstance(self.compile, bool):
            raise bad("compile", "true or false")
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise bad("threads", "null or an integer >= 1")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", "an integer >= 0")


@dataclass
class EpochMetrics:
    """What one epoch measured. Losses are mean cross-entropy per image (nats)."""

    epoch: int  # 1-based
    train_loss: float  # includes label smoothing: the objective being optimized
    train_accuracy: float  # fraction in [0, 1], measured on the fly in train mode
    val_loss: float | None  # plain cross-entropy (no smoothing); None without a val loader
    val_accuracy: float | None  # fraction in [0, 1]; None without a val loader
    lr: float  # learning rate (first param group) of the epoch's last optimizer step
    seconds: float  # wall seconds of the training part (data loading included)
    images_per_second: float  # training images / seconds
    eval_seconds: float = 0.0  # wall seconds of validation


Callback = Callable[[EpochMetrics], None]


@dataclass
class TrainResult:
    """Outcome of :func:`fit`. ``epochs`` holds every finished epoch (resumed ones included)."""

    status: Status  # "completed", "diverged" (loss became nan/inf) or "stopped" (callback)
    message: str  # one line for people: why the run ended
    epochs: list[EpochMetrics]
    seconds: float  # wall seconds of this call of fit (not of resumed earlier calls)
    config: TrainConfig
    device: str  # where it ran, e.g. "cpu" or "cuda:0"
    precision: str  # resolved precision: "fp32", "bf16" or "fp16"

    @property
    def final(self) -> EpochMetrics | None:
        """The last finished epoch, or None when none finished."""
        return self.epochs[-1] if self.epochs else None

    @property
    def best_val_accuracy(self) -> float | None:
        """Highest validation accuracy (fraction) over the epochs, or None without validation."""
        values = [m.val_accuracy for m in self.epochs if m.val_accuracy is not None]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serializable) for logs and study records."""
        return {
            "status": self.status,
            "message": self.message,
            "epochs": [asdict(m) for m in self.epochs],
            "seconds": self.seconds,
            "config": asdict(self.config),
            "device": self.device,
            "precision": self.precision,
        }


class _Diverged(Exception):
    """Internal: the loss became non-finite; the message is the user-facing explanation."""


# -- devices and precision ----------------------------------------------------------------


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (avx512_bf16 or amx_bf16 in cpuinfo).

    Without them bf16 autocast still runs but is emulated and slower than fp32. Returns False
    where /proc/cpuinfo does not exist (non-Linux).
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device for a config name: ``auto`` is cuda when available, else cpu.

    Raises ValueError when CUDA is asked for but not available (or the index does not exist).
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not _DEVICE_RE.match(name):
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {name!r}")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but CUDA is not available "
                f"(torch {torch.__version__}); use device 'cpu' or 'auto'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA "
                f"device(s) exist"
            )
    return device


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The concrete precision (``fp32``, ``bf16`` or ``fp16``) for a config value on a device.

    ``auto``: bf16 on CPUs with native bf16 and on CUDA GPUs that support it, fp16 on other
    GPUs, else fp32. Raises ValueError for fp16 on CPU and for bf16 on a CPU without native
    support (it would be emulated, slower than fp32).
    """
    if precision not in _PRECISIONS:
        raise ValueError(
            f"precision: expected {' or '.join(map(repr, _PRECISIONS))}, found {precision!r}"
        )
    kind = torch.device(device).type
    if precision == "fp32":
        return "fp32"
    if kind == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return "bf16" if bf16_ok else "fp16"
        if precision == "bf16" and not bf16_ok:
            raise ValueError("precision 'bf16': this GPU does not support bf16; use 'fp16'")
        return precision
    if kind == "cpu":
        if precision == "fp16":
            raise ValueError("precision 'fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32'")
        if precision == "auto":
            return "bf16" if cpu_supports_bf16() else "fp32"
        if not cpu_supports_bf16():
            raise ValueError(
                "precision 'bf16': this CPU lacks avx512_bf16/amx_bf16, so bf16 would be "
                "emulated and slower than fp32; use 'fp32' or 'auto'"
            )
        return "bf16"
    if precision == "auto":
        return "fp32"
    raise ValueError(f"precision {precision!r} is not supported on device type {kind!r}")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy (if installed) and torch (CPU and all CUDA devices).

    Call it before building the model so weight initialization is reproducible.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is optional for the trainer itself
        return
    np.random.seed(seed % 2**32)


# -- evaluation ---------------------------------------------------------------------------


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: str | torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy (nats per image, no label smoothing) and accuracy (fraction 0..1).

    Runs in eval mode under ``torch.inference_mode``; the model must already be on ``device``
    (batches are moved there). The model's train/eval mode is restored afterwards.
    """
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    amp_dtype = _AMP_DTYPES.get(precision, torch.bfloat16)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    try:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=amp_dtype, enabled=precision != "fp32"),
        ):
            for x, y in batches:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = model(x).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(dim=1) == y).sum()
                count += y.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: the loader yielded no batches")
    return float(loss_sum) / count, int(correct) / count


# -- optimizer and schedule ---------------------------------------------------------------


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay applies to every parameter (norm and bias included), as in the seed recipe.
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay
        )
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per optimizer step, planned over ``total_steps``."""
    if config.schedule == "onecycle":
        # Defaults otherwise: 30% warm-up from lr/25, cosine anneal to lr/25e4, and momentum
        # (beta1 for adamw) cycled between 0.85 and 0.95.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps
        )
    if config.schedule == "cosine":
        # Closed form in the step index (not CosineAnnealingLR's recursion), so a resumed
        # run lands on exactly the same learning rates.
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)),
        )
    # A constant LambdaLR keeps the loop and the checkpoints uniform across schedules.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


# -- checkpoints --------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    """The module whose state_dict has plain keys (torch.compile wraps it in ``_orig_mod``)."""
    inner = getattr(model, "_orig_mod", model)
    return inner if isinstance(inner, nn.Module) else model


def _plain_spec(spec: Mapping[str, Any] | ModelSpec | None) -> dict[str, Any] | None:
    """The spec as plain data (a ModelSpec is accepted too, via its ``to_dict``)."""
    if spec is None:
        return None
    if hasattr(spec, "to_dict"):
        return dict(spec.to_dict())
    if isinstance(spec, Mapping):
        return copy.deepcopy(dict(spec))
    raise TypeError(f"spec: expected a mapping or ModelSpec, found {type(spec).__name__}")


def _versions() -> dict[str, str]:
    try:
        own = importlib.metadata.version("dwsearch")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        own = "unknown"
    return {"torch": str(torch.__version__), "python": platform.python_version(), "dwsearch": own}


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that ``path`` always holds either the old or the new checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            # fsync before the rename: otherwise a crash can leave a renamed but empty file.
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` onto the CPU.

    Loads with ``weights_only=True``: checkpoints hold only tensors and plain data, so no
    arbitrary code can run from a tampered file. Raises FileNotFoundError for a missing file
    and :class:`CheckpointError` (one line) for one that is corrupt or not a dwsearch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__}: {first}"
        ) from None
    if not isinstance(state, dict) or "format_version" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a dwsearch checkpoint (no format_version/model)")
    if state["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']!r} is not supported "
            f"(this dwsearch reads format {CHECKPOINT_FORMAT_VERSION})"
        )
    return state


def model_from_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild the network from the spec stored in a checkpoint and load its weights.

    Returns the model on the CPU in eval mode. Raises :class:`CheckpointError` when the
    checkpoint has no spec (fit was called without ``spec=``) or the weights do not fit.
    """
    state = load_checkpoint(path)
    if state.get("spec") is None:
        raise CheckpointError(
            f"{path}: checkpoint has no spec (pass spec= to fit); build the model yourself and "
            f"load_state_dict(load_checkpoint(path)['model'])"
        )
    from dwsearch.builder import build_model  # lazy: the trainer itself needs no builder
    from dwsearch.spec import ModelSpec

    model = build_model(ModelSpec.from_dict(state["spec"], source=f"{path}: spec"))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: weights do not fit the stored spec: {first}") from None
    return model.eval()


def _check_resumable(path: Path, saved: Mapping[str, Any], config: TrainConfig) -> None:
    """Raise ValueError naming the first config field that may not change on resume."""
    current = asdict(config)
    for name in (f.name for f in fields(TrainConfig)):
        if name in _RESUMABLE_CHANGES:
            continue
        if name not in saved or saved[name] != current[name]:
            old = saved.get(name, "<missing>")
            raise ValueError(
                f"cannot resume from {path}: config field '{name}' differs (checkpoint "
                f"{old!r}, now {current[name]!r}); only "
                f"{', '.join(sorted(_RESUMABLE_CHANGES))} may change"
            )
    if saved["epochs"] > config.epochs:
        raise ValueError(
            f"cannot resume from {path}: it was planned for {saved['epochs']} epochs, "
            f"now epochs={config.epochs}; epochs may only grow"
        )


# -- training -----------------------------------------------------------------------------


@dataclass
class _Run:
    """The mutable pieces of one fit call, so the epoch function takes one argument."""

    model: nn.Module  # what steps run through (possibly torch.compile'd)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    device: torch.device
    precision: str
    channels_last: bool
    epochs: int
    show_progress: bool
    history: list[EpochMetrics] = field(default_factory=list)


def _first_bad(
    losses: list[torch.Tensor], lrs: list[float], first_step: int
) -> tuple[str, int, float]:
    """(``nan``/``inf``, step, lr) of the first non-finite loss in a window of steps."""
    values = torch.stack(losses).float().cpu().tolist()
    for i, value in enumerate(values):
        if not math.isfinite(value):
            return ("nan" if math.isnan(value) else "inf"), first_step + i, lrs[i]
    # The sum overflowed although each loss is finite: blame the window's last step.
    return "inf", first_step + len(values) - 1, lrs[-1]


class _TrainStats(NamedTuple):
    loss: float  # mean per image
    accuracy: float  # fraction
    images: int
    seconds: float  # wall
    last_lr: float  # lr of the last step


def _train_epoch(run: _Run, train: Batches, epoch: int) -> _TrainStats:
    """One pass over ``train``."""
    model, optimizer, scheduler, scaler = run.model, run.optimizer, run.scheduler, run.scaler
    amp_dtype = _AMP_DTYPES.get(run.precision, torch.bfloat16)
    amp_enabled = run.precision != "fp32"
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    correct = torch.zeros((), dtype=torch.int64, device=run.device)
    images = 0
    window: list[torch.Tensor] = []  # per-step losses since the last finiteness check
    window_lrs: list[float] = []
    window_start = 1
    model.train()
    train.set_epoch(epoch - 1)
    # The context closes the bar on divergence too, so no dead bar stays on the terminal.
    with tqdm(
        train,
        total=len(train),
        desc=f"epoch {epoch}/{run.epochs}",
        unit="batch",
        leave=False,
        disable=not run.show_progress,
        dynamic_ncols=True,
    ) as bar:
        start = time.perf_counter()
        step = 0
        lr_used = 0.0
        for step, (x_in, y_in) in enumerate(bar, start=1):
            x = x_in.to(run.device, non_blocking=True)
            y = y_in.to(run.device, non_blocking=True)
            if run.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(run.device.type, dtype=amp_dtype, enabled=amp_enabled):
                logits = model(x)
            # The loss in fp32 whatever the autocast dtype: bf16 log-softmax loses too much.
            logits = logits.float()
            loss = run.criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            # Recorded before the scheduler moves on: the lr this step actually used. (After the
            # run's final step the scheduler points past its plan, which is meaningless.)
            lr_used = optimizer.param_groups[0]["lr"]
            window_lrs.append(lr_used)
            scheduler.step()

            batch = y.shape[0]
            images += batch
            detached = loss.detach()
            window.append(detached)
            loss_sum.add_(detached, alpha=batch)
            correct.add_((logits.detach().argmax(dim=1) == y).sum())
            if step % FINITE_CHECK_EVERY == 0:
                running = float(loss_sum)  # the one host sync per window
                if not math.isfinite(running):
                    kind, bad_step, lr = _first_bad(window, window_lrs, window_start)
                    raise _Diverged(_divergence_message(kind, epoch, bad_step, lr))
                window.clear()
                window_lrs.clear()
                window_start = step + 1
                if run.show_progress:
                    elapsed = time.perf_counter() - start
                    bar.set_postfix(
                        loss=f"{running / images:.4f}", img_s=f"{images / max(elapsed, 1e-9):.0f}"
                    )
    if step == 0:
        raise ValueError(f"epoch {epoch}: the training loader yielded no batches")
    total = float(loss_sum)  # also waits for the device, so the timing below is honest
    seconds = time.perf_counter() - start
    if not math.isfinite(total):
        kind, bad_step, lr = _first_bad(window, window_lrs, window_start)
        raise _Diverged(_divergence_message(kind, epoch, bad_step, lr))
    return _TrainStats(total / images, int(correct) / images, images, seconds, lr_used)


def _divergence_message(kind: str, epoch: int, step: int, lr: float) -> str:
    return (
        f"loss became {kind} at epoch {epoch}, step {step} (lr {lr:.4g}); try a lower learning rate"
    )


def fit(
    model: nn.Module,
    train: Batches,
    val: Batches | None,
    config: TrainConfig,
    *,
    callbacks: Iterable[Callback] = (),
    checkpoint: str | Path | None = None,
    resume: bool = False,
    spec: Mapping[str, Any] | ModelSpec | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train`` for ``config.epochs`` epochs.

    After every epoch: validate on ``val`` (if given), write ``checkpoint`` (if given,
    atomically) and call each callback with the epoch's :class:`EpochMetrics`. A callback
    raising :class:`StopTraining` ends the run with status ``"stopped"``; other exceptions
    propagate. A nan/inf loss ends it with status ``"diverged"`` and a one-line message.

    ``resume=True`` continues from ``checkpoint`` when that file exists (else starts fresh);
    the config may differ only in epochs (which may grow), threads, compile, device and
    channels_last. ``spec`` (a mapping or ModelSpec) is stored in checkpoints so
    :func:`model_from_checkpoint` can rebuild the model. ``progress=None`` shows a tqdm bar
    only when stderr is a terminal.

    Seeds torch's RNG with ``config.seed`` (training-time randomness); seed model
    initialization yourself (:func:`seed_everything`) before building the model.
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    loader_batch = getattr(train, "batch_size", None)
    if _is_int(loader_batch) and loader_batch != config.batch_size:
        # The config is what checkpoints and study records keep; it must describe the run.
        raise ValueError(
            f"the training loader has batch_size {loader_batch} but config.batch_size is "
            f"{config.batch_size}; build the loader from the config"
        )
    steps_per_epoch = len(train)
    if steps_per_epoch < 1:
        raise ValueError("the training loader has no batches (len(train) == 0)")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint= (the file to resume from)")
    spec_data = _plain_spec(spec)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None

    torch.manual_seed(config.seed)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(model, config)
    scheduler = _make_scheduler(optimizer, config, config.epochs * steps_per_epoch)
    # A disabled scaler passes calls straight through, so the loop has no precision branches.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    history: list[EpochMetrics] = []
    if resume and ckpt_path is not None and ckpt_path.exists():
        history = _restore(
            ckpt_path, model, optimizer, scheduler, scaler, config, spec_data, steps_per_epoch
        )

    run = _Run(
        model=torch.compile(model) if config.compile else model,  # type: ignore[arg-type]
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        device=device,
        precision=precision,
        channels_last=config.channels_last,
        epochs=config.epochs,
        show_progress=sys.stderr.isatty() if progress is None else progress,
        history=history,
    )
    callbacks = tuple(callbacks)
    status: Status = "completed"
    message = f"trained {config.epochs} epoch(s)"
    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            metrics = _run_epoch(run, train, val, epoch)
            history.append(metrics)
            if ckpt_path is not None:
                _save_checkpoint(
                    ckpt_path,
                    _checkpoint_state(run, model, config, spec_data, steps_per_epoch),
                )
            for callback in callbacks:
                callback(metrics)
    except _Diverged as err:
        status, message = "diverged", str(err)
    except StopTraining as err:
        status = "stopped"
        message = str(err) or f"stopped by a callback after epoch {len(history)}"
    if run.show_progress and status != "completed":
        tqdm.write(message, file=sys.stderr)
    return TrainResult(
        status=status,
        message=message,
        epochs=history,
        seconds=time.perf_counter() - started,
        config=config,
        device=str(device),
        precision=precision,
    )


def _run_epoch(run: _Run, train: Batches, val: Batches | None, epoch: int) -> EpochMetrics:
    stats = _train_epoch(run, train, epoch)
    val_loss: float | None = None
    val_acc: float | None = None
    eval_seconds = 0.0
    if val is not None:
        eval_start = time.perf_counter()
        val_loss, val_acc = evaluate(
            run.model,
            val,
            device=run.device,
            precision=run.precision,
            channels_last=run.channels_last,
        )
        eval_seconds = time.perf_counter() - eval_start
    metrics = EpochMetrics(
        epoch=epoch,
        train_loss=stats.loss,
        train_accuracy=stats.accuracy,
        val_loss=val_loss,
        val_accuracy=val_acc,
        lr=float(stats.last_lr),
        seconds=stats.seconds,
        images_per_second=stats.images / max(stats.seconds, 1e-9),
        eval_seconds=eval_seconds,
    )
    if run.show_progress:
        val_text = "" if val_acc is None else f"  val {val_loss:.4f} / {val_acc:.2%}"
        tqdm.write(
            f"epoch {epoch}/{run.epochs}  train {stats.loss:.4f} / {stats.accuracy:.2%}{val_text}  "
            f"{metrics.images_per_second:.0f} img/s",
            file=sys.stderr,
        )
    return metrics


def _checkpoint_state(
    run: _Run,
    model: nn.Module,
    config: TrainConfig,
    spec: dict[str, Any] | None,
    steps_per_epoch: int,
) -> dict[str, Any]:
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "spec": spec,
        "model": _unwrap(model).state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "config": asdict(config),
        "epoch": len(run.history),
        "steps_per_epoch": steps_per_epoch,
        "device": str(run.device),
        "precision": run.precision,
        "metrics": [asdict(m) for m in run.history],
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "versions": _versions(),
    }


def _restore(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    spec: dict[str, Any] | None,
    steps_per_epoch: int,
) -> list[EpochMetrics]:
    """Load everything a checkpoint holds into the fresh objects; return its epoch metrics."""
    state = load_checkpoint(path)
    missing = [
        key
        for key in ("optimizer", "scheduler", "scaler", "config", "metrics", "rng", "epoch")
        if key not in state
    ]
    if missing:
        raise CheckpointError(f"{path}: cannot resume, checkpoint lacks {', '.join(missing)}")
    _check_resumable(path, state["config"], config)
    if spec is not None and state.get("spec") is not None and state["spec"] != spec:
        raise ValueError(f"cannot resume from {path}: it was trained from a different spec")
    if state["steps_per_epoch"] != steps_per_epoch:
        raise ValueError(
            f"cannot resume from {path}: the training loader has {steps_per_epoch} batches "
            f"per epoch, the checkpoint was written with {state['steps_per_epoch']}"
        )
    try:
        _unwrap(model).load_state_dict(state["model"])
    except RuntimeError as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(
            f"cannot resume from {path}: weights do not fit the model: {first}"
        ) from None
    optimizer.load_state_dict(state["optimizer"])
    saved_sched = state["scheduler"]
    if state["config"]["epochs"] == config.epochs:
        scheduler.load_state_dict(saved_sched)
    else:
        # More epochs than planned: keep this run's plan (its total steps), take only the
        # position from the checkpoint. The rest of the schedule is re-planned over the new
        # length, so the lr jumps for cosine/onecycle; constant is unaffected.
        fresh = scheduler.state_dict()
        for key in ("last_epoch", "_step_count", "_last_lr"):
            if key in saved_sched:
                fresh[key] = saved_sched[key]
        scheduler.load_state_dict(fresh)
    if state["scaler"] and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    cuda_states = state["rng"].get("cuda") or []
    if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return [EpochMetrics(**m) for m in state["metrics"]]
