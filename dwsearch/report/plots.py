"""The report's figures, one function each, drawn with matplotlib's object API on the Agg
canvas (no pyplot, no global backend switch, safe in threads and on machines without a
display). Each function returns a :class:`~matplotlib.figure.Figure`; :func:`png` turns it
into PNG bytes for the HTML page and the PNG files.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import Formatter, LogLocator, NullFormatter, PercentFormatter

__all__ = [
    "ablation_figure",
    "compression_figure",
    "layers_figure",
    "learning_curves_figure",
    "pareto_figure",
    "png",
    "speed_figure",
    "svg",
]

DPI = 150  # PNG resolution: sharp in a paper or a README
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f"]
FRONT_COLOR = "#d62728"
BASE_MARKERS = ["*", "D", "s", "^", "v", "P", "X", "h"]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _as_given(fig: Figure) -> None:
    """Every text of the figure shown as written: a '$' in a model's name or a device's is not
    the start of a formula (mathtext, which fails on '$\\frac{$')."""
    for text in fig.findobj(Text):
        text.set_parse_math(False)


def png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    _as_given(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": "dwsearch report"})
    return buffer.getvalue()


def svg(fig: Figure) -> bytes:
    """The figure as SVG bytes (for diagrams)."""
    _as_given(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def human(value: float, unit: str = "") -> str:
    """1.8e7 -> '18.4M': axis labels and table cells."""
    if value is None or not math.isfinite(value):
        return "-"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


class HumanFormatter(Formatter):
    """Tick labels like 18.1M, 18.2M: one scale for the axis and as many decimals as it takes
    for neighbouring ticks to read differently."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return human(x)

    def format_ticks(self, values: Any) -> list[str]:
        values = [float(v) for v in values]
        top = max((abs(v) for v in values), default=0.0)
        suffix, scale = next(((s, f) for s, f in (("G", 1e9), ("M", 1e6), ("k", 1e3))
                              if top >= f), ("", 1.0))
        for decimals in range(5):
            labels = [f"{v / scale:.{decimals}f}{suffix}" for v in values]
            if len(set(labels)) == len(labels):
                return labels
        return labels


def _accuracy_cost_axes(ax: Any, costs: Any, cost_label: str, accuracy_label: str) -> None:
    """Accuracy (percent) against a cost: a log scale where the costs span more than 8x."""
    values = costs.astype(float)
    if len(values) and values.min() > 0 and values.max() / values.min() > 8:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(HumanFormatter())
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.set_xlabel(f"{cost_label} (lower is better)")
    ax.set_ylabel(accuracy_label)


def pareto_figure(
    configs: pd.DataFrame, cost: str, cost_label: str, *, front: str,
    pruned: pd.DataFrame | None = None, accuracy: str = "val_mean",
    accuracy_label: str = "validation accuracy (mean over seeds)",
) -> Figure:
    """Accuracy against one cost, every configuration a point; the front highlighted and
    joined, the base and baselines marked and named; pruned trials as faint crosses."""
    fig = _figure(7.2, 4.6)
    ax = fig.add_subplot()
    data = configs[configs[cost].notna() & configs[accuracy].notna()]
    many = len(data) > 200
    ax.scatter(data[cost], data[accuracy], s=8 if many else 22, color="#9aa5b1",
               alpha=0.45 if many else 0.8, linewidths=0, label=f"configurations ({len(data):,})",
               zorder=2)
    if not many and "val_std" in data and accuracy == "val_mean":
        spread = data[data["val_std"].notna()]
        if len(spread):
            ax.errorbar(spread[cost], spread[accuracy], yerr=spread["val_std"], fmt="none",
                        ecolor="#9aa5b1", elinewidth=0.8, capsize=2, zorder=1)
    if pruned is not None and len(pruned):
        part = pruned[pruned[cost].notna() & pruned["val_accuracy"].notna()]
        if len(part):
            ax.scatter(part[cost], part["val_accuracy"], marker="x", s=10, color="#c0c0c0",
                       alpha=0.5, linewidths=0.8, zorder=1,
                       label=f"pruned trials ({len(part):,}; partial training, not on the front)")
    on_front = data[data[front]].sort_values(cost)
    if len(on_front):
        ax.plot(on_front[cost], on_front[accuracy], drawstyle="steps-post", color=FRONT_COLOR,
                linewidth=1.2, alpha=0.8, zorder=3)
        ax.scatter(on_front[cost], on_front[accuracy], s=34, color=FRONT_COLOR,
                   edgecolors="white", linewidths=0.6, zorder=4,
                   label=f"Pareto front ({len(on_front)})")
    marked = data[data["baseline"].notna()]
    for i, (_, row) in enumerate(marked.iterrows()):
        marker = BASE_MARKERS[i % len(BASE_MARKERS)]
        edge = (FRONT_COLOR, 1.6) if row[front] else ("white", 0.8)  # on the front: ringed
        ax.scatter([row[cost]], [row[accuracy]], marker=marker, s=150 if marker == "*" else 70,
                   color="black" if row["is_base"] else PALETTE[(i + 2) % len(PALETTE)],
                   edgecolors=edge[0], linewidths=edge[1], zorder=5,
                   label=f"{row['baseline']}{' (base)' if row['is_base'] else ''}")
        ax.annotate(str(row["baseline"]), (row[cost], row[accuracy]),
                    textcoords="offset points", xytext=(7, -11), fontsize=8, zorder=6)
    _accuracy_cost_axes(ax, data[cost], cost_label, accuracy_label)
    ax.set_title(f"Accuracy against {cost_label}")
    ax.grid(True, alpha=0.3)
    # "best" keeps points visible; it scans every point, so large studies take a fixed corner
    ax.legend(fontsize=7.5, loc="lower right" if many else "best", framealpha=0.85)
    return fig


