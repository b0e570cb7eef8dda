"""ROC curve, rank AUC and the normal quantile in plain numpy and the standard library.

Scoring a game must not cost the import of scipy.stats and scikit-learn (over a
second, more than most games take), so the few functions it needs are written
here; the tests check them against :func:`scipy.stats.rankdata`,
:func:`sklearn.metrics.roc_curve`, :func:`sklearn.metrics.roc_auc_score` and
:func:`scipy.stats.norm.ppf`.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

__all__ = ["norm_ppf", "rankdata", "roc_auc_score", "roc_curve"]


def norm_ppf(q: float) -> float:
    """The ``q`` quantile of the standard normal distribution."""
    return NormalDist().inv_cdf(q)


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks ``1..n`` of the entries of a 1-d array, ties given the mean of their ranks."""
    a = np.asarray(a).ravel()
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    # first position of each run of equal values
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]
    mean_rank = (starts + ends + 1) / 2.0                 # mean of ranks starts+1 .. ends
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_curve(y_true, y_score, *, drop_intermediate: bool = True):
    """False- and true-positive rates and thresholds as :func:`sklearn.metrics.roc_curve` returns them.

    ``y_true`` holds 0/1 (or booleans), ``y_score`` larger means "1". The first
    threshold is ``inf`` (nothing predicted positive); with ``drop_intermediate``
    the points on a straight run of the curve are left out, as scikit-learn does.
    """
    y = np.asarray(y_true).ravel().astype(bool)
    s = np.asarray(y_score, dtype=np.float64).ravel()
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]   # the last index of each distinct score
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    thresholds = s[last]
    if drop_intermediate and tps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, thresholds


def roc_auc_score(y_true, y_score) -> float:
    """Binary AUROC (Mann-Whitney U from mid-ranks); needs both classes present."""
    y = np.asarray(y_true).ravel().astype(bool)
    s = np.asarray(y_score, dtype=np.float64).ravel()
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("roc_auc_score needs both classes in y_true")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
