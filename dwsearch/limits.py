"""Memory limits: what a request would allocate is estimated from shapes before anything is
allocated, and refused above a limit, so that a typo (a channel count of 10^9, an input of
20000x20000, a batch the size of the dataset) ends in one line rather than in the allocator.

One limit covers every estimate: ``DWSEARCH_MAX_MEMORY_GB`` GiB (default
:data:`DEFAULT_MAX_MEMORY_GB`). Estimates are of one thing at a time (a model and one sample's
activations, a decoded dataset, a training step, a latency batch), not of the process.
This module imports nothing heavy.
"""

from __future__ import annotations

import math
import os

from dwsearch.errors import ConfigError, ResourceError

__all__ = ["DEFAULT_MAX_MEMORY_GB", "MAX_MEMORY_ENV", "check_memory", "format_bytes",
           "memory_limit"]

MAX_MEMORY_ENV = "DWSEARCH_MAX_MEMORY_GB"
# Generous for the studies this project runs (seed_cnn trains in 0.6 GiB at batch 128, all of
# CIFAR-10 decoded is 0.17 GiB) and well under a workstation's memory.
DEFAULT_MAX_MEMORY_GB = 8.0


def memory_limit() -> int:
    """The limit in bytes: ``$DWSEARCH_MAX_MEMORY_GB`` GiB, else the default."""
    raw = os.environ.get(MAX_MEMORY_ENV, "").strip()
    if not raw:
        return int(DEFAULT_MAX_MEMORY_GB * 2**30)
    try:
        gib = float(raw)
    except ValueError:
        gib = math.nan
    if not math.isfinite(gib) or gib <= 0:
        raise ConfigError(
            f"{MAX_MEMORY_ENV}={raw!r}: expected a positive number of GiB, like 16"
        )
    return int(gib * 2**30)


def format_bytes(nbytes: int | float) -> str:
    """``1.5 GiB``, ``12.0 MiB``, ``512 B``: binary units, one decimal."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_memory(estimate: int, what: str, *, detail: str = "", hint: str = "") -> None:
    """Raise :class:`ResourceError` when ``estimate`` bytes exceed the limit. ``what`` starts
    with where (``layers[3] (conv): the model up to this layer``); the message reads
    ``{what} would need an estimated N GiB ({detail}), over the limit of M GiB; {hint}, or
    set DWSEARCH_MAX_MEMORY_GB=...``."""
    limit = memory_limit()
    if estimate <= limit:
        return
    parts = f" ({detail})" if detail else ""
    fix = f"{hint}, or set" if hint else "set"
    raise ResourceError(
        f"{what} would need an estimated {format_bytes(estimate)}{parts}, over the limit of "
        f"{format_bytes(limit)}; {fix} {MAX_MEMORY_ENV}=<GiB> to allow more"
    )
