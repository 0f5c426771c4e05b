"""Files written whole or not at all.

A study's checkpoints, the tensor cache and report files are read by other processes (and by
the next run after a crash): each is written to a temporary file beside its target, flushed
to disk, and moved over the target in one step (``os.replace``), so a reader sees the old
file or the new one, never a part. A temporary file left by a crash is named
``.tmp-<name>.<pid>`` so that folders can recognise and remove it. This module imports only
the standard library.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["TEMP_PREFIX", "atomic_file", "write_atomically"]

TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; on leaving the block without an
    exception it is synced and replaces ``path``, otherwise it is removed (Ctrl-C too)."""
    path = Path(path)
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            # fsync before the rename: otherwise a crash can leave a renamed but empty file.
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
