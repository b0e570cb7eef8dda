"""The attribute game's numbers: what the challenger trains on, what the combined adversary adds to
phi, what the GDP ceiling bounds, and the informed adversary's batch correction."""
import math
import warnings

import numpy as np

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import leaklab
from leaklab import games
from leaklab.games.adversaries import Adversary
from leaklab.games.games import AttributeGame


def _null_data(n=240, seed=0):
    """Random features, random labels and a binary sensitive column independent of both."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    x[:, 0] = (torch.rand(n, generator=g) < 0.5).float()
    y = torch.randint(2, (n,), generator=g)
    return leaklab.data.Dataset.from_arrays(x, y, sensitive={"s": 0}, name="null")


def _silent(grads):
    """A release that carries nothing (and, being a plain callable, leaves training undefended)."""
    return {k: torch.zeros_like(v) for k, v in grads.items()}


class _ThetaOnly(Adversary):
    """Reads only theta: how much more training lowered the target's loss at value 1 than at value 0.

    Its round-``i`` score is ``f(theta_{i-1}) - f(theta_{i-2})`` with ``f`` the loss gap of the
    target's two candidate records, so the evidence after ``R`` rounds is the change of ``f`` made
    by the training between the first and the last observed round.
    """

    name = "theta-only"

    def prepare(self, knowledge, *, seed=0):
        super().prepare(knowledge, seed=seed)
        self.last = None

    def score(self, obs):
        kn = self.knowledge
        col = kn.auxiliary.info.attribute_features[kn.game.attribute]
        x0, x1 = obs.phi_x.clone(), obs.phi_x.clone()
        x0[:, col], x1[:, col] = 0.0, 1.0
        with torch.no_grad():
            out0 = functional_call(kn.model, obs.params, (x0,))
            out1 = functional_call(kn.model, obs.params, (x1,))
        f = (F.cross_entropy(out0, obs.phi_y, reduction="none")
             - F.cross_entropy(out1, obs.phi_y, reduction="none")).double()
        s = torch.zeros_like(f) if self.last is None else f - self.last
        self.last = f
        return s


class _TrainsOnTargets(AttributeGame):
    """The attribute game as it was: the challenger trains on its whole pool, targets included."""

    def training_pool(self, data, trials):
        return data


def _theta_game(game):
    data = _null_data()
    return games.play(game, data, adversary=_ThetaOnly(), trials=200, rounds=5, steps_per_round=200, lr=0.1,
                      defense=_silent, seed=0, progress=False)


def test_training_between_rounds_does_not_carry_the_targets_attributes():
    # nothing is released; the model trains between rounds; an adversary reading theta alone
    # must stay at chance (the sensitive column is independent of everything else)
    res = _theta_game("attribute")
    lo, hi = res.score().auroc_ci
    assert lo <= 0.5 <= hi, res
    assert res.config["training_records"] < 120           # the targets were left out of the pool
    # the same adversary reads the attributes off theta when the challenger trains on the targets
    leaky = _theta_game(_TrainsOnTargets(_null_data().info))
    assert leaky.score().auroc_ci[0] > 0.7, leaky


def test_a_starved_training_pool_is_said_and_a_healthy_one_is_not():
    data = _null_data()
    game = games.make_game("attribute", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # 50 trials leave most of the pool: no word
        game.training_pool(data, game.draw_trials(data, 50, torch.Generator().manual_seed(1)))
    for n in range(100, 2000, 20):                        # enough trials to leave a few records, not none
        tr = game.draw_trials(data, n, torch.Generator().manual_seed(1))
        left = len(data) - tr.target.unique().numel()
        if 0 < left < 0.1 * len(data):
            break
    else:
        pytest.fail("no trial count left a small, non-empty pool")
    with pytest.warns(UserWarning, match=f"leave {left} of the {len(data)} records"):
        game.training_pool(data, tr)


def test_training_pool_leaves_out_exactly_the_targets():
    data = _null_data()
    game = games.make_game("attribute", data)
    tr = game.draw_trials(data, 50, torch.Generator().manual_seed(1))
    kept = game.training_pool(data, tr)
    assert len(kept) == len(data) - tr.target.unique().numel()
    rows = {tuple(r.tolist()) for r in kept.x}
    assert not any(tuple(data.x[t].tolist()) in rows for t in tr.target.unique())
    everything = game.draw_trials(data, 5000, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="no record to train on"):
        game.training_pool(data, everything)
    # a pool without targets to leave out still plays a long game with the whole pool
    one = games.play("attribute", data, adversary="informed", trials=5000, rounds=1, seed=0, progress=False)
    assert one.config["training_records"] == 120


# -- the combined adversary is never worse than its own prior --------------------------------------

@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("noise", [1000.0, 1.0])
def test_combined_adversary_is_at_least_as_good_as_phi_alone_under_dp(adaptive, noise):
    # noise 1000: the release says nothing, so the combination must stay at its prior (a static
    # adversary that ignored the noise fell 0.26 below it); noise 1: it may add a little
    res = games.play("attribute", "diabetes", adversary="combined", batch_size=4, trials=300,
                     defense=f"dp:clip=1,noise={noise:g}", adaptive=adaptive, adversary_options={"sims": 8},
                     seed=0, progress=False)
    s, b = res.score(), res.baseline
    assert b.auroc_ci[0] > 0.6                      # phi alone carries the secret (sex, on diabetes)
    assert s.auroc >= b.auroc - 0.02, res
    assert res.record().numbers["gain_over_phi"] >= -0.02


def test_combined_adversary_gains_over_phi_without_a_defense():
    res = games.play("attribute", "diabetes", adversary="combined", batch_size=4, trials=300, seed=0,
                     progress=False)
    assert res.score().auroc - res.baseline.auroc > 0.08, res
    # and the calibration leaves a release without a defense as the model sees it
    plain = games.play("attribute", "diabetes", adversary="informed", batch_size=4, trials=300, seed=0,
                       progress=False)
    raw = games.play("attribute", "diabetes", adversary="informed", batch_size=4, trials=300, seed=0,
                     adversary_options={"calibrate": False}, progress=False)
    assert abs(plain.score().auroc - raw.score().auroc) < 0.01


def test_informed_adversary_refuses_a_calibrate_that_is_not_a_bool():
    with pytest.raises(TypeError, match="calibrate"):
        games.make_adversary("informed", calibrate="yes")


# -- the informed adversary against an exact computation at batch size k > 1 -------------------------

def _per_record_gradient(model, params, x, y):
    names = list(params)
    loss = F.cross_entropy(functional_call(model, params, (x[None],)), y[None])
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    return torch.cat([g.flatten() for g in grads]).double()


@pytest.mark.parametrize("k", [2, 5])
def test_informed_score_matches_an_exact_log_likelihood_ratio_at_batch_size_k(k):
    # the release of a batch whose k - 1 unknown records average exactly the auxiliary mean m:
    # then r = k g_obs - (k - 1) m is the target's own gradient, and the score is
    # +-|d|^2 / (2 sigma^2) with sigma^2 = (k - 1) var_u + floor |d|^2, computed here record by record
    from leaklab.games.protocol import Knowledge, Observation

    data = leaklab.load_dataset("diabetes")
    aux, pool = data.split(0.5, seed=0)
    model = games.default_model(data, seed=0)
    game = games.make_game("attribute", data, attribute="sex")
    kn = Knowledge(model=model, game=game, auxiliary=aux, batch_size=k, secret_names=game.secret_names(pool),
                   seed=0)
    adv = games.make_adversary("informed")
    adv.prepare(kn, seed=0)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    shapes = {n: p.shape for n, p in params.items()}
    col = data.info.attribute_features["sex"]
    codes = aux.attributes["sex"]
    values = [float(aux.x[codes == v, col].mean()) for v in (0, 1)]
    ga = torch.stack([_per_record_gradient(model, params, aux.x[i], aux.y[i]) for i in range(len(aux))])
    m = ga.mean(0)
    targets = [0, 1, 2, 3, 4, 5]
    releases, expected, phi_x = [], [], []
    for j, t in enumerate(targets):
        x = pool.x[t].clone()
        cand = []
        for v in values:
            x[col] = v
            cand.append(_per_record_gradient(model, params, x.clone(), pool.y[t]))
        d = cand[1] - cand[0]
        u = d / d.norm()
        sigma2 = (k - 1) * ((ga - m) @ u).pow(2).mean() + adv.floor * d.norm() ** 2
        secret = j % 2
        releases.append((cand[secret] + (k - 1) * m) / k)
        expected.append((1 if secret else -1) * d.norm() ** 2 / (2 * sigma2))
        phi = pool.x[t].clone()
        phi[col] = 0.0
        phi_x.append(phi)
    flat = torch.stack(releases).float()
    grads, start = {}, 0
    for n, shape in shapes.items():
        size = math.prod(shape)
        grads[n] = flat[:, start:start + size].reshape(len(targets), *shape)
        start += size
    obs = Observation(1, {n: p.detach() for n, p in params.items()}, grads, torch.stack(phi_x),
                      pool.y[targets])
    got = adv.score(obs).double()
    want = torch.stack(expected)
    assert torch.allclose(got, want, rtol=2e-3, atol=1e-3), (got, want)
