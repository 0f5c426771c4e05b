"""Datasets as whole uint8 tensors: CIFAR-10 and users' image folders, a decoded-tensor cache,
stratified splits and an index-slicing batch loader.

Everything a training run sees lives in one ``uint8`` tensor per split (N×C×H×W). Decoding
happens once per source and is cached under ``cache_dir()/tensors``; afterwards a load is a
directory listing plus one ``torch.load``. Batches are index slices of a tensor that sits on
the training device, so there is no per-image Python work in the hot path.

Modules: ``config`` (DataConfig, no torch), ``paths`` (directories, download), ``tensors``
(containers, splits), ``cache``, ``cifar10``, ``imagefolder``, ``load`` (load_dataset) and
``loader`` (BatchLoader). Names are imported lazily from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dwsearch._lazy import lazy_exports

if TYPE_CHECKING:
    from dwsearch.data.cifar10 import CIFAR10_CLASSES, load_cifar10
    from dwsearch.data.config import DataConfig
    from dwsearch.data.imagefolder import IMAGE_EXTENSIONS, load_imagefolder
    from dwsearch.data.load import DATASET_NAMES, load_dataset
    from dwsearch.data.loader import BatchLoader
    from dwsearch.data.paths import (
        CIFAR10_MD5,
        CIFAR10_URL,
        cache_dir,
        download_cifar10,
        resolve_data_dir,
    )
    from dwsearch.data.tensors import (
        DataSplits,
        ImageTensors,
        LoadInfo,
        stratified_split,
        stratified_subset,
    )
    from dwsearch.errors import DataError

_EXPORTS = {
    "dwsearch.data.cifar10": ("CIFAR10_CLASSES", "load_cifar10"),
    "dwsearch.data.config": ("DataConfig",),
    "dwsearch.data.imagefolder": ("IMAGE_EXTENSIONS", "load_imagefolder"),
    "dwsearch.data.load": ("DATASET_NAMES", "load_dataset"),
    "dwsearch.data.loader": ("BatchLoader",),
    "dwsearch.data.paths": (
        "CIFAR10_MD5",
        "CIFAR10_URL",
        "cache_dir",
        "download_cifar10",
        "resolve_data_dir",
    ),
    "dwsearch.data.tensors": (
        "DataSplits",
        "ImageTensors",
        "LoadInfo",
        "stratified_split",
        "stratified_subset",
    ),
    "dwsearch.errors": ("DataError",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
