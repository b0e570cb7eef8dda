"""The linear-system view: every verdict (unique / twin / noise bound) is borne out."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leaklab.theory import analyse_layer, conv_system, fc_system, layer_gradients

FC_SHAPES = [(12, 3), (10, 1), (16, 5)]                       # (input features, out features)
CONV_SHAPES = [((1, 6, 6), 2, 3, 1, 1), ((2, 5, 5), 3, 2, 2, 0), ((1, 7, 7), 2, 2, 3, 0),
               ((1, 4, 4), 16, 3, 1, 1)]                          # (input, out, kernel, stride, padding)
SWEEP = (
    [dict(layer="fc", input_shape=n, out=k) for n, k in FC_SHAPES]
    + [dict(layer="conv", input_shape=s, out=o, kernel=k, stride=st, padding=p) for s, o, k, st, p in CONV_SHAPES]
)


def _check_verdict(r):
    if r.unique:
        assert r.rank == r.unknowns
        assert r.mse < 1e-6
        assert r.twin is None
    else:
        assert r.rank < r.unknowns
        assert r.twin["input_distance"] > 1e-2
        assert r.twin["gradient_distance"] < 1e-5
    if r.noise > 0:
        assert r.error_lower <= r.error * (1 + 1e-9)
        assert r.error <= r.error_bound * (1 + 1e-9)


@pytest.mark.parametrize("case", SWEEP, ids=lambda c: f"{c['layer']}-{c['input_shape']}-{c['out']}")
def test_every_verdict_is_borne_out(case):
    for batch, bias, forward in itertools.product((1, 2, 3, 4), (True, False), (False, True)):
        r = analyse_layer(**case, batch_size=batch, bias=bias, forward=forward, noise=1e-3, seed=batch)
        _check_verdict(r)
        if case["layer"] == "fc" and not forward:
            assert r.unique == (batch <= case["out"])   # one independent error vector per sample


def test_fc_rank_is_features_times_min_of_batch_and_outputs():
    for batch, out in [(1, 4), (3, 4), (6, 4), (5, 1)]:
        r = analyse_layer("fc", input_shape=9, out=out, batch_size=batch, seed=1)
        assert r.rank == 9 * min(batch, out)
        assert r.unique == (batch <= out)


def test_bias_rows_add_equations_but_no_rank():
    with_bias = analyse_layer("conv", input_shape=(1, 5, 5), out=2, kernel=3, seed=0)
    without = analyse_layer("conv", input_shape=(1, 5, 5), out=2, kernel=3, bias=False, seed=0)
    assert with_bias.equations == without.equations + 2
    assert with_bias.rank == without.rank


@pytest.mark.parametrize("layer", ["fc", "conv"])
def test_system_matches_autograd_of_the_real_layer(layer):
    """A x + c equals the gradients torch computes for nn.Linear / nn.Conv2d with a real loss."""
    torch.manual_seed(0)
    if layer == "fc":
        mod, x = nn.Linear(7, 3).double(), torch.rand(2, 7, dtype=torch.float64)
    else:
        mod, x = nn.Conv2d(2, 3, 3, stride=1, padding=1).double(), torch.rand(2, 2, 6, 6, dtype=torch.float64)
    out = mod(x)
    out.retain_grad()
    F.cross_entropy(out.flatten(1)[:, :3], torch.tensor([0, 2])).backward()
    if layer == "fc":
        system = fc_system(mod.weight, out.grad, bias=mod.bias, forward=True)
    else:
        system = conv_system(mod.weight, out.grad, input_shape=(2, 6, 6), stride=1, padding=1,
                             bias=mod.bias, forward=True)
    observed = system.pack(weight=mod.weight.grad, bias=mod.bias.grad, output=out.detach())
    assert torch.allclose(system.observe(x), observed, atol=1e-12)
    assert system.unique
    assert torch.allclose(system.solve(observed), x, atol=1e-8)


def test_twin_along_a_chosen_direction_has_the_same_gradients():
    torch.manual_seed(1)
    W, deltas, x = torch.randn(1, 16), torch.randn(2, 1), torch.rand(2, 16)
    system = fc_system(W, deltas, bias=True)
    direction = torch.zeros(2, 16)
    direction[0, :8] = 1.0                  # "paint" a bar into the first image
    twin = system.twin(x.double(), direction=direction, distance=2.0)
    g0 = layer_gradients("fc", x.double(), W.double(), deltas.double(), bias=torch.zeros(1, dtype=torch.float64))
    g1 = layer_gradients("fc", twin, W.double(), deltas.double(), bias=torch.zeros(1, dtype=torch.float64))
    assert (twin - x).norm() == pytest.approx(2.0)
    assert torch.allclose(g0["weight"], g1["weight"], atol=1e-12)


def test_noise_bound_brackets_the_error():
    torch.manual_seed(2)
    system = fc_system(torch.randn(4, 6), torch.randn(2, 4), bias=False)
    x = torch.rand(2, 6, dtype=torch.float64)
    for _ in range(5):
        e = 0.1 * torch.randn(system.equations, dtype=torch.float64)
        err = (system.solve(system.observe(x) + e) - x).norm()
        lower, upper = system.noise_bound(e)
        assert lower <= err <= upper


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="choose from: conv, fc"):
        analyse_layer("rnn", input_shape=4, out=2)
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        analyse_layer("conv", input_shape=16, out=2)
    with pytest.raises(ValueError, match="kernel 5 does not fit"):
        analyse_layer("conv", input_shape=(1, 3, 3), out=2, kernel=5)
    with pytest.raises(ValueError, match="noise must be a finite number"):
        analyse_layer("fc", input_shape=4, out=2, noise=-1.0)
    with pytest.raises(ValueError, match=r"deltas must have shape \(B, 3\)"):
        fc_system(torch.randn(3, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="NaN or inf"):
        fc_system(torch.full((3, 4), float("nan")), torch.randn(2, 3))
    with pytest.raises(ValueError, match="forward=True needs the bias values"):
        fc_system(torch.randn(3, 4), torch.randn(2, 3), forward=True)
    with pytest.raises(ValueError, match="no twin exists"):
        system = fc_system(torch.randn(3, 4), torch.randn(1, 3))
        system.twin(torch.rand(1, 4))
    with pytest.raises(ValueError, match="more than 30,000,000"):
        fc_system(torch.randn(100, 1000), torch.randn(64, 100))


def test_same_seed_same_numbers():
    a = analyse_layer("conv", input_shape=(1, 6, 6), out=2, stride=2, batch_size=2, noise=0.01, seed=5)
    b = analyse_layer("conv", input_shape=(1, 6, 6), out=2, stride=2, batch_size=2, noise=0.01, seed=5)
    assert a.to_dict() == b.to_dict()


def test_cross_entropy_errors_cost_one_rank_per_feature():
    """Softmax errors sum to zero, so a batch of K records is not unique behind a K-output layer."""
    from leaklab import build_model, fl, load_dataset
    from leaklab.theory import layer_errors

    digits = load_dataset("digits")
    model = build_model("mlp", digits.input_shape, 10, hidden=(), seed=0)
    ranks = {}
    for B in (4, 9, 10):
        batch = digits.subset(slice(0, B))
        _, deltas = layer_errors(model, "net.1", batch.x, batch.y)
        system = fc_system(model.net[1].weight, deltas)
        ranks[B] = (system.rank, system.unique)
        if B == 4:
            g = fl.loss_gradient(model, batch.x, batch.y)
            x_hat = system.solve({"weight": g["net.1.weight"], "bias": g["net.1.bias"]})
            assert ((x_hat.reshape(batch.x.shape) - batch.x) ** 2).mean() < 1e-6
    assert ranks == {4: (4 * 64, True), 9: (9 * 64, True), 10: (9 * 64, False)}


def test_noise_sweep_stays_within_its_bounds():
    from leaklab.theory import noise_sweep

    torch.manual_seed(3)
    system = fc_system(torch.randn(5, 8), torch.randn(3, 5))
    sweep = noise_sweep(system, torch.rand(3, 8, dtype=torch.float64), [0.0, 1e-3, 1e-1], trials=4)
    assert sweep["error"][0] == 0
    assert (sweep["lower"] <= sweep["error"] + 1e-15).all() and (sweep["error"] <= sweep["upper"] + 1e-15).all()
    assert sweep["error"][2] > sweep["error"][1]
    with pytest.raises(ValueError, match="sigmas must be finite"):
        noise_sweep(system, torch.rand(3, 8), [-1.0])


def test_docstring_examples_run():
    import doctest

    from leaklab.theory import linear

    result = doctest.testmod(linear, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_structured_fc_svd_matches_the_dense_one():
    """The Kronecker shortcut gives the same rank, solution and null space as a dense SVD."""
    import dataclasses

    torch.manual_seed(4)
    for B, K in [(2, 5), (5, 3), (4, 4)]:
        fast = fc_system(torch.randn(K, 6), torch.randn(B, K))
        dense = dataclasses.replace(fast, kron_factor=None)
        x = torch.rand(B, 6, dtype=torch.float64)
        assert fast.rank == dense.rank
        assert torch.allclose(fast.singular_values[:fast.rank], dense.singular_values[:dense.rank])
        assert torch.allclose(fast.solve(fast.observe(x)), dense.solve(dense.observe(x)), atol=1e-10)
        null = fast.null_space()
        assert null.shape[1] == fast.unknowns - fast.rank
        assert (fast.matrix @ null).abs().max() < 1e-10 if null.numel() else True
