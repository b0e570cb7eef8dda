"""The Secret Polarization Network: what is released, its loss, its accuracy, and the attacks on it."""
import doctest

import pytest
import torch
import torch.nn.functional as F

import leaklab
from leaklab import fl
from leaklab.attacks import get_attack, list_attacks
from leaklab.attacks.spn import spn_adaptive, spn_matching_objective, spn_oracle, spn_static, split_release
from leaklab.data import load_dataset
from leaklab.defenses import list_defenses, make_defense, parse_defense
from leaklab.spn import model as spn_module
from leaklab.defenses.spn import SPNModel, class_codes, hamming_predict, polarization_loss
from leaklab.metrics.image import score_images
from leaklab.release import objective_of, release, shared_names


def _lenet(seed=0, channels=4):
    return leaklab.build_model("lenet", (1, 8, 8), 10, seed=seed, channels=channels)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_registered_and_parsed():
    assert "spn" in list_defenses()
    d = parse_defense("spn:alpha=0.5,bits=16")
    assert d.config() == {"name": "spn", "alpha": 0.5, "bits": 16, "margin": 1.0}
    assert d.acts_on == "model"
    assert {"spn_static", "spn_adaptive", "spn_oracle"} <= set(list_attacks())


def test_docstring_examples():
    result = doctest.testmod(spn_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("spec, error", [
    ({"bits": 0}, ValueError), ({"bits": 2.5}, ValueError), ({"alpha": -1.0}, ValueError),
    ({"alpha": float("nan")}, ValueError), ({"margin": "x"}, (TypeError, ValueError)),
])
def test_settings_validated(spec, error):
    with pytest.raises(error):
        make_defense("spn", **spec)


def test_wrap_checks_and_prediction_rule_named():
    d = make_defense("spn", bits=8)
    with pytest.raises(TypeError, match="model"):
        d.wrap("lenet")
    with pytest.raises(TypeError, match="seed"):
        d.wrap(_lenet(), seed=1.5)
    m = d.wrap(_lenet(), seed=0)
    with pytest.raises(ValueError, match="by"):
        m.predict(torch.rand(2, 1, 8, 8), by="votes")
    with pytest.raises(TypeError, match="SPN model"):
        spn_static(_lenet(), {}, {}, input_shape=(1, 8, 8), num_classes=10, batch_size=1)


def test_release_holds_no_secret_and_codes_are_a_buffer():
    base = _lenet()
    m = make_defense("spn", bits=16).wrap(base, seed=3)
    assert isinstance(m, SPNModel)
    assert m.secret_parameters == ("polar.weight",)
    assert "codes" in dict(m.named_buffers()) and "codes" not in dict(m.named_parameters())
    xs, ys = torch.rand(3, 2, 1, 8, 8), torch.randint(10, (3, 2))
    g = release(m, xs, ys)
    assert set(g) == set(shared_names(m)) == {f"base.{k}" for k, _ in base.named_parameters()}
    assert not any("polar" in k or "codes" in k for k in g)
    # the shared weights are the base model's, under the prefix "base."
    for k, v in base.named_parameters():
        assert torch.equal(dict(m.named_parameters())[f"base.{k}"], v)


def test_secret_head_shapes_the_release_but_another_clients_codes_do_not():
    d = make_defense("spn", alpha=1.0, bits=16)
    shared = _lenet(seed=1)
    a, b = d.clients(shared, 2, seed=0)
    assert a.base is b.base is shared                           # one shared model
    assert not torch.equal(a.codes, b.codes) and not torch.equal(a.polar.weight, b.polar.weight)
    xs, ys = torch.rand(1, 2, 1, 8, 8), torch.randint(10, (1, 2))
    before = release(a, xs, ys)
    with torch.no_grad():                                       # client b redraws its secret
        b.codes.mul_(-1)
        b.polar.weight.normal_(0, 0.01)
    fl.train(b, load_dataset("digits").subset(torch.arange(64)), steps=0, progress=False)
    after = release(a, xs, ys)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # but a's own secret does shape a's release (the check above could not pass by accident)
    with torch.no_grad():
        a.codes.mul_(-1)
    flipped = release(a, xs, ys)
    assert any(not torch.allclose(before[k], flipped[k]) for k in before if "features" in k)
    # the task head's gradient is pure cross-entropy: the secret head sits beside it
    head = [k for k in before if "classifier" in k]
    assert head and all(torch.equal(before[k], flipped[k]) for k in head)


def test_alpha_zero_releases_exactly_the_baseline_gradient():
    base = _lenet(seed=2)
    xs, ys = torch.rand(4, 3, 1, 8, 8), torch.randint(10, (4, 3))
    plain = release(base, xs, ys)
    zero = release(make_defense("spn", alpha=0.0).wrap(base, seed=5), xs, ys)
    assert all(torch.equal(plain[k], zero[f"base.{k}"]) for k in plain)
    one = release(make_defense("spn", alpha=1.0).wrap(base, seed=5), xs, ys)
    assert any(not torch.allclose(plain[k], one[f"base.{k}"]) for k in plain)


def test_polarization_loss_matches_a_loop():
    gen = torch.Generator().manual_seed(0)
    h, y = torch.randn(5, 7, generator=gen), torch.randint(3, (5,), generator=gen)
    codes = class_codes(3, 7, generator=gen)
    loop = 0.0
    for i in range(5):
        for k in range(7):
            loop += max(0.0, 0.5 - float(h[i, k]) * float(codes[y[i], k]))
    assert float(polarization_loss(h, codes[y], margin=0.5)) == pytest.approx(loop / 5, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        polarization_loss(h, codes)


def test_objective_matches_ce_plus_alpha_times_a_loop():
    m = make_defense("spn", alpha=0.7, bits=8, margin=1.0).wrap(_lenet(), seed=0)
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([1, 4, 1])
    with torch.no_grad():
        feats = m.base.features(x).flatten(1)
        ce = F.cross_entropy(m.base.classifier(feats), y)
        objective = float(m.objective(x, y))
    pol = 0.0
    for i in range(3):
        h = m.polar.weight.detach() @ feats[i]
        pol += sum(max(0.0, 1.0 - float(h[k]) * float(m.codes[y[i], k])) for k in range(8))
    assert objective == pytest.approx(float(ce) + 0.7 * pol / 3, rel=1e-5)
    # the release path's batched gradients equal a plain autograd loop
    xs, ys = torch.rand(2, 3, 1, 8, 8), torch.randint(10, (2, 3))
    fast, slow = release(m, xs, ys), release(m, xs, ys, engine="loop")
    assert all(torch.allclose(fast[k], slow[k], atol=1e-6) for k in fast)


def test_codes_are_far_apart_and_hamming_prediction():
    codes = class_codes(10, 64, generator=torch.Generator().manual_seed(0))
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    dist = (codes[:, None] != codes[None]).sum(-1) + 64 * torch.eye(10, dtype=torch.long)
    assert int(dist.min()) >= 22                      # random codes average 32, greedy keeps the minimum high
    h = codes[[3, 7]] * torch.rand(2, 64)             # the signs of class 3's and 7's codes
    assert hamming_predict(h, codes).tolist() == [3, 7]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_training_with_spn_keeps_accuracy(digits, one_thread):
    train, test = digits.split(0.3, seed=0)
    common = dict(steps=80, lr=0.1, batch_size=32, seed=0, progress=False)
    base = leaklab.build_model("mlp", (1, 8, 8), 10, hidden=(64,), seed=0)
    spn = make_defense("spn", alpha=1.0, bits=32).wrap(base, seed=1)
    untrained = fl.accuracy(spn, test)
    fl.train(base, train, **common)
    fl.train(spn, train, **common)
    acc_base, acc_spn = fl.accuracy(base, test), fl.accuracy(spn, test)
    assert untrained < 0.3 and acc_base > 0.85              # it learned; the comparison is not at chance
    assert abs(acc_spn - acc_base) < 0.05
    x = test.x
    by_codes = float((spn.predict(x, by="codes") == test.y).float().mean())
    by_both = float((spn.predict(x, by="both") == test.y).float().mean())
    assert by_codes > 0.8 and by_both > 0.85
    assert torch.equal(spn.predict(x, by="task"), spn(x).argmax(1))


def _release(alpha, seed=0, trials=2):
    gen = torch.Generator().manual_seed(seed)
    ds = load_dataset("digits")
    idx = torch.randint(len(ds), (trials, 1), generator=gen)
    xs, ys = ds.x[idx], ds.y[idx]
    clients = [make_defense("spn", alpha=alpha, bits=16).wrap(_lenet(seed=seed + t), seed=100 + t)
               for t in range(trials)]
    params = {k: torch.stack([dict(c.named_parameters())[k].detach() for c in clients])
              for k, _ in clients[0].named_parameters()}
    grads = [release(c, xs[t:t + 1], ys[t:t + 1]) for t, c in enumerate(clients)]
    grads = {k: torch.cat([g[k] for g in grads]) for k in grads[0]}
    return clients, params, grads, xs, ys, torch.stack([c.codes for c in clients])


def test_oracle_objective_vanishes_at_the_truth_and_not_elsewhere():
    clients, params, grads, xs, ys, codes = _release(1.0, trials=1)
    m = clients[0]
    _, p, g = split_release(m, params, grads)
    p1, g1 = {k: v[0] for k, v in p.items()}, {k: v[0] for k, v in g.items()}
    f = spn_matching_objective(m, input_shape=(1, 8, 8), batch_size=1, oracle=True)
    assert float(f(xs[0].flatten(), p1, g1, ys[0], m.polar.weight, m.codes)) < 1e-10
    # a sigmoid LeNet at initialisation: gradients change little with the input, yet far more than rounding
    assert float(f(torch.rand(64), p1, g1, ys[0], m.polar.weight, m.codes)) > 1e-8
    fa = spn_matching_objective(m, input_shape=(1, 8, 8), batch_size=1)       # the unknowns at their true values
    v = torch.cat([xs[0].flatten(), (m.polar.weight / 0.01).flatten(), (20.0 * m.codes).flatten()])
    assert float(fa(v, p1, g1, ys[0], None, None)) < 1e-10
    with pytest.raises(ValueError, match="only the shared"):
        split_release(m, params, {**grads, "polar.weight": params["polar.weight"]})


def test_oracle_recovers_what_the_static_attack_cannot(one_thread):
    clients, params, grads, xs, ys, codes = _release(1.0, seed=0, trials=2)
    common = dict(input_shape=(1, 8, 8), num_classes=10, batch_size=1, progress=False, seed=0, iters=50)
    oracle = spn_oracle(clients[0], params, grads, codes=codes, **common)
    static = spn_static(clients[0], params, grads, retries=0, **common)
    ps_oracle = score_images(xs, oracle.x).psnr.flatten()
    ps_static = score_images(xs, static.x).psnr.flatten()
    noise = score_images(xs, torch.rand_like(xs)).psnr.flatten()
    assert (ps_oracle > 40).all(), ps_oracle                          # the secret alone protects
    assert (ps_static < noise.max() + 5).all(), (ps_static, noise)   # the static attacker stays near noise
    assert (oracle.y == ys).all() and (static.y == ys).all()        # labels are not what SPN hides
    for ps in (ps_oracle, ps_static):
        assert torch.isfinite(ps).all() and (ps < 200).all()


def test_adaptive_attack_runs_and_reports_its_unknowns(one_thread):
    clients, params, grads, xs, ys, _ = _release(1.0, seed=1, trials=1)
    out = spn_adaptive(clients[0], params, grads, input_shape=(1, 8, 8), num_classes=10, batch_size=1,
                       progress=False, iters=5, method="ig")
    m = clients[0]
    assert out.info["unknowns"] == 64 + m.bits * m.features + 10 * m.bits
    assert out.x.shape == xs.shape and float(out.x.min()) >= 0 and float(out.x.max()) <= 1
    with pytest.raises(ValueError, match="polar.weight"):
        shared = {k: v for k, v in params.items() if not k.startswith("polar")}
        spn_oracle(m, shared, grads, input_shape=(1, 8, 8), num_classes=10, batch_size=1, progress=False, iters=2)


def test_static_objective_is_cross_entropy_on_the_task_head():
    m = make_defense("spn", alpha=1.0, bits=8).wrap(_lenet(), seed=0)
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 3])
    params = dict(m.named_parameters())
    static = objective_of(m, static=True)(params, x, y)
    assert float(static) == pytest.approx(float(F.cross_entropy(m.base(x), y)))
    assert float(objective_of(m)(params, x, y)) > float(static)       # the polarization term adds to it


