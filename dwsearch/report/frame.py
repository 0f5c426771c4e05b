"""A study's stored results as pandas DataFrames: trials, runs in the statistics,
configurations (aggregated over seeds), epochs and layers.

The rules of what counts (also printed in every report):

* A trial enters statistics and fronts only when it completed (Optuna state COMPLETE, status
  ``completed``), has a run record with a validation accuracy, and was not superseded (its
  worker died or was interrupted and the slot was retried as another trial).
* A reused result (``reused_from``: copied from an identical earlier run) is a real trial and
  counts, marked ``reused``; but a second run of the same configuration with the same seed
  adds no information, so only the first of those enters the statistics.
* Pruned, failed, diverged, infeasible, killed, interrupted and running trials are listed
  with the reason and never enter statistics or fronts.

Only :mod:`dwsearch.records` data is read: no torch, no models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dwsearch.metrics import METRICS
from dwsearch.records import RunRecord
from dwsearch.report import DEFAULT_DETAIL
from dwsearch.report.pareto import pareto_mask
from dwsearch.spec import parse_layer_key
from dwsearch.study.results import StudyResults, TrialResult

__all__ = [
    "COMPRESSION_FIELDS",
    "COMPRESSION_METHODS",
    "COST_COLUMNS",
    "DEPLOY_COLUMNS",
    "DEPLOY_EAGER",
    "OBJECTIVE_COLUMNS",
    "CompressionField",
    "StudyFrames",
    "compression_label",
    "config_label",
    "epochs_frame",
    "layers_frame",
    "make_frames",
]

# Study objective metric -> column of the configurations frame (from the metrics table).
OBJECTIVE_COLUMNS = {m.name: m.column for m in METRICS.values() if m.column is not None}
# Where models ship (a study's deploy: section): per-run column -> per-configuration column
# (its mean over seeds), from the metrics table; and eager PyTorch timed beside them.
DEPLOY_COLUMNS = {m.run_column: m.column for m in METRICS.values()
                  if m.deploy is not None and m.run_column and m.column}
DEPLOY_EAGER = "deploy_eager_ms"
# Measured by another section of the study (qat:): per-run column -> per-configuration mean.
SECTION_COLUMNS = {m.run_column: m.column for m in METRICS.values()
                   if m.section is not None and m.run_column and m.column}
# The costs that accuracy is plotted against, each with its own front.
COST_COLUMNS = {"params": "parameters", "macs": "MACs", "latency_ms": "latency (ms)"}

# How a trial's model was compressed (RunRecord.compression, by method): the method's key ->
# its label, in the order combined labels are written ("distilled+pruned+qat"). "none": a
# block-choice trial, trained as sampled.
COMPRESSION_METHODS = {"distill": "distilled", "prune": "pruned", "qat": "qat"}
NOT_COMPRESSED = "none"


@dataclass(frozen=True)
class CompressionField:
    """One setting or measurement of a compressed trial: a per-run column read from
    ``record.compression[method]`` at ``path``, and a per-configuration column of the same
    name."""

    column: str
    method: str  # a key of COMPRESSION_METHODS
    path: tuple[str, ...]  # keys inside compression[method]
    over_seeds: str  # per configuration: "mean" (a measurement) or "first" (a setting)
    read: Callable[[Any], Any] | None = None  # the stored value -> the cell (None: as stored)


def _count_of(value: Any) -> Any:
    """A number of epochs stored as the number or as the list of the epochs' metrics."""
    return len(value) if isinstance(value, (list, tuple)) else value


