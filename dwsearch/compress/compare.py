"""Models before and after compression side by side: accuracy, parameters, MACs, and where
asked their latency on deployment runtimes (:func:`dwsearch.deploy.measure`, interleaved)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from dwsearch.builder import Network
from dwsearch.costs import BNMode, count_macs
from dwsearch.data.tensors import DataSplits
from dwsearch.deploy.deployment import Deployment, measure
from dwsearch.deploy.images import split_images
from dwsearch.train.config import TrainConfig

__all__ = ["CALIBRATION_IMAGES", "CHECK_IMAGES", "Row", "deployed", "format_rows", "row",
           "val_accuracy"]

# As dwsearch export calibrates and checks programs of trained models.
CALIBRATION_IMAGES = 128
CHECK_IMAGES = 256


@dataclass(frozen=True)
class Row:
    """One model in a before/after table. Accuracies are fractions (None: not measured)."""

    label: str
    val_accuracy: float | None
    test_accuracy: float | None
    params: int
    macs: int  # per sample, the dwsearch.costs convention


def row(label: str, model: Network, *, val_accuracy: float | None = None,
        test_accuracy: float | None = None, bn: BNMode = "counted") -> Row:
    """A row for ``model``, counted at its spec's input shape."""
    return Row(label, val_accuracy, test_accuracy, sum(p.numel() for p in model.parameters()),
               count_macs(model, model.spec.input_shape, bn=bn).total)


def format_rows(rows: Sequence[Row]) -> str:
    """The rows as a plain-text table, with each model's share of the first one's costs."""
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    first = rows[0]
    head = ["model", "val acc", "test acc", "params", "MACs", "x first (params, MACs)"]
    body = [[r.label, pct(r.val_accuracy), pct(r.test_accuracy), f"{r.params:,}",
             f"{r.macs:,}",
             f"{r.params / max(first.params, 1):.3f}, {r.macs / max(first.macs, 1):.3f}"]
            for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, body)])


def val_accuracy(model: nn.Module, splits: DataSplits, recipe: TrainConfig) -> float | None:
    """Validation accuracy (fraction) of ``model`` as the trainer measures it (the recipe's
    device, precision and memory format); None without a validation split. The model comes
    back on the CPU."""
    from dwsearch.run import make_loaders
    from dwsearch.runtime import resolve_device, resolve_precision
    from dwsearch.train.loop import evaluate

    device = str(resolve_device(recipe.device))
    _, val, _ = make_loaders(splits, recipe, device)
    if val is None:
        return None
    model.to(device)
    try:
        return evaluate(model, val, device=device,
                        precision=resolve_precision(recipe.precision, device),
                        channels_last=recipe.channels_last)[1]
    finally:
        model.cpu()


def deployed(models: Mapping[str, nn.Module], runtimes: Sequence[str], splits: DataSplits, *,
             int8: bool = True, threads: int = 1) -> Deployment:
    """The models lowered to ``runtimes`` (fp32, and int8 calibrated on training images) and
    timed together, interleaved; programs checked on validation images (training images
    where there is no validation split)."""
    check = splits.val if len(splits.val) else splits.train
    return measure(models, runtimes, ("fp32", "int8") if int8 else ("fp32",),
                   images=split_images(check, CHECK_IMAGES, seed=1),
                   calibration=split_images(splits.train, CALIBRATION_IMAGES, seed=0),
                   calibration_source=f"{CALIBRATION_IMAGES} training images of "
                                      f"{splits.source}", threads=threads)
