"""How a study worker runs (device, threads, heartbeats, ...): plain data, no torch, no
optuna, no pydantic, so ``dwsearch run-study`` takes its options' defaults and help from
:class:`WorkerOptions` (each written once) without slowing ``dwsearch --help``."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from dwsearch.errors import ConfigError

__all__ = ["AUTO_JOBS_CUDA", "GRACE_BEATS", "MAX_JOBS", "WorkerOptions", "default_worker_id"]

# Worker processes of one run-study (--jobs). auto: one worker on a CPU (it uses every core
# already); on a GPU, four processes share the device (measured on an H100 by an earlier
# session: 4 side by side trained 1.7x (seed_cnn) to 2.4x (seed_dwsep) as many images/s as
# one).
AUTO_JOBS_CUDA = 4
MAX_JOBS = 256

# A trial counts as dead after at least this many of its worker's heartbeat intervals without
# a beat, whatever the watcher's own grace: workers of one study may run with other options.
GRACE_BEATS = 3


def default_worker_id() -> str:
    """``$DWSEARCH_WORKER_ID``, else ``HOST:PID`` (which lets a worker on the same host see
    at once that a process is gone)."""
    return os.environ.get("DWSEARCH_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs; none of this changes what a trial measures. ``help`` metadata is
    the command line's option help."""

    device: str = field(default="auto", metadata={
        "help": "auto, cpu, cuda or cuda:N (how workers run; not part of the study)."})
    threads: int | None = field(default=None, metadata={
        "help": "CPU threads per worker; default: the cores shared among the workers."})
    data_dir: str | None = field(default=None, metadata={
        "help": "Dataset folder; default: the file's, else $DWSEARCH_DATA_DIR, else the cache "
                "directory."})
    heartbeat: float = field(default=10.0, metadata={
        "help": "Seconds between a worker's heartbeats."})
    grace: float = field(default=60.0, metadata={
        "help": "Seconds without a heartbeat before another worker retries the trial."})
    poll: float = field(default=2.0, metadata={
        "help": "Seconds between looks at the storage while others finish."})
    timeout: float | None = field(default=None, metadata={
        "help": "Stop starting trials after this many seconds."})
    weights_dir: str | None = field(default=None, metadata={
        "help": "Where keep_weights checkpoints go; default: beside the storage."})
    # How this worker is named in the storage: HOST:PID, or $DWSEARCH_WORKER_ID.
    worker_id: str = field(default_factory=lambda: default_worker_id())

    def check(self) -> WorkerOptions:
        """Refuse options that would fail every trial (one line, before any storage is
        touched): a device that is not there, a thread count torch refuses, a grace that a
        live worker's heartbeat cannot meet."""
        from dwsearch.runtime import resolve_device
        from dwsearch.train.config import MAX_THREADS

        if not isinstance(self.device, str):
            raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, found "
                              f"{self.device!r}")
        resolve_device(self.device)
        if self.threads is not None:
            _check_option(self.threads, "threads", 1, MAX_THREADS, integer=True)
        _check_option(self.heartbeat, "heartbeat", 0.1, 86400.0)
        _check_option(self.grace, "grace", 0.1, 7 * 86400.0)
        _check_option(self.poll, "poll", 0.01, 3600.0)
        if self.timeout is not None:
            _check_option(self.timeout, "timeout", 0.0, 10 * 365 * 86400.0)
        for name in ("data_dir", "weights_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ConfigError(f"{name}: expected a folder path, found {value!r}")
        if self.grace < GRACE_BEATS * self.heartbeat:
            raise ConfigError(
                f"grace {self.grace:g} s: a live worker beats every {self.heartbeat:g} s, so a "
                f"grace under {GRACE_BEATS} heartbeats ({GRACE_BEATS * self.heartbeat:g} s) "
                f"would retry trials that are still training; raise --grace or lower "
                f"--heartbeat")
        return self


def _check_option(value: Any, name: str, low: float, high: float, integer: bool = False
                  ) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not (low <= value <= high):
        what = "an integer" if integer else "a number of seconds"
        raise ConfigError(f"{name}: expected {what} in {low:g}..{high:g}, found {value!r}")
