"""Defenses that transform the released gradient: pruning, signSGD, Gaussian noise, DP-SGD.

Every tensor here carries a leading trial dimension ``T`` (and, for DP-SGD, a record
dimension ``B`` after it): one call defends ``T`` independent releases at once.
"""
from __future__ import annotations

import math

import torch

from ..privacy.accounting import ACCOUNTANTS, PrivacyEvent  # ACCOUNTANTS: the accountants DPSGD.epsilon can use
from .base import Defense, randn_like, register_defense

__all__ = ["Prune", "Sign", "GaussianNoise", "DPSGD", "ACCOUNTANTS"]


def _number(name: str, value, *, low: float = 0.0, high: float = math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < low or v > high or (low_open and v == low):
        lo = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {lo}{low:g}, {high:g}], got {value!r}")
    return v


def _norms(grads: dict[str, torch.Tensor], dims: int) -> torch.Tensor:
    """The whole-gradient L2 norm over all parameters, keeping the first ``dims`` dimensions."""
    sq = sum(v.reshape(*v.shape[:dims], -1).pow(2).sum(-1) for v in grads.values())
    return sq.sqrt()


@register_defense("prune")
class Prune(Defense):
    """Gradient pruning: in each parameter tensor, zero the share ``ratio`` of entries smallest in magnitude.

    Acts on the batch gradient. Exactly ``floor(ratio * n)`` entries of a tensor of
    ``n`` entries are zeroed (ties broken by position), the rest released as they
    are (DLG's defense; the form GradAttack and GGL use). An adaptive attack
    matches its dummy gradient on the released support and soft-thresholds the other
    entries, ``sign(g) max(|g| - tau, 0)`` with ``tau`` the smallest magnitude the release
    kept: a pruned entry says its value was small, and the true input still matches exactly.
    """

    acts_on = "batch"
    keys = {"ratio": "share of entries zeroed in each tensor, in [0, 1)"}
    adaptive_note = ("matches the released entries exactly and pushes the pruned ones below the release's "
                     "threshold (soft-thresholding at the smallest magnitude kept)")

    def __init__(self, *, ratio: float = 0.9):
        self.ratio = _number("ratio", ratio, high=0.999999)

    def apply(self, grads, generator):
        out = {}
        for k, g in grads.items():
            flat = g.reshape(g.shape[0], -1)
            n = flat.shape[1]
            drop = int(math.floor(self.ratio * n))
            if drop == 0:
                out[k] = g
                continue
            keep = flat.abs().topk(n - drop, dim=1).indices
            mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, keep, True)
            out[k] = (flat * mask).reshape(g.shape)
        return out

    def simulate(self, grads, released):
        # on the released support the entry itself; elsewhere soft-thresholding at the smallest magnitude
        # the release kept, which is zero for every value pruning would have zeroed (the truth matches exactly)
        out = {}
        for k, v in grads.items():            # no data-dependent branches: this runs under vmap
            r = released[k]
            kept = r != 0
            tau = torch.where(kept, r.abs(), torch.full_like(r, math.inf)).amin()
            tau = torch.where(torch.isfinite(tau), tau, torch.zeros_like(tau))
            shrunk = torch.sign(v) * (v.abs() - tau).clamp_min(0.0)      # zero while |v| <= tau
            out[k] = torch.where(kept, v, shrunk)
        return out


@register_defense("sign")
class Sign(Defense):
    """signSGD: release the sign of every entry of the batch gradient (Bernstein et al., 2018).

    No setting. The sign is not differentiable; an adaptive attack matches a smooth
    sign, ``tanh(g / (tau * mean|g|))`` with ``tau = 0.1``, per tensor.
    """

    acts_on = "batch"
    keys = {}
    adaptive_note = "matches a smooth sign tanh(g / (0.1 mean|g|)) of its dummy gradient"
    tau = 0.1

    def apply(self, grads, generator):
        return {k: torch.sign(v) for k, v in grads.items()}

    def simulate(self, grads, released):
        out = {}
        for k, v in grads.items():
            scale = v.detach().abs().mean().clamp_min(1e-12)
            out[k] = torch.tanh(v / (self.tau * scale))
        return out


