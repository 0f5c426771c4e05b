"""``dwsearch run-study``: plan a study, then run its trials in one or several worker processes,
printing a line per finished trial and an overall bar.

Several workers on one machine (``--jobs N``) are processes: each has its own torch RNG and
thread count, so every trial stays reproducible from its seed. (Threads would share both.)
Several machines run the same command against one database (``--storage postgresql://...``).
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dwsearch.arguments import checked
from dwsearch.errors import DwsearchError, StudyError, reason
from dwsearch.study import compression
from dwsearch.study.compression import Compression
from dwsearch.study.config import StudyConfig, load_study_config, parse_study_config
from dwsearch.study.options import (
    AUTO_JOBS_CUDA,
    MAX_JOBS,
    WorkerOptions,
    default_worker_id,
)
from dwsearch.study.plan import Plan, StudyHandle, check_data, make_plan, open_study
from dwsearch.study.space import config_hash
from dwsearch.study.storage import (
    describe_url,
    is_in_memory,
    resolve_storage_url,
    weights_folder,
)
from dwsearch.study.worker import StudyData, TrialEvent, Worker
from dwsearch.yamlio import load_yaml

__all__ = ["StudyOutcome", "apply_overrides", "load_config", "run_study"]



def _check_weights_folder(options: WorkerOptions, url: str, name: str) -> None:
    """keep_weights: the folder must take files before any trial trains (an unwritable one
    would fail every trial)."""
    import tempfile

    folder = Path(options.weights_dir) if options.weights_dir else weights_folder(url, name)
    shown = "--weights-dir" if options.weights_dir else "the weights folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as err:
        raise StudyError(f"{shown} {folder}: cannot write the kept weights there "
                         f"({reason(err)}); pass a writable --weights-dir") from err


@dataclass(frozen=True)
class StudyOutcome:
    """Where a study stands after ``run_study``."""

    name: str
    storage: str  # URL, password hidden
    planned: int  # trials the study runs in all (0: open-ended)
    states: Mapping[str, int]  # trials by Optuna state, now
    ran: int  # trials this call ran
    seconds: float
    overhead: float | None  # mean share of trial time that was not training (0..1)
    skipped: tuple[tuple[Mapping[str, Any], str], ...]  # configurations left out, and why

    @property
    def finished(self) -> int:
        return int(self.states.get("COMPLETE", 0) + self.states.get("PRUNED", 0))


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A study file's data with ``--set`` values applied: ``train.epochs``, ``data.train_subset``,
    ``repeats``, ``space.layers[0:3].block`` (everything after ``space.`` is one key)."""
    out = copy.deepcopy(dict(data))
    for key, value in overrides.items():
        if key.startswith("space."):
            parts = ["space", key[len("space."):]]
        else:
            parts = key.split(".")
        if not all(parts):
            raise StudyError(f"--set {key!r}: expected KEY or SECTION.KEY, e.g. train.epochs=2")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise StudyError(f"--set {key!r}: {part} is not a mapping in the study file")
            node = child
        node[parts[-1]] = value
    return out


@checked(StudyError)
def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None,
                name: str | None = None) -> StudyConfig:
    """A study file with ``--set`` overrides and an optional new name, validated; errors
    about a value a ``--set`` wrote name that ``--set``."""
    if not overrides and name is None:
        return load_study_config(path)
    path = Path(path)
    load_study_config(path)  # the file itself must exist and be valid YAML first
    data = load_yaml(path.read_text(encoding="utf-8"), str(path), StudyError)
    if not isinstance(data, Mapping):
        raise StudyError(f"{path}: expected a mapping of study keys")
    data = apply_overrides(data, dict(overrides or {}))
    if name is not None:
        data["name"] = name
    return parse_study_config(data, str(path), path.parent,
                              overrides=tuple(str(key) for key in overrides or {}))


def _default_jobs(device: str) -> int:
    from dwsearch.runtime import resolve_device

    return AUTO_JOBS_CUDA if resolve_device(device).type == "cuda" else 1


