"""``dwsearch bench``: the baseline study's training pipeline against dwsearch's, in one run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from dwsearch.cli._common import build_config, config_options
from dwsearch.errors import ConfigError
from dwsearch.train.config import MAX_SEED, TrainConfig

# The options that change how dwsearch's side trains; the recipe itself is the baseline's.
_RUNTIME_FIELDS = ("precision", "channels_last", "device", "threads")


# DataLoader worker processes for the baseline-style pipeline: each is a process holding a copy
# of the dataset, so a typo of 10^6 must not be started.
MAX_WORKERS = 64


def _integers(value: str, flag: str, top: int = MAX_SEED) -> tuple[int, ...]:
    """Comma-separated integers in 0..top (seeds, worker and job counts)."""
    try:
        numbers = tuple(int(s) for s in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers like 0,1, found {value!r}",
                                 param_hint=flag) from None
    if any(not 0 <= n <= top for n in numbers):
        raise click.BadParameter(f"expected integers in 0..{top}, found {value!r}",
                                 param_hint=flag)
    return numbers


def _check_output(output: str | None) -> Path | None:
    """The --output path, checked writable before minutes of measuring (a probe file is
    created and removed beside it)."""
    if output is None:
        return None
    path = Path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"--output {output}: cannot write there ({err.strerror or err})"
                          ) from err
    return path


@click.command()
@click.argument("specs", nargs=-1)
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="CIFAR-10 folder; default $DWSEARCH_DATA_DIR, else the cache directory.")
@click.option("--val-size", default=5000, show_default=True, type=click.IntRange(min=0),
              help="Images carved from the training set for the accuracy comparison.")
@click.option("--steps", default=16, show_default=True, type=click.IntRange(min=1),
              help="Timed training steps per pipeline and spec.")
@click.option("--baseline-workers", default=None,
              help="Comma-separated DataLoader worker counts for the baseline-style pipeline; "
                   "default: 0 (the baseline study's code) and one per core.")
# Its old name, from when "seed" named the baseline study too: users' scripts still use it.
@click.option("--seed-workers", "deprecated_workers", default=None, hidden=True)
@config_options(TrainConfig, exclude=[
    f for f in TrainConfig.__dataclass_fields__ if f not in _RUNTIME_FIELDS
])
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Measure peak memory in training and inference.")
@click.option("--load-times/--no-load-times", default=True, show_default=True,
              help="Measure cold and warm dataset load times.")
@click.option("--throughput/--no-throughput", default=True, show_default=True,
              help="Measure training images/s of both pipelines.")
@click.option("--accuracy-subset", type=click.IntRange(min=10),
              help="Also train on this many images in fp32 and bf16 and compare accuracy "
                   "(at least one per CIFAR-10 class).")
@click.option("--accuracy-epochs", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--accuracy-seeds", default="0", show_default=True,
              help="Comma-separated seeds for the accuracy comparison (spread = noise).")
@click.option("--output", type=click.Path(dir_okay=False),
              help="Write the results as JSON here (a .md path writes the Markdown tables).")
@click.option("--study", "study_file", type=click.Path(dir_okay=False),
              help="Instead: trials per hour of this (grid or ablation) study, by hand "
                   "(dwsearch train per trial) against run-study with each --jobs count.")
@click.option("--jobs", "study_jobs", default="1,2", show_default=True,
              help="With --study: comma-separated worker-process counts to measure.")
@click.option("--thread-jobs", default="", metavar="N,M",
              help="With --study: also measure N workers as threads of one process (not "
                   "reproducible: threads share torch's RNG; run-study uses processes).")
@click.option("--study-trials", type=click.IntRange(min=1),
              help="With --study: measure on the first N trials only.")
@click.option("--by-hand/--no-by-hand", default=True, show_default=True,
              help="With --study: also time each trial as its own dwsearch train command.")
def bench(
    specs: tuple[str, ...],
    data_dir: str | None,
    val_size: int,
    steps: int,
    baseline_workers: str | None,
    deprecated_workers: str | None,
    memory: bool,
    load_times: bool,
    throughput: bool,
    accuracy_subset: int | None,
    accuracy_epochs: int,
    accuracy_seeds: str,
    output: str | None,
    study_file: str | None,
    study_jobs: str,
    thread_jobs: str,
    study_trials: int | None,
    by_hand: bool,
    **runtime: object,
) -> None:
    """Baseline-style training pipeline vs dwsearch's, measured in one run (default specs:
    seed_cnn seed_dwsep); prints images/s ratios, data-loading share, load times, memory.
    With --study: trials per hour of a study run by hand against run-study --jobs N."""
    from dwsearch.bench import run_bench, study_rates

    if study_file is not None:
        counts = tuple(n for n in _integers(study_jobs, "--jobs") if n >= 1) or (1,)
        threads = tuple(n for n in _integers(thread_jobs, "--thread-jobs") if n >= 1) \
            if thread_jobs else ()
        rates = study_rates(study_file, jobs=counts, thread_jobs=threads, by_hand=by_hand,
                            n_trials=study_trials,
                            device=str(runtime.get("device", "auto")), data_dir=data_dir,
                            log=lambda line: click.echo(line, err=True))
        base = rates[0].trials_per_hour
        click.echo("| mode | trials | wall s | trials/hour | vs first |\n|---|---:|---:|---:|---:|")
        for rate in rates:
            click.echo(f"| {rate.mode} | {rate.trials} | {rate.seconds:.0f} | "
                       f"{rate.trials_per_hour:.1f} | {rate.trials_per_hour / base:.2f}x |")
        return

    seeds = _integers(accuracy_seeds, "--accuracy-seeds")
    flag = "--baseline-workers"
    if deprecated_workers is not None:
        click.echo("dwsearch bench: --seed-workers is deprecated; use --baseline-workers",
                   err=True)
        if baseline_workers is not None:
            raise click.UsageError("--seed-workers is the old name of --baseline-workers: "
                                   "give one of them")
        baseline_workers, flag = deprecated_workers, "--seed-workers"
    workers = _integers(baseline_workers, flag, MAX_WORKERS) if baseline_workers else None
    config = build_config(TrainConfig, runtime)
    out_path = _check_output(output)
    result = run_bench(
        list(specs) or ["seed_cnn", "seed_dwsep"], data_dir=data_dir, steps=steps,
        baseline_workers=workers, config=config, memory=memory, load_times=load_times,
        throughput=throughput, accuracy_subset=accuracy_subset,
        accuracy_epochs=accuracy_epochs, accuracy_seeds=seeds, val_size=val_size,
        log=lambda line: click.echo(line, err=True),
    )
    text = result.to_markdown()
    click.echo(text)
    if out_path is not None:
        body = text + "\n" if out_path.suffix == ".md" else json.dumps(
            result.to_dict(), indent=2, default=str) + "\n"
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(body)
        except OSError as err:
            raise ConfigError(f"--output {output}: cannot write ({err.strerror})") from err


COMMANDS = [bench]
