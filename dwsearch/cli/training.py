"""``dwsearch train``: one spec, one recipe, one run."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from dwsearch.cli._common import (
    EXIT_DIVERGED,
    build_config,
    config_options,
    load_spec_with,
    spec_options,
)
from dwsearch.data.config import DataConfig
from dwsearch.train.config import TrainConfig


@click.command()
@spec_options
@config_options(DataConfig)
@config_options(TrainConfig)
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Write a checkpoint here after every epoch.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint if it exists.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --checkpoint file (without it, one is refused).")
@click.option("--no-test", is_flag=True, help="Skip the final test-set evaluation.")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(
    spec: str,
    overrides: dict[str, Any],
    checkpoint: str | None,
    resume: bool,
    overwrite: bool,
    no_test: bool,
    as_json: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Train SPEC once; print validation and test accuracy, params, MACs and time.

    Defaults are the baseline study's recipe: SGD lr 0.1, momentum 0.9, weight decay 1e-4,
    batch 128, 10 epochs, no augmentation, inputs normalised with mean and std 0.5.
    """
    from dwsearch.run import train_spec

    if (resume or overwrite) and not checkpoint:
        raise click.UsageError(f"--{'resume' if resume else 'overwrite'} needs --checkpoint PATH")
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other: continue the "
                               "checkpoint, or replace it")
    model_spec = load_spec_with(spec, overrides)
    config = build_config(TrainConfig, options)
    data = build_config(DataConfig, options, seed=config.seed)
    record = train_spec(
        model_spec, data, config, test=not no_test, checkpoint=checkpoint, resume=resume,
        overwrite=overwrite, progress=False if quiet else None,
    )
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2))
    else:
        click.echo(record.summary())
    if record.status == "diverged":
        sys.exit(EXIT_DIVERGED)


COMMANDS = [train]
