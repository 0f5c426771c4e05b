"""A document's claims about a study's models beside what the study measured.

A study file states the claims its report checks in its ``claims:`` section
(:class:`~dwsearch.study.config.Claims`): each claim in the document's words, where the
document says it, and a rule on a metric of the metrics table (:data:`dwsearch.metrics.METRICS`):

* ``value``: the metric of one model (its mean over seeds) lies within a bound;
* ``ratio``: the metric of one model divided by that of another;
* ``difference``: one model's minus another's, paired on the seeds both ran;
* ``speed``: how many times as fast one model is as another (training images/s, or latency:
  lower is faster), judged seed by seed: confirmed when every seed meets the bound, not
  confirmed when none does, ``not shown`` when the seeds disagree (one noisy timing must not
  decide it).

Verdicts: ``confirmed``, ``not confirmed``, ``not shown`` or ``not measured`` (with why: a
model that did not run, a metric not measured, or, for accuracy claims, a recipe other than
the document's: other epochs or fewer training images). Speed claims hold for the device the
study ran on only.

A stored study keeps its claims in its stored config. Baseline studies begun before study
files had a ``claims:`` section have none there; a study that ran both ``seed_cnn`` and
``seed_dwsep`` and stores no ``claims`` key is checked against the baseline study's claims
built into dwsearch (``baseline_claims.yaml`` beside this module, equal to the section of
``studies/baseline.yaml``).
"""

from __future__ import annotations

import math
import numbers
import re
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dwsearch.errors import StudyError
from dwsearch.metrics import METRICS, Metric
from dwsearch.report.stats import paired_differences
from dwsearch.study.config import Bound, Claim, Claims, parse_claims
from dwsearch.yamlio import load_yaml

__all__ = ["BASELINE_MODELS", "ClaimsReport", "Verdict", "baseline_claims", "judge_claims",
           "study_claims"]

CONFIRMED, NOT_CONFIRMED, NOT_MEASURED = "confirmed", "not confirmed", "not measured"
NOT_SHOWN = "not shown"  # measured, but the measurements disagree
# The models of the baseline study: a stored study that ran both and stores no claims section
# (begun before there was one) is checked against the baseline's claims.
BASELINE_MODELS = ("seed_cnn", "seed_dwsep")
BASELINE_CLAIMS_FILE = Path(__file__).with_name("baseline_claims.yaml")


@dataclass(frozen=True)
class Verdict:
    claim: str  # what the document says
    source: str  # where in the document
    measured: str  # the numbers, in words
    verdict: str  # confirmed / not confirmed / not shown / not measured
    rule: str  # how the verdict was reached


@dataclass(frozen=True)
class ClaimsReport:
    verdicts: tuple[Verdict, ...]
    models: pd.DataFrame  # the models the claims name, with the metrics they use, measured


def baseline_claims() -> Claims:
    """The baseline study's claims, built in (those of ``studies/baseline.yaml``)."""
    source = str(BASELINE_CLAIMS_FILE)
    data = load_yaml(BASELINE_CLAIMS_FILE.read_text(encoding="utf-8"), source, StudyError)
    claims = parse_claims(data["claims"], source)
    assert claims is not None
    return claims


def study_claims(config: Mapping[str, Any], configs: pd.DataFrame, source: str
                 ) -> tuple[Claims | None, bool]:
    """The claims a stored study's report checks, and whether they are the built-in baseline
    claims of a study begun before study files had a ``claims:`` section. ``config`` is the
    study's stored config; ``source`` names it in errors."""
    if "claims" in config:
        return parse_claims(config["claims"], source), False
    ran = set(configs["baseline"].dropna()) if "baseline" in configs else set()
    if set(BASELINE_MODELS) <= ran:
        return baseline_claims(), True
    return None, False


def _finite(*values: Any) -> bool:
    return all(isinstance(v, numbers.Real) and not isinstance(v, bool)
               and math.isfinite(float(v)) for v in values)


# -- numbers in words, by unit of the metrics table ---------------------------------------------


def _number(metric: Metric, value: float) -> str:
    """``value`` of ``metric`` without its unit."""
    if metric.unit == "fraction":
        return f"{value * 100:.2f}"
    if metric.unit in ("parameters", "MACs", "elements"):
        return f"{int(value):,}"
    if metric.unit == "bytes":
        return f"{value / 2**20:.2f}"
    if metric.unit == "ms":
        return f"{value:.3g}"
    return f"{value:.1f}"


