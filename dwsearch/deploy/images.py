"""Images for calibration and correctness checks: random ones for an untrained model, or a
fixed, seeded selection from a split, normalised exactly as the trainer normalises it."""

from __future__ import annotations

import torch

from dwsearch.data.loader import BatchLoader
from dwsearch.data.tensors import ImageTensors
from dwsearch.errors import DeployError

__all__ = ["random_images", "split_images"]


def _count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise DeployError(f"images: expected a count >= 1, found {count!r}")
    return count


def random_images(count: int, shape: tuple[int, ...], *, seed: int = 0) -> torch.Tensor:
    """``count`` images (N, C, H, W) uniform in [-1, 1], the range the trainer's
    normalisation gives real images; seeded locally (the global RNG is untouched). Good for
    timing and for fp32 checks; an int8 model calibrated on them is not representative."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(_count(count), *shape, generator=generator) * 2 - 1


def split_images(split: ImageTensors, count: int, *, seed: int = 0) -> torch.Tensor:
    """``count`` images of ``split`` (all of them if it holds fewer), a seeded random
    selection, as float (N, C, H, W) normalised as :class:`BatchLoader` gives them to the
    model in training and evaluation. Pass the **training** split for calibration."""
    count = min(_count(count), len(split))
    if count < 1:
        raise DeployError("images: the split holds no image")
    loader = BatchLoader(split, batch_size=count, shuffle=True, seed=seed)
    images, _ = next(iter(loader))
    return images
