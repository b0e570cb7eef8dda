"""Defenses and the release path: each checked against an oracle or a property that a wrong one breaks."""
import math

import pytest
import torch

import leaklab
from leaklab.defenses import (DPSGD, Perturb, as_defense, describe_defenses, list_defenses, make_defense,
                              parse_defense)
from leaklab.release import release, shared_names


@pytest.fixture(scope="module")
def mlp():
    return leaklab.build_model("mlp", (6,), 3, hidden=(5,), seed=0)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 8, 6, generator=g), torch.randint(3, (4, 8), generator=g)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- the spelling ------------------------------------------------------------------------------

def test_specs_parse_and_round_trip():
    assert parse_defense("dp:clip=1,noise=2").config() == {"name": "dp", "clip": 1.0, "noise": 2.0}
    assert parse_defense("prune:ratio=0.9").config() == {"name": "prune", "ratio": 0.9}
    assert parse_defense("sign").config() == {"name": "sign"}
    assert parse_defense("noise:std=0.01").config() == {"name": "noise", "std": 0.01, "rel": None}
    assert parse_defense("vib:beta=0.01").config() == {"name": "vib", "beta": 0.01, "size": 256}
    assert parse_defense("perturb:budget=0.5").config()["budget"] == 0.5
    for name in list_defenses():
        d = make_defense(name) if name != "noise" else make_defense(name, std=0.1)
        assert parse_defense(d.spec()) == d
    assert {d["name"] for d in describe_defenses()} == set(list_defenses())


@pytest.mark.parametrize("spec, words", [
    ("dpp", ["unknown defense 'dpp'", "dp(clip, noise)", "prune(ratio)"]),
    ("dp:clipp=1", ["no setting 'clipp'", "clip, noise"]),
    ("dp:clip", ["KEY=VALUE"]),
    ("dp:clip=-1", ["clip must lie in"]),
    ("prune:ratio=1.5", ["ratio must lie in"]),
    ("noise", ["exactly one of std"]),
    ("noise:std=1,rel=1", ["exactly one of std"]),
    ("dp:noise=nan", ["finite"]),
    ("", ["NAME[:KEY=VALUE"]),
])
def test_bad_specs_raise_one_line(spec, words):
    with pytest.raises(ValueError) as e:
        parse_defense(spec)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_as_defense_rejects_other_types():
    with pytest.raises(TypeError, match="defense must be"):
        as_defense(3)


# -- the release path ----------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["none", "prune:ratio=0.5", "sign", "noise:std=0.1", "noise:rel=0.5",
                                  "dp:clip=0.1,noise=0", "dp:clip=0.5,noise=1", "perturb:budget=0.3"])
