"""Empirical epsilon: the check values, a known answer, a held-out threshold, the one-run audit."""
import doctest
import math

import numpy as np
import pytest
from scipy import stats

import leaklab.audit.one_run
import leaklab.audit.threshold
from leaklab.audit import (AuditResult, clopper_pearson_upper, counts_at, empirical_epsilon,
                           epsilon_bound, epsilon_from_counts, one_run_audit, one_run_epsilon,
                           one_run_guesses, one_run_p_value, select_threshold)
from leaklab.theory.information import gdp_epsilon


# --------------------------------------------------------------------------- check values
def test_papers_check_value_threshold_audit():
    """n = 1000 in and 1000 out, TP = 500, FP = 10, delta = 1e-5: 3.91 and 3.24."""
    r = epsilon_from_counts(tp=500, fn=500, fp=10, tn=990, delta=1e-5, level=0.95)
    assert r.epsilon_point == pytest.approx(math.log(0.5 / 0.01), abs=1e-4)   # 3.912
    assert round(r.epsilon_point, 2) == 3.91
    assert round(r.epsilon_lower, 2) == 3.24
    assert r.estimator == "threshold" and r.level == 0.95 and r.delta == 1e-5
    assert r.counts == {"tp": 500, "fn": 500, "fp": 10, "tn": 990}


def test_fpr_and_fnr_have_their_own_denominators():
    """Unequal groups: FPR = FP / n_out and FNR = FN / n_in (swapping them changes the answer)."""
    r = epsilon_from_counts(tp=90, fn=10, fp=5, tn=9995, delta=1e-5)
    assert r.details["fpr"] == pytest.approx(5 / 10000)
    assert r.details["fnr"] == pytest.approx(10 / 100)
    want = math.log(max((1 - 1e-5 - 5 / 10000) / (10 / 100), (1 - 1e-5 - 10 / 100) / (5 / 10000)))
    assert r.epsilon_point == pytest.approx(want, rel=1e-12)                  # log 1800 = 7.50
    fpr_up = stats.binomtest(5, 10000).proportion_ci(0.95, method="exact").high
    fnr_up = stats.binomtest(10, 100).proportion_ci(0.95, method="exact").high
    lower = math.log(max((1 - 1e-5 - fpr_up) / fnr_up, (1 - 1e-5 - fnr_up) / fpr_up))
    assert r.epsilon_lower == pytest.approx(lower, rel=1e-12)


