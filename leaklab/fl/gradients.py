"""FedSGD's release, batched: gradients of many independent trials in one computation.

A client's FedSGD release is the gradient of its loss on one batch,
``g = (1/B) sum_i grad_theta L(f_theta(x_i), y_i)``. Gradients are computed
functionally (``torch.func``) so that many independent trials run as one batched
computation: :func:`batch_gradients` takes inputs of shape ``(T, B, ...)`` and returns,
for each parameter, a tensor ``(T, ...)``; every release goes through the one release
path (:func:`leaklab.release.release`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..release import check_batch, is_stochastic, objective_of, release, release_one

__all__ = ["Params", "parameters_of", "loss_gradient", "per_sample_gradients", "batch_gradients",
           "flatten", "unflatten_like"]

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def parameters_of(model: nn.Module) -> Params:
    """A detached copy of the model's parameters, by name."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _check_batch(model: nn.Module, x, y, *, batch_dims: int) -> None:
    from ..release import _num_classes

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
