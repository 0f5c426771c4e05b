"""Commands about models: ``blocks``, ``specs``, ``show``, ``profile``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from click.core import ParameterSource

from dwsearch.cli._common import load_spec_with, parse_shape, spec_options
from dwsearch.train.config import MAX_THREADS

# Options of ``profile`` that only the latency measurement reads.
LATENCY_ONLY = ("batch_size", "device", "threads", "channels_last")


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
@click.option("--bn", type=click.Choice(["counted", "folded"]), default="counted",
              show_default=True,
              help="Batch norm at 1 MAC per element, or folded into the conv (0).")
@click.option("--latency", is_flag=True, help="Also measure forward latency.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Batch size for --latency.")
@click.option("--device", default="cpu", show_default=True,
              help="Device for --latency: cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS),
              help="CPU threads for --latency.")
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
    """Per-layer parameters, MACs, activations and bytes saved for backward of SPEC, and
    totals."""
    if not latency:
        # These only change the latency measurement; given without it they would be ignored.
        ctx = click.get_current_context()
        given = [f"--{name.replace('_', '-')}" for name in LATENCY_ONLY
                 if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT]
        if given:
            verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
            raise click.UsageError(f"{', '.join(given)} only {verb} with --latency; add "
                                   f"--latency or drop {them}")
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
            "saved_bytes": result.saved_bytes, "saved_precision": result.precision,
            "bn": result.bn, "convention": result.convention, "layers": result.to_rows(),
        }
        if timing is not None:
            payload["latency"] = {
                k: v for k, v in timing.__dict__.items() if k != "samples_ms"
            }
        click.echo(json.dumps(payload, indent=2))


COMMANDS = [blocks, specs, show, profile_cmd]
