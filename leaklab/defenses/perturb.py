"""Adversarial perturbation of the release (our reconstruction of the defense paper B evaluates).

In the spirit of AttriGuard (Jia & Gong, 2018) and MemGuard (Jia et al., 2019): the
defender trains a *surrogate* inference classifier on its own data (releases it
simulates itself, labelled with the secret), then perturbs every release within a
budget, ``|delta| <= budget * |g|``, by a few steps of projected gradient descent that
push the surrogate's posterior towards uniform (its decision boundary), so that the
surrogate can no longer tell the secret; as MemGuard does, the target is uncertainty
rather than a flipped guess, which a static attacker could simply read in reverse.
Neither paper B's surrogate nor its budget is public: this form is ours.

Without a fitted surrogate the perturbation is a random direction of norm
``budget * |g|``: then the defense is the noise defense at a relative level. That is
what it does against reconstruction, where there is no secret to classify, and in the
membership and tracing games, whose secret is not a property of the batch that a
classifier of the gradient alone could learn: the adversary's guess there depends on
the candidate record it holds, which the defender does not know.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Defense, randn_like, register_defense
from .gradient import _number

__all__ = ["Perturb"]


def _flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(v.shape[0], -1) for v in grads.values()], 1)


def _unflat(flat: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for k, v in like.items():
        n = v[0].numel()
        out[k] = flat[:, i:i + n].reshape(v.shape)
        i += n
    return out


@register_defense("perturb")
class Perturb(Defense):
    """Adversarial perturbation: fool a surrogate inference classifier within ``budget * |g|`` (PGD).

    Acts on the batch gradient. :meth:`fit` (or, inside a game, :meth:`prepare`, which
    simulates the game on the defender's own records) trains the surrogate: a
    logistic regression on a fixed random projection of the flattened gradient to
    ``features`` dimensions. :meth:`apply` then takes ``steps`` normalised gradient
    steps of size ``2.5 * budget * |g| / steps`` that decrease the cross-entropy between
    the surrogate's posterior and the uniform distribution, each followed by a projection
    onto the budget's ball; a step that does not lower the loss is undone and halved.

    The projection is fixed by :meth:`fit`'s ``seed`` (0 in :meth:`prepare`): part of the
    published defense, as its settings are. What the surrogate learns from the defender's
    records (``surrogate_``) is the defender's own: an adversary holds
    :meth:`~leaklab.defenses.Defense.public`'s copy without it and, when adaptive, fits its
    own surrogate on its auxiliary records.
    """

    acts_on = "batch"
    keys = {"budget": "perturbation norm relative to the release's norm",
            "steps": "projected-gradient steps", "features": "surrogate's random-projection size"}
    adaptive_note = ("simulates the same perturbation (it knows M, surrogate included) on its own "
                     "releases and trains on them")

    def __init__(self, *, budget: float = 0.5, steps: int = 10, features: int = 256):
        self.budget = _number("budget", budget)
        for name, v in (("steps", steps), ("features", features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.steps, self.features = steps, features
        self.surrogate_ = None

    # -- the surrogate -------------------------------------------------------------------------
    def fit(self, releases: dict[str, torch.Tensor], secrets: torch.Tensor, *, seed: int = 0,
            iters: int = 200) -> Perturb:
        """Train the surrogate on ``releases`` (``(N, ...)`` per parameter) labelled with ``secrets`` ``(N,)``."""
        f = _flat(releases).double()
        N, P = f.shape
        if secrets.shape != (N,):
            raise ValueError(f"secrets must have shape ({N},), got {tuple(secrets.shape)}")
        g = torch.Generator().manual_seed(seed)
        R = (torch.randn(P, min(self.features, P), generator=g, dtype=torch.float64) / math.sqrt(self.features)
             if P > self.features else torch.eye(P, dtype=torch.float64)).to(f.device)
        z = f @ R
        mu, sd = z.mean(0), z.std(0).clamp_min(1e-12)
        z = (z - mu) / sd
        K = int(secrets.max()) + 1 if secrets.numel() else 2
        K = max(K, 2)
        W = torch.zeros(z.shape[1], K, dtype=torch.float64, device=f.device, requires_grad=True)
        b = torch.zeros(K, dtype=torch.float64, device=f.device, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], max_iter=iters, line_search_fn="strong_wolfe")
        y = secrets.to(f.device).long()

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(z @ W + b, y) + 1e-3 * W.pow(2).sum()
            loss.backward()
            return loss
        opt.step(closure)
        self.surrogate_ = {"R": R, "mu": mu, "sd": sd, "W": W.detach(), "b": b.detach()}
        return self

    def surrogate_logits(self, flat: torch.Tensor) -> torch.Tensor:
        s = self.surrogate_
        return ((flat.double() @ s["R"] - s["mu"]) / s["sd"]) @ s["W"] + s["b"]

    def prepare(self, *, model, game, data, batch_size: int, params, generator: torch.Generator,
                trials: int = 400) -> None:
        """Fit the surrogate by simulating ``trials`` rounds of ``game`` on the defender's own ``data`` at ``params``."""
        from ..release import release

        tr = game.draw_trials(data, trials, generator)
        idx = game.draw_batches(data, tr, batch_size, generator)
        dev = next(iter(params.values())).device
        x, y = data.x.to(dev), data.y.to(dev)
        g = release(model, x[idx.to(dev)], y[idx.to(dev)], params=params, generator=generator)
        self.fit(g, tr.secret)         # the fixed projection of the published defense (seed 0)

    # -- the defense ---------------------------------------------------------------------------
    def apply(self, grads, generator):
        if self.budget == 0:
            return grads
        flat = _flat(grads)
        eps = self.budget * flat.norm(dim=1, keepdim=True)                  # (T, 1)
        if self.surrogate_ is None:
            d = randn_like(flat, generator)
            return _unflat(flat + eps * d / d.norm(dim=1, keepdim=True).clamp_min(1e-30), grads)
        def uncertainty_loss(d):           # (T,): cross-entropy to the uniform posterior
            return -F.log_softmax(self.surrogate_logits(flat.double() + d), 1).mean(1)

        with torch.enable_grad():
            delta = torch.zeros_like(flat, dtype=torch.float64)
            loss = uncertainty_loss(delta)
            step = 2.5 * eps.double() / self.steps                        # (T, 1), halved on failure
            for _ in range(self.steps):
                d = delta.clone().requires_grad_(True)
                (gd,) = torch.autograd.grad(uncertainty_loss(d).sum(), d)
                with torch.no_grad():
                    cand = delta - step * gd / gd.norm(dim=1, keepdim=True).clamp_min(1e-30)
                    cand *= (eps.double() / cand.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)
                    cur = uncertainty_loss(cand)
                    ok = cur < loss
                    delta[ok], loss[ok] = cand[ok], cur[ok]
                    step[~ok] *= 0.5
        best = delta
        return _unflat(flat + best.to(flat.dtype), grads)
