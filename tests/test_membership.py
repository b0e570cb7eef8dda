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


# -- the defense in LiRA's recipe, the game's boundaries (issue 27) ------------------------------

def _dp_lira(digits, adaptive):
    from leaklab.games.membership import LiRAAdversary

    adv = LiRAAdversary(shadows=8)
    net = build_model("mlp", digits.input_shape, digits.num_classes, hidden=(64,), seed=0)
    r = play_membership(digits, model=net, observe="model", adversary=adv, trials=320, train_size=40,
                        train_steps=100, defense="dp:clip=1,noise=1", adaptive=adaptive, progress=False, seed=0)
    return r, adv


def test_adaptive_lira_shadows_train_through_dp_as_the_target_does(digits):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (rs, static), (ra, adaptive) = _dp_lira(digits, False), _dp_lira(digits, True)
    finally:
        torch.set_num_threads(threads)
    target = adaptive.observed_phi
    assert torch.equal(target, static.observed_phi)          # the same target models either way
    gap_static = abs(float(static.phi.mean() - target.mean()))
    gap_adaptive = abs(float(adaptive.phi.mean() - target.mean()))
    sd_static = abs(float(static.phi.std() - target.std()))
    sd_adaptive = abs(float(adaptive.phi.std() - target.std()))
    # shadows without DP-SGD are far more confident than the DP target; shadows through it are not
    assert gap_static > 1.0 and gap_adaptive < 0.25 * gap_static, (gap_static, gap_adaptive)
    assert sd_adaptive < sd_static, (sd_static, sd_adaptive)
    # adaptive LiRA is at least as good as static LiRA within noise, and neither exceeds a perfect test
    sa, ss = ra.score(), rs.score()
    assert sa.auroc >= ss.auroc - 0.05, (sa, ss)
    assert 0.5 < sa.auroc <= 1.0 and 0.5 < ss.auroc <= 1.0


