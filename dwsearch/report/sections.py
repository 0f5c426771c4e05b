"""What the report says: its sections, tables and figures, built from the study's frames.

:func:`build_document` returns a :class:`~dwsearch.report.render.Document` that
:mod:`dwsearch.report.render` writes as Markdown and HTML. Every number comes from the
stored run records through :mod:`dwsearch.report.frame`; tables for people are capped (the
CSV files hold every row).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dwsearch.convention import convention
from dwsearch.errors import StudyError
from dwsearch.metrics import DEPLOY_PRECISIONS, DEPLOY_RUNTIMES
from dwsearch.report import claims as claims_mod
from dwsearch.report import plots
from dwsearch.report.diagram import diagram_figure
from dwsearch.report.frame import (
    COMPRESSION_METHODS,
    COST_COLUMNS,
    DEPLOY_EAGER,
    MAX_DETAILED,
    NOT_COMPRESSED,
    StudyFrames,
    epochs_frame,
    layers_frame,
)
from dwsearch.report.pareto import pareto_mask
from dwsearch.report.render import (
    Bullets,
    Document,
    Image,
    Section,
    Table,
    Text,
    code,
    literal,
)
from dwsearch.report.stats import paired_differences
from dwsearch.urls import mask_url

__all__ = ["build_document", "display_name"]

# Text and captions are markup (dwsearch.report.render): every value from the study file, the
# storage or the user goes in through literal() or code(); table cells are literal already.

MAX_CONFIG_ROWS = 30  # configurations listed in the page (configurations.csv has all)
MAX_EXCLUDED_ROWS = 200  # trials listed as not in the statistics
SYNTHETIC = "synthetic"
DEVICE_NOTE = (
    "Speeds hold for the device named only: block choices rank differently by device. In this "
    "project's measurements seed_dwsep trained 1.12-1.32x faster than seed_cnn on a 2-core CPU "
    "but about 1.6x slower on an H100 (10 epochs: 43 s against 27 s)."
)


# -- formatting -------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    """A real number that is not NaN or infinite (numpy scalars included, booleans not)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def pct(value: Any, digits: int = 2) -> str:
    return f"{value * 100:.{digits}f}%" if _finite(value) else "-"


def pct_pm(mean: Any, std: Any) -> str:
    if not _finite(mean):
        return "-"
    return f"{mean * 100:.2f} ± {std * 100:.2f}%" if _finite(std) else f"{mean * 100:.2f}%"


def count(value: Any) -> str:
    return f"{int(value):,}" if _finite(value) else "-"


def millions(value: Any) -> str:
    return f"{value / 1e6:,.2f} M" if _finite(value) else "-"


def ms(value: Any) -> str:
    return f"{value:.2f}" if _finite(value) else "-"


def num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if _finite(value) else "-"


def points(mean: Any, low: Any, high: Any) -> str:
    """A paired difference of accuracies in percentage points, with its interval."""
    if not _finite(mean):
        return "-"
    text = f"{mean * 100:+.2f}"
    if _finite(low) and _finite(high):
        text += f" [{low * 100:+.2f}, {high * 100:+.2f}]"
    return text


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def display_name(row: Mapping[str, Any] | pd.Series, limit: int = 60) -> str:
    """A configuration for tables: the baseline's name, else its first trial and choices."""
    baseline = row.get("baseline")
    if isinstance(baseline, str) and baseline:
        return baseline + (" (base)" if bool(row.get("is_base")) else "")
    return _short(f"#{int(row['id'])} {row['label']}", limit)


def legend_name(row: Mapping[str, Any] | pd.Series) -> str:
    """A configuration in a legend: the baseline's name, else its first trial, accuracy and
    MACs (its choices are in the tables)."""
    baseline = row.get("baseline")
    if isinstance(baseline, str) and baseline:
        return display_name(row)
    return f"#{int(row['id'])} ({pct(row['val_mean'], 1)}, {millions(row['macs'])} MACs)"


# -- the document -----------------------------------------------------------------------------


def build_document(frames: StudyFrames, *, command: str,
                   detail: int = MAX_DETAILED) -> Document:
    """Every section of the report. ``command`` is the line that regenerates it; ``detail``
    front models (besides the baselines) get learning curves, cost breakdowns and
    diagrams."""
    results = frames.results
    meta = results.meta
    config = results.config
    source = str(meta.get("source") or "")
    banner = None
    if source.lower().startswith(SYNTHETIC):
        banner = (f"SYNTHETIC STUDY: made by {literal(source)} without training anything. "
                  f"Costs are "
                  f"exact closed forms; accuracies, times and latencies are made up for "
                  f"testing the report.")
    detailed = frames.detailed(detail)
    paired_val = _paired(frames, "val_accuracy")
    paired_test = _paired(frames, "test_accuracy")
    sections = [
        _summary(frames),
        _setup(frames, command),
        _fronts(frames),
        _configurations(frames, paired_val, paired_test, detailed),
    ]
    ablation = _ablation(frames, paired_val, paired_test)
    if ablation is not None:
        sections.append(ablation)
    sections += [
        _curves(frames, detailed, detail),
        _costs(frames, detailed),
        _speed(frames, detailed),
    ]
    deployment = _deployment(frames)
    if deployment is not None:
        sections.append(deployment)
    compression = _compression(frames)
    if compression is not None:
        sections.append(compression)
    claims = _claims(frames)
    if claims is not None:
        sections.append(claims)
    sections += [_diagrams(frames, detailed), _excluded(frames)]
    description = str(config.get("description") or "")
    subtitle = (f"dwsearch study report: {len(results.trials):,} trials, "
                f"{len(frames.configs):,} configurations in the statistics. "
                f"{literal(description)}").strip()
    return Document(title=f"Study {results.name}", subtitle=subtitle, sections=sections,
                    banner=banner)


_RUNTIME_NAMES = {"executorch": "ExecuTorch (XNNPACK)", "onnxruntime": "ONNX Runtime (CPU)"}