# -- the linear-system view ---------------------------------------------------------------------------

def test_linear_systems_oracle_exact_static_wrong_task_head_untouched(one_thread):
    from leaklab.theory.spn import analyse_spn_layers

    ds = load_dataset("digits")
    m = make_defense("spn", alpha=1.0, bits=16).wrap(_lenet(seed=0), seed=1)
    rows = {r["layer"]: r for r in analyse_spn_layers(m, ds.x[:1], ds.y[:1])}
    assert list(rows) == ["features.0", "features.2", "features.4", "classifier"]
    for r in rows.values():
        assert r["unique"] and r["oracle_error"] < 1e-6          # the true errors give x back
    # errors unknown: the first convolution (4 kernels) has fewer equations than unknowns and loses x;
    # the layers above are still determined locally
    first = rows["features.0"]
    assert first["equations"] < first["bilinear_unknowns"] and first["x_free"] > 0
    assert all(rows[k]["x_free"] == 0 for k in ("features.2", "features.4", "classifier"))
    assert rows["features.0"]["static_error"] > 0.1 and rows["features.0"]["secret_share"] > 0.1
    assert rows["classifier"]["secret_share"] == 0 and rows["classifier"]["static_error"] < 1e-6
    # without the polarization term the static attacker's system is the true one
    m0 = make_defense("spn", alpha=0.0, bits=16).wrap(_lenet(seed=0), seed=1)
    assert all(r["static_error"] < 1e-6 for r in analyse_spn_layers(m0, ds.x[:1], ds.y[:1]))


