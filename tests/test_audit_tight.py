"""Tight audits: the GDP fit, gradient canaries through the real DP-SGD defense, and claim checks."""
import doctest
import json
import math

import numpy as np
import pytest
import torch

import leaklab
import leaklab.audit.claims
import leaklab.audit.gdp
import leaklab.audit.gradient
from leaklab.audit import audit_gradient, check_claim, gdp_fit, gradient_canary
from leaklab.audit.gdp import gdp_mu_interval
from leaklab.audit.gradient import canary_statistics
from leaklab.defenses import DPSGD
from leaklab.theory.information import gdp_epsilon


class SkipsClipping(DPSGD):
    """A broken DP-SGD that claims to clip and does not (for the tests' mechanism)."""

    def clipped(self, grads, dims):
        return grads


# --------------------------------------------------------------------------- the GDP fit
def test_gdp_fit_known_answer():
    """``in`` is ``out`` shifted by exactly ``2 s``: the fitted mu is 2 and epsilon that of 2-GDP."""
    rng = np.random.default_rng(0)
    out = rng.normal(0, 3, 500)
    out = (out - out.mean()) / out.std(ddof=1) * 3.0           # sample std exactly 3
    r = gdp_fit(out + 6.0, out, delta=1e-5)
    assert r.details["mu"] == pytest.approx(2.0, rel=1e-12)
    assert r.epsilon_point == pytest.approx(gdp_epsilon(1e-5, 2.0), rel=1e-9)
    assert r.details["mu_lower"] < 2.0 < r.details["mu_upper"]
    assert r.epsilon_lower < r.epsilon_point < r.details["epsilon_upper"]
    assert r.estimator == "gdp" and r.counts == {"in": 500, "out": 500} and "Gaussian" in r.details["assumes"]


def test_gdp_interval_covers_at_its_level_and_no_more():
    """Gaussian scores with known mu: the 95% interval covers about 95% of the time, not far more or less,
    and its lower end exceeds the truth about 2.5% of the time (a too-narrow interval fails here)."""
    rng = np.random.default_rng(1)
    reps, cover, above = 150, 0, 0
    for i in range(reps):
        mu = (0.5, 1.0, 2.0)[i % 3]
        _, lo, hi = gdp_mu_interval(rng.normal(mu * 2.0 + 5, 2.0, 400), rng.normal(5, 2.0, 400))
        cover += lo < mu < hi
        above += lo > mu
    assert 0.88 * reps <= cover <= 0.993 * reps, cover
    assert above <= 9, above                                    # expected 3.75, sd 1.9


def test_gdp_fit_null_certifies_nothing():
    """No signal: the lower end is 0 in nearly every repetition (a test that cannot fail would not check this)."""
    rng = np.random.default_rng(2)
    lows = [gdp_fit(rng.normal(0, 1, 400), rng.normal(0, 1, 400), delta=1e-5).epsilon_lower for _ in range(40)]
    assert sum(v > 0 for v in lows) <= 4


def test_gdp_bootstrap_agrees_with_exact():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1, 1000), rng.normal(0, 1, 1000)
    ex = gdp_fit(a, b, delta=1e-5)
    bs = gdp_fit(a, b, delta=1e-5, method="bootstrap", resamples=1000, seed=0)
    assert bs.details["mu"] == ex.details["mu"]
    assert bs.details["mu_lower"] == pytest.approx(ex.details["mu_lower"], abs=0.02)
    assert bs.details["mu_upper"] == pytest.approx(ex.details["mu_upper"], abs=0.02)


@pytest.mark.parametrize("call,err,needle", [
    (lambda: gdp_fit([1.0], [0.0, 1.0], delta=1e-5), ValueError, "at least 2"),
    (lambda: gdp_fit([1.0, 1.0], [0.0, 0.0], delta=1e-5), ValueError, "no spread"),
    (lambda: gdp_fit([1.0, 2.0], [0.0, 1.0], delta=1e-5, method="magic"), ValueError, "method"),
    (lambda: gdp_fit([1.0, np.nan], [0.0, 1.0], delta=1e-5), ValueError, "NaN"),
    (lambda: gdp_fit([1.0, 2.0], [0.0, 1.0], delta=2.0), ValueError, "delta"),
])
def test_gdp_fit_bad_input(call, err, needle):
    with pytest.raises(err, match=needle):
        call()