def _deployed_programs(configs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(runtime, precision, latency column) of every program some configuration measured."""
    out = []
    for runtime in DEPLOY_RUNTIMES:
        for precision in DEPLOY_PRECISIONS:
            column = f"latency_{runtime}_{precision}"
            if column in configs and configs[column].notna().any():
                out.append((runtime, precision, column))
    return out


def _kendall(a: pd.Series, b: pd.Series) -> tuple[float, float, int]:
    """Kendall's tau-b between two columns over the rows where both are measured, its
    two-sided p-value, and the number of rows."""
    from scipy.stats import kendalltau

    both = pd.DataFrame({"a": a.astype(float), "b": b.astype(float)}).dropna()
    if len(both) < 3:
        return math.nan, math.nan, len(both)
    result = kendalltau(both["a"], both["b"])
    return float(result.statistic), float(result.pvalue), len(both)


def _deployment(frames: StudyFrames) -> Section | None:
    """Where the models ship: each configuration's latency per runtime and precision (timed
    interleaved with eager PyTorch in its trial), program sizes, int8 accuracy and its drop;
    whether MACs or eager latency rank configurations as the runtimes do (Kendall's tau);
    which configuration is fastest where; and accuracy against deployed latency."""
    configs = frames.configs
    programs = _deployed_programs(configs) if not configs.empty else []
    if not programs:
        return None
    records = [t.record for t in frames.results.trials
               if t.record is not None and t.record.deploy and t.record.deploy.get("conditions")]
    blocks: list[Any] = []
    if records:
        deploy = records[0].deploy or {}
        cond = deploy.get("conditions") or {}
        versions = ", ".join(f"{k} {v}" for k, v in (cond.get("versions") or {}).items())
        blocks.append(Text(
            f"Each trained model lowered to each runtime (batch {count(cond.get('batch_size'))}, "
            f"{count(cond.get('threads'))} thread(s) on {literal(str(cond.get('cpu', '?')))}; "
            f"{literal(versions)}) and timed in its trial, interleaved with eager PyTorch "
            f"({count(cond.get('blocks'))} blocks x {count(cond.get('calls_per_block'))} "
            f"calls): medians, in ms, averaged over seeds. int8 is post-training static "
            f"quantization calibrated on training images; its accuracy is on the whole "
            f"validation split. Latency ranks blocks differently here than MACs or eager "
            f"PyTorch do: see the rank correlations below."))
    table = pd.DataFrame({"configuration": [display_name(r) for _, r in configs.iterrows()],
                          "MACs": configs["macs"].map(millions),
                          "val": configs["val_mean"].map(pct),
                          "eager ms": configs[DEPLOY_EAGER].map(ms)})
    for runtime, precision, column in programs:
        table[f"{runtime} {precision} ms"] = configs[column].map(ms)
    for runtime in DEPLOY_RUNTIMES:
        column = f"int8_val_{runtime}_mean"
        if column in configs and configs[column].notna().any():
            table[f"{runtime} int8 val"] = configs[column].map(pct)
    if "int8_drop_mean" in configs and configs["int8_drop_mean"].notna().any():
        table["int8 drop (points)"] = configs["int8_drop_mean"].map(
            lambda v: f"{v * 100:+.2f}" if _finite(v) else "-")
    for runtime, precision, _ in programs:
        column = f"size_{runtime}_{precision}"
        if column in configs:
            table[f"{runtime} {precision} KiB"] = configs[column].map(
                lambda v: f"{v / 1024:,.1f}" if _finite(v) else "-")
    blocks.append(Table(table.head(MAX_CONFIG_ROWS), caption=(
        "Latency per runtime and precision (median ms, mean over seeds), int8 validation "
        "accuracy, its drop from the trained model's validation accuracy, and the size of "
        "each program that ships.")))
    rows = []
    for runtime, precision, column in programs:
        for name, other in (("MACs", "macs"), ("eager latency", DEPLOY_EAGER)):
            tau, p_value, n = _kendall(configs[other], configs[column])
            rows.append({"runtime": f"{_RUNTIME_NAMES[runtime]} {precision}",
                         "ranked by": name, "Kendall's tau": num(tau, 2),
                         "p": num(p_value, 2), "configurations": count(n)})
        fastest = configs.loc[configs[column].astype(float).idxmin()]
        rows[-1]["fastest here"] = literal(display_name(fastest, 80))
    blocks.append(Table(pd.DataFrame(rows).fillna(""), caption=(
        "Do MACs (or eager PyTorch latency) predict deployed latency? Kendall's tau-b over "
        "configurations: 1 ranks them alike, 0 not at all (with its two-sided p-value; at "
        "least 3 configurations). The fastest configuration on each runtime and precision.")))
    for runtime, precision, column in programs:
        front = pareto_mask(configs[["val_mean", column]].astype(float).to_numpy(),
                            [True, False])
        shown = configs.assign(_front=front)
        figure = plots.pareto_figure(shown, column, f"{_RUNTIME_NAMES[runtime]} {precision} "
                                     f"latency (ms)", front="_front")
        blocks.append(Image(f"pareto_{runtime}_{precision}", plots.png(figure),
                            f"Validation accuracy against {_RUNTIME_NAMES[runtime]} "
                            f"{precision} latency: {int(front.sum())} of {len(configs):,} "
                            f"configurations on the front.",
                            alt=f"Pareto front of validation accuracy against "
                                f"{runtime} {precision} latency", half=True))
    return Section("deployment", "Deployment: where the models run", blocks)


_METHOD_NAMES = {NOT_COMPRESSED: "block choice (not compressed)", "qat": "QAT"}


def _method_name(method: str) -> str:
    """A compression method for people: "block choice (not compressed)", "distilled",
    "distilled + QAT"."""
    return " + ".join(_METHOD_NAMES.get(p, p) for p in method.split("+"))


def _methods(configs: pd.DataFrame) -> list[str]:
    """Block choice first, then the compression methods the configurations went through:
    single methods before combinations, each in the order of COMPRESSION_METHODS."""
    labels = list(COMPRESSION_METHODS.values())

    def order(method: str) -> tuple[int, list[int]]:
        parts = method.split("+")
        return len(parts), [labels.index(p) if p in labels else len(labels) for p in parts]

    present = {str(m) for m in configs["compression"].dropna()} - {NOT_COMPRESSED}
    return [NOT_COMPRESSED, *sorted(present, key=order)]


def _uses(method: str, part: str) -> bool:
    return part in method.split("+")


def _latency_columns(configs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(table heading, column, axis label) of the latencies the configurations measured:
    each deployed program's, else eager PyTorch's on the study's device."""
    programs = _deployed_programs(configs)
    if programs:
        return [(f"{runtime} {precision} ms", column,
                 f"{_RUNTIME_NAMES[runtime]} {precision} latency (ms)")
                for runtime, precision, column in programs]
    if configs["latency_ms"].notna().any():
        return [("eager latency ms", "latency_ms", "eager PyTorch latency (ms)")]
    return []


def _share_of_seeds(value: Any) -> str:
    if not _finite(value):
        return "-"
    return {1.0: "yes", 0.0: "no"}.get(float(value), f"{value * 100:.0f}% of seeds")


def _undistilled(frames: StudyFrames, row: pd.Series) -> str | None:
    """The configuration ``row`` (a distilled one) is compared with: the same architecture
    (spec hash) trained without the teacher, compressed otherwise alike; of several, the one
    sharing the most seeds with it (then the first to run). None: the study has none."""
    configs = frames.configs
    wanted = "+".join(p for p in str(row["compression"]).split("+") if p != "distilled")
    candidates = configs[(configs["spec_hash"] == row["spec_hash"])
                         & (configs["compression"] == (wanted or NOT_COMPRESSED))]
    if candidates.empty:
        return None
    runs = frames.runs
    seeds = set(runs.loc[runs["config_hash"] == row["config_hash"], "seed"])
    shared = [len(seeds & set(runs.loc[runs["config_hash"] == h, "seed"]))
              for h in candidates["config_hash"]]
    return str(candidates["config_hash"].iloc[shared.index(max(shared))])


def _distilled_table(frames: StudyFrames, rows: pd.DataFrame) -> pd.DataFrame:
    configs = frames.configs.set_index("config_hash")
    cells = []
    for _, row in rows.iterrows():
        other = _undistilled(frames, row)
        if other is None:
            against, n, val, test = "no run of it without the teacher", "-", "-", "-"
        else:
            runs = frames.runs[frames.runs["config_hash"].isin([row["config_hash"], other])]
            diffs = {metric: paired_differences(runs.astype({metric: float}), other, metric)
                     for metric in ("val_accuracy", "test_accuracy")}
            val, test = (points(*d.loc[row["config_hash"], ["mean", "low", "high"]])
                         if row["config_hash"] in d.index else "-" for d in diffs.values())
            shared = diffs["val_accuracy"]
            n = (count(shared.loc[row["config_hash"], "n"]) if row["config_hash"] in shared.index
                 else "0")
            against = display_name(configs.loc[other], 200)
        teacher = row["teacher_name"] if isinstance(row["teacher_name"], str) else (
            row["teacher_spec_hash"] if isinstance(row["teacher_spec_hash"], str) else "-")
        logits = row["teacher_logits"]
        cells.append({
            "configuration": display_name(row, 200), "teacher": teacher,
            "alpha": num(row["distill_alpha"]), "T": num(row["distill_temperature"]),
            "teacher logits": logits.replace("_", " ") if isinstance(logits, str) else "-",
            "without the teacher": against, "shared seeds": n,
            "Δ validation, points [95% CI]": val, "Δ test, points [95% CI]": test,
        })
    return pd.DataFrame(cells)


def _pruned_table(rows: pd.DataFrame) -> pd.DataFrame:
    def before_after(before: Any, after: Any) -> str:
        return f"{millions(before)} → {millions(after)}"

    return pd.DataFrame({
        "configuration": [display_name(r, 200) for _, r in rows.iterrows()],
        "source": [n if isinstance(n, str) else (h if isinstance(h, str) else "-")
                   for n, h in zip(rows["prune_from"], rows["prune_from_hash"], strict=True)],
        "target": rows["prune_target"].map(lambda v: v if isinstance(v, str) else "-"),
        "importance": rows["prune_importance"].map(lambda v: v if isinstance(v, str) else "-"),
        "channels cut": rows["prune_ratio"].map(lambda v: pct(v, 1)),
        "MACs": [before_after(b, a) for b, a in zip(rows["macs_before_prune"], rows["macs"],
                                                     strict=True)],
        "params": [before_after(b, a) for b, a in zip(rows["params_before_prune"],
                                                       rows["params"], strict=True)],
        "source val": rows["val_accuracy_before_prune"].map(pct),
        "pruned val": rows["val_accuracy_pruned"].map(pct),
        "fine-tuned val": [pct_pm(m, s) for m, s in zip(rows["val_mean"], rows["val_std"],
                                                         strict=True)],
        "fine-tuning epochs": rows["prune_finetune_epochs"].map(count),
    })


def _qat_table(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "configuration": [display_name(r, 200) for _, r in rows.iterrows()],
        "fp32 val": rows["fp32_val_accuracy"].map(pct),
        "int8 post-training val": rows["ptq_val_accuracy"].map(pct),
        "int8 after QAT val": rows["qat_val_accuracy"].map(pct),
        "QAT ran": rows["ran_qat"].map(_share_of_seeds),
        "allowed drop (points)": rows["qat_max_drop"].map(
            lambda v: f"{v * 100:.2f}" if _finite(v) else "-"),
        "QAT epochs": rows["qat_epochs"].map(count),
    })


