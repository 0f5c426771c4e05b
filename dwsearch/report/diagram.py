"""Architecture diagrams: a model's layers top to bottom, each with its block type, kernel,
channels, output shape, parameters and MACs (with a bar for its share of the MACs).

Torch-free: it draws from a spec (plain data) and the per-layer cost rows that runs store
(:meth:`dwsearch.costs.Profile.to_rows`, ``RunRecord.layers``). ``dwsearch draw`` computes
the rows with :func:`dwsearch.costs.profile`; the report takes them from the run records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from dwsearch.errors import ReportError
from dwsearch.report.plots import human

__all__ = ["BLOCK_COLORS", "diagram_figure", "layer_label", "with_kernels"]

BLOCK_COLORS = {
    "conv": "#cfe2f3",
    "grouped": "#d0e0e3",
    "dwsep": "#d9ead3",
    "hybrid": "#fff2cc",
    "inverted_residual": "#e6d9f2",
    "maxpool": "#e8e8e8",
    "avgpool": "#e8e8e8",
    "global_avgpool": "#e8e8e8",
    "dropout": "#f5f5f5",
    "dropout2d": "#f5f5f5",
    "flatten": "#ffffff",
    "linear": "#fce5cd",
}
_OTHER_COLOR = "#f4cccc"  # a block this module has no colour for (a user's block)


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in str(text).split("x") if v)
    except ValueError:
        return ()


def _dims(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape)) if shape else "?"


def layer_label(block: str, args: Mapping[str, Any], in_shape: Sequence[int],
                out_shape: Sequence[int]) -> str:
    """One line saying what a layer is: ``dwsep 3×3 /2, 64→128, SE 0.25``."""
    cin = in_shape[0] if in_shape else "?"
    cout = out_shape[0] if out_shape else "?"
    k = args.get("kernel_size")
    kernel = f" {k}×{k}" if isinstance(k, int) else ""
    if "out_channels" in args or block in ("conv", "grouped", "dwsep", "hybrid",
                                           "inverted_residual"):
        text = f"{block}{kernel}"
        stride = args.get("stride", 1)
        if isinstance(stride, int) and stride > 1:
            text += f" /{stride}"
        text += f", {cin}→{cout}"
        extras = []
        if args.get("groups") not in (None, 1):
            extras.append(f"groups {args['groups']}")
        if args.get("multiplier") not in (None, 1):
            extras.append(f"×{args['multiplier']} depth")
        if args.get("expand_ratio") is not None:
            extras.append(f"expand {args['expand_ratio']}")
        if args.get("ratio") is not None:
            extras.append(f"conv ratio {args['ratio']}")
        if args.get("se_ratio"):
            extras.append(f"SE {args['se_ratio']}")
        if args.get("skip"):
            extras.append("skip")
        if args.get("bn") is False:
            extras.append("no BN")
        if args.get("activation") not in (None, "relu"):
            extras.append(str(args["activation"]))
        return text + (", " + ", ".join(extras) if extras else "")
    if block == "linear":
        act = args.get("activation")
        return f"linear {cin}→{cout}" + (f" + {act}" if act else "")
    if block in ("maxpool", "avgpool"):
        return f"{block}{kernel}"
    if block in ("dropout", "dropout2d"):
        return f"{block} p={args.get('p', 0.5)}"
    if block == "global_avgpool":
        return "global avg pool"
    if block == "flatten":
        return "flatten"
    compact = " ".join(f"{k}={v}" for k, v in args.items())
    return f"{block} {compact}".strip()


def with_kernels(spec: Mapping[str, Any], canonical: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with each layer's ``kernel_size`` and ``stride`` taken from its canonical form
    (defaults filled in) where the spec leaves them out, so the diagram can name them; other
    defaults stay out of the labels."""
    out = dict(spec)
    layers = []
    for layer, full in zip(spec["layers"], canonical["layers"], strict=True):
        layer = dict(layer)
        for key in ("kernel_size", "stride"):
            if key not in layer and key in full:
                layer[key] = full[key]
        layers.append(layer)
    out["layers"] = layers
    return out


