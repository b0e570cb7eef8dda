"""Your own model and your own gradients: check_model and leaklab.attacks.reconstruct."""
import doctest

import pytest
import torch
from torch import nn

import leaklab.attacks.byo as byo
import leaklab.validate as validate
from leaklab.attacks import reconstruct, run_reconstruction
from leaklab.data import load_dataset
from leaklab.games import play
from leaklab.metrics.image import score_images
from leaklab.models import build_model


@pytest.mark.parametrize("module", [byo, validate])
def test_doctests(module):
    r = doctest.testmod(module)
    assert r.attempted > 0 and r.failed == 0


def one_release(seed=1, label=4):
    torch.manual_seed(seed)     # a reader's own small model
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Sigmoid(), nn.Linear(16, 10))
    x = load_dataset("digits", n=1, seed=seed).x
    y = torch.tensor([label])
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    return model, x, y, grads


def psnr(x_hat, x):
    return float(score_images(x[None], x_hat[None]).psnr.mean())


def test_named_parameter_grads_are_inverted_and_labels_recovered():
    model, x, y, grads = one_release()
    rec = reconstruct(model, grads, input_shape=(1, 8, 8), attack="idlg", iters=200, progress=False)
    assert rec.x.shape == (1, 1, 8, 8) and rec.y.tolist() == [4] and rec.loss.ndim == 0
    assert psnr(rec.x, x) > 30
    # the tuple torch.autograd.grad returns works the same
    loss = nn.functional.cross_entropy(model(x), y)
    tup = torch.autograd.grad(loss, list(model.parameters()))
    rec2 = reconstruct(model, tup, input_shape=(1, 8, 8), attack="idlg", iters=200, progress=False)
    assert torch.allclose(rec2.x, rec.x, atol=1e-5)


def test_given_labels_are_used():
    model, x, y, grads = one_release()
    right = reconstruct(model, grads, input_shape=(1, 8, 8), attack="idlg", labels=[4], iters=200, progress=False)
    wrong = reconstruct(model, grads, input_shape=(1, 8, 8), attack="idlg", labels=[7], iters=100,
                        retries=0, progress=False)
    assert right.info["labels"] == "given" and right.y.tolist() == [4] and wrong.y.tolist() == [7]
    assert psnr(right.x, x) > 30 and float(wrong.loss) > 100 * float(right.loss)


def test_gradients_of_other_weights_do_not_reconstruct():
    # the null case: the gradient was computed at weights other than the model's
    _, x, _, grads = one_release(seed=1)
    other, _, _, _ = one_release(seed=2)
    rec = reconstruct(other, grads, input_shape=(1, 8, 8), attack="idlg", iters=100, retries=0, progress=False)
    assert psnr(rec.x, x) < 20


def test_a_trial_dimension_is_kept():
    model, x, y, grads = one_release()
    stacked = {k: torch.stack([g, g]) for k, g in grads.items()}
    rec = reconstruct(model, stacked, input_shape=(1, 8, 8), attack="rgap", progress=False)
    assert rec.x.shape == (2, 1, 1, 8, 8)


def test_batchnorm_in_eval_mode_is_the_fix_that_works():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Sigmoid(), nn.Flatten(),
                        nn.Linear(4 * 64, 10))
    with pytest.raises(ValueError, match=r"BatchNorm2d layer '1' is in training mode.*model\.eval\(\)"):
        run_reconstruction(attack="idlg", model=net, dataset="digits", trials=1, iters=5, progress=False)
    net.eval()
    run = run_reconstruction(attack="idlg", model=net, dataset="digits", trials=1, iters=5, progress=False)
    assert run.x_hat.shape == (1, 1, 1, 8, 8)


def test_class_count_is_read_off_the_model_for_images():
    net = build_model("lenet", (1, 8, 8), 4, seed=0)
    run = run_reconstruction(attack="analytic", model=build_model("mlp", (1, 8, 8), 4, hidden=(), seed=0),
                             images=torch.rand(2, 1, 8, 8), trials=1, progress=False)
    assert run.config["num_classes"] == 4
    assert validate.check_model(net, (1, 8, 8)) == 4


def test_play_checks_the_model():
    wrong = build_model("mlp", (10,), 3)
    with pytest.raises(ValueError, match=r"model outputs 3 classes, the data have num_classes=2"):
        play("attribute", "diabetes", model=wrong, trials=4, progress=False)
