"""Datasets as whole tensors: one split (:class:`ImageTensors`), a dataset's splits
(:class:`DataSplits`) and stratified, seeded splits and subsets of labels."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dwsearch.errors import DataError

__all__ = ["DataSplits", "ImageTensors", "LoadInfo", "stratified_split", "stratified_subset",
           "tensor_crc"]


def tensor_crc(tensor: torch.Tensor) -> int:
    """CRC-32 of a tensor's bytes (0.1 s for all of CIFAR-10's pixels here)."""
    flat = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8)
    return zlib.crc32(flat.numpy().data)


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
            raise DataError(
                f"ImageTensors.images: need a uint8 N×C×H×W tensor, "
                f"found {images.dtype} of shape {tuple(images.shape)}"
            )
        if labels.dtype != torch.int64 or labels.dim() != 1 or len(labels) != len(images):
            raise DataError(
                f"ImageTensors.labels: need int64 of shape ({len(images)},), "
                f"found {labels.dtype} of shape {tuple(labels.shape)}"
            )
        object.__setattr__(self, "classes", tuple(self.classes))
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise DataError(
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

    def fingerprint(self) -> str:
        """A checksum of what is trained and judged on: every split's pixels and labels and
        the class names. Equal for the same images wherever the folder lies."""
        parts = [",".join(self.classes)]
        for part in (self.train, self.val, self.test):
            parts.append(f"{tuple(part.images.shape)}:{tensor_crc(part.images)}:"
                         f"{tensor_crc(part.labels)}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _check_labels(labels: torch.Tensor, where: str) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DataError(
            f"{where}: labels must be a 1-D integer tensor, "
            f"found {labels.dtype} of shape {tuple(labels.shape)}"
        )
    return labels.to(device="cpu", dtype=torch.int64)


def _class_name(classes: Sequence[str] | None, label: int) -> str:
    if classes is not None and 0 <= label < len(classes):
        return repr(classes[label])
    return str(label)


def _stratified_pick(
    labels: torch.Tensor,
    n: int,
    seed: int,
    *,
    what: str,
    min_picked: int,
    min_left: int,
    classes: Sequence[str] | None = None,
) -> np.ndarray:
    """Boolean mask choosing exactly ``n`` samples, each class in proportion to its size, and
    each class with at least ``min_picked`` picked and ``min_left`` left over: a class must not
    vanish from a validation or test split because its share rounded to zero (a test set
    without it reports accuracy on the others alone). Raises DataError naming the class when
    it is too small for that, and ``what`` (e.g. ``val_size=4``) when ``n`` is."""
    # numpy, not torch: torch.unique alone took 0.3 s on 50k labels here, numpy a millisecond.
    lab = labels.numpy()
    total = len(lab)
    present, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    share = counts.astype(np.int64) * n
    quota = share // total
    short = n - int(quota.sum())
    # Largest remainder; a stable sort breaks ties by class id so a seed means one answer.
    order = np.argsort(-(share % total), kind="stable")
    if short:
        quota[order[:short]] += 1
    low = np.minimum(counts, min_picked)
    high = counts - min_left
    small = np.flatnonzero(counts < min_picked + min_left)
    if len(small):
        c = int(small[np.argmin(counts[small])])
        raise DataError(
            f"{what}: class {_class_name(classes, int(present[c]))} has {int(counts[c])} "
            f"sample(s); a stratified split needs at least {min_picked + min_left} of each "
            f"class so that none is missing on either side"
        )
    if n < int(low.sum()) or n > int(high.sum()):
        need = f"at least {int(low.sum())}" if n < int(low.sum()) else f"at most {int(high.sum())}"
        raise DataError(
            f"{what}: cannot hold {min_picked} sample(s) of each of the {len(counts)} classes "
            f"and leave {min_left} of each; use {need}"
        )
    if (quota < low).any() or (quota > high).any():
        # Only classes whose rounded share broke a minimum move, and only by what they must;
        # the difference is taken from (or given to) classes in remainder order.
        quota = np.clip(quota, low, high)
        while int(quota.sum()) < n:
            for c in order:
                if quota[c] < high[c] and int(quota.sum()) < n:
                    quota[c] += 1
        while int(quota.sum()) > n:
            for c in order[::-1]:
                if quota[c] > low[c] and int(quota.sum()) > n:
                    quota[c] -= 1
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
    labels: torch.Tensor,
    val_size: int,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
    what: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample positions into (train, val) int64 index tensors, both sorted ascending.

    ``val`` holds exactly ``val_size`` samples (0 <= val_size < len(labels)), each class in
    proportion to its share (largest-remainder rounding) and, when ``val_size`` > 0, every
    class on both sides: a class too small for that (fewer than 2 samples), or a
    ``val_size`` smaller than the number of classes, is a DataError naming it (``classes``
    gives the names; ``what`` starts the messages, default ``val_size=N``). The draw depends
    only on ``seed``.
    """
    labels = _check_labels(labels, "stratified_split")
    n = len(labels)
    what = what if what is not None else f"val_size={val_size!r}"
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 <= val_size < n:
        raise DataError(
            f"{what}: must be an integer with 0 <= val_size < {n} "
            f"(the number of samples it is carved from)"
        )
    if val_size == 0:
        return torch.arange(n), torch.zeros(0, dtype=torch.int64)
    mask = _stratified_pick(labels, val_size, seed, what=what, min_picked=1, min_left=1,
                            classes=classes)
    return _positions(~mask), _positions(mask)


def stratified_subset(
    labels: torch.Tensor,
    n: int,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
    what: str | None = None,
) -> torch.Tensor:
    """Sorted int64 positions of ``n`` samples (1 <= n <= len(labels)), each class in
    proportion to its share and every class at least once (a DataError when ``n`` is smaller
    than the number of classes); deterministic for a ``seed``."""
    labels = _check_labels(labels, "stratified_subset")
    total = len(labels)
    what = what if what is not None else f"subset size {n!r}"
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
        raise DataError(f"{what}: must be an integer with 1 <= n <= {total}")
    if n == total:
        return torch.arange(total)
    return _positions(_stratified_pick(labels, n, seed, what=what, min_picked=1, min_left=0,
                                       classes=classes))
