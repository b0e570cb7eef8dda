"""The stopping rule of the batched L-BFGS: problems leave the batch when done, retries run in place."""
import math

import pytest
import torch

import leaklab
from leaklab.attacks import dlg, ig, lbfgs
from leaklab.attacks.optimization import enough_match
from leaklab.attacks.run import stack_params
from leaklab.fl import batch_gradients


def _counting(fn):
    """Wrap a row-wise ``f(v) -> (f, g)`` as an ``fg(v, idx)`` that counts evaluations per problem."""
    calls = []

    def fg(v, idx=None):
        idx = torch.arange(v.shape[0]) if idx is None else idx
        calls.append(idx.clone())
        return fn(v, idx)
    return fg, calls


def _rosenbrock(scale):
    def fn(v, idx):
        k = scale[idx]
        x, y = v[:, 0], v[:, 1]
        f = (1 - x) ** 2 + k * (y - x**2) ** 2
        g = torch.stack([-2 * (1 - x) - 4 * k * x * (y - x**2), 2 * k * (y - x**2)], 1)
        return f, g
    return fn


def _tilted_double_well(v, idx):
    # f(x) = (x^2 - 1)^2 + 0.15 (x - 1)^2: global minimum 0 at x = 1, a local one at x = -0.918, f = 0.577
    x = v[:, 0]
    f = (x**2 - 1) ** 2 + 0.15 * (x - 1) ** 2
    g = (4 * x * (x**2 - 1) + 0.3 * (x - 1))[:, None]
    return f, g


def test_an_easy_problem_leaves_the_batch_early():
    # a round bowl (one step) beside a steep Rosenbrock valley: the bowl is evaluated a few times only
    valley = _rosenbrock(torch.tensor([100.0, 100.0], dtype=torch.float64))

    def fn(v, idx):
        fv, gv = valley(v, idx)
        fb, gb = ((v - 1) ** 2).sum(1), 2 * (v - 1)
        bowl = idx == 0
        return torch.where(bowl, fb, fv), torch.where(bowl[:, None], gb, gv)

    fg, calls = _counting(fn)
    v0 = torch.tensor([[0.0, 0.0], [-1.2, 1.0]], dtype=torch.float64)
    v, f, info = lbfgs(fg, v0, iters=500, tol=1e-20, progress=False)
    ev = info["evaluations"]
    assert ev.tolist() == [sum(int((c == i).sum()) for c in calls) for i in range(2)]
    assert ev[0] <= 10 and ev[1] >= 5 * ev[0]
    assert info["converged"].tolist() == [True, True]
    assert torch.allclose(v, torch.ones(2, 2, dtype=torch.float64), atol=1e-8)
    # once the bowl is done, every later evaluation holds the valley alone
    last_bowl = max(k for k, c in enumerate(calls) if (c == 0).any())
    assert all(c.tolist() == [1] for c in calls[last_bowl + 1:])
    assert len(calls) - last_bowl - 1 >= ev[1] - 2 * ev[0]


def test_batched_run_equals_each_problem_alone_with_retries():
    def restart(idx, attempt):          # fresh start of problem i on retry a, independent of the batch
        return torch.tensor([[2.0 + 0.1 * float(i) + float(a)] for i, a in zip(idx.tolist(), attempt.tolist())],
                            dtype=torch.float64)

    starts = torch.tensor([[-1.5], [0.8], [-0.7]], dtype=torch.float64)   # 0 and 2 fall into the bad well
    # in the bad well L-BFGS keeps taking (null) steps: the plateau rule (patience) ends its run
    kw = dict(iters=200, patience=20, tol=1e-20, retries=1, retry_above=1e-3, progress=False)
    fg, _ = _counting(_tilted_double_well)
    v, f, info = lbfgs(fg, starts, restart=restart, **kw)
    assert info["retried"].tolist() == [1, 0, 1]
    assert torch.allclose(v, torch.ones(3, 1, dtype=torch.float64), atol=1e-7)
    assert info["converged"].all()
    for i in range(3):
        def restart_i(idx, attempt, i=i):
            return restart(idx + i, attempt)
        fg_i, _ = _counting(lambda w, idx, i=i: _tilted_double_well(w, idx))
        vi, fi, info_i = lbfgs(fg_i, starts[i:i + 1], restart=restart_i, **kw)
        assert torch.equal(vi[0], v[i]) and torch.equal(fi[0], f[i])
        assert info_i["evaluations"][0] == info["evaluations"][i]
    # without retries the stalled problems keep their bad well
    _, f1, info1 = lbfgs(fg, starts, **(kw | {"retries": 0}))
    assert (f1[[0, 2]] > 0.5).all() and info1["converged"].tolist() == [False, True, False]


