"""Tests for dwsearch.data: readers, the tensor cache, splits and the batch loader.

The real-data tests read the JPEG copy of CIFAR-10 under ``shared/datasets`` (located through
``DWSEARCH_CIFAR10_DIR``) and skip where it is absent. Nothing here touches the network or
``~/.cache``: every test gets its own ``DWSEARCH_CACHE_DIR``.
"""

from __future__ import annotations

import os
import pickle
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from realdata import MISSING_OUTSIDE_CI, cifar10_dir
from torchvision import transforms

from dwsearch import data as D
from dwsearch.data import (
    CIFAR10_CLASSES,
    BatchLoader,
    DataError,
    ImageTensors,
    load_cifar10,
    load_dataset,
    load_imagefolder,
    stratified_split,
    stratified_subset,
)
from dwsearch.data import paths as _paths  # noqa: F401  (D.paths for monkeypatching)

REPO = Path(__file__).resolve().parents[1]


REAL_CIFAR = cifar10_dir()
needs_real = pytest.mark.skipif(
    MISSING_OUTSIDE_CI,
    reason="real CIFAR-10 JPEG copy not found (set DWSEARCH_CIFAR10_DIR or provide "
    "<repo>/../shared/datasets/cifar10-jpeg)",
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DWSEARCH_DATA_DIR", raising=False)

    def no_network(root: Path) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(D.paths, "download_cifar10", no_network)


# --------------------------------------------------------------------------- helpers


def _write_batches(folder: Path, per_batch: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny copy of the official python batches; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written: dict[str, np.ndarray] = {}
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        labels[:10] = list(range(10))  # every class present in every batch
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        written[name] = data
        written[name + ":labels"] = np.array(labels)
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_vis": 3072,
    }
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return written


def _save_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _solid(value: int, h: int = 8, w: int = 8) -> np.ndarray:
    """A lossless-friendly image whose red channel encodes ``value`` (0..255)."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = value
    img[..., 1] = 255 - value
    return img


def _small_folders(root: Path, per_class: int = 3) -> None:
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("ant", "bee"):
            for i in range(per_class):
                img = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
                _save_image(root / split / cls / f"{i}.png", img)


def _pil_tensor(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)


def _synthetic(n: int, h: int = 8, w: int = 8, seed: int = 0) -> ImageTensors:
    """Random images whose label is their own index, so batches reveal which sample they are."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=gen)
    return ImageTensors(images, torch.arange(n), tuple(str(i) for i in range(n)))


def _normalized(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - 0.5) / 0.5


# --------------------------------------------------------------------------- directories


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert D.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("DWSEARCH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.cache_dir() == tmp_path / "xdg" / "dwsearch"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.cache_dir() == tmp_path / "home" / ".cache" / "dwsearch"


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert D.resolve_data_dir(None) == tmp_path / "cache" / "data"
    monkeypatch.setenv("DWSEARCH_DATA_DIR", str(tmp_path / "env"))
    assert D.resolve_data_dir(None) == tmp_path / "env"
    assert D.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert D.resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


# --------------------------------------------------------------------------- CIFAR-10 batches


@pytest.mark.parametrize("point_at_batches_folder", [False, True])
def test_official_batches_round_trip(tmp_path: Path, point_at_batches_folder: bool) -> None:
    folder = tmp_path / "data" / "cifar-10-batches-py"
    written = _write_batches(folder)
    data_dir = folder if point_at_batches_folder else tmp_path / "data"
    train, test = load_cifar10(data_dir)

    expected_train = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)])
    assert train.images.shape == (100, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images.reshape(100, -1), torch.from_numpy(expected_train))
    # CHW planes: value (c, y, x) of an image sits at column c*1024 + y*32 + x of its row.
    row = written["data_batch_2"][3]
    assert int(train.images[23, 2, 5, 7]) == int(row[2 * 1024 + 5 * 32 + 7])
    assert int(train.images[23, 0, 31, 0]) == int(row[31 * 32])
    expected_labels = np.concatenate([written[f"data_batch_{i}:labels"] for i in range(1, 6)])
    assert train.labels.tolist() == expected_labels.tolist()
    assert train.labels.dtype == torch.int64
    assert torch.equal(test.images.reshape(20, -1), torch.from_numpy(written["test_batch"]))
    assert test.labels.tolist() == written["test_batch:labels"].tolist()
    assert train.classes == test.classes == CIFAR10_CLASSES


