"""Where data lives: the cache directory, the data directory, and the CIFAR-10 download."""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive

from dwsearch.errors import DataError

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "cache_dir",
    "check_named_dir",
    "data_dir_origin",
    "download_cifar10",
    "resolve_data_dir",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


def cache_dir() -> Path:
    """Directory for dwsearch caches: ``$DWSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/dwsearch``,
    else ``~/.cache/dwsearch``. Not created here."""
    env = os.environ.get("DWSEARCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "dwsearch"
    return Path.home() / ".cache" / "dwsearch"


def data_dir_origin(data_dir: str | Path | None) -> str | None:
    """Who named the data directory: ``"data_dir"`` (the argument, ``--data-dir``),
    ``"DWSEARCH_DATA_DIR"``, or None for the cache's own folder (the one place dwsearch
    creates and downloads into)."""
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise DataError(f"data_dir: expected a folder path, found {data_dir!r}")
    if data_dir is not None and str(data_dir) != "":
        return "data_dir"
    if os.environ.get("DWSEARCH_DATA_DIR"):
        return "DWSEARCH_DATA_DIR"
    return None


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$DWSEARCH_DATA_DIR``, else
    ``cache_dir()/data``. ``~`` is expanded; the directory need not exist."""
    origin = data_dir_origin(data_dir)
    if origin == "data_dir":
        return Path(data_dir).expanduser()  # type: ignore[arg-type]
    if origin == "DWSEARCH_DATA_DIR":
        return Path(os.environ["DWSEARCH_DATA_DIR"]).expanduser()
    return cache_dir() / "data"


def check_named_dir(root: Path, origin: str | None) -> None:
    """A folder the user named must exist and be a folder: it is read, never created (a typo
    must not become an empty folder, or a download target)."""
    if origin is None:
        return
    named = "--data-dir" if origin == "data_dir" else "DWSEARCH_DATA_DIR"
    if not root.exists():
        raise DataError(f"{root}: no such folder (named by {named}); check the path")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (named by {named})")


def download_cifar10(root: Path) -> None:
    """Download and extract the official CIFAR-10 python archive (163 MB) into ``root``
    (dwsearch calls it for ``cache_dir()/data`` only). Called through this module so tests
    can replace it."""
    download_and_extract_archive(CIFAR10_URL, download_root=str(root), md5=CIFAR10_MD5)
