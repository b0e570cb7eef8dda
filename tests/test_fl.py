import pytest
import torch
import torch.nn.functional as F

from leaklab import fl
from leaklab.data import load_dataset
from leaklab.models import build_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n=300, seed=0)


def _autograd_grad(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


def test_loss_gradient_matches_autograd(digits):
    m = build_model("lenet", (1, 8, 8), 10, seed=0)
    g = fl.loss_gradient(m, digits.x[:5], digits.y[:5])
    ref = _autograd_grad(m, digits.x[:5], digits.y[:5])
    for k in ref:
        assert torch.allclose(g[k], ref[k], atol=1e-6)


def test_per_sample_gradients_average_to_the_batch_gradient(digits):
    m = build_model("mlp", (1, 8, 8), 10, seed=0)
    ps = fl.per_sample_gradients(m, digits.x[:6], digits.y[:6])
    g = fl.loss_gradient(m, digits.x[:6], digits.y[:6])
    for k in g:
        assert ps[k].shape == (6, *g[k].shape)
        assert torch.allclose(ps[k].mean(0), g[k], atol=1e-6)


def test_batch_gradients_equal_one_trial_at_a_time(digits):
    m = build_model("convnet", (1, 8, 8), 10, seed=0, width=8)
    xs, ys = digits.x[:12].view(3, 4, 1, 8, 8), digits.y[:12].view(3, 4)
    bg = fl.batch_gradients(m, xs, ys)
    for t in range(3):
        ref = _autograd_grad(m, xs[t], ys[t])
        for k in ref:
            assert torch.allclose(bg[k][t], ref[k], atol=1e-5)


def test_batch_gradients_with_one_model_per_trial(digits):
    models = [build_model("mlp", (1, 8, 8), 10, seed=s) for s in range(3)]
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models])
              for k, _ in models[0].named_parameters()}
    xs, ys = digits.x[:6].view(3, 2, 1, 8, 8), digits.y[:6].view(3, 2)
    bg = fl.batch_gradients(models[0], xs, ys, params=params, params_batched=True)
    for t, m in enumerate(models):
        ref = _autograd_grad(m, xs[t], ys[t])
        assert torch.allclose(bg["net.1.weight"][t], ref["net.1.weight"], atol=1e-6)


def test_flatten_round_trips(digits):
    m = build_model("mlp", (1, 8, 8), 10, seed=0)
    g = fl.loss_gradient(m, digits.x[:2], digits.y[:2])
    v = fl.flatten(g)
    assert v.shape == (sum(p.numel() for p in m.parameters()),)
    back = fl.unflatten_like(v, g)
    assert all(torch.equal(back[k], g[k]) for k in g)


def test_fedavg_one_full_batch_step_is_minus_lr_times_the_gradient(digits):
    m = build_model("mlp", (1, 8, 8), 10, seed=0)
    g = fl.loss_gradient(m, digits.x[:8], digits.y[:8])
    upd = fl.fedavg_update(m, digits.x[:8], digits.y[:8], local_steps=1, lr=0.5)
    for k in g:
        assert torch.allclose(upd[k], -0.5 * g[k], atol=1e-6)
    multi = fl.fedavg_update(m, digits.x[:8], digits.y[:8], local_steps=4, lr=0.5, local_batch_size=2)
    assert not torch.allclose(multi["net.1.bias"], upd["net.1.bias"])


def test_aggregation_and_secure_sum():
    a = {"w": torch.tensor([1.0, 2.0])}
    b = {"w": torch.tensor([3.0, 6.0])}
    assert torch.equal(fl.secure_sum([a, b])["w"], torch.tensor([4.0, 8.0]))
    assert torch.allclose(fl.aggregate([a, b], [1, 3])["w"], torch.tensor([2.5, 5.0]))
    with pytest.raises(ValueError, match="at least one client release"):
        fl.aggregate([])
    with pytest.raises(ValueError, match="non-negative numbers"):
        fl.aggregate([a, b], [1, -1])