def _compression(frames: StudyFrames) -> Section | None:
    """What compression bought: per method (block choice, distilled, pruned, qat and their
    combinations) its configurations' accuracy, costs and latency; each method's details
    (distilled against the same architecture trained without the teacher, paired on seeds;
    pruned against its source; int8 before and after QAT); accuracy against latency."""
    compressed = frames.trials["compression"].notna() & (
        frames.trials["compression"] != NOT_COMPRESSED)
    if not compressed.any():
        return None
    configs = frames.configs
    methods = _methods(configs)
    if len(methods) == 1:
        return Section("compression", "Compression", [Text(
            f"{int(compressed.sum()):,} trial(s) compressed a model, but none is in the "
            f"statistics: see the last section for why.", kind="note")])
    latencies = _latency_columns(configs)
    blocks: list[Any] = [Text(
        "Models compressed after or while training: **distilled** (trained against a "
        "teacher's soft targets as well as the labels), **pruned** (channels cut from a "
        "trained model, then fine-tuned), **QAT** (quantized to int8 after training, and "
        "trained quantization-aware where that lost more than allowed); block choice is the "
        "search's own models, "
        "trained as sampled. Accuracy is the run record's validation accuracy, mean ± sd over "
        "seeds; latency "
        + ("in ms on each runtime the study deployed to (median, mean over seeds)."
           if latencies and latencies[0][1] != "latency_ms" else
           "is eager PyTorch's on the study's device (median ms, mean over seeds): the study "
           "deployed nothing." if latencies else "was not measured."))]
    for method in methods:
        rows = configs[configs["compression"] == method].sort_values(
            "val_mean", ascending=False, kind="stable")
        if rows.empty:
            continue
        table = pd.DataFrame({
            "configuration": [display_name(r, 200) for _, r in rows.iterrows()],
            "seeds": rows["n"].map(count),
            "validation": [pct_pm(m, s) for m, s in zip(rows["val_mean"], rows["val_std"],
                                                        strict=True)],
            "MACs": rows["macs"].map(millions),
            "params": rows["params"].map(millions),
        })
        for heading, column, _ in latencies:
            table[heading] = rows[column].map(ms)
        more = len(rows) - MAX_CONFIG_ROWS
        name = _method_name(method)
        blocks.append(Text(f"**{name[0].upper() + name[1:]}**: {len(rows):,} "
                           f"configuration(s)."))
        blocks.append(Table(table.head(MAX_CONFIG_ROWS), caption=(
            "By mean validation accuracy"
            + (f"; {more:,} more in configurations.csv" if more > 0 else "") + ".")))
    distilled = configs[configs["compression"].map(lambda m: _uses(str(m), "distilled"))]
    if not distilled.empty:
        blocks.append(Text("**Distillation**: each distilled configuration against the same "
                           "architecture trained without the teacher, paired on the seeds "
                           "both ran."))
        blocks.append(Table(_distilled_table(frames, distilled), caption=(
            "alpha weighs the teacher's soft targets (the labels get 1 - alpha), T is the "
            "temperature; the teacher's logits were computed once before training (cached) "
            "or on each batch. Δ: distilled minus not, mean of the per-seed differences with "
            "mean ± t(0.975, n-1)·sd/√n over the n shared seeds (n ≥ 2); of several "
            "configurations without the teacher, the one sharing the most seeds.")))
    pruned = configs[configs["compression"].map(lambda m: _uses(str(m), "pruned"))]
    if not pruned.empty:
        blocks.append(Text("**Pruning**: each pruned configuration against the trained model "
                           "it was cut from."))
        blocks.append(Table(_pruned_table(pruned), caption=(
            "Validation accuracy of the source, of the pruned model before fine-tuning, and "
            "after fine-tuning (mean ± sd over seeds); MACs and parameters of the source and "
            "of the pruned model; channels cut: the share each pruned group lost.")))
    quantized = configs[configs["compression"].map(lambda m: _uses(str(m), "qat"))]
    if not quantized.empty:
        blocks.append(Text("**Quantization-aware training**: validation accuracy in fp32, of "
                           "the post-training int8 program, and of the int8 program after "
                           "QAT, which runs only where post-training int8 lost more than "
                           "allowed."))
        blocks.append(Table(_qat_table(quantized), caption=(
            "Means over seeds; int8 accuracies are the deployed ExecuTorch programs' on the "
            "whole validation split. QAT ran: on every seed (yes), none (no), or the share "
            "of seeds.")))
    cost, cost_label = ((latencies[0][1], latencies[0][2]) if latencies
                        else ("macs", "MACs"))
    names = {m: _method_name(m) for m in methods}
    figure = plots.compression_figure(configs, cost, cost_label, methods, names=names)
    blocks.append(Image("compression", plots.png(figure), (
        f"Validation accuracy against {literal(cost_label)}, one marker per compression "
        f"method, block choice in grey; each point a configuration (mean over seeds, the "
        f"bar its standard deviation)."),
        alt=f"Validation accuracy against {cost_label} by compression method"))
    return Section("compression", "Compression", blocks)