def test_vectorised_clopper_pearson_matches_scipy_binomtest():
    for n in (1, 7, 100, 1000):
        for k in sorted({0, 1, n // 3, n - 1, n}):
            for level in (0.5, 0.9, 0.95):
                want = stats.binomtest(k, n).proportion_ci(level, method="exact").high
                assert float(clopper_pearson_upper(k, n, level=level)) == pytest.approx(want, abs=1e-10)


def test_epsilon_bound_edges():
    assert float(epsilon_bound(0.5, 0.5, delta=0.0)) == 0.0           # chance: nothing certified
    assert float(epsilon_bound(0.6, 0.6, delta=0.0)) == 0.0           # worse than chance: clamped at 0
    assert math.isinf(float(epsilon_bound(0.0, 0.5, delta=1e-5)))     # a perfect side: no finite bound
    assert float(epsilon_bound(0.0, 1.0, delta=0.0)) == 0.0           # never guesses "in"
    # the mirror inequality: the two rates enter symmetrically
    assert float(epsilon_bound(0.01, 0.3, delta=1e-3)) == pytest.approx(float(epsilon_bound(0.3, 0.01, delta=1e-3)))


def test_summary_names_estimator_bound_confidence_counts_threshold():
    rng = np.random.default_rng(0)
    r = empirical_epsilon(rng.normal(2, 1, 400), rng.normal(0, 1, 400), delta=1e-5, seed=3)
    text = r.summary()
    assert isinstance(r, AuditResult)
    for piece in ("threshold audit", f"{r.epsilon_lower:.3f}", "95%", f"{r.epsilon_point:.3f}",
                  f"tp={r.counts['tp']}", f"{r.threshold:.4g}", "delta=1e-05"):
        assert piece in text
    assert r.to_dict()["counts"] == r.counts


# --------------------------------------------------------------------------- a known answer
def _gaussian_scores(mu, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(mu, 1.0, n_in), rng.normal(0.0, 1.0, n_out)


def test_optimal_test_of_gaussian_mechanism_stays_below_true_epsilon_and_approaches_it():
    """Scores of the optimal test of mu-GDP: eps-hat <= eps(delta), growing with n to within 0.2."""
    mu, delta = 1.0, 1e-2
    true = gdp_epsilon(delta, mu)                                      # 2.318
    means = []
    for n in (300, 3_000, 30_000, 1_000_000):
        lowers = []
        for seed in range(3):
            s_in, s_out = _gaussian_scores(mu, n, n, seed=n + seed)
            r = empirical_epsilon(s_in, s_out, delta=delta, seed=seed)
            assert r.epsilon_lower <= true, (n, seed, r.summary())
            lowers.append(r.epsilon_lower)
        means.append(float(np.mean(lowers)))
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert means[0] < true - 1.0                                       # few trials: a loose bound
    assert means[-1] > true - 0.2, (means, true)                       # many trials: close (~2.24)


@pytest.mark.parametrize("mu,n_in,n_out", [(0.5, 3000, 3000), (2.0, 2000, 20000), (1.0, 20000, 1000)])
def test_bound_holds_across_seeds_with_unequal_groups(mu, n_in, n_out):
    """eps-hat <= the true eps of mu-GDP over 20 seeds, balanced and unbalanced groups."""
    delta = 1e-5
    true = gdp_epsilon(delta, mu)
    for seed in range(20):
        s_in, s_out = _gaussian_scores(mu, n_in, n_out, seed)
        r = empirical_epsilon(s_in, s_out, delta=delta, seed=seed)
        assert 0.0 <= r.epsilon_lower <= true, (seed, r.summary(), true)
        assert r.counts["tp"] + r.counts["fn"] == n_in - n_in // 2      # only the held-out half counted
        assert r.counts["fp"] + r.counts["tn"] == n_out - n_out // 2
    assert r.epsilon_lower > 0.2                                       # and it does detect the leak


# --------------------------------------------------------------------------- the threshold is held out
def _in_sample(s_in, s_out, *, delta, level):
    """The biased audit: choose the threshold on the very trials that are counted."""
    t = select_threshold(s_in, s_out, delta=delta, level=level)
    return epsilon_from_counts(**counts_at(s_in, s_out, t), delta=delta, level=level).epsilon_lower


def test_pure_noise_held_out_bound_keeps_its_confidence_in_sample_does_not():
    """Null scores (true eps = 0): a level-0.5 bound may exceed 0 in at most half the runs.

    Held out it does so rarely; choosing the threshold on the same trials exceeds 0 in
    most runs, breaking the bound's stated confidence.
    """
    level, delta, seeds = 0.5, 1e-5, 40
    held, biased = [], []
    for seed in range(seeds):
        s_in, s_out = _gaussian_scores(0.0, 500, 500, seed)
        held.append(empirical_epsilon(s_in, s_out, delta=delta, level=level, seed=seed).epsilon_lower)
        biased.append(_in_sample(s_in, s_out, delta=delta, level=level))
    held, biased = np.array(held), np.array(biased)
    assert (held > 0).mean() <= 1 - level - 0.2          # well within the allowance (observed ~0.1)
    assert (biased > 0).mean() >= 1 - level + 0.2        # far beyond it (observed ~0.9)
    print(f"share of runs with eps-hat > 0: held out {(held > 0).mean():.2f}, "
          f"in sample {(biased > 0).mean():.2f}")
    assert biased.mean() > 3 * held.mean()


def test_pure_noise_held_out_bound_is_zero_at_95_percent():
    for seed in range(30):
        s_in, s_out = _gaussian_scores(0.0, 2000, 2000, seed)
        r = empirical_epsilon(s_in, s_out, delta=1e-5, seed=seed)
        assert r.epsilon_lower < 0.05, r.summary()


def test_fixed_threshold_counts_every_trial():
    s_in, s_out = _gaussian_scores(1.0, 300, 500, 0)
    r = empirical_epsilon(s_in, s_out, delta=1e-5, threshold=0.5)
    assert r.counts == counts_at(s_in, s_out, 0.5)
    assert r.counts["tp"] == int((s_in >= 0.5).sum()) and r.counts["fp"] == int((s_out >= 0.5).sum())
    assert r.threshold == 0.5 and r.details["threshold_from"] == "given"


def test_threshold_selection_finds_the_separating_threshold():
    s_in = np.array([5.0, 6.0, 7.0, 8.0] * 50)
    s_out = np.array([0.0, 1.0, 2.0, 3.0] * 50)
    t = select_threshold(s_in, s_out, delta=0.0)
    assert 3.0 < t <= 5.0


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs,err,words", [
    (dict(scores_in=[1.0, np.nan], scores_out=[0.0, 1.0]), ValueError, "scores_in"),
    (dict(scores_in=[1.0, 2.0], scores_out=[[0.0, 1.0]]), ValueError, "scores_out"),
    (dict(scores_in=[], scores_out=[0.0, 1.0]), ValueError, "scores_in"),
    (dict(scores_in=[1.0, 2.0], scores_out=[0.0, 1.0], delta=1.5), ValueError, "delta"),
    (dict(scores_in=[1.0, 2.0], scores_out=[0.0, 1.0], level=1.0), ValueError, "level"),
    (dict(scores_in=[1.0, 2.0], scores_out=[0.0, 1.0], split=0.0), ValueError, "split"),
    (dict(scores_in=[1.0], scores_out=[0.0, 1.0]), ValueError, "split"),
    (dict(scores_in=[1.0, 2.0], scores_out=[0.0, 1.0], seed=1.5), TypeError, "seed"),
    (dict(scores_in=[1.0, 2.0], scores_out=[0.0, 1.0], threshold=float("nan")), TypeError, "threshold"),
])
def test_empirical_epsilon_validates(kwargs, err, words):
    kwargs.setdefault("delta", 1e-5)
    with pytest.raises(err, match=words):
        empirical_epsilon(**kwargs)


def test_counts_validate():
    with pytest.raises(ValueError, match="fp"):
        epsilon_from_counts(tp=1, fn=1, fp=-1, tn=3, delta=0.0)
    with pytest.raises(TypeError, match="tp"):
        epsilon_from_counts(tp=1.0, fn=1, fp=1, tn=3, delta=0.0)
    with pytest.raises(ValueError, match="'in' trials"):
        epsilon_from_counts(tp=0, fn=0, fp=1, tn=3, delta=0.0)


# --------------------------------------------------------------------------- one run
def test_one_run_check_value_and_which_delta_gives_it():
    """m = 1000, r = 100, v = 95: about 2.17. delta = 0 gives 2.172, delta = 1e-5 gives 2.165."""
    r0 = one_run_epsilon(canaries=1000, guesses=100, correct=95, delta=0.0)
    r5 = one_run_epsilon(canaries=1000, guesses=100, correct=95, delta=1e-5)
    assert r0.epsilon_lower == pytest.approx(2.172, abs=2e-3)
    assert r5.epsilon_lower == pytest.approx(2.165, abs=2e-3)
    assert round(r0.epsilon_lower, 2) == round(r5.epsilon_lower, 2) == 2.17
    assert r5.epsilon_lower < r0.epsilon_lower                   # delta > 0 can only weaken the bound
    assert r0.epsilon_point == pytest.approx(math.log(95 / 5))   # accuracy 0.95 = e^eps/(1+e^eps)
    assert r0.counts == {"canaries": 1000, "guesses": 100, "correct": 95}


def test_one_run_p_value_against_a_direct_sum():
    """P[Binom(r, q) >= v] + 2 m delta max_i (1/i) P[v - i <= Binom < v], summed term by term."""
    m, r, v, delta, eps = 50, 20, 17, 1e-3, 1.3
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, k) * q ** k * (1 - q) ** (r - k) for k in range(r + 1)]
    tail = sum(pmf[v:])
    extra = max(sum(pmf[v - i:v]) / i for i in range(1, v + 1))
    want = tail + 2 * m * delta * extra
    assert one_run_p_value(eps, canaries=m, guesses=r, correct=v, delta=delta) == pytest.approx(want, rel=1e-10)
    # the p-value grows with eps (what the bisection relies on), and the bound sits at 1 - level
    grid = np.linspace(0, 6, 61)
    p = [one_run_p_value(e, canaries=1000, guesses=100, correct=95, delta=1e-5) for e in grid]
    assert all(a <= b + 1e-15 for a, b in zip(p, p[1:]))
    res = one_run_epsilon(canaries=1000, guesses=100, correct=95, delta=1e-5)
    assert res.details["p_value_at_lower"] == pytest.approx(0.05, abs=1e-4)


