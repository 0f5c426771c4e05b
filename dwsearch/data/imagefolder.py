"""Image folders (``root/train/<class>/*`` + ``root/test/<class>/*``, or ``root/<class>/*``),
decoded in parallel threads into one uint8 tensor per split."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file

from dwsearch.data.cache import cached_splits
from dwsearch.data.tensors import ImageTensors, stratified_split
from dwsearch.errors import DataError, reason
from dwsearch.limits import check_memory

__all__ = ["IMAGE_EXTENSIONS", "check_image_size", "load_imagefolder", "load_split_folders"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_JPEG_EXTENSIONS = (".jpg", ".jpeg")
_DECODE_CHUNK = 512
_TV_IO_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"
# torchvision 0.29 warns on every decode that torchcodec will take over; that is not a
# dependency here, and thousands of identical warnings would bury real ones. One filter for
# this one message, set once: warnings.catch_warnings is not thread-safe, and several threads
# (a decoding pool, study workers) load data at once.
warnings.filterwarnings("ignore", message=_TV_IO_DEPRECATION, category=DeprecationWarning)


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
        raise DataError(f"{folder}: cannot list class folders ({reason(exc)})") from None


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
        raise DataError(f"{folder}: no class folders; expected {folder}/<class>/<image files>")
    # One stat per file (~5 µs here) is most of a warm load; threads measured no faster.
    per_class = [_scan_class(os.path.join(folder, c)) for c in classes]
    files: list[str] = []
    labels: list[int] = []
    key_lines: list[str] = []
    extensions: set[str] = set()
    for label, (cls, (found, exts)) in enumerate(zip(classes, per_class, strict=True)):
        if not found:
            raise DataError(
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
    """File bytes as a uint8 tensor, or a DataError naming the file."""
    try:
        return read_file(path)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"{path}: cannot read ({reason(exc)})") from None


def _header_size(data: torch.Tensor) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG file declares in its header, read without decoding;
    None for other formats or a header this does not understand (the decoder then judges)."""
    raw = data.numpy().data  # a memoryview: indexing gives ints, no copy
    n = len(raw)
    if n >= 24 and bytes(raw[:8]) == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if n < 4 or raw[0] != 0xFF or raw[1] != 0xD8:
        return None
    i = 2
    while i + 9 < n:  # walk the JPEG segments to the start-of-frame marker
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (raw[i + 7] << 8) | raw[i + 8], (raw[i + 5] << 8) | raw[i + 6]
        i += 2 + ((raw[i + 2] << 8) | raw[i + 3])
    return None


def _check_declared_size(path: str, data: torch.Tensor) -> None:
    """Refuse, before decoding, an image whose header declares more pixels than the memory
    limit allows decoded (a few hundred bytes of PNG can declare 100,000 x 100,000)."""
    size = _header_size(data)
    if size is not None:
        w, h = size
        check_memory(3 * w * h, f"{path}: decoding this {w}x{h} image",
                     detail="declared by its header; a corrupt file or a decompression bomb?")


