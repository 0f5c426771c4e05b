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