def test_one_run_chance_guesses_certify_nothing():
    assert one_run_epsilon(canaries=1000, guesses=100, correct=50).epsilon_lower == 0.0
    assert one_run_epsilon(canaries=1000, guesses=100, correct=30).epsilon_point == 0.0


def test_one_run_audit_on_scores():
    """Canaries with Gaussian scores: a leak is found, eps-hat stays below eps(delta); null gives 0."""
    mu, m, delta = 2.0, 1000, 1e-5
    true = gdp_epsilon(delta, mu)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        inc = rng.random(m) < 0.5
        scores = rng.normal(0, 1, m) + mu * inc
        r = one_run_audit(scores, inc, guesses=100, delta=delta)
        assert 0.5 < r.epsilon_lower <= true, r.summary()
        null = one_run_audit(rng.normal(0, 1, m), inc, guesses=100, delta=delta)
        assert null.epsilon_lower < 0.2, null.summary()


def test_one_run_guesses_most_confident():
    s = np.array([0.0, 5.0, -4.0, 0.1, 3.0, -0.2])
    idx, g = one_run_guesses(s, guesses=3, center=0.0)
    assert list(idx) == [1, 2, 4] and list(g) == [True, False, True]
    idx, g = one_run_guesses(s, guesses=(1, 2))
    assert list(idx) == [1, 2, 5] and list(g) == [True, False, False]
    inc = np.array([0, 1, 1, 0, 1, 0])
    r = one_run_audit(s, inc, guesses=3, center=0.0)
    assert r.counts == {"canaries": 6, "guesses": 3, "correct": 2}
    with pytest.raises(ValueError, match="guesses"):
        one_run_guesses(s, guesses=7)
    with pytest.raises(ValueError, match="included"):
        one_run_audit(s, inc[:3], guesses=2)
    with pytest.raises(ValueError, match="correct"):
        one_run_epsilon(canaries=10, guesses=5, correct=6)


