"""The errors a user can cause. Everything else that escapes dwsearch is a bug.

Every error raised because of a value a person typed, wrote in a file or put in a folder is a
:class:`DwsearchError`; its message is one line that says where (file, key path, layer
index or option), what was found and what is allowed. The command line prints exactly these
as ``Error: <message>`` and exits 1; any other exception is shown with its traceback and a
request to report it. Raise them with ``from err`` where another exception was the cause, so
``DWSEARCH_DEBUG=1`` can show where it came from.

The subclasses also derive from ``ValueError`` (as torchvision's user errors are), so code
that catches ``ValueError`` around the Python API keeps working. This module imports nothing.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CompressError",
    "ConfigError",
    "CostError",
    "DataError",
    "DeployError",
    "DwsearchError",
    "RecordError",
    "ReportError",
    "ResourceError",
    "RuntimeNotInstalledError",
    "SpecError",
    "StudyError",
    "UnknownBlockError",
    "first_line",
    "reason",
]


class DwsearchError(Exception):
    """Root of every error a user can cause; the message is one located line."""


class SpecError(DwsearchError, ValueError):
    """A model spec that cannot be parsed or does not fit the network."""


class UnknownBlockError(SpecError):
    """A block name that is not registered; the message lists close matches."""


class ConfigError(DwsearchError, ValueError):
    """A training, data or runtime setting out of range (a device that is not there, ...)."""


class DataError(DwsearchError, ValueError):
    """Data that cannot be found or read, or arguments that do not fit it."""


class CheckpointError(DwsearchError, ValueError):
    """A checkpoint that cannot be read, written or resumed from."""


class CostError(DwsearchError, ValueError):
    """A model whose costs cannot be counted exactly."""


class ResourceError(DwsearchError, ValueError):
    """A request whose estimated memory or size exceeds a limit, refused before allocating."""


class StudyError(DwsearchError, ValueError):
    """A study file, storage or study state that cannot be used."""


class RecordError(DwsearchError, ValueError):
    """A stored run record that cannot be read (corrupt, or written by a newer dwsearch)."""


class ReportError(DwsearchError, ValueError):
    """A report that cannot be made from what the storage holds."""


class DeployError(DwsearchError, ValueError):
    """A model that a deployment runtime cannot lower or run (an unsupported op, a branch
    on tensor values): the message names the layer, its block and the runtime."""


class CompressError(DwsearchError, ValueError):
    """A compression request that cannot be carried out: a teacher that does not fit its
    student, a pruning target that cannot be met, a block that Torch-Pruning cannot trace or
    whose pruned widths no spec can state, or Torch-Pruning not installed."""


class RuntimeNotInstalledError(DeployError):
    """A deployment runtime whose packages are not installed; the message names the extra
    that installs them."""


def reason(exc: BaseException, limit: int = 160) -> str:
    """An exception as one short line (type and first words), for one-line messages."""
    text = " ".join(str(exc).split())[:limit]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): a
    multi-line message from torch or Optuna as the tail of a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