def test_unknown_errors_lose_uniqueness_for_a_batch_at_the_first_convolution(one_thread):
    from leaklab.theory.spn import analyse_spn_layers

    ds = load_dataset("digits")
    m = make_defense("spn", alpha=1.0, bits=16).wrap(_lenet(seed=0, channels=12), seed=1)
    (one,) = analyse_spn_layers(m, ds.x[:1], ds.y[:1], layers=["features.0"])
    (two,) = analyse_spn_layers(m, ds.x[:2], ds.y[:2], layers=["features.0"])
    assert one["x_free"] == 0 and one["unique"]                   # 12 kernels: determined for one record
    assert two["x_free"] > 0 and two["bilinear_rank"] < two["bilinear_unknowns"]   # not for two
    with pytest.raises(ValueError, match="layers"):
        analyse_spn_layers(m, ds.x[:1], ds.y[:1], layers=["polar"])


def test_bilinear_identifiability_on_known_cases():
    from leaklab.theory.spn import bilinear_identifiability

    gen = torch.Generator().manual_seed(0)
    x, d = torch.randn(1, 6, generator=gen), torch.randn(1, 3, generator=gen)
    with_bias, without = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3, bias=False)
    assert bilinear_identifiability(with_bias, x, d)["x_free"] == 0     # db = delta fixes the scale
    r = bilinear_identifiability(without, x, d)                          # (c x, delta / c): one free scale
    assert r["x_free"] == 1 and r["rank"] == r["unknowns"] - 1
    with pytest.raises(TypeError, match="module"):
        bilinear_identifiability(torch.nn.ReLU(), x, d)