COMPRESSION_FIELDS = (
    CompressionField("teacher_name", "distill", ("teacher_name",), "first"),
    CompressionField("teacher_spec_hash", "distill", ("teacher_spec_hash",), "first"),
    CompressionField("distill_alpha", "distill", ("alpha",), "first"),
    CompressionField("distill_temperature", "distill", ("temperature",), "first"),
    CompressionField("teacher_logits", "distill", ("teacher_logits",), "first"),  # or per_batch
    CompressionField("teacher_seconds", "distill", ("teacher_seconds",), "mean"),  # cached only
    CompressionField("prune_from", "prune", ("from", "name"), "first"),
    CompressionField("prune_from_hash", "prune", ("from", "spec_hash"), "first"),
    CompressionField("prune_target", "prune", ("target",), "first"),  # e.g. "{macs: 0.5}"
    CompressionField("prune_importance", "prune", ("importance",), "first"),
    CompressionField("prune_ratio", "prune", ("ratio",), "mean"),  # share of channels cut
    CompressionField("params_before_prune", "prune", ("before", "params"), "first"),
    CompressionField("macs_before_prune", "prune", ("before", "macs"), "first"),
    CompressionField("prune_finetune_epochs", "prune", ("finetune_epochs",), "first"),
    # The source's validation accuracy, and the pruned model's before fine-tuning.
    CompressionField("val_accuracy_before_prune", "prune", ("val_accuracy_before",), "mean"),
    CompressionField("val_accuracy_pruned", "prune", ("val_accuracy_pruned",), "mean"),
    # Validation accuracy in fp32, of the post-training int8 program and after QAT (None:
    # QAT did not run); ran_qat's mean over seeds is the share of seeds that ran it.
    CompressionField("fp32_val_accuracy", "qat", ("fp32_accuracy",), "mean"),
    CompressionField("ptq_val_accuracy", "qat", ("ptq_accuracy",), "mean"),
    CompressionField("qat_val_accuracy", "qat", ("qat_accuracy",), "mean"),
    CompressionField("ran_qat", "qat", ("ran_qat",), "mean"),
    CompressionField("qat_max_drop", "qat", ("max_drop",), "first"),
    CompressionField("qat_epochs", "qat", ("epochs",), "first", _count_of),
)
_COMPRESSION_COLUMNS = ["compression", *(f.column for f in COMPRESSION_FIELDS)]
_COMPRESSION_MEANS = [f.column for f in COMPRESSION_FIELDS if f.over_seeds == "mean"]