def _unit(metric: Metric) -> str:
    return {"fraction": "%", "bytes": " MiB", "ms": " ms", "images/s": " images/s"}.get(
        metric.unit, f" {metric.unit}")


def _shown(metric: Metric, value: float) -> str:
    return _number(metric, value) + _unit(metric)


def _bound_number(metric: Metric | None, value: float) -> str:
    """A bound as written in a rule: 70% for a fraction, 10M for a count, 1.3 for a ratio."""
    if metric is None:
        return f"{value:g}"
    if metric.unit == "fraction":
        return f"{value * 100:g}%"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}" + (
                f" {metric.unit}" if metric.unit in ("bytes", "ms", "images/s") else "")
    return f"{value:g}" + (f" {metric.unit}" if metric.unit in ("bytes", "ms", "images/s")
                           else "")


def _bound(bound: Bound, number: Callable[[float], str]) -> str:
    if bound.kind == "between":
        assert bound.high is not None
        return f"is in [{number(bound.low)}, {number(bound.high)}]"
    words = {"at_least": "is at least", "at_most": "is at most", "above": "is above",
             "below": "is below"}
    return f"{words[bound.kind]} {number(bound.low)}"


def _speed_bound(bound: Bound) -> str:
    if bound.kind == "between":
        return f"between {bound.low:g}x and {bound.high:g}x as fast as"
    words = {"at_least": "at least", "at_most": "at most", "above": "more than",
             "below": "less than"}
    return f"{words[bound.kind]} {bound.low:g}x as fast as"


def _points(metric: Metric) -> Callable[[float], str]:
    """A difference as a rule writes it: of a fraction in points (-3% is -3 points)."""
    if metric.unit == "fraction":
        return lambda x: f"{x * 100:+g} points"
    return lambda x: ("-" if x < 0 else "+") + _bound_number(metric, abs(x))


def _rule(claim: Claim) -> str:
    rule = claim.rule
    metric = METRICS[rule.metric]
    what = _what(metric)
    if rule.kind == "value":
        over_seeds = " (mean over seeds)" if _per_seed_metric(metric) else ""
        text = (f"confirmed when the {what} of {rule.of}{over_seeds} "
                f"{_bound(rule.bound, lambda x: _bound_number(metric, x))}")
    elif rule.kind == "ratio":
        text = (f"confirmed when the ratio of {what}, {rule.of} / {rule.other}, "
                f"{_bound(rule.bound, lambda x: _bound_number(None, x))}")
    elif rule.kind == "difference":
        text = (f"confirmed when the difference of {what}, {rule.of} - {rule.other} (mean; "
                f"paired on shared seeds when there are), {_bound(rule.bound, _points(metric))}")
    else:
        faster = "higher" if metric.direction == "maximize" else "lower"
        text = (f"confirmed when {rule.of} is {_speed_bound(rule.bound)} {rule.other} on "
                f"every seed ({what}, {faster} is faster, same device), not confirmed when on "
                f"none, not shown when the seeds disagree")
    return f"{text} ({claim.note})" if claim.note else text


def _what(metric: Metric) -> str:
    """The metric's label without its unit: "latency", not "latency (ms)"."""
    return re.sub(r" \([^)]*\)$", "", metric.label)


def _per_seed_metric(metric: Metric) -> bool:
    """Whether the metric varies from seed to seed (costs do not)."""
    return metric.unit in ("fraction", "ms", "images/s")


# -- judging ------------------------------------------------------------------------------------


def _pick(configs: pd.DataFrame, name: str) -> pd.Series | None:
    if "baseline" not in configs:
        return None
    hits = configs[configs["baseline"] == name]
    if hits.empty:
        return None
    return hits.sort_values("n", ascending=False, kind="stable").iloc[0]


