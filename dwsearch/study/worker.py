"""A study worker: one long-lived process that loads the data once and runs trial after trial.

Workers share nothing but the storage. Each pops a waiting slot atomically (Optuna's own
WAITING -> RUNNING transition), keeps a heartbeat on it while it trains, and tells the result.
Any number of workers, on any number of machines, can serve one study.

Failure rules (each trial ends in exactly one of these):

* completed: COMPLETE, objective values and the run record stored;
* reused: an identical earlier run (same architecture, recipe, data and seed) exists: its
  record and values are copied, nothing is trained (``info.reused_from``);
* pruned: PRUNED, with the partial record and the reason;
* diverged: FAIL with the record and the reason (a result of that configuration: not retried);
* infeasible / error: FAIL with the reason; a sampled configuration's slot is given a fresh
  empty slot (bounded), an enumerated one is not retried (it would fail again);
* killed: a worker that stops heartbeating for ``grace`` seconds (or whose process is gone, on
  the same host) has its trial failed by another worker and the slot laid out again;
* interrupted: Ctrl-C fails the running trial and lays its slot out again, so running the same
  command again finishes the study.

Heartbeats are counters in a trial attribute; a watcher calls a trial dead when the counter has
not moved for ``grace`` seconds of its own clock, so clocks of different machines need not agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType
from typing import Any

from dwsearch.data.config import DataConfig
from dwsearch.errors import DwsearchError, StudyError, first_line, reason
from dwsearch.records import RunRecord, TrialInfo
from dwsearch.study import compression, objective
from dwsearch.study.options import GRACE_BEATS, WorkerOptions
from dwsearch.study.plan import (
    REPLACED_KEY,
    Plan,
    StudyHandle,
    check_data,
    derive_seed,
    lay_out_next,
)
from dwsearch.study.pruning import CostMedian, prune_reason
from dwsearch.study.space import config_hash
from dwsearch.study.storage import ERROR_KEY, INFO_KEY, RECORD_KEY, weights_folder

__all__ = ["TrialEvent", "Worker", "WorkerOptions"]

HEARTBEAT_KEY = "dwsearch:heartbeat"  # trial system attr: {"beat", "worker", "every"}
# A worker stops after this many sampled configurations in a row over the constraints: the
# sampler is not finding anything that fits (an open-ended study would add ~14,000 failed
# trials an hour).
INFEASIBLE_STOP = 30


@dataclass(frozen=True)
class TrialEvent:
    """What a worker says when a trial ends (for progress lines)."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    status: str  # completed, reused, pruned, diverged, infeasible, error, killed, interrupted
    config: Mapping[str, Any]
    val_accuracy: float | None = None
    macs: int | None = None
    seconds: float = 0.0
    message: str = ""
    overhead_seconds: float = 0.0


class _TakenOver(Exception):
    """Another worker finished the running trial (it took this worker for dead)."""

    def __init__(self, info: TrialInfo | None = None) -> None:
        super().__init__("taken over by another worker")
        self.info = info


class _Heartbeat:
    """A thread that bumps a trial's heartbeat counter every ``interval`` seconds."""

    def __init__(self, storage: Any, trial_id: int, interval: float, worker: str) -> None:
        self.storage, self.trial_id, self.interval, self.worker = (
            storage, trial_id, interval, worker)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dwsearch-heartbeat",
                                        daemon=True)
        self._beat = 0
        # Set when the trial was finished by someone else (another worker took it for dead):
        # training stops at the next epoch and the result is discarded.
        self.taken_over = threading.Event()

    def _write(self) -> None:
        self._beat += 1
        self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_KEY, {
            "beat": self._beat, "worker": self.worker, "every": self.interval})

    def _run(self) -> None:
        import optuna

        while not self._stop.wait(self.interval):
            try:
                self._write()
            except optuna.exceptions.UpdateFinishedTrialError:
                self.taken_over.set()
                return
            except Exception:  # a storage hiccup: try again next time
                continue

    def __enter__(self) -> _Heartbeat:
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


