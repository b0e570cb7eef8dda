"""Membership inference: null case at chance, overfit model leaks, LiRA beats the loss threshold, DP helps."""
import numpy as np
import pytest
import torch

from leaklab.data import load_dataset
from leaklab.games import play, play_membership, train_stacked
from leaklab.games.membership import stacked_init
from leaklab.metrics import tpr_at_fprs
from leaklab.models import build_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _null_defense(grads):
    """A release that never depends on the batch: the target cannot influence it."""
    return {k: torch.zeros_like(v) + 1.0 for k, v in grads.items()}


def test_target_never_influences_release_is_at_chance(digits):
    # noise alone: the release is independent of the target, so the alignment statistic is at chance
    r = play_membership(digits, observe="release", batch_size=4, trials=400, defense="noise:std=1000",
                        progress=False, seed=1)
    lo, hi = r.score().auroc_ci
    assert lo <= 0.5 <= hi, r


def test_alignment_detects_a_member_in_a_small_batch(digits):
    r = play("membership", digits, batch_size=1, trials=128, progress=False)
    s = r.score()
    assert s.auroc >= 0.95 and s.auroc <= 1.0
    assert r.record().numbers["tpr_at_1pct_fpr"] >= 0.5


@pytest.fixture(scope="module")
def overfit(digits):
    """A model trained to overfit 40 records (10 target models over the same 80 candidates)."""
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # small models: one thread is faster than two fighting for a shared CPU
    try:
        _play_all(digits, out)
    finally:
        torch.set_num_threads(threads)
    return out


def _play_all(digits, out):
    for adv in ("loss", "lira", "lira-offline"):
        model = build_model("mlp", digits.input_shape, digits.num_classes, hidden=(256,), seed=0)
        out[adv] = play_membership(digits, model=model, observe="model", adversary=adv, trials=800,
                                   train_size=40, train_steps=300, lr=0.1, progress=False, seed=0)


def test_model_overfits(overfit):
    c = overfit["loss"].config
    assert c["train_accuracy"] == 1.0
    assert c["test_accuracy"] <= 0.8 + 1e-9      # at least 0.2 below the training accuracy


def test_loss_threshold_beats_chance_on_overfit_model(overfit):
    s = overfit["loss"].score()
    assert s.auroc >= 0.7
    assert s.auroc_ci[0] > 0.5


def test_lira_online_at_least_as_strong_as_loss(overfit):
    loss, lira = overfit["loss"], overfit["lira"]
    assert lira.score().auroc >= loss.score().auroc
    assert lira.tpr(0.01) > loss.tpr(0.01)
    assert overfit["lira-offline"].score().auroc > 0.6


def test_dp_membership_auroc_falls_with_noise(digits):
    aurocs = []
    for noise in (0.0, 4.0):
        r = play_membership(digits, observe="release", batch_size=4, trials=300,
                            defense=f"dp:clip=1,noise={noise}", adaptive=True, progress=False, seed=2)
        aurocs.append(r.score())
    assert aurocs[0].auroc > 0.8
    assert aurocs[1].auroc < aurocs[0].auroc - 0.2
    assert aurocs[1].auroc_ci[0] <= 0.5 + 0.1


def test_stacked_training_matches_one_after_another(digits):
    model = build_model("mlp", digits.input_shape, digits.num_classes, hidden=(16,), seed=0)
    members = torch.stack([torch.randperm(len(digits), generator=torch.Generator().manual_seed(i))[:30]
                           for i in range(3)])
    a = train_stacked(model, digits, members, steps=20, seed=4)
    b = train_stacked(model, digits, members, steps=20, seed=4, engine="loop")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    init = stacked_init(model, 3, seed=4)
    assert not torch.allclose(init["net.1.weight"][0], init["net.1.weight"][1])


def test_tpr_at_fprs_matches_roc_curve():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    s = rng.normal(size=2000) + y
    t = tpr_at_fprs(y, s, fprs=(0.01, 0.1, 1.0))
    neg = np.sort(s[y == 0])[::-1]
    thr = neg[int(0.1 * (y == 0).sum())]            # the 10% FPR threshold
    assert abs(t[0.1] - (s[y == 1] > thr).mean()) < 0.01
    assert t[0.01] <= t[0.1] <= t[1.0] == 1.0


def test_bad_arguments(digits):
    with pytest.raises(ValueError, match="observe"):
        play_membership(digits, observe="weights", progress=False)
    with pytest.raises(ValueError, match="observes the model"):
        play_membership(digits, observe="release", adversary="lira", progress=False)
    with pytest.raises(ValueError, match="unknown membership adversary"):
        play_membership(digits, adversary="oracle", progress=False)
    with pytest.raises(ValueError, match="train_size"):
        play_membership(digits, observe="model", adversary="loss", train_size=5000, progress=False)
