"""Federated simulation: what a client releases and what the server sees.

* FedSGD: a client releases the gradient of its loss on one batch,
  ``g = (1/B) sum_i grad_theta L(f_theta(x_i), y_i)``.
* FedAvg: a client takes ``local_steps`` SGD steps from ``theta`` and releases its
  update ``delta = theta_local - theta``.
* Aggregation: the server averages the releases (weighted by the clients' sizes).
  Under secure aggregation it sees only their sum.

Gradients are computed functionally (``torch.func``) so that many independent
trials run as one batched computation: :func:`batch_gradients` takes inputs of
shape ``(T, B, ...)`` and returns, for each parameter, a tensor ``(T, ...)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ._checks import check_choice, check_positive_int, check_tensor
from .data import Dataset
from .release import check_batch, is_stochastic, objective_of, release, release_one, seeded, shared_names

__all__ = [
    "Params", "parameters_of", "loss_gradient", "per_sample_gradients", "batch_gradients",
    "flatten", "unflatten_like", "fedavg_update", "aggregate", "secure_sum", "Client",
    "RoundView", "federated_round", "train", "accuracy", "epoch_batches",
]

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def parameters_of(model: nn.Module) -> Params:
    """A detached copy of the model's parameters, by name."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _check_batch(model: nn.Module, x, y, *, batch_dims: int) -> None:
    from .release import _num_classes

    check_batch(x, y, batch_dims=batch_dims, num_classes=_num_classes(model))


def _finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _loss(model: nn.Module, loss_fn: LossFn | None):
    """``loss(params, x, y)``: ``loss_fn`` on the model's logits, or the model's own objective."""
    if loss_fn is None:
        return objective_of(model)

    def loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, params, (x,)), y)

    return loss


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, params: Params | None = None,
                  loss_fn: LossFn | None = None, defense=None, generator: torch.Generator | None = None) -> Params:
    """The FedSGD release: gradient of the mean loss over the batch ``x`` (B, ...), ``y`` (B,).

    Goes through the release path (:func:`leaklab.release.release`): the model's own
    objective, the ``defense`` (seeded by ``generator``), the shared parameters only.
    ``loss_fn(logits, y)`` replaces the objective (no defense then).
    """
    _check_batch(model, x, y, batch_dims=1)
    params = parameters_of(model) if params is None else params
    if loss_fn is not None:
        if defense is not None:
            raise ValueError("give loss_fn or defense, not both: a defense acts on the model's own objective")
        return grad(_loss(model, loss_fn))(params, x, y)
    return release_one(model, x, y, params=params, defense=defense, generator=generator)


def per_sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                         params: Params | None = None, loss_fn: LossFn | None = None) -> Params:
    """One gradient per record: for each parameter a tensor ``(B, *param.shape)``."""
    _check_batch(model, x, y, batch_dims=1)
    params = parameters_of(model) if params is None else params
    loss = _loss(model, loss_fn)

    def one(p, xi, yi):
        return grad(loss)(p, xi.unsqueeze(0), yi.unsqueeze(0))

    randomness = "different" if is_stochastic(model) else "error"
    return vmap(one, in_dims=(None, 0, 0), randomness=randomness)(params, x, y)


def batch_gradients(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, *,
                    params: Params | None = None, params_batched: bool = False,
                    loss_fn: LossFn | None = None, chunk_size: int | None = None, defense=None,
                    generator: torch.Generator | None = None) -> Params:
    """FedSGD releases of ``T`` independent trials at once.

    ``xs`` has shape ``(T, B, ...)`` and ``ys`` ``(T, B)``; the result maps each
    shared parameter name to a ``(T, *param.shape)`` tensor of mean-loss gradients,
    through ``defense`` when one is given (see :func:`leaklab.release.release`). With
    ``params_batched=True``, ``params`` carries a leading trial dimension too (one
    model initialisation per trial).
    """
    _check_batch(model, xs, ys, batch_dims=2)
    if loss_fn is not None:
        if defense is not None:
            raise ValueError("give loss_fn or defense, not both: a defense acts on the model's own objective")
        params = parameters_of(model) if params is None else params
        return vmap(grad(_loss(model, loss_fn)), in_dims=(0 if params_batched else None, 0, 0),
                    chunk_size=chunk_size)(params, xs, ys)
    return release(model, xs, ys, params=params, params_batched=params_batched, defense=defense,
                   generator=generator, chunk=chunk_size, check=False)


