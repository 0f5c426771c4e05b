"""The ``dwsearch`` command line: thin wrappers that parse, call the Python API and print."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import yaml

F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    """Turns user mistakes into a one-line ``Error: ...`` and a non-zero exit, no traceback.

    Set ``DWSEARCH_DEBUG=1`` to see the full traceback instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except (ValueError, OSError, KeyError) as err:
            if os.environ.get("DWSEARCH_DEBUG"):
                raise
            message = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise click.ClickException(message) from None


def _parse_shape(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers like 3,32,32, found {value!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise click.BadParameter(f"expected positive integers like 3,32,32, found {value!r}")
    return shape


def _parse_overrides(
    _ctx: click.Context, _param: click.Parameter, values: Sequence[str]
) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE like layers[5].p=0.1, found {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise click.BadParameter(f"{item!r}: the value is not valid YAML") from None
    return overrides


def spec_options(func: F) -> F:
    """The SPEC argument (file or built-in name) and --set overrides."""
    func = click.option(
        "--set", "overrides", multiple=True, callback=_parse_overrides, metavar="KEY=VALUE",
        help="Override a spec value, e.g. --set 'layers[5].p=0.1' or 'layers[0:3].block=dwsep'.",
    )(func)
    func = click.argument("spec")(func)
    return func


def _load(spec: str, overrides: dict[str, Any]) -> Any:
    from dwsearch.spec import load_spec

    loaded = load_spec(spec)
    return loaded.with_overrides(overrides) if overrides else loaded


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dwsearch")
def main() -> None:
    """Architecture search and ablation of convolution blocks.

    Build networks from layer specs, count their exact costs, train them on CIFAR-10 and
    search over blocks with Optuna.
    """


@main.command()
@click.argument("pattern", default="*")
def blocks(pattern: str) -> None:
    """List registered blocks matching PATTERN (shell wildcards, e.g. 'dw*')."""
    from dwsearch.registry import block_info, list_blocks

    names = list_blocks(pattern)
    if not names:
        raise click.ClickException(
            f"no block matches {pattern!r}; known: {', '.join(list_blocks())}"
        )
    width = max(map(len, names))
    for name in names:
        info = block_info(name)
        origin = "" if info.source == "dwsearch" else f"  [{info.source}]"
        click.echo(f"{name.ljust(width)}  {info.description}{origin}")


@main.command()
def specs() -> None:
    """List the built-in model specs."""
    from dwsearch.zoo import get_spec, list_specs

    for name in list_specs():
        spec = get_spec(name)
        click.echo(f"{name}  ({len(spec.layers)} layers, input {list(spec.input_shape)}, "
                   f"{spec.num_classes} classes, hash {spec.hash()})")


@main.command()
@spec_options
def show(spec: str, overrides: dict[str, Any]) -> None:
    """Print SPEC (a YAML file or built-in name) as YAML, with overrides applied."""
    click.echo(_load(spec, overrides).to_yaml(), nl=False)


@main.command("profile")
@spec_options
@click.option("--input", "input_shape", callback=_parse_shape, metavar="C,H,W",
              help="Input shape; default: the spec's.")
@click.option("--bn", type=click.Choice(["counted", "folded"]), default="counted",
              show_default=True,
              help="Batch norm at 1 MAC per element, or folded into the conv (0).")
@click.option("--latency", is_flag=True, help="Also measure forward latency.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Batch size for --latency.")
@click.option("--device", default="cpu", show_default=True, help="Device for --latency.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for --latency.")
@click.option("--channels-last", is_flag=True, help="channels_last memory format for --latency.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
def profile_cmd(
    spec: str,
    overrides: dict[str, Any],
    input_shape: tuple[int, ...] | None,
    bn: str,
    latency: bool,
    batch_size: int,
    device: str,
    threads: int | None,
    channels_last: bool,
    fmt: str,
) -> None:
    """Per-layer parameters, MACs and activations of SPEC, and totals."""
    from dwsearch.builder import build_model
    from dwsearch.costs import measure_latency, profile

    model_spec = _load(spec, overrides)
    if input_shape is not None:
        model_spec = model_spec.with_overrides({"input": list(input_shape)})
    model = build_model(model_spec)
    result = profile(model, bn=bn)  # type: ignore[arg-type]
    timing = None
    if latency:
        timing = measure_latency(
            model, batch_size, device, threads, channels_last=channels_last
        )
    if fmt == "table":
        click.echo(result.format_table())
        if timing is not None:
            click.echo(timing.summary())
    elif fmt == "csv":
        import csv

        rows = result.to_rows()
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    else:
        payload: dict[str, Any] = {
            "spec": model_spec.name, "hash": result.spec_hash, "params": result.params,
            "macs": result.macs, "flops": result.flops, "activations": result.activations,
            "bn": result.bn, "convention": result.convention, "layers": result.to_rows(),
        }
        if timing is not None:
            payload["latency"] = {
                k: v for k, v in timing.__dict__.items() if k != "samples_ms"
            }
        click.echo(json.dumps(payload, indent=2))


@main.command()
@spec_options
@click.option("--dataset", default="cifar10", show_default=True,
              type=click.Choice(["cifar10", "imagefolder"]))
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Dataset folder; default $DWSEARCH_DATA_DIR, else the cache directory.")
@click.option("--val-size", default=5000, show_default=True, type=click.IntRange(min=0),
              help="Images carved from the training set for validation.")
@click.option("--subset", "train_subset", type=click.IntRange(min=1),
              help="Train on this many images (stratified) for a cheaper run.")
@click.option("--test-subset", type=click.IntRange(min=1),
              help="Evaluate on this many test images (stratified).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=0.1, show_default=True, type=float)
@click.option("--optimizer", default="sgd", show_default=True,
              type=click.Choice(["sgd", "adamw"]))
@click.option("--schedule", default="constant", show_default=True,
              type=click.Choice(["constant", "cosine", "onecycle"]))
@click.option("--label-smoothing", default=0.0, show_default=True, type=float)
@click.option("--augment/--no-augment", default=False, show_default=True,
              help="Random crop (padding 4) and horizontal flip; the seed recipe uses none.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="auto: bf16 autocast where the CPU or GPU supports it, else fp32.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the model.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Write a checkpoint here after every epoch.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint if it exists.")
@click.option("--no-test", is_flag=True, help="Skip the final test-set evaluation.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(
    spec: str,
    overrides: dict[str, Any],
    dataset: str,
    data_dir: str | None,
    val_size: int,
    train_subset: int | None,
    test_subset: int | None,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str,
    schedule: str,
    label_smoothing: float,
    augment: bool,
    precision: str,
    channels_last: bool,
    use_compile: bool,
    device: str,
    threads: int | None,
    seed: int,
    checkpoint: str | None,
    resume: bool,
    no_test: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Train SPEC once; print validation and test accuracy, params, MACs and time.

    Defaults are the seed study's recipe: SGD lr 0.1, momentum 0.9, weight decay 1e-4,
    batch 128, 10 epochs, no augmentation, inputs normalised with mean and std 0.5.
    """
    from dwsearch.experiment import DataConfig, train_spec
    from dwsearch.train import TrainConfig

    if resume and not checkpoint:
        raise click.UsageError("--resume needs --checkpoint PATH")
    model_spec = _load(spec, overrides)
    config = TrainConfig(
        optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=epochs,
        label_smoothing=label_smoothing, schedule=schedule, augment=augment,
        precision=precision, channels_last=channels_last, compile=use_compile, device=device,
        threads=threads, seed=seed,
    )
    data = DataConfig(dataset=dataset, data_dir=data_dir, val_size=val_size,
                      train_subset=train_subset, test_subset=test_subset, seed=seed)
    report = train_spec(
        model_spec, data, config, test=not no_test, checkpoint=checkpoint, resume=resume,
        progress=False if quiet else None,
    )
    if as_json:
        payload = {
            "spec": report.spec.name, "hash": report.spec.hash(), "params": report.params,
            "macs": report.macs, "val_accuracy": report.val_accuracy,
            "test_accuracy": report.test_accuracy, "test_loss": report.test_loss,
            "data": report.data_source, "train_images": report.train_images,
            "load_seconds": report.load_seconds, **report.result.to_dict(),
        }
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        click.echo(report.summary())
    if report.result.status == "diverged":
        sys.exit(3)


@main.command()
@click.argument("specs", nargs=-1)
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="CIFAR-10 folder; default $DWSEARCH_DATA_DIR, else the cache directory.")
@click.option("--steps", default=16, show_default=True, type=click.IntRange(min=1),
              help="Timed training steps per pipeline and spec.")
@click.option("--seed-workers", default=0, show_default=True, type=click.IntRange(min=0),
              help="DataLoader workers of the seed-style pipeline.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "fp32", "bf16", "fp16"]))
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1))
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Measure peak memory in training and inference.")
@click.option("--load-times/--no-load-times", default=True, show_default=True,
              help="Measure cold and warm dataset load times.")
@click.option("--throughput/--no-throughput", default=True, show_default=True,
              help="Measure training images/s of both pipelines.")
@click.option("--accuracy-subset", type=click.IntRange(min=1),
              help="Also train on this many images in fp32 and bf16 and compare accuracy.")
@click.option("--accuracy-epochs", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--accuracy-seeds", default="0", show_default=True,
              help="Comma-separated seeds for the accuracy comparison (spread = noise).")
@click.option("--output", type=click.Path(dir_okay=False),
              help="Write the results as JSON here (a .md path writes the Markdown tables).")
def bench(
    specs: tuple[str, ...],
    data_dir: str | None,
    steps: int,
    seed_workers: int,
    precision: str,
    channels_last: bool,
    device: str,
    threads: int | None,
    memory: bool,
    load_times: bool,
    throughput: bool,
    accuracy_subset: int | None,
    accuracy_epochs: int,
    accuracy_seeds: str,
    output: str | None,
) -> None:
    """Seed-style training pipeline vs dwsearch's, measured in one run (default specs:
    seed_cnn seed_dwsep); prints images/s ratios, data-loading share, load times, memory."""
    from pathlib import Path

    from dwsearch.bench import run_bench
    from dwsearch.train import TrainConfig

    try:
        seeds = tuple(int(s) for s in accuracy_seeds.split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers like 0,1, found {accuracy_seeds!r}",
                                 param_hint="--accuracy-seeds") from None
    config = TrainConfig(precision=precision, channels_last=channels_last, device=device,
                         threads=threads)
    result = run_bench(
        list(specs) or ["seed_cnn", "seed_dwsep"], data_dir=data_dir, steps=steps,
        seed_workers=seed_workers, config=config, memory=memory, load_times=load_times,
        throughput=throughput, accuracy_subset=accuracy_subset,
        accuracy_epochs=accuracy_epochs, accuracy_seeds=seeds,
        log=lambda line: click.echo(line, err=True),
    )
    text = result.to_markdown()
    click.echo(text)
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".md":
            path.write_text(text + "\n")
        else:
            path.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
