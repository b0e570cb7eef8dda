"""Auditing in one run (Steinke, Nasr and Jagielski, 2023).

``m`` canaries are each included in the training data independently with
probability 1/2; after one run the auditor makes ``r`` guesses of "included" or
"excluded" (and abstains on the rest) and finds ``v`` of them right. If the
mechanism is (eps, delta)-DP, then with ``q = e^eps / (1 + e^eps)``

    P[v or more right] <= P[Binom(r, q) >= v]
                          + 2 m delta * max_{i=1..v} (1/i) P[v - i <= Binom(r, q) < v],

which is the p-value of the claim "eps". The audit's lower bound is the largest eps
whose p-value is at most ``1 - level`` (found by bisection; the p-value grows with
eps). The guesses may depend on anything but the inclusion bits.
"""
from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from scipy import stats
from scipy.special import expit

from .result import AuditResult
from .threshold import _as_scores, _real

__all__ = ["one_run_p_value", "one_run_epsilon", "one_run_guesses", "one_run_audit"]


def _int(name: str, value, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_mrv(m, r, v) -> tuple[int, int, int]:
    m = _int("canaries", m, minimum=1)
    r = _int("guesses", r, minimum=1)
    v = _int("correct", v, minimum=0)
    if r > m:
        raise ValueError(f"guesses must be at most canaries ({m}), got {r}")
    if v > r:
        raise ValueError(f"correct must be at most guesses ({r}), got {v}")
    return m, r, v


def one_run_p_value(epsilon: float, *, canaries: int, guesses: int, correct: int,
                    delta: float = 0.0) -> float:
    """The p-value of the claim "(epsilon, delta)-DP" given ``correct`` right out of ``guesses``.

    >>> round(one_run_p_value(2.0, canaries=1000, guesses=100, correct=95), 4)
    0.0161
    """
    m, r, v = _check_mrv(canaries, guesses, correct)
    eps = _real("epsilon", epsilon, low=0.0, high=math.inf, high_open=True)
    delta = _real("delta", delta, low=0.0, high=1.0, high_open=True)
    q = float(expit(eps))
    p = float(stats.binom.sf(v - 1, r, q))                    # P[B >= v]
    if delta > 0 and v > 0:
        i = np.arange(1, v + 1)
        below = stats.binom.cdf(v - 1, r, q) - stats.binom.cdf(v - i - 1, r, q)   # P[v-i <= B < v]
        p += 2.0 * m * delta * float(np.max(below / i))
    return min(p, 1.0)


def one_run_epsilon(*, canaries: int, guesses: int, correct: int, delta: float = 0.0,
                    level: float = 0.95, tol: float = 1e-6) -> AuditResult:
    """The one-run audit's lower bound from its counts.

    ``epsilon_point`` is the eps at which ``q = e^eps/(1+e^eps)`` equals the observed
    accuracy ``correct / guesses`` (``inf`` when every guess is right, 0 at or below 1/2).

    >>> r = one_run_epsilon(canaries=1000, guesses=100, correct=95)
    >>> round(r.epsilon_lower, 2)
    2.17
    """
    m, r, v = _check_mrv(canaries, guesses, correct)
    delta = _real("delta", delta, low=0.0, high=1.0, high_open=True)
    level = _real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    alpha = 1.0 - level

    def p(e):
        return one_run_p_value(e, canaries=m, guesses=r, correct=v, delta=delta)

    if p(0.0) > alpha:
        lower = 0.0
    else:
        lo, hi = 0.0, 1.0
        while p(hi) <= alpha:
            lo, hi = hi, 2.0 * hi
            if hi > 1e4:                                      # cannot happen for finite r
                raise RuntimeError("the one-run p-value did not exceed 1 - level")
        while hi - lo > tol:
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if p(mid) <= alpha else (lo, mid)
        lower = lo
    acc = v / r
    point = math.inf if v == r else max(0.0, math.log(acc / (1.0 - acc))) if v > 0 else 0.0
    return AuditResult(estimator="one-run", epsilon_lower=float(lower), epsilon_point=float(point),
                       level=level, delta=delta,
                       counts={"canaries": m, "guesses": r, "correct": v},
                       details={"p_value_at_lower": p(lower), "accuracy": acc})


def one_run_guesses(scores, *, guesses: int | tuple[int, int], center: float | None = None):
    """The audit's guesses from canary scores (larger means "included").

    ``guesses=r`` makes the ``r`` most confident guesses: the canaries farthest from
    ``center`` (the median score by default), guessed "included" above it and
    "excluded" below. ``guesses=(k_in, k_out)`` guesses "included" for the ``k_in``
    highest scores and "excluded" for the ``k_out`` lowest, as in Steinke et al.

    Returns ``(index, guess)``: the canaries guessed on and the guesses (bool, True = in).
    """
    s = _as_scores("scores", scores)
    m = s.size
    if isinstance(guesses, tuple):
        if len(guesses) != 2:
            raise ValueError(f"guesses must be an int or a pair (k_in, k_out), got {guesses!r}")
        k_in, k_out = (_int(n, g) for n, g in zip(("guesses[0]", "guesses[1]"), guesses))
        if k_in + k_out > m or k_in + k_out < 1:
            raise ValueError(f"guesses must total between 1 and the {m} canaries, got {k_in + k_out}")
        order = np.argsort(s, kind="stable")
        idx = np.concatenate([order[m - k_in:], order[:k_out]]) if k_in else order[:k_out]
        guess = np.concatenate([np.ones(k_in, bool), np.zeros(k_out, bool)])
        return idx, guess
    r = _int("guesses", guesses, minimum=1)
    if r > m:
        raise ValueError(f"guesses must be at most the {m} canaries, got {r}")
    c = float(np.median(s)) if center is None else _real("center", center, low=-math.inf, high=math.inf,
                                                         low_open=True, high_open=True)
    idx = np.argsort(-np.abs(s - c), kind="stable")[:r]
    return idx, s[idx] >= c


def one_run_audit(scores, included, *, guesses: int | tuple[int, int], delta: float = 0.0,
                  level: float = 0.95, center: float | None = None) -> AuditResult:
    """Audit one run from the scores of its ``m`` canaries and their inclusion bits.

    ``included[i]`` says whether canary ``i`` was in the training data (each drawn
    with probability 1/2 by the auditor); ``scores`` must not have been computed from
    those bits. ``guesses`` (fixed in advance, not tuned on the outcome) is as in
    :func:`one_run_guesses`.
    """
    s = _as_scores("scores", scores)
    inc = np.asarray(included)
    if inc.shape != s.shape:
        raise ValueError(f"included must have the shape of scores {s.shape}, got {inc.shape}")
    if inc.dtype != bool:
        if not np.isin(inc, (0, 1)).all():
            raise ValueError("included must hold booleans or 0/1")
        inc = inc.astype(bool)
    idx, guess = one_run_guesses(s, guesses=guesses, center=center)
    correct = int((guess == inc[idx]).sum())
    res = one_run_epsilon(canaries=s.size, guesses=int(idx.size), correct=correct, delta=delta,
                          level=level)
    details = dict(res.details, guessed_in=int(guess.sum()), guessed_out=int((~guess).sum()))
    return AuditResult(estimator=res.estimator, epsilon_lower=res.epsilon_lower,
                       epsilon_point=res.epsilon_point, level=res.level, delta=res.delta,
                       counts=res.counts, details=details)