# One marker per compression method in compression_figure, in the order the methods come.
METHOD_MARKERS = ["o", "^", "s", "D", "v", "P", "X", "h"]
UNCOMPRESSED_COLOR = "#9aa5b1"


def compression_figure(configs: pd.DataFrame, cost: str, cost_label: str,
                       methods: Sequence[str], *, names: Mapping[str, str] | None = None,
                       accuracy: str = "val_mean",
                       accuracy_label: str = "validation accuracy (mean over seeds)") -> Figure:
    """Accuracy against one cost, each configuration a point (its standard deviation over
    seeds as a bar), one marker and colour per compression method (``configs["compression"]``,
    drawn in the order of ``methods``; the first, block choice, in grey); ``names`` gives a
    method's legend name."""
    fig = _figure(7.2, 4.6)
    ax = fig.add_subplot()
    data = configs[configs[cost].notna() & configs[accuracy].notna()]
    many = len(data) > 200
    for i, method in enumerate(methods):
        part = data[data["compression"] == method]
        if part.empty:
            continue
        color = UNCOMPRESSED_COLOR if i == 0 else PALETTE[(i - 1) % len(PALETTE)]
        if not many and "val_std" in part and accuracy == "val_mean":
            spread = part[part["val_std"].notna()]
            if len(spread):
                ax.errorbar(spread[cost], spread[accuracy], yerr=spread["val_std"], fmt="none",
                            ecolor=color, elinewidth=0.8, capsize=2, alpha=0.7, zorder=2 + i)
        name = (names or {}).get(method, method)
        ax.scatter(part[cost], part[accuracy], marker=METHOD_MARKERS[i % len(METHOD_MARKERS)],
                   s=(8 if many else 26) if i == 0 else 46, color=color, edgecolors="white",
                   linewidths=0.5, alpha=(0.45 if many else 0.8) if i == 0 else 1.0,
                   zorder=3 + i, label=f"{name} ({len(part):,})")
    _accuracy_cost_axes(ax, data[cost], cost_label, accuracy_label)
    ax.set_title("Accuracy by compression method")
    ax.grid(True, alpha=0.3)
    if len(data):  # "best" scans every point: large studies take a fixed corner
        ax.legend(fontsize=7.5, loc="lower right" if many else "best", framealpha=0.85)
    return fig


def ablation_figure(table: pd.DataFrame, reference: str) -> Figure:
    """Per factor change: the paired change of validation accuracy (points, with the 95%
    interval) and the change of MACs (%), one row each."""
    rows = table.iloc[::-1]
    labels = [f"{f} = {v}" for f, v in zip(rows["factor"], rows["value"], strict=True)]
    y = np.arange(len(rows))
    fig = _figure(8.0, 1.2 + 0.42 * len(rows))
    left, right = fig.subplots(1, 2, sharey=True, width_ratios=[3, 2])
    mean = rows["d_val"].to_numpy(dtype=float) * 100
    low = rows["d_val_low"].to_numpy(dtype=float) * 100
    high = rows["d_val_high"].to_numpy(dtype=float) * 100
    has_ci = np.isfinite(low) & np.isfinite(high)
    colors = [PALETTE[2] if m >= 0 else PALETTE[1] for m in mean]
    left.axvline(0, color="black", linewidth=0.8)
    left.errorbar(mean[has_ci], y[has_ci],
                  xerr=[mean[has_ci] - low[has_ci], high[has_ci] - mean[has_ci]], fmt="none",
                  ecolor="#555555", elinewidth=1, capsize=3)
    left.scatter(mean, y, color=colors, s=36, zorder=3)
    left.set_yticks(y, labels, fontsize=8)
    left.set_xlabel("change in validation accuracy, points (95% CI, paired on seeds)")
    left.grid(True, axis="x", alpha=0.3)
    macs = rows["d_macs_pct"].to_numpy(dtype=float)
    right.barh(y, macs, color=[PALETTE[2] if m <= 0 else PALETTE[1] for m in macs], height=0.6)
    for yi, m in zip(y, macs, strict=True):
        right.text(m, yi, f" {m:+.1f}% " if np.isfinite(m) else "", va="center", fontsize=7,
                   ha="left" if m >= 0 else "right")
    right.margins(x=0.25)
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlabel("change in MACs, %")
    right.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"One factor at a time, against {reference}", fontsize=11)
    return fig