def test_official_batches_are_cached(tmp_path: Path) -> None:
    _write_batches(tmp_path / "cifar-10-batches-py")
    first = load_dataset("cifar10", data_dir=tmp_path, val_size=10)
    second = load_dataset("cifar10", data_dir=tmp_path, val_size=10)
    assert first.load_info is not None and second.load_info is not None
    assert not first.load_info.cache_hit and second.load_info.cache_hit
    assert second.load_info.cache_path is not None
    assert second.load_info.cache_path.parent == tmp_path / "cache" / "tensors"
    assert torch.equal(first.train.images, second.train.images)
    assert "official python batches" in first.source
    # Rewriting a batch (new mtime and content) must invalidate the cache.
    batch_file = tmp_path / "cifar-10-batches-py" / "test_batch"
    stat = batch_file.stat()
    os.utime(batch_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    third = load_dataset("cifar10", data_dir=tmp_path, val_size=10)
    assert third.load_info is not None and not third.load_info.cache_hit


def test_incomplete_or_foreign_batches_are_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_batches(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing data_batch_3"):
        load_cifar10(tmp_path)

    other = tmp_path / "other" / "cifar-10-batches-py"
    _write_batches(other)
    with open(other / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"apple", b"aquarium_fish"]}, fh, protocol=2)
    with pytest.raises(DataError, match=r"label_names are \[apple, aquarium_fish\]"):
        load_cifar10(other)


def test_batches_pickle_cannot_run_code(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_batches(folder)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo owned",))

    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil()}, fh, protocol=2)
    with pytest.raises(DataError, match=r"test_batch: not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)


# --------------------------------------------------------------------------- missing / wrong data


def test_missing_cifar_reports_paths_and_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def offline(root: Path) -> None:
        calls.append(root)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(D.paths, "download_cifar10", offline)
    # A folder the user named is never created and never a download target: a typo would
    # otherwise start a 163 MB download into a new folder.
    where = tmp_path / "nothing-here"
    with pytest.raises(DataError, match=r"nothing-here: no such folder \(named by --data-dir\)"):
        load_dataset("cifar10", data_dir=where)
    assert not where.exists() and calls == []
    monkeypatch.setenv("DWSEARCH_DATA_DIR", str(where))
    with pytest.raises(DataError, match=r"no such folder \(named by DWSEARCH_DATA_DIR\)"):
        load_dataset("cifar10")
    monkeypatch.delenv("DWSEARCH_DATA_DIR")
    where.mkdir()
    with pytest.raises(DataError, match="downloads only into its cache") as info:
        load_dataset("cifar10", data_dir=where)
    assert str(tmp_path / "cache" / "data") in str(info.value) and calls == []

    # The cache's own folder is where a download goes.
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    assert "\n" not in message
    assert "DWSEARCH_DATA_DIR" in message and "--data-dir" in message
    assert "download failed" in message and "name resolution" in message
    assert calls == [tmp_path / "cache" / "data"]

    with pytest.raises(DataError, match="download disabled") as info:
        load_cifar10(download=False)
    assert "DWSEARCH_DATA_DIR" in str(info.value) and len(calls) == 1


def test_cifar_wrong_class_folders(tmp_path: Path) -> None:
    _small_folders(tmp_path)
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "train") in message
    assert "[ant, bee]" in message and "airplane, automobile" in message


def test_unknown_dataset_and_missing_folder() -> None:
    with pytest.raises(DataError, match=r"'mnist': unknown; allowed: cifar10, imagefolder"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="DWSEARCH_DATA_DIR"):
        load_dataset("imagefolder")


# --------------------------------------------------------------------------- image folders


