"""Where data lives: the cache directory, the data directory, and the CIFAR-10 download."""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive

__all__ = ["CIFAR10_MD5", "CIFAR10_URL", "cache_dir", "download_cifar10", "resolve_data_dir"]

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


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$DWSEARCH_DATA_DIR``, else
    ``cache_dir()/data``. ``~`` is expanded; the directory need not exist."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("DWSEARCH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return cache_dir() / "data"


def download_cifar10(root: Path) -> None:
    """Download and extract the official CIFAR-10 python archive (163 MB) into ``root``.
    Called through this module so tests can replace it."""
    download_and_extract_archive(CIFAR10_URL, download_root=str(root), md5=CIFAR10_MD5)