def learning_curves_figure(epochs: pd.DataFrame, labels: Mapping[str, str]) -> Figure:
    """Validation accuracy and training loss per epoch of each configuration in ``labels``
    (config hash -> name): the mean over its seeds, the band from min to max."""
    fig = _figure(9.0, 4.0)
    acc_ax, loss_ax = fig.subplots(1, 2)
    for i, (config_hash, label) in enumerate(labels.items()):
        part = epochs[epochs["config_hash"] == config_hash]
        if part.empty:
            continue
        color = PALETTE[i % len(PALETTE)]
        for ax, column in ((acc_ax, "val_accuracy"), (loss_ax, "train_loss")):
            stats = part.groupby("epoch")[column].agg(["mean", "min", "max"]).astype(float)
            ax.plot(stats.index, stats["mean"], color=color, linewidth=1.4, marker="o",
                    markersize=2.5, label=label)
            if part["trial"].nunique() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color,
                                alpha=0.15, linewidth=0)
    acc_ax.set_title("Validation accuracy")
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    loss_ax.set_title("Training loss")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    acc_ax.legend(fontsize=7, loc="lower right")
    return fig


def _short(text: str, limit: int = 42) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def layers_figure(layers: pd.DataFrame, title: str) -> Figure:
    """Where one model's cost is: each layer's share of parameters, MACs and bytes saved for
    backward (training memory), side by side."""
    rows = layers.iloc[::-1]
    names = [f"{r['layer']} {r['block']} → {r['output']}" for _, r in rows.iterrows()]
    y = np.arange(len(rows))
    fig = _figure(9.0, 1.3 + 0.26 * len(rows))
    axes = fig.subplots(1, 3, sharey=True)
    panels = (("params", "parameters"), ("macs", "MACs"), ("saved_bytes", "saved for backward"))
    for ax, (column, label), color in zip(axes, panels, PALETTE, strict=False):
        share = rows[f"{column}_share"].to_numpy(dtype=float) * 100
        totals = rows[column].to_numpy(dtype=float)
        ax.barh(y, np.nan_to_num(share), color=color, height=0.7)
        for yi, s, t in zip(y, share, totals, strict=True):
            if np.isfinite(s) and t > 0:
                ax.text(s + 1, yi, human(t), va="center", fontsize=6.5)
        ax.set_xlim(0, 118)
        total = float(rows[column].sum())
        shown = f"{total / 2**20:.2f} MiB/sample" if column == "saved_bytes" else human(total)
        ax.set_title(f"{label}\n(total {shown})", fontsize=9)
        ax.set_xlabel("% of the model")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(y, [_short(n) for n in names], fontsize=7)
    fig.suptitle(title, fontsize=11)
    return fig


def speed_figure(speed: pd.DataFrame, device: str) -> Figure:
    """Training throughput (images/s) and inference latency (ms) per model."""
    rows = speed.iloc[::-1]
    y = np.arange(len(rows))
    fig = _figure(9.0, 1.4 + 0.36 * len(rows))
    train_ax, infer_ax = fig.subplots(1, 2, sharey=True)
    train = rows["train_ips"].to_numpy(dtype=float)
    train_err = np.nan_to_num(rows["train_ips_std"].to_numpy(dtype=float))
    train_ax.barh(y, np.nan_to_num(train), xerr=train_err, color=PALETTE[0], height=0.6,
                  error_kw={"elinewidth": 0.8, "capsize": 2})
    train_ax.set_xlabel("training images/s")
    latency = rows["latency_ms"].to_numpy(dtype=float)
    infer_ax.barh(y, np.nan_to_num(latency), color=PALETTE[4], height=0.6)
    infer_ax.set_xlabel("inference latency, ms (lower is better)")
    for ax, values in ((train_ax, train), (infer_ax, latency)):
        for yi, v in zip(y, values, strict=True):
            if np.isfinite(v):
                ax.text(v, yi, f" {v:.3g}", va="center", fontsize=7)
            else:
                ax.text(0, yi, " not measured", va="center", fontsize=7, color="#777777")
        ax.grid(True, axis="x", alpha=0.3)
        ax.margins(x=0.18)
    train_ax.set_yticks(y, [_short(str(v), 36) for v in rows["label"]], fontsize=8)
    fig.suptitle(f"Speed on {device}", fontsize=11)
    return fig

