"""Which data a run trains and evaluates on, as plain data (no torch import), so that the
command line reads its options and defaults from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dwsearch.errors import ConfigError

__all__ = ["DataConfig", "DatasetName"]

DatasetName = Literal["cifar10", "imagefolder"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataConfig:
    """Which data a run trains and evaluates on. Sizes are numbers of images."""

    dataset: DatasetName = field(
        default="cifar10", metadata={"help": "cifar10, or imagefolder for your own images."}
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Dataset folder; default $DWSEARCH_DATA_DIR, else the cache directory."},
    )
    val_size: int = field(
        default=5000,
        metadata={"help": "Images carved from the training set for validation (stratified)."},
    )
    train_subset: int | None = field(
        default=None,
        metadata={"help": "Train on this many images (stratified) for a cheaper run.",
                  "flag": "--subset"},
    )
    test_subset: int | None = field(
        default=None, metadata={"help": "Evaluate on this many test images (stratified)."}
    )
    test_fraction: float = field(
        default=0.2,
        metadata={"help": "imagefolder with root/<class>/* only: the share of each class "
                          "carved out as the test set."},
    )
    seed: int = field(
        default=0, metadata={"help": "Seeds the validation split and the subsets.", "cli": False}
    )
    download: bool = field(
        default=True,
        metadata={"help": "Fetch the official CIFAR-10 archive into the cache when no copy is "
                          "found.", "cli": False},
    )

    def __post_init__(self) -> None:
        if self.dataset not in ("cifar10", "imagefolder"):
            raise ConfigError(
                f"dataset: expected 'cifar10' or 'imagefolder', found {self.dataset!r}"
            )
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ConfigError(f"data_dir: expected a folder path, found {self.data_dir!r}")
        if not _is_int(self.val_size) or self.val_size < 0:
            raise ConfigError(f"val_size: expected an integer >= 0, found {self.val_size!r}")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ConfigError(f"{name}: expected null or an integer >= 1, found {value!r}")
        fraction = self.test_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0 < fraction < 1
        ):
            raise ConfigError(
                f"test_fraction: expected a number strictly between 0 and 1, found {fraction!r}"
            )
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed: expected an integer in 0..2^63-1, found {self.seed!r}")
        if not isinstance(self.download, bool):
            raise ConfigError(f"download: expected true or false, found {self.download!r}")
