"""Empirical epsilon from a threshold test on "in" and "out" trials.

Every test of an (epsilon, delta)-DP mechanism's two neighbouring worlds obeys
``FPR + e^eps FNR >= 1 - delta`` and the mirror inequality with FPR and FNR
swapped, so an observed pair of error rates certifies

    eps >= log max((1 - delta - FPR) / FNR, (1 - delta - FNR) / FPR)

(Kairouz et al.'s hypothesis-testing view, used for auditing by Jagielski et al. 2020
and Nasr et al. 2021). Here "in" trials are those where the audited record was
present (a positive), ``FPR = FP / n_out`` and ``FNR = FN / n_in``; a score at or
above the threshold is a guess of "in". A lower *confidence* bound replaces both
rates by Clopper--Pearson upper bounds. The threshold must not be chosen on the
trials that are counted: the maximum over thresholds of a bound is biased upward,
so :func:`empirical_epsilon` chooses it on a held-out split.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from scipy import stats

from .result import AuditResult

__all__ = ["clopper_pearson_upper", "epsilon_bound", "epsilon_from_counts", "counts_at",
           "select_threshold", "empirical_epsilon"]


# --------------------------------------------------------------------------- validation
def _as_scores(name: str, value) -> np.ndarray:
    try:
        import torch
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a 1-D array of numbers, got {type(value).__name__}") from None
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return a


def _real(name: str, value, *, low: float, high: float, low_open: bool = False,
          high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    lo_ok = v > low if low_open else v >= low
    hi_ok = v < high if high_open else v <= high
    if not (math.isfinite(v) and lo_ok and hi_ok):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lb}{low}, {high}{hb}, got {value}")
    return v


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return int(seed)


# --------------------------------------------------------------------------- the bound
def clopper_pearson_upper(k, n, *, level: float = 0.95):
    """Upper end of the two-sided ``level`` Clopper--Pearson interval of ``k`` successes in ``n``.

    Vectorised over ``k`` and ``n``; equal to
    ``scipy.stats.binomtest(k, n).proportion_ci(level, method="exact").high``.

    >>> round(float(clopper_pearson_upper(10, 1000)), 4)
    0.0183
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    alpha = 1.0 - level
    with np.errstate(invalid="ignore"):
        up = stats.beta.ppf(1.0 - alpha / 2.0, k + 1.0, np.maximum(n - k, 1e-300))
    return np.where(k >= n, 1.0, up)


def epsilon_bound(fpr, fnr, *, delta: float):
    """``log max((1 - delta - fpr) / fnr, (1 - delta - fnr) / fpr)``, at least 0 (vectorised).

    ``inf`` when an error rate is 0 and the other leaves a positive numerator.

    >>> round(float(epsilon_bound(0.01, 0.5, delta=1e-5)), 2)
    3.91
    """
    fpr = np.asarray(fpr, dtype=float)
    fnr = np.asarray(fnr, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(fnr > 0, (1.0 - delta - fpr) / np.where(fnr > 0, fnr, 1.0),
                     np.where(1.0 - delta - fpr > 0, np.inf, 0.0))
        b = np.where(fpr > 0, (1.0 - delta - fnr) / np.where(fpr > 0, fpr, 1.0),
                     np.where(1.0 - delta - fnr > 0, np.inf, 0.0))
        ratio = np.maximum(np.maximum(a, b), 1.0)
        return np.log(ratio)


def epsilon_from_counts(*, tp: int, fn: int, fp: int, tn: int, delta: float, level: float = 0.95,
                        threshold: float | None = None, details: dict | None = None) -> AuditResult:
    """The empirical epsilon of one threshold test from its confusion counts.

    ``tp``/``fn`` count the "in" trials guessed in/out, ``fp``/``tn`` the "out" trials
    guessed in/out; so ``FNR = fn / (tp + fn)`` and ``FPR = fp / (fp + tn)``. The lower
    bound uses the upper ends of two-sided ``level`` Clopper--Pearson intervals of FPR
    and FNR (``scipy.stats.binomtest(...).proportion_ci(method="exact")``): each holds
    with probability ``(1 + level) / 2``, both at once with probability at least
    ``level``, and the bound is monotone in both rates, so ``epsilon_lower`` is a
    ``level`` lower confidence bound.

    >>> r = epsilon_from_counts(tp=500, fn=500, fp=10, tn=990, delta=1e-5)
    >>> round(r.epsilon_point, 2), round(r.epsilon_lower, 2)
    (3.91, 3.24)
    """
    tp, fn, fp, tn = (_count(n, v) for n, v in (("tp", tp), ("fn", fn), ("fp", fp), ("tn", tn)))
    delta = _real("delta", delta, low=0.0, high=1.0, high_open=True)
    level = _real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    n_in, n_out = tp + fn, fp + tn
    if n_in == 0:
        raise ValueError("tp + fn (the number of 'in' trials) must be positive, got 0")
    if n_out == 0:
        raise ValueError("fp + tn (the number of 'out' trials) must be positive, got 0")
    fpr, fnr = fp / n_out, fn / n_in
    fpr_up = stats.binomtest(fp, n_out).proportion_ci(confidence_level=level, method="exact").high
    fnr_up = stats.binomtest(fn, n_in).proportion_ci(confidence_level=level, method="exact").high
    info = {"fpr": fpr, "fnr": fnr, "fpr_upper": float(fpr_up), "fnr_upper": float(fnr_up)}
    info.update(details or {})
    return AuditResult(
        estimator="threshold",
        epsilon_lower=float(epsilon_bound(fpr_up, fnr_up, delta=delta)),
        epsilon_point=float(epsilon_bound(fpr, fnr, delta=delta)),
        level=level, delta=delta,
        counts={"tp": tp, "fn": fn, "fp": fp, "tn": tn},
        threshold=None if threshold is None else float(threshold),
        details=info,
    )


def counts_at(scores_in, scores_out, threshold: float) -> dict:
    """Confusion counts of the test "guess in when score >= threshold"."""
    s_in = _as_scores("scores_in", scores_in)
    s_out = _as_scores("scores_out", scores_out)
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold must be a number, got nan")
    tp = int((s_in >= t).sum())
    fp = int((s_out >= t).sum())
    return {"tp": tp, "fn": s_in.size - tp, "fp": fp, "tn": s_out.size - fp}


def select_threshold(scores_in, scores_out, *, delta: float, level: float = 0.95,
                     max_candidates: int = 2000) -> float:
    """The threshold whose Clopper--Pearson lower bound on these scores is largest.

    Candidates are the distinct scores (thinned to ``max_candidates`` quantiles of the
    pooled scores when there are more) and ``+inf`` (always guess "out"); ties go to the
    larger point estimate. The bound at the returned threshold is *not* a valid
    confidence bound on the same scores (it is a maximum over many tests): count the
    errors on trials held out from this choice, as :func:`empirical_epsilon` does.
    """
    s_in = np.sort(_as_scores("scores_in", scores_in))
    s_out = np.sort(_as_scores("scores_out", scores_out))
    delta = _real("delta", delta, low=0.0, high=1.0, high_open=True)
    level = _real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    pooled = np.unique(np.concatenate([s_in, s_out]))
    if pooled.size > max_candidates:
        pooled = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, max_candidates)))
    cand = np.append(pooled, np.inf)
    n_in, n_out = s_in.size, s_out.size
    tp = n_in - np.searchsorted(s_in, cand, side="left")      # in-scores >= t
    fp = n_out - np.searchsorted(s_out, cand, side="left")
    fn = n_in - tp
    lower = epsilon_bound(clopper_pearson_upper(fp, n_out, level=level),
                          clopper_pearson_upper(fn, n_in, level=level), delta=delta)
    point = epsilon_bound(fp / n_out, fn / n_in, delta=delta)
    point = np.where(np.isinf(point), np.finfo(float).max, point)
    best = np.lexsort((-point, -lower))[0]                    # largest lower, then largest point
    return float(cand[best])


