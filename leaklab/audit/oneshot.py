"""One-shot privacy estimation for federated training (Andrew et al. 2023).

Auditing by many trials needs many training runs; Andrew, Kairouz, Oh, Oprea, McMahan and
Suriyakumar ("One-shot Empirical Privacy Estimation for Federated Learning") estimate
epsilon from a *single* run. Random canaries, each a random direction ``c_i`` in
parameter space (isotropic, so that two canaries, or a canary and anything the data
does, are nearly orthogonal in high dimension), are inserted into training; others
are drawn the same way and never inserted. After training, each canary's statistic is
the cosine between its direction and the final model's total change. The cosines of
the canaries never inserted are centred near 0 (spread about ``1/sqrt(d)`` in ``d``
dimensions); those of the inserted canaries are shifted. The privacy of the final
model for one canary is estimated as that of the Gaussian pair the two samples fit.

Here, in leaklab's simulator (:func:`leaklab.federated.train_federated`, FedSGD or FedAvg):

* a canary is a *record-level* gradient canary: it is assigned to one client and, at
  every step the client takes, it joins the client's per-record gradients before
  clipping with probability ``rate`` (by default ``batch_size / shard``, the rate at
  which a real record is drawn; the accountant uses the same rate). The client's
  release goes through the run's own defense (DP-SGD clips the canary like any record
  and adds its noise); the release is then rescaled so that it is still divided by the
  ``batch_size`` real records (the canary is one record more, as under Poisson sampling
  where the divisor is the expected batch size);
* the estimate fits ``mu``-GDP to the cosines (inserted "in", never inserted "out") with
  :func:`~leaklab.audit.gdp_fit` and converts it to epsilon at ``delta``, with the fit's
  interval. (Andrew et al. fit a Gaussian to the inserted canaries' cosines and use the
  ``N(0, 1/d)`` law for the others; our fit compares two samples with one pooled
  variance, a simplification of ours.)

What it assumes, honestly: the estimate is for an adversary who sees only the *final*
model, not each round's releases (the accountant's epsilon is for every release a
client makes, so it is usually far larger: each client's noise also hides the others);
the inserted canaries' cosines are a mixture over how many times each was drawn, so
they are not exactly Gaussian; and the estimate is not a lower bound with a
guarantee, only an estimate with a confidence interval under the Gaussian model. It
costs one run (the canaries perturb the model slightly; their count and norm are small
next to the data's).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._checks import check_positive_int
from ..defenses.base import Defense
from .result import AuditResult

__all__ = ["OneShotEstimate", "one_shot_federated"]


class _CanaryClients(Defense):
    """The run's defense with canaries joining the clients' per-record gradients before it acts.

    Not registered: it exists only inside :func:`one_shot_federated`. Every attribute it
    does not have (``clip``, ``noise``, ``epsilon``, ...) is the wrapped defense's, so the run
    records and accounts the defense it really ran.
    """

    acts_on = "sample"

    def __init__(self, inner: Defense, directions: dict, owner: torch.Tensor, clients: int, norm: float,
                 rate: float, generator: torch.Generator):
        self.inner = inner
        self.name = inner.name
        self.keys = inner.keys
        self.directions = directions                      # name -> (K, *shape), unit norm over all names
        self.norm = norm
        self.rate = rate
        self.gen = generator
        K = owner.numel()
        counts = torch.bincount(owner, minlength=clients)
        self.slots = max(int(counts.max()) if K else 0, 1)
        table = torch.full((clients, self.slots), -1, dtype=torch.long, device=owner.device)
        for j in range(clients):
            mine = torch.nonzero(owner == j).flatten()
            table[j, :mine.numel()] = mine
        self.table = table                                # (clients, slots): canary index or -1
        self.inclusions = torch.zeros(K, dtype=torch.long, device=owner.device)
        self.steps = 0

    def __getattr__(self, item):                          # only called for attributes not found normally
        if item == "inner":
            raise AttributeError(item)
        return getattr(self.inner, item)

    def config(self) -> dict:
        return self.inner.config()

    def epsilon(self, **kwargs):
        return self.inner.epsilon(**kwargs)

    def apply(self, grads, generator):
        first = next(iter(grads.values()))
        T, B = first.shape[0], first.shape[1]
        if T != self.table.shape[0]:
            raise RuntimeError(f"the canary clients expect releases of {self.table.shape[0]} clients at once "
                               f"(engine='batched'), got {T}")
        K = self.inclusions.numel()
        draw = torch.rand(K, generator=self.gen) < self.rate          # (K,) who joins this step
        self.inclusions += draw.long()
        self.steps += 1
        idx = self.table.clamp_min(0)
        on = ((self.table >= 0) & draw[idx]).to(first.dtype).to(first.device)   # (clients, slots)
        rows = {}
        for k, g in grads.items():
            d = self.directions[k].to(g.device, g.dtype)[idx.to(g.device)]         # (clients, slots, ...)
            slot = self.norm * d * on.reshape(*on.shape, *[1] * (d.ndim - 2))
            rows[k] = torch.cat([g, slot], dim=1)                                  # (clients, B + slots, ...)
        scale = (B + self.slots) / B
        if self.inner.acts_on == "sample":
            out = self.inner(rows, generator=generator)
            return {k: v * scale for k, v in out.items()}     # divided by the B real records, not B + slots
        return self.inner({k: v.sum(1) / B for k, v in rows.items()}, generator=generator)


@dataclass
class OneShotEstimate:
    """The outcome of :func:`one_shot_federated`: the epsilon estimate, its interval, and the run it came from."""

    fit: AuditResult
    accountant_epsilon: float | None
    accountant: str | None
    accuracy: float
    canaries: int
    observed: int
    dimension: int
    rate: float
    config: dict
    cos_in: np.ndarray = field(repr=False, default=None)
    cos_out: np.ndarray = field(repr=False, default=None)
    inclusions: np.ndarray = field(repr=False, default=None)

    @property
    def epsilon(self) -> float:
        return self.fit.epsilon_point

    @property
    def epsilon_lower(self) -> float:
        return self.fit.epsilon_lower

    @property
    def epsilon_upper(self) -> float:
        return self.fit.details["epsilon_upper"]

    def to_dict(self) -> dict:
        d = self.fit.details
        return {"epsilon": self.epsilon, "epsilon_lower": self.epsilon_lower, "epsilon_upper": self.epsilon_upper,
                "mu": d["mu"], "mu_lower": d["mu_lower"], "mu_upper": d["mu_upper"], "level": self.fit.level,
                "delta": self.fit.delta, "accountant_epsilon": self.accountant_epsilon, "accountant": self.accountant,
                "accuracy": self.accuracy, "canaries": self.canaries, "observed": self.observed,
                "dimension": self.dimension, "rate": self.rate,
                "mean_inclusions": float(self.inclusions.mean()) if self.inclusions is not None else None,
                "config": self.config}

    def summary(self) -> str:
        d = self.fit.details
        acc = "" if self.accountant_epsilon is None else f"; accountant ({self.accountant}) {self.accountant_epsilon:.3f}"
        return (f"one-shot estimate from {self.observed} inserted and {self.canaries - self.observed} held-out "
                f"canaries (d = {self.dimension}): epsilon {self.epsilon:.3f} [{self.epsilon_lower:.3f}, "
                f"{self.epsilon_upper:.3f}] ({self.fit.level:.0%}, delta {self.fit.delta:g}; mu {d['mu']:.3f})"
                f"{acc}; test accuracy {self.accuracy:.3f}")


def one_shot_federated(model: nn.Module, data, *, canaries: int = 200, observed: float = 0.5,
                       canary_norm: float | None = None, rate: float | None = None, test=None, clients: int = 8,
                       rounds: int = 20, protocol: str = "fedsgd", batch_size: int = 16, local_steps: int = 1,
                       lr: float = 0.1, defense="dp:clip=1,noise=1", delta: float = 1e-5, level: float = 0.95,
                       accountant: str = "rdp", seed: int = 0, device=None,
                       progress: bool = False) -> OneShotEstimate:
    """Train ``model`` once with :func:`~leaklab.federated.train_federated` and random canaries; estimate epsilon.

    ``canaries`` random directions are drawn; the share ``observed`` of them is
    inserted (each assigned to a random client, joining each of its steps with
    probability ``rate``, default ``batch_size / shard``), the rest are held out.
    ``canary_norm`` defaults to the defense's clip norm (1 without one). The other
    arguments go to ``train_federated`` (the model is trained in place). The estimate
    is for the final model (see the module's notes); ``accountant_epsilon`` is the
    run's own (``FederatedRun.epsilon``) for comparison.
    """
    from ..data import Dataset
    from ..defenses import as_defense
    from ..federated import train_federated
    from ..release import shared_names
    from .gdp import gdp_fit

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a leaklab Dataset, got {type(data).__name__}")
    canaries = check_positive_int("canaries", canaries, minimum=8)
    if isinstance(observed, bool) or not isinstance(observed, (int, float)) or not 0 < observed < 1:
        raise ValueError(f"observed must be a share in (0, 1), got {observed!r}")
    n_in = int(round(observed * canaries))
    if n_in < 4 or canaries - n_in < 4:
        raise ValueError(f"observed={observed} of {canaries} canaries leaves fewer than 4 inserted or held out")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    clients = check_positive_int("clients", clients)
    batch_size = check_positive_int("batch_size", batch_size)
    inner = as_defense(defense)
    if inner.acts_on not in ("sample", "batch"):
        raise ValueError(f"canaries join the gradients; defense {inner.name!r} acts on the model")
    shard = len(data) // clients
    if rate is None:
        rate = batch_size / max(shard, 1)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        raise ValueError(f"rate must lie in (0, 1], got {rate!r}")
    if canary_norm is None:
        canary_norm = float(getattr(inner, "clip", 1.0))
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    names = shared_names(model)
    shapes = {k: v.shape for k, v in model.named_parameters() if k in names}
    sizes = [math.prod(s) for s in shapes.values()]
    P = sum(sizes)
    dirs = torch.randn(canaries, P, generator=gen)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)                       # (K, P) unit directions
    parts = torch.split(dirs[:n_in], sizes, dim=1)
    directions = {k: p.reshape(n_in, *shapes[k]) for k, p in zip(shapes, parts)}
    owner = torch.randint(clients, (n_in,), generator=gen)
    wrapped = _CanaryClients(inner, directions, owner, clients, float(canary_norm), float(rate), gen)
    before = torch.cat([dict(model.named_parameters())[k].detach().reshape(-1).cpu() for k in names])
    run = train_federated(model, data, test=test, clients=clients, rounds=rounds, protocol=protocol,
                          batch_size=batch_size, local_steps=local_steps, lr=lr, defense=wrapped,
                          engine="batched", delta=delta, accountant=accountant, seed=seed, device=device,
                          progress=progress)
    after = torch.cat([run.params[k].reshape(-1).double() for k in names])
    change = before.double() - after                                   # minus the summed steps: along +canary
    if float(change.norm()) == 0.0:
        raise ValueError("the model did not move: no cosine can be measured")
    cos = (dirs.double() @ change) / change.norm()
    cos_in, cos_out = cos[:n_in].cpu().numpy(), cos[n_in:].cpu().numpy()
    fit = gdp_fit(cos_in, cos_out, delta=delta, level=level)
    return OneShotEstimate(fit=fit, accountant_epsilon=run.epsilon, accountant=run.accountant, accuracy=run.accuracy,
                           canaries=canaries, observed=n_in, dimension=P, rate=float(rate),
                           config={**run.config, "canary_norm": float(canary_norm)}, cos_in=cos_in,
                           cos_out=cos_out, inclusions=wrapped.inclusions.cpu().numpy())
