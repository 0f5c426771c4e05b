"""Statistics over seeds: mean and standard deviation per configuration, and paired
differences on shared seeds with a t-based 95% confidence interval.

Pairing: with ``seeds: shared`` a study trains repeat r of every configuration with the same
seed (same initialisation and batch order), so the difference of two configurations on one
seed removes most of the seed's noise. The interval is ``mean ± t(0.975, n-1) · sd / sqrt(n)``
over the n shared seeds; with n < 2 there is no interval (and the report says n). The t
quantiles come from a table (exact to the 3 decimals printed; interpolated in 1/df between
its rows), so scipy is not needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Paired", "mean_std", "paired", "paired_differences", "t_quantile_975"]

# Two-sided 95% quantiles of Student's t: t(0.975, df).
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}
_Z975 = 1.959964


def t_quantile_975(df: float) -> float:
    """t(0.975, df): the half-width factor of a two-sided 95% interval; NaN for df < 1."""
    if not df >= 1:  # also NaN
        return math.nan
    if df in _T975:
        return _T975[int(df)]
    if df > 120:
        lo_df, hi_df, lo, hi = 120.0, math.inf, _T975[120], _Z975
    else:
        keys = sorted(_T975)
        lo_df = max(k for k in keys if k < df)
        hi_df = min(k for k in keys if k > df)
        lo, hi = _T975[int(lo_df)], _T975[int(hi_df)]
    # Linear in 1/df: t approaches z like 1/df, so this is close to exact between rows.
    x, x0, x1 = 1 / df, 1 / lo_df, 1 / hi_df
    return lo + (hi - lo) * (x - x0) / (x1 - x0)


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