def _paired(frames: StudyFrames, metric: str) -> pd.DataFrame:
    if frames.reference is None or frames.runs.empty:
        return pd.DataFrame(columns=["n", "mean", "sd", "low", "high"])
    runs = frames.runs.astype({metric: float})
    return paired_differences(runs, frames.reference, metric)


def _reference_row(frames: StudyFrames) -> pd.Series | None:
    if frames.reference is None:
        return None
    hits = frames.configs[frames.configs["config_hash"] == frames.reference]
    return None if hits.empty else hits.iloc[0]


def _summary(frames: StudyFrames) -> Section:
    results = frames.results
    config = results.config
    meta = results.meta
    blocks: list[Any] = []
    sampler = config.get("sampler")
    sampler_name = sampler.get("name") if isinstance(sampler, Mapping) else sampler
    pruner = config.get("pruner")
    pruner_name = pruner.get("name") if isinstance(pruner, Mapping) else pruner
    constraints = config.get("constraints") or {}
    stored_base = meta.get("base")
    base: Mapping[str, Any] = stored_base if isinstance(stored_base, Mapping) else {}
    items = [
        f"Study {code(results.name)} from {code(shown_paths(str(meta.get('source', 'unknown'))))}"
        f", stored in {code(shown_paths(mask_url(results.storage)))}.",
        f"Base model: **{literal(base.get('name') or 'inline spec')}**; sampler "
        f"{literal(sampler_name)}, pruner {literal(pruner_name)}; objectives: "
        f"{literal(', '.join(results.objectives) or '-')}"
        + (f"; constraints: {literal(', '.join(f'{k} {v}' for k, v in constraints.items()))}"
           if constraints else "") + ".",
        "Budget: " + (f"{count(config['n_trials'])} trials" if config.get("n_trials") else
                      "every configuration")
        + (f", timeout {literal(config.get('timeout'))}" if config.get("timeout") else "")
        + f"; {literal(config.get('repeats', 1))} repeat(s) per configuration with "
        f"{literal(config.get('seeds', 'shared'))} seeds (study seed "
        f"{literal(config.get('seed', 0))}).",
    ]
    train = config.get("train") or {}
    if train:
        items.append(
            f"Training recipe: {literal(train.get('epochs'))} epochs, "
            f"{literal(train.get('optimizer'))} lr {literal(train.get('lr'))}, batch "
            f"{literal(train.get('batch_size'))}, schedule {literal(train.get('schedule'))}, "
            f"augment {literal(train.get('augment'))}, precision "
            f"{literal(train.get('precision'))}.")
    blocks.append(Bullets(items))
    states = frames.trials.groupby(["status"], dropna=False).agg(
        trials=("trial", "size"), in_statistics=("in_stats", "sum")).reset_index()
    states = states.sort_values("trials", ascending=False)
    blocks.append(Table(pd.DataFrame({
        "status": states["status"].astype(str),
        "trials": states["trials"].map(count),
        "in the statistics": states["in_statistics"].map(count),
    }), caption="Trials by status. Pruned, failed, diverged, infeasible, killed, "
                "interrupted and superseded trials (killed or interrupted, then retried as "
                "another trial) are listed (last section) but never enter statistics or "
                "fronts."))
    configs = frames.configs
    if not configs.empty and configs["val_mean"].notna().any():
        best = configs.loc[configs["val_mean"].astype(float).idxmax()]
        blocks.append(Text(
            f"Best configuration by mean validation accuracy: "
            f"**{literal(display_name(best, 120))}**, "
            f"validation {pct_pm(best['val_mean'], best['val_std'])}, test "
            f"{pct_pm(best['test_mean'], best['test_std'])} over {count(best['n'])} seed(s), "
            f"{millions(best['params'])} parameters, {millions(best['macs'])} MACs."))
    else:
        blocks.append(Text("No trial has completed yet: nothing to compare."))
    blocks.append(Text(
        "The search selected on the **validation** split (carved from the training set); the "
        "**test** set was evaluated only for the numbers this report prints and never "
        "steered the search.", kind="note"))
    blocks.append(Text(
        "Statistics count a trial once it completed and was not superseded (a trial whose "
        "worker died and whose slot was retried). A reused result (copied from an identical "
        "earlier run) is a real trial with the same numbers, marked reused; a second run of "
        "one configuration with one seed counts once.", kind="note"))
    return Section("summary", "Summary", blocks)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/[^\s;,'\"()<>|]+")


def shown_paths(text: str, cwd: Path | None = None) -> str:
    """``text`` with the absolute paths in it made fit for a report that is committed and
    shared: relative to the current folder (the repository, when reports are made from its
    root) where that climbs at most one folder, else under the home folder as ``~/...``,
    else as they are. The machine's own layout (``/root/...``, ``/home/me/...``) stays
    out."""
    here = (cwd or Path.cwd()).resolve()
    home = Path.home().resolve()

    def shorten(match: re.Match[str]) -> str:
        # sqlite:////abs/path: the URL's three slashes stay, the path after them is shown.
        text = match[0]
        slashes = len(text) - len(text.lstrip("/"))
        prefix, path = "/" * (slashes - 1), Path("/" + text.lstrip("/"))
        relative = os.path.relpath(path, here)
        if not relative.startswith(os.pardir + os.sep + os.pardir):
            return prefix + relative
        if path.is_relative_to(home) and home != Path("/"):
            return prefix + str(Path("~") / path.relative_to(home))
        return text

    return _ABSOLUTE_PATH.sub(shorten, text)


def _unique(values: Sequence[Any]) -> list[Any]:
    return [v for v, _ in Counter(v for v in values if v is not None
                                  and not (isinstance(v, float) and math.isnan(v))
                                  ).most_common()]


def _setup(frames: StudyFrames, command: str) -> Section:
    results = frames.results
    records = [t.record for t in results.trials if t.record is not None]
    blocks: list[Any] = []
    if not records:
        blocks.append(Text("No run record yet: dataset, hardware and versions are unknown."))
    else:
        sources = _unique([r.data_source for r in records])
        lossy = any(r.lossy_data for r in records)
        first = records[0]
        devices = Counter(f"{r.device_name} ({r.device}, {r.precision}, {r.threads} threads)"
                          for r in records)
        versions = _unique([", ".join(f"{k} {v}" for k, v in sorted(r.versions.items()))
                            for r in records])
        started = _versions(results.meta)
        created = sorted(r.created for r in records if r.created)
        bns = _unique([r.bn for r in records])
        blocks.append(Bullets([
            f"Dataset: {literal(shown_paths('; '.join(map(str, sources))))}.",
            f"**{'Lossy JPEG copy' if lossy else 'Lossless data'}**: "
            + ("accuracies can sit a little below those on the official CIFAR-10 files."
               if lossy else "no run reports a lossy re-encoding."),
            f"Images: {count(first.train_images)} training, {count(first.val_images)} "
            f"validation (carved from the training set, stratified), "
            f"{count(first.test_images)} test; {literal(first.num_classes)} classes.",
            "Hardware: " + "; ".join(f"{literal(d)} x{n} runs" for d, n in devices.most_common())
            + f"; hosts: {literal(', '.join(map(str, _unique([r.host for r in records])[:5])))}.",
            f"Library versions: {literal(' | '.join(versions[:3]))}"
            + (f"; study started with {literal(started)}" if started else "") + ".",
            f"Dates: study created {literal(results.meta.get('created', 'unknown'))}; runs "
            f"finished {literal(created[0] if created else '?')} to "
            f"{literal(created[-1] if created else '?')}.",
        ]))
        blocks.append(Text(
            "Cost convention (params, MACs, activations, saved bytes per sample): "
            + literal(" / ".join(convention(bn) for bn in bns)) + "."))
    blocks.append(Text(f"Regenerate this report: {code(mask_url(command))}"))
    return Section("setup", "Data, hardware and conventions", blocks)


def _versions(meta: Mapping[str, Any]) -> str:
    versions = meta.get("versions")
    if not isinstance(versions, Mapping):
        return ""
    return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))


