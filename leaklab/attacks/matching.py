"""Gradient matching: how far a dummy batch's gradient is from the released one.

The objective that DLG, iDLG and Inverting Gradients minimise: a distance between the
gradient of a dummy batch and the released gradient (:data:`DISTANCES`: squared L2 or
cosine), plus a total-variation prior on images; :func:`matching_objective` builds it for
one problem and :func:`check_release` checks a release against its model first. The
attacks themselves are in :mod:`leaklab.attacks.optimization`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from .._checks import check_choice, check_tensor

__all__ = ["DISTANCES", "IMAGE_PARAMS", "LABEL_MODES", "total_variation", "check_release", "matching_objective"]

Params = dict[str, torch.Tensor]

LABEL_MODES = ("auto", "joint", "recover")
IMAGE_PARAMS = ("sigmoid", "clamp", "free")


# -- distances between a dummy gradient and the released one -----------------------------------

def _l2(gx: Mapping[str, torch.Tensor], g: Mapping[str, torch.Tensor]) -> torch.Tensor:
    num = sum(((gx[k] - g[k]) ** 2).sum() for k in g)
    den = sum((g[k] ** 2).sum() for k in g)
    return num / den.clamp_min(1e-30)


def _cosine(gx: Mapping[str, torch.Tensor], g: Mapping[str, torch.Tensor]) -> torch.Tensor:
    dot = sum((gx[k] * g[k]).sum() for k in g)
    nx = sum((gx[k] ** 2).sum() for k in g)
    ng = sum((g[k] ** 2).sum() for k in g)
    return 1.0 - dot / (nx.clamp_min(1e-30).sqrt() * ng.clamp_min(1e-30).sqrt())


#: Gradient distances: ``l2`` is ``|g(x) - g|^2 / |g|^2``, ``cosine`` is ``1 - cos(g(x), g)``.
DISTANCES: dict[str, Callable] = {"l2": _l2, "cosine": _cosine}


def total_variation(x: torch.Tensor, dims: int | None = None) -> torch.Tensor:
    """Mean absolute difference between neighbours along each sample's own spatial axes, summed over axes.

    ``x`` is a batch ``(B, *input_shape)``. The spatial axes are the last ``dims``;
    by default the two of an image (``x`` with 4 or more dimensions, ``(..., C, H, W)``)
    and the last one otherwise (``(B, C, L)`` signals, ``(B, N)`` feature vectors),
    so that no difference is ever taken across the batch or the channels. The mean
    runs over samples, channels and positions, so the value is the mean over the
    batch of each sample's total variation.
    """
    check_tensor("x", x, floating=True, finite=False)
    if dims is None:
        dims = 2 if x.ndim >= 4 else 1
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= x.ndim - 1:
        raise ValueError(f"dims must be an int between 1 and {x.ndim - 1} (x has shape {tuple(x.shape)}), "
                         f"got {dims!r}")
    total = x.new_zeros(())
    for axis in range(x.ndim - dims, x.ndim):
        n = x.shape[axis]
        if n > 1:
            total = total + (x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1)).abs().mean()
    return total


# -- validation ----------------------------------------------------------------------------------

def check_release(model: nn.Module, params: Mapping[str, torch.Tensor],
                  grads: Mapping[str, torch.Tensor]) -> int:
    """Check that ``params`` and ``grads`` fit ``model`` with one leading trial dimension; return ``T``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, d in (("params", params), ("grads", grads)):
        if not isinstance(d, Mapping):
            raise TypeError(f"{name} must be a dict of tensors, got {type(d).__name__}")
    from ..release import shared_names

    expected = {k: tuple(v.shape) for k, v in model.named_parameters()}
    shared = set(shared_names(model))
    for name, d, want in (("params", params, set(expected)), ("grads", grads, shared)):
        if set(d) != want:
            missing, extra = want - set(d), set(d) - want
            what = "parameters" if name == "params" else "shared (released) parameters"
            raise ValueError(
                f"{name} must hold the model's {what} {sorted(want)}; "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
    T = None
    for name, d in (("params", params), ("grads", grads)):
        for k, v in d.items():
            check_tensor(f"{name}[{k!r}]", v, floating=True)
            if tuple(v.shape[1:]) != expected[k]:
                raise ValueError(
                    f"{name}[{k!r}] must have shape (T, *{expected[k]}), got {tuple(v.shape)}"
                )
            if T is None:
                T = v.shape[0]
            elif v.shape[0] != T:
                raise ValueError(f"{name}[{k!r}] has {v.shape[0]} trials, expected {T} like the others")
    return int(T)


# -- the matching objective of one problem -------------------------------------------------------

def _to_image(z: torch.Tensor, image_param: str) -> torch.Tensor:
    if image_param == "sigmoid":
        return torch.sigmoid(z)
    if image_param == "clamp":
        return z.clamp(0.0, 1.0)
    return z


def matching_objective(model: nn.Module, *, input_shape: tuple[int, ...], batch_size: int,
                       num_classes: int, joint_labels: bool, distance: str = "l2",
                       tv: float = 0.0, image_param: str = "sigmoid", defense=None,
                       adaptive: bool = False) -> Callable:
    """The gradient-matching objective of a single problem, for ``torch.func`` transforms.

    Returns ``f(v, params, grads, y) -> loss`` where ``v`` is the flat vector of
    unknowns (the image variables ``z``, ``batch_size * prod(input_shape)`` of
    them, followed by ``batch_size * num_classes`` label logits when
    ``joint_labels``), ``params``/``grads`` one trial's tensors and ``y`` the labels
    ``(batch_size,)`` (ignored with ``joint_labels``). The dummy batch's gradient is
    computed with ``torch.func.grad``, so ``grad(f)`` differentiates through it.
    Only the parameters present in ``grads`` (the released ones) are compared.

    ``defense`` is the defense ``M`` the release went through. A *static* attack
    (``adaptive=False``) ignores it: it matches the plain cross-entropy gradient of
    its dummy batch (a stochastic model-side defense is treated as deterministic,
    in eval mode). An *adaptive* attack passes its dummy gradient through
    ``defense.simulate`` (``M`` itself where it is differentiable, else a documented
    surrogate), computes per-record gradients when ``M`` clips each record, and uses
    the model's own objective for a model-side defense (its noise-free
    ``surrogate_objective`` where it has one, else with its own random draws).
    """
    import copy

    from ..defenses import as_defense
    from ..release import is_stochastic, objective_of

    check_choice("distance", distance, DISTANCES)
    check_choice("image_param", image_param, IMAGE_PARAMS)
    defense = as_defense(defense)
    dist = DISTANCES[distance]
    n_img = batch_size * math.prod(input_shape)
    use_objective = adaptive and defense.acts_on == "model"
    per_sample = adaptive and defense.acts_on == "sample"
    simulate = adaptive and defense.acts_on in ("sample", "batch")
    if use_objective and getattr(model, "secret_parameters", ()):
        raise ValueError(f"the model keeps secret parameters {tuple(model.secret_parameters)}: matching its own "
                         f"objective would hand the attacker the client's secret. Use the defense's adaptive "
                         f"attack ({getattr(defense, 'adaptive_attack', None) or 'none registered'}) instead")
    if use_objective and joint_labels:
        raise ValueError(f"an adaptive attack on the model-side defense {defense.name!r} matches the model's "
                         "own objective, which needs labels: use labels='recover' (idlg, ig) or give them")
    net = model if (use_objective or not is_stochastic(model)) else copy.deepcopy(model).eval()
    objective = objective_of(net, surrogate=True) if use_objective else None
    stochastic = use_objective and is_stochastic(model) and not callable(getattr(model, "surrogate_objective", None))
    if per_sample and batch_size == 1:     # one record: its gradient is the batch gradient
        per_sample = False
        simulate_one = True
    else:
        simulate_one = False

    def f(v, p, g, y):
        x = _to_image(v[:n_img], image_param).reshape(batch_size, *input_shape)
        target = torch.softmax(v[n_img:].reshape(batch_size, num_classes), -1) if joint_labels else y

        def loss(q, xb, tb):
            if objective is not None:
                return objective(q, xb, tb)
            out = functional_call(net, q, (xb,))
            if joint_labels:
                return -(tb * torch.log_softmax(out, -1)).sum(-1).mean()
            return F.cross_entropy(out, tb)

        if per_sample:
            gx = vmap(lambda xi, ti: grad(loss)(p, xi[None], ti[None]))(x, target)
        else:
            gx = grad(loss)(p, x, target)
        gx = {k: gx[k] for k in g}
        if simulate_one:
            gx = {k: v[None] for k, v in gx.items()}
        if simulate:
            gx = defense.simulate(gx, g)
        d = dist(gx, g)
        if tv:
            d = d + tv * total_variation(x)
        return d

    f.randomness = "different" if stochastic else "error"
    return f


def _batched(fn: Callable, params: Params, grads: Params, y: torch.Tensor) -> Callable:
    """``fg(v, idx)``: losses and gradients of the problems ``idx`` at ``v`` (rows of those problems)."""
    vg = vmap(grad_and_value(fn), in_dims=(0, 0, 0, 0), randomness=getattr(fn, "randomness", "error"))

    def fg(v: torch.Tensor, idx: torch.Tensor | None = None):
        if idx is None:
            gv, fv = vg(v, params, grads, y)
        else:
            gv, fv = vg(v, {k: t[idx] for k, t in params.items()},
                        {k: t[idx] for k, t in grads.items()}, y[idx])
        return fv.detach(), gv.detach()

    return fg