def test_imagefolder_resizes_mixed_sizes_and_formats(tmp_path: Path) -> None:
    sizes = {"cat": (10, 12), "dog": (16, 16), "eel": (7, 9)}
    exts = {"cat": ".png", "dog": ".JPG", "eel": ".bmp"}
    for split, count in (("train", 4), ("test", 2)):
        for cls, (h, w) in sizes.items():
            for i in range(count):
                _save_image(tmp_path / split / cls / f"{i}{exts[cls]}", _solid(40 * i, h, w))
        _save_image(tmp_path / split / "eel" / "extra.webp", _solid(9, 7, 9))
        (tmp_path / split / "cat" / "notes.txt").write_text("not an image")
        _save_image(tmp_path / split / "cat" / ".hidden.png", _solid(1, 3, 3))

    with pytest.raises(DataError, match=r"image sizes differ.*pass image_size"):
        load_imagefolder(tmp_path)

    train, test = load_imagefolder(tmp_path, image_size=(12, 10))
    assert train.classes == ("cat", "dog", "eel")
    assert train.images.shape == (13, 3, 12, 10) and test.images.shape == (7, 3, 12, 10)
    assert train.images.is_contiguous()
    assert torch.bincount(train.labels).tolist() == [4, 4, 5]
    assert torch.bincount(test.labels).tolist() == [2, 2, 3]
    # Solid images stay solid through an antialiased resize; the red channel tells which one.
    assert int(train.images[1, 0, 6, 5]) == 40 and int(train.images[1, 1, 0, 0]) == 215

    splits = load_dataset("imagefolder", data_dir=tmp_path, val_size=3, image_size=(12, 10))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 3, 7)
    assert "resized to 12x10" in splits.source and splits.name == "imagefolder"


def test_imagefolder_flat_layout_carves_stratified_test(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    counts = {"a": 10, "b": 20, "c": 30}
    value = 0
    for cls, n in counts.items():
        for i in range(n):
            _save_image(root / cls / f"{i:03d}.png", _solid(value))
            value += 1
    train, test = load_imagefolder(root, test_fraction=0.2, seed=3)
    assert len(train) == 48 and len(test) == 12
    assert torch.bincount(test.labels).tolist() == [2, 4, 6]
    ids_train = set(train.images[:, 0, 0, 0].tolist())
    ids_test = set(test.images[:, 0, 0, 0].tolist())
    assert not ids_train & ids_test and ids_train | ids_test == set(range(60))
    again = load_imagefolder(root, test_fraction=0.2, seed=3)[1]
    other = load_imagefolder(root, test_fraction=0.2, seed=4)[1]
    assert torch.equal(again.images, test.images)
    assert not torch.equal(other.images, test.images)


def test_imagefolder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        load_imagefolder(tmp_path / "absent")
    _save_image(tmp_path / "one" / "train" / "x" / "0.png", _solid(1))
    with pytest.raises(DataError, match="has train/ but no test/"):
        load_imagefolder(tmp_path / "one")
    _save_image(tmp_path / "single" / "only" / "0.png", _solid(1))
    _save_image(tmp_path / "single" / "only" / "1.png", _solid(2))
    with pytest.raises(DataError, match="need at least 2"):
        load_imagefolder(tmp_path / "single")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    _save_image(tmp_path / "empty" / "b" / "0.png", _solid(1))
    with pytest.raises(DataError, match=r"empty/a: no images; allowed extensions"):
        load_imagefolder(tmp_path / "empty")
    bad = tmp_path / "bad"
    _small_folders(bad)
    (bad / "train" / "ant" / "broken.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: cannot decode"):
        load_imagefolder(bad)
    with pytest.raises(DataError, match="image_size"):
        load_imagefolder(tmp_path / "single", image_size=(0, 4))


def test_cache_hits_and_invalidates(tmp_path: Path) -> None:
    root = tmp_path / "folders"
    _small_folders(root)
    tensors_dir = tmp_path / "cache" / "tensors"

    def load() -> tuple[D.DataSplits, D.LoadInfo]:
        splits = load_dataset("imagefolder", data_dir=root, val_size=0)
        assert splits.load_info is not None
        return splits, splits.load_info

    first, info = load()
    assert not info.cache_hit and info.cache_path is not None and info.cache_path.is_file()
    second, info = load()
    assert info.cache_hit
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)

    # Same size, new content and mtime: only the mtime can tell, and it must.
    target = root / "train" / "ant" / "0.png"
    stat = target.stat()
    _save_image(target, np.full((6, 5, 3), 7, dtype=np.uint8))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    third, info = load()
    assert not info.cache_hit
    assert int(third.train.images[0].max()) == 7
    assert load()[1].cache_hit

    _save_image(root / "test" / "bee" / "new.png", np.zeros((6, 5, 3), dtype=np.uint8))
    fourth, info = load()
    assert not info.cache_hit and len(fourth.test) == 7
    (root / "test" / "bee" / "new.png").unlink()
    fifth, info = load()
    assert not info.cache_hit and len(fifth.test) == 6
    # Superseded files of the same source are pruned, so the cache does not grow without bound.
    assert [p.name for p in tensors_dir.iterdir()] == [info.cache_path.name]  # type: ignore[union-attr]

    # A corrupt cache file is ignored and rebuilt (written beside and swapped in, the way
    # corruption could appear without truncating pages another load has mapped).
    assert info.cache_path is not None
    garbage = tensors_dir / "garbage"
    garbage.write_bytes(b"\x00not a torch file")
    os.replace(garbage, info.cache_path)
    sixth, info = load()
    assert not info.cache_hit and torch.equal(sixth.test.images, fifth.test.images)
    assert load()[1].cache_hit

    # Another image size is another cache file, and the two do not evict each other.
    small = load_dataset("imagefolder", data_dir=root, val_size=0, image_size=(3, 3))
    assert small.load_info is not None and not small.load_info.cache_hit
    assert load()[1].cache_hit
    small = load_dataset("imagefolder", data_dir=root, val_size=0, image_size=(3, 3))
    assert small.load_info is not None and small.load_info.cache_hit


