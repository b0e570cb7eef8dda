"""Local SGD under a defense: the one routine behind FedAvg updates and federated training.

Every local step takes the gradient that the release path gives
(:func:`leaklab.release.release`, the defense ``M`` included: DP-SGD clips and noises
each record, signSGD sends signs, ...) and steps by ``-lr`` along it. A model's secret
parameters (SPN's head) never leave the client: they are trained on their own
undefended gradient, or kept as they are.

:func:`defended_gradients` is one such step's gradients for many clients (or trials) at
once; :func:`local_sgd` takes ``steps`` of them; :func:`fedavg_update` is one client's
FedAvg release, ``theta_local - theta``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.func import grad, vmap

from .._checks import check_choice, check_positive_int
from ..release import objective_of, release, release_one, shared_names
from .gradients import LossFn, Params, _check_batch, _finite, _loss, parameters_of

__all__ = ["defended_gradients", "local_sgd", "fedavg_update"]


def defended_gradients(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, params: Mapping[str, torch.Tensor], *,
                       defense=None, generator: torch.Generator | None = None, params_batched: bool = False,
                       engine: str = "batched", secret: str = "train", static_objective: bool = False) -> Params:
    """The gradients of one local SGD step for ``T`` clients (or trials) at once.

    ``xs (T, B, ...)``, ``ys (T, B)`` are each client's batch; ``params`` the parameters
    (with a leading client dimension when ``params_batched``; they may hold a client's
    own secret buffers, e.g. SPN's codes). The shared parameters get the release path's
    defended gradient (:func:`leaklab.release.release`, noise drawn from ``generator``);
    with ``secret="train"`` a secret parameter gets its own undefended gradient (its
    client trains it and never releases it), with ``secret="keep"`` none (it stays as
    given). ``engine="loop"`` computes each client with ordinary autograd (the oracle).
    ``static_objective=True`` uses plain cross-entropy instead of a model-side defense's
    objective (a static adversary's shadow models).
    """
    check_choice("secret", secret, ("train", "keep"))
    g = release(model, xs, ys, params=params, params_batched=params_batched, defense=defense,
                generator=generator, engine=engine, check=False, static_objective=static_objective)
    if secret == "train":
        shared = set(shared_names(model))
        own_names = [k for k, _ in model.named_parameters() if k not in shared]
        if own_names:
            loss = objective_of(model, static=static_objective)
            own = vmap(grad(loss), in_dims=(0 if params_batched else None, 0, 0))(params, xs, ys)
            g.update({k: own[k] for k in own_names})
    return g


def local_sgd(model: nn.Module, params: Mapping[str, torch.Tensor], batches: Iterable, *, lr: float,
              defense=None, generator: torch.Generator | None = None, params_batched: bool = True,
              engine: str = "batched", secret: str = "train") -> Params:
    """The parameters after one local SGD step of size ``lr`` per batch ``(xs, ys)`` of ``batches``.

    Every step follows :func:`defended_gradients` (the defended release for the shared
    parameters; ``secret`` says what happens to a secret one); ``T`` clients step
    together when ``params_batched``. Entries of ``params`` that get no gradient (a
    client's secret buffers) are returned as given.
    """
    lr = _finite("lr", lr)
    cur = dict(params)
    for xs, ys in batches:
        g = defended_gradients(model, xs, ys, cur, defense=defense, generator=generator,
                               params_batched=params_batched, engine=engine, secret=secret)
        cur.update({k: cur[k] - lr * v for k, v in g.items()})
    return cur


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
