"""Optimisation attacks: find inputs whose gradient matches the released one.

Three attacks share one machinery: the matching objective (:mod:`leaklab.attacks.matching`),
the batched optimisers (:mod:`leaklab.attacks.lbfgs`) and the set-up here, which re-exports
their public names:

* ``dlg`` — Deep Leakage from Gradients (Zhu et al., 2019): minimise the squared
  distance between the dummy input's gradient and the released gradient with
  L-BFGS, optimising a soft dummy label jointly with the input.
* ``idlg`` — improved DLG (Zhao et al., 2020): read the labels off the output
  layer's gradient first (:mod:`leaklab.attacks.labels`), then optimise the input only.
* ``ig`` — Inverting Gradients (Geiping et al., 2020): cosine distance between
  gradients plus a total-variation prior, Adam with a step schedule, several
  restarts of which the one with the lowest objective is kept.

All ``T`` trials (and their restarts) run as one batched optimisation: the
gradient-matching loss of one problem is written for a single trial with
``torch.func`` (the inner gradient with respect to the parameters, the outer one
with respect to the dummy input) and ``vmap`` maps it over the problems.
L-BFGS is our own batched implementation (:func:`lbfgs`): each problem keeps its
own curvature history and its own step size, so the problems stay independent as
if each had been solved alone; only the arithmetic is shared.

Defaults of ``dlg`` ("DLG with its default settings" in the book): up to 2000
L-BFGS iterations with a history of 50 pairs and a backtracking (Armijo) line search,
one restart, one retry from fresh noise for a problem left with a distance above
``1e-6``, the squared gradient distance normalised by the released
gradient's squared norm (a problem leaves the batch once its match is as close as
float arithmetic can tell, see :func:`enough_match`, or once it stalls; retries run
in the same loop, see :func:`lbfgs`),
the image optimised unconstrained from uniform noise in ``[0, 1]`` and clipped
to ``[0, 1]`` at the end (``image_param="free"``; a ``sigmoid`` parametrisation
slows L-BFGS down near saturated pixels), and ``labels="auto"``: for a
batch of one the label is recovered iDLG-style (exact for cross-entropy) and
only the image is optimised; for larger batches the labels are optimised jointly
as in the original. ``labels="joint"`` gives the original joint optimisation at
every batch size.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import vmap

from .._checks import check_choice, check_positive_int, check_tensor
from ..runtime import get_device
from .base import Reconstruction, register_attack
from .labels import label_recovery, recover_labels  # noqa: F401
from .lbfgs import _adam, enough_match, lbfgs  # noqa: F401
from .matching import (DISTANCES, IMAGE_PARAMS, LABEL_MODES, _batched, _to_image, check_release,  # noqa: F401
                       matching_objective, total_variation)

__all__ = ["dlg", "idlg", "ig", "lbfgs", "check_release", "cpu_threads", "matching_objective", "total_variation",
           "DISTANCES", "IMAGE_PARAMS", "LABEL_MODES"]

Params = dict[str, torch.Tensor]


# -- the attacks ---------------------------------------------------------------------------------

@contextmanager
def cpu_threads(n: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (restored afterwards); no-op for ``None`` or a GPU.

    The matching loop is made of many small operations; on a CPU, splitting each of
    them over threads costs more than it saves, and on a shared machine it is far
    slower (we measured several times on 2 busy cores), so the attacks use one
    thread by default.
    """
    if n is None or device.type != "cpu":
        yield
        return
    check_positive_int("threads", n)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _setup(model, params, grads, *, input_shape, num_classes, batch_size, device, labels):
    T = check_release(model, params, grads)
    input_shape = tuple(int(s) for s in input_shape)
    check_positive_int("batch_size", batch_size)
    check_positive_int("num_classes", num_classes, minimum=2)
    dev = get_device(device)
    model = model.to(dev)
    params = {k: v.detach().to(dev) for k, v in params.items()}
    grads = {k: v.detach().to(dev) for k, v in grads.items()}
    if isinstance(labels, torch.Tensor):
        check_tensor("labels", labels, ndim=2, finite=False)
        if tuple(labels.shape) != (T, batch_size) or labels.is_floating_point():
            raise ValueError(f"labels given as a tensor must be integers of shape ({T}, {batch_size}), "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        return T, input_shape, dev, model, params, grads, labels.to(dev).long(), False, "given"
    check_choice("labels", labels, LABEL_MODES)
    joint = labels == "joint" or (labels == "auto" and batch_size > 1)
    # labels of a batch: counts fitted with the known model's predictions on random dummy inputs
    if joint:
        return T, input_shape, dev, model, params, grads, torch.zeros(T, batch_size, dtype=torch.long,
                                                                     device=dev), True, "joint"
    rec = label_recovery(grads, num_classes=num_classes, batch_size=batch_size, model=model, params=params,
                         input_shape=input_shape)
    return T, input_shape, dev, model, params, grads, rec.labels.to(dev), False, rec.estimate


def _init(n: int, dim: int, *, init: str, image_param: str, gen: torch.Generator, device) -> torch.Tensor:
    check_choice("init", init, ("uniform", "normal"))
    u = torch.rand(n, dim, generator=gen) if init == "uniform" else torch.randn(n, dim, generator=gen)
    if image_param == "sigmoid":       # so that the image itself starts as the chosen noise
        u = torch.logit(u.clamp(1e-3, 1 - 1e-3)) if init == "uniform" else u
    return u.to(device)


def _optimise(model, params, grads, *, threads, **kwargs):
    dev = get_device(kwargs["device"])
    with cpu_threads(threads, dev):
        return _optimise_inner(model, params, grads, **kwargs)


def _optimise_inner(model, params, grads, *, input_shape, num_classes, batch_size, device, seed, progress,
                    labels, restarts, optimiser, distance, tv, image_param, init, opt_kwargs, name,
                    defense=None, adaptive=False):
    T, input_shape, dev, model, params, grads, y, joint, label_estimate = _setup(
        model, params, grads, input_shape=input_shape, num_classes=num_classes,
        batch_size=batch_size, device=device, labels=labels)
    check_positive_int("restarts", restarts)
    R = restarts
    n_img = batch_size * math.prod(input_shape)
    dim = n_img + (batch_size * num_classes if joint else 0)
    gen = torch.Generator().manual_seed(int(seed))
    v0 = _init(T * R, n_img, init=init, image_param=image_param, gen=gen, device=dev)
    if joint:
        v0 = torch.cat([v0, torch.randn(T * R, dim - n_img, generator=gen).to(dev)], 1)
    rep = lambda t: t.repeat_interleave(R, dim=0)  # noqa: E731  (problem i*R + r: trial i, restart r)
    fn = matching_objective(model, input_shape=input_shape, batch_size=batch_size, num_classes=num_classes,
                            joint_labels=joint, distance=distance, tv=tv, image_param=image_param,
                            defense=defense, adaptive=adaptive)
    fg = _batched(fn, {k: rep(v) for k, v in params.items()}, {k: rep(v) for k, v in grads.items()}, rep(y))
    if optimiser == "lbfgs":
        def restart(idx: torch.Tensor, attempt: torch.Tensor) -> torch.Tensor:
            # fresh noise of problem i on its a-th retry, from a generator of its own: a problem's
            # retries do not depend on which other problems share the batch
            rows = []
            for i, a in zip(idx.tolist(), attempt.tolist()):
                g_i = torch.Generator().manual_seed((int(seed) * 1_000_003 + i * 7_919 + a) % 2**63)
                row = _init(1, n_img, init=init, image_param=image_param, gen=g_i, device=dev)
                if joint:
                    row = torch.cat([row, torch.randn(1, dim - n_img, generator=g_i).to(dev)], 1)
                rows.append(row)
            return torch.cat(rows)

        v, f, info = lbfgs(fg, v0, progress=progress, desc=name, restart=restart, **opt_kwargs)
    else:
        v, f, info = _adam(fg, v0, progress=progress, desc=name, project=image_param == "clamp", **opt_kwargs)
    f = f.reshape(T, R)
    best = f.argmin(1)                                             # keep the best restart per trial
    pick = torch.arange(T, device=dev) * R + best
    v, loss = v[pick], f[torch.arange(T, device=dev), best]
    x = _to_image(v[:, :n_img], image_param).reshape(T, batch_size, *input_shape)
    if image_param == "free":
        x = x.clamp(0.0, 1.0)
    # did the matching converge? The gradient distance alone (without a prior term) of the kept
    # point against the rule of lbfgs; for the cosine distance, 1 - cos is half the squared
    # relative distance for small angles
    if tv:
        pure = matching_objective(model, input_shape=input_shape, batch_size=batch_size,
                                  num_classes=num_classes, joint_labels=joint, distance=distance,
                                  tv=0.0, image_param=image_param)
        distance_t, _ = _batched(pure, params, grads, y)(v)
    else:
        distance_t = loss
    tol = info.get("tol", enough_match(v.dtype))
    converged = distance_t <= (tol / 2 if distance == "cosine" else tol)
    if joint:
        y = v[:, n_img:].reshape(T, batch_size, num_classes).argmax(-1)
    out = {
        "attack": name, "labels": "joint" if joint else ("given" if isinstance(labels, torch.Tensor) else "recovered"),
        "label_estimate": label_estimate,
        "restarts": R, "best_restart": best, "iterations": info["iterations"],
        "evaluations": info["evaluations"].reshape(T, R).sum(1),
        "distance": distance_t.detach(), "converged": converged, "tol": tol,
    }
    if "retried" in info:
        out["retried"] = info["retried"].reshape(T, R).sum(1)
    return Reconstruction(x=x.detach(), y=y, loss=loss.detach(), info=out)


@register_attack("dlg")
def dlg(model: nn.Module, params: Params, grads: Params, *, input_shape, num_classes: int, batch_size: int,
        device=None, seed: int = 0, progress: bool = True, iters: int = 2000, restarts: int = 1,
        labels="auto", history: int = 50, image_param: str = "free", init: str = "uniform",
        distance: str = "l2", retries: int = 1, retry_above: float = 1e-6,
        threads: int | None = 1, defense=None, adaptive: bool = False) -> Reconstruction:
    """Deep Leakage from Gradients over ``T`` trials at once (batched L-BFGS).

    ``params`` and ``grads`` map parameter names to ``(T, ...)`` tensors. See the
    module docstring for the defaults. ``labels`` is ``"auto"`` (recovered for a
    batch of one, joint otherwise), ``"joint"``, ``"recover"`` or a ``(T, B)``
    tensor of known labels. ``restarts`` runs that many random initialisations per
    trial and keeps the one with the lowest gradient distance. A problem whose
    distance is still above ``retry_above`` at the end (it stalled far from any
    match) starts again from fresh noise, up to ``retries`` times, and the better
    of its runs is kept; only those problems are re-run. ``threads`` sets
    torch's CPU threads while the attack runs (see :func:`cpu_threads`; ``None``
    leaves them alone). ``defense`` is the defense the release went through and
    ``adaptive`` whether the attack simulates it (see :func:`matching_objective`).
    """
    return _optimise(model, params, grads, input_shape=input_shape, num_classes=num_classes,
                     batch_size=batch_size, device=device, seed=seed, progress=progress, labels=labels,
                     restarts=restarts, optimiser="lbfgs", distance=distance, tv=0.0,
                     image_param=image_param, init=init, opt_kwargs={"iters": iters, "history": history, "retries": retries,
                                 "retry_above": float(retry_above)},
                     name="dlg", threads=threads, defense=defense, adaptive=adaptive)


@register_attack("idlg")
def idlg(model: nn.Module, params: Params, grads: Params, *, input_shape, num_classes: int, batch_size: int,
         device=None, seed: int = 0, progress: bool = True, iters: int = 2000, restarts: int = 1,
         history: int = 50, image_param: str = "free", init: str = "uniform",
         distance: str = "l2", retries: int = 1, retry_above: float = 1e-6,
        threads: int | None = 1, defense=None, adaptive: bool = False) -> Reconstruction:
    """iDLG: labels read off the output layer's gradient, then DLG on the inputs only.

    The labels are exact for a batch of one; for larger batches they come from the
    count estimate of :func:`leaklab.attacks.labels.label_recovery`, with the
    model's predictions measured on random dummy inputs. The other
    options are those of :func:`dlg`.
    """
    return _optimise(model, params, grads, input_shape=input_shape, num_classes=num_classes,
                     batch_size=batch_size, device=device, seed=seed, progress=progress, labels="recover",
                     restarts=restarts, optimiser="lbfgs", distance=distance, tv=0.0,
                     image_param=image_param, init=init, opt_kwargs={"iters": iters, "history": history, "retries": retries,
                                 "retry_above": float(retry_above)},
                     name="idlg", threads=threads, defense=defense, adaptive=adaptive)


@register_attack("ig")
def ig(model: nn.Module, params: Params, grads: Params, *, input_shape, num_classes: int, batch_size: int,
       device=None, seed: int = 0, progress: bool = True, iters: int = 1000, restarts: int = 2,
       lr: float = 0.1, tv: float = 1e-4, signed: bool = True, labels="recover",
       image_param: str = "clamp", init: str = "uniform", threads: int | None = 1, defense=None,
       adaptive: bool = False) -> Reconstruction:
    """Inverting Gradients: cosine distance plus ``tv`` times total variation, Adam.

    The step size ``lr`` drops tenfold at 3/8, 5/8 and 7/8 of ``iters``; with
    ``signed`` Adam is fed the sign of the gradient (as in the authors' code); the
    image is projected to ``[0, 1]`` after every step (``image_param="clamp"``).
    ``restarts`` random initialisations per trial run together and the one with
    the lowest objective is kept. Labels are recovered from the output layer.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not tv >= 0:
        raise ValueError(f"tv must be >= 0, got {tv}")
    return _optimise(model, params, grads, input_shape=input_shape, num_classes=num_classes,
                     batch_size=batch_size, device=device, seed=seed, progress=progress, labels=labels,
                     restarts=restarts, optimiser="adam", distance="cosine", tv=float(tv),
                     image_param=image_param, init=init,
                     opt_kwargs={"iters": check_positive_int("iters", iters), "lr": float(lr),
                                 "signed": bool(signed)},
                     name="ig", threads=threads, defense=defense, adaptive=adaptive)