@pytest.mark.parametrize("module", [leaklab.audit.threshold, leaklab.audit.one_run])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- an exactly eps-DP mechanism
def _randomized_response(eps, bits, rng):
    """Report each bit truthfully with probability e^eps / (1 + e^eps): exactly eps-DP, delta = 0."""
    keep = rng.random(bits.shape) < math.exp(eps) / (1 + math.exp(eps))
    return np.where(keep, bits, 1 - bits).astype(float)


def test_threshold_audit_of_randomized_response_covers_and_is_tight():
    """eps-DP randomized response: eps-hat exceeds eps in at most ~5% of runs, and nears it with n."""
    eps, runs, n = 1.0, 100, 2000
    over = 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        s_in = _randomized_response(eps, np.ones(n, int), rng)
        s_out = _randomized_response(eps, np.zeros(n, int), rng)
        over += empirical_epsilon(s_in, s_out, delta=0.0, threshold=1.0).epsilon_lower > eps
    assert over <= 0.05 * runs                              # the stated 95% confidence holds
    rng = np.random.default_rng(0)
    big = 400_000
    r = empirical_epsilon(_randomized_response(eps, np.ones(big, int), rng),
                          _randomized_response(eps, np.zeros(big, int), rng), delta=0.0, seed=0)
    assert eps - 0.05 < r.epsilon_lower <= eps              # and it is tight at large n


def test_one_run_audit_of_randomized_response_covers():
    """Canary scores from eps-DP randomized response: the one-run bound exceeds eps rarely."""
    eps, runs, m = 1.0, 200, 1000
    lowers = []
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        inc = rng.integers(0, 2, m)
        scores = _randomized_response(eps, inc, rng) + 1e-3 * rng.normal(size=m)   # break ties
        lowers.append(one_run_audit(scores, inc, guesses=m, center=0.5).epsilon_lower)
    lowers = np.array(lowers)
    assert (lowers > eps).mean() <= 0.05
    assert np.median(lowers) > 0.5                          # but it does see the leak


def test_lower_bound_is_monotone_in_errors_and_level():
    """Fewer errors or less confidence can only raise the bound; it never exceeds the point estimate."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        n_in, n_out = rng.integers(20, 500, 2)
        fn, fp = rng.integers(0, n_in // 2), rng.integers(0, n_out // 2)
        delta = float(rng.choice([0.0, 1e-5, 1e-2]))
        base = epsilon_from_counts(tp=n_in - fn, fn=fn, fp=fp, tn=n_out - fp, delta=delta)
        assert base.epsilon_lower <= base.epsilon_point
        more_fp = epsilon_from_counts(tp=n_in - fn, fn=fn, fp=fp + 1, tn=n_out - fp - 1, delta=delta)
        more_fn = epsilon_from_counts(tp=n_in - fn - 1, fn=fn + 1, fp=fp, tn=n_out - fp, delta=delta)
        surer = epsilon_from_counts(tp=n_in - fn, fn=fn, fp=fp, tn=n_out - fp, delta=delta, level=0.99)
        assert more_fp.epsilon_lower <= base.epsilon_lower + 1e-12
        assert more_fn.epsilon_lower <= base.epsilon_lower + 1e-12
        assert surer.epsilon_lower <= base.epsilon_lower + 1e-12
