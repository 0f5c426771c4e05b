"""Where the tests find the real CIFAR-10 copy: ``DWSEARCH_CIFAR10_DIR``, else
``../shared/datasets/cifar10-jpeg`` beside the repository. Tests that need it skip where it is
absent, except under CI (``CI`` set), where its absence is a failure, not a silent skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cifar10_dir() -> Path | None:
    env = os.environ.get("DWSEARCH_CIFAR10_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "datasets" / "cifar10-jpeg"
    return path if (path / "train").is_dir() and (path / "test").is_dir() else None


def require_cifar10() -> Path:
    """The copy's path; skips the test where it is absent (fails under CI)."""
    path = cifar10_dir()
    if path is None:
        message = ("real CIFAR-10 copy not found (set DWSEARCH_CIFAR10_DIR or provide "
                   "<repo>/../shared/datasets/cifar10-jpeg)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


# For skipif marks: skip only outside CI, so CI fails loudly when the copy is missing.
MISSING_OUTSIDE_CI = cifar10_dir() is None and not os.environ.get("CI")
