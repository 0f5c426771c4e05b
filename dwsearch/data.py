"""Datasets as whole uint8 tensors: CIFAR-10 and users' image folders, a decoded-tensor cache,
stratified splits and an index-slicing batch loader.

Everything a training run sees lives in one ``uint8`` tensor per split (N×C×H×W). Decoding
happens once per source and is cached under ``cache_dir()/tensors``; afterwards a load is a
directory listing plus one ``torch.load``. Batches are index slices of a tensor that sits on the
training device, so there is no per-image Python work in the hot path.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pickle
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATASET_NAMES",
    "IMAGE_EXTENSIONS",
    "BatchLoader",
    "DataSplits",
    "DatasetError",
    "ImageTensors",
    "LoadInfo",
    "cache_dir",
    "download_cifar10",
    "load_cifar10",
    "load_dataset",
    "load_imagefolder",
    "resolve_data_dir",
    "stratified_split",
    "stratified_subset",
]

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
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
DATASET_NAMES: tuple[str, ...] = ("cifar10", "imagefolder")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_BATCHES_DIR = "cifar-10-batches-py"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_BATCH_FILES = (*_TRAIN_BATCHES, "test_batch", "batches.meta")
_JPEG_EXTENSIONS = (".jpg", ".jpeg")
# Bump when the cache payload or decoding changes meaning; old files then simply miss.
_CACHE_FORMAT = 1
_DECODE_CHUNK = 512
_TV_IO_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"


class DatasetError(ValueError):
    """Data that cannot be found or read, or arguments that do not fit it; one line naming where."""


# --------------------------------------------------------------------------- directories


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


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class ImageTensors:
    """One split: ``images`` uint8 N×C×H×W (contiguous, pixel values 0..255), ``labels`` int64 N
    (class ids into ``classes``)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DatasetError(
                f"ImageTensors.images: need a uint8 N×C×H×W tensor, "
                f"found {images.dtype} of shape {tuple(images.shape)}"
            )
        if labels.dtype != torch.int64 or labels.dim() != 1 or len(labels) != len(images):
            raise DatasetError(
                f"ImageTensors.labels: need int64 of shape ({len(images)},), "
                f"found {labels.dtype} of shape {tuple(labels.shape)}"
            )
        object.__setattr__(self, "classes", tuple(self.classes))
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise DatasetError(
                f"ImageTensors.labels: ids must lie in 0..{len(self.classes) - 1} "
                f"({len(self.classes)} classes), found {int(labels.min())}..{int(labels.max())}"
            )
        if not images.is_contiguous():
            object.__setattr__(self, "images", images.contiguous())

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (including any with no samples in this split)."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image, in channels and pixels."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: torch.Tensor) -> ImageTensors:
        """The samples at ``indices`` (int64 positions), in that order, as new tensors."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ImageTensors(self.images[indices], self.labels[indices], self.classes)


@dataclass(frozen=True)
class LoadInfo:
    """How a load went: wall time in seconds, whether the decoded tensors came from the cache,
    and the cache file (None where it could not be written)."""

    seconds: float
    cache_hit: bool
    cache_path: Path | None


@dataclass(frozen=True)
class DataSplits:
    """Train/val/test splits of one dataset. ``val`` has 0 rows when no validation was carved;
    ``source`` says in words where the data came from; ``name`` is the dataset name."""

    train: ImageTensors
    val: ImageTensors
    test: ImageTensors
    classes: tuple[str, ...]
    source: str
    name: str
    load_info: LoadInfo | None = None


# --------------------------------------------------------------------------- splits


def _check_labels(labels: torch.Tensor, where: str) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DatasetError(
            f"{where}: labels must be a 1-D integer tensor, "
            f"found {labels.dtype} of shape {tuple(labels.shape)}"
        )
    return labels.to(device="cpu", dtype=torch.int64)


def _stratified_pick(labels: torch.Tensor, n: int, seed: int) -> np.ndarray:
    """Boolean mask choosing exactly ``n`` samples, each class in proportion to its size."""
    # numpy, not torch: torch.unique alone took 0.3 s on 50k labels here, numpy a millisecond.
    lab = labels.numpy()
    total = len(lab)
    _, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    share = counts.astype(np.int64) * n
    quota = share // total
    short = n - int(quota.sum())
    if short:
        # Largest remainder; a stable sort breaks ties by class id so a seed means one answer.
        order = np.argsort(-(share % total), kind="stable")
        quota[order[:short]] += 1
    rng = np.random.default_rng(seed)
    by_class = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    mask = np.zeros(total, dtype=bool)
    for c, k in enumerate(quota.tolist()):
        members = by_class[bounds[c] : bounds[c + 1]]
        mask[members[rng.permutation(len(members))[:k]]] = True
    return mask


def _positions(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.flatnonzero(mask).astype(np.int64))


def stratified_split(
    labels: torch.Tensor, val_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample positions into (train, val) int64 index tensors, both sorted ascending.

    ``val`` holds exactly ``val_size`` samples (0 <= val_size < len(labels)), each class in
    proportion to its share (largest-remainder rounding); the draw depends only on ``seed``.
    """
    labels = _check_labels(labels, "stratified_split")
    n = len(labels)
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 <= val_size < n:
        raise DatasetError(
            f"val_size={val_size!r}: must be an integer with 0 <= val_size < {n} "
            f"(the number of samples it is carved from)"
        )
    if val_size == 0:
        return torch.arange(n), torch.zeros(0, dtype=torch.int64)
    mask = _stratified_pick(labels, val_size, seed)
    return _positions(~mask), _positions(mask)


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted int64 positions of ``n`` samples (1 <= n <= len(labels)), each class in proportion
    to its share; deterministic for a ``seed``."""
    labels = _check_labels(labels, "stratified_subset")
    total = len(labels)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
        raise DatasetError(f"subset size {n!r}: must be an integer with 1 <= n <= {total}")
    if n == total:
        return torch.arange(total)
    return _positions(_stratified_pick(labels, n, seed))


# --------------------------------------------------------------------------- tensor cache


def _reason(exc: BaseException, limit: int = 160) -> str:
    """An exception as one short line, for messages that must stay on one line."""
    text = " ".join(str(exc).split())[:limit]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _read_cache(path: Path, key: str) -> dict[str, ImageTensors] | None:
    """The splits stored at ``path`` if it is a complete cache file for ``key``, else None."""
    try:
        # mmap skips one full copy; the mapping is private, and cache files are only ever
        # replaced (os.replace) or unlinked, never truncated, so pages cannot vanish under it.
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if payload.get("format") != _CACHE_FORMAT or payload.get("key") != key:
            return None
        classes = tuple(payload["classes"])
        return {
            name: ImageTensors(split["images"], split["labels"], classes)
            for name, split in payload["splits"].items()
        }
    except Exception:
        # Missing, truncated or foreign files all mean the same thing: decode again.
        return None


def _write_cache(path: Path, key: str, splits: dict[str, ImageTensors]) -> bool:
    """Atomically store ``splits`` at ``path``; False (with a warning) if it cannot be written."""
    first = next(iter(splits.values()))
    payload = {
        "format": _CACHE_FORMAT,
        "key": key,
        "classes": list(first.classes),
        "splits": {n: {"images": s.images, "labels": s.labels} for n, s in splits.items()},
    }
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        # Readers see either the old file or the complete new one, never a partial write.
        os.replace(tmp, path)
        tmp = None
    except (OSError, RuntimeError) as exc:
        # A full disk or read-only cache costs speed, not the run: warn and carry on.
        warnings.warn(f"{path}: could not write the tensor cache ({_reason(exc)})", stacklevel=3)
        return False
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return True


def _prune_cache(directory: Path, prefix: str, keep: Path) -> None:
    """Remove superseded cache files of the same source, and temp files left by crashes."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            name = entry.name
            stale_tmp = name.startswith(".tmp-") and now - entry.stat().st_mtime > 3600
            if (name.startswith(prefix) and name != keep.name) or stale_tmp:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _cached_splits(
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


# --------------------------------------------------------------------------- image folders


@dataclass(frozen=True)
class _Listing:
    """Image files of one split folder, sorted by class then file name."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]  # str, not Path: building 60k Path objects costs more than the scan
    labels: tuple[int, ...]
    key_lines: tuple[str, ...]
    extensions: frozenset[str]


def _class_dirs(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot list class folders ({_reason(exc)})") from None


def _scan_class(folder: str) -> tuple[list[tuple[str, int, int]], set[str]]:
    """(name, size in bytes, mtime in ns) of the image files in ``folder``, sorted by name,
    and the set of their lower-case extensions."""
    found = []
    extensions = set()
    with os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            lower = name.lower()
            # Dot files include macOS '._x.jpg' resource forks, which are not images.
            if name.startswith(".") or not lower.endswith(IMAGE_EXTENSIONS):
                continue
            if not entry.is_file():
                continue
            st = entry.stat()
            found.append((name, st.st_size, st.st_mtime_ns))
            extensions.add(lower[lower.rfind(".") :])
    found.sort()
    return found, extensions


def _scan_split(folder: Path, rel: str) -> _Listing:
    """List ``folder/<class>/*`` images with their sizes and mtimes (for the cache key)."""
    classes = _class_dirs(folder)
    if not classes:
        raise DatasetError(f"{folder}: no class folders; expected {folder}/<class>/<image files>")
    # One stat per file (~5 µs here) is most of a warm load; threads measured no faster.
    per_class = [_scan_class(os.path.join(folder, c)) for c in classes]
    files: list[str] = []
    labels: list[int] = []
    key_lines: list[str] = []
    extensions: set[str] = set()
    for label, (cls, (found, exts)) in enumerate(zip(classes, per_class, strict=True)):
        if not found:
            raise DatasetError(
                f"{folder / cls}: no images; allowed extensions: {' '.join(IMAGE_EXTENSIONS)}"
            )
        base = os.path.join(folder, cls, "")
        files.extend(base + name for name, _, _ in found)
        labels.extend([label] * len(found))
        key_lines.extend(f"{rel}{cls}/{name}\0{size}\0{mtime}" for name, size, mtime in found)
        extensions.update(exts)
    return _Listing(
        folder, tuple(classes), tuple(files), tuple(labels), tuple(key_lines), frozenset(extensions)
    )


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _to_uint8_rgb(img: torch.Tensor) -> torch.Tensor:
    if img.dtype != torch.uint8:
        img = TF.to_dtype(img, torch.uint8, scale=True)
    return img


def _read(path: str) -> torch.Tensor:
    """File bytes as a uint8 tensor, or a DatasetError naming the file."""
    try:
        return read_file(path)
    except (OSError, RuntimeError) as exc:
        raise DatasetError(f"{path}: cannot read ({_reason(exc)})") from None


def _decode_one(path: str, data: torch.Tensor | None = None) -> torch.Tensor:
    """Decode one file to uint8 3×H×W RGB: torchvision first, PIL for what it cannot read."""
    if data is None:
        data = _read(path)
    try:
        return _to_uint8_rgb(
            decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        )
    except Exception:
        pass
    try:
        with Image.open(path) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
            return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()
    except Exception as exc:
        raise DatasetError(
            f"{path}: cannot decode as an image ({_reason(exc)}); "
            f"allowed formats: {' '.join(IMAGE_EXTENSIONS)}"
        ) from None


def _resize_group(imgs: list[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
    """Resize images to ``size`` (H, W) with antialiasing, batching those of equal shape."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(imgs):
        if tuple(img.shape[1:]) != size:
            by_shape.setdefault(tuple(img.shape), []).append(i)
    out = list(imgs)
    for idx in by_shape.values():
        batch = torch.stack([imgs[i] for i in idx])
        resized = TF.resize(batch, list(size), antialias=True)
        for j, i in enumerate(idx):
            out[i] = resized[j]
    return out


def _decode_chunk(
    files: Sequence[str], image_size: tuple[int, int] | None
) -> torch.Tensor | list[torch.Tensor]:
    """Decode a chunk of files; a stacked tensor if all came out one size, else the list."""
    imgs: list[torch.Tensor | None] = [None] * len(files)
    jpegs = [i for i, p in enumerate(files) if p.lower().endswith(_JPEG_EXTENSIONS)]
    if jpegs:
        datas = [_read(files[i]) for i in jpegs]
        try:
            decoded = decode_jpeg(datas, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except Exception:
            # One bad (or mislabelled) file fails the whole batch; retry each to name it.
            decoded = [_decode_one(files[i], d) for i, d in zip(jpegs, datas, strict=True)]
        for i, img in zip(jpegs, decoded, strict=True):
            imgs[i] = img
    for i, p in enumerate(files):
        if imgs[i] is None:
            imgs[i] = _decode_one(p)
    done = [img for img in imgs if img is not None]
    if image_size is not None:
        done = _resize_group(done, image_size)
    if len({tuple(t.shape) for t in done}) == 1:
        return torch.stack(done)
    return done


def _decode_files(
    files: Sequence[str], image_size: tuple[int, int] | None, where: Path
) -> torch.Tensor:
    """Decode ``files`` into one uint8 N×3×H×W tensor, in parallel threads (the decoders
    release the GIL)."""
    chunks = [files[i : i + _DECODE_CHUNK] for i in range(0, len(files), _DECODE_CHUNK)]
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=_workers()) as pool:
        # torchvision 0.29 warns on every decode that torchcodec will take over; that is not
        # a dependency here, and thousands of identical warnings would bury real ones.
        warnings.filterwarnings("ignore", _TV_IO_DEPRECATION, DeprecationWarning)
        parts = list(pool.map(lambda c: _decode_chunk(c, image_size), chunks))
    ref_shape, ref_path = None, files[0] if files else where
    for chunk, part in zip(chunks, parts, strict=True):
        shapes = (
            [t.shape for t in part] if isinstance(part, list) else [part.shape[1:]] * len(chunk)
        )
        for path, shape in zip(chunk, shapes, strict=True):
            if ref_shape is None:
                ref_shape, ref_path = tuple(shape), path
            elif tuple(shape) != ref_shape:
                raise DatasetError(
                    f"{where}: image sizes differ ({ref_path} is {ref_shape[1]}x{ref_shape[2]}, "
                    f"{path} is {shape[1]}x{shape[2]}); pass image_size=(H, W) to resize them all"
                )
    return torch.cat([p for p in parts if isinstance(p, torch.Tensor)])


def _format_note(extensions: Iterable[str]) -> str:
    names = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WebP"}
    return "+".join(sorted({names[e] for e in extensions}))


def _check_image_size(image_size: Any) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        h, w = image_size
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DatasetError(
            f"image_size={image_size!r}: must be (H, W) with positive integer pixels, or None"
        )
    return int(h), int(w)


def _load_split_folders(
    kind: str,
    root: Path,
    split_dirs: dict[str, Path],
    image_size: tuple[int, int] | None,
    expected_classes: tuple[str, ...] | None,
) -> tuple[dict[str, ImageTensors], bool, Path | None, str]:
    """Scan, check class folders and decode (or take from the cache) each split folder."""
    listings: dict[str, _Listing] = {}
    for split, folder in split_dirs.items():
        if expected_classes is not None:
            found = _class_dirs(folder)
            if tuple(found) != expected_classes:
                raise DatasetError(
                    f"{folder}: class folders are [{', '.join(found) or 'none'}]; "
                    f"expected exactly [{', '.join(expected_classes)}]"
                )
        rel = "" if folder == root else f"{folder.relative_to(root).as_posix()}/"
        listings[split] = _scan_split(folder, rel)
    classes = next(iter(listings.values())).classes
    for split, listing in listings.items():
        if listing.classes != classes:
            first = next(iter(split_dirs.values()))
            raise DatasetError(
                f"{split_dirs[split]}: class folders [{', '.join(listing.classes)}] differ from "
                f"those in {first} [{', '.join(classes)}]; every split needs the same classes"
            )
    if len(classes) < 2:
        raise DatasetError(
            f"{root}: found {len(classes)} class folder ({', '.join(classes)}); need at least 2"
        )
    key_lines = []
    for split, listing in listings.items():
        key_lines.append(f"split={split}")
        key_lines.extend(listing.key_lines)

    def build() -> dict[str, ImageTensors]:
        out = {}
        for split, listing in listings.items():
            images = _decode_files(listing.files, image_size, listing.root)
            labels = torch.tensor(listing.labels, dtype=torch.int64)
            out[split] = ImageTensors(images, labels, classes)
        return out

    splits, hit, path = _cached_splits(
        kind, root.resolve(), f"image_size={image_size}", key_lines, build
    )
    note = _format_note(e for listing in listings.values() for e in listing.extensions)
    return splits, hit, path, note


def _imagefolder(
    root: str | Path, image_size: Any, test_fraction: float, seed: int
) -> tuple[ImageTensors, ImageTensors, str, bool, Path | None]:
    root = Path(root).expanduser()
    size = _check_image_size(image_size)
    if not root.is_dir():
        raise DatasetError(
            f"{root}: not a directory; expected {root}/train/<class>/ + {root}/test/<class>/ "
            f"or {root}/<class>/"
        )
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    resized = f", resized to {size[0]}x{size[1]}" if size else ""
    if has_train and has_test:
        splits, hit, path, note = _load_split_folders(
            "imagefolder", root, {"train": root / "train", "test": root / "test"}, size, None
        )
        source = f"image folders at {root.resolve()} ({note}; train/ and test/ folders{resized})"
        return splits["train"], splits["test"], source, hit, path
    if has_train or has_test:
        present, missing = ("train", "test") if has_train else ("test", "train")
        raise DatasetError(
            f"{root}: has {present}/ but no {missing}/; use {root}/train/<class>/ + "
            f"{root}/test/<class>/, or {root}/<class>/ alone to carve a test split"
        )
    if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction={test_fraction!r}: must lie strictly between 0 and 1")
    splits, hit, path, note = _load_split_folders("imagefolder", root, {"all": root}, size, None)
    everything = splits["all"]
    n_test = round(len(everything) * float(test_fraction))
    if not 1 <= n_test < len(everything):
        raise DatasetError(
            f"{root}: test_fraction={test_fraction} of {len(everything)} images gives "
            f"{n_test} test images; need at least 1 test and 1 train image"
        )
    train_idx, test_idx = stratified_split(everything.labels, n_test, seed)
    source = (
        f"image folders at {root.resolve()} ({note}; test split carved: {n_test} images, "
        f"stratified, seed {seed}{resized})"
    )
    return everything.subset(train_idx), everything.subset(test_idx), source, hit, path


def load_imagefolder(
    root: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[ImageTensors, ImageTensors]:
    """Load ``root/train/<class>/*`` + ``root/test/<class>/*``, or ``root/<class>/*`` with a
    stratified test split of ``test_fraction`` (0..1, seeded by ``seed``) carved out.

    Class ids follow sorted folder names (at least 2 classes). Images are decoded to RGB uint8
    and resized to ``image_size`` (H, W) pixels when given; without it all images must already
    be one size. Decoded tensors are cached (see ``cache_dir``). Returns (train, test).
    """
    train, test, _, _, _ = _imagefolder(root, image_size, test_fraction, seed)
    return train, test


# --------------------------------------------------------------------------- CIFAR-10


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
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({_reason(exc)})") from None
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
        raise DatasetError(
            f"{path}: need 'data' uint8 N×3072 and 'labels' 0..9 of length N ({_reason(exc)})"
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
        raise DatasetError(
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
                raise DatasetError(
                    f"{folder}: incomplete CIFAR-10 python batches, missing {', '.join(missing)}; "
                    f"delete the folder to download again, or point --data-dir at a full copy"
                )
            return folder
    return None


def download_cifar10(root: Path) -> None:
    """Download and extract the official CIFAR-10 python archive (163 MB) into ``root``.
    Module-level so tests can replace it."""
    download_and_extract_archive(CIFAR10_URL, download_root=str(root), md5=CIFAR10_MD5)


def _cifar10(
    data_dir: str | Path | None, download: bool
) -> tuple[ImageTensors, ImageTensors, str, bool, Path | None]:
    root = resolve_data_dir(data_dir)
    folder = _batches_folder(root)
    if folder is None and (root / "train").is_dir() and (root / "test").is_dir():
        splits, hit, path, note = _load_split_folders(
            "cifar10-folders",
            root,
            {"train": root / "train", "test": root / "test"},
            None,
            CIFAR10_CLASSES,
        )
        for split, tensors in splits.items():
            if tensors.image_shape != (3, 32, 32):
                _, h, w = tensors.image_shape
                raise DatasetError(f"{root / split}: images are {h}x{w}; CIFAR-10 images are 32x32")
        source = f"CIFAR-10 image folders at {root.resolve()} ({note})"
        if note == "JPEG":
            source += "; a lossy re-encoding, pixels differ slightly from the official batches"
        return splits["train"], splits["test"], source, hit, path
    if folder is None:
        looked = f"{root / _BATCHES_DIR}/ and {root}/train/<class>/ + {root}/test/<class>/"
        hint = "point at a copy with --data-dir DIR or DWSEARCH_DATA_DIR=DIR"
        if not download:
            raise DatasetError(f"cifar10: not found at {looked} (download disabled); {hint}")
        try:
            download_cifar10(root)
        except Exception as exc:
            raise DatasetError(
                f"cifar10: not found at {looked}; download failed ({_reason(exc)}); {hint}"
            ) from None
        folder = _batches_folder(root)
        if folder is None:
            raise DatasetError(f"cifar10: download finished but {looked} is still missing; {hint}")
    key_lines = []
    for name in _BATCH_FILES:
        st = (folder / name).stat()
        key_lines.append(f"{name}\0{st.st_size}\0{st.st_mtime_ns}")
    splits, hit, path = _cached_splits(
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
    ``test/<class>/`` named exactly as ``CIFAR10_CLASSES``. With neither there and ``download``,
    fetches the official archive into that directory. Decoded tensors are cached.
    """
    train, test, _, _, _ = _cifar10(data_dir, download)
    return train, test


# --------------------------------------------------------------------------- top level


def _resize_all(data: ImageTensors, size: tuple[int, int]) -> ImageTensors:
    if data.image_shape[1:] == size or len(data) == 0:
        return data
    chunks = [
        TF.resize(data.images[i : i + 4096], list(size), antialias=True)
        for i in range(0, len(data), 4096)
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
    size = _check_image_size(image_size)
    if name == "cifar10":
        train, test, source, hit, path = _cifar10(data_dir, download)
        if size is not None and size != (32, 32):
            train, test = _resize_all(train, size), _resize_all(test, size)
            source += f", resized to {size[0]}x{size[1]}"
    elif name == "imagefolder":
        if (data_dir is None or str(data_dir) == "") and not os.environ.get("DWSEARCH_DATA_DIR"):
            raise DatasetError(
                "imagefolder: no folder given; pass --data-dir DIR or set DWSEARCH_DATA_DIR=DIR"
            )
        root = resolve_data_dir(data_dir)
        train, test, source, hit, path = _imagefolder(root, size, test_fraction, seed)
    else:
        raise DatasetError(f"dataset {name!r}: unknown; allowed: {', '.join(DATASET_NAMES)}")
    train_idx, val_idx = stratified_split(train.labels, val_size, seed)
    val, train = train.subset(val_idx), train.subset(train_idx)
    if train_subset is not None:
        train = train.subset(stratified_subset(train.labels, train_subset, seed))
    if test_subset is not None:
        test = test.subset(stratified_subset(test.labels, test_subset, seed))
    info = LoadInfo(time.perf_counter() - start, hit, path)
    return DataSplits(train, val, test, train.classes, source, name, info)


# --------------------------------------------------------------------------- batches


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.blake2b(f"dwsearch:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class BatchLoader:
    """Batches from a split held whole on ``device`` as uint8; each batch is an index slice.

    Yields (images float32 N×C×H×W, labels int64 N) on ``device``, images normalized as
    ``(x / 255 - mean) / std`` per channel. With the defaults this equals torchvision's
    ``Normalize((0.5,) * 3, (0.5,) * 3)(ToTensor()(img))``. Optional augmentation, drawn per
    sample and applied to the whole batch at once: a random crop back to H×W from the image
    padded by ``crop_padding`` pixels on every side (``pad_mode`` "zeros": black pixels as in
    torchvision's ``RandomCrop(size, padding=p)``; "reflect": mirrored edges), and a
    horizontal flip of each image with probability 1/2. Shuffling and augmentation depend only
    on (``seed``, epoch); call ``set_epoch`` before each epoch to change them.
    """

    def __init__(
        self,
        data: ImageTensors,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        crop_padding: int = 0,
        hflip: bool = False,
        drop_last: bool = False,
        channels_last: bool = False,
        pad_mode: str = "zeros",
    ) -> None:
        c, h, w = data.image_shape
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DatasetError(f"batch_size={batch_size!r}: must be a positive integer")
        if len(mean) != c or len(std) != c:
            raise DatasetError(
                f"mean/std: need {c} values each (one per channel), found {len(mean)}/{len(std)}"
            )
        if any(s == 0 for s in std):
            raise DatasetError(f"std={tuple(std)}: values must be non-zero")
        if not isinstance(crop_padding, int) or not 0 <= crop_padding < min(h, w):
            raise DatasetError(
                f"crop_padding={crop_padding!r}: must be an integer with 0 <= p < {min(h, w)} "
                f"(the image side in pixels)"
            )
        if pad_mode not in ("zeros", "reflect"):
            raise DatasetError(f"pad_mode={pad_mode!r}: allowed: zeros, reflect")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.crop_padding = crop_padding
        self.pad_mode = pad_mode
        self.hflip = hflip
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.classes = data.classes
        # Moved once: every batch afterwards is a gather on the device, no host transfer.
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        std_t = torch.tensor(std, dtype=torch.float64)
        mean_t = torch.tensor(mean, dtype=torch.float64)
        # (x/255 - mean)/std == x * scale + shift, computed in one addcmul per batch.
        self._scale = (1.0 / (255.0 * std_t)).float().view(1, c, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).float().view(1, c, 1, 1).to(self.device)

    @property
    def num_samples(self) -> int:
        """Number of samples in the split (including any a ``drop_last`` batch leaves out)."""
        return int(self.images.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffling and augmentation draws the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _crop_flip(
        self,
        idx: torch.Tensor,
        dy: torch.Tensor | None,
        dx: torch.Tensor | None,
        flip: torch.Tensor | None,
    ) -> torch.Tensor:
        """Gather crops and flips of images ``idx`` in one indexing op (uint8 in, uint8 out)."""
        _, c, h, w = self.images.shape
        dev = self.device
        p = self.crop_padding
        rows = torch.arange(h, device=dev).expand(len(idx), h)
        cols = torch.arange(w, device=dev).expand(len(idx), w)
        if flip is not None:
            cols = torch.where(flip[:, None], (w - 1) - cols, cols)
        if dy is not None and dx is not None:
            rows = rows + (dy - p)[:, None]
            cols = cols + (dx - p)[:, None]
        valid: torch.Tensor | None = None
        if p and self.pad_mode == "reflect":
            rows = (h - 1) - ((h - 1) - rows.abs()).abs()
            cols = (w - 1) - ((w - 1) - cols.abs()).abs()
        elif p:
            row_ok = (rows >= 0) & (rows < h)
            col_ok = (cols >= 0) & (cols < w)
            valid = row_ok[:, None, :, None] & col_ok[:, None, None, :]
            rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
        chan = torch.arange(c, device=dev)[None, :, None, None]
        out = self.images[
            idx[:, None, None, None], chan, rows[:, None, :, None], cols[:, None, None, :]
        ]
        if valid is not None:
            out = out * valid
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_samples
        gen = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        # Draws are per position in the epoch, made up front so batch size does not change them.
        dy = dx = flip = None
        if self.crop_padding:
            span = 2 * self.crop_padding + 1
            dy = torch.randint(0, span, (n,), generator=gen).to(self.device)
            dx = torch.randint(0, span, (n,), generator=gen).to(self.device)
        if self.hflip:
            flip = (torch.rand(n, generator=gen) < 0.5).to(self.device)
        order = order.to(self.device)
        stop = len(self) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            sl = slice(start, min(start + self.batch_size, n))
            idx = order[sl]
            if dy is None and flip is None:
                raw = self.images[idx]
            else:
                raw = self._crop_flip(
                    idx,
                    None if dy is None else dy[sl],
                    None if dx is None else dx[sl],
                    None if flip is None else flip[sl],
                )
            x = torch.addcmul(self._shift, raw.float(), self._scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