def _states(handle: StudyHandle) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in handle.trials():
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def _child(plan: Plan, url: str, options: WorkerOptions, events: Any) -> None:
    """A worker process: open the study, run trials, send events to the parent."""
    if not options.worker_id:  # named after its own process, not the parent's
        options = replace(options, worker_id=default_worker_id())
    try:
        handle = open_study(plan, url, create=False, worker=options.worker_id)
        Worker(plan, handle, options, lambda e: events.put(("event", asdict(e)))).run()
        events.put(("done", None))
    except KeyboardInterrupt:
        events.put(("interrupted", None))
    except DwsearchError as err:
        events.put(("error", str(err)))
    except BaseException as err:
        import traceback

        events.put(("bug", "".join(traceback.format_exception(err))))


def check_compression(config: StudyConfig, plan: Plan, url: str) -> Compression | None:
    """The study's compression levers resolved and tried on the configurations it lays out
    (a sampled study: its base), before anything trains (see dwsearch.study.compression)."""
    resolved = compression.resolve(config, plan.space, url)
    configs = {config_hash(slot.config): slot.config for slot in plan.slots[:10_000]
               if slot.config is not None}
    compression.check(config, plan.space, resolved, list(configs.values()) or [{}])
    return resolved


@checked(StudyError, hints={"config": "read a study file with load_config(path) first"})
def run_study(
    config: StudyConfig,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    jobs: int | None = None,
    options: WorkerOptions | None = None,
    on_event: Callable[[TrialEvent], None] | None = None,
    on_plan: Callable[[Plan, StudyHandle, Mapping[str, int]], None] | None = None,
) -> StudyOutcome:
    """Plan the study, create or resume it in its storage, and run its trials with ``jobs``
    worker processes (None: one on a CPU, 4 on a GPU; 1 runs in this process). Running it
    again resumes: finished trials are never repeated."""
    started = time.monotonic()
    options = (options or WorkerOptions()).check()  # before anything is made or opened
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int)
                             or not 1 <= jobs <= MAX_JOBS):
        raise StudyError(f"jobs: expected a number of worker processes in 1..{MAX_JOBS}, "
                         f"found {jobs!r}")
    plan = make_plan(config, n_trials)
    url = resolve_storage_url(storage or config.model.storage, config.name)  # bad: say so now
    if is_in_memory(url):
        raise StudyError(f"storage {describe_url(url)}: an in-memory database keeps nothing "
                         f"(every trial would be lost when this command ends, and each --jobs "
                         f"worker would get an empty one of its own); give a file: "
                         f"sqlite:///PATH.db")
    if config.model.keep_weights:
        _check_weights_folder(options, url, config.name)
    # Teacher, pruning target, QAT's runtime: tried before the data loads or anything trains.
    resolved = check_compression(config, plan, url)
    # The data before the storage: a missing dataset must not leave a half-made study.
    data = StudyData(plan, options).preload()
    handle = open_study(plan, storage, create=True, worker=options.worker_id)
    check_data(handle, *data.identity())
    if on_plan is not None:
        on_plan(plan, handle, _states(handle))
    jobs = jobs or _default_jobs(options.device)
    timeout = options.timeout if options.timeout is not None else config.timeout_seconds
    options = replace(options, timeout=timeout)
    events: list[TrialEvent] = []

    def record(event: TrialEvent) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    ran = 0
    if jobs == 1:
        ran = Worker(plan, handle, options, record, data=data, resolved=resolved).run()
    else:
        ran = _run_processes(plan, handle.raw_url, options, jobs, record)
    overheads = [e.overhead_seconds / e.seconds for e in events
                 if e.status == "completed" and e.seconds > 0]
    return StudyOutcome(
        name=config.name,
        storage=handle.url,
        planned=plan.trials,
        states=_states(handle),
        ran=ran,
        seconds=time.monotonic() - started,
        overhead=sum(overheads) / len(overheads) if overheads else None,
        skipped=plan.skipped,
    )


