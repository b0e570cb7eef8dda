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
    assert not rec.info["exact"]
    assert (rec.info["relative_residual"] > 1e-3).all()     # no single input explains a batch gradient
    assert ((rec.x - xs) ** 2).mean() > 1e-4


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
