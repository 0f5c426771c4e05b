"""One entry point for every dataset: :func:`load_dataset` gives train, validation and test."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF

from dwsearch.data.cifar10 import load_cifar10_splits
from dwsearch.data.imagefolder import check_image_size, imagefolder_splits
from dwsearch.data.paths import resolve_data_dir
from dwsearch.data.tensors import (
    DataSplits,
    ImageTensors,
    LoadInfo,
    stratified_split,
    stratified_subset,
)
from dwsearch.errors import DataError
from dwsearch.limits import check_memory

__all__ = ["DATASET_NAMES", "load_dataset"]

DATASET_NAMES: tuple[str, ...] = ("cifar10", "imagefolder")


# Bytes of images resized at once; resizing works in float, so chunks are bounded in bytes.
_RESIZE_CHUNK_BYTES = 64 * 2**20


def _resize_all(data: ImageTensors, size: tuple[int, int], what: str) -> ImageTensors:
    if data.image_shape[1:] == size or len(data) == 0:
        return data
    c = data.image_shape[0]
    per_image = c * size[0] * size[1]
    check_memory(len(data) * per_image, f"{what}: {len(data):,} images resized to "
                 f"{size[0]}x{size[1]}", hint="use a smaller input size in the spec")
    _, h, w = data.image_shape
    float_bytes = 4 * c * max(size[0] * size[1], h * w)
    step = max(1, min(4096, _RESIZE_CHUNK_BYTES // float_bytes))
    chunks = [
        TF.resize(data.images[i : i + step], list(size), antialias=True)
        for i in range(0, len(data), step)
    ]
    return ImageTensors(torch.cat(chunks), data.labels, data.classes)


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    val_size: int = 5000,
    train_subset: int | None = None,
    test_subset: int | None = None,
    image_size: tuple[int, int] | None = None,
    seed: int = 0,
    download: bool = True,
    test_fraction: float = 0.2,
) -> DataSplits:
    """Load dataset ``name`` ("cifar10" or "imagefolder") as train/val/test splits.

    ``val_size`` samples are carved from the training set (stratified, seeded) before an
    optional stratified ``train_subset`` is drawn from the remainder, so val never overlaps
    train. The test set is untouched apart from an optional stratified ``test_subset``.
    ``image_size`` (H, W) pixels resizes every image (antialiased). "imagefolder" needs
    ``data_dir`` or ``$DWSEARCH_DATA_DIR``; ``test_fraction`` applies to its flat layout only.
    ``load_info.seconds`` is the wall time of this call.
    """
    start = time.perf_counter()
    size = check_image_size(image_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise DataError(f"seed={seed!r}: must be an integer in 0..2^63-1")
    if name == "cifar10":
        train, test, source, hit, path = load_cifar10_splits(data_dir, download)
        if size is not None and size != (32, 32):
            train, test = _resize_all(train, size, "train"), _resize_all(test, size, "test")
            source += f", resized to {size[0]}x{size[1]}"
    elif name == "imagefolder":
        if (data_dir is None or str(data_dir) == "") and not os.environ.get("DWSEARCH_DATA_DIR"):
            raise DataError(
                "imagefolder: no folder given; pass --data-dir DIR or set DWSEARCH_DATA_DIR=DIR"
            )
        root = resolve_data_dir(data_dir)
        train, test, source, hit, path = imagefolder_splits(root, size, test_fraction, seed)
    else:
        raise DataError(f"dataset {name!r}: unknown; allowed: {', '.join(DATASET_NAMES)}")
    # Every class keeps samples on both sides of each split, and in each subset: one that
    # rounded away would vanish from validation or test without a word.
    train_idx, val_idx = stratified_split(train.labels, val_size, seed, classes=train.classes)
    val, train = train.subset(val_idx), train.subset(train_idx)
    if train_subset is not None:
        train = train.subset(stratified_subset(train.labels, train_subset, seed,
                                               classes=train.classes))
    if test_subset is not None:
        test = test.subset(stratified_subset(test.labels, test_subset, seed,
                                             classes=test.classes,
                                             what=f"test subset size {test_subset!r}"))
    info = LoadInfo(time.perf_counter() - start, hit, path)
    return DataSplits(train, val, test, train.classes, source, name, info)