class _OptunaSuggest:
    """The space's :class:`~dwsearch.study.space.Suggest` over an Optuna trial."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def categorical(self, name: str, choices: Any) -> Any:
        return self.trial.suggest_categorical(name, choices)

    def integer(self, name: str, low: int, high: int, step: int, log: bool) -> int:
        return int(self.trial.suggest_int(name, low, high, step=step, log=log))

    def real(self, name: str, low: float, high: float, step: float | None, log: bool) -> float:
        return float(self.trial.suggest_float(name, low, high, step=step, log=log))


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs. A zombie (ended, not yet reaped by
    its parent) is dead: its trial will never finish."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): signal 0 is all we know
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


@contextlib.contextmanager
def _noticing_ctrl_c() -> Iterator[threading.Event]:
    """Note every Ctrl-C (SIGINT) in an event, and make sure it stops the worker.

    Python raises KeyboardInterrupt wherever the main thread is when the signal arrives; in
    a finalizer or a weakref callback (torch's and SQLAlchemy's bookkeeping run them all the
    time) it cannot propagate: Python hands it to ``sys.unraisablehook``, which printed
    "Exception ignored ... Traceback" and dropped it, and the worker went on. Here that hook
    delivers the signal again a moment later, where it can be raised, and says nothing; the
    event lets the loop stop after the trial even if every delivery were swallowed."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):  # Ctrl-C is off for this process: keep it so
        yield event
        return

    def handler(signum: int, frame: Any) -> None:
        event.set()
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    previous_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt):
            threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        previous_hook(info)

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = unraisable
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook


class StudyData:
    """A study's data, loaded once per worker process and kept (on the device, where there is
    one) for every trial; one copy per input size the study's models ask for."""

    def __init__(self, plan: Plan, options: WorkerOptions) -> None:
        from dwsearch.runtime import resolve_device

        self.plan, self.options = plan, options
        self.device = str(resolve_device(options.device))
        self._splits: dict[Any, Any] = {}
        self._identity: tuple[str, str] | None = None

    def config(self) -> DataConfig:
        changes = {"data_dir": self.options.data_dir} if self.options.data_dir else {}
        return self.plan.config.data_config(**changes)

    def preload(self) -> StudyData:
        """Load the base model's data now: a missing dataset is an error before anything
        else happens."""
        self.splits(self.plan.space.base)
        return self

    def identity(self) -> tuple[str, str]:
        """(content checksum, where it came from in words) of the base model's data."""
        if self._identity is None:
            splits = self.splits(self.plan.space.base)
            self._identity = (splits.fingerprint(), splits.source)
        return self._identity

    def splits(self, spec: Any) -> Any:
        from dwsearch.data.tensors import DataSplits, ImageTensors
        from dwsearch.run import load_data

        key = spec.input_shape
        if key not in self._splits:
            splits = load_data(spec, self.config())

            def moved(part: ImageTensors) -> ImageTensors:
                return ImageTensors(part.images.to(self.device), part.labels.to(self.device),
                                    part.classes)

            if self.device != "cpu":
                splits = DataSplits(moved(splits.train), moved(splits.val), moved(splits.test),
                                    splits.classes, splits.source, splits.name,
                                    splits.load_info)
            self._splits[key] = splits
        return self._splits[key]


