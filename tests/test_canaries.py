"""Canaries for attribute inference: exposure against an autograd oracle, the crafted canary in its box,
the canary game, and the audits (DP-SGD's epsilon-hat under the accountant; crafted above natural)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import leaklab
from leaklab.audit.canaries import (Canary, attribute_accountant_epsilon, attribute_values, audit_attribute,
                                    craft_canary, exposure, make_canary, natural_canary)
from leaklab.defenses import DPSGD
from leaklab.games import default_model
from leaklab.games.canary import CanaryAttributeGame, with_canary
from leaklab.metrics.classification import score_guesses
from leaklab.theory.information import dpsgd_attribute_mu, gdp_auroc_bound, gdp_epsilon


@pytest.fixture(scope="module")
def data():
    return leaklab.load_dataset("diabetes")


@pytest.fixture(scope="module")
def model(data):
    return default_model(data, seed=0)


def _loop_exposure(model, x, y, column, values, background, clip, noise_std, others):
    """The exposure computed with ordinary autograd, one record at a time (the oracle)."""
    params = list(model.parameters())

    def g(xi, yi):
        loss = F.cross_entropy(model(xi[None]), yi[None])
        v = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)])
        if clip is not None:
            v = v * min(1.0, clip / (float(v.norm()) + 1e-6))
        return v

    bg = torch.stack([g(background.x[i], background.y[i]) for i in range(len(background))])
    bg = bg - bg.mean(0)
    out = []
    for xi, yi in zip(x, y):
        a, b = xi.clone(), xi.clone()
        a[column], b[column] = values
        d = g(b, yi) - g(a, yi)
        u = d / d.norm()
        var = float(((bg @ u) ** 2).mean())
        out.append(float(d.norm()) / math.sqrt(others * var + noise_std**2))
    return torch.tensor(out)


@pytest.mark.parametrize("clip,noise_std,others", [(None, 0.0, 7.0), (0.5, 0.5, 1.0)])
def test_exposure_matches_autograd_loop(data, model, clip, noise_std, others):
    values = attribute_values(data, "sex")
    bg = data.subset(torch.arange(60))
    x, y = data.x[100:108], data.y[100:108]
    fast = exposure(model, x, y, column=1, values=values, background=bg, clip=clip, noise_std=noise_std,
                    others=others)
    slow = _loop_exposure(model, x, y, 1, values, bg, clip, noise_std, others)
    torch.testing.assert_close(fast, slow.to(fast.dtype), rtol=1e-4, atol=1e-6)


def test_attribute_values_are_the_coded_column(data):
    v0, v1 = attribute_values(data, "sex")
    col = data.x[:, 1]
    assert sorted(torch.unique(col).tolist()) == pytest.approx(sorted([v0, v1]), abs=1e-5)
    assert float(col[data.attributes["sex"] == 1][0]) == pytest.approx(v1, abs=1e-5)


def test_natural_canary_is_the_most_exposed_record(data, model):
    nat = natural_canary(data, model, kind="natural")
    rnd = natural_canary(data, model, kind="random", seed=3)
    assert nat.exposure == pytest.approx(nat.details["exposure_max"])
    assert nat.exposure >= rnd.exposure
    assert nat.exposure > 1.5 * nat.details["exposure_median"]       # the worst case stands out
    torch.testing.assert_close(nat.records()[1], _with(data.x[nat.index], 1, nat.values[1]))


def _with(x, col, v):
    x = x.clone()
    x[col] = v
    return x


def test_crafted_canary_stays_in_the_valid_range_and_beats_the_natural_one(data, model):
    c = craft_canary(data, model, steps=30, restarts=3, others=7)
    lo, hi = data.x.min(0).values, data.x.max(0).values
    assert bool((c.records() >= lo).all()) and bool((c.records() <= hi).all())
    assert c.values == attribute_values(data, "sex")
    assert c.exposure >= c.details["natural_exposure"] * 1.5          # measured: about 3x on diabetes


def test_crafted_canary_under_clipping_is_bounded(data, model):
    """With clipping to C and no other records, |d| <= 2C: exposure <= 2C / noise_std."""
    c = craft_canary(data, model, steps=30, restarts=3, clip=0.1, noise_std=0.1, others=0.0)
    assert c.exposure <= 2.0 + 1e-4
    assert c.exposure > c.details["natural_exposure"]


def test_canary_game_puts_the_canary_in_every_batch(data, model):
    c = natural_canary(data, model, kind="natural")
    game = CanaryAttributeGame(data.info, canary=c)
    aux, pool = with_canary(data, c).split(0.5, seed=0)
    assert len(pool) == len(data) - len(aux) + 2
    gen = torch.Generator().manual_seed(0)
    tr = game.draw_trials(pool, 2000, gen)
    assert 0.45 < float(tr.secret.float().mean()) < 0.55                # uniform secret
    torch.testing.assert_close(pool.x[tr.target], c.records()[tr.secret])
    assert bool((pool.attributes["sex"][tr.target] == tr.secret).all())
    idx = game.draw_batches(pool, tr, 5, gen)
    assert bool((idx[:, 0] == tr.target).all()) and bool((idx[:, 1:] < len(pool) - 2).all())
    with pytest.raises(ValueError, match="with_canary"):
        game.draw_trials(aux, 10, gen)                                   # no canary: a clear error


def test_bad_inputs_name_the_argument(data, model):
    with pytest.raises(ValueError, match="canary"):
        make_canary("best", data, model)
    with pytest.raises(ValueError, match="attribute"):
        natural_canary(data, model, attribute="height")
    with pytest.raises(ValueError, match="x contains NaN"):
        exposure(model, torch.full((2, 10), float("nan")), torch.zeros(2, dtype=torch.long), column=1,
                 values=(0.0, 1.0), background=data)
    with pytest.raises(TypeError, match="data"):
        with_canary(data.x, natural_canary(data, model))
    with pytest.raises(ValueError, match="trials"):
        audit_attribute(data, canary="natural", trials=2)


def test_attribute_accountant_is_the_accountant_at_half_the_noise():
    d = DPSGD(clip=1.0, noise=2.0)
    eps = attribute_accountant_epsilon(d, delta=1e-5, rounds=3)
    assert eps == pytest.approx(DPSGD(clip=1.0, noise=1.0).epsilon(delta=1e-5, sample_rate=1.0, steps=3))
    assert eps > d.epsilon(delta=1e-5, sample_rate=1.0, steps=3)
    # the accountant (RDP) is an upper bound on the exact GDP epsilon of the same game
    assert eps >= gdp_epsilon(1e-5, dpsgd_attribute_mu(3, 2.0))


# --------------------------------------------------------------------------- audits
NOISES = (0.5, 1.0, 2.0, 4.0)


@pytest.mark.parametrize("noise", NOISES)
def test_dpsgd_epsilon_hat_stays_below_the_accountant(data, noise):
    """Crafted canary, adaptive informed adversary, batch 1 (the strongest setting we have)."""
    r = audit_attribute(data, canary="crafted", defense=f"dp:clip=1,noise={noise}", adaptive=True, trials=500,
                        batch_size=1, canary_options={"steps": 15, "restarts": 2},
                        adversary_options={"sims": 16}, seed=0)
    print(f"sigma={noise}: epsilon-hat {r.epsilon_lower:.3f}, accountant {r.accountant_epsilon:.3f}, "
          f"ratio {r.ratio:.3f}, GDP {r.gdp_epsilon:.3f}")
    assert r.epsilon_lower <= r.accountant_epsilon
    assert r.epsilon_lower <= r.gdp_epsilon                               # the exact epsilon of the game
    lo, _ = score_guesses(r.secret, r.scores).auroc_ci
    assert lo <= gdp_auroc_bound(dpsgd_attribute_mu(1, noise))           # no AUROC above the GDP ceiling
    if noise <= 1.0:
        assert r.epsilon_lower > 0.3                                      # the audit is not empty


def test_null_audit_finds_nothing(data):
    """Noise far above the signal: epsilon-hat 0 and the AUROC interval holds 0.5."""
    r = audit_attribute(data, canary="natural", defense="dp:clip=1,noise=200", adaptive=True, trials=400,
                        batch_size=1, adversary_options={"sims": 8}, seed=1)
    lo, hi = score_guesses(r.secret, r.scores).auroc_ci
    assert lo <= 0.5 <= hi
    assert r.epsilon_lower < 0.3


def test_in_trials_are_secret_one(data):
    r = audit_attribute(data, canary="natural", trials=200, batch_size=8, seed=0)
    n1, n0 = int((r.secret == 1).sum()), int((r.secret == 0).sum())
    counted_in = r.audit.counts["tp"] + r.audit.counts["fn"]
    counted_out = r.audit.counts["fp"] + r.audit.counts["tn"]
    assert (counted_in, counted_out) == (n1 - n1 // 2, n0 - n0 // 2)     # the other halves chose the threshold
    assert r.audit.details["threshold_from"] == "held-out split"


@pytest.fixture(scope="module")
def canaries(data, model):
    return {"natural": make_canary("natural", data, model, batch_size=8),
            "crafted": make_canary("crafted", data, model, batch_size=8, steps=30, restarts=3)}


@pytest.mark.parametrize("defense", [None, "prune:ratio=0.9", "sign", "noise:std=0.02"])
def test_crafted_canary_audits_higher_than_the_most_exposed_natural_record(data, canaries, defense):
    kw = dict(defense=defense, adaptive=False, trials=600, batch_size=8, seed=0)
    nat = audit_attribute(data, canary=canaries["natural"], **kw)
    craft = audit_attribute(data, canary=canaries["crafted"], **kw)
    print(f"{defense}: natural {nat.epsilon_lower:.3f} (AUROC {nat.auroc:.3f}), "
          f"crafted {craft.epsilon_lower:.3f} (AUROC {craft.auroc:.3f})")
    assert craft.epsilon_lower > nat.epsilon_lower


# --------------------------------------------------------------------------- the command
@pytest.mark.parametrize("argv,needle", [
    (["--game", "attribute", "--dataset", "digits"], "no tabular attribute"),
    (["--game", "attribute", "--dataset", "nope"], "unknown dataset"),
    (["--game", "membership", "--dataset", "diabetes"], "invalid choice"),
    (["--game", "attribute", "--dataset", "diabetes", "--trials", "4"], "--trials"),
    (["--game", "attribute", "--dataset", "diabetes", "--defense", "dp:clip=-1"], "clip"),
    (["--game", "attribute", "--dataset", "diabetes", "--canary", "best"], "--canary"),
])
def test_cli_audit_user_errors(argv, needle, capsys):
    from leaklab.cli import main

    assert main(["audit", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "error:" in err and "Traceback" not in err


def test_cli_audit_json_for_dpsgd(capsys):
    import json

    from leaklab.cli import main

    assert main(["audit", "--game", "attribute", "--dataset", "diabetes", "--canary", "natural", "--defense",
                 "dp:clip=1,noise=2", "--adaptive", "--trials", "60", "--batch-size", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("epsilon_lower", "level", "estimator", "accountant_epsilon", "ratio", "delta"):
        assert key in out
    assert out["estimator"] == "threshold" and out["level"] == 0.95 and out["delta"] == 1e-5
    assert 0 <= out["epsilon_lower"] <= out["accountant_epsilon"]
    assert out["accountant_epsilon"] == pytest.approx(attribute_accountant_epsilon(DPSGD(clip=1, noise=2),
                                                                                   delta=1e-5, rounds=1))