def test_batched_release_equals_the_autograd_loop(mlp, batch, spec):
    xs, ys = batch
    a = release(mlp, xs, ys, defense=spec, generator=_gen())
    b = release(mlp, xs, ys, defense=spec, generator=_gen(), engine="loop")
    assert set(a) == set(b) == set(shared_names(mlp))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_undefended_release_is_the_mean_loss_gradient(mlp, batch):
    xs, ys = batch
    g = release(mlp, xs, ys)
    for t in range(xs.shape[0]):
        mlp.zero_grad()
        torch.nn.functional.cross_entropy(mlp(xs[t]), ys[t]).backward()
        for k, p in mlp.named_parameters():
            torch.testing.assert_close(g[k][t], p.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("spec", ["noise:std=0.1", "dp:clip=0.5,noise=1", "perturb:budget=0.3", "vib"])
def test_same_seed_same_release_other_seed_other_release(mlp, batch, spec):
    xs, ys = batch
    d = parse_defense(spec)
    model = d.wrap(mlp)
    a = release(model, xs, ys, defense=d, generator=_gen(1))
    b = release(model, xs, ys, defense=d, generator=_gen(1))
    c = release(model, xs, ys, defense=d, generator=_gen(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.allclose(a[k], c[k]) for k in a)


def test_release_validates_its_inputs(mlp, batch):
    xs, ys = batch
    with pytest.raises(ValueError, match="labels below 3"):
        release(mlp, xs, ys + 3)
    with pytest.raises(ValueError, match="NaN"):
        release(mlp, xs * float("nan"), ys)
    with pytest.raises(TypeError, match="integer class labels"):
        release(mlp, xs, ys.float())
    with pytest.raises(ValueError, match="params lacks"):
        release(mlp, xs, ys, params={"net.1.weight": torch.zeros(5, 6)})


def test_secret_parameters_are_never_released(batch):
    xs, ys = batch
    m = leaklab.build_model("mlp", (6,), 3, hidden=(5,), seed=0)
    m.secret_parameters = ("net.3.weight", "net.3.bias")
    g = release(m, xs, ys)
    assert set(g) == {"net.1.weight", "net.1.bias"}


# -- DP-SGD against Opacus -------------------------------------------------------------------------

def test_dp_clipping_matches_opacus(batch):
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    xs, ys = batch
    x, y = xs[0], ys[0]
    clip = 0.05        # small enough that every record is clipped
    model = leaklab.build_model("mlp", (6,), 3, hidden=(5,), seed=0)
    ours = release(model, x[None], y[None], defense=DPSGD(clip=clip, noise=0.0))
    gsm = GradSampleModule(leaklab.build_model("mlp", (6,), 3, hidden=(5,), seed=0))
    opt = DPOptimizer(torch.optim.SGD(gsm.parameters(), lr=0.1), noise_multiplier=0.0, max_grad_norm=clip,
                      expected_batch_size=x.shape[0])
    loss = torch.nn.functional.cross_entropy(gsm(x), y, reduction="mean")
    loss.backward()
    opt.pre_step()
    for (k, _), p in zip(model.named_parameters(), gsm.parameters()):
        # Opacus's grad_sample of a mean loss carries a factor 1/B; its clipping makes it irrelevant
        # once every record is clipped, so both sides are (1/B) sum_i clip(g_i).
        torch.testing.assert_close(ours[k][0], p.grad, atol=1e-5, rtol=1e-4)


def test_dp_clips_each_record_to_the_bound(batch, mlp):
    xs, ys = batch
    from leaklab.fl import per_sample_gradients
    d = DPSGD(clip=0.05, noise=0.0)
    per = per_sample_gradients(mlp, xs[0], ys[0])
    clipped = d.clipped(per, 1)
    norms = torch.sqrt(sum(v.reshape(v.shape[0], -1).pow(2).sum(1) for v in clipped.values()))
    assert (norms <= 0.05 + 1e-6).all() and (norms > 0.049).all()
    big = DPSGD(clip=1e6, noise=0.0).clipped(per, 1)    # a bound never reached changes nothing
    assert all(torch.allclose(big[k], per[k]) for k in per)


def test_dp_noise_has_std_sigma_c_over_b(mlp):
    T, B, clip, sigma = 3000, 4, 0.5, 2.0
    xs = torch.zeros(T, B, 6)
    ys = torch.zeros(T, B, dtype=torch.long)
    g = release(mlp, xs, ys, defense=DPSGD(clip=clip, noise=sigma), generator=_gen())
    clean = release(mlp, xs[:1], ys[:1], defense=DPSGD(clip=clip, noise=0.0))
    resid = torch.cat([(g[k] - clean[k]).reshape(T, -1) for k in g], 1)
    expected = sigma * clip / B
    assert abs(float(resid.std()) / expected - 1) < 0.02
    assert abs(float(resid.mean())) < 0.05 * expected


@pytest.mark.parametrize("q, steps", [(1.0, 1), (1.0, 5), (0.01, 100)])
def test_dp_epsilon_is_opacus_accountants(q, steps):
    from opacus.accountants import PRVAccountant, RDPAccountant

    d = DPSGD(clip=1.0, noise=1.5)
    for name, Acc in (("rdp", RDPAccountant), ("prv", PRVAccountant)):
        acc = Acc()
        for _ in range(steps):
            acc.step(noise_multiplier=1.5, sample_rate=q)
        with __import__("numpy").errstate(divide="ignore", invalid="ignore"):
            want = acc.get_epsilon(delta=1e-5)
        assert d.epsilon(delta=1e-5, sample_rate=q, steps=steps, accountant=name) == pytest.approx(want, rel=1e-6)
    assert d.epsilon(delta=1e-5, steps=5) > d.epsilon(delta=1e-5, steps=1)
    assert DPSGD(noise=0.0).epsilon(delta=1e-5) == math.inf
    p = d.privacy(delta=1e-5)
    assert p["accountant"] == "rdp" and p["epsilon"] == d.epsilon(delta=1e-5)
    assert p["epsilon_replace"] == DPSGD(clip=1.0, noise=0.75).epsilon(delta=1e-5) > p["epsilon"]


def test_dp_epsilon_sanity_value_from_the_literature():
    # q = 256/60000, sigma = 1.1, 14100 steps, delta = 1e-5: RDP about 2.60, PLD/PRV about 2.39
    d = DPSGD(clip=1.0, noise=1.1)
    assert d.epsilon(delta=1e-5, sample_rate=256 / 60000, steps=14100) == pytest.approx(2.60, abs=0.02)
    assert d.epsilon(delta=1e-5, sample_rate=256 / 60000, steps=14100, accountant="prv") == pytest.approx(2.39, abs=0.03)


# -- pruning, sign, noise, perturbation, VIB ------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_prune_keeps_exactly_the_top_share_per_tensor(batch, ratio):
    xs, ys = batch
    mlp = leaklab.build_model("mlp", (6,), 3, hidden=(5,), activation="tanh", seed=0)   # no exact zeros
    g = release(mlp, xs, ys)
    assert all((v != 0).all() for v in g.values())
    p = release(mlp, xs, ys, defense=f"prune:ratio={ratio}")
    for k in g:
        n = g[k][0].numel()
        keep = n - math.floor(ratio * n)
        for t in range(xs.shape[0]):
            full, kept = g[k][t].flatten(), p[k][t].flatten()
            mask = kept != 0
            assert int(mask.sum()) == keep
            assert torch.equal(kept[mask], full[mask])                     # kept entries untouched
            if keep < n:
                assert full[mask].abs().min() >= full[~mask].abs().max()   # the largest were kept


def test_sign_and_noise(mlp, batch):
    xs, ys = batch
    g = release(mlp, xs, ys)
    s = release(mlp, xs, ys, defense="sign")
    assert all(torch.equal(s[k], torch.sign(g[k])) for k in g)
    n = release(mlp, xs, ys, defense="noise:rel=0.5", generator=_gen())
    diff = torch.cat([(n[k] - g[k]).reshape(4, -1) for k in g], 1).norm(dim=1)
    norm = torch.cat([g[k].reshape(4, -1) for k in g], 1).norm(dim=1)
    assert ((diff / norm) > 0.2).all() and ((diff / norm) < 1.0).all()


def test_perturb_stays_in_budget_and_fools_its_surrogate(mlp):
    g = torch.Generator().manual_seed(0)
    secret = torch.randint(2, (400,), generator=g)
    x = torch.randn(400, 1, 6, generator=g) + 1.5 * secret[:, None, None].float()
    y = torch.zeros(400, 1, dtype=torch.long)
    rel = release(mlp, x, y)
    d = Perturb(budget=0.5, steps=10).fit(rel, secret)
    flat = torch.cat([v.reshape(400, -1) for v in rel.values()], 1)
    before = (d.surrogate_logits(flat).argmax(1) == secret).float().mean()
    out = d(rel, generator=_gen())
    flat2 = torch.cat([v.reshape(400, -1) for v in out.values()], 1)
    after = (d.surrogate_logits(flat2).argmax(1) == secret).float().mean()
    assert before > 0.8 and after < before - 0.2
    assert ((flat2 - flat).norm(dim=1) <= 0.5 * flat.norm(dim=1) + 1e-6).all()
    zero = Perturb(budget=0.0)(rel)
    assert all(torch.equal(zero[k], rel[k]) for k in rel)


def test_unfitted_perturb_is_a_random_direction_of_exactly_the_budget(mlp):
    g = torch.Generator().manual_seed(1)
    rel = release(mlp, torch.randn(64, 1, 6, generator=g), torch.zeros(64, 1, dtype=torch.long))
    d = Perturb(budget=0.3)
    assert d.surrogate_ is None
    out = d(rel, generator=_gen())
    flat = torch.cat([v.reshape(64, -1) for v in rel.values()], 1)
    delta = torch.cat([v.reshape(64, -1) for v in out.values()], 1) - flat
    torch.testing.assert_close(delta.norm(dim=1), 0.3 * flat.norm(dim=1))
    cos = torch.nn.functional.cosine_similarity(delta[:-1], delta[1:], dim=1)
    assert cos.abs().max() < 0.9                       # a fresh direction per release, not one shared


@pytest.mark.parametrize("game", ["membership", "tracing"])
def test_membership_and_tracing_leave_perturb_unfitted(game):
    from leaklab import games
    d = Perturb(budget=0.3)
    games.play(game, "digits", trials=16, defense=d, seed=0, progress=False, **({"clients": 4} if game == "tracing" else {}))
    assert d.surrogate_ is None      # no secret of the batch alone to learn: the perturbation is random


def test_vib_objective_is_ce_plus_beta_kl(batch, mlp):
    xs, ys = batch
    vib = make_defense("vib", beta=0.1, size=4).wrap(mlp)
    assert vib.num_classes == 3 and vib(xs[0]).shape == (8, 3)
    vib.eval()
    assert torch.equal(vib(xs[0]), vib(xs[0]))             # prediction uses the mean code
    torch.manual_seed(0)
    obj = vib.objective(xs[0], ys[0])
    torch.manual_seed(0)
    mu, std = vib._code(xs[0])
    z = mu + std * torch.randn_like(std)
    kl = 0.5 * (mu**2 + std**2 - 1 - torch.log(std**2)).sum(1).mean()
    want = torch.nn.functional.cross_entropy(vib.decoder(z), ys[0]) + 0.1 * kl
    torch.testing.assert_close(obj, want)
    g = release(vib, xs, ys, generator=_gen())
    assert "encoder.weight" in g and all(torch.isfinite(v).all() for v in g.values())


def test_training_under_dp_costs_accuracy_and_under_none_does_not():
    from leaklab import fl

    data = leaklab.load_dataset("digits")
    train, test = data.split(0.3, seed=0)
    accs = {}
    for spec in ("none", "dp:clip=0.1,noise=8"):
        m = leaklab.build_model("mlp", data.input_shape, 10, hidden=(32,), seed=0)
        fl.train(m, train, steps=150, lr=0.1, batch_size=32, defense=spec, progress=False)
        accs[spec] = fl.accuracy(m, test)
    assert accs["none"] > 0.85
    assert accs["dp:clip=0.1,noise=8"] < accs["none"] - 0.1
