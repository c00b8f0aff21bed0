"""Judge metrics with bootstrap confidence intervals, and agreement statistics for councils.

All functions take plain NumPy arrays: ``y`` holds 0/1 labels, ``p`` the judge's probability of label 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Share of items where ``p > 0.5`` matches the label."""
    return float(np.mean((p > 0.5) == (y == 1)))


def balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Mean of the recall on each class (0.5 for a constant judge)."""
    pred = p > 0.5
    recalls = [np.mean(pred[y == c] == bool(c)) for c in (0, 1) if np.any(y == c)]
    return float(np.mean(recalls))


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of P(label 1), over equal-width bins."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def calibration_curve(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean predicted, observed rate, count) per non-empty bin."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return [
        (float(p[index == b].mean()), float(y[index == b].mean()), int((index == b).sum()))
        for b in range(bins)
        if (index == b).any()
    ]


def minimal_pair_hits(y: np.ndarray, p: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """1.0 for each minimal pair (indices of two items with opposite labels) where both are judged correctly."""
    correct = (p > 0.5) == (y == 1)
    return np.array([float(correct[i] and correct[j]) for i, j in pairs])


def majority_baseline(y: np.ndarray, _p: np.ndarray | None = None) -> float:
    """Accuracy of always answering the more frequent label."""
    share = float(np.mean(y))
    return max(share, 1 - share)


def bootstrap_ci(
    values: Callable[[np.ndarray], float], n: int, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``values(indices)`` over ``n`` items resampled with replacement."""
    rng = np.random.default_rng(seed)
    stats = [values(rng.integers(0, n, n)) for _ in range(resamples)]
    stats = [s for s in stats if not np.isnan(s)]
    if not stats:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return round(float(low), 4), round(float(high), 4)


def with_ci(metric: Metric, y: np.ndarray, p: np.ndarray, resamples: int = 1000) -> dict[str, object]:
    """A metric's value and its bootstrap 95% CI."""
    return {
        "value": round(metric(y, p), 4),
        "ci95": bootstrap_ci(lambda i: metric(y[i], p[i]), len(y), resamples),
    }


def difference_ci(
    metric: Metric, y: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int = 1000
) -> dict[str, object]:
    """``metric`` of judge ``a`` minus that of judge ``b`` on the same items, with a paired bootstrap CI."""
    return {
        "value": round(metric(y, a) - metric(y, b), 4),
        "ci95": bootstrap_ci(lambda i: metric(y[i], a[i]) - metric(y[i], b[i]), len(y), resamples),
    }


def independent_majority_accuracy(accuracies: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Accuracy a weighted majority would reach if its members erred independently (ties split evenly)."""
    weights = list(weights or [1.0] * len(accuracies))
    half = sum(weights) / 2
    total = 0.0
    for outcome in product((0, 1), repeat=len(accuracies)):
        chance = float(np.prod([a if right else 1 - a for a, right in zip(accuracies, outcome, strict=True)]))
        right_weight = sum(w for w, right in zip(weights, outcome, strict=True) if right)
        total += chance * (1.0 if right_weight > half else 0.5 if right_weight == half else 0.0)
    return total


def error_correlation(errors: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Pearson correlation between the members' 0/1 error indicators (NaN where a member never or always errs)."""
    names = list(errors)
    matrix: dict[str, dict[str, float]] = {}
    for a in names:
        matrix[a] = {}
        for b in names:
            ea, eb = errors[a].astype(float), errors[b].astype(float)
            if ea.std() == 0 or eb.std() == 0:
                matrix[a][b] = float("nan")
            else:
                matrix[a][b] = round(float(np.corrcoef(ea, eb)[0, 1]), 4)
    return matrix


def mean_off_diagonal(matrix: dict[str, dict[str, float]]) -> float | None:
    """Mean of a correlation matrix's entries off the diagonal, NaNs left out (None when there are none)."""
    values = [v for a, row in matrix.items() for b, v in row.items() if a != b and not np.isnan(v)]
    return round(float(np.mean(values)), 4) if values else None


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa for ``counts[item, category]`` = raters choosing that category (same raters per item)."""
    counts = np.asarray(counts, dtype=float)
    raters = counts.sum(axis=1)
    if counts.shape[0] == 0 or not np.all(raters == raters[0]) or raters[0] < 2:
        return float("nan")
    n = raters[0]
    p_item = ((counts * (counts - 1)).sum(axis=1)) / (n * (n - 1))
    p_cat = counts.sum(axis=0) / counts.sum()
    expected = float((p_cat**2).sum())
    if expected == 1.0:
        return float("nan")
    return float((p_item.mean() - expected) / (1 - expected))
