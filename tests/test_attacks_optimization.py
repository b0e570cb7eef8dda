"""Optimisation attacks: label recovery, the batched L-BFGS, DLG, iDLG and IG recover digits."""
import pytest
import torch

import leaklab
from leaklab.attacks import dlg, get_attack, idlg, ig, lbfgs, list_attacks, recover_labels, run_reconstruction
from leaklab.attacks.run import stack_params
from leaklab.fl import batch_gradients


def _release(model_name="lenet", *, trials=3, batch_size=1, seed=0, **options):
    ds = leaklab.load_dataset("digits")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(len(ds), generator=gen)[:batch_size] for _ in range(trials)])
    xs, ys = ds.x[idx], ds.y[idx]
    models = [leaklab.build_model(model_name, (1, 8, 8), 10, seed=seed + t, **options) for t in range(trials)]
    params = stack_params(models)
    grads = batch_gradients(models[0], xs, ys, params=params, params_batched=True)
    return models[0], params, grads, xs, ys


def test_attacks_are_registered():
    assert {"dlg", "idlg", "ig"} <= set(list_attacks())
    assert get_attack("dlg") is dlg


def test_label_recovery_is_exact_for_one_sample():
    for name, options in [("lenet", {}), ("mlp", {"hidden": (16,), "activation": "sigmoid"})]:
        _, _, grads, _, ys = _release(name, trials=32, **options)
        assert torch.equal(recover_labels(grads, num_classes=10, batch_size=1), ys)


def test_label_recovery_without_bias_uses_weight_rows():
    _, _, grads, _, ys = _release("mlp", trials=16, hidden=(16,), activation="sigmoid", bias=False)
    assert torch.equal(recover_labels(grads, num_classes=10, batch_size=1), ys)


def test_batched_lbfgs_equals_one_problem_at_a_time():
    # Rosenbrock problems with different scales: batching must not couple them.
    scale = torch.tensor([1.0, 10.0, 100.0])

    def make(s):
        def fg(v, idx=None):
            k = s if idx is None else s[idx]
            x, y = v[:, 0], v[:, 1]
            f = (1 - x) ** 2 + k * (y - x**2) ** 2
            g = torch.stack([-2 * (1 - x) - 4 * k * x * (y - x**2), 2 * k * (y - x**2)], 1)
            return f, g
        return fg

    v0 = torch.tensor([[-1.2, 1.0], [0.5, -0.5], [-1.0, 2.0]], dtype=torch.float64)
    v, f, _ = lbfgs(make(scale.double()), v0, iters=200, progress=False)
    assert torch.allclose(v, torch.ones(3, 2, dtype=torch.float64), atol=1e-5)
    for i in range(3):
        vi, fi, _ = lbfgs(make(scale[i:i + 1].double()), v0[i:i + 1], iters=200, progress=False)
        assert torch.allclose(vi[0], v[i], atol=1e-9)


def test_idlg_recovers_digits_on_lenet():
    model, params, grads, xs, ys = _release("lenet", trials=2)
    rec = idlg(model, params, grads, input_shape=(1, 8, 8), num_classes=10, batch_size=1, iters=100,
               progress=False)
    assert torch.equal(rec.y, ys)
    assert leaklab.metrics.psnr(xs, rec.x).min() > 30


def test_dlg_with_joint_label_recovers_digit_and_label():
    model, params, grads, xs, ys = _release("mlp", trials=2, hidden=(32,), activation="sigmoid")
    rec = dlg(model, params, grads, input_shape=(1, 8, 8), num_classes=10, batch_size=1, iters=200,
              labels="joint", progress=False)
    assert rec.info["labels"] == "joint"
    assert torch.equal(rec.y, ys)
    assert leaklab.metrics.psnr(xs, rec.x).min() > 30


def test_ig_recovers_digits_with_cosine_and_restarts():
    model, params, grads, xs, _ = _release("mlp", trials=2, hidden=())
    rec = ig(model, params, grads, input_shape=(1, 8, 8), num_classes=10, batch_size=1, iters=200,
             restarts=2, tv=0.0, progress=False)
    assert rec.info["best_restart"].shape == (2,)
    assert leaklab.metrics.psnr(xs, rec.x).min() > 30


def test_runner_scores_a_batch_after_matching():
    run = run_reconstruction(attack="idlg", model="lenet", dataset="digits", batch_size=2, trials=2, iters=150,
                             progress=False, seed=1)
    assert run.scores.psnr.shape == (2, 2)
    assert run.scores.success_rate() == 1.0
    assert [t["label_accuracy"] for t in run.trials()] == [1.0, 1.0]
    assert run.to_record().numbers["summary"]["images"] == 4


def test_same_seed_same_numbers():
    a = run_reconstruction(attack="dlg", model="lenet", dataset="digits", trials=2, iters=10, progress=False)
    b = run_reconstruction(attack="dlg", model="lenet", dataset="digits", trials=2, iters=10, progress=False)
    assert torch.equal(a.x_hat, b.x_hat)


def test_bad_release_and_options_raise_clear_errors():
    model, params, grads, _, _ = _release("lenet", trials=2)
    kw = dict(input_shape=(1, 8, 8), num_classes=10, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="missing"):
        dlg(model, params, {k: v for k, v in list(grads.items())[1:]}, **kw)
    bad = dict(grads)
    bad["classifier.bias"] = bad["classifier.bias"] * float("nan")
    with pytest.raises(ValueError, match="contains NaN"):
        dlg(model, params, bad, **kw)
    with pytest.raises(ValueError, match="unknown labels 'soft'; choose from"):
        dlg(model, params, grads, labels="soft", **kw)
    with pytest.raises(ValueError, match="retries must be >= 0, got -1"):
        dlg(model, params, grads, retries=-1, **kw)
    with pytest.raises(ValueError, match="batch_size 3 is larger than the number of images given"):
        run_reconstruction(attack="dlg", model="lenet", images=torch.rand(2, 1, 8, 8), batch_size=3)
    with pytest.raises(ValueError, match="unknown attack 'nope'; choose from"):
        run_reconstruction(attack="nope", model="lenet", dataset="digits")


def test_docstring_examples_run():
    import doctest

    import leaklab.attacks.run as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
