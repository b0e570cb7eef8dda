"""Information-theoretic limits on what a release can reveal about a secret.

Units: every information quantity is in **nats** (natural logarithms) unless a
function is called with ``unit="bits"``; a binary secret carries at most
``log 2 = 0.693`` nats (1 bit). Error probabilities and AUROCs are plain numbers in
[0, 1].

Three kinds of tools:

- **Gaussian differential privacy** (Dong, Roth and Su): a mechanism is mu-GDP when
  telling its outputs on two neighbouring inputs apart is no easier than telling
  ``N(0, 1)`` from ``N(mu, 1)``. Then every test has AUROC at most
  ``Phi(mu / sqrt 2)`` (:func:`gdp_auroc_bound`), and the mechanism is
  (eps, delta(eps))-DP with ``delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)``
  (:func:`gdp_delta`, inverted by :func:`gdp_epsilon`).
- **DP-SGD and attribute inference** (our derivation): changing one record's
  attribute moves the clipped gradient sum by at most ``2C`` while the noise has
  standard deviation ``sigma C``, so one round is ``(2/sigma)``-GDP and ``R`` observed
  rounds are ``(2 sqrt(R) / sigma)``-GDP, whatever the batch size
  (:func:`dpsgd_attribute_mu`, :func:`dpsgd_attribute_auroc_bound`).

- **Fano's inequality** (Cover and Thomas, section 2.10): an adversary who learns
  ``I`` nats about a uniform ``K``-valued secret errs with probability ``P_e`` satisfying
  ``h(P_e) + P_e log(K - 1) >= log K - I`` (:func:`fano_error_bound`); and two
  estimates of ``I`` from an attack's scores (:func:`gaussian_mi`, :func:`classifier_mi`).

What the GDP ceilings bound: a test between the releases of two neighbouring
datasets, here one fixed target whose attribute alone differs (the canary game,
:class:`leaklab.games.canary.CanaryAttributeGame`, and :mod:`leaklab.audit`). They also
hold when the target is drawn at random, as long as its draw does not depend on the
secret (a mixture of ``mu``-GDP pairs over a choice independent of the secret is
``mu``-GDP). They do **not** bound ``play("attribute")``: there the target is drawn
from ``P(z | a)``, so its other features ``phi(z)`` carry the secret before anything is
released (on diabetes, ``phi`` alone reaches an AUROC of about 0.75 whatever the noise).
In that game the ceiling speaks only of what the release adds for each fixed
``phi(z)``, not of the pooled AUROC of an adversary that knows ``phi(z)``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real

import numpy as np
from scipy import integrate, optimize, special, stats

__all__ = ["MIEstimate", "binary_entropy", "classifier_mi", "dpsgd_attribute_auroc_bound",
           "dpsgd_attribute_mu", "fano_error_bound", "gaussian_mi", "gaussian_mi_from_params",
           "gdp_auroc_bound", "gdp_delta", "gdp_epsilon", "inverse_binary_entropy"]

LOG2 = math.log(2.0)
UNITS = {"nats": 1.0, "bits": 1.0 / LOG2}


# --------------------------------------------------------------------------- validation
def _num(name: str, value, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
         high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a finite number in {lb}{low}, {high}{hb}, got {value}")
    return v


def _int(name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _unit(unit: str) -> float:
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; choose from: bits, nats")
    return UNITS[unit]


def _array(name: str, value, *, ndim=(1,)) -> np.ndarray:
    try:
        import torch
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}") from None
    if a.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return a


# --------------------------------------------------------------------------- GDP
def gdp_auroc_bound(mu: float) -> float:
    """The largest AUROC of any test against a ``mu``-GDP mechanism: ``Phi(mu / sqrt 2)``.

    It is the AUROC of the optimal test between ``N(0, 1)`` and ``N(mu, 1)``. The test
    is between the mechanism's outputs on two neighbouring inputs (a game whose two
    worlds are those inputs, or a mixture of such pairs chosen independently of the
    secret); it does not bound an adversary that also holds side information
    correlated with the secret (see the module's notes).

    >>> round(gdp_auroc_bound(1.0), 4)
    0.7602
    """
    mu = _num("mu", mu, low=0.0)
    return float(stats.norm.cdf(mu / math.sqrt(2.0)))


def gdp_delta(epsilon: float, mu: float) -> float:
    """``delta(eps)`` of a ``mu``-GDP mechanism (Dong, Roth and Su, Corollary 2.13)."""
    eps = _num("epsilon", epsilon, low=0.0)
    mu = _num("mu", mu, low=0.0, low_open=True)
    # e^eps Phi(b) computed as exp(eps + log Phi(b)) so that large eps does not overflow
    a, b = -eps / mu + mu / 2.0, -eps / mu - mu / 2.0
    return float(max(0.0, stats.norm.cdf(a) - math.exp(eps + stats.norm.logcdf(b))))


def gdp_epsilon(delta: float, mu: float) -> float:
    """The smallest eps with ``gdp_delta(eps, mu) <= delta``: the true epsilon of ``mu``-GDP.

    >>> round(gdp_epsilon(1e-5, 1.0), 3)
    4.377
    """
    delta = _num("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    mu = _num("mu", mu, low=0.0, low_open=True)
    if gdp_delta(0.0, mu) <= delta:
        return 0.0
    hi = 1.0
    while gdp_delta(hi, mu) > delta:
        hi *= 2.0
    return float(optimize.brentq(lambda e: gdp_delta(e, mu) - delta, 0.0, hi, xtol=1e-12))


def dpsgd_attribute_mu(rounds: int, noise_multiplier: float) -> float:
    """The GDP ``mu`` of ``rounds`` observed DP-SGD releases about one record's attribute.

    Changing the attribute moves that record's clipped gradient by at most ``2C``
    (two vectors of norm at most ``C``); the Gaussian noise has standard deviation
    ``sigma C``; so a round is ``(2/sigma)``-GDP and ``R`` rounds compose to
    ``sqrt(R) * 2 / sigma`` (our derivation; it ignores subsampling, i.e. the target
    is in every observed batch, which is the attribute game's setting).

    The two neighbouring datasets are one target with either value of its attribute,
    the rest of each batch drawn independently of it: the canary game
    (:class:`~leaklab.games.canary.CanaryAttributeGame`). Only the ``R`` releases are
    counted: whatever else the adversary receives must not depend on the secret (the
    games train their model between rounds on data that does not; see
    :meth:`leaklab.games.Game.training_pool`).
    """
    r = _int("rounds", rounds, minimum=1)
    sigma = _num("noise_multiplier", noise_multiplier, low=0.0, low_open=True)
    return 2.0 * math.sqrt(r) / sigma


def dpsgd_attribute_auroc_bound(rounds: int, noise_multiplier: float) -> float:
    """``Phi(sqrt(2 R) / sigma)``: the AUROC ceiling of attribute inference about a fixed target against DP-SGD.

    It bounds the canary game (a fixed target, only its attribute changes), not
    ``play("attribute")``, whose target is drawn given the secret, so that its other
    features alone reveal it (see the module's notes).

    >>> round(dpsgd_attribute_auroc_bound(1, 2.0), 4)
    0.7602
    """
    return gdp_auroc_bound(dpsgd_attribute_mu(rounds, noise_multiplier))


# --------------------------------------------------------------------------- Fano
def binary_entropy(p, *, unit: str = "nats"):
    """``h(p) = -p log p - (1 - p) log(1 - p)`` (vectorised; ``h(0) = h(1) = 0``)."""
    scale = _unit(unit)
    p = np.asarray(p, dtype=float)
    if np.any((p < 0) | (p > 1)) or not np.isfinite(p).all():
        raise ValueError("p must lie in [0, 1]")
    h = special.entr(p) + special.entr(1.0 - p)
    return float(h * scale) if h.ndim == 0 else h * scale


def inverse_binary_entropy(h: float, *, unit: str = "nats") -> float:
    """The ``p`` in [0, 1/2] with ``binary_entropy(p) = h``."""
    scale = _unit(unit)
    h = _num("h", h, low=0.0, high=LOG2 * scale * (1 + 1e-12)) / scale
    if h <= 0.0:
        return 0.0
    if h >= LOG2:
        return 0.5
    return float(optimize.brentq(lambda p: binary_entropy(p) - h, 0.0, 0.5, xtol=1e-14))


def fano_error_bound(mi: float, num_values: int, *, unit: str = "nats", prior_entropy: float | None = None,
                     form: str = "full") -> float:
    """The smallest error probability of any guess of a ``num_values``-valued secret.

    An adversary whose observation carries ``mi`` about the secret ``A`` errs with
    probability ``P_e`` with ``h(P_e) + P_e log(K - 1) >= H(A) - mi`` (Fano's
    inequality). ``form="full"`` returns the smallest such ``P_e`` in
    ``[0, (K-1)/K]`` (for ``K = 2``: the inverse binary entropy of ``H(A) - mi``);
    ``form="simple"`` returns the familiar weakening
    ``(H(A) - mi - log 2) / log K``, i.e. ``1 - (mi + log 2) / log K`` for a uniform
    secret, which is never positive for ``K = 2``.

    ``prior_entropy`` is ``H(A)`` in the same ``unit`` (default ``log K``: a uniform
    secret, as the games draw it).

    >>> round(fano_error_bound(0.0, 2), 3), round(fano_error_bound(math.log(2), 2), 3)
    (0.5, 0.0)
    """
    scale = _unit(unit)
    k = _int("num_values", num_values, minimum=2)
    if form not in ("full", "simple"):
        raise ValueError(f"unknown form {form!r}; choose from: full, simple")
    mi = _num("mi", mi, low=0.0) / scale
    log_k = math.log(k)
    h_a = log_k if prior_entropy is None else _num("prior_entropy", prior_entropy, low=0.0) / scale
    if h_a > log_k * (1 + 1e-12):
        raise ValueError(f"prior_entropy must be at most log {k} = {log_k * scale:.4g} {unit}, "
                         f"got {h_a * scale}")
    target = h_a - mi                                   # a lower bound on H(A | observation)
    if form == "simple":
        return max(0.0, (target - LOG2) / log_k)
    if target <= 0.0:
        return 0.0
    top = (k - 1) / k

    def f(p):
        return binary_entropy(p) + p * math.log(k - 1) - target

    if f(top) <= 0.0:
        return top
    return float(optimize.brentq(f, 0.0, top, xtol=1e-14))


# --------------------------------------------------------------------------- MI estimates
@dataclass(frozen=True)
class MIEstimate:
    """An estimate of the information (in ``unit``) that scores carry about a secret."""

    estimator: str
    value: float
    unit: str
    trials: int
    ci: tuple[float, float] | None = None
    level: float | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.ci is not None:
            d["ci"] = list(self.ci)
        return d

    def summary(self) -> str:
        ci = "" if self.ci is None else f" [{self.ci[0]:.4f}, {self.ci[1]:.4f}] ({self.level:.0%})"
        return f"I ~ {self.value:.4f}{ci} {self.unit} ({self.estimator}, {self.trials} trials)"


def gaussian_mi_from_params(mean_0: float, std_0: float, mean_1: float, std_1: float, *,
                            unit: str = "nats") -> float:
    """``I(A; S)`` for ``A`` uniform on {0, 1} and ``S | A=a ~ N(mean_a, std_a^2)``.

    ``I = (1/2) sum_a  int p_a(s) log(p_a(s) / p(s)) ds`` with ``p = (p_0 + p_1) / 2``,
    integrated numerically (scipy's ``quad``).

    >>> round(gaussian_mi_from_params(0, 1, 0, 1), 6), round(gaussian_mi_from_params(0, 1, 40, 1), 4)
    (0.0, 0.6931)
    """
    scale = _unit(unit)
    m0, m1 = _num("mean_0", mean_0), _num("mean_1", mean_1)
    s0 = _num("std_0", std_0, low=0.0, low_open=True)
    s1 = _num("std_1", std_1, low=0.0, low_open=True)

    def integrand(s):
        l0 = stats.norm.logpdf(s, m0, s0)
        l1 = stats.norm.logpdf(s, m1, s1)
        lm = np.logaddexp(l0, l1) - LOG2
        return 0.5 * (np.exp(l0) * (l0 - lm) + np.exp(l1) * (l1 - lm))

    width = 12.0 * max(s0, s1)
    lo, hi = min(m0, m1) - width, max(m0, m1) + width
    pts = sorted({m0, m1, 0.5 * (m0 + m1)})
    val, _ = integrate.quad(integrand, lo, hi, points=pts, limit=400, epsabs=1e-12, epsrel=1e-10)
    return float(min(max(val, 0.0), LOG2) * scale)


def _split_secret(scores, secret) -> tuple[np.ndarray, np.ndarray]:
    s = _array("scores", scores)
    y = np.asarray(secret)
    if y.shape != s.shape:
        raise ValueError(f"secret must have the shape of scores {s.shape}, got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("secret must hold the values 0 and 1 (a binary secret)")
    y = y.astype(int)
    a, b = s[y == 0], s[y == 1]
    if a.size < 2 or b.size < 2:
        raise ValueError(f"each secret value needs at least 2 trials, got {a.size} and {b.size}")
    return a, b


def gaussian_mi(scores, secret, *, unit: str = "nats") -> MIEstimate:
    """The Gaussian approximation of ``I(A; S)`` along the adversary's projection.

    ``scores`` are the adversary's one-dimensional statistics (e.g. the projection on
    ``g(s=1) - g(s=0)``) and ``secret`` the binary secret of each trial. Each class's
    scores are modelled as a Gaussian (sample mean and standard deviation) and ``A`` as
    uniform; the information is then :func:`gaussian_mi_from_params`. An
    approximation, not a bound: it is exact only when the scores are Gaussian.
    """
    a, b = _split_secret(scores, secret)
    if a.std(ddof=1) == 0 or b.std(ddof=1) == 0:
        raise ValueError("the scores of each secret value must vary (a Gaussian fit needs std > 0)")
    val = gaussian_mi_from_params(a.mean(), a.std(ddof=1), b.mean(), b.std(ddof=1), unit=unit)
    return MIEstimate("gaussian", val, unit, int(a.size + b.size),
                      details={"mean_0": float(a.mean()), "std_0": float(a.std(ddof=1)),
                               "mean_1": float(b.mean()), "std_1": float(b.std(ddof=1))})


def classifier_mi(features, secret, *, split: float = 0.5, level: float = 0.95, unit: str = "nats",
                  prior_entropy: float | None = None, seed: int = 0) -> MIEstimate:
    """A lower bound on ``I(A; features)`` from a classifier's held-out cross-entropy.

    For any predictor ``q(a | x)``, the cross-entropy ``E[-log q(A | X)]`` is at least
    ``H(A | X)``, so ``I(A; X) = H(A) - H(A | X) >= H(A) - CE``. A logistic regression
    (standardised features) is fitted on a random ``split`` of the trials and its
    cross-entropy measured on the others; ``ci`` is a normal-approximation interval of
    the held-out mean. ``H(A)`` is ``prior_entropy`` (same unit) or ``log K`` for a
    uniform ``K``-valued secret. The value can be negative when the classifier is
    worse than guessing the prior; it is reported as measured.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scale = _unit(unit)
    x = _array("features", features, ndim=(1, 2))
    x = x[:, None] if x.ndim == 1 else x
    y = np.asarray(secret)
    if y.shape != (x.shape[0],):
        raise ValueError(f"secret must have shape ({x.shape[0]},), got {y.shape}")
    if y.dtype.kind not in "iub":
        raise TypeError(f"secret must hold integer values, got dtype {y.dtype}")
    values = np.unique(y)
    if values.size < 2:
        raise ValueError("secret must take at least two values")
    split = _num("split", split, low=0.0, high=1.0, low_open=True, high_open=True)
    level = _num("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    k = values.size
    h_a = math.log(k) if prior_entropy is None else _num("prior_entropy", prior_entropy, low=0.0) / scale
    rng = np.random.default_rng(seed)
    perm = rng.permutation(y.size)
    n_fit = int(math.floor(split * y.size))
    fit, held = perm[:n_fit], perm[n_fit:]
    if np.unique(y[fit]).size < k or held.size < 2:
        raise ValueError(f"split={split} leaves too few trials to fit on every value and to evaluate")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(x[fit], y[fit])
    logp = clf.predict_log_proba(x[held])
    col = np.searchsorted(clf.classes_, y[held])
    losses = -logp[np.arange(held.size), col]
    ce = float(losses.mean())
    se = float(losses.std(ddof=1) / math.sqrt(held.size))
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    val = h_a - ce
    return MIEstimate("classifier", val * scale, unit, int(y.size),
                      ci=((val - z * se) * scale, (val + z * se) * scale), level=level,
                      details={"cross_entropy": ce * scale, "prior_entropy": h_a * scale,
                               "held_out": int(held.size)})
