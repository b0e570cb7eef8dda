"""Privacy loss on one scale, from 0 (nothing leaks) to 1 (everything does), for three attacks.

Paper A (see PAPERS.md) measures a defense by the accuracy it leaves and the privacy
it loses to three attacks: reconstruction, tracing and membership inference, and
compares defenses at equal privacy loss. The paper's exact normalisation is not
something we could read in full; what follows is **our reading**, chosen so that the
three numbers share one scale, ``0`` meaning "the adversary does no better than
without the release" and ``1`` "the adversary recovers the secret every time".

A common scale needs a common zero: each statistic below has expectation 0 (before
it is clipped at 0) when the release carries nothing about the secret, so that a
release drowned in noise scores near 0 for every attack, not at an attack-specific
floor. Each comes with its **null interval** (:func:`membership_null`,
:func:`tracing_null`, :func:`reconstruction_null`): where the loss falls when the
release is independent of the secret, at the same number of trials. A loss inside
it is not evidence of a leak.

reconstruction — :func:`reconstruction_loss`
    Built on the SSIM (Wang et al., 2004) between each private input and its best
    reconstruction, clipped to ``[0, 1]``. SSIM rather than PSNR or MSE because it
    is bounded (1 for a perfect copy) without a reference scale and invariant to
    the images' brightness range; negative SSIM (anti-correlated structure) is no
    more a leak than 0, hence the clipping. But two unrelated records of one
    dataset share structure (a dark background, a centred stroke), so a
    reconstruction that knows nothing of its target still scores an SSIM of 0.1 or
    more against it. The floor is measured, not assumed: the same reconstructions
    are scored against ``K`` *decoys*, other records of the dataset drawn at
    random, and the loss is ``(s - s0) / (1 - s0)``, ``s`` the mean SSIM against the
    targets and ``s0`` against the decoys (each trial's best reconstruction chosen
    in the same way for both). 1 for exact copies; 0 when a reconstruction
    resembles its target no more than any record.
membership — :func:`membership_loss`
    The membership advantage ``TPR - FPR`` (Yeom et al., 2018), at a threshold
    chosen on *held-out* trials: the trials are split in two halves, the threshold
    maximising ``TPR - FPR`` on one half is applied to the other, and the two
    held-out advantages are averaged (as :func:`leaklab.audit.empirical_epsilon`
    chooses its threshold on a split it does not count). The maximum over
    thresholds on the trials themselves is biased upwards: on scores that carry
    nothing it is about 0.1 at 256 trials.
tracing — :func:`tracing_loss`
    Accuracy over chance among ``n`` clients, ``(acc - 1/n) / (1 - 1/n)``, clipped
    at 0: 0 at chance, 1 when every record is traced to its client. The guess
    (the client with the highest score) is not fitted on the trials, so its
    accuracy is unbiased; under the null it is binomial, ``Bin(T, 1/n) / T``.

Each loss function returns a float in ``[0, 1]``; each null function the
``(low, high)`` ``level`` interval of that same float under the null.

>>> round(tracing_loss(0.5, clients=4), 3), round(reconstruction_loss([0.9, -0.2]), 3)
(0.333, 0.45)
>>> round(reconstruction_loss([1.0, 1.0], decoys=[[0.2, 0.2], [0.2, 0.2]]), 3)
1.0
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import check_positive_int

__all__ = ["reconstruction_loss", "membership_loss", "tracing_loss", "privacy_loss", "heldout_advantage",
           "membership_null", "tracing_null", "reconstruction_null", "ATTACKS"]

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


def _array(name: str, value, ndim: tuple[int, ...]) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}") from None
    if a.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must hold at least one value")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf values")
    return a


def _level(level) -> float:
    v = _finite("level", level)
    if not 0 < v < 1:
        raise ValueError(f"level must lie in (0, 1), got {v}")
    return v


def _ssims(name: str, value, ndim) -> np.ndarray:
    a = _array(name, value, ndim)
    if a.max() > 1 + 1e-6 or a.min() < -1 - 1e-6:
        raise ValueError(f"{name} values must lie in [-1, 1], got [{a.min():.3g}, {a.max():.3g}]")
    return np.clip(a, 0.0, 1.0)


def _floored(s: float, s0: float) -> float:
    return 0.0 if s0 >= 1.0 else float(min(max((s - s0) / (1.0 - s0), 0.0), 1.0))


def reconstruction_loss(ssim, decoys=None) -> float:
    """The reconstructions' SSIM above the floor of unrelated records, on ``[0, 1]``.

    ``ssim`` ``(T,)``: each trial's best reconstruction against its private input;
    ``decoys`` ``(T, K)``: the same reconstructions against ``K`` other records of the
    dataset (each trial's best taken the same way). Every SSIM is clipped to
    ``[0, 1]``; the loss is ``(mean(ssim) - mean(decoys)) / (1 - mean(decoys))``,
    clipped to ``[0, 1]``. Without ``decoys`` the floor is taken as 0 (the clipped
    mean SSIM).
    """
    s = _ssims("ssim", ssim, (0, 1)).reshape(-1)
    if decoys is None:
        return float(s.mean())
    d = _ssims("decoys", decoys, (2,))
    if d.shape[0] != len(s):
        raise ValueError(f"decoys must have shape (T, K) with T = {len(s)} trials as ssim, got {d.shape}")
    return _floored(float(s.mean()), float(d.mean()))


def reconstruction_null(ssim, decoys, *, level: float = 0.95, permutations: int = 1000,
                        seed: int = 0) -> tuple[float, float]:
    """The ``level`` interval of :func:`reconstruction_loss` when the reconstructions know nothing of their targets.

    Then a trial's target is exchangeable with its ``K`` decoys (all are records of
    the dataset, drawn alike): each permutation names one of the ``K + 1`` records of
    every trial, at random, the target, the others decoys.
    """
    s = _ssims("ssim", ssim, (0, 1)).reshape(-1)
    d = _ssims("decoys", decoys, (2,))
    if d.shape[0] != len(s):
        raise ValueError(f"decoys must have shape (T, K) with T = {len(s)} trials as ssim, got {d.shape}")
    level = _level(level)
    permutations = check_positive_int("permutations", permutations)
    allv = np.concatenate([s[:, None], d], 1)                       # (T, K + 1)
    T, K1 = allv.shape
    rng = np.random.default_rng(seed)
    pick = rng.integers(K1, size=(permutations, T))
    tot = allv.sum(1)
    chosen = allv[np.arange(T), pick]                               # (P, T)
    s_mean = chosen.mean(1)
    d_mean = ((tot - chosen) / (K1 - 1)).mean(1)
    vals = np.array([_floored(a, b) for a, b in zip(s_mean, d_mean)])
    return _quantiles(vals, level)


def _quantiles(vals: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _secret_scores(secret, scores) -> tuple[np.ndarray, np.ndarray]:
    y = _array("secret", secret, (1,))
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("secret must hold 0 (non-member) and 1 (member) only")
    sc = _array("scores", scores, (1,))
    if sc.shape != y.shape:
        raise ValueError(f"scores must have one value per trial ({y.shape[0]}), got shape {sc.shape}")
    if min(int(y.sum()), int((1 - y).sum())) < 2:
        raise ValueError("the held-out advantage needs at least 2 member and 2 non-member trials, got "
                         f"{int(y.sum())} and {int((1 - y).sum())}")
    return y.astype(bool), sc


def _best_threshold(member: np.ndarray, scores: np.ndarray) -> float:
    """The threshold (guess "member" above it) maximising TPR - FPR on these trials."""
    u = np.unique(scores)
    cuts = np.concatenate([[-np.inf], (u[:-1] + u[1:]) / 2, [np.inf]])
    tpr = (scores[member][None, :] > cuts[:, None]).mean(1)
    fpr = (scores[~member][None, :] > cuts[:, None]).mean(1)
    return float(cuts[int(np.argmax(tpr - fpr))])


def _advantage_at(member: np.ndarray, scores: np.ndarray, t: float) -> float:
    return float((scores[member] > t).mean() - (scores[~member] > t).mean())


def _heldout(member: np.ndarray, scores: np.ndarray, rng: np.random.Generator) -> float:
    halves = [np.zeros(len(member), dtype=bool), np.zeros(len(member), dtype=bool)]
    for cls in (True, False):                                          # split each class in two halves
        idx = rng.permutation(np.flatnonzero(member == cls))
        halves[0][idx[: len(idx) // 2]] = True
        halves[1][idx[len(idx) // 2:]] = True
    out = []
    for fit, ev in ((halves[0], halves[1]), (halves[1], halves[0])):
        t = _best_threshold(member[fit], scores[fit])
        out.append(_advantage_at(member[ev], scores[ev], t))
    return float(np.mean(out))


def heldout_advantage(secret, scores, *, seed: int = 0) -> float:
    """``TPR - FPR`` at thresholds chosen on held-out trials (unclipped: negative when the threshold misleads).

    The trials are split, each class in two halves at random (``seed``); the threshold
    that maximises ``TPR - FPR`` on one half is applied to the other, and the two
    advantages are averaged. Larger scores mean "member". Its expectation is 0 when
    the scores are independent of ``secret``.
    """
    member, sc = _secret_scores(secret, scores)
    return _heldout(member, sc, np.random.default_rng(seed))


def membership_loss(secret, scores, *, seed: int = 0) -> float:
    """The membership advantage at a held-out threshold (:func:`heldout_advantage`), clipped to ``[0, 1]``.

    ``secret`` ``(T,)``: 1 where the target was used; ``scores`` ``(T,)``: the
    adversary's evidence, larger meaning "member".
    """
    return float(min(max(heldout_advantage(secret, scores, seed=seed), 0.0), 1.0))


def membership_null(secret, scores, *, level: float = 0.95, permutations: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """The ``level`` interval of :func:`membership_loss` when the scores carry nothing about the secret.

    Each permutation shuffles the secrets against the scores (and draws its own
    split), which is the null distribution exactly when the scores are independent
    of the secret.
    """
    member, sc = _secret_scores(secret, scores)
    level = _level(level)
    permutations = check_positive_int("permutations", permutations)
    rng = np.random.default_rng(seed)
    vals = np.array([min(max(_heldout(rng.permutation(member), sc, rng), 0.0), 1.0) for _ in range(permutations)])
    return _quantiles(vals, level)


def tracing_loss(accuracy, *, clients: int) -> float:
    """Tracing accuracy over chance ``1/clients``, normalised: ``max(0, (acc - 1/n) / (1 - 1/n))``."""
    n = check_positive_int("clients", clients, minimum=2)
    a = _finite("accuracy", accuracy)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"accuracy must lie in [0, 1], got {a}")
    return float(max(0.0, (a - 1 / n) / (1 - 1 / n)))


def tracing_null(trials: int, *, clients: int, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` interval of :func:`tracing_loss` at chance: ``T`` trials, accuracy ``Bin(T, 1/n) / T``.

    Exact whatever the adversary's guesses, as long as they are independent of
    which client holds the target (drawn uniformly).
    """
    from scipy import stats

    T = check_positive_int("trials", trials)
    n = check_positive_int("clients", clients, minimum=2)
    level = _level(level)
    lo, hi = stats.binom.ppf([(1 - level) / 2, (1 + level) / 2], T, 1 / n)
    return tracing_loss(lo / T, clients=n), tracing_loss(hi / T, clients=n)


def privacy_loss(attack: str, numbers: dict, *, clients: int | None = None, seed: int = 0) -> float:
    """The privacy loss of ``attack`` from its measurements.

    ``numbers`` holds ``ssim`` (and ``decoys``) for reconstruction, ``secret`` and
    ``scores`` for membership, ``accuracy`` for tracing (with ``clients=``).
    """
    if attack == "reconstruction":
        return reconstruction_loss(numbers["ssim"], numbers.get("decoys"))
    if attack == "membership":
        if "secret" not in numbers or "scores" not in numbers:
            raise ValueError("membership's privacy loss needs the trials' secret and scores (the advantage "
                             "maximised on the same trials is biased upwards)")
        return membership_loss(numbers["secret"], numbers["scores"], seed=seed)
    if attack == "tracing":
        if clients is None:
            raise ValueError("tracing's privacy loss needs clients= (chance is 1/clients)")
        return tracing_loss(numbers["accuracy"], clients=clients)
    raise ValueError(f"attack must be one of {', '.join(ATTACKS)}, got {attack!r}")
