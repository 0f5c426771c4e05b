"""The training loop: one model, one recipe, per-epoch metrics, checkpoints, early stopping.

The trainer knows nothing of Optuna, YAML, specs or datasets. It consumes any iterable of
``(x, y)`` or ``(x, y, extra)`` batches with ``len()`` and ``set_epoch()`` (:class:`Batches`),
minimises cross-entropy or a caller's :data:`Loss` (distillation), reports each finished
epoch to callbacks (which may end the run with :class:`StopTraining`, or raise anything else
to abort), and turns a loss that becomes nan/inf into a ``"diverged"`` result instead of a
traceback.

Numbers on the hot path stay on the device: loss and accuracy sums are accumulated as tensors
and read back at most once per :data:`FINITE_CHECK_EVERY` steps, so a GPU never waits on the
host between steps.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from dwsearch.records import EpochMetrics
from dwsearch.runtime import AMP_DTYPES, resolve_device, resolve_precision, torch_threads
from dwsearch.train.checkpoint import (
    SpecLike,
    TrainingState,
    checkpoint_state,
    plain_spec,
    prepare_checkpoint,
    restore,
    save_checkpoint,
)
from dwsearch.train.config import TrainConfig
from dwsearch.train.optim import make_optimizer, make_scheduler

__all__ = [
    "FINITE_CHECK_EVERY",
    "Batches",
    "Callback",
    "Loss",
    "Status",
    "StopTraining",
    "TrainResult",
    "evaluate",
    "fit",
]

# Divergence policy: the running loss sum is read back (one host sync) every this many steps
# and at the end of every epoch. Once a step produces nan/inf the weights are poisoned and
# every later loss is nan too, so the running sum catches it and at most this many - 1 steps
# are wasted; the per-step losses of the window are kept on the device so the message can
# still name the exact step. Syncing every step would stall a GPU's queue for nothing.
FINITE_CHECK_EVERY = 16

Status = Literal["completed", "diverged", "stopped"]
Callback = Callable[[EpochMetrics], None]
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
"""A training objective: ``loss(logits, labels, inputs, extra)`` -> the scalar to minimise.
``logits`` (N, classes) are fp32 whatever the autocast dtype, ``inputs`` the batch as the model
saw it (augmented, on the device), ``extra`` the batch's third item or None. The default is
cross-entropy with the recipe's label smoothing; distillation (:mod:`dwsearch.compress`)
passes its own, with a teacher's logits as ``extra`` or the teacher run on ``inputs``."""


class Batches(Protocol):
    """What the trainer needs from a data loader (``dwsearch.data.BatchLoader`` fits).

    Batches are ``(inputs, labels)``, or ``(inputs, labels, extra)`` where per-sample rows
    travel with the data (handed to the :data:`Loss`). ``len()`` must be the exact number of
    batches one iteration yields (the LR schedule is planned from it); ``set_epoch(i)``
    (0-based) lets a shuffling loader vary its order per epoch reproducibly.
    """

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


class StopTraining(Exception):
    """Raised by a callback to end the run after the current epoch (status ``"stopped"``).

    The message, if any, becomes :attr:`TrainResult.message`. Any other exception raised by a
    callback propagates out of :func:`fit` unchanged.
    """



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
    threads: int = 0  # torch intra-op CPU threads while training

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
            "threads": self.threads,
        }


class _Diverged(Exception):
    """Internal: the loss became non-finite; the message is the user-facing explanation."""


# -- evaluation ---------------------------------------------------------------------------


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, ...]],
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
    amp_dtype = AMP_DTYPES.get(precision, torch.bfloat16)
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
            for batch in batches:
                x = batch[0].to(device, non_blocking=True)
                y = batch[1].to(device, non_blocking=True)
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


# -- training -----------------------------------------------------------------------------