# --------------------------------------------------------------------------- gradient canaries
def test_gradient_canary_shapes_and_norms():
    model = leaklab.build_model("mlp", (4,), 2, hidden=(3,), seed=0)
    d = gradient_canary(model, kind="dirac", norm=2.5, seed=1)
    r = gradient_canary(model, kind="random", norm=2.5, seed=1)
    for c in (d, r):
        assert set(c.direction) == {k for k, _ in model.named_parameters()}
        assert float(c.flat_direction().norm()) == pytest.approx(1.0, abs=1e-6)
        flat_g = torch.cat([v.reshape(-1) for v in c.gradient().values()])
        assert float(flat_g.norm()) == pytest.approx(2.5, abs=1e-5)
    assert int((d.flat_direction() != 0).sum()) == 1 and d.flat_direction()[d.index] == 1.0
    with pytest.raises(ValueError, match="kind"):
        gradient_canary(model, kind="sparse")
    with pytest.raises(ValueError, match="norm"):
        gradient_canary(model, norm=0.0)


def test_canary_statistics_match_the_release_path():
    """Oracle: without noise, an 'out' trial's statistic is B times the projection of
    ``leaklab.release.release`` of the batch under the same DP-SGD defense, and an 'in' trial adds the
    clipped canary's norm (the canary is clipped by the real defense: norm 3 -> the clip 0.5)."""
    from leaklab.release import release

    model = leaklab.build_model("mlp", (5,), 3, hidden=(4,), seed=0)
    x, y = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1, 2])
    c = gradient_canary(model, kind="random", norm=3.0, seed=2)
    d = DPSGD(clip=0.5, noise=0.0)
    s_in, s_out = canary_statistics(model, x, y, c, defense=d, trials=8)
    rel = release(model, x[None], y[None], defense=d)
    proj = sum(float((rel[k][0] * c.direction[k]).sum()) for k in rel)
    assert np.allclose(s_out, 6 * proj, atol=1e-5)
    assert np.allclose(s_in - s_out, 0.5, atol=1e-5)
    # a defense that skips clipping lets the whole canary through
    s_in2, s_out2 = canary_statistics(model, x, y, c, defense=SkipsClipping(clip=0.5, noise=0.0), trials=8)
    assert np.allclose(s_in2 - s_out2, 3.0, atol=1e-4)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_gdp_interval_contains_the_true_mu_of_one_dpsgd_step(sigma):
    """One step of the real DP-SGD defense is exactly 1/sigma-GDP for the canary: over seeds the 95% interval
    contains 1/sigma (coverage is 95%, so at most one miss in four is allowed) and the lower end of epsilon
    stays below the exact epsilon; both directions are scored."""
    truth = 1.0 / sigma
    eps_true = gdp_epsilon(1e-5, truth)
    hits = valid = 0
    for seed in (1, 2, 3, 4):
        r = audit_gradient(defense=f"dp:clip=1,noise={sigma}", trials=2000, seed=seed)
        d = r.gdp.details
        hits += d["mu_lower"] < truth < d["mu_upper"]
        valid += r.epsilon_lower <= eps_true
        assert r.epsilon_lower <= r.accountant_epsilon * 1.1
        assert 0.75 * truth < d["mu"] < 1.25 * truth                # the estimate itself is close
    assert hits >= 3 and valid >= 3, (hits, valid)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_gradient_audit_is_tight(sigma):
    """The target: with 2000 trials the GDP lower end is at least 0.7 of the accountant's epsilon, where the
    held-out Clopper-Pearson bound on the same trials certifies far less."""
    r = audit_gradient(defense=f"dp:clip=1,noise={sigma}", trials=2000, seed=1)
    assert r.ratio >= 0.7, r.summary()
    assert r.threshold.epsilon_lower < 0.6 * r.accountant_epsilon
    assert r.accountant == "prv" and r.exact_epsilon == pytest.approx(gdp_epsilon(1e-5, 1 / sigma))


def test_gradient_audit_null_stays_at_zero():
    """Noise that swamps the canary: nothing is certified."""
    r = audit_gradient(defense="dp:clip=1,noise=50", trials=1000, seed=0)
    assert r.epsilon_lower == 0.0 and r.threshold.epsilon_lower < 0.5


def test_gradient_audit_rejects_model_side_defense():
    with pytest.raises(ValueError, match="acts on the model"):
        audit_gradient(defense="vib:beta=0.01", trials=16)


