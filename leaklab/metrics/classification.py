"""How an inference adversary is scored: AUROC with a confidence interval, accuracy, advantage.

An adversary in a privacy game outputs, for every trial, a score for each possible
value of the secret. With two values the score is one number per trial (larger
means "value 1"); with ``K > 2`` values it is a ``(T, K)`` array and the AUROC is
the one-vs-rest average over the values, as in :func:`sklearn.metrics.roc_auc_score`.

>>> import numpy as np
>>> s = score_guesses(np.array([0, 0, 1, 1]), np.array([-2.0, 0.5, 0.1, 3.0]))
>>> round(s.auroc, 2), s.accuracy
(0.75, 0.75)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .._checks import check_choice, check_fraction, check_positive_int
from ._roc import norm_ppf, rankdata, roc_auc_score, roc_curve

__all__ = ["InferenceScore", "auroc", "auroc_ci", "auroc_gain_ci", "accuracy", "advantage", "tpr_at_fpr",
           "score_guesses", "tpr_at_fprs"]


def _as_numpy(name: str, value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything numpy cannot read is a type error here
        raise TypeError(f"{name} must be an array or tensor, got {type(value).__name__}") from None
    if arr.dtype == object:
        raise TypeError(f"{name} must be numeric, got an object array")
    return arr


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = _as_numpy("labels", labels)
    s = _as_numpy("scores", scores).astype(np.float64)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) and not np.issubdtype(y.dtype, np.bool_):
        if not np.all(np.mod(y, 1) == 0):
            raise TypeError(f"labels must hold integer secret values, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if s.ndim not in (1, 2) or s.shape[0] != y.shape[0]:
        raise ValueError(
            f"scores must have shape ({y.shape[0]},) or ({y.shape[0]}, K) to match labels, got {s.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contains NaN or inf values")
    if y.size and y.min() < 0:
        raise ValueError(f"labels must be non-negative secret values, got minimum {y.min()}")
    if s.ndim == 1 and y.size and y.max() > 1:
        raise ValueError(f"scores of shape ({y.shape[0]},) need binary labels 0/1, got values up to {y.max()}")
    if s.ndim == 2 and y.size and y.max() >= s.shape[1]:
        raise ValueError(f"labels must lie in [0, {s.shape[1] - 1}] for scores with {s.shape[1]} columns, "
                         f"got values up to {y.max()}")
    present = np.unique(y)
    if present.size < 2:
        raise ValueError(f"labels must hold at least two different secret values to score, got {present.tolist()}")
    return y, s


def _binary(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reduce ``(T, 2)`` scores to the log-odds-like difference of the two columns."""
    if s.ndim == 2 and s.shape[1] == 2:
        return y, s[:, 1] - s[:, 0]
    return y, s


def _rank_auc(pos: np.ndarray, s: np.ndarray) -> float:
    """Binary AUROC from ranks (Mann-Whitney U), the same number as roc_auc_score, faster."""
    n1 = int(pos.sum())
    n0 = pos.shape[0] - n1
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _fast_auroc(y: np.ndarray, s: np.ndarray) -> float:
    y, s = _binary(y, s)
    if s.ndim == 1:
        return _rank_auc(y == 1, s)
    return float(np.mean([_rank_auc(y == k, s[:, k]) for k in np.unique(y)]))


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    y, s = _binary(y, s)
    if s.ndim == 1:
        return float(roc_auc_score(y, s))
    # one-vs-rest macro average over the secret values that occur
    present = np.unique(y)
    return float(np.mean([roc_auc_score(y == k, s[:, k]) for k in present]))