def _decode_one(path: str, data: torch.Tensor | None = None) -> torch.Tensor:
    """Decode one file to uint8 3×H×W RGB: torchvision first, PIL for what it cannot read."""
    if data is None:
        data = _read(path)
        _check_declared_size(path, data)
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
        raise DataError(
            f"{path}: cannot decode as an image ({reason(exc)}); "
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
        for i, data in zip(jpegs, datas, strict=True):
            _check_declared_size(files[i], data)
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


def _check_total(files: Sequence[str], image_size: tuple[int, int] | None, where: Path
                 ) -> None:
    """Refuse a split whose decoded tensor would exceed the memory limit, before decoding:
    N images of ``image_size``, or of the first image's declared size (all must match)."""
    if not files:
        return
    if image_size is not None:
        h, w = image_size
    else:
        size = _header_size(_read(files[0]))
        if size is None:
            return
        w, h = size
    # The decoded chunks and the stacked tensor exist together for a moment: twice the size.
    check_memory(2 * len(files) * 3 * h * w, f"{where}: decoding {len(files):,} images of "
                 f"{h}x{w}", hint="resize them to a smaller input (the spec's input sets it)")


def _decode_files(
    files: Sequence[str], image_size: tuple[int, int] | None, where: Path,
    size_hint: str = "pass image_size=(H, W) to resize them all",
) -> torch.Tensor:
    """Decode ``files`` into one uint8 N×3×H×W tensor, in parallel threads (the decoders
    release the GIL). ``size_hint`` ends the message when image sizes differ."""
    chunks = [files[i : i + _DECODE_CHUNK] for i in range(0, len(files), _DECODE_CHUNK)]
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        _check_total(files, image_size, where)
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
                raise DataError(
                    f"{where}: image sizes differ ({ref_path} is {ref_shape[1]}x{ref_shape[2]}, "
                    f"{path} is {shape[1]}x{shape[2]}); {size_hint}"
                )
    return torch.cat([p for p in parts if isinstance(p, torch.Tensor)])


def _format_note(extensions: Iterable[str]) -> str:
    names = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WebP"}
    return "+".join(sorted({names[e] for e in extensions}))


def check_image_size(image_size: Any) -> tuple[int, int] | None:
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
        raise DataError(
            f"image_size={image_size!r}: must be (H, W) with positive integer pixels, or None"
        )
    return int(h), int(w)


def load_split_folders(
    kind: str,
    root: Path,
    split_dirs: dict[str, Path],
    image_size: tuple[int, int] | None,
    expected_classes: tuple[str, ...] | None,
    size_hint: str | None = None,
) -> tuple[dict[str, ImageTensors], bool, Path | None, str]:
    """Scan, check class folders and decode (or take from the cache) each split folder;
    ``size_hint`` ends the message when image sizes differ."""
    listings: dict[str, _Listing] = {}
    for split, folder in split_dirs.items():
        if expected_classes is not None:
            found = _class_dirs(folder)
            if tuple(found) != expected_classes:
                raise DataError(
                    f"{folder}: class folders are [{', '.join(found) or 'none'}]; "
                    f"expected exactly [{', '.join(expected_classes)}]"
                )
        rel = "" if folder == root else f"{folder.relative_to(root).as_posix()}/"
        listings[split] = _scan_split(folder, rel)
    classes = next(iter(listings.values())).classes
    for split, listing in listings.items():
        if listing.classes != classes:
            first = next(iter(split_dirs.values()))
            raise DataError(
                f"{split_dirs[split]}: class folders [{', '.join(listing.classes)}] differ from "
                f"those in {first} [{', '.join(classes)}]; every split needs the same classes"
            )
    if len(classes) < 2:
        raise DataError(
            f"{root}: found {len(classes)} class folder ({', '.join(classes)}); need at least 2"
        )
    key_lines = []
    for split, listing in listings.items():
        key_lines.append(f"split={split}")
        key_lines.extend(listing.key_lines)

    def build() -> dict[str, ImageTensors]:
        out = {}
        for split, listing in listings.items():
            images = (_decode_files(listing.files, image_size, listing.root, size_hint)
                      if size_hint else _decode_files(listing.files, image_size, listing.root))
            labels = torch.tensor(listing.labels, dtype=torch.int64)
            out[split] = ImageTensors(images, labels, classes)
        return out

    splits, hit, path = cached_splits(
        kind, root.resolve(), f"image_size={image_size}", key_lines, build
    )
    note = _format_note(e for listing in listings.values() for e in listing.extensions)
    return splits, hit, path, note


def imagefolder_splits(
    root: str | Path, image_size: Any, test_fraction: float, seed: int
) -> tuple[ImageTensors, ImageTensors, str, bool, Path | None]:
    root = Path(root).expanduser()
    size = check_image_size(image_size)
    if not root.is_dir():
        raise DataError(
            f"{root}: not a directory; expected {root}/train/<class>/ + {root}/test/<class>/ "
            f"or {root}/<class>/"
        )
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    resized = f", resized to {size[0]}x{size[1]}" if size else ""
    if has_train and has_test:
        splits, hit, path, note = load_split_folders(
            "imagefolder", root, {"train": root / "train", "test": root / "test"}, size, None
        )
        source = f"image folders at {root.resolve()} ({note}; train/ and test/ folders{resized})"
        return splits["train"], splits["test"], source, hit, path
    if has_train or has_test:
        present, missing = ("train", "test") if has_train else ("test", "train")
        raise DataError(
            f"{root}: has {present}/ but no {missing}/; use {root}/train/<class>/ + "
            f"{root}/test/<class>/, or {root}/<class>/ alone to carve a test split"
        )
    if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction!r}: must lie strictly between 0 and 1")
    splits, hit, path, note = load_split_folders("imagefolder", root, {"all": root}, size, None)
    everything = splits["all"]
    n_test = round(len(everything) * float(test_fraction))
    if not 1 <= n_test < len(everything):
        raise DataError(
            f"{root}: test_fraction={test_fraction} of {len(everything)} images gives "
            f"{n_test} test images; need at least 1 test and 1 train image"
        )
    train_idx, test_idx = stratified_split(
        everything.labels, n_test, seed, classes=everything.classes,
        what=f"{root}: test_fraction={test_fraction} ({n_test} of {len(everything)} images)",
    )
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
    train, test, _, _, _ = imagefolder_splits(root, image_size, test_fraction, seed)
    return train, test
