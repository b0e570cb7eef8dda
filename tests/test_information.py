"""Information-theoretic limits, each against a direct computation."""
import doctest
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import leaklab.theory.information as info
from leaklab.metrics import auroc, auroc_ci
from leaklab.theory.information import (binary_entropy, classifier_mi, dpsgd_attribute_auroc_bound,
                                        dpsgd_attribute_mu, fano_error_bound, gaussian_mi,
                                        gaussian_mi_from_params, gdp_auroc_bound, gdp_delta,
                                        gdp_epsilon, inverse_binary_entropy)

LOG2 = math.log(2)


# --------------------------------------------------------------------------- GDP
@pytest.mark.parametrize("mu", [0.0, 0.3, 1.0, 2.5])
def test_gdp_auroc_bound_is_the_auroc_of_the_gaussian_test(mu):
    """Phi(mu/sqrt 2) = P[X > Y] for X ~ N(mu, 1), Y ~ N(0, 1), integrated directly."""
    direct, _ = integrate.quad(lambda x: stats.norm.pdf(x - mu) * stats.norm.cdf(x), -np.inf, np.inf)
    assert gdp_auroc_bound(mu) == pytest.approx(direct, abs=1e-8)
    rng = np.random.default_rng(0)
    n = 4000
    labels = np.r_[np.ones(n), np.zeros(n)]
    scores = np.r_[rng.normal(mu, 1, n), rng.normal(0, 1, n)]
    lo, hi = auroc_ci(labels, scores)
    assert lo <= gdp_auroc_bound(mu) <= hi


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-3, 1e-1])
def test_gdp_epsilon_is_the_best_threshold_test_of_the_gaussian_mechanism(mu, delta):
    """eps(delta) from Dong-Roth-Su equals sup over thresholds of the test bound at exact rates."""
    eps = gdp_epsilon(delta, mu)
    assert gdp_delta(eps, mu) == pytest.approx(delta, rel=1e-6)
    t = np.linspace(-12, 16, 200_001)
    fpr, fnr = stats.norm.sf(t), stats.norm.cdf(t - mu)
    with np.errstate(divide="ignore"):
        best = np.log(np.maximum((1 - delta - fpr) / fnr, (1 - delta - fnr) / fpr)).max()
    assert eps == pytest.approx(best, abs=2e-3)
    assert gdp_epsilon(delta, mu / 2) < eps                           # less signal, less privacy loss


def test_gdp_delta_large_epsilon_does_not_overflow():
    assert gdp_delta(800.0, 1.0) == 0.0
    assert gdp_epsilon(0.9, 0.1) == 0.0                               # delta above delta(0): eps = 0


def _dpsgd_scores(rounds, sigma, *, angle, trials, seed, dim=16, batch=8, clip=1.0):
    """The informed adversary's optimal statistic against DP-SGD releases of a clipped sum.

    The target's gradient is g(s=0) or g(s=1), norm 3 each (clipped to ``clip``), at the
    given angle (pi: opposite, the worst case); the other records' clipped gradients are
    known to the adversary, who subtracts them and projects on g1 - g0.
    """
    gen = torch.Generator().manual_seed(seed)

    def clipped(g):
        return g * torch.clamp(clip / g.norm(dim=-1, keepdim=True), max=1.0)

    u = torch.zeros(dim); u[0] = 1.0
    v = torch.zeros(dim); v[0], v[1] = math.cos(angle), math.sin(angle)
    g0, g1 = clipped(3 * u), clipped(3 * v)
    secret = torch.randint(0, 2, (trials,), generator=gen)
    total = torch.zeros(trials)
    for _ in range(rounds):
        others = clipped(torch.randn(trials, batch - 1, dim, generator=gen)).sum(1)
        target = torch.where(secret[:, None] == 1, g1, g0)
        release = others + target + sigma * clip * torch.randn(trials, dim, generator=gen)
        total += (release - others - (g0 + g1) / 2) @ (g1 - g0)
    return secret.numpy(), total.numpy()


