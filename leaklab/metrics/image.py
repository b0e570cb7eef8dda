"""Image similarity between private inputs and their reconstructions.

Every function takes images in ``[0, 1]`` with the channel axis before the two
spatial axes, ``(..., C, H, W)``, and returns one number per image ``(...)``, so
the same call scores a single image, a batch ``(B, C, H, W)`` or ``T`` trials of
batches ``(T, B, C, H, W)``.

A reconstruction attack returns its batch in an arbitrary order. Before scoring,
:func:`match` pairs each reconstruction with an input by solving a linear
assignment problem on the pairwise mean squared error (scipy's
``linear_sum_assignment``), trial by trial; :func:`score_images` does the
matching and computes every metric at once.

>>> import torch
>>> x = torch.rand(2, 3, 1, 8, 8)
>>> float(psnr(x, x).min())
inf
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_tensor

__all__ = ["mse", "psnr", "ssim", "label_accuracy", "match", "ImageScores", "score_images"]


def _pair(name_a: str, a, name_b: str, b) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor(name_a, a, floating=True)
    check_tensor(name_b, b, floating=True)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.ndim < 3:
        raise ValueError(f"{name_a} must have shape (..., C, H, W), got {tuple(a.shape)}")
    return a, b.to(a.device)


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image: the mean over ``(C, H, W)`` of ``(x - x_hat)**2``."""
    x, x_hat = _pair("x", x, "x_hat", x_hat)
    return (x - x_hat).pow(2).flatten(-3).mean(-1)