def test_a_retry_does_not_wait_for_a_second_pass():
    # problem 0 stalls early in the bad well and restarts at once; problem 1 is a long valley. The
    # loop ends with the valley, not after the valley's run plus a second run of the retried problem.
    v0 = torch.tensor([[-1.5, 0.0, 0.0], [0.0, -1.2, 1.0]], dtype=torch.float64)

    def f3(v, idx=None):                  # columns: well x | valley x, y
        idx = torch.arange(v.shape[0]) if idx is None else idx
        f1, g1 = _tilted_double_well(v[:, :1], idx)
        f2, g2 = _rosenbrock(torch.full((2,), 300.0, dtype=torch.float64))(v[:, 1:], idx)
        well = (idx == 0)[:, None]
        g = torch.where(well, torch.cat([g1, torch.zeros_like(g2)], 1), torch.cat([torch.zeros_like(g1), g2], 1))
        return torch.where(well[:, 0], f1, f2), g

    def restart(idx, attempt):
        return torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64).repeat(len(idx), 1)

    kw = dict(iters=400, patience=20, tol=1e-20, retry_above=1e-3, progress=False)
    _, f, info = lbfgs(f3, v0, retries=1, restart=restart, **kw)
    assert info["retried"].tolist() == [1, 0] and info["converged"].all()
    # alone, the valley is problem 0 of its call: shift its index to keep it the valley
    _, _, valley = lbfgs(lambda v, idx=None: f3(v, (torch.zeros(v.shape[0], dtype=torch.long)
                                                    if idx is None else idx) + 1), v0[1:], **kw)
    _, _, well_first = lbfgs(f3, v0[:1], retries=0, **kw)
    _, _, well_retry = lbfgs(f3, restart(torch.tensor([0]), None), **kw)
    sequential = well_first["iterations"] + well_retry["iterations"]
    assert info["iterations"] <= max(valley["iterations"], sequential) + 1
    assert valley["iterations"] > sequential          # the valley is the long one, so the retry was hidden


def test_a_plateau_ends_a_run():
    # f = 1 + exp(-x) creeps towards 1 for ever: with patience it stops after about `patience` iterations
    def fn(v, idx):
        e = torch.exp(-v[:, 0])
        return 1 + e, -e[:, None]

    v0 = torch.zeros(1, 1, dtype=torch.float64)
    _, f, info = lbfgs(lambda v, idx=None: fn(v, idx), v0, iters=5000, patience=40, progress=False)
    assert info["iterations"] <= 45 and not info["converged"].any()
    _, _, info_long = lbfgs(lambda v, idx=None: fn(v, idx), v0, iters=300, patience=None, progress=False)
    assert info_long["iterations"] > 100      # without the plateau rule it runs on


def test_enough_match_follows_the_float_type():
    assert enough_match(torch.float32) == pytest.approx((10 * 2.0**-23) ** 2)
    assert enough_match(torch.float64) < 1e-28
    with pytest.raises(ValueError, match="restart"):
        lbfgs(lambda v, idx=None: (v.sum(1), torch.ones_like(v)), torch.zeros(1, 1), iters=3, retries=1,
              progress=False)


def _digits_release(trials=2, seed=0):
    ds = leaklab.load_dataset("digits")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(ds), (trials, 1), generator=gen)
    xs, ys = ds.x[idx], ds.y[idx]
    models = [leaklab.build_model("lenet", (1, 8, 8), 10, seed=seed + t) for t in range(trials)]
    params = stack_params(models)
    return models[0], params, batch_gradients(models[0], xs, ys, params=params, params_batched=True), xs


def test_attacks_report_convergence_per_trial():
    model, params, grads, xs = _digits_release(trials=2)
    kw = dict(input_shape=(1, 8, 8), num_classes=10, batch_size=1, progress=False)
    rec = dlg(model, params, grads, **kw)
    conv = rec.info["converged"]
    assert conv.dtype == torch.bool and conv.shape == (2,) and conv.all()
    assert (rec.info["distance"] <= rec.info["tol"]).all()
    assert torch.allclose(rec.x, xs, atol=1e-2)
    short = dlg(model, params, grads, iters=3, retries=0, **kw)           # three iterations: not converged
    assert not short.info["converged"].any() and (short.info["distance"] > short.info["tol"]).all()
    rec_ig = ig(model, params, grads, iters=20, restarts=1, **kw)
    assert rec_ig.info["converged"].shape == (2,) and rec_ig.info["converged"].dtype == torch.bool
    assert torch.isfinite(rec_ig.info["distance"]).all() and (rec_ig.info["distance"] >= 0).all()
    assert not rec_ig.info["converged"].any()          # 20 signed-Adam steps match nothing to float precision


def test_dlg_batched_reaches_what_each_trial_reaches_alone():
    # a trial alone starts from other noise (the first draw of the seed), so the paths differ; both
    # must end at the same image, the private one, and agree on convergence
    model, params, grads, xs = _digits_release(trials=3, seed=1)
    kw = dict(input_shape=(1, 8, 8), num_classes=10, batch_size=1, progress=False)
    rec = dlg(model, params, grads, **kw)
    assert rec.info["converged"].all()
    for t in range(3):
        one = dlg(model, {k: v[t:t + 1] for k, v in params.items()}, {k: v[t:t + 1] for k, v in grads.items()},
                  **kw)
        assert bool(one.info["converged"][0]) and torch.allclose(one.x[0], rec.x[t], atol=1e-2)
        assert torch.allclose(rec.x[t], xs[t], atol=1e-2)
    assert math.isfinite(float(rec.loss.max()))