def _front_table(configs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "trial": configs["id"].map(count),
        "configuration": [display_name(r, 200) for _, r in configs.iterrows()],
        "seeds": configs["n"].map(count),
        "validation": [pct_pm(m, s) for m, s in zip(configs["val_mean"], configs["val_std"],
                                                    strict=True)],
        "test": [pct_pm(m, s) for m, s in zip(configs["test_mean"], configs["test_std"],
                                              strict=True)],
        "params": configs["params"].map(millions),
        "MACs": configs["macs"].map(millions),
        "latency ms": configs["latency_ms"].map(ms),
        "train img/s": configs["train_ips"].map(lambda v: num(v, 4)),
    })


def _fronts(frames: StudyFrames) -> Section:
    configs = frames.configs
    blocks: list[Any] = []
    if configs.empty:
        blocks.append(Text("No completed trial: no front."))
        return Section("fronts", "Pareto fronts", blocks)
    pruned = frames.trials[frames.trials["status"] == "pruned"]
    blocks.append(Text(
        "Each point is a configuration: its validation accuracy is the mean over its seeds. "
        "A configuration is on a front when no other is at least as accurate and at least as "
        "cheap, and better in one of the two. The front is highlighted and joined; the base "
        "and the baseline models are marked by name (ringed in the front's colour when on "
        "it)."))
    for column, label in COST_COLUMNS.items():
        if not configs[column].notna().any():
            blocks.append(Text(f"Accuracy against {label}: not measured (the study ran without "
                               f"it).", kind="note"))
            continue
        name = f"pareto_{column.replace('_ms', '')}"
        figure = plots.pareto_figure(configs, column, label, front=f"front_{column}",
                                     pruned=pruned)
        on_front = int(configs[f"front_{column}"].sum())
        blocks.append(Image(name, plots.png(figure),
                            f"Validation accuracy against {label}: {on_front} of "
                            f"{len(configs):,} configurations on the front.",
                            alt=f"Pareto front of validation accuracy against {label}",
                            half=True))
    front = configs[configs["on_front"]]
    objectives = literal(", ".join(f"{m} ({'max' if d == 'maximize' else 'min'})"
                                   for m, d in frames.objectives))
    which = (f"the study's objectives ({objectives})" if len(frames.objectives) > 1 else
             "validation accuracy and MACs (the study has one objective)")
    blocks.append(Text(f"**The front of {which}**: {len(front)} configuration(s), by MACs."))
    blocks.append(Table(_front_table(front.sort_values("macs")),
                        caption="Mean ± standard deviation over seeds. Test accuracy is "
                                "reported, never selected on."))
    return Section("fronts", "Pareto fronts", blocks)