def _mean(metric: Metric, row: pd.Series, runs: pd.DataFrame, *, compact: bool = False
          ) -> str:
    """A model's measured ``metric`` in words: mean ± sd over its seeds where it varies
    (``compact``: without saying so)."""
    assert metric.column is not None and metric.run_column is not None
    value = row.get(metric.column)
    if not _finite(value):
        return "not measured"
    if not _per_seed_metric(metric):
        counted = metric.unit in ("parameters", "MACs", "elements")  # the column says it
        return (_number(metric, float(value)) if compact and counted
                else _shown(metric, float(value)))
    values = runs.loc[runs["config_hash"] == row["config_hash"], metric.run_column]
    values = values.astype(float).dropna()
    sd = float(values.std()) if len(values) > 1 else math.nan
    spread = f" ± {_number(metric, sd)}" if _finite(sd) else ""
    shown = f"{_number(metric, float(value))}{spread}{_unit(metric)}"
    if compact:  # in a table whose column names the metric
        return shown
    what = "mean ± sd" if spread else "mean"
    if metric.unit == "fraction":  # which accuracy: test, validation
        what = f"{metric.label.removesuffix(' accuracy')}, {what}"
    return f"{shown} ({what} over {row['n']} seed(s))"


def judge_claims(claims: Claims, configs: pd.DataFrame, runs: pd.DataFrame, *,
                 epochs: int | None, train_images: int | None, device: str) -> ClaimsReport:
    """Each claim judged on a study's configurations (one row per configuration, named by
    the ``baseline`` column) and runs (one row per run in the statistics); ``epochs`` and
    ``train_images`` are what the study trained, ``device`` where it ran."""
    recipe = None
    if epochs is not None and claims.epochs is not None and epochs != claims.epochs:
        recipe = f"trained {epochs} epochs; the claim is for {claims.epochs}"
    elif (train_images is not None and claims.train_images is not None
          and train_images < claims.train_images):
        recipe = (f"trained on {train_images:,} images; the claim is for "
                  f"{claims.train_images:,}")
    runs = runs.astype({m.run_column: float for m in METRICS.values()
                        if m.run_column in runs.columns})
    verdicts = []
    for claim in claims.items:
        rule = claim.rule
        metric = METRICS[rule.metric]
        rows = [_pick(configs, name) for name in rule.models]
        text = _rule(claim)
        missing = [name for name, row in zip(rule.models, rows, strict=True) if row is None]
        if missing:
            verdicts.append(Verdict(claim.text, claim.source,
                                    f"{' and '.join(missing)} did not run in this study",
                                    NOT_MEASURED, text))
            continue
        if any(row is not None and metric.column not in row.index for row in rows):  # no deploy:
            verdicts.append(Verdict(claim.text, claim.source, f"{metric.label}: not measured",
                                    NOT_MEASURED, text))
            continue
        caveat = recipe if metric.unit == "fraction" else None
        judge = {"value": _value, "ratio": _ratio_claim, "difference": _difference,
                 "speed": _speed}[rule.kind]
        measured, verdict = judge(claim, metric, rows, runs, device)
        if caveat and verdict != NOT_MEASURED:
            measured, verdict = f"{measured} ({caveat})", NOT_MEASURED
        verdicts.append(Verdict(claim.text, claim.source, measured, verdict, text))
    return ClaimsReport(tuple(verdicts), _models(claims, configs, runs))


def _verdict(holds: bool) -> str:
    return CONFIRMED if holds else NOT_CONFIRMED


def _value(claim: Claim, metric: Metric, rows: list[Any], runs: pd.DataFrame,
           device: str) -> tuple[str, str]:
    assert metric.column is not None
    value = rows[0][metric.column]
    if not _finite(value):
        return "not measured", NOT_MEASURED
    return _mean(metric, rows[0], runs), _verdict(claim.rule.bound.holds(float(value)))


def _ratio_claim(claim: Claim, metric: Metric, rows: list[Any], runs: pd.DataFrame,
                 device: str) -> tuple[str, str]:
    assert metric.column is not None
    a, b = rows[0][metric.column], rows[1][metric.column]
    ratio = _ratio(a, b)
    if ratio is None:
        return "not measured", NOT_MEASURED
    return (f"{human_ratio(ratio)} ({_number(metric, a)} / {_shown(metric, b)})",
            _verdict(claim.rule.bound.holds(ratio)))


def _difference(claim: Claim, metric: Metric, rows: list[Any], runs: pd.DataFrame,
                device: str) -> tuple[str, str]:
    assert metric.column is not None and metric.run_column is not None
    first, second = rows
    paired = paired_differences(runs, str(second["config_hash"]), metric.run_column)
    key = str(first["config_hash"])
    if key in paired.index and paired.loc[key, "n"] > 0:
        row = paired.loc[key]
        diff = float(row["mean"])
        ci = (f", 95% CI [{_signed(metric, row['low'])}, {_signed(metric, row['high'])}]"
              if _finite(row["low"]) else "")
        shown = f"{_signed_shown(metric, diff)} (paired over {int(row['n'])} seed(s){ci})"
    elif _finite(first[metric.column], second[metric.column]):
        diff = float(first[metric.column] - second[metric.column])
        shown = f"{_signed_shown(metric, diff)} (difference of means, no shared seeds)"
    else:
        return "not measured", NOT_MEASURED
    return shown, _verdict(claim.rule.bound.holds(diff))


