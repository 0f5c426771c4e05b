"""Where and how a run executes: device, precision, CPU threads, seeding, machine description.

Shared by the trainer, the cost counter, the benchmark and the study workers, so that "auto"
means the same thing everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import random
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import torch

from dwsearch import __version__
from dwsearch.errors import ConfigError
from dwsearch.train.config import MAX_THREADS

__all__ = [
    "AMP_DTYPES",
    "DEVICE_PATTERN",
    "PRECISIONS",
    "cpu_supports_bf16",
    "device_name",
    "machine_info",
    "resolve_device",
    "resolve_precision",
    "seed_everything",
    "torch_threads",
    "usable_cpus",
    "versions",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


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

    Raises ConfigError when the name is not one of auto, cpu, cuda, cuda:N, or when CUDA is
    asked for but not available (or the index does not exist).
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise ConfigError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r}: requested but CUDA is not available "
                f"(torch {torch.__version__}); use device 'cpu' or 'auto'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r}: requested but only {torch.cuda.device_count()} CUDA "
                f"device(s) exist"
            )
    return device


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The concrete precision (``fp32``, ``bf16`` or ``fp16``) for a config value on a device.

    ``auto``: bf16 on CPUs with native bf16 and on CUDA GPUs that support it, fp16 on other
    GPUs, else fp32. Raises ConfigError for fp16 on CPU and for bf16 on a CPU without native
    support (it would be emulated, slower than fp32).
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision: expected {' or '.join(map(repr, PRECISIONS))}, found {precision!r}"
        )
    kind = torch.device(device).type
    if precision == "fp32":
        return "fp32"
    if kind == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return "bf16" if bf16_ok else "fp16"
        if precision == "bf16" and not bf16_ok:
            raise ConfigError("precision 'bf16': this GPU does not support bf16; use 'fp16'")
        return precision
    if kind == "cpu":
        if precision == "fp16":
            raise ConfigError("precision 'fp16': needs a CUDA device; on CPU use 'bf16' or "
                              "'fp32'")
        if precision == "auto":
            return "bf16" if cpu_supports_bf16() else "fp32"
        if not cpu_supports_bf16():
            raise ConfigError(
                "precision 'bf16': this CPU lacks avx512_bf16/amx_bf16, so bf16 would be "
                "emulated and slower than fp32; use 'fp32' or 'auto'"
            )
        return "bf16"
    if precision == "auto":
        return "fp32"
    raise ConfigError(f"precision {precision!r}: not supported on device type {kind!r}")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and all CUDA devices).

    Call it before building the model so weight initialization is reproducible.
    """
    import numpy as np

    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run a block with torch's intra-op CPU threads set to ``threads`` (None: unchanged);
    the previous count is restored afterwards, whatever happens. Yields the count in use."""
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int)
        or not 1 <= threads <= MAX_THREADS
    ):
        raise ConfigError(f"threads: expected an integer in 1..{MAX_THREADS}, found {threads!r}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def device_name(device: str | torch.device) -> str:
    """A human name for the device: the GPU model, or the CPU model from /proc/cpuinfo."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Versions of what a result depends on: dwsearch, torch, Python (and CUDA where used)."""
    out = {"dwsearch": __version__, "torch": str(torch.__version__),
           "python": platform.python_version()}
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    return out


def machine_info(device: str | torch.device) -> dict[str, str | int]:
    """Host name, device name and CPU count: enough to say which machine gave a figure."""
    return {
        "host": socket.gethostname(),
        "device_name": device_name(device),
        "cpu_count": usable_cpus(),
    }


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