# --------------------------------------------------------------------------- real CIFAR-10 copy


@pytest.fixture(scope="module")
def real_cifar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[D.DataSplits, ...]]:
    assert REAL_CIFAR is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DWSEARCH_CACHE_DIR", str(tmp_path_factory.mktemp("real-cache")))
        cold = load_dataset("cifar10", data_dir=REAL_CIFAR, val_size=0)
        warm = load_dataset("cifar10", data_dir=REAL_CIFAR, val_size=0)
        yield cold, warm


@needs_real
def test_real_cifar_full_load(real_cifar: tuple[D.DataSplits, ...]) -> None:
    cold, warm = real_cifar
    assert REAL_CIFAR is not None
    assert cold.classes == CIFAR10_CLASSES
    assert cold.train.images.shape == (50_000, 3, 32, 32)
    assert cold.test.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(cold.train.labels).tolist() == [5000] * 10
    assert torch.bincount(cold.test.labels).tolist() == [1000] * 10
    assert "JPEG" in cold.source and str(REAL_CIFAR.resolve()) in cold.source
    # Labels follow folder names: sample k of class c is the k-th file of folder c, sorted.
    for label, cls in enumerate(CIFAR10_CLASSES):
        names = sorted(os.listdir(REAL_CIFAR / "test" / cls))
        for k in (0, 777):
            index = label * 1000 + k
            assert int(cold.test.labels[index]) == label
            expected = _pil_tensor(REAL_CIFAR / "test" / cls / names[k])
            assert torch.equal(cold.test.images[index], expected)
    assert cold.load_info is not None and warm.load_info is not None
    assert not cold.load_info.cache_hit and warm.load_info.cache_hit
    assert torch.equal(cold.train.images, warm.train.images)
    assert torch.equal(cold.train.labels, warm.train.labels)
    assert torch.equal(cold.test.images, warm.test.images)


@needs_real
def test_real_cifar_normalization_matches_torchvision(
    real_cifar: tuple[D.DataSplits, ...],
) -> None:
    assert REAL_CIFAR is not None
    test = real_cifar[1].test
    loader = BatchLoader(test, batch_size=64)
    x, y = next(iter(loader))
    reference = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)]
    )
    names = sorted(os.listdir(REAL_CIFAR / "test" / "airplane"))[:64]
    for i, name in enumerate(names):
        with Image.open(REAL_CIFAR / "test" / "airplane" / name) as im:
            expected = reference(im.convert("RGB"))
        torch.testing.assert_close(x[i], expected, atol=1e-6, rtol=0)
    assert y.tolist() == [0] * 64