def _signed(metric: Metric, value: float) -> str:
    """A measured difference without its unit: points of a fraction, MiB of bytes."""
    if metric.unit == "fraction":
        return f"{value * 100:+.2f}"
    if metric.unit == "bytes":
        return f"{value / 2**20:+.2f}"
    if metric.unit in ("parameters", "MACs", "elements"):
        return f"{round(value):+,}"
    return f"{value:+.4g}"


def _signed_shown(metric: Metric, value: float) -> str:
    return _signed(metric, value) + (" points" if metric.unit == "fraction" else _unit(metric))


def _speed(claim: Claim, metric: Metric, rows: list[Any], runs: pd.DataFrame,
           device: str) -> tuple[str, str]:
    """A speed claim judged on every seed: one noisy timing must not decide it (a seed_cnn
    latency of 18 ms where its other seeds gave 9 once confirmed "faster inference").
    Confirmed when every seed meets the bound, not confirmed when none does, not shown when
    the seeds disagree."""
    assert metric.column is not None and metric.run_column is not None
    first, second = rows
    ratios = _per_seed(runs, first, second, metric)
    if not ratios:
        return "not measured", NOT_MEASURED
    middle = statistics.median(ratios)
    spread = (f" (median of {len(ratios)} seeds; {min(ratios):.2f}x-{max(ratios):.2f}x)"
              if len(ratios) > 1 else " (one measurement)")
    compared = (f"as fast as {claim.rule.other} ({_what(metric)} "
                f"{_number(metric, first[metric.column])} vs "
                f"{_shown(metric, second[metric.column])} on {device}, means)")
    meets = [claim.rule.bound.holds(r) for r in ratios]
    verdict = CONFIRMED if all(meets) else NOT_CONFIRMED if not any(meets) else NOT_SHOWN
    return f"{human_ratio(middle)} {compared}{spread}", verdict


def _per_seed(runs: pd.DataFrame, first: pd.Series, second: pd.Series,
              metric: Metric) -> list[float]:
    """How many times as fast ``first`` was as ``second`` in ``metric`` on each seed both ran
    (timings of one seed come from the same worker, minutes apart); the ratio of the two
    means when the runs carry no per-seed timings."""
    assert metric.column is not None and metric.run_column is not None
    column = metric.run_column
    higher = metric.direction == "maximize"  # images/s: higher is faster; latency: lower

    def times(a: Any, b: Any) -> float | None:
        return _ratio(a, b) if higher else _ratio(b, a)

    ratios: list[float] = []
    ours, theirs = first["config_hash"], second["config_hash"]
    if column in runs.columns and "seed" in runs.columns:
        table = runs[runs["config_hash"].isin([ours, theirs])]
        table = table.pivot_table(index="seed", columns="config_hash", values=column,
                                  aggfunc="first")
        if ours in table.columns and theirs in table.columns:
            for a, b in zip(table[ours], table[theirs], strict=True):
                ratio = times(a, b)
                if ratio is not None:
                    ratios.append(ratio)
    if not ratios:
        ratio = times(first[metric.column], second[metric.column])
        ratios = [ratio] if ratio is not None else []
    return ratios


def _ratio(a: Any, b: Any) -> float | None:
    if not _finite(a, b) or b == 0:
        return None
    return float(a) / float(b)


def human_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _models(claims: Claims, configs: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The models the claims name, each metric the claims use as measured."""
    metrics = [METRICS[m] for m in dict.fromkeys(c.rule.metric for c in claims.items)]
    rows = []
    for name in claims.models:
        row = _pick(configs, name)
        out: dict[str, Any] = {"model": name, "seeds": int(row["n"]) if row is not None else 0}
        for metric in metrics:
            out[_what(metric)] = ("did not run" if row is None
                                  else _mean(metric, row, runs, compact=True))
        rows.append(out)
    return pd.DataFrame(rows)
