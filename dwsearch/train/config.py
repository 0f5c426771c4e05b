"""The training recipe as plain data (no torch import): the command line derives its options,
defaults and choices from these fields, so each is written once."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from dwsearch.errors import ConfigError

__all__ = ["MAX_SEED", "MAX_THREADS", "Optimizer", "Precision", "Schedule", "TrainConfig"]

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["constant", "cosine", "onecycle"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Bounds where torch would overflow (seeds are 64-bit, thread counts 32-bit) or start
# thousands of threads on a typo.
MAX_SEED = 2**63 - 1
MAX_THREADS = 1024


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run besides the model and the data.

    Defaults reproduce the baseline study's recipe (SGD 0.1, momentum 0.9, wd 1e-4, batch 128,
    10 epochs, no augmentation). ``help`` metadata becomes the command line's option help.
    """

    optimizer: Optimizer = field(
        default="sgd", metadata={"help": "sgd, or adamw (its beta1 is --momentum)."}
    )
    lr: float = field(
        default=0.1, metadata={"help": "Peak learning rate (per step); onecycle's max_lr."}
    )
    momentum: float = field(
        default=0.9, metadata={"help": "SGD momentum / AdamW beta1, in [0, 1)."}
    )
    weight_decay: float = field(
        default=1e-4, metadata={"help": "L2 (sgd) or decoupled (adamw) weight decay, >= 0."}
    )
    nesterov: bool = field(
        default=False, metadata={"help": "Nesterov momentum (sgd with momentum > 0)."}
    )
    batch_size: int = field(default=128, metadata={"help": "Images per training step."})
    epochs: int = field(default=10, metadata={"help": "Full passes over the training set."})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "Cross-entropy target smoothing, in [0, 1)."}
    )
    schedule: Schedule = field(
        default="constant",
        metadata={"help": "Learning-rate schedule: constant, cosine (per step to 0) or onecycle."},
    )
    augment: bool = field(
        default=False,
        metadata={"help": "Random crop (padding 4) and horizontal flip; the baseline recipe "
                          "uses none."},
    )
    precision: Precision = field(
        default="auto",
        metadata={"help": "auto: bf16 autocast where the CPU or GPU supports it (fp16 on older "
                          "GPUs), else fp32."},
    )
    channels_last: bool = field(
        default=True, metadata={"help": "NHWC memory format for model and inputs."}
    )
    compile: bool = field(default=False, metadata={"help": "Wrap the model in torch.compile."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    threads: int | None = field(
        default=None, metadata={"help": "Torch intra-op CPU threads; default: torch's."}
    )
    seed: int = field(
        default=0,
        metadata={"help": "Seeds initialization, dropout, shuffling and augmentation."},
    )

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ConfigError:
            return ConfigError(f"{name}: expected {allowed}, found {getattr(self, name)!r}")

        for name, kind in (("optimizer", Optimizer), ("schedule", Schedule),
                           ("precision", Precision)):
            if getattr(self, name) not in get_args(kind):
                raise bad(name, " or ".join(map(repr, get_args(kind))))
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
        if not isinstance(self.augment, bool):
            raise bad("augment", "true or false")
        if not isinstance(self.channels_last, bool):
            raise bad("channels_last", "true or false")
        if not isinstance(self.compile, bool):
            raise bad("compile", "true or false")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.threads is not None and (
            not _is_int(self.threads) or not 1 <= self.threads <= MAX_THREADS
        ):
            raise bad("threads", f"null or an integer in 1..{MAX_THREADS}")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise bad("seed", "an integer in 0..2^63-1")