@pytest.mark.parametrize("rounds,sigma", [(1, 2.0), (4, 4.0), (3, 1.5)])
def test_dpsgd_attribute_bound_is_reached_by_the_worst_case_and_not_exceeded(rounds, sigma):
    assert dpsgd_attribute_mu(rounds, sigma) == pytest.approx(2 * math.sqrt(rounds) / sigma)
    bound = dpsgd_attribute_auroc_bound(rounds, sigma)
    assert bound == pytest.approx(stats.norm.cdf(math.sqrt(2 * rounds) / sigma))
    y, s = _dpsgd_scores(rounds, sigma, angle=math.pi, trials=6000, seed=rounds)
    lo, hi = auroc_ci(y, s)
    assert lo <= bound <= hi                                           # tight at opposite gradients
    y, s = _dpsgd_scores(rounds, sigma, angle=math.pi / 3, trials=6000, seed=rounds + 10)
    assert auroc(y, s) < bound - 0.03                                 # below it otherwise


def _canary_game(noise, rounds, seed, *, adaptive=True):
    """The game the DP-SGD ceiling bounds: a fixed target (a random natural canary) whose
    attribute alone changes, released through DP-SGD, the rest of the batch random."""
    import leaklab
    from leaklab import games
    from leaklab.audit.canaries import make_canary
    from leaklab.games.canary import CanaryAttributeGame, with_canary

    data = leaklab.load_dataset("diabetes")
    model = games.default_model(data, seed=seed)
    canary = make_canary("random", data, model, seed=seed)
    game = CanaryAttributeGame(data.info, canary=canary)
    return games.play(game, with_canary(data, canary), adversary="informed", batch_size=4, rounds=rounds,
                      trials=300, defense=f"dp:clip=1,noise={noise:g}", adaptive=adaptive, model=model,
                      adversary_options={"sims": 8}, steps_per_round=5, seed=seed, progress=False)


@pytest.mark.parametrize("noise,seed", [(0.5, 0), (2.0, 0), (2.0, 1), (4.0, 2)])
def test_no_canary_game_under_dpsgd_exceeds_the_gdp_ceiling(noise, seed):
    """The measured AUROC of the canary game (informed adversary, static and adaptive, after 1 and
    2 rounds) has the lower end of its interval below Phi(sqrt(2R) / sigma)."""
    for adaptive in (False, True):
        res = _canary_game(noise, 2, seed, adaptive=adaptive)
        for r in (1, 2):
            s = res.score(r)
            bound = dpsgd_attribute_auroc_bound(r, noise)
            assert s.auroc_ci[0] <= bound, (noise, seed, adaptive, r, s, bound)
            assert gdp_auroc_bound(dpsgd_attribute_mu(r, noise)) == bound
        if noise == 0.5 and adaptive:     # the other side: a weak noise leaves an attack that wins
            assert res.score().auroc_ci[0] > 0.6, res


def test_the_dpsgd_ceiling_does_not_bound_the_attribute_game_with_a_drawn_target():
    """play("attribute") draws its target from P(z | a): its other features reveal the secret
    with nothing released, so the pooled AUROC is not bounded by the ceiling (which is why the
    ceiling is compared with the canary game)."""
    from leaklab import games

    res = games.play("attribute", "diabetes", adversary="combined", batch_size=4, trials=300,
                     defense="dp:clip=1,noise=1000", seed=0, progress=False)
    bound = dpsgd_attribute_auroc_bound(1, 1000.0)
    assert bound < 0.501
    assert res.baseline.auroc_ci[0] > bound + 0.1 and res.score().auroc_ci[0] > bound + 0.1


# --------------------------------------------------------------------------- Fano
def _symmetric_channel(k, p):
    """Joint law of (A, Y): A uniform on K values, Y = A w.p. 1 - p, else uniform on the others."""
    cond = np.full((k, k), p / (k - 1))
    np.fill_diagonal(cond, 1 - p)
    return cond / k


def _mutual_information(joint):
    pa, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ py)[nz])).sum())