def empirical_epsilon(scores_in, scores_out, *, delta: float, level: float = 0.95,
                      split: float = 0.5, threshold: float | None = None, seed: int = 0) -> AuditResult:
    """A ``level`` lower confidence bound on epsilon from attack scores.

    Parameters
    ----------
    scores_in, scores_out
        The attack's scores on trials where the audited record (or secret value) was
        present ("in") and absent ("out"); larger means "in".
    delta
        The delta of the (epsilon, delta)-DP claim being audited.
    level
        Confidence of the bound (0.95 by default).
    split
        When ``threshold`` is not given: the share of each group's trials, drawn at
        random with ``seed``, on which the threshold is chosen
        (:func:`select_threshold`); the errors are counted on the other trials only.
    threshold
        A threshold fixed in advance; then every trial is counted and ``split`` is unused.
    seed
        Seed of the random split.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> r = empirical_epsilon(rng.normal(3, 1, 4000), rng.normal(0, 1, 4000), delta=1e-5)
    >>> 1.0 < r.epsilon_lower < r.epsilon_point
    True
    """
    s_in = _as_scores("scores_in", scores_in)
    s_out = _as_scores("scores_out", scores_out)
    delta = _real("delta", delta, low=0.0, high=1.0, high_open=True)
    level = _real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    seed = _seed(seed)
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, Real) or math.isnan(threshold):
            raise TypeError(f"threshold must be a number (not NaN) or None, got {threshold!r}")
        t = float(threshold)
        c = counts_at(s_in, s_out, t)
        return epsilon_from_counts(**c, delta=delta, level=level, threshold=t,
                                   details={"threshold_from": "given", "seed": seed})
    split = _real("split", split, low=0.0, high=1.0, low_open=True, high_open=True)
    rng = np.random.default_rng(seed)
    k_in, k_out = int(math.floor(split * s_in.size)), int(math.floor(split * s_out.size))
    for name, k, n in (("scores_in", k_in, s_in.size), ("scores_out", k_out, s_out.size)):
        if k < 1 or k >= n:
            raise ValueError(f"split={split} leaves no trials of {name} on one side "
                             f"({n} trials); give more trials or a fixed threshold")
    p_in, p_out = rng.permutation(s_in.size), rng.permutation(s_out.size)
    t = select_threshold(s_in[p_in[:k_in]], s_out[p_out[:k_out]], delta=delta, level=level)
    c = counts_at(s_in[p_in[k_in:]], s_out[p_out[k_out:]], t)
    return epsilon_from_counts(**c, delta=delta, level=level, threshold=t,
                               details={"threshold_from": "held-out split", "split": split,
                                        "selection_trials": k_in + k_out, "seed": seed})
