"""Total variation per sample, and Inverting Gradients with its prior on and several restarts."""
import pytest
import torch

import leaklab
from leaklab.attacks import ig
from leaklab.attacks.optimization import matching_objective, total_variation
from leaklab.attacks.run import stack_params
from leaklab.fl import batch_gradients


def _tv_loop(x, dims):
    """Oracle: each sample's mean absolute neighbour difference along each spatial axis, summed over axes."""
    per_sample = []
    for s in x:
        total = 0.0
        for axis in range(s.ndim - dims, s.ndim):
            n = s.shape[axis]
            if n > 1:
                total += float((s.narrow(axis, 1, n - 1) - s.narrow(axis, 0, n - 1)).abs().mean())
        per_sample.append(total)
    return sum(per_sample) / len(per_sample)


@pytest.mark.parametrize("shape, dims", [((5, 3, 6, 7), 2), ((4, 2, 9), 1), ((6, 11), 1)])
def test_total_variation_matches_a_loop_over_samples(shape, dims):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(total_variation(x)) == pytest.approx(_tv_loop(x, dims), rel=1e-12)


def test_total_variation_of_1d_inputs_never_crosses_the_batch():
    # every sample constant along its own axis, but different from the next sample
    x = torch.arange(6, dtype=torch.float64)[:, None].expand(6, 10).clone()
    assert float(total_variation(x)) == 0.0
    # signals (B, C, L): channels that differ are not neighbours either
    s = torch.arange(3, dtype=torch.float64)[None, :, None].expand(8, 3, 10)    # (B, C, L), constant per channel
    assert float(total_variation(s)) == 0.0
    # and the order of the batch does not matter
    y = torch.rand(7, 12, generator=torch.Generator().manual_seed(1))
    assert float(total_variation(y)) == pytest.approx(float(total_variation(y[torch.randperm(7)])))
    with pytest.raises(ValueError, match="dims must be an int between 1 and 1"):
        total_variation(y, dims=2)


def test_ig_keeps_the_best_of_restarts_that_differ():
    """Restart r of a lone trial starts where trial r of three copies of it starts, so the three
    single runs are the three restarts: the attack must return the one with the lowest objective."""
    ds = leaklab.load_dataset("digits")
    xs, ys = ds.x[:1, None], ds.y[:1, None]
    model = leaklab.build_model("lenet", (1, 8, 8), 10, seed=0)
    params = stack_params([model])
    grads = batch_gradients(model, xs, ys, params=params, params_batched=True)
    rep = {k: v.expand(3, *v.shape[1:]).clone() for k, v in params.items()}
    grep = {k: v.expand(3, *v.shape[1:]).clone() for k, v in grads.items()}
    opts = dict(input_shape=(1, 8, 8), num_classes=10, batch_size=1, iters=30, tv=1e-2, seed=5,
                progress=False, device="cpu")
    alone = ig(model, params, grads, restarts=3, **opts)
    singles = ig(model, rep, grep, restarts=1, **opts)
    losses = singles.loss
    assert losses.max() - losses.min() > 1e-4 * losses.abs().max()          # the restarts differ
    best = int(losses.argmin())
    assert int(alone.info["best_restart"][0]) == best
    assert float(alone.loss[0]) == pytest.approx(float(losses.min()), rel=1e-4)
    assert torch.allclose(alone.x[0], singles.x[best], atol=1e-5)
    # the loss reported is the objective, prior included, of the image returned
    f = matching_objective(model, input_shape=(1, 8, 8), batch_size=1, num_classes=10, joint_labels=False,
                           distance="cosine", tv=1e-2, image_param="clamp")
    one = {k: v[0] for k, v in params.items()}
    g_one = {k: v[0] for k, v in grads.items()}
    value = f(alone.x[0].flatten(), one, g_one, ys[0])
    assert float(value) == pytest.approx(float(alone.loss[0]), rel=1e-3)
    f0 = matching_objective(model, input_shape=(1, 8, 8), batch_size=1, num_classes=10, joint_labels=False,
                            distance="cosine", tv=0.0, image_param="clamp")
    assert float(value - f0(alone.x[0].flatten(), one, g_one, ys[0])) == pytest.approx(
        1e-2 * float(total_variation(alone.x[0])), rel=1e-3)