def _configurations(frames: StudyFrames, paired_val: pd.DataFrame, paired_test: pd.DataFrame,
                    detailed: pd.DataFrame) -> Section:
    configs = frames.configs
    blocks: list[Any] = []
    if configs.empty:
        blocks.append(Text("No configuration has a completed run yet."))
        return Section("configurations", "Configurations over seeds", blocks)
    top = configs.sort_values("val_mean", ascending=False).head(MAX_CONFIG_ROWS)
    shown = pd.concat([detailed, top])
    shown = shown[~shown["config_hash"].duplicated()].sort_values("val_mean", ascending=False)
    table = _front_table(shown)
    table["seeds used"] = shown["seeds"].to_numpy()
    table["on front"] = ["yes" if v else "" for v in shown["on_front"]]
    table["reused"] = ["reused" if v else "" for v in shown["reused"]]
    more = len(configs) - len(shown)
    blocks.append(Table(table, caption=(
        "Mean ± sample standard deviation over seeds, by mean validation accuracy"
        + (f"; {more:,} more in configurations.csv" if more > 0 else "") + ".")))
    reference = _reference_row(frames)
    if reference is None:
        blocks.append(Text("No base configuration ran: no paired differences.", kind="note"))
        return Section("configurations", "Configurations over seeds", blocks)
    others = shown[shown["config_hash"] != frames.reference]
    hashes = [h for h in others["config_hash"] if h in paired_val.index
              and paired_val.loc[h, "n"] > 0]
    if not hashes:
        blocks.append(Text(f"No configuration shares a seed with the reference "
                           f"({literal(display_name(reference))}): no paired differences.",
                           kind="note"))
        return Section("configurations", "Configurations over seeds", blocks)
    rows = others.set_index("config_hash").loc[hashes]
    ref_macs = float(reference["macs"])
    diff = pd.DataFrame({
        "configuration": [display_name(r, 200) for _, r in rows.reset_index().iterrows()],
        "shared seeds": [count(paired_val.loc[h, "n"]) for h in hashes],
        "Δ validation, points [95% CI]": [points(*paired_val.loc[h, ["mean", "low", "high"]])
                                          for h in hashes],
        "Δ test, points [95% CI]": [points(*paired_test.loc[h, ["mean", "low", "high"]])
                                    if h in paired_test.index else "-" for h in hashes],
        "Δ MACs": [f"{(float(m) / ref_macs - 1) * 100:+.1f}%" for m in rows["macs"]],
    })
    blocks.append(Text(f"**Paired differences against {literal(display_name(reference))}**, "
                       f"on the "
                       f"seeds both ran (same initialisation and batch order)."))
    blocks.append(Table(diff, caption=(
        "Mean of the per-seed differences; the interval is mean ± t(0.975, n-1)·sd/√n over the "
        "n shared seeds, shown only for n ≥ 2.")))
    if all(paired_val.loc[h, "n"] < 2 for h in hashes):
        blocks.append(Text("Every pair shares one seed only, so there is no interval: run the "
                           "study with repeats ≥ 2 for one.", kind="note"))
    return Section("configurations", "Configurations over seeds", blocks)