def psnr(x: torch.Tensor, x_hat: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``10 log10(data_range**2 / MSE)``.

    Identical images give ``inf``. 20 dB means a root mean squared error of a tenth
    of the range, 30 dB about three hundredths, 40 dB one hundredth.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    err = mse(x, x_hat)
    return 10.0 * torch.log10(data_range**2 / err)  # err == 0 gives inf


def _odd_window(h: int, w: int, win_size: int | None) -> int:
    side = min(h, w)
    if win_size is None:
        win_size = min(7, side if side % 2 == 1 else side - 1)
    if win_size < 1 or win_size % 2 == 0 or win_size > side:
        raise ValueError(
            f"win_size must be an odd number between 1 and the image side {side}, got {win_size}"
        )
    return win_size


def ssim(x: torch.Tensor, x_hat: torch.Tensor, *, data_range: float = 1.0,
         win_size: int | None = None) -> torch.Tensor:
    """Structural similarity per image, as scikit-image's ``structural_similarity``.

    The same definition as scikit-image's defaults (Wang et al., 2004): a uniform
    ``win_size`` x ``win_size`` window, ``K1 = 0.01``, ``K2 = 0.03``, sample
    covariances, the mean over the valid part of the image and over channels (RGB
    images are scored channel by channel and averaged). ``win_size`` defaults to 7,
    or to the largest odd number that fits when a side is shorter than 7 (8x8
    digits use 7, 5x5 images 5). Identical images give 1; unrelated noise gives a
    value near 0.
    """
    x, x_hat = _pair("x", x, "x_hat", x_hat)
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    win = _odd_window(h, w, win_size)
    a = x.reshape(-1, 1, h, w).double()   # every channel of every image, one at a time
    b = x_hat.reshape(-1, 1, h, w).double()
    mean = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731  (the valid region only)
    n = win * win
    cov = n / (n - 1) if n > 1 else 1.0
    mu_a, mu_b = mean(a), mean(b)
    var_a = cov * (mean(a * a) - mu_a * mu_a)
    var_b = cov * (mean(b * b) - mu_b * mu_b)
    cov_ab = cov * (mean(a * b) - mu_a * mu_b)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    per_channel = s.flatten(1).mean(1).reshape(*lead, c)
    return per_channel.mean(-1).to(x.dtype)


def label_accuracy(y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """The fraction of labels recovered, per trial: ``y`` and ``y_hat`` have shape ``(..., B)``.

    Labels are compared as multisets, because a batch's order carries no
    information: the score is ``sum_c min(#c in y, #c in y_hat) / B``, so recovering
    ``{3, 7}`` for a batch labelled ``(7, 3)`` is exact and ``[1, 2, 3]`` against
    ``[2, 3, 4]`` scores 2/3.
    """
    check_tensor("y", y, finite=False)
    check_tensor("y_hat", y_hat, finite=False)
    if y.shape != y_hat.shape:
        raise ValueError(f"y and y_hat must have the same shape, got {tuple(y.shape)} and {tuple(y_hat.shape)}")
    if y.ndim < 1:
        raise ValueError("y must have a batch dimension (..., B)")
    for name, t in (("y", y), ("y_hat", y_hat)):
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"{name} must hold integer labels, got dtype {t.dtype}")
        if t.numel() and int(t.min()) < 0:
            raise ValueError(f"{name} must hold labels >= 0, got {int(t.min())}")
    a, b = y.long(), y_hat.long().to(y.device)
    if a.shape[-1] == 0:
        return torch.full(a.shape[:-1], math.nan, device=a.device)
    C = int(max(a.max(), b.max())) + 1
    ca = F.one_hot(a, C).sum(-2)                        # (..., C) counts per class
    cb = F.one_hot(b, C).sum(-2)
    return torch.minimum(ca, cb).sum(-1).float() / a.shape[-1]


def match(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """The order of ``x_hat`` that best matches ``x``, trial by trial.

    ``x`` and ``x_hat`` have shape ``(T, B, C, H, W)``. Returns ``perm`` of shape
    ``(T, B)`` such that ``x_hat[t, perm[t, i]]`` is the reconstruction paired with
    ``x[t, i]``: the assignment minimising the total mean squared error.
    """
    x, x_hat = _pair("x", x, "x_hat", x_hat)
    if x.ndim != 5:
        raise ValueError(f"x must have shape (T, B, C, H, W), got {tuple(x.shape)}")
    if x.shape[1] == 1:                              # one image per batch: nothing to assign
        return torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
    from scipy.optimize import linear_sum_assignment

    a, b = x.flatten(2), x_hat.flatten(2)            # (T, B, D)
    cost = torch.cdist(a.double(), b.double()).pow(2).cpu().numpy()  # (T, B, B)
    perm = np.empty(cost.shape[:2], dtype=np.int64)
    for t in range(cost.shape[0]):
        rows, cols = linear_sum_assignment(cost[t])
        perm[t, rows] = cols
    return torch.from_numpy(perm).to(x.device)


@dataclass
class ImageScores:
    """Scores of ``T`` reconstructed batches of size ``B`` after matching.

    ``mse``, ``psnr`` and ``ssim`` have shape ``(T, B)``; ``label_accuracy`` has
    shape ``(T,)`` (NaN where the attack recovered no labels); ``perm`` is the
    matching (see :func:`match`) and ``x_hat`` the reconstructions in matched order.
    """

    mse: torch.Tensor
    psnr: torch.Tensor
    ssim: torch.Tensor
    label_accuracy: torch.Tensor
    perm: torch.Tensor
    x_hat: torch.Tensor

    def success_rate(self, threshold_db: float = 30.0) -> float:
        """The fraction of images reconstructed at a PSNR of at least ``threshold_db``."""
        return float((self.psnr >= threshold_db).float().mean())

    def summary(self) -> dict:
        """Means and medians over all images (PSNR capped at 100 dB for the mean)."""
        p = self.psnr.clamp(max=100.0)
        return {
            "images": int(self.psnr.numel()),
            "psnr_mean": float(p.mean()), "psnr_median": float(self.psnr.median()),
            "ssim_mean": float(self.ssim.mean()), "mse_mean": float(self.mse.mean()),
            "label_accuracy": float(self.label_accuracy.nanmean())
            if not torch.isnan(self.label_accuracy).all() else math.nan,
            "success_rate_30db": self.success_rate(30.0),
        }


def score_images(x: torch.Tensor, x_hat: torch.Tensor, *, y: torch.Tensor | None = None,
                 y_hat: torch.Tensor | None = None, data_range: float = 1.0,
                 clamp: bool = True) -> ImageScores:
    """Match each trial's reconstructions to its inputs and score them.

    ``x`` and ``x_hat`` have shape ``(T, B, C, H, W)``; ``y`` and ``y_hat`` (optional)
    ``(T, B)``. With ``clamp`` the reconstructions are first clipped to
    ``[0, data_range]`` (what one would display).
    """
    x, x_hat = _pair("x", x, "x_hat", x_hat)
    if x.ndim != 5:
        raise ValueError(f"x must have shape (T, B, C, H, W), got {tuple(x.shape)}")
    if clamp:
        x_hat = x_hat.clamp(0.0, data_range)
    perm = match(x, x_hat)
    idx = perm.reshape(*perm.shape, 1, 1, 1).expand_as(x_hat)
    xm = torch.gather(x_hat, 1, idx)
    if y is not None and y_hat is not None:
        acc = label_accuracy(y, y_hat)
    else:
        acc = torch.full(x.shape[:1], math.nan, device=x.device)
    return ImageScores(mse=mse(x, xm), psnr=psnr(x, xm, data_range=data_range),
                       ssim=ssim(x, xm, data_range=data_range), label_accuracy=acc, perm=perm, x_hat=xm)