@needs_real
def test_real_cifar_splits_do_not_overlap(
    real_cifar: tuple[D.DataSplits, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert REAL_CIFAR is not None
    info = real_cifar[1].load_info
    assert info is not None and info.cache_path is not None
    monkeypatch.setenv("DWSEARCH_CACHE_DIR", str(info.cache_path.parent.parent))
    splits = load_dataset(
        "cifar10", data_dir=REAL_CIFAR, val_size=5000, train_subset=1000, test_subset=500
    )
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1000, 5000, 500)
    assert torch.bincount(splits.val.labels).tolist() == [500] * 10
    assert torch.bincount(splits.train.labels).tolist() == [100] * 10
    assert torch.bincount(splits.test.labels).tolist() == [50] * 10
    assert splits.load_info is not None and splits.load_info.cache_hit
    val_rows = {bytes(r) for r in splits.val.images.reshape(5000, -1).numpy()}
    train_rows = {bytes(r) for r in splits.train.images.reshape(1000, -1).numpy()}
    assert not val_rows & train_rows


def test_normalization_matches_torchvision_on_written_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for split in ("train", "test"):
        for cls in ("x", "y"):
            for i in range(4):
                _save_image(
                    tmp_path / split / cls / f"{i}.png",
                    rng.integers(0, 256, (9, 11, 3), dtype=np.uint8),
                )
    train, _ = load_imagefolder(tmp_path)
    x, _ = next(iter(BatchLoader(train, batch_size=8)))
    reference = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)]
    )
    for i, path in enumerate(sorted((tmp_path / "train").glob("*/*.png"))):
        with Image.open(path) as im:
            torch.testing.assert_close(x[i], reference(im.convert("RGB")), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- splits


def test_stratified_split_counts_disjoint_deterministic() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, val = stratified_split(labels, 10, seed=0)
    assert len(val) == 10 and len(train) == 90
    assert torch.bincount(labels[val]).tolist() == [5, 3, 2]
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    assert torch.equal(val, torch.sort(val).values) and torch.equal(train, torch.sort(train).values)
    again_train, again_val = stratified_split(labels, 10, seed=0)
    assert torch.equal(again_val, val) and torch.equal(again_train, train)
    assert not torch.equal(stratified_split(labels, 10, seed=1)[1], val)
    # Largest-remainder rounding still gives the exact total.
    _, odd = stratified_split(labels, 7, seed=0)
    assert len(odd) == 7 and torch.bincount(labels[odd], minlength=3).tolist() == [4, 2, 1]
    assert len(stratified_split(labels, 0, seed=0)[1]) == 0


def test_stratified_subset_and_size_errors() -> None:
    labels = torch.tensor([0, 1] * 20)
    sub = stratified_subset(labels, 10, seed=2)
    assert len(sub) == 10 and torch.bincount(labels[sub]).tolist() == [5, 5]
    assert torch.equal(stratified_subset(labels, 40, seed=2), torch.arange(40))
    with pytest.raises(DataError, match=r"val_size=40: .*< 40"):
        stratified_split(labels, 40, seed=0)
    with pytest.raises(DataError, match="val_size=-1"):
        stratified_split(labels, -1, seed=0)
    with pytest.raises(DataError, match=r"subset size 41"):
        stratified_subset(labels, 41, seed=0)
    with pytest.raises(DataError, match="1-D integer"):
        stratified_split(labels.float(), 3, seed=0)


def test_load_dataset_val_before_train_subset(tmp_path: Path) -> None:
    _write_batches(tmp_path / "cifar-10-batches-py", per_batch=40)
    splits = load_dataset(
        "cifar10", data_dir=tmp_path, val_size=50, train_subset=60, test_subset=20
    )
    assert (len(splits.train), len(splits.val), len(splits.test)) == (60, 50, 20)
    val_rows = {bytes(r) for r in splits.val.images.reshape(50, -1).numpy()}
    train_rows = {bytes(r) for r in splits.train.images.reshape(60, -1).numpy()}
    assert len(val_rows) == 50 and not val_rows & train_rows
    again = load_dataset("cifar10", data_dir=tmp_path, val_size=50, train_subset=60, test_subset=20)
    assert torch.equal(again.val.images, splits.val.images)
    assert torch.equal(again.train.images, splits.train.images)
    empty = load_dataset("cifar10", data_dir=tmp_path, val_size=0)
    assert empty.val.images.shape == (0, 3, 32, 32) and len(empty.train) == 200
    with pytest.raises(DataError, match=r"val_size=200"):
        load_dataset("cifar10", data_dir=tmp_path, val_size=200)
    resized = load_dataset("cifar10", data_dir=tmp_path, val_size=0, image_size=(40, 40))
    assert resized.train.images.shape == (200, 3, 40, 40)


# --------------------------------------------------------------------------- BatchLoader


def test_batch_loader_shapes_and_coverage() -> None:
    data = _synthetic(103)
    loader = BatchLoader(data, batch_size=16, shuffle=True, seed=1)
    assert len(loader) == 7 and loader.num_samples == 103 and loader.batch_size == 16
    assert loader.device == torch.device("cpu")
    seen: list[int] = []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (3, 8, 8) and x.shape[0] == y.shape[0] <= 16
        torch.testing.assert_close(x, _normalized(data.images[y]), atol=1e-6, rtol=0)
        seen.extend(y.tolist())
    assert sorted(seen) == list(range(103)) and seen != list(range(103))

    dropped = BatchLoader(data, batch_size=16, shuffle=True, drop_last=True)
    assert len(dropped) == 6
    sizes = [len(y) for _, y in dropped]
    assert sizes == [16] * 6
    ordered = BatchLoader(data, batch_size=50)
    assert torch.cat([y for _, y in ordered]).tolist() == list(range(103))
    empty = BatchLoader(data.subset(torch.zeros(0, dtype=torch.int64)), batch_size=4)
    assert len(empty) == 0 and list(empty) == []


def test_batch_loader_is_a_function_of_seed_and_epoch() -> None:
    data = _synthetic(64)

    def order(seed: int, epoch: int) -> list[int]:
        loader = BatchLoader(
            data, batch_size=10, shuffle=True, seed=seed, crop_padding=2, hflip=True
        )
        loader.set_epoch(epoch)
        return torch.cat([y for _, y in loader]).tolist()

    def pixels(seed: int, epoch: int) -> torch.Tensor:
        loader = BatchLoader(
            data, batch_size=10, shuffle=True, seed=seed, crop_padding=2, hflip=True
        )
        loader.set_epoch(epoch)
        return torch.cat([x for x, _ in loader])

    assert order(0, 3) == order(0, 3)
    assert torch.equal(pixels(0, 3), pixels(0, 3))
    assert order(0, 3) != order(0, 4)
    assert order(0, 3) != order(1, 3)
    loader = BatchLoader(data, batch_size=10, shuffle=True)
    first = torch.cat([y for _, y in loader])
    assert torch.equal(first, torch.cat([y for _, y in loader]))  # re-iterating repeats


def _matches_some_crop(out: torch.Tensor, img: torch.Tensor, pad: int, mode: str) -> bool:
    padded = F.pad(img[None].float(), (pad,) * 4, mode="constant" if mode == "zeros" else mode)[0]
    h, w = img.shape[1:]
    for candidate in (padded, padded.flip(2)):
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                if torch.equal(candidate[:, dy : dy + h, dx : dx + w], out):
                    return True
    return False


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_batch_loader_crop_and_flip(mode: str) -> None:
    data = _synthetic(40, h=10, w=12)
    loader = BatchLoader(
        data, batch_size=16, shuffle=True, crop_padding=3, hflip=True, pad_mode=mode, seed=4
    )
    changed = 0
    for x, y in loader:
        assert x.shape[1:] == (3, 10, 12)
        raw = torch.round((x * 0.5 + 0.5) * 255)  # back to uint8 pixel values
        for out, label in zip(raw, y.tolist(), strict=True):
            original = data.images[label].float()
            assert _matches_some_crop(out, original, 3, mode)
            changed += not torch.equal(out, original)
    assert changed > 20

    flips = BatchLoader(data, batch_size=40, hflip=True)
    x, y = next(iter(flips))
    raw = torch.round((x * 0.5 + 0.5) * 255)
    flipped = [torch.equal(raw[i], data.images[i].float().flip(2)) for i in range(40)]
    same = [torch.equal(raw[i], data.images[i].float()) for i in range(40)]
    assert all(a or b for a, b in zip(flipped, same, strict=True))
    assert 5 < sum(flipped) < 35

    plain = BatchLoader(data, batch_size=40, shuffle=True, crop_padding=0, hflip=False)
    for x, y in plain:
        torch.testing.assert_close(x, _normalized(data.images[y]), atol=1e-6, rtol=0)


def test_batch_loader_channels_last_and_stats() -> None:
    data = _synthetic(20)
    x_cl, _ = next(iter(BatchLoader(data, batch_size=20, channels_last=True)))
    x, _ = next(iter(BatchLoader(data, batch_size=20)))
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x_cl, x)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    x, y = next(iter(BatchLoader(data, batch_size=20, mean=mean, std=std)))
    expected = transforms.Normalize(mean, std)(data.images[y].float() / 255)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)


def test_batch_loader_argument_errors() -> None:
    data = _synthetic(10)
    with pytest.raises(DataError, match="batch_size"):
        BatchLoader(data, batch_size=0)
    with pytest.raises(DataError, match="mean/std"):
        BatchLoader(data, batch_size=2, mean=(0.5,))
    with pytest.raises(DataError, match="crop_padding"):
        BatchLoader(data, batch_size=2, crop_padding=8)
    with pytest.raises(DataError, match="pad_mode"):
        BatchLoader(data, batch_size=2, pad_mode="wrap")
