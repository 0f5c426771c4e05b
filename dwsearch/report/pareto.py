"""Non-dominated (Pareto-optimal) sets for any number of objectives and directions.

A point dominates another when it is at least as good in every objective and better in one.
Identical points do not dominate each other, so ties are all kept. Rows with a missing (NaN)
value are never on the front. Two objectives take one sort and a sweep (O(n log n)); more
take a vectorised filter that only keeps comparing against points still on the front.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["pareto_mask", "pareto_order"]


def _as_minimisation(values: npt.ArrayLike, maximize: Sequence[bool]) -> np.ndarray:
    points = np.asarray(values, dtype=float)
    if points.ndim == 1:
        points = points[:, None]
    if points.ndim != 2 or points.shape[1] != len(maximize):
        raise ValueError(f"expected an (n, {len(maximize)}) array of objective values, found "
                         f"shape {points.shape}")
    signs = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    return points * signs


def pareto_mask(values: npt.ArrayLike, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the rows of ``values`` (n x k) that no other row dominates;
    ``maximize[j]`` says whether objective j is to be maximised (else minimised)."""
    points = _as_minimisation(values, maximize)
    n = len(points)
    mask = np.zeros(n, dtype=bool)
    valid = ~np.isnan(points).any(axis=1)
    index = np.flatnonzero(valid)
    if index.size == 0:
        return mask
    p = points[index]
    if p.shape[1] == 1:
        mask[index] = p[:, 0] == p[:, 0].min()
    elif p.shape[1] == 2:
        mask[index] = _front_2d(p)
    else:
        mask[index] = _front_nd(p)
    return mask


def _front_2d(p: np.ndarray) -> np.ndarray:
    """Sort by x then y; a point is on the front when its y is the smallest among the points
    with its x and smaller than every y of the points with a smaller x."""
    order = np.lexsort((p[:, 1], p[:, 0]))
    x, y = p[order, 0], p[order, 1]
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    group_min = np.minimum.reduceat(y, starts)
    before = np.r_[np.inf, np.minimum.accumulate(group_min)[:-1]]  # best y at smaller x
    sizes = np.diff(np.r_[starts, len(x)])
    keep = (y == np.repeat(group_min, sizes)) & (y < np.repeat(before, sizes))
    out = np.zeros(len(p), dtype=bool)
    out[order] = keep
    return out


def _front_nd(p: np.ndarray) -> np.ndarray:
    """Walk the points best-first by their sum (a dominating point always comes earlier) and
    drop everything each surviving point dominates."""
    order = np.argsort(p.sum(axis=1), kind="stable")
    candidates = order
    kept: list[int] = []
    while candidates.size:
        head = candidates[0]
        kept.append(int(head))
        rest = p[candidates[1:]]
        dominated = np.all(p[head] <= rest, axis=1) & np.any(p[head] < rest, axis=1)
        candidates = candidates[1:][~dominated]
    out = np.zeros(len(p), dtype=bool)
    out[kept] = True
    return out


def pareto_order(values: npt.ArrayLike, maximize: Sequence[bool]) -> np.ndarray:
    """Row indices of the front of two objectives, sorted by the first objective (for drawing
    the front as a line)."""
    mask = pareto_mask(values, maximize)
    points = np.asarray(values, dtype=float)
    front = np.flatnonzero(mask)
    return front[np.argsort(points[front, 0], kind="stable")]
