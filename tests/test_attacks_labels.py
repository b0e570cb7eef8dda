"""Label recovery from the last layer: batches with repeated labels, heads with and without bias,
untrained and trained models; the estimate used is reported."""
import pytest
import torch

import leaklab
from leaklab.attacks.labels import ESTIMATES, label_recovery, recover_labels
from leaklab.fl import accuracy, batch_gradients, train
from leaklab.metrics import label_accuracy
from leaklab.models import build_model

B = 8


@pytest.fixture(scope="module")
def split():
    ds = leaklab.load_dataset("digits")
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    return ds.subset(perm[: len(ds) // 2]), ds.subset(perm[len(ds) // 2:])   # clients', attacker's


def _repeated_batches(data, trials, seed=0):
    """Batches of 8 whose labels repeat: three classes drawn, with counts 4, 3 and 1."""
    gen = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for _ in range(trials):
        classes = torch.randperm(10, generator=gen)[:3]
        idx = []
        for c, n in zip(classes.tolist(), (4, 3, 1)):
            pool = (data.y == c).nonzero().flatten()
            idx += pool[torch.randperm(len(pool), generator=gen)[:n]].tolist()
        xs.append(data.x[idx])
        ys.append(data.y[idx])
    return torch.stack(xs), torch.stack(ys)


_MODELS: dict = {}


def _model(bias, trained, clients):
    """The MLP of these tests, trained once per head and kept for the module."""
    if (bias, trained) not in _MODELS:
        model = build_model("mlp", (1, 8, 8), 10, seed=1, bias=bias)
        if trained:
            train(model, clients, steps=400, seed=0, progress=False)
        _MODELS[bias, trained] = model
    return _MODELS[bias, trained]


def _exact(y_hat, y):
    return float((label_accuracy(y, y_hat) == 1).float().mean())


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("trained", [False, True], ids=["untrained", "trained"])
def test_repeated_labels_in_a_batch_of_eight(split, bias, trained):
    clients, attacker = split
    model = _model(bias, trained, clients)
    if trained:
        assert accuracy(model, attacker) >= 0.9
    xs, ys = _repeated_batches(clients, 40)
    grads = batch_gradients(model, xs, ys)
    common = dict(num_classes=10, batch_size=B)
    aux = label_recovery(grads, **common, model=model, aux=attacker.x[:200], aux_labels=attacker.y[:200])
    dummy = label_recovery(grads, **common, model=model, input_shape=(1, 8, 8))
    uniform = label_recovery(grads, **common)
    assert (aux.estimate, dummy.estimate, uniform.estimate) == ("auxiliary", "dummy", "uniform")
    assert {aux.head, dummy.head, uniform.head} == {"bias" if bias else "no bias"}
    assert set(ESTIMATES) >= {aux.estimate, dummy.estimate, uniform.estimate}
    for r in (aux, dummy, uniform):
        assert r.labels.shape == (40, B) and (r.counts.sum(1) == B).all()
    assert torch.equal(recover_labels(grads, **common, model=model, input_shape=(1, 8, 8)), dummy.labels)
    # never a class that is absent from the batch: with ReLU features an absent class's weight row
    # has no negative entry and its bias entry is positive, so it cannot be detected as present
    for r in (aux, dummy):
        present = torch.zeros(40, 10, dtype=torch.bool).scatter_(1, ys, True)
        assert not (r.counts.bool() & ~present).any()
    if not trained:   # an untrained model predicts alike for every record: the counts fit exactly
        assert _exact(aux.labels, ys) >= 0.95 and _exact(dummy.labels, ys) >= 0.9
    else:             # repeats on a confident model are hard; the model's own estimate still beats uniform
        assert _exact(dummy.labels, ys) > _exact(uniform.labels, ys)
        assert float(label_accuracy(ys, dummy.labels).mean()) >= 0.6
    assert float(label_accuracy(ys, aux.labels).mean()) >= float(label_accuracy(ys, uniform.labels).mean())


def test_trained_model_share_of_exact_multisets_beats_the_uniform_assumption(split):
    """Random batches of 4 on a trained model: the classes present are read off the weight rows."""
    clients, attacker = split
    model = _model(True, True, clients)
    gen = torch.Generator().manual_seed(3)
    idx = torch.stack([torch.randperm(len(clients), generator=gen)[:4] for _ in range(100)])
    xs, ys = clients.x[idx], clients.y[idx]
    grads = batch_gradients(model, xs, ys)
    dummy = label_recovery(grads, num_classes=10, batch_size=4, model=model, input_shape=(1, 8, 8))
    uniform = label_recovery(grads, num_classes=10, batch_size=4)
    assert _exact(dummy.labels, ys) >= 0.4
    assert _exact(dummy.labels, ys) >= _exact(uniform.labels, ys) + 0.2


def test_batch_of_one_is_exact_and_says_so(split):
    clients, _ = split
    model = _model(True, False, clients)
    xs, ys = clients.x[:20, None], clients.y[:20, None]
    r = label_recovery(batch_gradients(model, xs, ys), num_classes=10, batch_size=1, model=model,
                       input_shape=(1, 8, 8))
    assert r.estimate == "exact" and torch.equal(r.labels, ys)


def test_bad_input(split):
    clients, _ = split
    model = _model(True, False, clients)
    xs, ys = clients.x[:8].reshape(2, 4, 1, 8, 8), clients.y[:8].reshape(2, 4)
    grads = batch_gradients(model, xs, ys)
    with pytest.raises(ValueError, match="input_shape is needed"):
        label_recovery(grads, num_classes=10, batch_size=4, model=model)
    with pytest.raises(ValueError, match=r"aux_labels must lie in \[0, 9\]"):
        label_recovery(grads, num_classes=10, batch_size=4, model=model, aux=clients.x[:3],
                       aux_labels=torch.tensor([0, 1, 12]))
    with pytest.raises(ValueError, match="no output layer of shape"):
        label_recovery(grads, num_classes=7, batch_size=4)
    bad = dict(grads)
    bad["net.3.bias"] = torch.full_like(bad["net.3.bias"], float("nan"))
    with pytest.raises(ValueError, match="NaN or inf"):
        label_recovery(bad, num_classes=10, batch_size=4)
