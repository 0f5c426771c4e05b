"""CIFAR-10 from the official python batches or from image folders, downloaded (checksum
verified) only into a folder meant for it."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from dwsearch.data import paths
from dwsearch.data.cache import cached_splits
from dwsearch.data.imagefolder import load_split_folders
from dwsearch.data.paths import resolve_data_dir
from dwsearch.data.tensors import ImageTensors
from dwsearch.errors import DataError, reason

__all__ = ["CIFAR10_CLASSES", "load_cifar10"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_BATCHES_DIR = "cifar-10-batches-py"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_BATCH_FILES = (*_TRAIN_BATCHES, "test_batch", "batches.meta")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches only: numpy arrays and bytes, never arbitrary callables."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            # latin1 is how numpy arrays pickled by Python 2 (the official files) round-trip.
            raw = _BatchUnpickler(fh, encoding="latin1").load()
        if not isinstance(raw, dict):
            raise TypeError(f"top level is {type(raw).__name__}, not dict")
    except Exception as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({reason(exc)})") from None
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _batch_arrays(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _read_batch(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
            raise ValueError(f"data {data.shape}, labels {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"labels span {labels.min()}..{labels.max()}")
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(
            f"{path}: need 'data' uint8 N×3072 and 'labels' 0..9 of length N ({reason(exc)})"
        ) from None
    # Rows are 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.copy())


def _load_batches(folder: Path) -> dict[str, ImageTensors]:
    meta = _read_batch(folder / "batches.meta")
    names = tuple(
        n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])
    )
    if names != CIFAR10_CLASSES:
        raise DataError(
            f"{folder / 'batches.meta'}: label_names are [{', '.join(names) or 'none'}]; "
            f"expected CIFAR-10's [{', '.join(CIFAR10_CLASSES)}]"
        )
    train = [_batch_arrays(folder / name) for name in _TRAIN_BATCHES]
    test_images, test_labels = _batch_arrays(folder / "test_batch")
    return {
        "train": ImageTensors(
            torch.cat([t[0] for t in train]), torch.cat([t[1] for t in train]), CIFAR10_CLASSES
        ),
        "test": ImageTensors(test_images, test_labels, CIFAR10_CLASSES),
    }


def _batches_folder(data_dir: Path) -> Path | None:
    """The python-batches folder at or under ``data_dir``; None if neither has any batch file."""
    for folder in (data_dir, data_dir / _BATCHES_DIR):
        present = [n for n in _BATCH_FILES if (folder / n).is_file()]
        if present:
            missing = [n for n in _BATCH_FILES if n not in present]
            if missing:
                raise DataError(
                    f"{folder}: incomplete CIFAR-10 python batches, missing {', '.join(missing)}; "
                    f"delete the folder to download again, or point --data-dir at a full copy"
                )
            return folder
    return None




def load_cifar10_splits(
    data_dir: str | Path | None, download: bool
) -> tuple[ImageTensors, ImageTensors, str, bool, Path | None]:
    origin = paths.data_dir_origin(data_dir)
    root = resolve_data_dir(data_dir)
    paths.check_named_dir(root, origin)
    folder = _batches_folder(root)
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if folder is None and has_train and has_test:
        splits, hit, path, note = load_split_folders(
            "cifar10-folders",
            root,
            {"train": root / "train", "test": root / "test"},
            None,
            CIFAR10_CLASSES,
            size_hint="CIFAR-10 images are 32x32",
        )
        for split, tensors in splits.items():
            if tensors.image_shape != (3, 32, 32):
                _, h, w = tensors.image_shape
                raise DataError(f"{root / split}: images are {h}x{w}; CIFAR-10 images are 32x32")
        source = f"CIFAR-10 image folders at {root.resolve()} ({note})"
        if note == "JPEG":
            source += "; a lossy re-encoding, pixels differ slightly from the official batches"
        return splits["train"], splits["test"], source, hit, path
    if folder is None and has_train != has_test:
        present, missing = ("train", "test") if has_train else ("test", "train")
        raise DataError(
            f"{root}: has {present}/ but no {missing}/; CIFAR-10 image folders need both "
            f"{root}/train/<class>/ and {root}/test/<class>/"
        )
    if folder is None:
        looked = f"{root / _BATCHES_DIR}/ and {root}/train/<class>/ + {root}/test/<class>/"
        hint = "point at a copy with --data-dir DIR or DWSEARCH_DATA_DIR=DIR"
        if origin is not None:
            # A folder the user named is read, never downloaded into: a typo there must not
            # start a 163 MB download. The cache's own folder is where downloads go.
            raise DataError(
                f"cifar10: not found at {looked}; dwsearch downloads only into its cache "
                f"({paths.cache_dir() / 'data'}): leave --data-dir and DWSEARCH_DATA_DIR unset "
                f"to use it, or put the official batches or image folders in {root}"
            )
        if not download:
            raise DataError(f"cifar10: not found at {looked} (download disabled); {hint}")
        try:
            paths.download_cifar10(root)
        except Exception as exc:
            raise DataError(
                f"cifar10: not found at {looked}; download failed ({reason(exc)}); {hint}"
            ) from None
        folder = _batches_folder(root)
        if folder is None:
            raise DataError(f"cifar10: download finished but {looked} is still missing; {hint}")
    key_lines = []
    for name in _BATCH_FILES:
        st = (folder / name).stat()
        key_lines.append(f"{name}\0{st.st_size}\0{st.st_mtime_ns}")
    splits, hit, path = cached_splits(
        "cifar10-batches", folder.resolve(), "", key_lines, lambda: _load_batches(folder)
    )
    source = f"CIFAR-10 official python batches at {folder.resolve()}"
    return splits["train"], splits["test"], source, hit, path


def load_cifar10(
    data_dir: str | Path | None = None, *, download: bool = True
) -> tuple[ImageTensors, ImageTensors]:
    """Load CIFAR-10 as (train, test): 50,000 and 10,000 uint8 3×32×32 images.

    Looks in ``resolve_data_dir(data_dir)`` for the official python batches (the folder itself
    or its ``cifar-10-batches-py/``), else for image folders ``train/<class>/`` and
    ``test/<class>/`` named exactly as ``CIFAR10_CLASSES``. A folder named by ``data_dir`` or
    ``$DWSEARCH_DATA_DIR`` must exist and is never downloaded into; with neither set and
    ``download``, the official archive is fetched into ``cache_dir()/data``. Decoded tensors
    are cached.
    """
    train, test, _, _, _ = load_cifar10_splits(data_dir, download)
    return train, test
