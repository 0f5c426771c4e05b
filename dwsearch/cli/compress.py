"""``dwsearch compress distill|prune|qat``: the three compression levers, each run on real
data from a spec or a checkpoint, printing the models before and after.

A command group rather than options on ``train``: pruning and quantization-aware training
start from a trained model (a checkpoint) and end in a comparison of two or three models, and
each lever has options of its own; ``train`` stays one spec, one run. The recipe options
(``--epochs``, ``--lr``, ...) are ``train``'s: a spec given as the source is trained with
them first, and fine-tuning uses them (``--finetune-epochs``, ``--qat-epochs`` set its
length; ``--lr`` defaults to 0.01 for fine-tuning a checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import replace
from typing import Any

import click
from click.core import ParameterSource

from dwsearch.cli._common import EXIT_DIVERGED, build_config, config_options
from dwsearch.cli.models import _runtimes
from dwsearch.compress.config import DistillConfig, PruneConfig, PruneTarget, QatConfig
from dwsearch.data.config import DataConfig
from dwsearch.errors import ConfigError
from dwsearch.train.config import TrainConfig

# Learning rate of fine-tuning a trained checkpoint unless --lr says otherwise: the
# baseline recipe's 0.1 is for training from scratch and undoes much of what was learnt.
FINETUNE_LR = 0.01


@click.group("compress")
def compress() -> None:
    """Distil, prune or quantize-aware train a model; print it before and after."""


def _recipe(options: dict[str, Any], *, finetune: bool) -> tuple[TrainConfig, DataConfig]:
    ctx = click.get_current_context()
    config = build_config(TrainConfig, options)
    if finetune and ctx.get_parameter_source("lr") == ParameterSource.DEFAULT:
        config = replace(config, lr=FINETUNE_LR)
    return config, build_config(DataConfig, options, seed=config.seed)


def _common(func: Any) -> Any:
    func = click.option("--runtime", "runtimes", callback=_runtimes, metavar="NAMES",
                        help="Also time the models deployed (executorch, onnxruntime; comma-"
                             "separated), fp32 and int8, 1 thread.")(func)
    func = click.option("--json", "as_json", is_flag=True,
                        help="Print what was measured as JSON.")(func)
    func = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(func)
    func = config_options(TrainConfig)(func)
    func = config_options(DataConfig)(func)
    return func


def _deployed(models: dict[str, Any], runtimes: tuple[str, ...], splits: Any) -> str:
    from dwsearch.compress.compare import deployed

    return deployed(models, runtimes, splits).format()


@compress.command("distill")
@click.argument("spec")
@click.option("--teacher", required=True, type=click.Path(dir_okay=False),
              help="The teacher: a dwsearch checkpoint, or a weights file with --teacher-spec.")
@config_options(DistillConfig)
@click.option("--compare", is_flag=True,
              help="Also train SPEC without the teacher (same seed) to compare.")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Write the distilled student's checkpoint here.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --checkpoint file.")
@click.option("--cost", is_flag=True,
              help="Instead: measure what the teacher costs (training images/s without and "
                   "with it, cached logits and per batch with augmentation), in one run.")
@_common
def distill(spec: str, teacher: str, compare: bool, checkpoint: str | None, overwrite: bool,
            cost: bool, runtimes: tuple[str, ...], as_json: bool, quiet: bool,
            **options: Any) -> None:
    """Train SPEC with knowledge distillation from --teacher; print teacher and student
    (accuracy, params, MACs; with --runtime, deployed latency)."""
    from dwsearch.compress.compare import format_rows, row, val_accuracy
    from dwsearch.compress.distill import distillation_cost, load_teacher
    from dwsearch.run import load_data, model_from_checkpoint, train_spec
    from dwsearch.zoo import load_spec

    if cost and (compare or checkpoint is not None or runtimes):
        raise click.UsageError("--cost measures what the teacher costs and keeps no model; "
                               "drop --compare, --checkpoint and --runtime")
    config, data = _recipe(options, finetune=False)
    distill_config = build_config(DistillConfig, options, teacher=teacher)
    student = load_spec(spec)
    if checkpoint is not None:
        from dwsearch.train.checkpoint import prepare_checkpoint

        prepare_checkpoint(checkpoint, resume=False, overwrite=overwrite)
    loaded = load_teacher(distill_config)  # a bad teacher fails before the data loads
    splits = load_data(student, data)
    progress = False if quiet else None
    if cost:
        measured = distillation_cost(student, distill_config, splits, config)
        click.echo(json.dumps(dataclasses.asdict(measured), indent=2) if as_json
                   else measured.format())
        return
    records = {}
    if compare:
        records["student (no teacher)"] = train_spec(student, splits, config, progress=progress,
                                                     data_config=data)
    records["student (distilled)"] = train_spec(
        student, splits, config, progress=progress, data_config=data, distill=distill_config,
        checkpoint=checkpoint, overwrite=overwrite)
    record = records["student (distilled)"]
    if as_json:
        click.echo(json.dumps({k: v.to_dict() for k, v in records.items()}, indent=2))
    else:
        rows = [row(f"teacher {loaded.name}", loaded.model,
                    val_accuracy=val_accuracy(loaded.model, splits, config))]
        for label, rec in records.items():
            rows.append(replace(row(label, _built(rec.spec)), val_accuracy=rec.val_accuracy,
                                test_accuracy=rec.test_accuracy))
        click.echo(format_rows(rows))
        info = dict(record.compression or {}).get("distill", {})
        click.echo(f"alpha {info['alpha']:g}, temperature {info['temperature']:g}, teacher "
                   f"logits {info['teacher_logits'].replace('_', ' ')}; teacher spec "
                   f"{info['teacher_spec_hash']}, weights {info['teacher_weights']}")
        if runtimes:
            model = model_from_checkpoint(checkpoint) if checkpoint else _built(record.spec)
            click.echo(_deployed({"teacher": loaded.model, "student": model}, runtimes,
                                 splits))
    if any(r.status == "diverged" for r in records.values()):
        sys.exit(EXIT_DIVERGED)


def _built(spec: Any) -> Any:
    from dwsearch.builder import build_model

    return build_model(spec)


@compress.command("prune")
@click.argument("source")
@click.option("--target", required=True, metavar="METRIC=VALUE",
              help="What to keep at most: macs=0.5 (a ratio of the model's), macs=120M, "
                   "params=0.3 or params=2M (counts take K, M, G).")
@click.option("--importance", type=click.Choice(["magnitude", "taylor"]), default="magnitude",
              show_default=True,
              help="Channel ranking: L2 norm of the weights, or |weight x gradient| on "
                   "training images.")
@click.option("--finetune-epochs", type=int, default=1, show_default=True,
              help="Epochs of fine-tuning after pruning (0: none).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the pruned spec (YAML) here.")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Write the fine-tuned pruned model's checkpoint here.")
@click.option("--overwrite", is_flag=True, help="Replace existing --out / --checkpoint files.")
@_common
def prune(source: str, target: str, importance: Any, finetune_epochs: int, out: str | None,
          checkpoint: str | None, overwrite: bool, runtimes: tuple[str, ...], as_json: bool,
          quiet: bool, **options: Any) -> None:
    """Prune SOURCE's channels to --target with Torch-Pruning and fine-tune it. SOURCE is a
    dwsearch checkpoint, or a spec trained first with the recipe options. Prints the model
    before, pruned and fine-tuned (accuracy, params, MACs; with --runtime, deployed
    latency)."""
    from pathlib import Path

    from dwsearch.compress.compare import format_rows, row
    from dwsearch.compress.prune import is_checkpoint, prune_and_finetune

    config, data = _recipe(options, finetune=is_checkpoint(source))
    try:
        prune_config = PruneConfig(PruneTarget.parse(target), importance, finetune_epochs)
    except ConfigError as err:
        field, _, rest = str(err).partition(":")
        raise ConfigError(f"--{field.replace('_', '-')}:{rest}") from err
    if out is not None:
        _check_out(Path(out), overwrite)
    outcome = prune_and_finetune(source, data, config, prune_config,
                                 progress=False if quiet else None, checkpoint=checkpoint,
                                 overwrite=overwrite)
    if out is not None:
        from dwsearch.files import write_atomically

        try:
            write_atomically(out, outcome.pruned.spec.to_yaml())
        except OSError as err:
            raise ConfigError(f"--out {out}: cannot write it ({err.strerror})") from err
    record = outcome.record
    if as_json:
        click.echo(json.dumps({"pruned_spec": outcome.pruned.spec.to_dict(),
                               "record": record.to_dict() if record else None}, indent=2))
    else:
        rows = [row("before", outcome.original, val_accuracy=outcome.val_accuracy_before),
                row("pruned", outcome.pruned.model, val_accuracy=outcome.val_accuracy_pruned)]
        if record is not None:
            rows.append(replace(rows[1], label=f"fine-tuned ({record.train['epochs']} ep)",
                                val_accuracy=record.val_accuracy,
                                test_accuracy=record.test_accuracy))
        click.echo(format_rows(rows))
        click.echo(outcome.pruned.summary().splitlines()[0])
        if out is not None:
            click.echo(f"pruned spec written to {out}")
        if runtimes:
            from dwsearch.run import load_data

            splits = load_data(outcome.original.spec, data)
            click.echo(_deployed({"before": outcome.original, "pruned": outcome.pruned.model},
                                 runtimes, splits))
    if record is not None and record.status == "diverged":
        sys.exit(EXIT_DIVERGED)


def _check_out(path: Any, overwrite: bool) -> None:
    """Refuse an --out that cannot be written, before anything trains."""
    if path.is_dir():
        raise ConfigError(f"--out {path}: a folder; name the file to write")
    if path.exists() and not overwrite:
        raise ConfigError(f"--out {path}: the file exists; name another or add --overwrite")
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: its folder {path.parent} does not exist")


@compress.command("qat")
@click.argument("source")
@config_options(QatConfig)
@click.option("--threads-deploy", "deploy_threads", type=click.IntRange(1, 1024), default=1,
              show_default=True, help="Threads of the int8 programs when timed.")
@click.option("--json", "as_json", is_flag=True, help="Print what was measured as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@config_options(TrainConfig)
@config_options(DataConfig)
def qat(source: str, deploy_threads: int, as_json: bool, quiet: bool, **options: Any) -> None:
    """Quantize SOURCE to int8 after training (ExecuTorch, XNNPACK) and, where that loses more
    than --max-drop of validation accuracy, fine-tune it quantization-aware. SOURCE is a
    dwsearch checkpoint, or a spec trained first with the recipe options. Prints fp32,
    post-training and QAT accuracy (the deployed programs run on every validation image) and
    the int8 programs' latency."""
    from dwsearch.compress.prune import is_checkpoint
    from dwsearch.compress.qat import quantization_aware

    config, data = _recipe(options, finetune=is_checkpoint(source))
    qat_config = build_config(QatConfig, options)
    result = quantization_aware(source, data, config, qat_config, threads=deploy_threads,
                                progress=False if quiet else None)
    if as_json:
        click.echo(json.dumps(result.record(), indent=2))
    else:
        click.echo(result.summary())


COMMANDS = [compress]
