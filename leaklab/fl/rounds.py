"""A federated round: clients release (FedSGD gradients or FedAvg updates), the server aggregates.

* FedSGD: a client releases the gradient of its loss on one batch.
* FedAvg: a client takes ``local_steps`` SGD steps from ``theta`` and releases its
  update ``delta = theta_local - theta`` (:func:`leaklab.fl.local.fedavg_update`).
* Aggregation: the server averages the releases (weighted by the clients' sizes).
  Under secure aggregation it sees only their sum.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._checks import check_choice, check_positive_int, check_tensor
from ..data import Dataset
from .gradients import Params, _finite, loss_gradient
from .local import fedavg_update

__all__ = ["aggregate", "secure_sum", "Client", "RoundView", "federated_round"]


def _check_releases(releases) -> None:
    if not isinstance(releases, Sequence) or not releases:
        raise ValueError("releases must hold at least one client release (a dict of tensors)")
    keys = None
    for i, r in enumerate(releases):
        if not isinstance(r, Mapping):
            raise TypeError(f"releases[{i}] must be a dict of tensors, got {type(r).__name__}")
        if keys is None:
            keys = set(r)
        elif set(r) != keys:
            raise ValueError(f"releases[{i}] holds parameters {sorted(r)}, releases[0] {sorted(keys)}")
        for k, v in r.items():
            check_tensor(f"releases[{i}][{k!r}]", v)


def aggregate(releases: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | None = None) -> Params:
    """The weighted mean of client releases (FedAvg's server step)."""
    _check_releases(releases)
    try:
        w = torch.ones(len(releases)) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"weights must be a sequence of {len(releases)} numbers, got {weights!r}") from None
    if w.shape != (len(releases),) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(releases)} finite non-negative numbers with a positive sum, "
                         f"got {weights!r}")
    w = w / w.sum()
    return {k: sum(float(wi) * r[k] for wi, r in zip(w, releases)) for k in releases[0]}


def secure_sum(releases: Sequence[Mapping[str, torch.Tensor]]) -> Params:
    """What the server learns under secure aggregation: the sum of the releases, nothing else."""
    _check_releases(releases)
    return {k: sum(r[k] for r in releases) for k in releases[0]}


@dataclass
class Client:
    """A federated client holding private ``data``."""

    id: int
    data: Dataset

    def draw_batch(self, batch_size: int, generator: torch.Generator | None = None) -> Dataset:
        check_positive_int("batch_size", batch_size)
        return self.data.sample(min(batch_size, len(self.data)), generator=generator)

    def fedsgd(self, model: nn.Module, batch_size: int, *, generator=None, defense=None) -> tuple[Params, Dataset]:
        """Release the (defended) gradient of one random batch; returns ``(gradient, batch)``."""
        batch = self.draw_batch(batch_size, generator)
        dev = next(model.parameters()).device
        return loss_gradient(model, batch.x.to(dev), batch.y.to(dev), defense=defense, generator=generator), batch

    def fedavg(self, model: nn.Module, *, local_steps: int, lr: float, local_batch_size: int | None = None,
               generator=None, defense=None) -> tuple[Params, Dataset]:
        """Release the update after ``local_steps`` local SGD steps (each defended) on all of this client's data."""
        dev = next(model.parameters()).device
        perm = torch.randperm(len(self.data), generator=generator)
        data = self.data.subset(perm)
        upd = fedavg_update(model, data.x.to(dev), data.y.to(dev), local_steps=local_steps, lr=lr,
                            local_batch_size=local_batch_size, defense=defense, generator=generator)
        return upd, data


@dataclass
class RoundView:
    """What the server sees in one round, and the model update it applies.

    ``releases`` maps each client id to its release; it is empty under secure
    aggregation, where only ``total`` (the sum of the releases) is visible.
    """

    protocol: str
    secure: bool
    releases: dict[int, Params]
    total: Params
    aggregate: Params
    batches: dict[int, Dataset] = field(default_factory=dict, repr=False)  # ground truth, not seen


def federated_round(model: nn.Module, clients: Sequence[Client], *, protocol: str = "fedsgd",
                    batch_size: int = 8, local_steps: int = 1, lr: float = 0.1,
                    secure_aggregation: bool = False, seed: int = 0, apply: bool = False,
                    defense=None) -> RoundView:
    """Simulate one round: every client releases (through ``defense``), the server aggregates.

    With ``apply=True`` the server's step is applied to ``model`` (FedSGD: a step of
    size ``lr`` along the mean gradient; FedAvg: adding the mean update).
    """
    check_choice("protocol", protocol, ("fedsgd", "fedavg"))
    lr = _finite("lr", lr)
    if not clients:
        raise ValueError("clients must hold at least one Client")
    gen = torch.Generator().manual_seed(seed)
    releases, batches, sizes = {}, {}, []
    for c in clients:
        if protocol == "fedsgd":
            rel, batch = c.fedsgd(model, batch_size, generator=gen, defense=defense)
        else:
            rel, batch = c.fedavg(model, local_steps=local_steps, lr=lr, generator=gen, defense=defense)
        releases[c.id], batches[c.id] = rel, batch
        sizes.append(len(batch))
    total = secure_sum(list(releases.values()))
    agg = aggregate(list(releases.values()), sizes)
    if apply:
        with torch.no_grad():
            sign = -lr if protocol == "fedsgd" else 1.0
            for k, p in model.named_parameters():
                if k in agg:                     # a secret parameter is never aggregated
                    p.add_(sign * agg[k])
    return RoundView(protocol, secure_aggregation, {} if secure_aggregation else releases,
                     total, agg, batches)