def _ablation(frames: StudyFrames, paired_val: pd.DataFrame,
              paired_test: pd.DataFrame) -> Section | None:
    configs = frames.configs
    rows = configs[configs["role"] == "ablation"]
    reference = _reference_row(frames)
    if rows.empty or reference is None:
        return None
    values = []
    for text, factor in zip(rows["config"], rows["factor"], strict=True):
        config = json.loads(text)
        values.append(config.get(factor, ", ".join(f"{k}={v}" for k, v in config.items())))
    table = pd.DataFrame({
        "config_hash": rows["config_hash"].to_numpy(), "factor": rows["factor"].to_numpy(),
        "value": [json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in values],
        "n": rows["n"].to_numpy(), "macs": rows["macs"].to_numpy(dtype=float),
        "params": rows["params"].to_numpy(dtype=float), "reused": rows["reused"].to_numpy(),
    })
    for name, paired in (("d_val", paired_val), ("d_test", paired_test)):
        stats = paired.reindex(table["config_hash"])
        table[name] = stats["mean"].to_numpy(dtype=float)
        table[f"{name}_low"] = stats["low"].to_numpy(dtype=float)
        table[f"{name}_high"] = stats["high"].to_numpy(dtype=float)
        table[f"{name}_n"] = stats["n"].to_numpy(dtype=float)
    table["d_macs_pct"] = (table["macs"] / float(reference["macs"]) - 1) * 100
    table["d_params_pct"] = (table["params"] / float(reference["params"]) - 1) * 100
    table = table.sort_values(["factor", "value"], kind="stable").reset_index(drop=True)
    base_name = display_name(reference)
    shown = pd.DataFrame({
        "factor": table["factor"], "value": table["value"],
        "shared seeds": table["d_val_n"].map(count),
        "Δ validation, points [95% CI]": [points(m, lo, hi) for m, lo, hi in zip(
            table["d_val"], table["d_val_low"], table["d_val_high"], strict=True)],
        "Δ test, points [95% CI]": [points(m, lo, hi) for m, lo, hi in zip(
            table["d_test"], table["d_test_low"], table["d_test_high"], strict=True)],
        "Δ MACs": [f"{v:+.1f}%" for v in table["d_macs_pct"]],
        "Δ params": [f"{v:+.1f}%" for v in table["d_params_pct"]],
        "note": ["reused result" if r else "" for r in table["reused"]],
    })
    figure = plots.ablation_figure(table, base_name)
    return Section("ablation", "Ablation: one factor at a time", [
        Text(f"Each row changes one factor of {literal(base_name)} and keeps the rest; "
             f"differences are "
             f"paired on the seeds both ran."),
        Table(shown, caption="Accuracy changes in percentage points, mean over shared seeds "
                             "with a t-based 95% interval (n ≥ 2); cost changes are exact."),
        Image("ablation", plots.png(figure), "Accuracy and MAC changes per factor change.",
              alt="Ablation: accuracy and MAC change per factor"),
    ])


def _labels(frames: StudyFrames, detailed: pd.DataFrame) -> dict[str, str]:
    return {str(r["config_hash"]): legend_name(r) for _, r in detailed.iterrows()}


def _curves(frames: StudyFrames, detailed: pd.DataFrame, detail: int) -> Section:
    if detailed.empty:
        return Section("curves", "Learning curves", [Text("No completed run.")])
    labels = _labels(frames, detailed)
    epochs = epochs_frame(frames, list(labels))
    figure = plots.learning_curves_figure(epochs, labels)
    return Section("curves", "Learning curves", [
        Text(f"The baselines and up to {detail} models spread along the front: mean "
             f"over seeds, the band from the lowest to the highest seed."),
        Image("learning_curves", plots.png(figure),
              "Validation accuracy and training loss per epoch.", alt="Learning curves"),
    ])


def _layer_table(layers: pd.DataFrame) -> pd.DataFrame:
    def share(column: str) -> list[str]:
        return [f"{count(v)} ({s * 100:.1f}%)" if _finite(s) else count(v)
                for v, s in zip(layers[column], layers[f"{column}_share"], strict=True)]

    return pd.DataFrame({
        "layer": layers["layer"].map(count), "block": layers["block"].astype(str),
        "args": layers["args"].astype(str), "output": layers["output"].astype(str),
        "params (share)": share("params"), "MACs (share)": share("macs"),
        "saved for backward, bytes/sample (share)": share("saved_bytes"),
    })


def _costs(frames: StudyFrames, detailed: pd.DataFrame) -> Section:
    blocks: list[Any] = [Text(
        "Per layer: parameters, multiply-adds and the bytes autograd keeps for the backward "
        "pass (training memory per sample, fp32), each with its share of the model.")]
    for _, row in detailed.iterrows():
        record = frames.record_of(str(row["config_hash"]))
        if record is None or not record.layers:
            continue
        layers = layers_frame(record)
        name = display_name(row, 200)
        blocks.append(Text(f"**{literal(name)}**"))
        blocks.append(Table(_layer_table(layers), caption=(
            f"Totals: {count(record.params)} parameters, {count(record.macs)} MACs (batch norm "
            f"{literal(record.bn)}), {count(record.saved_bytes or 0)} bytes saved per sample.")))
        figure = plots.layers_figure(layers, legend_name(row))
        blocks.append(Image(f"layers_{row['id']}", plots.png(figure),
                            f"Where the cost of {literal(name)} is.",
                            alt=f"Per-layer costs of {name}"))
    return Section("costs", "Where the cost is", blocks)


def _device(frames: StudyFrames) -> str:
    devices = _unique(list(frames.runs["device_name"]))
    if not devices:
        return "unknown device"
    return devices[0] + (f" (and {len(devices) - 1} other device(s))" if len(devices) > 1
                         else "")