class Worker:
    """Runs trials of one study until no slot is left (or its timeout passes): claims a slot,
    keeps its heartbeat, runs the objective (:mod:`dwsearch.study.objective`), tells the
    storage what came out, and lays out again the slots of trials that could not finish."""

    def __init__(self, plan: Plan, handle: StudyHandle, options: WorkerOptions,
                 on_event: Callable[[TrialEvent], None] | None = None,
                 data: StudyData | None = None,
                 resolved: compression.Compression | EllipsisType | None = ...) -> None:
        self.plan, self.handle, self.options = plan, handle, options
        self.config = plan.config
        self.on_event = on_event or (lambda event: None)
        self.storage, self.study = handle.storage, handle.study
        self.data = data or StudyData(plan, options)
        self._watched: dict[int, tuple[Any, float]] = {}
        self._peer_cache: dict[int, tuple[int, list[float]]] = {}
        self._run_keys: dict[str, Any] = {}  # run key -> the first COMPLETE trial with it
        self._known_complete: set[int] = set()
        self._bugs_in_a_row = 0
        self._infeasible_in_a_row = 0
        self._last_infeasible = ""
        self._interrupted = threading.Event()
        self._dropped: set[str] = set()  # configurations whose weights were removed
        self.ran = 0
        needs = {o.metric for o in self.config.objectives} | {c.metric for c in
                                                                self.config.constraints}
        self.measure_latency = self.config.model.latency or "latency" in needs
        self._device = self.data.device
        # Teacher loaded, pruning target counted: once per process (``resolved``: by the
        # runner in this one already).
        self.compression = (compression.resolve(self.config, plan.space,
                                                handle.raw_url or handle.url)
                            if isinstance(resolved, EllipsisType) else resolved)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        """Run trials until none is left to start; returns how many this worker ran."""
        try:
            with _noticing_ctrl_c() as interrupted:
                self._interrupted = interrupted
                return self._loop()
        except Exception as err:
            if "database is locked" in str(err):
                raise StudyError(
                    f"storage {self.handle.url}: SQLite stayed locked by other writers for "
                    f"over a minute; for many workers use PostgreSQL (--storage "
                    f"postgresql://...) or a journal file (--storage journal:///PATH.log)"
                ) from err
            raise

    def _loop(self) -> int:
        started = time.monotonic()
        self.data.preload()  # a trial never pays for loading the data
        check_data(self.handle, *self.data.identity())
        self._recover_local()
        while True:
            if self.options.timeout is not None and (
                    time.monotonic() - started > self.options.timeout):
                break
            trial_id = self._pop()
            if trial_id is None and not self.plan.open_ended and not self._others_running():
                lay_out_next(self.handle, self.plan, None)
                trial_id = self._pop()
            if trial_id is None and self.plan.open_ended:
                trial_id = self.storage.create_new_trial(self.handle.study_id)
                self._write_info(trial_id, TrialInfo(status="running"))
            if trial_id is None:
                if self._others_running():
                    self._watch()
                    time.sleep(self.options.poll)
                    continue
                break
            self._run_trial(trial_id)
            self.ran += 1
            if self._interrupted.is_set():
                # Ctrl-C came while Python could not raise it (inside a finalizer or a
                # callback, which swallow it): the trial finished; stop before the next.
                raise KeyboardInterrupt
            if self._infeasible_in_a_row >= INFEASIBLE_STOP:
                raise StudyError(
                    f"{self.config.source}: the last {self._infeasible_in_a_row} sampled "
                    f"configurations were all over the constraints (the last: "
                    f"{self._last_infeasible}); the sampler finds nothing that fits: relax "
                    f"the constraints or narrow the space")
        return self.ran

    def _info(self, trial: Any) -> TrialInfo:
        return TrialInfo.from_attrs(trial.user_attrs.get(INFO_KEY), f"trial {trial.number}")

    def _write_info(self, trial_id: int, info: TrialInfo) -> None:
        self.storage.set_trial_user_attr(trial_id, INFO_KEY, info.to_attrs())

    def _pop(self) -> int | None:
        """Claim the first waiting slot this plan runs (atomically: Optuna's WAITING ->
        RUNNING). Slots laid out for a larger ``n_trials`` than this run's stay waiting."""
        import optuna

        waiting = self.handle.trials(states=(optuna.trial.TrialState.WAITING,))
        limit = None if self.plan.open_ended else len(self.plan.slots)
        for trial in sorted(waiting, key=lambda t: t.number):
            info = self._info(trial)
            if limit is not None and info.slot is not None and info.slot >= limit:
                continue
            try:
                if self.storage.set_trial_state_values(
                        trial._trial_id, state=optuna.trial.TrialState.RUNNING):
                    lay_out_next(self.handle, self.plan, info)
                    return int(trial._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def _others_running(self) -> bool:
        import optuna

        return bool(self.handle.trials(states=(optuna.trial.TrialState.RUNNING,)))

    # -- dead workers -----------------------------------------------------------------------
    def _recover_local(self) -> None:
        """Trials left RUNNING by processes of this host that no longer exist: requeue now
        (no need to wait for their heartbeat to go stale)."""
        import optuna

        host = socket.gethostname()
        for trial in self.handle.trials(states=(optuna.trial.TrialState.RUNNING,)):
            worker = self._info(trial).worker or ""
            name, _, pid = worker.rpartition(":")
            if name == host and pid.isdigit() and not _pid_alive(int(pid)):
                self._requeue(trial, "killed",
                              f"its worker {worker} is gone (process ended without finishing)")

    def _watch(self) -> None:
        """Requeue trials whose heartbeat has not moved for ``grace`` seconds (and for at
        least :data:`GRACE_BEATS` of their own worker's heartbeats)."""
        import optuna

        now = time.monotonic()
        running = self.handle.trials(states=(optuna.trial.TrialState.RUNNING,))
        alive = set()
        for trial in running:
            alive.add(trial.number)
            beat = trial.system_attrs.get(HEARTBEAT_KEY)
            seen = self._watched.get(trial.number)
            if seen is None or seen[0] != beat:
                self._watched[trial.number] = (beat, now)
                continue
            every = beat.get("every") if isinstance(beat, Mapping) else None
            grace = max(self.options.grace, GRACE_BEATS * every if isinstance(
                every, (int, float)) else 0.0)
            if now - seen[1] > grace:
                worker = self._info(trial).worker or "?"
                self._requeue(trial, "killed", f"its worker {worker} stopped answering (no "
                                               f"heartbeat for {grace:g} s)")
        for number in set(self._watched) - alive:
            del self._watched[number]
        self._recover_local()

    def _requeue(self, trial: Any, status: str, why: str) -> None:
        """Fail another worker's ``trial`` (if nobody else did first) and lay its slot out
        again."""
        import optuna

        info = self._info(trial).replace(status=status)
        try:
            self.storage.set_trial_user_attr(trial._trial_id, ERROR_KEY, f"{status}: {why}")
            self._write_info(trial._trial_id, info)
            won = self.storage.set_trial_state_values(trial._trial_id,
                                                      state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        if not won:
            return
        self._enqueue_retry(trial.number, dict(trial.params), info)
        self.on_event(TrialEvent(trial.number, "FAIL", status, info.config or {},
                                 message=f"{why}; laid out again"))

    def _enqueue_retry(self, number: int, params: dict[str, Any], info: TrialInfo) -> None:
        """The slot of trial ``number`` again, with its configuration (the retry carries
        ``retry_of``; the report derives the failed trial's ``retried_as`` from it)."""
        retry = TrialInfo(slot=info.slot, repeat=info.repeat, role=info.role,
                          factor=info.factor, config=info.config,
                          config_hash=info.config_hash, retry_of=number,
                          replaces_a_failed_sample=info.replaces_a_failed_sample)
        self.study.enqueue_trial(params, user_attrs={INFO_KEY: retry.to_attrs()})

    # -- one trial --------------------------------------------------------------------------
    def _run_trial(self, trial_id: int) -> None:
        import optuna

        trial = optuna.trial.Trial(self.study, trial_id)
        info = self._info(trial).replace(worker=self.options.worker_id, status="running")
        started = time.monotonic()
        with _Heartbeat(self.storage, trial_id, self.options.heartbeat,
                        self.options.worker_id) as heartbeat:
            try:
                self._write_info(trial_id, info)
                self._execute(trial, info, started, heartbeat)
                self._bugs_in_a_row = 0
            except (optuna.exceptions.UpdateFinishedTrialError, _TakenOver) as taken:
                self._taken_over(trial, getattr(taken, "info", info), started)
            except KeyboardInterrupt:
                self._give_back(trial, info, "interrupted", "interrupted by the user (Ctrl-C)")
                raise
            except DwsearchError as err:  # the configuration cannot run: a located reason
                self._fail(trial, info, "error", first_line(err), started)
            except Exception as err:  # a bug or the machine (out of memory, a full disk)
                if "database is locked" in str(err):
                    raise
                # Not the configuration's fault (as far as anyone can tell): its slot is laid
                # out again, so the same command on a mended machine still runs it.
                self._bugs_in_a_row += 1
                self._give_back(trial, info, "error",
                                f"{type(err).__name__}: {first_line(err)}")
                if self._bugs_in_a_row >= 3:
                    raise StudyError(f"three trials in a row failed unexpectedly (their slots "
                                     f"are laid out again); the last: {reason(err)}") from err

    def _taken_over(self, trial: Any, info: TrialInfo, started: float) -> None:
        """Another worker finished this trial for dead (it heard no heartbeat in its grace)
        and laid its slot out again: this run's result is discarded, the study goes on."""
        if info.weights:  # this run's own checkpoint: the retry keeps its own
            Path(info.weights).unlink(missing_ok=True)
        self.on_event(TrialEvent(
            trial.number, "FAIL", "taken over", info.config or {},
            seconds=time.monotonic() - started,
            message="another worker took this trial for dead (no heartbeat within its "
                    "grace) and retried it; this run's result is discarded"))

    def _give_back(self, trial: Any, info: TrialInfo, status: str, why: str) -> None:
        """Fail the trial with ``why`` and lay its slot out again (Ctrl-C, or a failure of
        the machine rather than of the configuration)."""
        import optuna

        info = info.replace(status=status)
        try:
            self.storage.set_trial_user_attr(trial._trial_id, ERROR_KEY, f"{status}: {why}")
            self._write_info(trial._trial_id, info)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        self._enqueue_retry(trial.number, dict(trial.params), info)
        self.on_event(TrialEvent(trial.number, "FAIL", status, info.config or {},
                                 message=f"{why}; laid out again"))

    def _fail(self, trial: Any, info: TrialInfo, status: str, why: str,
              started: float, record: RunRecord | None = None) -> None:
        import optuna

        info = info.replace(status=status)
        if status == "infeasible" and info.role == "sample":
            self._infeasible_in_a_row += 1
            self._last_infeasible = why
        self._write_info(trial._trial_id, info)
        self.storage.set_trial_user_attr(trial._trial_id, ERROR_KEY, why)
        if record is not None:
            self.storage.set_trial_user_attr(trial._trial_id, RECORD_KEY, record.to_dict())
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if status in ("infeasible", "error") and info.role == "sample" and info.repeat == 0:
            self._replace_sample(info.slot)
        self.on_event(TrialEvent(trial.number, "FAIL", status, info.config or {},
                                 seconds=time.monotonic() - started, message=why))

    def _replace_sample(self, slot: int | None) -> None:
        """A fresh empty slot for a sampled configuration that could not run, so the study
        still trains n_trials; bounded, in case the sampler keeps proposing bad ones."""
        if self.plan.open_ended:
            return
        replaced = int(self.handle.system_attr(REPLACED_KEY, 0))
        if replaced >= max(20, 2 * self.plan.configurations):
            return
        self.handle.set_system_attr(REPLACED_KEY, replaced + 1)
        fresh = TrialInfo(slot=slot, role="sample", replaces_a_failed_sample=True)
        self.study.enqueue_trial({}, user_attrs={INFO_KEY: fresh.to_attrs()})

    def _execute(self, trial: Any, info: TrialInfo, started: float,
                 heartbeat: _Heartbeat) -> None:
        import optuna

        space = self.plan.space
        suggest = _OptunaSuggest(trial)
        if info.config is not None:
            config = dict(info.config)
            space.record(config, suggest)
        else:
            config = space.suggest(suggest)
            info = info.replace(config=config, config_hash=config_hash(config))
            self._enqueue_repeats(info)
        seed = derive_seed(self.config.model.seed, info.repeat,
                           trial.number if self.config.model.seeds == "per_trial" else None)
        run = objective.prepare(self.config, space, config, seed=seed,
                                device=self.options.device, threads=self.options.threads,
                                data=self.data.config(), device_kind=self._device,
                                compression=self.compression)
        info = info.replace(seed=seed, run_key=run.key)
        self._write_info(trial._trial_id, info)

        reused = self._find_reusable(run.key)
        if reused is not None:
            self._reuse(trial, info, reused, started)
            return

        splits = self.data.splits(run.spec)
        pruned: list[str] = []
        costs: dict[str, Any] = {}  # filled by the check: when costs were known, the MACs
        check = objective.constraint_check(self.config.constraints, costs)
        pruner = self._pruner(trial, pruned, costs, heartbeat)
        weights = None
        if self.config.model.keep_weights:
            weights = self._weights_path(trial.number)
            info = info.replace(weights=str(weights))
        run_started = time.monotonic()
        try:
            record = objective.train(
                run, splits, test=self.config.model.test, callbacks=[pruner],
                latency=self.measure_latency, check=check, keep=weights,
                extra={"study": self.config.name, "trial": trial.number,
                       "repeat": info.repeat, "config": config},
                deploy=self.config.model.deploy, sources=self._sources())
        except objective.Infeasible as err:
            self._fail(trial, info, "infeasible", str(err), started)
            return
        except _TakenOver as err:
            err.info = info  # with the weights this run wrote
            raise
        try:
            self._tell(trial, info, record, config, started, run_started, costs, heartbeat,
                       pruned)
        except optuna.exceptions.UpdateFinishedTrialError as err:
            raise _TakenOver(info) from err

    def _tell(self, trial: Any, info: TrialInfo, record: RunRecord, config: Mapping[str, Any],
              started: float, run_started: float, costs: Mapping[str, Any],
              heartbeat: _Heartbeat, pruned: list[str]) -> None:
        """Store a finished run's record and tell Optuna how it ended."""
        import optuna

        self._infeasible_in_a_row = 0
        if heartbeat.taken_over.is_set():
            raise _TakenOver(info)
        run_seconds = time.monotonic() - run_started
        total = time.monotonic() - started
        # Overhead: everything but training, validation and the test evaluation: sampling,
        # storage writes, building and profiling the model, measuring its latency.
        profiling = costs["at"] - run_started if "at" in costs else 0.0
        info = info.replace(trial_seconds=round(total, 3),
                            overhead_seconds=round(total - run_seconds + profiling, 3))
        if record.status == "diverged":
            self._fail(trial, info, "diverged", record.message, started, record)
            return
        if record.deploy is not None and record.deploy.get("error"):
            self._fail(trial, info, "error", f"deploy: {record.deploy['error']}", started,
                       record)
            return
        late = objective.after_training_check(self.config.constraints, record)
        if late is not None and not pruned:
            self._fail(trial, info, "infeasible", late, started, record)
            return
        self.storage.set_trial_user_attr(trial._trial_id, RECORD_KEY, record.to_dict())
        if pruned:
            info = info.replace(status="pruned")
            self._write_info(trial._trial_id, info)
            self.storage.set_trial_user_attr(trial._trial_id, ERROR_KEY, pruned[0])
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            self._emit(trial.number, "PRUNED", "pruned", config, record, total, pruned[0], info)
            return
        info = info.replace(status="completed")
        self._write_info(trial._trial_id, info)
        self.study.tell(trial, values=objective.values(self.config.objectives, record))
        self._emit(trial.number, "COMPLETE", "completed", config, record, total, "", info)
        if self.config.model.keep_weights == "front":
            self._drop_dominated_weights()

    def _emit(self, number: int, state: str, status: str, config: Mapping[str, Any],
              record: RunRecord, seconds: float, message: str, info: TrialInfo) -> None:
        self.on_event(TrialEvent(number, state, status, config, record.val_accuracy,
                                 record.macs, seconds, message, info.overhead_seconds or 0.0))

    def _enqueue_repeats(self, info: TrialInfo) -> None:
        """The other repeats of a freshly sampled configuration, as fixed slots; skipped for
        repeats that exist already (a retried trial must not add them twice)."""
        repeats = self.config.model.repeats
        if repeats == 1 or info.repeat != 0 or info.config is None:
            return
        existing = {self._info(t).repeat for t in self.handle.trials()
                    if self._info(t).config_hash == info.config_hash}
        for r in range(1, repeats):
            if r not in existing:
                repeat = TrialInfo(slot=info.slot, repeat=r, role="sample",
                                   config=dict(info.config), config_hash=info.config_hash)
                self.study.enqueue_trial(dict(info.config),
                                         user_attrs={INFO_KEY: repeat.to_attrs()})

    # -- reuse ------------------------------------------------------------------------------
    def _find_reusable(self, run_key: str) -> Any | None:
        import optuna

        if run_key not in self._run_keys:
            for t in self.handle.trials(states=(optuna.trial.TrialState.COMPLETE,)):
                if t.number in self._known_complete:
                    continue
                self._known_complete.add(t.number)
                key = self._info(t).run_key
                if key and RECORD_KEY in t.user_attrs:
                    self._run_keys.setdefault(key, t)
        return self._run_keys.get(run_key)

    def _reuse(self, trial: Any, info: TrialInfo, source: Any, started: float) -> None:
        record = RunRecord.from_dict(source.user_attrs[RECORD_KEY],
                                     where=f"trial {source.number}")
        # The same run: its weights are this trial's too.
        info = info.replace(status="completed", reused_from=source.number,
                            trial_seconds=round(time.monotonic() - started, 3),
                            weights=self._info(source).weights)
        self._write_info(trial._trial_id, info)
        self.storage.set_trial_user_attr(trial._trial_id, RECORD_KEY, record.to_dict())
        self.study.tell(trial, values=list(source.values))
        self.on_event(TrialEvent(trial.number, "COMPLETE", "reused", info.config or {},
                                 record.val_accuracy, record.macs,
                                 time.monotonic() - started,
                                 f"same run as trial {source.number}: result reused"))

    def _sources(self) -> Path | None:
        """Where prune.from base keeps the trained base of each seed (beside the weights)."""
        if self.compression is None or self.compression.prune_from != "base":
            return None
        folder = (Path(self.options.weights_dir) if self.options.weights_dir
                  else weights_folder(self.handle.raw_url or self.handle.url, self.config.name))
        return folder / "sources"

    def _weights_path(self, number: int) -> Path:
        """Where trial ``number`` keeps its weights: ``--weights-dir``, else beside the
        storage. A file of the same name from another storage's study of the same name is
        never touched: this one then gets the storage's token in its name."""
        folder = (Path(self.options.weights_dir) if self.options.weights_dir
                  else weights_folder(self.handle.raw_url or self.handle.url, self.config.name))
        path = (folder / f"{self.config.name}-trial-{number}.pt").resolve()
        if path.exists():
            token = hashlib.sha256(self.handle.url.encode()).hexdigest()[:8]
            path = path.with_name(f"{self.config.name}-{token}-trial-{number}.pt")
        return path

    def _drop_dominated_weights(self) -> None:
        """keep_weights: front. Remove the kept weights of configurations dominated for
        good: every repeat of theirs finished, and another configuration whose repeats all
        finished is at least as good in every objective (means over repeats) and better in
        one. Such a configuration can never be on the front again, so its weights are never
        asked for; the front's always stay. (One objective: the front of it and MACs, as the
        report draws it.)"""
        import optuna

        groups: dict[str, list[tuple[Any, TrialInfo]]] = {}
        for trial in self.handle.trials(states=(optuna.trial.TrialState.COMPLETE,)):
            info = self._info(trial)
            if trial.values is not None:
                groups.setdefault(info.config_hash or f"#{trial.number}", []).append(
                    (trial, info))
        repeats = self.config.model.repeats
        signs = [1.0 if o.direction == "maximize" else -1.0 for o in self.config.objectives]
        points: dict[str, list[float]] = {}
        for key, members in groups.items():
            if len({info.repeat for _, info in members}) < repeats:
                continue  # its mean can still change
            values = [[s * v for s, v in zip(signs, t.values, strict=True)] for t, _ in members]
            point = [sum(column) / len(column) for column in zip(*values, strict=True)]
            if len(signs) == 1:
                macs = members[0][0].user_attrs.get(RECORD_KEY, {}).get("macs")
                if not isinstance(macs, (int, float)):
                    continue
                point.append(-float(macs))
            points[key] = point
        for key, point in points.items():
            if key in self._dropped:
                continue
            dominated = any(all(o >= p for o, p in zip(other, point, strict=True))
                            and any(o > p for o, p in zip(other, point, strict=True))
                            for k, other in points.items() if k != key)
            if dominated:
                self._dropped.add(key)
                for _, info in groups[key]:
                    if info.weights:
                        Path(info.weights).unlink(missing_ok=True)

    # -- pruning ------------------------------------------------------------------------------
    def _pruner(self, trial: Any, pruned: list[str], costs: Mapping[str, Any],
                heartbeat: _Heartbeat) -> Callable[[Any], None]:
        from dwsearch.train.loop import StopTraining

        section = self.config.pruner
        rule = CostMedian(section, self._peers) if section.name == "cost_median" else None

        def callback(metrics: Any) -> None:
            if heartbeat.taken_over.is_set():
                raise _TakenOver
            if section.name == "none":
                return
            if rule is not None:
                why = rule.reason(metrics.epoch, metrics.val_accuracy, int(costs["macs"]))
            else:
                why = prune_reason(trial, metrics.epoch, metrics.val_accuracy)
            if why:
                pruned.append(why)
                raise StopTraining(f"pruned: {why}")

        return callback

    def _peers(self) -> list[tuple[int, list[float]]]:
        import optuna

        for t in self.handle.trials(states=(optuna.trial.TrialState.COMPLETE,)):
            if t.number in self._peer_cache or RECORD_KEY not in t.user_attrs:
                continue
            raw = t.user_attrs[RECORD_KEY]
            curve = [e.get("val_accuracy") for e in raw.get("epochs", [])]
            if all(v is not None for v in curve):
                self._peer_cache[t.number] = (int(raw.get("macs", 0)), curve)
        return list(self._peer_cache.values())