def test_lira_fits_out_on_the_shadows_that_did_not_train_on_the_candidate():
    from scipy.stats import norm

    from leaklab.games.membership import lira_score

    g = torch.Generator().manual_seed(0)
    S, T = 64, 50
    inside = torch.zeros(S, T, dtype=torch.bool)
    inside[: S // 2] = True
    shadow = torch.where(inside, 3.0 + torch.randn(S, T, generator=g, dtype=torch.float64),
                         -1.0 + 0.5 * torch.randn(S, T, generator=g, dtype=torch.float64))
    phi = torch.linspace(-2, 4, T, dtype=torch.float64)
    mu_in, mu_out = shadow[inside].reshape(S // 2, T).mean(0), shadow[~inside].reshape(S // 2, T).mean(0)
    d_in = shadow[inside].reshape(S // 2, T) - mu_in
    d_out = shadow[~inside].reshape(S // 2, T) - mu_out
    v_in = float((d_in ** 2).sum() / (d_in.numel() - T))
    v_out = float((d_out ** 2).sum() / (d_out.numel() - T))
    want = norm.logpdf(phi, mu_in, v_in ** 0.5) - norm.logpdf(phi, mu_out, v_out ** 0.5)
    got = lira_score(phi, shadow, inside, online=True)
    assert np.allclose(got.numpy(), np.asarray(want), rtol=1e-6, atol=1e-6)
    off = lira_score(phi, shadow, inside, online=False)
    assert np.allclose(off.numpy(), ((phi - mu_out) / v_out ** 0.5).numpy(), rtol=1e-6, atol=1e-6)
    # the known variances recovered: OUT from the OUT shadows only (sd 0.5), not from all of them
    assert abs(v_out - 0.25) < 0.05 and abs(v_in - 1.0) < 0.2


def test_offline_lira_shadows_never_train_on_a_candidate(digits):
    from leaklab.games.membership import LiRAAdversary, OfflineLiRAAdversary

    net = build_model("mlp", digits.input_shape, digits.num_classes, hidden=(16,), seed=0)
    off = OfflineLiRAAdversary(shadows=4)
    play_membership(digits, model=net, observe="model", adversary=off, trials=80, train_size=20, train_steps=5,
                    progress=False, seed=0)
    cand = {bytes(r.numpy().tobytes()) for r in off.knowledge.candidates.x}
    used = off.shadow_data.x[off.shadow_members.flatten()]
    assert not any(bytes(r.numpy().tobytes()) in cand for r in used)
    on = LiRAAdversary(shadows=4)                    # online: every shadow trains on candidates only
    play_membership(digits, model=net, observe="model", adversary=on, trials=80, train_size=20, train_steps=5,
                    progress=False, seed=0)
    used = on.shadow_data.x[on.shadow_members.flatten()]
    cand = {bytes(r.numpy().tobytes()) for r in on.knowledge.candidates.x}
    assert all(bytes(r.numpy().tobytes()) in cand for r in used)


def test_alignment_threshold_separates_members_from_non_members(digits):
    # the score's sign is the guess: at batch 1 nearly every guess is right, under noise half of them
    r = play("membership", digits, batch_size=1, trials=200, progress=False, seed=3)
    assert 0.9 <= r.score().accuracy <= 1.0, r
    null = play_membership(digits, observe="release", batch_size=4, trials=400, defense="noise:std=1000",
                           progress=False, seed=1)
    assert abs(null.score().accuracy - 0.5) < 0.1, null


def _one_hot_data(n=40, seed=0):
    from leaklab.data import Dataset

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(2, (n,), generator=g)
    y[:2] = torch.tensor([0, 1])
    return Dataset.from_arrays(torch.eye(n), y, name="one-hot")


def test_other_clients_never_hold_the_target(digits):
    # one-hot records: column j of a linear model's weight gradient is non-zero iff record j was released
    from torch import nn

    from leaklab.games.membership import AlignmentAdversary

    class Recording(AlignmentAdversary):
        def score(self, obs):
            self.obs = obs
            return super().score(obs)

    data = _one_hot_data()
    adv = Recording(reference=16)
    r = play_membership(data, model=nn.Sequential(nn.Flatten(), nn.Linear(40, 2)), observe="release",
                        adversary=adv, batch_size=4, clients=4, trials=200, progress=False, seed=0)
    w = next(v for k, v in adv.obs.gradients.items() if v.ndim == 3)           # (T, 2, 40)
    col = adv.obs.phi_x.reshape(200, -1).argmax(1)
    present = w[torch.arange(200), :, col].abs().sum(1) > 0
    member = torch.as_tensor(r.secret) == 1
    assert member.any() and (~member).any()
    assert present[member].all()                       # a member's record is in the sum
    assert not present[~member].any(), int(present[~member].sum())   # a non-member's never is


def test_stacked_init_draws_each_parameter_as_the_model_does(digits):
    from leaklab.defenses import make_defense

    spn = make_defense("spn", bits=16)
    wrapped = spn.wrap(build_model("mlp", digits.input_shape, 10, hidden=(32,), seed=0), seed=0)
    stacked = stacked_init(wrapped, 24, seed=1)
    fresh = [dict(spn.wrap(build_model("mlp", digits.input_shape, 10, hidden=(32,), seed=i), seed=i)
                  .named_parameters()) for i in range(24)]
    assert set(stacked) == set(fresh[0]) and "polar.weight" in stacked
    for k, v in stacked.items():
        want = float(torch.stack([f[k].detach() for f in fresh]).std())
        got = float(v.std())
        assert abs(got - want) <= 0.15 * want, (k, got, want)
    assert abs(float(stacked["polar.weight"].std()) - 0.01) < 0.002


def test_no_observation_holds_a_secret_parameter(digits):
    from leaklab.games.membership import AlignmentAdversary, LiRAAdversary, LossAdversary
    from leaklab.games.tracing import play_tracing

    def recording(cls, **kw):
        class Rec(cls):
            def score(self, obs):
                self.seen = obs
                return super().score(obs)
        return Rec(**kw)

    def held(obs):
        names = set(obs.params) | set(obs.gradients) | set(getattr(obs, "client_params", None) or {})
        return names

    spec = "spn:bits=8"
    secret = {"polar.weight"}
    runs = []
    a = recording(AlignmentAdversary, reference=16)
    play_membership(digits, observe="release", adversary=a, batch_size=2, trials=16, defense=spec, progress=False)
    runs.append(a)
    for cls, kw in ((LossAdversary, {}), (LiRAAdversary, {"shadows": 2})):
        for adaptive in (False, True):
            m = recording(cls, **kw)
            play_membership(digits, observe="model", adversary=m, trials=40, train_size=10, train_steps=3,
                            defense=spec, adaptive=adaptive, progress=False)
            runs.append(m)
    for cls in (AlignmentAdversary, LossAdversary):
        for steps in (1, 2):
            t = recording(cls)
            play_tracing(digits, adversary=t, clients=3, trials=8, defense=spec, local_steps=steps, progress=False)
            runs.append(t)
    for adv in runs:
        names = held(adv.seen)
        assert names and not names & secret, (type(adv).__mro__[1].__name__, sorted(names))


def test_membership_on_release_reports_the_replace_one_epsilon(digits, capsys):
    from leaklab.cli import main
    from leaklab.defenses import make_defense

    d = make_defense("dp", clip=1.0, noise=1.0)
    p = d.privacy(delta=1e-5, sample_rate=1.0, steps=1)
    r = play_membership(digits, observe="release", batch_size=4, trials=16, defense=d, progress=False)
    n = r.record().numbers
    assert r.config["privacy"]["neighbours"] == "replace-one"
    assert n["epsilon"] == p["epsilon_replace"] and n["epsilon_add_remove"] == p["epsilon"]
    assert n["epsilon"] > n["epsilon_add_remove"]
    assert f"epsilon {p['epsilon_replace']:.3g} for replace-one" in repr(r)
    assert main(["game", "membership", "--dataset", "digits", "--defense", "dp:clip=1,noise=1", "--trials", "16",
                 "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert f"epsilon {p['epsilon_replace']:.3g} for this game's replace-one neighbours" in out
    # the model game's neighbours are add/remove, at the sampling rate of its fixed-size batches
    m = play_membership(digits, observe="model", adversary="loss", trials=40, train_size=20, train_steps=4,
                        train_batch_size=5, defense=d, progress=False)
    pm = m.config["privacy"]
    assert pm["neighbours"] == "add/remove" and pm["sample_rate"] == 0.25
    assert pm["epsilon"] == d.epsilon(delta=1e-5, sample_rate=0.25, steps=4)
    # no defense with an accountant, no epsilon
    assert "privacy" not in play_membership(digits, observe="release", batch_size=4, trials=16,
                                            progress=False).config


def test_static_lira_against_spn_trains_its_shadows_on_cross_entropy(digits):
    from leaklab.games.membership import LiRAAdversary

    spec = "spn:bits=8,alpha=1"
    moved = {}
    for adaptive in (False, True):
        adv = LiRAAdversary(shadows=2)
        play_membership(digits, observe="model", adversary=adv, trials=40, train_size=10, train_steps=10,
                        defense=spec, adaptive=adaptive, progress=False, seed=0)
        init = stacked_init(adv.knowledge.model, 2, seed=adv.shadow_seed)
        moved[adaptive] = float((adv.shadow_params["polar.weight"] - init["polar.weight"]).abs().max())
    # plain cross-entropy never touches the polarization head (no codes used, the client's least of all);
    # the adaptive shadows train on CE + alpha * L_pol with the adversary's own head and codes
    assert moved[False] == 0.0 and moved[True] > 1e-3, moved