def _speed(frames: StudyFrames, detailed: pd.DataFrame) -> Section:
    if detailed.empty:
        return Section("speed", "Training and inference speed", [Text("No completed run.")])
    reference = _reference_row(frames)
    device = _device(frames)
    batch = [int(b) for b in _unique(list(frames.runs["latency_batch"])) if _finite(b)]
    rows = detailed.copy()
    names = [display_name(r, 200) for _, r in rows.iterrows()]
    rows["label"] = [legend_name(r) for _, r in rows.iterrows()]
    table = pd.DataFrame({
        "model": names,
        "train images/s": [f"{m:.1f} ± {s:.1f}" if _finite(s) else num(m, 4)
                           for m, s in zip(rows["train_ips"], rows["train_ips_std"],
                                           strict=True)],
        "train time s": rows["train_seconds"].map(lambda v: f"{v:,.0f}" if _finite(v) else "-"),
        "latency ms": rows["latency_ms"].map(ms),
        "inference images/s": [
            f"{batch[0] * 1000 / v:,.0f}" if _finite(v) and batch else "-"
            for v in rows["latency_ms"]],
    })
    if reference is not None:
        ref_ips, ref_lat = reference["train_ips"], reference["latency_ms"]
        table[f"training speed vs {display_name(reference)}"] = [
            f"{v / ref_ips:.2f}x" if _finite(v) and _finite(ref_ips) else "-"
            for v in rows["train_ips"]]
        table[f"inference speed vs {display_name(reference)}"] = [
            f"{ref_lat / v:.2f}x" if _finite(v) and _finite(ref_lat) else "-"
            for v in rows["latency_ms"]]
    figure = plots.speed_figure(rows, device)
    return Section("speed", "Training and inference speed", [
        Text(f"Measured on **{literal(device)}** by the study's workers: training throughput "
             f"is the "
             f"median images/s over a run's epochs (mean over seeds); latency is the median "
             f"forward time in inference mode at batch {', '.join(map(str, batch)) or '?'} "
             f"after warm-up."),
        Table(table, caption=(
            f"Ratios above 1 mean faster than {literal(display_name(reference))}."
            if reference is not None else
            "No base or baseline model ran in this study: absolute speeds only.")),
        Image("speed", plots.png(figure), f"Training and inference speed on {literal(device)}.",
              alt="Training and inference speed"),
        Text(DEVICE_NOTE, kind="note"),
    ])


def _claims(frames: StudyFrames) -> Section | None:
    """The claims the study file states (``claims:``), each judged by its rule; a baseline
    study begun before study files had claims gets the baseline's built-in ones."""
    results = frames.results
    config = results.config
    try:
        claims, built_in = claims_mod.study_claims(config, frames.configs,
                                                   f"study {results.name!r} (stored config)")
    except StudyError as err:  # say so, and report the rest (a newer dwsearch wrote them?)
        return Section("claims", "Claims, measured", [Text(
            f"The claims stored with this study cannot be read: {literal(str(err))}",
            kind="note")])
    if claims is None:
        return None
    train = config.get("train") or {}
    data = config.get("data") or {}
    records = [t.record for t in results.trials if t.record is not None]
    train_images = records[0].train_images if records else None
    epochs = train.get("epochs")
    if data.get("train_subset") and train_images is None:
        train_images = data.get("train_subset")
    result = claims_mod.judge_claims(claims, frames.configs, frames.runs, epochs=epochs,
                                     train_images=train_images, device=_device(frames))
    table = pd.DataFrame([{"claim": v.claim, "source": v.source, "measured": v.measured,
                           "verdict": v.verdict, "rule": v.rule} for v in result.verdicts])
    verdicts = Counter(v.verdict for v in result.verdicts)
    document = f" of {code(claims.document)}" if claims.document else ""
    if built_in:
        intro = (f"The baseline study's claims{document}, each judged by its rule on this "
                 f"study's measurements. This study ran seed_cnn and seed_dwsep and was begun "
                 f"before study files had a `claims:` section: these are the claims built "
                 f"into dwsearch, those of `studies/baseline.yaml`.")
    else:
        intro = (f"The claims{document} that the study file states (`claims:`), each judged "
                 f"by its rule on this study's measurements.")
    recipe = [f"{claims.epochs} epochs" if claims.epochs else "",
              f"{claims.train_images:,} training images" if claims.train_images else ""]
    if any(recipe):
        intro += (f" Accuracy claims are for {' on '.join(r for r in recipe if r)}; a study "
                  f"trained otherwise does not measure them.")
    return Section("claims", "Claims, measured", [
        Text(intro),
        Table(result.models, caption=(
            "The models the claims name, as measured: mean ± standard deviation over seeds "
            "where a metric varies between seeds.")),
        Table(table, caption=(
            f"{verdicts.get('confirmed', 0)} confirmed, {verdicts.get('not confirmed', 0)} not "
            f"confirmed, {verdicts.get('not shown', 0)} not shown (the seeds disagree), "
            f"{verdicts.get('not measured', 0)} not measured. Speed claims hold for the device "
            f"the study ran on only, and are judged seed by seed.")),
    ])


def _diagrams(frames: StudyFrames, detailed: pd.DataFrame) -> Section:
    blocks: list[Any] = [Text(
        "Layers top to bottom with block type, kernel, channels, output shape, parameters and "
        "MACs; the bars show each layer's share of the MACs.")]
    for _, row in detailed.iterrows():
        record = frames.record_of(str(row["config_hash"]))
        if record is None or len(record.layers) != len(record.spec.get("layers") or []):
            continue
        name = display_name(row, 200)
        figure = diagram_figure(record.spec, record.layers, title=legend_name(row),
                                note=f"batch norm {record.bn} in MACs; spec hash "
                                     f"{record.spec_hash}")
        blocks.append(Image(f"diagram_{row['id']}", plots.png(figure, dpi=110),
                            f"Architecture of {literal(name)}.", alt=f"Architecture of {name}"))
    return Section("architectures", "Architectures", blocks)


def _excluded(frames: StudyFrames) -> Section:
    out = frames.trials[~frames.trials["in_stats"]]
    if out.empty:
        return Section("excluded", "Trials not in the statistics",
                       [Text("Every trial is in the statistics.")])
    shown = out.head(MAX_EXCLUDED_ROWS)
    table = pd.DataFrame({
        "trial": shown["trial"].map(count), "status": shown["status"].astype(str),
        "reason": shown["excluded"].astype(str).map(lambda t: _short(t, 120)),
        "configuration": shown["label"].astype(str).map(lambda t: _short(t, 70)),
        "seed": shown["seed"].map(lambda v: str(int(v)) if _finite(v) else "-"),
    })
    more = len(out) - len(shown)
    return Section("excluded", "Trials not in the statistics", [Table(table, caption=(
        f"{len(out):,} trial(s)" + (f"; the first {len(shown)} shown, every one in trials.csv"
                                    if more > 0 else "") + "."))])
