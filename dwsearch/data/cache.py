"""The decoded-tensor cache: each source is decoded once, stored atomically under
``cache_dir()/tensors`` and keyed by its files, so a changed file invalidates it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import PIL
import torch
import torchvision

from dwsearch.data.paths import cache_dir
from dwsearch.data.tensors import ImageTensors, tensor_crc
from dwsearch.errors import reason
from dwsearch.files import TEMP_PREFIX, atomic_file

__all__ = ["cached_splits"]

# Bump when the cache payload or decoding changes meaning; old files then simply miss.
# 2: a CRC-32 of every stored tensor, checked on each load.
_CACHE_FORMAT = 2


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _checksums(splits: dict[str, ImageTensors]) -> dict[str, list[int]]:
    return {name: [tensor_crc(s.images), tensor_crc(s.labels)] for name, s in splits.items()}


def _read_cache(path: Path, key: str) -> dict[str, ImageTensors] | None:
    """The splits stored at ``path`` if it is a complete, intact cache file for ``key``, else
    None. Bytes changed inside it (a bad disk, a stray write) fail the stored checksums: the
    file is then decoded again, with a warning, never used."""
    try:
        # mmap skips one full copy; the mapping is private, and cache files are only ever
        # replaced (os.replace) or unlinked, never truncated, so pages cannot vanish under it.
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if payload.get("format") != _CACHE_FORMAT or payload.get("key") != key:
            return None
        classes = tuple(payload["classes"])
        splits = {
            name: ImageTensors(split["images"], split["labels"], classes)
            for name, split in payload["splits"].items()
        }
        stored = payload["checksums"]
    except Exception:
        # Missing, truncated or foreign files all mean the same thing: decode again.
        return None
    if stored != _checksums(splits):
        warnings.warn(f"{path}: the cached tensors fail their checksum (changed or corrupted "
                      f"on disk); decoding the images again", stacklevel=3)
        return None
    return splits


def _write_cache(path: Path, key: str, splits: dict[str, ImageTensors]) -> bool:
    """Atomically store ``splits`` at ``path``; False (with a warning) if it cannot be written."""
    first = next(iter(splits.values()))
    payload = {
        "format": _CACHE_FORMAT,
        "key": key,
        "classes": list(first.classes),
        "splits": {n: {"images": s.images, "labels": s.labels} for n, s in splits.items()},
        "checksums": _checksums(splits),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Readers see either the old file or the complete new one, never a partial write.
        with atomic_file(path) as fh:
            torch.save(payload, fh)
    except (OSError, RuntimeError) as exc:
        # A full disk or read-only cache costs speed, not the run: warn and carry on.
        warnings.warn(f"{path}: could not write the tensor cache ({reason(exc)})", stacklevel=3)
        return False
    return True


def _prune_cache(directory: Path, prefix: str, keep: Path) -> None:
    """Remove superseded cache files of the same source, and temp files left by crashes."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            name = entry.name
            stale_tmp = name.startswith(TEMP_PREFIX) and now - entry.stat().st_mtime > 3600
            if (name.startswith(prefix) and name != keep.name) or stale_tmp:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def cached_splits(
    kind: str,
    source: Path,
    variant: str,
    key_lines: Sequence[str],
    build: Callable[[], dict[str, ImageTensors]],
) -> tuple[dict[str, ImageTensors], bool, Path | None]:
    """Splits from the cache if the key matches, else from ``build()`` (then stored).

    ``variant`` separates caches of one source that must coexist (e.g. two image sizes);
    a new file replaces older ones of the same (kind, source, variant) only.
    """
    versions = (
        f"torch={torch.__version__} torchvision={torchvision.__version__} PIL={PIL.__version__}"
    )
    source_id = _sha(f"{kind}\0{source}\0{variant}")[:12]
    key = _sha(
        "\n".join([f"format={_CACHE_FORMAT}", versions, kind, str(source), variant, *key_lines])
    )
    directory = cache_dir() / "tensors"
    prefix = f"{kind}-{source_id}-"
    path = directory / f"{prefix}{key[:24]}.pt"
    cached = _read_cache(path, key)
    if cached is not None:
        return cached, True, path
    splits = build()
    if not _write_cache(path, key, splits):
        return splits, False, None
    _prune_cache(directory, prefix, path)
    return splits, False, path
