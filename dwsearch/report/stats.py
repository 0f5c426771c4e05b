"""Statistics over seeds: mean and standard deviation per configuration, and paired
differences on shared seeds with a t-based 95% confidence interval.

Pairing: with ``seeds: shared`` a study trains repeat r of every configuration with the same
seed (same initialisation and batch order), so the difference of two configurations on one
seed removes most of the seed's noise. The interval is ``mean ± t(0.975, n-1) · sd / sqrt(n)``
over the n shared seeds; with n < 2 there is no interval (and the report says n). The t
quantiles are SciPy's, exact (a rounded table once put a shipped interval 0.01 off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Paired", "mean_std", "paired", "paired_differences", "t_quantile_975"]

def t_quantile_975(df: float) -> float:
    """t(0.975, df): the half-width factor of a two-sided 95% interval (exact, from SciPy's
    Student t); NaN for df < 1."""
    from scipy.stats import t

    if not df >= 1:  # also NaN
        return math.nan
    return float(t.ppf(0.975, df))


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation (n-1), n) of the finite values; std is NaN for
    n < 2, both are NaN for n = 0."""
    data = np.asarray([v for v in values if v is not None], dtype=float)
    data = data[np.isfinite(data)]
    n = int(data.size)
    if n == 0:
        return math.nan, math.nan, 0
    return float(data.mean()), float(data.std(ddof=1)) if n > 1 else math.nan, n


@dataclass(frozen=True)
class Paired:
    """The mean difference a - b over shared seeds, with its 95% interval."""

    mean: float
    sd: float  # standard deviation of the differences (NaN for n < 2)
    n: int
    low: float  # NaN for n < 2
    high: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of zero (a difference seen)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Paired difference of two equal-length samples (element i of each: the same seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)
             if x is not None and y is not None and math.isfinite(x - y)]
    mean, sd, n = mean_std(diffs)
    half = t_quantile_975(n - 1) * sd / math.sqrt(n) if n >= 2 else math.nan
    return Paired(mean, sd, n, mean - half, mean + half)


def paired_differences(
    runs: pd.DataFrame, reference: str, metric: str, *, key: str = "config_hash",
    seed: str = "seed",
) -> pd.DataFrame:
    """For every configuration in ``runs`` (one row per run: ``key``, ``seed``, ``metric``),
    the paired difference ``metric - metric of reference`` over the seeds both ran.

    Returns one row per configuration (index ``key``, the reference included) with columns
    ``n`` (shared seeds), ``mean``, ``sd``, ``low``, ``high`` (95% interval; NaN for n < 2).
    Vectorised: a table of configurations x the reference's seeds, so thousands of
    configurations cost one pivot.
    """
    data = runs[[key, seed, metric]].dropna()
    ref_seeds = data.loc[data[key] == reference, seed].unique()
    data = data[data[seed].isin(ref_seeds)]
    table = data.pivot_table(index=key, columns=seed, values=metric, aggfunc="first")
    columns = ["n", "mean", "sd", "low", "high"]
    if reference not in table.index:
        return pd.DataFrame(columns=columns, dtype=float)
    diffs = table.sub(table.loc[reference], axis=1)
    n = diffs.notna().sum(axis=1)
    mean = diffs.mean(axis=1)
    sd = diffs.std(axis=1, ddof=1)
    factor = n.map(lambda k: t_quantile_975(k - 1))
    half = factor * sd / np.sqrt(n.where(n > 0))
    out = pd.DataFrame({"n": n, "mean": mean, "sd": sd, "low": mean - half,
                        "high": mean + half})
    return out[columns]
