"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Under pytest-xdist each worker gets its share of the cores for torch's intra-op threads
# (read when torch is first imported; child processes inherit it): N workers each using
# every core oversubscribe the machine. Set before anything imports torch.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

import pytest
from realdata import require_cifar10


@pytest.fixture(scope="session")
def cifar10_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-tensor cache of the real CIFAR-10 copy for the whole session: decoding
    its 60,000 JPEGs takes seconds, and every module that trains on real images needs them.
    Tests of cold loading itself (tests/test_data.py) keep a cache of their own; nothing
    touches ~/.cache."""
    return tmp_path_factory.mktemp("cifar10-cache")


@pytest.fixture()
def real_cifar10(cifar10_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The real CIFAR-10 copy's folder, with the session's tensor cache in the environment
    (so child processes use it too)."""
    path = require_cifar10()
    monkeypatch.setenv("DWSEARCH_CACHE_DIR", str(cifar10_cache))
    yield path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding a slow test first (in their own order; the rest as collected): with
    pytest-xdist's --dist loadfile the longest files start at once instead of leaving one
    worker busy at the end while the others idle."""
    heavy = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in heavy)
