"""The attribute game's numbers: what the challenger trains on, what the combined adversary adds to
phi, what the GDP ceiling bounds, and the informed adversary's batch correction."""
import math

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
