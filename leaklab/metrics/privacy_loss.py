"""Privacy loss on one scale, from 0 (nothing leaks) to 1 (everything does), for three attacks.

Paper A (see PAPERS.md) measures a defense by the accuracy it leaves and the privacy
it loses to three attacks: reconstruction, tracing and membership inference, and
compares defenses at equal privacy loss. The paper's exact normalisation is not
something we could read in full; what follows is **our reading**, chosen so that the
three numbers share one scale, ``0`` meaning "the adversary does no better than
without the release" and ``1`` "the adversary recovers the secret every time":

reconstruction — :func:`reconstruction_loss`
    The SSIM (Wang et al., 2004) between each private input and its best
    reconstruction, clipped to ``[0, 1]`` and averaged. SSIM rather than PSNR or
    MSE because it is bounded (1 for a perfect copy) without a reference scale,
    invariant to the images' brightness range, close to 0 for an unrelated
    image (noise, a blank, another record), and the measure the reconstruction
    literature reports next to PSNR. Negative SSIM (anti-correlated structure)
    is no more a leak than 0, hence the clipping. PSNR would need an arbitrary
    cap to map into ``[0, 1]``.
membership — :func:`membership_loss`
    The membership advantage ``max_t (TPR(t) - FPR(t))`` (Yeom et al., 2018): the
    adversary's gain over guessing on balanced secrets, already in ``[0, 1]``
    (``2 * accuracy - 1`` at the best threshold).
tracing — :func:`tracing_loss`
    Accuracy over chance among ``n`` clients, ``(acc - 1/n) / (1 - 1/n)``, clipped
    at 0: 0 at chance, 1 when every record is traced to its client. With ``n = 2``
    it is the same ``2 * accuracy - 1`` as membership.

Each function takes the measurements and returns a float in ``[0, 1]``.

>>> round(tracing_loss(0.5, clients=4), 3), membership_loss(0.25), reconstruction_loss([0.9, -0.2])
(0.333, 0.25, 0.45)
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import check_positive_int

__all__ = ["reconstruction_loss", "membership_loss", "tracing_loss", "privacy_loss", "ATTACKS"]

#: The attacks whose privacy loss this module puts on one scale.
ATTACKS = ("reconstruction", "membership", "tracing")


def _finite(name: str, value) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def reconstruction_loss(ssim) -> float:
    """Mean SSIM of the best reconstructions, each clipped to ``[0, 1]`` (one number or many)."""
    if isinstance(ssim, torch.Tensor):
        ssim = ssim.detach().cpu().numpy()
    a = np.asarray(ssim, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("ssim must hold at least one value")
    if not np.all(np.isfinite(a)):
        raise ValueError("ssim contains NaN or inf values")
    if a.max() > 1 + 1e-6 or a.min() < -1 - 1e-6:
        raise ValueError(f"ssim values must lie in [-1, 1], got [{a.min():.3g}, {a.max():.3g}]")
    return float(np.clip(a, 0.0, 1.0).mean())


def membership_loss(advantage) -> float:
    """The membership advantage ``max(TPR - FPR)``, which must lie in ``[0, 1]``."""
    v = _finite("advantage", advantage)
    if not -1e-9 <= v <= 1 + 1e-9:
        raise ValueError(f"advantage must lie in [0, 1] (max of TPR - FPR), got {v}")
    return float(min(max(v, 0.0), 1.0))


def tracing_loss(accuracy, *, clients: int) -> float:
    """Tracing accuracy over chance ``1/clients``, normalised: ``max(0, (acc - 1/n) / (1 - 1/n))``."""
    n = check_positive_int("clients", clients, minimum=2)
    a = _finite("accuracy", accuracy)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"accuracy must lie in [0, 1], got {a}")
    return float(max(0.0, (a - 1 / n) / (1 - 1 / n)))


def privacy_loss(attack: str, numbers: dict, *, clients: int | None = None) -> float:
    """The privacy loss of ``attack`` from a result's numbers (``ssim``, ``advantage`` or ``accuracy``)."""
    if attack == "reconstruction":
        return reconstruction_loss(numbers["ssim"])
    if attack == "membership":
        return membership_loss(numbers["advantage"])
    if attack == "tracing":
        if clients is None:
            raise ValueError("tracing's privacy loss needs clients= (chance is 1/clients)")
        return tracing_loss(numbers["accuracy"], clients=clients)
    raise ValueError(f"attack must be one of {', '.join(ATTACKS)}, got {attack!r}")