def flatten(grads: Mapping[str, torch.Tensor], *, batch_dims: int = 0) -> torch.Tensor:
    """Concatenate a gradient dict into one vector (keeping ``batch_dims`` leading dims)."""
    parts = [g.reshape(*g.shape[:batch_dims], -1) for g in grads.values()]
    return torch.cat(parts, dim=-1)


def unflatten_like(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Params:
    """Split a flat vector back into tensors shaped as ``like``."""
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vector[..., i:i + v.numel()].reshape(*vector.shape[:-1], *v.shape)
        i += v.numel()
    if i != vector.shape[-1]:
        raise ValueError(f"vector has {vector.shape[-1]} entries, the parameters {i}")
    return out


def fedavg_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, local_steps: int = 1,
                  lr: float = 0.1, local_batch_size: int | None = None, params: Params | None = None,
                  loss_fn: LossFn | None = None, defense=None, generator: torch.Generator | None = None) -> Params:
    """The FedAvg release: ``theta_local - theta`` after ``local_steps`` SGD steps on ``x, y``.

    The client's data are split into consecutive mini-batches of ``local_batch_size``
    (all of them at once when ``None``) and cycled through. Functional, so it can be
    vmapped over trials. With a ``defense``, every local step uses the defended
    gradient (local DP-SGD for ``dp``), drawn from ``generator``; a model's secret
    parameters are trained with their own gradient and never released.
    """
    _check_batch(model, x, y, batch_dims=1)
    check_positive_int("local_steps", local_steps)
    lr = _finite("lr", lr)
    params = parameters_of(model) if params is None else params
    n = x.shape[0]
    bs = n if local_batch_size is None else check_positive_int("local_batch_size", local_batch_size)
    starts = list(range(0, n, bs))
    cur = dict(params)
    if loss_fn is not None and defense is not None:
        raise ValueError("give loss_fn or defense, not both: a defense acts on the model's own objective")
    g = grad(_loss(model, loss_fn))
    secret = [k for k in cur if k not in set(shared_names(model))]
    for step in range(local_steps):
        s = starts[step % len(starts)]
        if defense is None:
            grads = g(cur, x[s:s + bs], y[s:s + bs])
        else:
            grads = release_one(model, x[s:s + bs], y[s:s + bs], params=cur, defense=defense, generator=generator)
            if secret:
                full = g(cur, x[s:s + bs], y[s:s + bs])
                grads.update({k: full[k] for k in secret})
        cur = {k: cur[k] - lr * grads[k] for k in cur}
    shared = shared_names(model)
    return {k: cur[k] - params[k] for k in shared}


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


def epoch_batches(n: int, batch_size: int, steps: int, generator: torch.Generator | None = None,
                  *, models: int | None = None) -> torch.Tensor:
    """The record indices of ``steps`` mini-batches drawn without replacement from ``n`` records.

    Shuffled epochs of fixed-size batches: every epoch is a fresh random permutation of
    the ``n`` records cut into ``n // b`` consecutive batches of ``b = min(batch_size, n)``
    (the last ``n % b`` records of a permutation wait for a later epoch). No record
    appears twice in a batch, and none more than once in an epoch; when ``b`` divides
    ``n`` every record appears exactly once per epoch. Returns ``(steps, b)``, or
    ``(steps, models, b)`` with ``models`` independent streams (one per model trained
    together), all drawn from ``generator``.
    """
    check_positive_int("n", n)
    check_positive_int("batch_size", batch_size)
    check_positive_int("steps", steps, minimum=0)
    b = min(batch_size, n)
    per_epoch = n // b
    epochs = -(-steps // per_epoch) if steps else 0
    S = 1 if models is None else check_positive_int("models", models)
    perms = torch.argsort(torch.rand(epochs, S, n, generator=generator), -1)[..., :per_epoch * b]
    out = perms.reshape(epochs, S, per_epoch, b).permute(0, 2, 1, 3).reshape(epochs * per_epoch, S, b)[:steps]
    return out[:, 0] if models is None else out


def check_training_data(data: Dataset, num_classes: int | None, *, name: str = "data") -> None:
    """Refuse non-finite features and labels outside ``[0, num_classes)`` before any training step."""
    if not isinstance(data, Dataset):
        raise TypeError(f"{name} must be a leaklab Dataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} holds no records to train on")
    x = data.x
    if not x.is_floating_point():
        raise TypeError(f"{name}.x must hold floating-point features, got dtype {x.dtype}")
    bad = ~torch.isfinite(x).reshape(x.shape[0], -1).all(1)
    if bad.any():
        rows = bad.nonzero().flatten()
        raise ValueError(f"{name}.x must be finite: {int(bad.sum())} of {len(data)} records hold NaN or inf "
                         f"(the first at index {int(rows[0])})")
    y = data.y
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name}.y must hold integer class labels, got dtype {y.dtype}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        top = "" if num_classes is None else f", {num_classes - 1}"
        raise ValueError(f"{name}.y must hold class labels in [0{top}] (the model's classes), got labels "
                         f"from {lo} to {hi}")