def _applied(compression: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The methods a record's model went through, method -> its data. Distillation with
    alpha 0 is plain training (the teacher's term has no weight), so it does not count."""
    out: dict[str, Mapping[str, Any]] = {}
    for method in COMPRESSION_METHODS:
        entry = (compression or {}).get(method)
        if not isinstance(entry, Mapping):
            continue
        if method == "distill" and entry.get("alpha") == 0:
            continue
        out[method] = entry
    return out


def compression_label(compression: Mapping[str, Any] | None) -> str:
    """How a record's model was compressed, for people: "none", "distilled", "pruned",
    "qat", or the methods joined by "+" in that order ("pruned+qat")."""
    applied = _applied(compression)
    return "+".join(COMPRESSION_METHODS[m] for m in applied) or NOT_COMPRESSED


def _compression_cells(compression: Mapping[str, Any] | None) -> dict[str, Any]:
    applied = _applied(compression)
    row: dict[str, Any] = {"compression": compression_label(compression)}
    for entry in COMPRESSION_FIELDS:
        value: Any = applied.get(entry.method)
        for key in entry.path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None and entry.read is not None:
            value = entry.read(value)
        row[entry.column] = value
    return row


_STATE_STATUS = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "error",
                 "RUNNING": "running", "WAITING": "waiting"}
MAX_DETAILED = DEFAULT_DETAIL


def config_label(config: Mapping[str, Any], name: str | None = None) -> str:
    """A configuration for people: the base's name for ``{}``, the model for ``{model: m}``,
    else ``key=value`` pairs joined by "; ", with per-layer choices of one argument merged
    (``layers[0].block=dwsep`` and ``layers[1].block=conv`` read
    ``layers[0,1].block=dwsep,conv``)."""
    if not config:
        return name or "base"
    parts = [str(config["model"])] if "model" in config else []
    merged: dict[str, list[tuple[str, str]]] = {}
    for key, value in config.items():
        if key == "model":
            continue
        parsed = parse_layer_key(key)
        if parsed is None or not parsed[0].isdigit():  # only one layer's choice is merged
            parts.append(f"{key}={_short(value)}")
            continue
        layer, arg = parsed
        if arg not in merged:
            merged[arg] = []
            parts.append(f"\0{arg}")  # placeholder: filled once every layer is seen
        merged[arg].append((layer, _short(value)))
    out = []
    for part in parts:
        if part.startswith("\0"):
            items = merged[part[1:]]
            values = [v for _, v in items]
            shown = values[0] if len(set(values)) == 1 else ",".join(values)
            out.append(f"layers[{','.join(i for i, _ in items)}].{part[1:]}={shown}")
        else:
            out.append(part)
    return "; ".join(out)


def _short(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _status(trial: TrialResult) -> str:
    status = trial.info.status
    return status if status else _STATE_STATUS.get(trial.state, trial.state.lower())


def _exclusion(trial: TrialResult, status: str) -> str | None:
    """Why a trial stays out of statistics and fronts (None: it counts)."""
    record = trial.record
    if trial.superseded:
        return f"superseded: retried as trial {trial.info.retried_as}"
    if trial.state == "PRUNED" or status == "pruned":
        epochs = len(record.epochs) if record is not None else 0
        return f"pruned after epoch {epochs}" if epochs else "pruned"
    if trial.state in ("RUNNING", "WAITING"):
        return trial.state.lower()
    if trial.state != "COMPLETE" or status != "completed":
        if not trial.error:
            return status
        return trial.error if trial.error.startswith(status) else f"{status}: {trial.error}"
    if record is None:
        return "no run record"
    if record.status != "completed":
        return f"run {record.status}: {record.message}"
    if record.val_accuracy is None or not math.isfinite(record.val_accuracy):
        return "no validation accuracy"
    return None


def _trial_row(trial: TrialResult, objectives: Sequence[str]) -> dict[str, Any]:
    info = trial.info
    record = trial.record
    status = _status(trial)
    config = trial.config
    row: dict[str, Any] = {
        "trial": trial.number,
        "state": trial.state,
        "status": status,
        "role": info.role,
        "factor": info.factor,
        "slot": info.slot,
        "repeat": info.repeat,
        "seed": info.seed if info.seed is not None else (
            record.seed if record is not None else None),
        "config_hash": info.config_hash or (record.spec_hash if record else None),
        "config": json.dumps(dict(config), sort_keys=True, default=str),
        "reused_from": info.reused_from,
        "retry_of": info.retry_of,
        "retried_as": info.retried_as,
        "worker": info.worker,
        "weights": info.weights,
        "error": trial.error,
        "started": trial.started,
        "finished": trial.finished,
        "excluded": _exclusion(trial, status),
    }
    for key, value in config.items():
        row[f"choice:{key}"] = _short(value) if isinstance(value, (list, dict)) else value
    if record is not None:
        latency = record.latency or {}
        row.update({
            "name": record.name,
            "spec_hash": record.spec_hash,
            "params": record.params,
            "macs": record.macs,
            "flops": record.flops,
            "activations": record.activations,
            "saved_bytes": record.saved_bytes,
            "latency_ms": record.latency_ms,
            "latency_batch": latency.get("batch_size"),
            "train_ips": METRICS["train_ips"].read(record),
            "val_accuracy": record.val_accuracy,
            "best_val_accuracy": record.best_val_accuracy,
            "test_accuracy": record.test_accuracy,
            "test_loss": record.test_loss,
            "epochs_trained": len(record.epochs),
            "train_seconds": record.train_seconds,
            "record_status": record.status,
            "device": record.device,
            "device_name": record.device_name,
            "latency_device": latency.get("device_name"),
            "precision": record.precision,
            "threads": record.threads,
            "host": record.host,
            "bn": record.bn,
            "lossy_data": record.lossy_data,
            **_compression_cells(record.compression),
            **{m.run_column: m.read(record) for m in METRICS.values()
               if m.section is not None and m.run_column},
        })
        if record.deploy is not None:
            eager = record.deploy.get("eager")
            row[DEPLOY_EAGER] = eager.get("median_ms") if isinstance(eager, Mapping) else None
            for entry in METRICS.values():
                if entry.deploy is not None and entry.run_column:
                    row[entry.run_column] = entry.read(record)
    if trial.values is not None:
        for metric, value in zip(objectives, trial.values, strict=False):
            row[f"value:{metric.split(':')[0]}"] = value
    return row


_COLUMNS = [
    "trial", "state", "status", "excluded", "in_stats", "reused", "role", "factor", "label",
    "config", "config_hash", "slot", "repeat", "seed", "name", "spec_hash", "params", "macs",
    "flops", "activations", "saved_bytes", "latency_ms", "latency_batch", "train_ips",
    "val_accuracy", "best_val_accuracy", "test_accuracy", "test_loss", "epochs_trained",
    "train_seconds", "record_status", "device", "device_name", "latency_device", "precision",
    "threads", "host", "bn", "lossy_data", "reused_from", "retry_of", "retried_as", "worker",
    "weights", "error", "started", "finished", DEPLOY_EAGER, *DEPLOY_COLUMNS, *SECTION_COLUMNS,
    *_COMPRESSION_COLUMNS,
]


@dataclass(frozen=True)
class StudyFrames:
    """The tables a report is made of."""

    results: StudyResults
    trials: pd.DataFrame  # one row per trial (all of them), in trial order
    runs: pd.DataFrame  # the trials in the statistics
    configs: pd.DataFrame  # one row per configuration with runs, aggregated over seeds
    reference: str | None  # config_hash of the reference configuration (the base), if any
    objectives: tuple[tuple[str, str], ...]  # (metric, "maximize"|"minimize")

    @property
    def records(self) -> Mapping[int, RunRecord]:
        return {t.number: t.record for t in self.results.trials if t.record is not None}

    def record_of(self, config_hash: str) -> RunRecord | None:
        """A run record of the configuration (its first run in the statistics)."""
        rows = self.runs[self.runs["config_hash"] == config_hash]
        if rows.empty:
            return None
        number = int(rows["trial"].iloc[0])
        return next(t.record for t in self.results.trials if t.number == number)

    def detailed(self, limit: int = MAX_DETAILED) -> pd.DataFrame:
        """The configurations shown in detail: the baselines, then up to ``limit`` front
        models spread along the front (by MACs), the most accurate always among them."""
        configs = self.configs
        baselines = configs[configs["baseline"].notna()]
        front = configs[configs["on_front"] & configs["baseline"].isna()].sort_values("macs")
        if len(front) > limit:
            if limit <= 0:
                return baselines
            best = front["val_mean"].idxmax()
            picks = set(np.linspace(0, len(front) - 1, limit - 1).round().astype(int))
            chosen = [front.index[i] for i in sorted(picks)]
            if best not in chosen:
                chosen.append(best)
            front = front.loc[sorted(set(chosen), key=list(front.index).index)]
        return pd.concat([baselines, front])


def _objectives(results: StudyResults) -> tuple[tuple[str, str], ...]:
    metrics = [str(o).split(":")[0] for o in results.objectives]
    directions = list(results.directions)
    if len(directions) != len(metrics):
        directions = ["maximize" if "accuracy" in m else "minimize" for m in metrics]
    return tuple(zip(metrics, directions, strict=True))


def _baseline_names(meta: Mapping[str, Any]) -> dict[str, str]:
    """spec hash -> name of the models the study marks (its base and baselines)."""
    names: dict[str, str] = {}
    entries = list(meta.get("baselines") or [])
    base = meta.get("base")
    if isinstance(base, Mapping):
        entries.insert(0, base)
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("hash"):
            names.setdefault(str(entry["hash"]), str(entry.get("name") or entry["hash"]))
    return names


def make_frames(results: StudyResults) -> StudyFrames:
    """Every table of the report, from the stored results."""
    objectives = _objectives(results)
    rows = [_trial_row(t, [m for m, _ in objectives]) for t in results.trials]
    trials = pd.DataFrame(rows)
    for column in _COLUMNS:
        if column not in trials:
            trials[column] = None
    trials["reused"] = trials["reused_from"].notna()
    stored_base = results.meta.get("base")
    base: Mapping[str, Any] = stored_base if isinstance(stored_base, Mapping) else {}
    base_name = base.get("name")
    labels = []
    for t in results.trials:
        name = t.record.name if t.record is not None else None
        labels.append(config_label(t.config, name or base_name))
    trials["label"] = labels
    trials["in_stats"] = trials["excluded"].isna()
    # A second run of one configuration with one seed (a reused result) adds nothing.
    counted = trials[trials["in_stats"]]
    repeat = counted.duplicated(["config_hash", "seed"], keep="first")
    if repeat.any():
        first = counted.drop_duplicates(["config_hash", "seed"]).set_index(
            ["config_hash", "seed"])["trial"]
        for index in counted.index[repeat]:
            key = (trials.at[index, "config_hash"], trials.at[index, "seed"])
            trials.at[index, "excluded"] = (f"same configuration and seed as trial "
                                            f"{first.loc[key]} (counted once)")
        trials["in_stats"] = trials["excluded"].isna()
    choices = sorted(c for c in trials.columns if c.startswith("choice:"))
    values = sorted(c for c in trials.columns if c.startswith("value:"))
    trials = trials[[*_COLUMNS, *choices, *values]]
    runs = trials[trials["in_stats"]]
    configs = _configs(runs, _baseline_names(results.meta), base)
    reference = _reference(configs, base)
    configs = _add_fronts(configs, objectives)
    return StudyFrames(results, trials, runs, configs, reference, objectives)


def _configs(runs: pd.DataFrame, baselines: Mapping[str, str],
             base: Mapping[str, Any]) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=[
            "config_hash", "id", "label", "role", "factor", "config", "spec_hash", "name",
            "params", "macs", "activations", "saved_bytes", "n", "seeds", "val_mean", "val_std",
            "best_val_mean", "test_mean", "test_std", "latency_ms", "train_ips",
            "train_ips_std", "train_seconds", "epochs", "reused", "device_name", "baseline",
            "is_base", "on_front", "front_params", "front_macs", "front_latency_ms",
            DEPLOY_EAGER, *DEPLOY_COLUMNS.values(), *SECTION_COLUMNS.values(),
            *_COMPRESSION_COLUMNS])
    numeric = runs.astype({c: float for c in ("val_accuracy", "best_val_accuracy",
                                              "test_accuracy", "latency_ms", "train_ips",
                                              "train_seconds", DEPLOY_EAGER,
                                              *DEPLOY_COLUMNS, *SECTION_COLUMNS,
                                              *_COMPRESSION_MEANS)})
    grouped = numeric.groupby("config_hash", sort=False)
    configs = grouped.agg(
        id=("trial", "min"), label=("label", "first"), role=("role", "first"),
        factor=("factor", "first"), config=("config", "first"),
        spec_hash=("spec_hash", "first"), name=("name", "first"), params=("params", "first"),
        macs=("macs", "first"), activations=("activations", "first"),
        saved_bytes=("saved_bytes", "first"), n=("trial", "size"),
        val_mean=("val_accuracy", "mean"), val_std=("val_accuracy", "std"),
        best_val_mean=("best_val_accuracy", "mean"), test_mean=("test_accuracy", "mean"),
        test_std=("test_accuracy", "std"), latency_ms=("latency_ms", "mean"),
        train_ips=("train_ips", "mean"), train_ips_std=("train_ips", "std"),
        train_seconds=("train_seconds", "mean"), epochs=("epochs_trained", "max"),
        reused=("reused", "any"), device_name=("device_name", "first"),
        **{DEPLOY_EAGER: (DEPLOY_EAGER, "mean")},
        **{column: (run_column, "mean") for run_column, column in DEPLOY_COLUMNS.items()},
        **{column: (run_column, "mean") for run_column, column in SECTION_COLUMNS.items()},
        compression=("compression", "first"),
        **{f.column: (f.column, f.over_seeds) for f in COMPRESSION_FIELDS},
    )
    # int(): a column with a missing seed (a killed trial) is float; seeds are integers
    seeds = grouped["seed"].agg(lambda s: ",".join(str(int(v)) for v in sorted(s)))
    configs.insert(configs.columns.get_loc("n") + 1, "seeds", seeds)
    configs = configs.reset_index()
    # Marked by name only where the configuration is the model itself ({} or {model: m}),
    # not where a changed factor happens to give the same architecture.
    pure = configs["config"].map(lambda text: set(json.loads(text)) <= {"model"})
    configs["baseline"] = configs["spec_hash"].map(baselines).where(pure)
    # A grid whose base is one combination of choices has no pure configuration: there the
    # first configuration with a baseline's architecture carries its name.
    for spec_hash, name in baselines.items():
        if not (configs["baseline"] == name).any():
            hits = configs.index[configs["spec_hash"] == spec_hash]
            if len(hits):
                configs.loc[hits[0], "baseline"] = name
    base_hash = base.get("hash") if isinstance(base, Mapping) else None
    configs["is_base"] = (configs["role"] == "base") | (
        (configs["spec_hash"] == base_hash) if base_hash else False)
    return configs.sort_values("id").reset_index(drop=True)


def _reference(configs: pd.DataFrame, base: Mapping[str, Any]) -> str | None:
    """The configuration others are compared with: the one with role ``base``, else the
    first with the base's architecture."""
    if configs.empty:
        return None
    for mask in (configs["role"] == "base", configs["is_base"]):
        hits = configs[mask]
        if not hits.empty:
            return str(hits.sort_values("n", ascending=False, kind="stable")["config_hash"]
                       .iloc[0])
    return None


def _add_fronts(configs: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> pd.DataFrame:
    configs = configs.copy()
    if configs.empty:
        return configs
    for column in COST_COLUMNS:
        values = configs[["val_mean", column]].astype(float).to_numpy()
        configs[f"front_{column}"] = pareto_mask(values, [True, False])
    columns = [OBJECTIVE_COLUMNS.get(m) for m, _ in objectives]
    if len(objectives) >= 2 and all(c is not None for c in columns):
        values = configs[columns].astype(float).to_numpy()
        configs["on_front"] = pareto_mask(values, [d == "maximize" for _, d in objectives])
    else:  # one objective: the accuracy-MACs front stands for it
        configs["on_front"] = configs["front_macs"]
    return configs


def epochs_frame(frames: StudyFrames, config_hashes: Sequence[str]) -> pd.DataFrame:
    """Per-epoch metrics of every run of the given configurations (one row per run and
    epoch), for learning curves."""
    wanted = set(config_hashes)
    rows = []
    runs = frames.runs[frames.runs["config_hash"].isin(wanted)]
    records = frames.records
    for number, config_hash in zip(runs["trial"], runs["config_hash"], strict=True):
        record = records[int(number)]
        for epoch in record.epochs:
            rows.append({"trial": int(number), "config_hash": config_hash,
                         "epoch": epoch.epoch, "train_loss": epoch.train_loss,
                         "train_accuracy": epoch.train_accuracy, "val_loss": epoch.val_loss,
                         "val_accuracy": epoch.val_accuracy, "lr": epoch.lr,
                         "seconds": epoch.seconds,
                         "images_per_second": epoch.images_per_second})
    return pd.DataFrame(rows, columns=["trial", "config_hash", "epoch", "train_loss",
                                       "train_accuracy", "val_loss", "val_accuracy", "lr",
                                       "seconds", "images_per_second"])


def layers_frame(record: RunRecord) -> pd.DataFrame:
    """The record's per-layer costs with each layer's share of the model's total."""
    table = pd.DataFrame([dict(row) for row in record.layers])
    for column in ("params", "macs", "activations", "saved_bytes"):
        if column not in table:
            table[column] = np.nan
        total = table[column].sum()
        table[f"{column}_share"] = table[column] / total if total else np.nan
    return table