@dataclass
class _Run:
    """The mutable pieces of one fit call, so the epoch function takes one argument."""

    model: nn.Module  # what steps run through (possibly torch.compile'd)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss: Loss
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
    amp_dtype = AMP_DTYPES.get(run.precision, torch.bfloat16)
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
        for step, batch_in in enumerate(bar, start=1):
            x = batch_in[0].to(run.device, non_blocking=True)
            y = batch_in[1].to(run.device, non_blocking=True)
            extra = batch_in[2].to(run.device, non_blocking=True) if len(batch_in) > 2 else None
            if run.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(run.device.type, dtype=amp_dtype, enabled=amp_enabled):
                logits = model(x)
            # The loss in fp32 whatever the autocast dtype: bf16 log-softmax loses too much.
            logits = logits.float()
            loss = run.loss(logits, y, x, extra)
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
    overwrite: bool = False,
    spec: Mapping[str, Any] | SpecLike | None = None,
    data_config: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    loss: Loss | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train`` for ``config.epochs`` epochs.

    After every epoch: validate on ``val`` (if given), write ``checkpoint`` (if given,
    atomically) and call each callback with the epoch's :class:`EpochMetrics`. A callback
    raising :class:`StopTraining` ends the run with status ``"stopped"``; other exceptions
    propagate. A nan/inf loss ends it with status ``"diverged"`` and a one-line message.

    ``checkpoint`` is checked for writability before the first step. An existing file there
    is refused (another run's checkpoint) unless ``resume=True``, which continues from it
    (and starts fresh where there is none), or ``overwrite=True``, which replaces it. On
    resume the config may differ only in epochs (which may grow), threads, compile, device
    and channels_last, and ``data_config`` (the data configuration as a mapping, stored in
    checkpoints) not at all. ``spec`` (a mapping or ModelSpec) is stored in checkpoints so
    :func:`model_from_checkpoint` can rebuild the model. ``progress=None`` shows a tqdm bar
    only when stderr is a terminal. ``loss`` replaces the default objective (cross-entropy
    with ``config.label_smoothing``; see :data:`Loss`); validation stays plain cross-entropy.

    Seeds torch's RNG with ``config.seed`` (training-time randomness); seed model
    initialization yourself (:func:`dwsearch.runtime.seed_everything`) before building the
    model. ``config.threads`` applies while training; the previous count is restored after.
    """
    with torch_threads(config.threads) as threads:
        return _fit(model, train, val, config, callbacks=callbacks, checkpoint=checkpoint,
                    resume=resume, overwrite=overwrite, spec=spec, data_config=data_config,
                    progress=progress, threads=threads, loss=loss)


def _fit(
    model: nn.Module,
    train: Batches,
    val: Batches | None,
    config: TrainConfig,
    *,
    callbacks: Iterable[Callback],
    checkpoint: str | Path | None,
    resume: bool,
    overwrite: bool,
    spec: Mapping[str, Any] | SpecLike | None,
    data_config: Mapping[str, Any] | None,
    progress: bool | None,
    threads: int,
    loss: Loss | None,
) -> TrainResult:
    started = time.perf_counter()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    loader_batch = getattr(train, "batch_size", None)
    if isinstance(loader_batch, int) and loader_batch != config.batch_size:
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
    spec_data = plain_spec(spec)
    data_dict = dict(data_config) if data_config is not None else None
    ckpt_path = None
    if checkpoint is not None:
        ckpt_path = prepare_checkpoint(checkpoint, resume=resume, overwrite=overwrite)

    torch.manual_seed(config.seed)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, config.epochs * steps_per_epoch)
    # A disabled scaler passes calls straight through, so the loop has no precision branches.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    parts = TrainingState(model, optimizer, scheduler, scaler)
    history: list[EpochMetrics] = []
    if resume and ckpt_path is not None and ckpt_path.exists():
        history = restore(ckpt_path, parts, config, spec_data, steps_per_epoch, data_dict)

    run = _Run(
        model=torch.compile(model) if config.compile else model,  # type: ignore[arg-type]
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        loss=loss if loss is not None else _cross_entropy(config.label_smoothing),
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
                state = checkpoint_state(
                    parts, config=config, spec=spec_data, steps_per_epoch=steps_per_epoch,
                    history=history, device=device, precision=precision, data=data_dict,
                )
                save_checkpoint(ckpt_path, state)
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
        threads=threads,
    )


def _cross_entropy(label_smoothing: float) -> Loss:
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor,
             extra: torch.Tensor | None) -> torch.Tensor:
        result: torch.Tensor = criterion(logits, labels)
        return result

    return loss


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