# --------------------------------------------------------------------------- claims
@pytest.mark.parametrize("seed", [0, 1])
def test_check_claim_refutes_half_the_noise_and_keeps_the_correct_one(seed):
    bad = check_claim("dp:clip=1,noise=1", "dp:clip=1,noise=0.5", trials=1000, seed=seed)
    good = check_claim("dp:clip=1,noise=1", trials=1000, seed=seed)
    assert bad.refuted and not good.refuted, (bad.summary(), good.summary())
    assert bad.evidence["epsilon_lower"] > bad.claimed_epsilon >= good.evidence["epsilon_lower"]
    assert bad.claimed_epsilon == pytest.approx(DPSGD(clip=1, noise=1).epsilon(delta=1e-5, accountant="prv"))
    assert "REFUTED" in bad.summary() and "not refuted" in good.summary()


def test_check_claim_decides_on_the_lower_end_not_the_estimate():
    """A correct claim: the point estimate exceeds the claimed epsilon in about half the seeds (it is unbiased),
    yet the verdict follows the lower end only, so none of them is refuted."""
    point_above = 0
    for seed in range(6):
        r = check_claim("dp:clip=1,noise=1", trials=400, seed=seed)
        assert r.refuted == (r.audit.gdp.epsilon_lower > r.claimed_epsilon) and not r.refuted
        point_above += r.audit.gdp.epsilon_point > r.claimed_epsilon
    assert point_above >= 1


def test_check_claim_refutes_skipped_clipping():
    """A mechanism that adds the claimed noise but skips clipping: the canary (4 C) goes through whole."""
    r = check_claim("dp:clip=1,noise=1", SkipsClipping(clip=1, noise=1), trials=1000, seed=0)
    assert r.refuted and r.evidence["mu_lower"] > 2.0
    # the same mechanism audited with a canary at the clip norm itself cannot see it: the default 4 C matters
    r1 = check_claim("dp:clip=1,noise=1", SkipsClipping(clip=1, noise=1), trials=1000, seed=0, canary_norm=1.0)
    assert not r1.refuted


def test_check_claim_threshold_estimator_is_weaker_but_valid():
    r = check_claim("dp:clip=1,noise=1", "dp:clip=1,noise=0.5", trials=1000, estimator="threshold", seed=0)
    assert not r.refuted and r.evidence["epsilon_lower"] < r.claimed_epsilon


@pytest.mark.parametrize("call,needle", [
    (lambda: check_claim("noise:std=1"), "DP-SGD"),
    (lambda: check_claim("dp:clip=1,noise=0"), "no noise"),
    (lambda: check_claim("dp:clip=1,noise=1", estimator="bayes"), "estimator"),
])
def test_check_claim_bad_input(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


# --------------------------------------------------------------------------- the command
def test_cli_gradient_audit_json(capsys):
    from leaklab.cli import main

    assert main(["audit", "--canary", "gradient", "--defense", "dp:clip=1,noise=1", "--trials", "400", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("epsilon_lower", "accountant_epsilon", "accountant", "ratio", "mu_lower", "threshold_epsilon_lower"):
        assert key in out
    assert out["accountant"] == "prv" and 0 < out["epsilon_lower"] < out["accountant_epsilon"] * 1.1


def test_cli_claim_json_refuted(capsys):
    from leaklab.cli import main

    assert main(["audit", "--canary", "gradient", "--defense", "dp:clip=1,noise=0.5", "--claim", "dp:clip=1,noise=1",
                 "--trials", "600", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["refuted"] is True and out["evidence"]["epsilon_lower"] > out["claimed_epsilon"]
    assert main(["audit", "--canary", "gradient", "--claim", "dp:clip=1,noise=1", "--trials", "600"]) == 0
    text = capsys.readouterr().out
    assert "not refuted" in text and "evidence:" in text


@pytest.mark.parametrize("argv,needle", [
    (["--canary", "gradient", "--game", "attribute"], "no --game"),
    (["--canary", "gradient", "--claim", "noise:std=1"], "dp:clip"),
    (["--canary", "natural", "--game", "attribute", "--dataset", "diabetes", "--claim", "dp:clip=1,noise=1"],
     "--canary gradient"),
    (["--canary", "natural"], "--game"),
    (["--canary", "gradient", "--defense", "vib:beta=0.1", "--trials", "16"], "acts on the model"),
])
def test_cli_gradient_user_errors(argv, needle, capsys):
    from leaklab.cli import main

    assert main(["audit", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "error:" in err and "Traceback" not in err


def test_doctests():
    for mod in (leaklab.audit.gdp, leaklab.audit.gradient, leaklab.audit.claims):
        res = doctest.testmod(mod)
        assert res.failed == 0 and res.attempted > 0, mod.__name__
