"""A mu-GDP fit of "in" and "out" statistics, with a confidence interval, converted to epsilon.

Counting rare errors (:func:`~leaklab.audit.empirical_epsilon`) makes no assumption
about the scores and pays for it: at ``delta = 1e-5`` it cannot certify much more than
``log(n / 6)`` from ``n`` trials. Nasr et al. (2023, "Tight Auditing of Differentially
Private Machine Learning") audit DP-SGD instead by fitting the observed privacy curve.
For the Gaussian mechanism the white-box statistic of a gradient canary (the release's
projection on the canary's direction) is Gaussian with the same variance in both
worlds, and its mean moves by ``mu`` standard deviations when the canary is present:
the two worlds are exactly as distinguishable as ``N(0, 1)`` and ``N(mu, 1)``, that is
``mu``-GDP (Dong, Roth and Su), and the mechanism is not ``(eps, delta)``-DP for any
``eps`` below ``gdp_epsilon(delta, mu)``.

:func:`gdp_fit` estimates ``mu = (mean_in - mean_out) / s`` (``s`` the pooled standard
deviation) with a confidence interval, and maps both ends through the monotone
``mu -> eps(delta)``:

* ``method="exact"``: the standardised difference of the means follows a noncentral
  t distribution with ``n_in + n_out - 2`` degrees of freedom and noncentrality
  ``mu / sqrt(1/n_in + 1/n_out)``; inverting its distribution function gives an exact
  interval **if** both samples are independent draws from Gaussians of one variance.
* ``method="bootstrap"``: the percentile interval of ``mu`` over resamples of each
  group (no normality needed for ``mu`` itself, only large samples; the conversion to
  epsilon still reads ``mu`` as the mechanism's GDP parameter).

What it assumes, and what it does not give: the epsilon is a lower bound on the
mechanism's epsilon only when the statistic's two distributions are the Gaussian pair
the fit assumes. For a Gaussian mechanism and a projection statistic with the other
records fixed they are, exactly. For a mechanism that is not Gaussian (Laplace noise,
a broken sampler) the fit is a model-based estimate, not a certificate; the result
carries a normality test and an equal-variance test of the scores to show when the
model is doubtful, and the distribution-free Clopper--Pearson bound stays beside it.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from .result import AuditResult
from .threshold import _as_scores, _real, _seed

__all__ = ["gdp_fit", "gdp_mu_interval", "GDP_METHODS", "GDP_ASSUMPTIONS"]

#: The interval methods of :func:`gdp_fit`.
GDP_METHODS = ("exact", "bootstrap")

#: What each method assumes (goes into every result's ``details``).
GDP_ASSUMPTIONS = {
    "exact": "in and out statistics are independent Gaussian samples with one variance (exact noncentral-t "
             "interval); then the mechanism's trade-off is at least that of mu-GDP",
    "bootstrap": "mu is estimated by resampling each group (percentile interval, large samples); reading mu as "
                 "the mechanism's GDP parameter still assumes Gaussian statistics of one variance",
}


def _pooled(s_in: np.ndarray, s_out: np.ndarray) -> tuple[float, float]:
    n1, n0 = s_in.size, s_out.size
    var = ((n1 - 1) * s_in.var(ddof=1) + (n0 - 1) * s_out.var(ddof=1)) / (n1 + n0 - 2)
    return float(s_in.mean() - s_out.mean()), math.sqrt(max(var, 0.0))


def _nct_interval(t_obs: float, df: int, level: float) -> tuple[float, float]:
    """The ``level`` interval of the noncentrality of a noncentral t from one observation ``t_obs``."""
    a = (1.0 - level) / 2.0
    # sf(t_obs; nc) grows with nc: the lower end solves sf = a, the upper end sf = 1 - a
    def f(nc, target):
        return float(stats.nct.sf(t_obs, df, nc)) - target

    width = 10.0 + abs(t_obs)
    lo_b, hi_b = t_obs - width, t_obs + width
    out = []
    for target in (a, 1.0 - a):
        lo, hi = lo_b, hi_b
        while f(lo, target) > 0:
            lo -= width
        while f(hi, target) < 0:
            hi += width
        out.append(optimize.brentq(f, lo, hi, args=(target,), xtol=1e-10))
    return out[0], out[1]


def gdp_mu_interval(scores_in, scores_out, *, level: float = 0.95, method: str = "exact",
                    resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(mu_hat, mu_lower, mu_upper)``: the GDP parameter of the in/out scores and its ``level`` interval.

    >>> rng = np.random.default_rng(0)
    >>> mu, lo, hi = gdp_mu_interval(rng.normal(1, 1, 2000), rng.normal(0, 1, 2000))
    >>> lo < 1.0 < hi
    True
    """
    s_in = _as_scores("scores_in", scores_in)
    s_out = _as_scores("scores_out", scores_out)
    level = _real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    if method not in GDP_METHODS:
        raise ValueError(f"method must be one of {', '.join(GDP_METHODS)}, got {method!r}")
    if s_in.size < 2 or s_out.size < 2:
        raise ValueError(f"the GDP fit needs at least 2 scores per group, got {s_in.size} in and {s_out.size} out")
    diff, sd = _pooled(s_in, s_out)
    if sd == 0.0:
        raise ValueError("the scores have no spread (every score in each group is the same): the mechanism adds "
                         "no noise to this statistic and no Gaussian fit applies; its epsilon is unbounded")
    mu = diff / sd
    if method == "exact":
        k = math.sqrt(1.0 / s_in.size + 1.0 / s_out.size)
        lo, hi = _nct_interval(mu / k, s_in.size + s_out.size - 2, level)
        return mu, lo * k, hi * k
    resamples = int(resamples)
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}")
    rng = np.random.default_rng(_seed(seed))
    mus = np.empty(resamples)
    for i0 in range(0, resamples, 256):                    # blocks of resamples, vectorised within a block
        k = min(256, resamples - i0)
        a = s_in[rng.integers(0, s_in.size, (k, s_in.size))]
        b = s_out[rng.integers(0, s_out.size, (k, s_out.size))]
        var = ((s_in.size - 1) * a.var(1, ddof=1) + (s_out.size - 1) * b.var(1, ddof=1)) / (
            s_in.size + s_out.size - 2)
        mus[i0:i0 + k] = (a.mean(1) - b.mean(1)) / np.sqrt(np.maximum(var, 1e-300))
    a = (1.0 - level) / 2.0
    return mu, float(np.quantile(mus, a)), float(np.quantile(mus, 1.0 - a))