def test_secure_round_hides_individual_releases(digits):
    m = build_model("mlp", (1, 8, 8), 10, seed=0)
    clients = [fl.Client(i, digits.subset(slice(50 * i, 50 * i + 50))) for i in range(3)]
    open_view = fl.federated_round(m, clients, batch_size=4, seed=1)
    secure_view = fl.federated_round(m, clients, batch_size=4, seed=1, secure_aggregation=True)
    assert set(open_view.releases) == {0, 1, 2} and secure_view.releases == {}
    for k in open_view.total:
        assert torch.allclose(secure_view.total[k], sum(open_view.releases[i][k] for i in range(3)))


def test_round_apply_moves_the_model(digits):
    m = build_model("mlp", (1, 8, 8), 10, seed=0)
    clients = [fl.Client(i, digits.subset(slice(50 * i, 50 * i + 50))) for i in range(2)]
    before = m.net[1].bias.detach().clone()
    view = fl.federated_round(m, clients, protocol="fedavg", local_steps=2, lr=0.1, apply=True)
    assert torch.allclose(m.net[1].bias.detach(), before + view.aggregate["net.1.bias"])
    with pytest.raises(ValueError, match="unknown protocol 'fedprox'; choose from: fedavg, fedsgd"):
        fl.federated_round(m, clients, protocol="fedprox")


def test_training_reaches_a_useful_state(digits):
    m = build_model("mlp", (1, 8, 8), 10, seed=0)
    before = fl.accuracy(m, digits)
    fl.train(m, digits, steps=150, lr=0.1, seed=0, progress=False)
    assert fl.accuracy(m, digits) > max(0.8, before + 0.5)


def test_bad_batches_are_rejected(digits):
    m = build_model("mlp", (1, 8, 8), 10, seed=0)
    with pytest.raises(ValueError, match="y must have shape"):
        fl.loss_gradient(m, digits.x[:4], digits.y[:3])
    with pytest.raises(TypeError, match="integer class labels"):
        fl.loss_gradient(m, digits.x[:4], digits.y[:4].float())
    x = digits.x[:4].clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        fl.loss_gradient(m, x, digits.y[:4])


@pytest.mark.parametrize("call, words", [
    (lambda m, x, y: fl.fedavg_update(m, x, y, lr=float("nan")), "lr must be a finite number"),
    (lambda m, x, y: fl.fedavg_update(m, x, y, lr=float("inf")), "lr must be a finite number"),
    (lambda m, x, y: fl.aggregate([{"w": torch.ones(2)}] * 2, [float("nan"), 1]), "finite non-negative"),
    (lambda m, x, y: fl.secure_sum([{"w": torch.tensor([float("nan"), 1.0])}]), "NaN or inf"),
    (lambda m, x, y: fl.aggregate([{"w": torch.ones(2)}, {"v": torch.ones(2)}]), "holds parameters"),
    (lambda m, x, y: fl.loss_gradient(m, x, y + 5), "labels below 3"),
    (lambda m, x, y: fl.per_sample_gradients(m, x, y - 5), "labels >= 0"),
    (lambda m, x, y: fl.fedavg_update(m, x, y + 5), "labels below 3"),
    (lambda m, x, y: fl.loss_gradient(m, x * float("nan"), y), "NaN or inf"),
    (lambda m, x, y: fl.federated_round(m, [fl.Client(0, None)], lr=float("nan")), "lr must be a finite number"),
])
def test_nan_inf_and_out_of_range_labels_are_refused_at_the_federated_boundary(call, words):
    m = build_model("mlp", (4,), 3, hidden=(5,), seed=0)
    x, y = torch.randn(4, 4), torch.randint(3, (4,))
    with pytest.raises(ValueError, match=words):
        call(m, x, y)


def test_train_refuses_a_nan_learning_rate(digits):
    m = build_model("mlp", (1, 8, 8), 10, seed=0)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        fl.train(m, digits, steps=1, lr=float("nan"), progress=False)


