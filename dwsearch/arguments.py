"""Spec values checked against a block's signature before the block is called.

A spec's values come from YAML, ``--set`` or a generator; Python's own leniency would turn
them into silently wrong networks: a quoted ``'false'`` is a true value, ``NaN`` passes every
``x < 0`` range check, ``2.0`` is a stride torch does not take, ``True`` is the integer 1.
Each argument is checked against the annotation of the block's factory (``__init__`` for a
class): ``bool`` takes only true/false, ``int`` only integers (never a boolean), ``float``
integers or finite floats, ``str`` text, ``X | None`` also null, ``Literal`` its choices,
``tuple[int, int]`` / ``list[int]`` lists of those. Annotations this module does not know (a
user's class, ``Callable``...) accept anything, and so do arguments without one; no value
anywhere may be NaN or infinite. This module imports nothing heavy.

The same checks guard dwsearch's own public functions (:func:`checked`): a Python caller who
passes ``"5"`` for an ``int`` or a file name for a ``StudyConfig`` gets one located
:class:`~dwsearch.errors.DwsearchError` line naming the function and the argument, not a
``TypeError`` from deep inside. There classes are checked too (``isinstance``).
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from dwsearch.errors import DwsearchError

__all__ = ["argument_problem", "checked", "describe_found", "factory_annotations",
           "non_finite"]

P = ParamSpec("P")
R = TypeVar("R")

_INT64 = 2**63
_NUMBER_TEXT = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_BOOL_TEXT = {"true", "false", "yes", "no", "on", "off", "y", "n"}


def factory_annotations(factory: Callable[..., Any]) -> dict[str, Any]:
    """Parameter name -> resolved annotation of a block factory; parameters whose annotation
    cannot be resolved (a user's block naming a type it does not import) are left out, so
    they get only the checks that need no annotation."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return dict(typing.get_type_hints(target))
    except Exception:  # any unresolvable annotation: fall back to each raw one
        pass
    out: dict[str, Any] = {}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return out
    for name, param in params.items():
        if param.annotation is not param.empty and not isinstance(param.annotation, str):
            out[name] = param.annotation
    return out


def non_finite(value: Any) -> float | None:
    """The first NaN or infinite float inside ``value`` (lists and mappings searched)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return item
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(value: Any, annotation: Any, classes: bool = False) -> bool | None:
    """True if ``value`` fits ``annotation``, False if not, None if it cannot be told.
    ``classes``: also check plain classes and abstract containers with ``isinstance`` (for
    dwsearch's own functions; a block's annotations may name anything)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return None
    if annotation is None or annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:  # dwsearch's own functions check their ranges themselves
        return _is_int(value) and (classes or -_INT64 < value < _INT64)
    if annotation is float:
        return (_is_int(value) and -_INT64 < value < _INT64) or (
            isinstance(value, float) and math.isfinite(value)
        )
    if annotation is str:
        return isinstance(value, str)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        results = [_fits(value, a, classes) for a in args]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return False
            pairs = list(zip(value, args, strict=True))
        else:
            inner = args[0] if args else Any
            pairs = [(v, inner) for v in value]
        results = [_fits(v, a, classes) for v, a in pairs]
        if any(r is False for r in results):
            return False
        return True if all(r is True for r in results) else None
    if classes:
        if origin is collections.abc.Callable or annotation is collections.abc.Callable:
            return callable(value)
        target = origin if inspect.isclass(origin) else annotation
        if inspect.isclass(target) and not isinstance(target, typing.TypeVar):
            return isinstance(value, target)
    return None


def _describe(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "null"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a finite number"
    if annotation is str:
        return "text"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(parts)
    if origin is tuple and args and args[-1] is not Ellipsis:
        inner = {_describe(a) for a in args}
        if len(inner) == 1:
            noun = next(iter(inner)).removeprefix("an ").removeprefix("a ")
            return f"a list of {len(args)} {noun}s"
        return f"a list of {len(args)} values"
    if origin in (tuple, list, collections.abc.Sequence):
        inner_text = _describe(args[0]).removeprefix("an ").removeprefix("a ") if args else ""
        return f"a list of {inner_text}s" if inner_text else "a list"
    if origin is collections.abc.Callable or annotation is collections.abc.Callable:
        return "a function"
    if origin in (collections.abc.Mapping, dict):
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def describe_found(value: Any) -> str:
    """A wrong value as an error message shows it, with a hint where YAML's reading of it is
    the surprise (``1e-3`` is text to YAML 1.1)."""
    return _found(value)


def _found(value: Any) -> str:
    """How a wrong value is shown, with a hint where YAML's reading of it is the surprise."""
    if isinstance(value, str):
        if value.strip().lower() in _BOOL_TEXT:
            return f"{value!r} (text; write true or false without quotes)"
        if _NUMBER_TEXT.match(value):
            exponent = re.search(r"[eE]([-+]?)", value)
            if exponent is not None and not exponent[1]:  # 1e3, 1.0e3: a sign is needed too
                return (f"{value!r} (text: YAML reads 1e3 and 1.0e3 as text; write a point "
                        f"and a signed exponent, 1.0e+3)")
            if exponent is not None and "." not in value:
                return (f"{value!r} (text: YAML reads 1e-3 as text; write it with a point, "
                        f"1.0e-3)")
            return f"{value!r} (text; write the number without quotes)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, float) and value.is_integer() and abs(value) < _INT64:
        return f"{value!r} (a float; write {int(value)})"
    if _is_int(value) and abs(value) >= _INT64:
        return f"{_short_int(value)} (out of range)"
    return repr(value)


def _short_int(value: int) -> str:
    """A huge integer without its thousand digits: ``10000...000 (401 digits)``."""
    text = str(value)
    digits = len(text.lstrip("-"))
    return text if digits <= 24 else f"{text[:6]}...{text[-3:]} ({digits} digits)"


def argument_problem(name: str, value: Any, annotation: Any | None) -> str | None:
    """None if ``value`` is acceptable for the parameter ``name``, else a message
    ``name: expected ..., found ...`` (no location; the caller adds it)."""
    if annotation is not None and _fits(value, annotation) is False:
        return f"{name}: expected {_describe(annotation)}, found {_found(value)}"
    bad = non_finite(value)
    if bad is not None:
        shown = repr(value) if bad is value else f"{value!r} (contains {bad!r})"
        return f"{name}: expected a finite number, found {shown}"
    return None


def checked(error: type[DwsearchError], *, hints: dict[str, str] | None = None
            ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator for a public function: its arguments are checked against its annotations
    before it runs, and a mismatch is one ``error`` line, ``function: argument: expected
    ..., found ...`` (plus ``hints[argument]``, if any), instead of a TypeError from somewhere
    inside. Annotations are resolved at the first call (forward references are fine)."""

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(func)
        resolved: dict[str, Any] = {}

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not resolved:
                resolved.update(factory_annotations(func) or {"": None})
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as err:
                raise error(f"{func.__name__}: {err}") from None
            for name, value in bound.arguments.items():
                annotation = resolved.get(name)
                if annotation is None or _fits(value, annotation, classes=True) is not False:
                    continue
                hint = f"; {hints[name]}" if hints and name in hints else ""
                raise error(f"{func.__name__}: {name}: expected {_describe(annotation)}, "
                            f"found {_api_found(value)}{hint}")
            return func(*args, **kwargs)

        return wrapper

    return decorator


def _api_found(value: Any) -> str:
    """An argument as an API error shows it: plain values as written, objects by type."""
    if value is None or isinstance(value, (bool, int, float)):
        return _found(value)
    if isinstance(value, str):
        shown = repr(value)
        return shown if len(shown) <= 100 else f"{shown[:97]}..."
    return f"a value of type {type(value).__name__}"