def _eps(delta: float, mu: float) -> float:
    from ..theory.information import gdp_epsilon

    if not mu > 0:
        return 0.0
    if not math.isfinite(mu):
        return math.inf
    return gdp_epsilon(delta, mu)


def gdp_fit(scores_in, scores_out, *, delta: float, level: float = 0.95, method: str = "exact",
            resamples: int = 2000, seed: int = 0) -> AuditResult:
    """Fit ``mu``-GDP to the scores of "in" trials (larger means "in") and "out" trials; epsilon at ``delta``.

    Returns an :class:`~leaklab.audit.AuditResult` with ``estimator="gdp"``:
    ``epsilon_lower`` is the epsilon of the interval's lower end of ``mu`` (a lower
    confidence bound on the mechanism's epsilon with confidence ``(1 + level) / 2``, one
    sided, under the method's assumptions), ``epsilon_point`` that of the estimate;
    ``details`` hold ``mu``, ``mu_lower``, ``mu_upper``, ``epsilon_upper``, the method
    and what it assumes, and two diagnostics: the smallest p-value of D'Agostino's
    normality test over the two groups (``normality_p``) and Levene's test of equal
    variances (``equal_variance_p``). Small p-values say the Gaussian model is doubtful
    and the epsilon is an estimate, not a bound.

    >>> rng = np.random.default_rng(0)
    >>> r = gdp_fit(rng.normal(1, 1, 2000), rng.normal(0, 1, 2000), delta=1e-5)
    >>> 3.5 < r.epsilon_lower < 4.377 < r.details["epsilon_upper"]      # 4.377: the epsilon of 1-GDP
    True
    """
    s_in = _as_scores("scores_in", scores_in)
    s_out = _as_scores("scores_out", scores_out)
    delta = _real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    mu, lo, hi = gdp_mu_interval(s_in, s_out, level=level, method=method, resamples=resamples, seed=seed)
    diag = {}
    if s_in.size >= 8 and s_out.size >= 8:
        diag["normality_p"] = float(min(stats.normaltest(s_in).pvalue, stats.normaltest(s_out).pvalue))
        diag["equal_variance_p"] = float(stats.levene(s_in, s_out).pvalue)
    details = {"mu": float(mu), "mu_lower": float(lo), "mu_upper": float(hi),
               "epsilon_upper": _eps(delta, hi), "method": method, "assumes": GDP_ASSUMPTIONS[method],
               "mean_in": float(s_in.mean()), "mean_out": float(s_out.mean()),
               "std_pooled": _pooled(s_in, s_out)[1], **diag}
    if method == "bootstrap":
        details.update(resamples=int(resamples), seed=int(seed))
    return AuditResult(estimator="gdp", epsilon_lower=_eps(delta, lo), epsilon_point=_eps(delta, mu),
                       level=level, delta=delta, counts={"in": int(s_in.size), "out": int(s_out.size)},
                       details=details)
