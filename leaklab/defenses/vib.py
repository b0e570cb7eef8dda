"""The variational information bottleneck (Alemi et al., 2017) as a model-side defense.

The last linear layer ``h -> logits`` of a classifier is replaced by a stochastic
bottleneck: an encoder gives ``mu(h)`` and ``sigma(h)`` of a ``size``-dimensional code,
``z = mu + sigma * eps`` with ``eps ~ N(0, I)``, and a decoder maps ``z`` to the
logits. The client trains (and releases the gradient of)
``CE(decoder(z), y) + beta * KL(N(mu, sigma^2) || N(0, I))``. At prediction time the
code is its mean ``mu`` (no sampling). PRECODE (Scheliga et al., 2022) uses such a
bottleneck against gradient inversion with ``size = 256`` and ``beta = 1e-3``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .base import Defense, register_defense
from .gradient import _number

__all__ = ["VIB", "VIBModel"]


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    found = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            found = (name, m)
    if found is None:
        raise ValueError(f"defense 'vib' needs a model whose last layer is nn.Linear; "
                         f"{type(model).__name__} has none")
    return found


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


class VIBModel(nn.Module):
    """A classifier whose last linear layer is a variational bottleneck of ``size`` units.

    ``forward`` samples the code in training mode and uses its mean in eval mode;
    ``objective(x, y)`` is the VIB loss, always with a sample (what a client trains
    on and releases).
    """

    stochastic = True

    def __init__(self, base: nn.Module, *, beta: float, size: int):
        super().__init__()
        path, last = _last_linear(base)
        body = copy.deepcopy(base)
        _replace(body, path, nn.Identity())
        self.body = body
        self.beta = float(beta)
        self.num_classes = last.out_features
        self.encoder = nn.Linear(last.in_features, 2 * size)
        self.decoder = nn.Linear(size, last.out_features)

    def _code(self, x):
        mu, rho = self.encoder(self.body(x)).chunk(2, dim=-1)
        return mu, F.softplus(rho - 5.0) + 1e-6

    def forward(self, x):
        mu, std = self._code(x)
        z = mu + std * torch.randn_like(std) if self.training else mu
        return self.decoder(z)

    def objective(self, x, y):
        mu, std = self._code(x)
        z = mu + std * torch.randn_like(std)
        return F.cross_entropy(self.decoder(z), y) + self.beta * self._kl(mu, std)

    def surrogate_objective(self, x, y):
        """The objective with the code at its mean: a noise-free stand-in an adaptive attacker can match."""
        mu, std = self._code(x)
        return F.cross_entropy(self.decoder(mu), y) + self.beta * self._kl(mu, std)

    @staticmethod
    def _kl(mu, std):
        return 0.5 * (mu.pow(2) + std.pow(2) - 1.0 - 2.0 * std.log()).sum(-1).mean()


@register_defense("vib")
class VIB(Defense):
    """A variational information bottleneck before the last layer: loss CE + beta * KL (model-side).

    :meth:`wrap` turns a classifier into a :class:`VIBModel` (new, seeded bottleneck
    weights); the release is the gradient of its stochastic objective. A static
    attacker treats the bottleneck as a deterministic layer (its mean) and matches
    cross-entropy gradients; an adaptive one uses the VIB objective (with the code at its
    mean when it matches gradients, with its own samples when it simulates releases).
    """

    acts_on = "model"
    keys = {"beta": "weight of the KL term", "size": "units of the stochastic code"}
    adaptive_note = ("matches gradients of the VIB objective (reconstruction: with the code at its mean, a "
                     "noise-free surrogate; games: simulating releases with their own samples)")

    def __init__(self, *, beta: float = 1e-3, size: int = 256):
        self.beta = _number("beta", beta)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1, got {size!r}")
        self.size = size

    def wrap(self, model: nn.Module, *, seed: int | None = 0) -> nn.Module:
        if isinstance(model, VIBModel):
            return model
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            out = VIBModel(model, beta=self.beta, size=self.size)
        dev = next(model.parameters()).device
        return out.to(dev).train(model.training)

    def apply(self, grads, generator):
        return grads
