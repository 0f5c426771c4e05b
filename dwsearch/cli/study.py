"""Commands about studies: ``run-study`` and ``schema``."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

import click

from dwsearch.cli._common import parse_overrides_option
from dwsearch.errors import ConfigError
from dwsearch.study.options import AUTO_JOBS_CUDA, MAX_JOBS, WorkerOptions

F = Callable[..., Any]
_WORKER_FIELDS = {f.name: f for f in dataclasses.fields(WorkerOptions)}


def worker_option(name: str, *decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A run-study option for the :class:`WorkerOptions` field ``name``: its default and help
    are the field's (written once, there)."""
    field = _WORKER_FIELDS[name]
    return click.option(*decls, name, default=field.default,
                        show_default=field.default is not None,
                        help=field.metadata["help"], **kwargs)


@click.command("run-study")
@click.argument("study_file", type=click.Path(dir_okay=False))
@click.option("--storage", metavar="URL",
              help="Optuna storage: sqlite:///FILE, postgresql://USER:PASS@HOST/DB or "
                   "journal:///FILE; default: the study file's, else a SQLite file per study "
                   "in $DWSEARCH_STUDY_DIR (~/.local/share/dwsearch/studies).")
@click.option("--n-trials", type=click.IntRange(min=1),
              help="Training runs in all (configurations x repeats); default: the file's.")
@worker_option("data_dir", "--data-dir", type=click.Path(file_okay=False))
@worker_option("device", "--device")
@click.option("--jobs", default="auto", show_default=True, metavar="N|auto",
              help=f"Worker processes side by side on this machine; auto: 1 on a CPU, "
                   f"{AUTO_JOBS_CUDA} on a GPU.")
@worker_option("threads", "--threads", type=click.IntRange(min=1))
@click.option("--timeout", metavar="DURATION",
              help="Stop starting trials after this long (seconds, or 30m, 2h); default: the "
                   "file's. Running the command again continues.")
@click.option("--set", "overrides", multiple=True, callback=parse_overrides_option,
              metavar="KEY=VALUE",
              help="Change the study file, e.g. --set train.epochs=2 --set "
                   "data.train_subset=5000; a changed study needs a new --name.")
@click.option("--name", help="Run the study under another name (a separate study).")
@worker_option("heartbeat", "--heartbeat", type=click.FloatRange(min=0.5))
@worker_option("grace", "--grace", type=click.FloatRange(min=1))
@worker_option("weights_dir", "--weights-dir", type=click.Path(file_okay=False))
@click.option("--dry-run", is_flag=True,
              help="Validate the file and show the plan; touch no storage, train nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no per-trial lines.")
def run_study_cmd(
    study_file: str,
    storage: str | None,
    n_trials: int | None,
    data_dir: str | None,
    device: str,
    jobs: str,
    threads: int | None,
    timeout: str | None,
    overrides: dict[str, Any],
    name: str | None,
    heartbeat: float,
    grace: float,
    weights_dir: str | None,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Run (or resume) the study STUDY_FILE: train its configurations and store every trial.

    Running the same command again resumes; several processes or machines with one
    --storage URL share the work. Ctrl-C stops cleanly: the running trial is marked and
    laid out again.
    """
    from tqdm import tqdm

    from dwsearch.runtime import resolve_device
    from dwsearch.study.config import parse_timeout
    from dwsearch.study.runner import describe_plan, load_config, print_event, run_study
    from dwsearch.study.runner import dry_run as plan_only
    from dwsearch.study.storage import describe_url

    if jobs != "auto" and not (jobs.isdigit() and 1 <= int(jobs) <= MAX_JOBS):
        raise ConfigError(f"--jobs: expected a number of processes (1..{MAX_JOBS}) or auto, "
                          f"found {jobs!r}")
    config = load_config(study_file, overrides, name)
    if dry_run:
        click.echo(plan_only(config, n_trials, storage))
        return
    resolve_device(device)  # a typo in --device is an error now, not in every worker
    seconds = parse_timeout(timeout, "--timeout") if timeout else None
    options = WorkerOptions(
        device=device, threads=threads, data_dir=data_dir,
        heartbeat=heartbeat, grace=grace, timeout=seconds,
        weights_dir=weights_dir,
    )
    bar: Any = None

    def started(plan: Any, handle: Any, states: Mapping[str, int]) -> None:
        nonlocal bar
        click.echo(describe_plan(plan, handle, states), err=True)
        if not quiet and not plan.open_ended:
            done = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
            bar = tqdm(total=plan.trials, initial=min(done, plan.trials), unit="trial",
                       desc=config.name, dynamic_ncols=True, file=sys.stderr)

    def event(e: Any) -> None:
        if not quiet:
            print_event(e, write=(bar.write if bar is not None else click.echo))
        if bar is not None and e.status not in ("killed", "interrupted"):
            bar.update(1)

    try:
        outcome = run_study(config, storage=storage, n_trials=n_trials,
                            jobs=None if jobs == "auto" else int(jobs), options=options,
                            on_event=event, on_plan=started)
    finally:
        if bar is not None:
            bar.close()
    states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(outcome.states.items()))
    overhead = (f"; overhead {outcome.overhead:.1%} of trial time (sampling, storage, "
                f"profiling)" if outcome.overhead is not None else "")
    click.echo(f"{outcome.name}: ran {outcome.ran} trial(s) in {outcome.seconds:.0f} s; "
               f"storage now holds {states}{overhead}", err=True)
    if outcome.planned and outcome.finished < outcome.planned:
        left = outcome.planned - outcome.finished
        click.echo(f"{left} trial(s) not finished (timeout, failures or other workers still "
                   f"running); run the same command to continue", err=True)
    target = study_file if name is None else config.name
    click.echo(f"report: dwsearch report {target}"
               + (f" --storage '{describe_url(storage)}'" if storage else ""), err=True)


@click.command("schema")
@click.option("--output", type=click.Path(dir_okay=False), help="Write it to this file.")
def schema(output: str | None) -> None:
    """Print the JSON Schema of study files (for editor completion and checks)."""
    from pathlib import Path

    from dwsearch.study.config import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text)
    except OSError as err:
        raise ConfigError(f"--output {output}: cannot write ({err.strerror})") from err


COMMANDS = [run_study_cmd, schema]
