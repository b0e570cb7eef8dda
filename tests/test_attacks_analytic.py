"""The analytic (fully connected) attack and the R-GAP-style recursive attack."""
import pytest
import torch

from leaklab.attacks import fc_input_from_gradients, get_attack, list_attacks
from leaklab.data import load_dataset
from leaklab.fl import batch_gradients
from leaklab.models import build_model

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds.x[:6], ds.y[:6]


def _release(model, x, y, batch_size):
    """T trials, one model initialisation per trial (shared here), batch gradients."""
    T = x.shape[0] // batch_size
    xs, ys = x[:T * batch_size].reshape(T, batch_size, *SHAPE), y[:T * batch_size].reshape(T, batch_size)
    params = {k: v.detach().unsqueeze(0).repeat(T, *[1] * v.ndim) for k, v in model.named_parameters()}
    return params, batch_gradients(model, xs, ys, params=params, params_batched=True), xs, ys


def test_both_attacks_are_registered():
    assert {"analytic", "rgap"} <= set(list_attacks())


def test_fc_input_from_gradients_is_exact_for_one_sample():
    torch.manual_seed(0)
    x = torch.rand(5, 20)                                   # 5 trials, 20 features
    delta = torch.randn(5, 4)
    weight_grad = delta[:, :, None] * x[:, None, :]         # delta x^T, batched over trials
    rec = fc_input_from_gradients(weight_grad, delta)
    assert ((rec - x) ** 2).mean() < 1e-12


def test_fc_input_from_gradients_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"bias_grad must have shape \(4,\)"):
        fc_input_from_gradients(torch.randn(4, 6), torch.randn(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        fc_input_from_gradients(torch.full((4, 6), float("inf")), torch.randn(4))


def test_analytic_attack_recovers_single_digits(digits):
    x, y = digits
    model = build_model("mlp", SHAPE, 10, seed=0)
    params, grads, xs, ys = _release(model, x, y, 1)
    rec = get_attack("analytic")(model, params, grads, input_shape=SHAPE, num_classes=10, batch_size=1,
                                 device="cpu", seed=0, progress=False)
    assert rec.x.shape == xs.shape
    assert ((rec.x - xs) ** 2).mean() < 1e-6
    assert torch.equal(rec.y, ys)


def test_analytic_attack_on_a_batch_returns_mixes_not_the_inputs(digits):
    x, y = digits
    model = build_model("mlp", SHAPE, 10, seed=0, activation="sigmoid")
    params, grads, xs, _ = _release(model, x, y, 3)
    rec = get_attack("analytic")(model, params, grads, input_shape=SHAPE, num_classes=10, batch_size=3,
                                 device="cpu", seed=0, progress=False)
    assert rec.x.shape == xs.shape
    assert not rec.info["exact"].any() and (rec.info["recovered"] == 0).all()
    assert (rec.info["relative_residual"] > 1e-3).all()     # no single input explains a batch gradient
    assert ((rec.x - xs) ** 2).mean() > 1e-4


def _batch_release(activation, B, T=8, seed=0):
    """T trials of B digits, one fresh ReLU/sigmoid MLP (hidden 64) per trial."""
    from leaklab.attacks.run import stack_params

    ds = load_dataset("digits")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(len(ds), generator=gen)[:B] for _ in range(T)])
    xs, ys = ds.x[idx], ds.y[idx]
    nets = [build_model("mlp", SHAPE, 10, seed=seed * 100 + t, activation=activation) for t in range(T)]
    params = stack_params(nets)
    grads = batch_gradients(nets[0], xs, ys, params=params, params_batched=True)
    return nets[0], params, grads, xs, ys


def _record_psnr(rec_x, xs):
    """For every private record, the PSNR of the closest reconstruction of its trial: (T, B)."""
    mse = ((rec_x.flatten(2)[:, :, None] - xs.flatten(2)[:, None]) ** 2).mean(-1)   # (T, slot, record)
    return 10 * torch.log10(1 / mse.min(1).values.clamp_min(1e-30))


@pytest.mark.parametrize("peel", [True, False])
def test_analytic_attack_separates_the_records_of_a_relu_batch(peel):
    model, params, grads, xs, ys = _batch_release("relu", 4)
    rec = get_attack("analytic")(model, params, grads, input_shape=SHAPE, num_classes=10, batch_size=4,
                                 peel=peel)
    assert rec.x.shape == xs.shape
    per_record = _record_psnr(rec.x, xs)
    hits = (per_record >= 30).float().sum(1)
    # peeling off the records found turns mixed rows into copies: nearly every record comes back
    assert hits.mean() >= (3.5 if peel else 2.0)
    # every slot certified exact is a private record to within rounding, and never more than B of them
    mse = ((rec.x.flatten(2)[:, :, None] - xs.flatten(2)[:, None]) ** 2).mean(-1).min(-1).values
    assert rec.info["exact"].any()
    assert (mse[rec.info["exact"]] < 1e-8).all()
    assert torch.equal(rec.info["recovered"], rec.info["exact"].sum(1))
    assert (rec.info["recovered"] <= 4).all()
    assert (rec.info["recovered"] <= hits).all()
    if peel:   # the label that reproduces a record's rows is its own label
        labels = rec.info["labels"]
        near = ((rec.x.flatten(2)[:, :, None] - xs.flatten(2)[:, None]) ** 2).mean(-1).argmin(-1)
        known = labels >= 0
        assert known.sum() >= rec.info["recovered"].sum()
        assert torch.equal(labels[known], torch.gather(ys, 1, near)[known])


