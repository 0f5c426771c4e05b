"""Optimizer and learning-rate schedule factories, from a :class:`TrainConfig`."""

from __future__ import annotations

import math

import torch
from torch import nn

from dwsearch.train.config import TrainConfig

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay applies to every parameter (norm and bias included), as in the baseline recipe.
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


def make_scheduler(
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