@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("p", [0.01, 0.2, 0.45])
def test_fano_is_tight_on_the_symmetric_channel(k, p):
    """Fano's inequality is an equality for the K-ary symmetric channel: the bound is its error p."""
    joint = _symmetric_channel(k, p)
    mi = _mutual_information(joint)
    map_error = 1 - joint.max(0).sum()                                # the best adversary's error
    bound = fano_error_bound(mi, k)
    assert map_error == pytest.approx(p)
    assert bound == pytest.approx(p, abs=1e-9)
    simple = fano_error_bound(mi, k, form="simple")
    assert simple <= bound + 1e-12
    if k == 2:
        assert simple == 0.0                                          # the weak form is vacuous for K = 2
    assert fano_error_bound(mi / LOG2, k, unit="bits") == pytest.approx(bound, abs=1e-9)


def test_fano_bounds_a_channel_it_is_not_tight_for():
    """A non-symmetric channel: the best adversary's error stays at or above the bound."""
    rng = np.random.default_rng(0)
    for k in (2, 4, 7):
        for _ in range(20):
            cond = rng.dirichlet(np.ones(5), size=k)                  # P(Y | A), 5 observations
            joint = cond / k
            mi = _mutual_information(joint)
            map_error = 1 - joint.max(0).sum()
            assert map_error >= fano_error_bound(mi, k) - 1e-12
            assert fano_error_bound(mi, k) >= fano_error_bound(mi, k, form="simple")


def test_fano_endpoints_and_binary_entropy_inverse():
    assert fano_error_bound(0.0, 4) == pytest.approx(0.75)
    assert fano_error_bound(math.log(4), 4) == 0.0
    assert fano_error_bound(0.0, 4, form="simple") == pytest.approx(1 - LOG2 / math.log(4))
    for p in (0.0, 0.01, 0.3, 0.5):
        assert inverse_binary_entropy(binary_entropy(p)) == pytest.approx(p, abs=1e-9)
    assert binary_entropy(0.5, unit="bits") == pytest.approx(1.0)


def test_fano_and_the_gaussian_channel_agree_with_its_bayes_error():
    """Scores N(0,1) vs N(mu,1): Bayes error Phi(-mu/2) is above Fano's bound from the true I."""
    for mu in (0.2, 1.0, 3.0):
        mi = gaussian_mi_from_params(0, 1, mu, 1)
        assert stats.norm.cdf(-mu / 2) >= fano_error_bound(mi, 2) - 1e-12