def _recording_model(n):
    """A linear model on one-hot records that remembers which records each forward call saw."""
    from torch import nn

    class Rec(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(n, 2)
            self.seen = []

        def forward(self, x):
            self.seen.append(x.detach().argmax(1).tolist())
            return self.lin(x)
    return Rec()


def test_train_batches_are_shuffled_epochs_without_replacement():
    from leaklab.data import Dataset
    from leaklab.fl import epoch_batches, train

    n, b = 12, 4
    data = Dataset.from_arrays(torch.eye(n), torch.arange(n) % 2, name="one-hot")
    model = _recording_model(n)
    train(model, data, steps=9, batch_size=b, lr=0.01, seed=0, progress=False)
    seen = model.seen
    assert len(seen) == 9 and all(len(s) == b and len(set(s)) == b for s in seen)   # no repeat in a batch
    for e in range(3):                                                  # every record once per epoch
        assert sorted(sum(seen[3 * e:3 * e + 3], [])) == list(range(n))
    assert seen[:3] != seen[3:6]                                        # each epoch shuffled afresh
    # the same draws under DP-SGD (the release path), and when b does not divide n: none twice per epoch
    idx = epoch_batches(10, 4, 6, torch.Generator().manual_seed(1))
    assert idx.shape == (6, 4)
    for e in range(3):
        rows = idx[2 * e:2 * e + 2].flatten().tolist()
        assert len(set(rows)) == 8
    assert epoch_batches(3, 8, 2, torch.Generator().manual_seed(0)).shape == (2, 3)   # batch capped at n


def test_train_refuses_non_finite_data_and_foreign_labels():
    from leaklab.fl import train

    data = load_dataset("digits").subset(torch.arange(20))
    model = build_model("mlp", data.input_shape, 10, hidden=(8,), seed=0)
    bad = data.subset(torch.arange(20))
    bad.x[5] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"data\.x must be finite.*index 5"):
        train(model, bad, steps=2, progress=False)
    inf = data.subset(torch.arange(20))
    inf.x[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        train(model, inf, steps=2, defense="dp:clip=1,noise=1", progress=False)
    small = build_model("mlp", data.input_shape, 3, hidden=(8,), seed=0)       # 3 classes, labels up to 9
    with pytest.raises(ValueError, match=r"class labels in \[0, 2\].*from 0 to 9"):
        train(small, data, steps=1, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # nothing was trained
    train(model, data, steps=2, progress=False)                                     # clean data still trains


def test_local_sgd_matches_a_loop_of_plain_sgd_steps():
    # the one local-SGD routine (FedAvg updates, federated training, tracing): T clients at once,
    # checked against each client's own autograd SGD steps
    from leaklab.fl import local_sgd

    data = load_dataset("digits").subset(torch.arange(24))
    model = build_model("mlp", data.input_shape, 10, hidden=(8,), seed=0)
    theta = {k: v.detach() for k, v in model.named_parameters()}
    T, B, steps, lr = 3, 4, 2, 0.3
    xs, ys = data.x[:T * B].reshape(T, B, *data.input_shape), data.y[:T * B].reshape(T, B)
    stacked = {k: v[None].expand(T, *v.shape).clone() for k, v in theta.items()}
    out = local_sgd(model, stacked, [(xs, ys)] * steps, lr=lr)
    for t in range(T):
        p = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(torch.func.functional_call(model, p, (xs[t],)), ys[t])
            g = torch.autograd.grad(loss, list(p.values()))
            p = {k: (v - lr * gk).detach().requires_grad_(True) for (k, v), gk in zip(p.items(), g)}
        for k in theta:
            torch.testing.assert_close(out[k][t], p[k].detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(out["net.1.weight"][0], theta["net.1.weight"])      # it moved
    # under a noise defense the steps differ from the undefended ones, and the same generator seed repeats them
    noisy = [local_sgd(model, stacked, [(xs, ys)] * steps, lr=lr, defense="noise:std=0.5",
                       generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(noisy[0]["net.1.weight"], noisy[1]["net.1.weight"])
    assert not torch.allclose(noisy[0]["net.1.weight"], out["net.1.weight"])


def test_federated_module_is_an_alias_of_fl():
    import leaklab.federated
    import leaklab.fl

    assert leaklab.federated.train_federated is leaklab.fl.train_federated
    assert leaklab.federated.FederatedRun is leaklab.fl.FederatedRun