def test_fc_first_layer_with_bias_leaks_whatever_the_secret(one_thread):
    from leaklab.attacks import fc_input_from_gradients
    from leaklab.theory.spn import analyse_spn_layers

    ds = load_dataset("digits")
    base = leaklab.build_model("mlp", (1, 8, 8), 10, hidden=(32,), seed=0)
    m = make_defense("spn", alpha=1.0, bits=16).wrap(base, seed=1)
    x, y = ds.x[:1], ds.y[:1]
    g = release(m, x[None], y[None])
    x_hat = fc_input_from_gradients(g["base.net.1.weight"][0], g["base.net.1.bias"][0])
    assert torch.allclose(x_hat, x.flatten(), atol=1e-4)
    first = analyse_spn_layers(m, x, y, layers=["net.1"])[0]
    assert first["static_error"] > 0.1                       # the static system is wrong, the ratio is not


def test_release_uses_each_clients_own_codes_given_as_batched_buffers():
    """The batched release with per-client secrets (heads and codes in params) equals each
    client's own release computed one at a time (the oracle)."""
    d = make_defense("spn", alpha=1.0, bits=16)
    shared = _lenet(seed=2)
    clients = d.clients(shared, 3, seed=5)
    secrets = d.client_secrets(clients[0], 3, seed=5)
    for c, w, t in zip(clients, secrets["polar.weight"], secrets["codes"]):
        assert torch.equal(c.polar.weight.detach(), w) and torch.equal(c.codes, t)
    xs, ys = torch.rand(3, 2, 1, 8, 8), torch.randint(10, (3, 2))
    params = {**{k: v.detach()[None].expand(3, *v.shape) for k, v in clients[0].named_parameters()}, **secrets}
    together = release(clients[0], xs, ys, params=params, params_batched=True)
    for j, c in enumerate(clients):
        alone = release(c, xs[j:j + 1], ys[j:j + 1])
        for k in alone:
            torch.testing.assert_close(together[k][j], alone[k][0])