# --------------------------------------------------------------------------- MI estimates
def _monte_carlo_mi(m0, s0, m1, s1, n=1_000_000, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    x = np.where(a == 1, rng.normal(m1, s1, n), rng.normal(m0, s0, n))
    l0, l1 = stats.norm.logpdf(x, m0, s0), stats.norm.logpdf(x, m1, s1)
    la = np.where(a == 1, l1, l0)
    return float(np.mean(la - (np.logaddexp(l0, l1) - LOG2)))


@pytest.mark.parametrize("params", [(0, 1, 0.5, 1), (0, 1, 2, 1), (0, 1, 1, 3), (-1, 0.5, 1, 2)])
def test_gaussian_mi_integral_matches_monte_carlo(params):
    assert gaussian_mi_from_params(*params) == pytest.approx(_monte_carlo_mi(*params), abs=3e-3)
    assert gaussian_mi_from_params(*params, unit="bits") == pytest.approx(gaussian_mi_from_params(*params) / LOG2)


def test_gaussian_mi_limits():
    assert gaussian_mi_from_params(0, 1, 0, 1) == pytest.approx(0.0, abs=1e-10)
    assert gaussian_mi_from_params(0, 1, 50, 1) == pytest.approx(LOG2, abs=1e-8)
    vals = [gaussian_mi_from_params(0, 1, mu, 1) for mu in (0.1, 0.5, 1, 2, 4)]
    assert all(a < b for a, b in zip(vals, vals[1:]))


@pytest.mark.parametrize("mu", [0.5, 1.5])
def test_mi_estimators_recover_a_known_mi_from_gaussian_scores(mu):
    true = gaussian_mi_from_params(0, 1, mu, 1)
    rng = np.random.default_rng(1)
    n = 20_000
    secret = rng.integers(0, 2, n)
    scores = rng.normal(0, 1, n) + mu * secret
    g = gaussian_mi(scores, secret)
    assert g.value == pytest.approx(true, abs=0.01)
    assert g.unit == "nats" and g.estimator == "gaussian"
    c = classifier_mi(scores, secret, seed=0)
    assert "classifier" in c.summary() and "nats" in c.summary()
    cb = classifier_mi(scores, secret, seed=0, unit="bits")
    assert cb.value == pytest.approx(c.value / LOG2)
    # a lower bound in expectation, with a one-sided 97.5% lower confidence end: over 20 runs
    # the lower end exceeds the true I rarely, and the mean shows no upward bias ...
    values, misses = [], 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        secret = rng.integers(0, 2, 10_000)
        c = classifier_mi(rng.normal(0, 1, secret.size) + mu * secret, secret, seed=seed)
        values.append(c.value)
        misses += c.ci[0] > true
    values = np.array(values)
    assert misses <= 3
    assert values.mean() - true < 3 * values.std(ddof=1) / math.sqrt(values.size)
    assert values.mean() > true - 0.01                                 # ... and a close one here


def test_mi_estimators_on_null_scores():
    rng = np.random.default_rng(2)
    n = 4000
    secret = rng.integers(0, 2, n)
    scores = rng.normal(0, 1, n)
    assert gaussian_mi(scores, secret).value < 2e-3
    c = classifier_mi(scores, secret, seed=0)
    assert c.ci[0] <= 0.0 <= c.ci[1] + 1e-3


def test_classifier_mi_uses_several_features_and_values():
    """Three secret values, two features: still below the true I (computed by Monte Carlo)."""
    rng = np.random.default_rng(3)
    n, k = 9000, 3
    means = np.array([[0, 0], [1.5, 0], [0, 1.5]])
    secret = rng.integers(0, k, n)
    x = means[secret] + rng.normal(size=(n, 2))
    # true I = E[log p(x | a) - log p(x)], p(x) the uniform mixture
    z = rng.normal(size=(200_000, 2)); a = rng.integers(0, k, 200_000); xx = means[a] + z
    logp = np.stack([stats.norm.logpdf(xx - m).sum(1) for m in means], 1)
    true = float(np.mean(logp[np.arange(a.size), a] - (np.logaddexp.reduce(logp, 1) - math.log(k))))
    c = classifier_mi(x, secret, seed=0)
    assert c.ci[0] <= true and c.value > true - 0.05


# --------------------------------------------------------------------------- validation
def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="mu"):
        gdp_auroc_bound(-1.0)
    with pytest.raises(ValueError, match="mu"):
        gdp_auroc_bound(float("nan"))
    with pytest.raises(ValueError, match="noise_multiplier"):
        dpsgd_attribute_mu(1, 0.0)
    with pytest.raises(TypeError, match="rounds"):
        dpsgd_attribute_mu(1.5, 1.0)
    with pytest.raises(ValueError, match="num_values"):
        fano_error_bound(0.1, 1)
    with pytest.raises(ValueError, match="mi"):
        fano_error_bound(-0.1, 2)
    with pytest.raises(ValueError, match="unit"):
        fano_error_bound(0.1, 2, unit="hartleys")
    with pytest.raises(ValueError, match="prior_entropy"):
        fano_error_bound(0.1, 2, prior_entropy=1.0)
    with pytest.raises(ValueError, match="scores"):
        gaussian_mi([0.0, np.inf, 1.0, 2.0], [0, 0, 1, 1])
    with pytest.raises(ValueError, match="secret"):
        gaussian_mi([0.0, 1.0, 2.0, 3.0], [0, 2, 1, 1])
    with pytest.raises(ValueError, match="secret"):
        classifier_mi(np.zeros(10), np.zeros(9, int))
    with pytest.raises(TypeError, match="secret"):
        classifier_mi(np.zeros(10), np.zeros(10))


def test_docstring_examples():
    result = doctest.testmod(info, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