def train(model: nn.Module, data: Dataset, *, steps: int, lr: float = 0.05, batch_size: int = 32,
          seed: int = 0, momentum: float = 0.9, defense=None, progress: bool = True) -> nn.Module:
    """Train ``model`` in place with SGD for ``steps`` mini-batch steps (a chosen training state).

    Mini-batches are drawn without replacement: shuffled epochs of fixed-size batches of
    ``min(batch_size, len(data))`` records (:func:`epoch_batches`), so no record appears
    twice in a batch. The loss is the model's objective (cross-entropy unless the model
    defines its own). With a ``defense``, every step uses the release path's defended
    gradient (DP-SGD for ``dp``: clipped per record, noised), so that accuracy measures
    what the defense costs; a model-side defense must already be applied
    (``defense.wrap(model)``). Secret parameters, if the model has any, are trained on
    their own gradient. For DP accounting, these fixed-size batches are treated as
    Poisson sampling at the rate ``q = batch_size / len(data)`` (add/remove neighbours),
    the usual approximation for shuffled batches, not an exact account of them.
    Non-finite features and labels outside the model's classes are refused.
    """
    from .release import _num_classes

    check_positive_int("steps", steps, minimum=0)
    check_positive_int("batch_size", batch_size)
    lr = _finite("lr", lr)
    check_training_data(data, _num_classes(model))
    from .defenses import as_defense

    defense = as_defense(defense)
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    x, y = data.x.to(dev), data.y.to(dev)
    loss_of = objective_of(model)
    plain = defense.name == "none" or defense.acts_on == "model"
    named = dict(model.named_parameters())
    secret = [k for k in named if k not in set(shared_names(model))]
    batches = epoch_batches(len(data), batch_size, steps, gen)
    from ._progress import trange

    model.train()
    for step in trange(steps, desc="train", progress=progress and steps > 0, leave=False):
        idx = batches[step].to(dev)
        opt.zero_grad()
        if plain:
            theta = {k: v for k, v in named.items()}
            with seeded(noise_gen if is_stochastic(model) else None):
                loss_of(theta, x[idx], y[idx]).backward()
        else:
            theta = {k: v.detach() for k, v in named.items()}
            g = release(model, x[idx][None], y[idx][None], params=theta, defense=defense,
                        generator=noise_gen, check=False)
            if secret:
                with seeded(noise_gen if is_stochastic(model) else None):
                    full = grad(loss_of)(theta, x[idx], y[idx])
                g.update({k: full[k][None] for k in secret})
            for k, p in named.items():
                p.grad = g[k][0].detach().clone()
        opt.step()
    model.eval()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, *, batch_size: int = 1024) -> float:
    """The fraction of ``data`` that ``model`` classifies correctly."""
    dev = next(model.parameters()).device
    correct = 0
    for s in range(0, len(data), batch_size):
        out = model(data.x[s:s + batch_size].to(dev))
        correct += int((out.argmax(1).cpu() == data.y[s:s + batch_size]).sum())
    return correct / max(len(data), 1)