def test_adaptive_game_adversary_simulates_with_its_own_secret_not_the_clients():
    from leaklab.games.games import make_game
    from leaklab.games.protocol import Knowledge

    data = load_dataset("digits").subset(torch.arange(64))
    d = make_defense("spn", alpha=1.0, bits=16)
    client = d.wrap(_lenet(seed=3), seed=9)
    params = {k: v.detach() for k, v in client.named_parameters()}
    xs, ys = data.x[:4, None], data.y[:4, None]
    truth = release(client, xs, ys)
    game = make_game("membership", data.info)
    kn = {a: Knowledge(model=client, game=game, auxiliary=data, batch_size=1, secret_names=("out", "in"),
                       defense=d, adaptive=a, seed=3) for a in (False, True)}
    assert not torch.equal(kn[True].view.codes, client.codes)
    shared = dict(client.base.named_parameters())
    for k, v in kn[True].view.base.named_parameters():      # a frozen copy of the shared model
        assert torch.equal(v, shared[k]) and v.data_ptr() != shared[k].data_ptr() and not v.requires_grad
    sim = kn[True].gradients(xs, ys, params)              # params hold the client's true head: not used
    assert any(not torch.allclose(sim[k], truth[k]) for k in truth)
    own = release(kn[True].view, xs, ys)
    for k in truth:
        torch.testing.assert_close(sim[k], own[k])
    static = kn[False].gradients(xs, ys, params)           # a static adversary: plain cross-entropy
    ce = release(client, xs, ys, static_objective=True)
    for k in truth:
        torch.testing.assert_close(static[k], ce[k])


def test_adaptive_reconstruction_of_spn_treats_the_secret_as_unknown(digits, one_thread):
    from leaklab.attacks.optimization import matching_objective
    from leaklab.attacks.run import run_reconstruction

    client = make_defense("spn", alpha=1.0, bits=8).wrap(_lenet(seed=4), seed=1)
    run = run_reconstruction(attack="dlg", model=client, dataset=digits, trials=2, iters=3, defense="spn:bits=8",
                             adaptive=True, progress=False)
    assert run.result.info["attacker"] == "adaptive"
    with pytest.raises(ValueError, match="secret"):
        matching_objective(client, input_shape=(1, 8, 8), batch_size=1, num_classes=10, joint_labels=False,
                           defense=make_defense("spn"), adaptive=True)


def test_analytic_attack_finds_the_first_layer_inside_a_wrapper():
    from leaklab.attacks.analytic import first_linear_layer

    mlp = leaklab.build_model("mlp", (1, 8, 8), 10, hidden=(16,), seed=0)
    assert first_linear_layer(mlp, (1, 8, 8))[0] == "net.1"
    assert first_linear_layer(make_defense("spn").wrap(mlp), (1, 8, 8))[0] == "base.net.1"
    with pytest.raises(ValueError, match="first layer"):
        first_linear_layer(make_defense("spn").wrap(_lenet()), (1, 8, 8))
