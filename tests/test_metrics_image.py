"""Image metrics: known values, agreement with scikit-image and torch, matching."""
import math

import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from leaklab.metrics import label_accuracy, match, mse, psnr, score_images, ssim


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_psnr_of_identical_images_is_infinite_and_known_value():
    x = _rand(2, 3, 1, 8, 8)
    assert torch.isinf(psnr(x, x)).all()
    # a constant error of 0.1 on a range of 1 is exactly 20 dB
    assert torch.allclose(psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)), torch.tensor([20.0]))


def test_mse_matches_torch_per_image():
    a, b = _rand(5, 3, 6, 6, seed=1), _rand(5, 3, 6, 6, seed=2)
    expected = torch.stack([F.mse_loss(a[i], b[i]) for i in range(5)])
    assert torch.allclose(mse(a, b), expected)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 25, 25), (3, 32, 32), (1, 5, 5)])
def test_ssim_matches_scikit_image(shape):
    a = _rand(*shape, seed=3)
    b = (a + 0.2 * _rand(*shape, seed=4)).clamp(0, 1)
    if shape[0] == 1:
        ref = structural_similarity(a[0].numpy(), b[0].numpy(), data_range=1, win_size=min(7, shape[1]))
    else:
        ref = structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), data_range=1,
                                    channel_axis=2)
    assert float(ssim(a, b)) == pytest.approx(float(ref), abs=1e-5)


def test_ssim_identical_is_one_and_noise_is_lower():
    x = _rand(4, 3, 16, 16, seed=5)
    assert torch.allclose(ssim(x, x), torch.ones(4))
    assert (ssim(x, _rand(4, 3, 16, 16, seed=6)) < 0.2).all()


def test_match_recovers_a_permutation():
    x = _rand(3, 5, 1, 8, 8, seed=7)
    perms = torch.stack([torch.randperm(5, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    shuffled = torch.stack([x[t, perms[t]] for t in range(3)])
    p = match(x, shuffled)
    for t in range(3):
        assert torch.equal(shuffled[t, p[t]], x[t])
    scores = score_images(x, shuffled)
    assert torch.isinf(scores.psnr).all() and scores.success_rate() == 1.0


def test_label_accuracy_ignores_order():
    y = torch.tensor([[7, 3], [1, 1]])
    y_hat = torch.tensor([[3, 7], [1, 2]])
    assert label_accuracy(y, y_hat).tolist() == [1.0, 0.5]


def test_label_accuracy_is_the_multiset_overlap():
    # sorted position by position these share nothing; as multisets they share 2 and 3
    assert label_accuracy(torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4])).item() == pytest.approx(2 / 3)
    y = torch.tensor([[0, 0, 5, 9], [4, 4, 4, 4], [1, 2, 3, 4]])
    y_hat = torch.tensor([[0, 5, 5, 9], [4, 0, 4, 1], [5, 6, 7, 8]])
    assert label_accuracy(y, y_hat).tolist() == [0.75, 0.5, 0.0]
    # oracle: the overlap counted with Python's Counter, on random label batches
    from collections import Counter

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 4, (50, 6), generator=gen), torch.randint(0, 4, (50, 6), generator=gen)
    want = [sum((Counter(r.tolist()) & Counter(s.tolist())).values()) / 6 for r, s in zip(a, b)]
    assert label_accuracy(a, b).tolist() == pytest.approx(want)
    assert label_accuracy(a[None], b[None]).shape == (1, 50)
    with pytest.raises(ValueError, match="y_hat must hold labels >= 0"):
        label_accuracy(torch.tensor([1, 2]), torch.tensor([-1, 2]))
    with pytest.raises(TypeError, match="y must hold integer labels"):
        label_accuracy(torch.tensor([1.0, 2.0]), torch.tensor([1, 2]))


def test_psnr_with_a_data_range_other_than_one():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 8, 8, generator=gen) * 255
    x_hat = (x + torch.randn(3, 1, 8, 8, generator=gen) * 5).clamp(0, 255)
    got = psnr(x, x_hat, data_range=255.0)
    # oracle: scikit-image's peak_signal_noise_ratio, image by image
    from skimage.metrics import peak_signal_noise_ratio

    want = [peak_signal_noise_ratio(x[i].numpy(), x_hat[i].numpy(), data_range=255) for i in range(3)]
    assert got.tolist() == pytest.approx(want, rel=1e-4)
    # scaling both images and the range together leaves the PSNR unchanged
    assert torch.allclose(psnr(x / 255, x_hat / 255), got, rtol=1e-4)
    assert torch.allclose(psnr(x, x_hat, data_range=2.0), got - 20 * math.log10(255 / 2), rtol=1e-4)
    with pytest.raises(ValueError, match="data_range must be > 0"):
        psnr(x, x_hat, data_range=0.0)


def test_bad_inputs_raise_named_errors():
    x = _rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="x and x_hat must have the same shape"):
        mse(x, _rand(2, 1, 8, 7))
    bad = x.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="x_hat contains NaN"):
        psnr(x, bad)
    with pytest.raises(ValueError, match="win_size must be an odd number"):
        ssim(x, x, win_size=4)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ssim(x.numpy(), x)


def test_docstring_examples_run():
    import doctest

    import leaklab.metrics.image as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