def diagram_figure(
    spec: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, title: str | None = None,
    note: str | None = None,
) -> Figure:
    """The diagram of ``spec`` ({input, layers: [{block, ...}]}) with its per-layer cost rows
    (one per layer: output, params, macs; saved_bytes optional)."""
    layers = list(spec.get("layers") or [])
    if len(rows) != len(layers):
        raise ReportError(f"diagram: {len(layers)} layers but {len(rows)} cost rows")
    n = len(layers)
    row_h = 0.42
    height = 1.45 + row_h * (n + 1)
    fig = Figure(figsize=(8.6, height), layout=None)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    ax.set_xlim(0, 10)
    ax.set_ylim(-(n + 1.9), 1.6)
    ax.axis("off")
    total_macs = sum(int(r.get("macs") or 0) for r in rows) or 1
    name = title or spec.get("name") or "model"
    ax.text(0.1, 1.15, str(name), fontsize=12, fontweight="bold", va="center")
    header: dict[str, Any] = {"fontsize": 7.5, "color": "#555555", "va": "center"}
    ax.text(5.45, 0.45, "output", **header)
    ax.text(7.45, 0.45, "params", ha="right", **header)
    ax.text(9.9, 0.45, "MACs (bar: share)", ha="right", **header)
    input_shape = tuple(spec.get("input") or ())
    _box(ax, 0, f"input {_dims(input_shape)}", "#ffffff", dashed=True)
    previous = input_shape
    for i, (layer, row) in enumerate(zip(layers, rows, strict=True)):
        y = -(i + 1)
        block = str(layer.get("block", row.get("block", "?")))
        args = {k: v for k, v in layer.items() if k != "block"}
        out_shape = _shape(str(row.get("output", "")))
        _arrow(ax, y)
        label = f"{i}  {layer_label(block, args, previous, out_shape)}"
        _box(ax, y, label, BLOCK_COLORS.get(block, _OTHER_COLOR))
        macs = int(row.get("macs") or 0)
        params = int(row.get("params") or 0)
        ax.text(5.45, y, _dims(out_shape), fontsize=8, va="center", family="monospace")
        ax.text(7.45, y, f"{params:,}" if params else "-", fontsize=8, va="center", ha="right",
                family="monospace")
        share = macs / total_macs
        ax.add_artist(Rectangle((7.75, y - 0.14), 2.15 * share, 0.28, color="#f6b26b",
                                alpha=0.55, linewidth=0))
        ax.text(9.9, y, human(macs) if macs else "-", fontsize=8, va="center", ha="right",
                family="monospace")
        previous = out_shape
    params_total = sum(int(r.get("params") or 0) for r in rows)
    saved = [r.get("saved_bytes") for r in rows]
    totals = f"total: {params_total:,} params · {human(total_macs)} MACs"
    if all(isinstance(s, int) for s in saved):
        total_saved = sum(int(s or 0) for s in saved)
        totals += f" · {total_saved / 2**20:.2f} MiB saved for backward per sample"
    ax.text(0.1, -(n + 1.05), totals, fontsize=8.5, va="center")
    if note:
        ax.text(0.1, -(n + 1.55), note, fontsize=7, va="center", color="#666666")
    return fig


def _box(ax: Any, y: float, text: str, color: str, dashed: bool = False) -> None:
    # add_artist, not add_patch: the limits are set, so no data-limit update is needed.
    ax.add_artist(FancyBboxPatch(
        (0.1, y - 0.16), 5.1, 0.32, boxstyle="round,pad=0.02,rounding_size=0.08",
        facecolor=color, edgecolor="#444444", linewidth=0.8,
        linestyle="--" if dashed else "-"))
    ax.text(0.25, y, text, fontsize=8.2, va="center")


def _arrow(ax: Any, y: float) -> None:
    ax.add_artist(FancyArrowPatch((2.65, y + 1 - 0.19), (2.65, y + 0.19), arrowstyle="-|>",
                                 mutation_scale=7, color="#666666", linewidth=0.8))
