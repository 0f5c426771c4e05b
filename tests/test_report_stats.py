"""Pareto fronts and statistics over seeds, against hand-computed ground truth and a
brute-force definition."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwsearch.report.pareto import pareto_mask, pareto_order
from dwsearch.report.stats import mean_std, paired, paired_differences, t_quantile_975

NAN = math.nan


def brute_force_front(points: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """The definition, O(n^2): a row is on the front unless another row is at least as good
    in every objective and better in one; rows with NaN are never on it."""
    signs = np.where(np.array(maximize), -1.0, 1.0)
    p = points * signs
    out = []
    for i in range(len(p)):
        if np.isnan(p[i]).any():
            out.append(False)
            continue
        dominated = any(
            not np.isnan(p[j]).any() and np.all(p[j] <= p[i]) and np.any(p[j] < p[i])
            for j in range(len(p)) if j != i)
        out.append(not dominated)
    return np.array(out, dtype=bool)


def test_two_objectives_by_hand() -> None:
    # (accuracy: max, MACs: min)
    points = [
        (0.70, 100),  # 0 front
        (0.60, 50),   # 1 front
        (0.65, 120),  # 2 dominated by 0
        (0.70, 100),  # 3 identical to 0: ties do not dominate, on the front
        (0.50, 50),   # 4 dominated by 1 (same MACs, less accurate)
        (NAN, 10),    # 5 missing accuracy: never on the front
        (0.75, 400),  # 6 front (most accurate)
        (0.75, 500),  # 7 dominated by 6 (same accuracy, more MACs)
    ]
    mask = pareto_mask(points, [True, False])
    assert mask.tolist() == [True, True, False, True, False, False, True, False]
    assert pareto_order(points, [True, False]).tolist() == [1, 0, 3, 6]


def test_three_objectives_by_hand() -> None:
    # (accuracy: max, params: min, latency: min)
    points = [
        (0.7, 10, 5.0),  # front
        (0.7, 10, 6.0),  # dominated by 0 (slower)
        (0.6, 5, 9.0),   # front (fewest params)
        (0.6, 6, 9.0),   # dominated by 2
        (0.5, 20, 1.0),  # front (fastest)
        (0.8, 30, 7.0),  # front (most accurate)
    ]
    assert pareto_mask(points, [True, False, False]).tolist() == [
        True, False, True, False, True, True]


def test_one_objective_keeps_ties_and_empty_input() -> None:
    assert pareto_mask([[3.0], [1.0], [1.0], [NAN]], [False]).tolist() == [
        False, True, True, False]
    assert pareto_mask(np.empty((0, 2)), [True, False]).tolist() == []
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        pareto_mask([[1.0, 2.0, 3.0]], [True, False])


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 3).flatmap(lambda k: st.tuples(
    st.just(k),
    st.lists(st.lists(st.one_of(st.integers(0, 5).map(float), st.just(NAN)), min_size=k,
                      max_size=k), min_size=0, max_size=40),
    st.lists(st.booleans(), min_size=k, max_size=k))))
def test_fronts_match_the_definition(case: tuple[int, list[list[float]], list[bool]]) -> None:
    k, rows, maximize = case
    points = np.array(rows, dtype=float).reshape(len(rows), k)
    assert pareto_mask(points, maximize).tolist() == brute_force_front(points, maximize).tolist()


def test_ten_thousand_points_are_fast() -> None:
    rng = np.random.default_rng(0)
    points = rng.random((10_000, 3))
    import time

    start = time.perf_counter()
    two = pareto_mask(points[:, :2], [True, False])
    three = pareto_mask(points, [True, False, False])
    assert time.perf_counter() - start < 5
    sample = rng.choice(10_000, 300, replace=False)
    # On a subsample the definition is cheap; a subsample's front contains the front's members
    # that fall into it.
    sub = brute_force_front(points[sample], [True, False, False])
    assert np.all(sub[three[sample]])
    assert two.sum() >= 1 and three.sum() >= two.sum()


@pytest.mark.parametrize(("df", "expected"), [
    # Closed forms: df 1 is the Cauchy quantile tan(pi (p - 1/2)); df 2 is
    # (2p - 1) / sqrt(2 p (1 - p)); df 4 solves a quartic (Hill, 1970).
    (1, math.tan(math.pi * 0.475)),
    (2, 0.95 / math.sqrt(2 * 0.975 * 0.025)),
    (4, 2.77644511),
    # Published to 8 digits (NIST/SEMATECH e-Handbook, table 1.3.6.7.2, and R's qt()).
    (3, 3.18244631), (5, 2.57058184), (9, 2.26215716), (10, 2.22813885),
    (19, 2.09302405), (29, 2.04522964), (30, 2.04227246), (35, 2.03010793),
    (50, 2.00855911), (100, 1.98397152), (1000, 1.96233908),
])
def test_t_quantiles_are_exact(df: int, expected: float) -> None:
    # The table this replaced gave 4.303 for df 2 (4.302653): a shipped interval was 0.01 off.
    assert t_quantile_975(df) == pytest.approx(expected, rel=1e-7)
    assert math.isnan(t_quantile_975(0)) and math.isnan(t_quantile_975(math.nan))


def test_mean_and_sample_std() -> None:
    mean, sd, n = mean_std([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4)
    assert sd == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, n-1 = 3
    mean, sd, n = mean_std([0.7, None, NAN])  # missing values are skipped
    assert (mean, n) == (0.7, 1) and math.isnan(sd)
    assert mean_std([])[2] == 0


def test_paired_difference_by_hand() -> None:
    a, b = [0.70, 0.72, 0.71], [0.68, 0.69, 0.70]
    result = paired(a, b)
    # differences 0.02, 0.03, 0.01: mean 0.02, sd 0.01, half-width t(0.975, 2) * 0.01 / sqrt(3)
    # with t(0.975, 2) = 0.95 / sqrt(2 * 0.975 * 0.025) = 4.302653 (closed form for df 2)
    half = 0.95 / math.sqrt(2 * 0.975 * 0.025) * 0.01 / math.sqrt(3)
    assert result.n == 3
    assert result.mean == pytest.approx(0.02)
    assert result.sd == pytest.approx(0.01)
    assert (result.low, result.high) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert not result.excludes_zero  # the interval [-0.0048, 0.0448] straddles zero
    assert paired([0.8, 0.81, 0.79, 0.8], [0.7, 0.7, 0.7, 0.7]).excludes_zero
    one = paired([0.7], [0.6])
    assert one.n == 1 and one.mean == pytest.approx(0.1) and math.isnan(one.low)
    with pytest.raises(ValueError, match="length"):
        paired([1.0], [1.0, 2.0])


def test_paired_differences_table() -> None:
    runs = pd.DataFrame([
        *({"config_hash": "ref", "seed": s, "acc": v} for s, v in [(0, .68), (1, .69), (2, .70)]),
        *({"config_hash": "b", "seed": s, "acc": v} for s, v in [(0, .70), (1, .72), (2, .71)]),
        {"config_hash": "c", "seed": 1, "acc": 0.60},  # one shared seed
        {"config_hash": "d", "seed": 7, "acc": 0.90},  # no shared seed
        {"config_hash": "e", "seed": 0, "acc": NAN},   # no value
    ])
    table = paired_differences(runs, "ref", "acc")
    expected = paired([.70, .72, .71], [.68, .69, .70])
    assert table.loc["b", "n"] == 3
    assert table.loc["b", "mean"] == pytest.approx(expected.mean)
    assert table.loc["b", "low"] == pytest.approx(expected.low)
    assert table.loc["b", "high"] == pytest.approx(expected.high)
    assert table.loc["ref", "mean"] == 0 and table.loc["ref", "n"] == 3
    assert table.loc["c", "n"] == 1 and table.loc["c", "mean"] == pytest.approx(-0.09)
    assert math.isnan(table.loc["c", "low"])
    assert "d" not in table.index and "e" not in table.index
    assert paired_differences(runs, "missing", "acc").empty
