"""Commands about models: ``blocks``, ``specs``, ``show``, ``profile``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from click.core import ParameterSource

from dwsearch.cli._common import load_spec_with, parse_shape, spec_options
from dwsearch.convention import BN_MODES
from dwsearch.train.config import MAX_THREADS

# Options of ``profile`` that only eager latency (--latency) reads, that only deployment
# (--runtime) reads, and that either reads.
LATENCY_ONLY = ("device", "channels_last")
RUNTIME_ONLY = ("int8", "calibration", "data_dir")
TIMING = ("batch_size", "threads")
# Images an untrained model's programs are checked and (int8) calibrated on.
PROFILE_IMAGES = 64
RUNTIME_NAMES = ("executorch", "onnxruntime")  # dwsearch.deploy.RUNTIMES, without torch


def _runtimes(_ctx: click.Context, _param: click.Parameter, value: str | None
              ) -> tuple[str, ...]:
    if value is None:
        return ()
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in RUNTIME_NAMES]
    if unknown or not names:
        raise click.BadParameter(f"expected a comma-separated list of "
                                 f"{', '.join(RUNTIME_NAMES)}, found {value!r}")
    return names


@click.command()
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
        info = block_info(name, load=False)
        origin = "" if info.source == "dwsearch" else f"  [{info.source}]"
        aliases = f"  (also: {', '.join(info.aliases)})" if info.aliases else ""
        click.echo(f"{name.ljust(width)}  {info.description}{aliases}{origin}")


@click.command()
def specs() -> None:
    """List the built-in model specs."""
    from dwsearch.zoo import get_spec, list_specs

    for name in list_specs():
        spec = get_spec(name)
        click.echo(f"{name}  ({len(spec.layers)} layers, input {list(spec.input_shape)}, "
                   f"{spec.num_classes} classes, hash {spec.hash()})")


@click.command()
@spec_options
def show(spec: str, overrides: dict[str, Any]) -> None:
    """Print SPEC (a YAML file or built-in name) as YAML, with overrides applied; a spec that
    would not build is an error, not output."""
    from dwsearch.builder import infer_shapes

    model_spec = load_spec_with(spec, overrides)
    infer_shapes(model_spec)  # every value checked, nothing allocated
    click.echo(model_spec.to_yaml(), nl=False)


@click.command("profile")
@spec_options
@click.option("--input", "input_shape", callback=parse_shape, metavar="C,H,W",
              help="Input shape; default: the spec's.")
@click.option("--bn", type=click.Choice(BN_MODES), default=BN_MODES[0],
              show_default=True,
              help="Batch norm at 1 MAC per element, or folded into the conv (0).")
@click.option("--latency", is_flag=True, help="Also measure eager PyTorch forward latency.")
@click.option("--runtime", "runtimes", callback=_runtimes, metavar="NAMES",
              help="Also lower the model to these runtimes (executorch, onnxruntime; comma-"
                   "separated) and time them against eager PyTorch, interleaved.")
@click.option("--int8", is_flag=True, help="--runtime: also int8 programs.")
@click.option("--calibration", type=click.Choice(["random", "train"]), default="random",
              show_default=True,
              help=f"--int8: calibrate on {PROFILE_IMAGES} random images, or on CIFAR-10 "
                   f"training images (never validation or test).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="--calibration train: the CIFAR-10 folder (default: DWSEARCH_DATA_DIR or "
                   "the cache).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Batch size for --latency and --runtime.")
@click.option("--device", default="cpu", show_default=True,
              help="Device for --latency: cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS),
              help="CPU threads for --latency; for --runtime default 1 and all cores.")
@click.option("--channels-last", is_flag=True, help="channels_last memory format for --latency.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
def profile_cmd(
    spec: str,
    overrides: dict[str, Any],
    input_shape: tuple[int, ...] | None,
    bn: str,
    latency: bool,
    runtimes: tuple[str, ...],
    int8: bool,
    calibration: str,
    data_dir: str | None,
    batch_size: int,
    device: str,
    threads: int | None,
    channels_last: bool,
    fmt: str,
) -> None:
    """Per-layer parameters, MACs, activations and bytes saved for backward of SPEC, and
    totals; with --runtime, its latency, size and check on deployment runtimes.

    The model is untrained: latency and program size do not depend on the weights, accuracy
    (and so int8 accuracy) does; train it to measure that."""
    # Options that only change a measurement not asked for would be silently ignored.
    _refuse_unused(LATENCY_ONLY, latency, "--latency")
    _refuse_unused(RUNTIME_ONLY, bool(runtimes), "--runtime")
    _refuse_unused(TIMING, latency or bool(runtimes), "--latency or --runtime")
    from dwsearch.builder import build_model
    from dwsearch.costs import measure_latency, profile

    model_spec = load_spec_with(spec, overrides)
    if input_shape is not None:
        model_spec = model_spec.with_overrides({"input": list(input_shape)})
    model = build_model(model_spec)
    result = profile(model, bn=bn)  # type: ignore[arg-type]
    timing = None
    if latency:
        timing = measure_latency(model, batch_size, device, threads, channels_last=channels_last)
    deployment, said = None, ""
    if runtimes:
        deployment, said = _deploy(model, runtimes, int8, calibration, data_dir, threads,
                                   batch_size)
    if fmt == "table":
        click.echo(result.format_table())
        if timing is not None:
            click.echo(timing.summary())
        if deployment is not None:
            click.echo(f"\ndeployment of the untrained model ({said}); latency and size do "
                       f"not depend on training, accuracy does: train it to measure that")
            click.echo(deployment.format())
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
            "saved_bytes": result.saved_bytes, "saved_precision": result.precision,
            "bn": result.bn, "convention": result.convention, "layers": result.to_rows(),
        }
        if timing is not None:
            payload["latency"] = {
                k: v for k, v in timing.__dict__.items() if k != "samples_ms"
            }
        if deployment is not None:
            from dataclasses import asdict

            payload["deployment"] = {
                "images": said, "weights": "untrained",
                "tables": [asdict(table) for table in deployment.tables],
            }
        click.echo(json.dumps(payload, indent=2))


def _refuse_unused(names: tuple[str, ...], used: bool, needs: str) -> None:
    if used:
        return
    ctx = click.get_current_context()
    given = [f"--{name.replace('_', '-')}" for name in names
             if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT]
    if given:
        verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
        raise click.UsageError(f"{', '.join(given)} only {verb} with {needs}; add "
                               f"{needs.split(' or ')[0]} or drop {them}")


def _deploy(model: Any, runtimes: tuple[str, ...], int8: bool, calibration: str,
            data_dir: str | None, threads: int | None, batch_size: int) -> tuple[Any, str]:
    """Lower ``model`` to ``runtimes`` and time them against eager; returns the deployment
    and a phrase saying which images checked and calibrated the programs."""
    from dwsearch.deploy import measure, random_images, split_images

    shape = model.spec.input_shape
    images = random_images(PROFILE_IMAGES, shape)
    said = f"programs checked on {PROFILE_IMAGES} random images"
    calib = None
    if int8 and calibration == "random":
        calib = random_images(PROFILE_IMAGES, shape, seed=1)
        said += f"; int8 calibrated on {PROFILE_IMAGES} other random images"
    elif int8:
        from dwsearch.data.config import DataConfig
        from dwsearch.run import load_data

        splits = load_data(model.spec, DataConfig(data_dir=data_dir))
        calib = split_images(splits.train, PROFILE_IMAGES)
        said += f"; int8 calibrated on {len(calib)} training images of {splits.source}"
    deployment = measure({model.spec.name or "model": model}, runtimes,
                         ("fp32", "int8") if int8 else ("fp32",), images=images,
                         calibration=calib, calibration_source=said, threads=threads,
                         batch_size=batch_size)
    return deployment, said


COMMANDS = [blocks, specs, show, profile_cmd]