def test_analytic_attack_certifies_nothing_on_a_sigmoid_batch():
    """With sigmoids every unit mixes the whole batch: no row is a copy and none may be certified."""
    model, params, grads, xs, _ = _batch_release("sigmoid", 2, T=16)
    rec = get_attack("analytic")(model, params, grads, input_shape=SHAPE, num_classes=10, batch_size=2)
    assert (rec.info["recovered"] == 0).all()
    assert (_record_psnr(rec.x, xs) < 30).all()


def test_isolate_records_finds_planted_copies():
    """Rows built by hand: records 0 and 1 alone in two units each, record 2 only in mixes."""
    from leaklab.attacks.analytic import isolate_records

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 10, generator=gen, dtype=torch.float64)
    delta = torch.zeros(7, 3, dtype=torch.float64)
    delta[0, 0], delta[1, 0], delta[2, 1], delta[3, 1] = 0.5, -0.2, 0.3, 0.7
    delta[4] = torch.tensor([0.1, 0.4, 0.2], dtype=torch.float64)
    delta[5] = torch.tensor([0.3, 0.0, 0.6], dtype=torch.float64)
    delta[6] = torch.tensor([0.0, 0.2, 0.1], dtype=torch.float64)
    gw, gb = (delta @ x)[None], delta.sum(1)[None]
    rec, exact, labels = isolate_records(gw, gb, 3)
    assert exact[0].tolist() == [True, True, False]
    assert (labels == -1).all()
    got = sorted(range(2), key=lambda i: int(((rec[0, i] - x[:2]) ** 2).sum(1).argmin()))
    assert torch.allclose(rec[0, got], x[:2])
    assert not torch.allclose(rec[0, 2], x[2], atol=1e-3)    # record 2 is never alone: not read off
    with pytest.raises(ValueError, match="tol must be a number in"):
        isolate_records(gw, gb, 3, tol=2.0)


def test_analytic_attack_needs_a_linear_first_layer(digits):
    x, y = digits
    model = build_model("lenet", SHAPE, 10, seed=0)
    params, grads, _, _ = _release(model, x, y, 1)
    with pytest.raises(ValueError, match="first layer is nn.Linear"):
        get_attack("analytic")(model, params, grads, input_shape=SHAPE, num_classes=10, batch_size=1,
                               device="cpu", seed=0, progress=False)


@pytest.mark.parametrize("activation", ["leaky_relu", "tanh"])
def test_rgap_recovers_digits_where_every_layer_has_full_rank(digits, activation):
    x, y = digits
    model = build_model("rgapnet", SHAPE, 10, seed=0, channels=(4, 4), activation=activation)
    params, grads, xs, ys = _release(model, x, y, 1)
    rec = get_attack("rgap")(model, params, grads, input_shape=SHAPE, num_classes=10, batch_size=1,
                             device="cpu", seed=0, progress=False)
    assert rec.info["complete"] and rec.info["rank_deficient"] == []
    assert all(layer["rank"] == layer["unknowns"] for layer in rec.info["layers"])
    assert ((rec.x - xs) ** 2).mean() < 1e-6
    assert torch.equal(rec.y, ys)


def test_rgap_reports_rank_deficient_layers(digits):
    x, y = digits
    model = build_model("rgapnet", SHAPE, 10, seed=0, channels=(1, 1))
    params, grads, xs, _ = _release(model, x, y, 1)
    rec = get_attack("rgap")(model, params, grads, input_shape=SHAPE, num_classes=10, batch_size=1,
                             device="cpu", seed=0, progress=False)
    assert not rec.info["complete"]
    assert "features.0" in rec.info["rank_deficient"]
    first = rec.info["layers"][0]
    assert first["rank"] < first["unknowns"] == 64
    assert ((rec.x - xs) ** 2).mean() > 1e-3


def test_rgap_refuses_what_it_cannot_invert(digits):
    x, y = digits
    relu = build_model("convnet", SHAPE, 10, seed=0, width=4, depth=2)
    params, grads, _, _ = _release(relu, x, y, 1)
    with pytest.raises(ValueError, match="invertible activations"):
        get_attack("rgap")(relu, params, grads, input_shape=SHAPE, num_classes=10, batch_size=1,
                           device="cpu", seed=0, progress=False)
    model = build_model("rgapnet", SHAPE, 10, seed=0)
    params, grads, _, _ = _release(model, x, y, 2)
    with pytest.raises(ValueError, match="single input"):
        get_attack("rgap")(model, params, grads, input_shape=SHAPE, num_classes=10, batch_size=2,
                           device="cpu", seed=0, progress=False)
    with pytest.raises(ValueError, match="has no entry"):
        get_attack("rgap")(model, params, {}, input_shape=SHAPE, num_classes=10, batch_size=1,
                           device="cpu", seed=0, progress=False)
