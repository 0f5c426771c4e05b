"""What every command shares: the error boundary, options generated from the config
dataclasses (so each default and choice is written once), and spec loading.

Nothing here imports torch; commands import the heavy modules inside their bodies, so that
``dwsearch --help`` answers at once.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

from dwsearch.errors import ConfigError, DwsearchError
from dwsearch.urls import mask_url

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")

ISSUES_URL = "https://github.com/dwsearch/dwsearch/issues"
# Exit statuses: 0 ok, 1 a user error (one line), 2 a usage error (click), 3 a diverged run,
# 70 a bug in dwsearch (EX_SOFTWARE), 130 interrupted.
EXIT_ERROR, EXIT_DIVERGED, EXIT_BUG, EXIT_INTERRUPTED = 1, 3, 70, 130


def one_line(message: object) -> str:
    """A message as one line: the first non-empty line of its text."""
    text = str(message).strip()
    return text.splitlines()[0] if text else repr(message)


class DwsearchGroup(click.Group):
    """The error boundary. A :class:`DwsearchError` (something the user can fix) becomes one
    ``Error: ...`` line and exit 1; any other exception is a bug: its traceback, a line asking
    to report it, exit 70. ``DWSEARCH_DEBUG=1`` shows the full traceback of user errors too,
    with the chained cause that led to them."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (``dwsearch profile ... | head``): stop quietly, as other
            # command-line tools do; point stdout at /dev/null so the exit flush cannot fail.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_ERROR)
        except DwsearchError as err:
            if os.environ.get("DWSEARCH_DEBUG"):
                raise
            # A message may quote a storage URL: never its password.
            raise click.ClickException(mask_url(one_line(err))) from err
        except Exception:
            traceback.print_exc()
            click.echo(
                "dwsearch: internal error (a bug, not something you did wrong). Please report "
                f"it with the command you ran and the traceback above: {ISSUES_URL}",
                err=True,
            )
            sys.exit(EXIT_BUG)


# -- options generated from config dataclasses ----------------------------------------------


def _flag(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("flag", "--" + field.name.replace("_", "-")))


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is_bool) for a resolved field annotation."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _click_type(inner[0])
    if origin is typing.Literal:
        return click.Choice([str(a) for a in args]), False
    if annotation is bool:
        return bool, True
    if annotation in (int, float, str):
        return annotation, False
    raise TypeError(f"no command-line type for {annotation!r}")


def cli_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a config dataclass that appear on the command line."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def config_options(cls: type, *, exclude: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator adding one click option per field of the config dataclass ``cls``: its name
    (``--val-size``, or the field's ``flag`` metadata), type and choices from the annotation,
    default from the field, help from the field's ``help`` metadata. Booleans become
    ``--x/--no-x`` pairs."""
    hints = typing.get_type_hints(cls)

    def decorator(func: F) -> F:
        for field in reversed(cli_fields(cls)):
            if field.name in exclude:
                continue
            kind, is_bool = _click_type(hints[field.name])
            flag = _flag(field)
            default = field.default
            help_text = field.metadata.get("help", "")
            if is_bool:
                names = [f"{flag}/--no-{flag[2:]}", field.name]
                func = click.option(*names, default=default, show_default=True,
                                    help=help_text)(func)
            else:
                func = click.option(flag, field.name, type=kind, default=default,
                                    show_default=default is not None, help=help_text)(func)
        return func

    return decorator


def build_config(cls: type[C], values: Mapping[str, Any], **fixed: Any) -> C:
    """Instantiate ``cls`` from the command's keyword arguments (its own fields only) plus
    ``fixed``; a value out of range is one ``Error: --flag: ...`` line."""
    kwargs = {f.name: values[f.name] for f in cli_fields(cls) if f.name in values}
    kwargs.update(fixed)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        message = str(err)
        for field in cli_fields(cls):
            if message.startswith(f"{field.name}:"):
                message = _flag(field) + message[len(field.name):]
                break
        raise ConfigError(message) from err


# -- specs ----------------------------------------------------------------------------------


def parse_overrides_option(
    _ctx: click.Context, _param: click.Parameter, values: Sequence[str]
) -> dict[str, Any]:
    from dwsearch.errors import SpecError
    from dwsearch.yamlio import load_yaml

    overrides: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE like layers[5].p=0.1, found {item!r}")
        if key in overrides:
            # Two values for one key: which was meant? Refuse rather than keep the last.
            raise click.BadParameter(f"{key} is set twice; keep one --set {key}=...")
        try:
            # The safe reader: aliases, depth and duplicate keys bounded, as in spec files.
            overrides[key] = load_yaml(raw, f"--set {key}", SpecError)
        except SpecError as err:
            raise click.BadParameter(str(err)) from None
    return overrides


def spec_options(func: F) -> F:
    """The SPEC argument (file or built-in name) and --set overrides."""
    func = click.option(
        "--set", "overrides", multiple=True, callback=parse_overrides_option, metavar="KEY=VALUE",
        help="Override a spec value, e.g. --set 'layers[5].p=0.1' or 'layers[0:3].block=dwsep'.",
    )(func)
    func = click.argument("spec")(func)
    return func


def load_spec_with(spec: str, overrides: Mapping[str, Any]) -> Any:
    """The spec a command names, with its --set overrides applied."""
    from dwsearch.zoo import load_spec

    loaded = load_spec(spec)
    return loaded.with_overrides(overrides) if overrides else loaded


def parse_shape(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    """``3,32,32`` or ``3x32x32`` -> (3, 32, 32)."""
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers like 3,32,32, found {value!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise click.BadParameter(f"expected positive integers like 3,32,32, found {value!r}")
    return shape
