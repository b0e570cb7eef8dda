"""The membership-on-release game warms its model up on no target: theta alone tells nothing.

The adversary receives ``theta`` after the warm-up, and the game's epsilon (replace-one,
one release at q = 1) counts the release alone. A warm-up on a pool holding the trials'
targets would be a use of them outside that account; a warm-up on a pool holding the
*members'* targets would hand the secret over in ``theta`` itself. The pool without every
target (:meth:`MembershipGame.training_pool`) is neither.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import leaklab
from leaklab import fl
from leaklab.games.adversaries import Adversary
from leaklab.games.membership import MembershipGame, play_membership

TRIALS, WARMUP = 96, 150


class ThetaOnly(Adversary):
    """Scores a candidate by its loss under ``theta``, ignoring the release: a member-like record has a low loss."""

    name = "theta-only"
    observes = "release"

    def score(self, obs):
        kn = self.knowledge
        with torch.no_grad():
            logits = functional_call(kn.model, dict(obs.params), (obs.phi_x,))
        return -F.cross_entropy(logits, obs.phi_y, reduction="none")


@pytest.fixture(scope="module")
def small():
    """Records with random labels: a warm-up can only memorise what it trains on, not generalise."""
    g = torch.Generator().manual_seed(0)
    return leaklab.Dataset.from_arrays(torch.randn(200, 12, generator=g), torch.randint(3, (200,), generator=g),
                                       name="random-labels")


def _play(data, defense=None):
    model = leaklab.build_model("mlp", data.input_shape, data.num_classes, hidden=(64,), seed=0)
    return play_membership(data, adversary=ThetaOnly(), observe="release", batch_size=4, trials=TRIALS,
                      warmup_steps=WARMUP, lr=0.1, model=model, defense=defense, seed=0, progress=False)


def test_the_warm_up_trains_on_no_target(small, monkeypatch):
    seen = {}
    draw, train = MembershipGame.draw_trials, fl.train

    def spy_draw(self, data, trials, generator):
        seen["pool"], seen["trials"] = data, draw(self, data, trials, generator)
        return seen["trials"]

    def spy_train(model, data, **kw):
        seen["trained"] = data
        return train(model, data, **kw)

    monkeypatch.setattr(MembershipGame, "draw_trials", spy_draw)
    monkeypatch.setattr(fl, "train", spy_train)
    r = _play(small, defense="dp:clip=1,noise=1")
    targets = seen["pool"].x[seen["trials"].target]                          # (T, F)
    trained = seen["trained"].x
    same = (torch.cdist(targets.double(), trained.double()) == 0).any(1)
    assert int(same.sum()) == 0, f"{int(same.sum())} targets in the warm-up pool"
    left = len(seen["pool"]) - int(seen["trials"].target.unique().numel())
    assert len(trained) == left == r.config["training_records"]
    assert r.config["privacy"]["neighbours"] == "replace-one"    # the one release is all it counts


def test_theta_alone_stays_at_chance(small):
    s = _play(small).score()
    lo, hi = s.auroc_ci
    assert lo <= 0.5 <= hi, s.summary()


def test_theta_alone_would_find_members_trained_on(small, monkeypatch):
    """The same adversary is not blind: a warm-up on the members' targets shows in theta."""
    def leaky(self, data, trials):            # keep the members' targets, drop the non-members'
        keep = torch.ones(len(data), dtype=torch.bool)
        keep[trials.target[trials.secret == 0]] = False
        keep[trials.target[trials.secret == 1]] = True
        return data.subset(keep.nonzero().flatten())

    monkeypatch.setattr(MembershipGame, "training_pool", leaky)
    s = _play(small).score()
    assert s.auroc_ci[0] > 0.7, s.summary()