def auroc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for the secret ``labels``.

    ``scores`` of shape ``(T,)`` score the secret value 1 against 0; of shape
    ``(T, K)`` they score each value, and the AUROC is the one-vs-rest macro average
    over the values present in ``labels``.
    """
    y, s = _check(labels, scores)
    return _auroc(y, s)


def auroc_ci(labels, scores, *, level: float = 0.95, method: str = "auto", n_boot: int = 300,
             seed: int = 0) -> tuple[float, float]:
    """A confidence interval for the AUROC at confidence ``level``.

    ``method`` is ``"hanley"`` (the Hanley–McNeil normal approximation for two
    secret values, instant), ``"bootstrap"`` (percentile bootstrap over trials,
    ``n_boot`` resamples drawn with ``seed``; works for any number of values) or
    ``"auto"`` (Hanley–McNeil for two values, bootstrap otherwise). The interval is
    clipped to ``[0, 1]``.
    """
    y, s = _check(labels, scores)
    check_fraction("level", level)
    check_choice("method", method, ("auto", "hanley", "bootstrap"))
    check_positive_int("n_boot", n_boot, minimum=10)
    yb, sb = _binary(y, s)
    if method == "auto":
        method = "hanley" if sb.ndim == 1 else "bootstrap"
    if method == "hanley":
        if sb.ndim != 1:
            raise ValueError("method 'hanley' needs two secret values; use method='bootstrap'")
        a = _auroc(y, s)
        n1, n0 = int((yb == 1).sum()), int((yb == 0).sum())
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
        z = float(norm_ppf(0.5 + level / 2))
        half = z * math.sqrt(max(var, 0.0))
        return max(0.0, a - half), min(1.0, a + half)
    rng = np.random.default_rng(seed)
    values = []
    n = y.shape[0]
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if np.unique(y[idx]).size < np.unique(y).size:
            continue
        values.append(_fast_auroc(y[idx], s[idx]))
    lo, hi = np.quantile(values, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def auroc_gain_ci(labels, scores, baseline_scores, *, level: float = 0.95, n_boot: int = 1000,
                  seed: int = 0) -> tuple[float, float]:
    """A paired confidence interval for ``auroc(scores) - auroc(baseline_scores)`` on the same trials.

    Percentile bootstrap over trials, ``n_boot`` resamples drawn with ``seed``: each
    resample scores both adversaries on the *same* trials, so that what the two share
    (the target, its batch, ``phi``) cancels in the difference instead of widening it
    as two separate intervals would. A resample that lacks a secret value is redrawn.
    """
    y, s = _check(labels, scores)
    _, b = _check(labels, baseline_scores)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    check_positive_int("n_boot", n_boot, minimum=10)
    rng = np.random.default_rng(seed)
    values = []
    n, k = y.shape[0], np.unique(y).size
    while len(values) < n_boot:
        idx = rng.integers(0, n, n)
        if np.unique(y[idx]).size < k:
            continue
        values.append(_fast_auroc(y[idx], s[idx]) - _fast_auroc(y[idx], b[idx]))
    lo, hi = np.quantile(values, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def _guesses(s: np.ndarray, threshold: float) -> np.ndarray:
    return (s > threshold).astype(np.int64) if s.ndim == 1 else s.argmax(1)


def accuracy(labels, scores, *, threshold: float = 0.0) -> float:
    """The fraction of trials whose guess is the secret.

    The guess is ``scores > threshold`` for ``(T,)`` scores (log-odds: threshold 0)
    and the highest-scoring value for ``(T, K)`` scores.
    """
    y, s = _check(labels, scores)
    return float((_guesses(s, threshold) == y).mean())


def advantage(labels, scores) -> float:
    """The adversary's best advantage ``max_t (TPR(t) - FPR(t))`` over thresholds (two values).

    For balanced secrets this equals ``2 * acc - 1`` at the best threshold. For more
    than two values it is the one-vs-rest average.
    """
    y, s = _check(labels, scores)
    y, s = _binary(y, s)
    if s.ndim == 1:
        fpr, tpr, _ = roc_curve(y, s)
        return float(np.max(tpr - fpr))
    out = []
    for k in np.unique(y):
        fpr, tpr, _ = roc_curve(y == k, s[:, k])
        out.append(np.max(tpr - fpr))
    return float(np.mean(out))


def tpr_at_fpr(labels, scores, *, fpr: float = 0.01) -> float:
    """The true-positive rate at a false-positive rate of at most ``fpr`` (two values)."""
    y, s = _check(labels, scores)
    check_fraction("fpr", fpr)
    y, s = _binary(y, s)
    if s.ndim != 1:
        raise ValueError("tpr_at_fpr needs two secret values (scores of shape (T,) or (T, 2))")
    f, t, _ = roc_curve(y, s)
    ok = f <= fpr
    return float(t[ok].max()) if ok.any() else 0.0


@dataclass
class InferenceScore:
    """How well an adversary guessed a secret over ``trials`` trials."""

    auroc: float
    auroc_ci: tuple[float, float]
    accuracy: float
    advantage: float
    tpr_at_1pct_fpr: float | None    # None for secrets with more than two values
    trials: int
    level: float = 0.95

    def to_dict(self) -> dict:
        d = asdict(self)
        d["auroc_ci"] = list(self.auroc_ci)
        return d

    def summary(self) -> str:
        lo, hi = self.auroc_ci
        return (f"AUROC {self.auroc:.3f} [{lo:.3f}, {hi:.3f}], accuracy {self.accuracy:.3f}, "
                f"advantage {self.advantage:.3f} over {self.trials} trials")


def score_guesses(labels, scores, *, level: float = 0.95, seed: int = 0) -> InferenceScore:
    """Every metric of this module at once, as an :class:`InferenceScore`."""
    y, s = _check(labels, scores)
    yb, sb = _binary(y, s)
    return InferenceScore(
        auroc=_auroc(y, s),
        auroc_ci=auroc_ci(y, s, level=level, seed=seed),
        accuracy=accuracy(y, s),
        advantage=advantage(y, s),
        tpr_at_1pct_fpr=tpr_at_fpr(yb, sb) if sb.ndim == 1 else None,
        trials=int(y.shape[0]),
        level=level,
    )


def tpr_at_fprs(labels, scores, *, fprs=(0.01, 0.001)) -> dict[float, float]:
    """The true-positive rate at each false-positive rate in ``fprs`` (two secret values).

    The rate at a false-positive rate ``f`` is the largest TPR among thresholds whose
    FPR is at most ``f`` (0 when none is). With ``n0`` negatives, an FPR below
    ``1 / n0`` allows no false positive at all: the number then says only whether
    some members score above every non-member.

    >>> import numpy as np
    >>> tpr_at_fprs(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.9, 0.25]), fprs=(0.01, 0.5))
    {0.01: 0.5, 0.5: 1.0}
    """
    y, s = _check(labels, scores)
    y, s = _binary(y, s)
    if s.ndim != 1:
        raise ValueError("tpr_at_fprs needs two secret values (scores of shape (T,) or (T, 2))")
    if isinstance(fprs, (int, float)):
        fprs = (fprs,)
    f, t, _ = roc_curve(y, s)
    out = {}
    for q in fprs:
        check_fraction("fprs", q)
        ok = f <= q
        out[q] = float(t[ok].max()) if ok.any() else 0.0
    return out