def _run_processes(plan: Plan, url: str, options: WorkerOptions, jobs: int,
                   on_event: Callable[[TrialEvent], None]) -> int:
    from dwsearch.runtime import usable_cpus

    context = multiprocessing.get_context("spawn")
    channel = context.Queue()
    threads = options.threads
    if threads is None and _default_jobs(options.device) == 1:
        threads = max(1, usable_cpus() // jobs)  # CPU: share the cores, don't oversubscribe
    children = []
    named = os.environ.get("DWSEARCH_WORKER_ID")
    for index in range(jobs):
        child_options = replace(options, threads=threads,
                                worker_id=f"{named}/{index}" if named else "")
        process = context.Process(target=_child, args=(plan, url, child_options, channel),
                                  name=f"dwsearch-worker-{index}")
        process.start()
        children.append(process)
    ran, running, problems = 0, len(children), []
    try:
        while running:
            try:
                kind, payload = channel.get(timeout=1.0)
            except queue.Empty:
                kind, payload = None, None
            # Every child is polled each round, which reaps the dead: a zombie would look
            # alive to the other workers and keep its trial RUNNING for the whole grace.
            alive = [p.is_alive() for p in children]
            if kind is None:
                if not any(alive):
                    break
                continue
            if kind == "event":
                ran += payload["status"] not in ("killed", "interrupted")
                on_event(TrialEvent(**payload))
            else:
                running -= 1
                if kind in ("error", "bug"):
                    problems.append(payload)
    except KeyboardInterrupt:
        for process in children:  # they got the same Ctrl-C from the terminal; make sure
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
        for process in children:
            process.join(timeout=60)
        raise
    for process in children:
        process.join()
    if problems:
        raise StudyError(f"a worker process stopped: {problems[0].strip().splitlines()[-1]}")
    return ran


def describe_plan(plan: Plan, handle: StudyHandle, states: Mapping[str, int]) -> str:
    """A few lines: what the study will run and where it stands."""
    config = plan.config
    done = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
    total = f"{plan.trials}" if not plan.open_ended else "open-ended (until the timeout)"
    lines = [
        f"study {config.name} ({config.source}): sampler {config.sampler.name}, "
        f"objectives {', '.join(map(str, config.objectives))}",
        f"storage {handle.url}: {'created' if handle.created else 'resumed'}; "
        f"{done} of {total} trials finished",
    ]
    if plan.skipped:
        lines.append(f"{len(plan.skipped)} configuration(s) left out: "
                     f"{plan.skipped[0][1]} ...")
    return "\n".join(lines)


def dry_run(config: StudyConfig, n_trials: int | None = None,
            storage: str | None = None) -> str:
    """What ``run-study`` would do, without touching any storage."""
    plan = make_plan(config, n_trials)
    url = describe_url(resolve_storage_url(storage or config.model.storage, config.name))
    lines = [
        f"study {config.name} ({config.source}) is valid",
        f"sampler {config.sampler.name}; objectives "
        f"{', '.join(map(str, config.objectives))}; pruner {config.pruner.name}",
        f"{plan.configurations} configuration(s) x {config.model.repeats} repeat(s) = "
        f"{plan.trials if not plan.open_ended else 'open-ended'} trial(s); storage {url}",
    ]
    for slot in plan.slots[: min(len(plan.slots), 8)]:
        shown = ", ".join(f"{k}={v}" for k, v in (slot.config or {}).items()) or (
            "(sampled)" if slot.config is None else "(the base)")
        lines.append(f"  {slot.role:8} repeat {slot.repeat}: {shown}")
    if len(plan.slots) > 8:
        lines.append(f"  ... {len(plan.slots) - 8} more")
    for conf, why in plan.skipped:
        lines.append(f"  left out {dict(conf)}: {why}")
    return "\n".join(lines)


def print_event(event: TrialEvent, write: Callable[[str], None] = print) -> None:
    choices = " ".join(f"{k}={v}" for k, v in event.config.items()) or "(base)"
    accuracy = f"val {event.val_accuracy:.2%}" if event.val_accuracy is not None else ""
    macs = f"MACs {event.macs / 1e6:.1f}M" if event.macs is not None else ""
    parts = [f"trial {event.number:>4}", f"{event.status:<11}", accuracy, macs,
             f"{event.seconds:.1f} s", choices]
    line = "  ".join(p for p in parts if p)
    if event.message and event.status != "completed":
        line += f"  ({event.message})"
    write(line)