@register_defense("noise")
class GaussianNoise(Defense):
    """Gaussian noise added to the batch gradient, without clipping (the defense the DLG paper tried first).

    Give ``std`` (the standard deviation of every entry) or ``rel`` (relative to the
    gradient: every entry gets standard deviation ``rel * |g| / sqrt(P)``, so that
    the noise vector's norm is about ``rel`` times the gradient's, ``|g|`` the whole
    release's norm over its ``P`` entries, per trial). Without clipping no
    privacy guarantee follows.
    """

    acts_on = "batch"
    keys = {"std": "standard deviation of each entry (absolute)",
            "rel": "noise norm relative to the gradient's norm"}
    adaptive_note = "knows the noise level: nothing to invert, it trains on (or matches) noisy releases"

    def __init__(self, *, std: float | None = None, rel: float | None = None):
        if (std is None) == (rel is None):
            raise ValueError("defense 'noise' takes exactly one of std= (absolute) or rel= (relative to |g|)")
        self.std = None if std is None else _number("std", std)
        self.rel = None if rel is None else _number("rel", rel)

    def deterministic(self):
        from .base import NoDefense
        return NoDefense()

    def apply(self, grads, generator):
        if self.std is not None:
            return {k: v + self.std * randn_like(v, generator) for k, v in grads.items()}
        P = sum(v[0].numel() for v in grads.values())
        scale = self.rel * _norms(grads, 1) / math.sqrt(P)                 # (T,)
        return {k: v + scale.reshape(-1, *[1] * (v.ndim - 1)) * randn_like(v, generator)
                for k, v in grads.items()}


@register_defense("dp")
class DPSGD(Defense):
    """DP-SGD's release (Abadi et al., 2016): clip each record's gradient to norm ``clip``, sum,
    add ``N(0, (noise * clip)^2)`` to every entry, divide by the batch size.

    Acts per record: it needs ``(T, B, ...)`` per-record gradients. The clipping factor
    is ``min(1, clip / (|g_i| + 1e-6))`` on each record's whole gradient, as Opacus
    computes it. :meth:`epsilon` gives the privacy spent from an Opacus accountant.
    """

    acts_on = "sample"
    keys = {"clip": "per-record L2 bound C", "noise": "noise multiplier sigma (std sigma*C on the sum)"}
    adaptive_note = ("clips its own simulated (dummy or shadow) per-record gradients the same way and "
                     "trains on noisy releases; the noise itself cannot be removed")

    def __init__(self, *, clip: float = 1.0, noise: float = 1.0):
        self.clip = _number("clip", clip, low=0.0, low_open=True)
        self.noise = _number("noise", noise)

    def deterministic(self):
        return DPSGD(clip=self.clip, noise=0.0)

    def clipped(self, grads: dict[str, torch.Tensor], dims: int) -> dict[str, torch.Tensor]:
        """Each record's gradient scaled to norm at most ``clip`` (records: the first ``dims`` dimensions)."""
        factor = (self.clip / (_norms(grads, dims) + 1e-6)).clamp(max=1.0)
        return {k: v * factor.reshape(*factor.shape, *[1] * (v.ndim - dims)) for k, v in grads.items()}

    def apply(self, grads, generator):
        first = next(iter(grads.values()))
        if first.ndim < 2:
            raise ValueError("defense 'dp' needs per-record gradients (T, B, ...); pass it to "
                             "leaklab.release.release, which computes them")
        B = first.shape[1]
        summed = {k: v.sum(1) for k, v in self.clipped(grads, 2).items()}
        if self.noise > 0:
            summed = {k: v + self.noise * self.clip * randn_like(v, generator) for k, v in summed.items()}
        return {k: v / B for k, v in summed.items()}

    def simulate(self, grads, released):
        return {k: v.mean(0) for k, v in self.clipped(grads, 1).items()}

    def epsilon(self, *, delta: float, sample_rate: float = 1.0, steps: int = 1,
                accountant: str = "rdp") -> float:
        """The epsilon spent after ``steps`` releases at ``sample_rate``, for ``delta``, from Opacus.

        ``sample_rate`` is the Poisson sampling rate of a record. In a game whose target
        is in every observed round it is 1 (no amplification by sampling); batches drawn
        with replacement from a pool are not Poisson sampling either, so 1 is the honest
        value there. ``accountant`` is ``"rdp"`` or ``"prv"`` (Opacus's RDPAccountant or
        PRVAccountant). Infinite without noise. The accounting is :mod:`leaklab.privacy.accounting`'s
        (add/remove neighbours).
        """
        return PrivacyEvent(self.noise, sample_rate, steps).epsilon(delta=delta, accountant=accountant)

    def privacy(self, *, delta: float = 1e-5, sample_rate: float = 1.0, steps: int = 1,
                accountant: str = "rdp") -> dict:
        """``epsilon`` with what it was computed from: a dict for result records and ``--json``.

        ``epsilon`` is for neighbouring datasets that differ by adding or removing one
        record (Opacus's convention: the clipped sum moves by at most ``clip``).
        ``epsilon_replace`` is for datasets that differ in one record's value, as in
        the attribute game: the sum can move by ``2 clip``, which is the noise
        multiplier halved.
        """
        p = PrivacyEvent(self.noise, sample_rate, steps).record(delta=delta, accountant=accountant)
        return {"epsilon": p["epsilon_add_remove"], "epsilon_replace": p["epsilon_replace"], "delta": delta,
                "accountant": accountant,
                "sample_rate": sample_rate, "steps": steps, "noise": self.noise}
