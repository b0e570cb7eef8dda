"""Attack your own gradients: one release of your own model, without a trial dimension.

The registered attacks work on ``T`` trials at once (``params`` and ``grads`` with a
leading trial dimension). :func:`reconstruct` is the door for the common case of a
single release: the gradient a user computed on their own model, as a dict from
``torch.autograd.grad`` zipped with the parameter names, or as collected from
``model.named_parameters()`` after ``loss.backward()``.

>>> import torch
>>> from leaklab.models import build_model
>>> model = build_model("mlp", (1, 8, 8), 10, hidden=(), seed=0)
>>> x, y = torch.rand(1, 1, 8, 8), torch.tensor([3])
>>> loss = torch.nn.functional.cross_entropy(model(x), y)
>>> grads = dict(zip([k for k, _ in model.named_parameters()],
...                  torch.autograd.grad(loss, list(model.parameters()))))
>>> rec = reconstruct(model, grads, input_shape=(1, 8, 8), attack="analytic")
>>> rec.x.shape, rec.y.tolist()
(torch.Size([1, 1, 8, 8]), [3])
>>> bool((rec.x - x).abs().max() < 1e-4)
True
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .._checks import check_positive_int, check_tensor
from ..validate import check_model, check_reconstruction_sizes
from .base import Reconstruction, get_attack

__all__ = ["reconstruct", "as_release"]


def as_release(model: nn.Module, grads) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], bool]:
    """``(params, grads, single)``: the model's parameters and ``grads`` with a leading trial dimension.

    ``grads`` is a dict ``name -> tensor`` (every parameter of ``model``, each of the
    parameter's shape for a single release, or ``(T, *shape)`` for ``T`` releases) or a
    sequence of tensors in the order of ``model.parameters()`` (what
    ``torch.autograd.grad`` returns). ``single`` says that no trial dimension was given.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = dict(model.named_parameters())
    if isinstance(grads, Mapping):
        grads = dict(grads)
    elif isinstance(grads, Sequence) and not isinstance(grads, (str, bytes)) and all(
            isinstance(g, torch.Tensor) for g in grads):
        if len(grads) != len(named):
            raise ValueError(f"grads given as a sequence must hold one tensor per model parameter "
                             f"({len(named)}), got {len(grads)}; or pass a dict name -> tensor")
        grads = dict(zip(named, grads))
    else:
        raise TypeError(f"grads must be a dict name -> tensor (or the tuple torch.autograd.grad returns), "
                        f"got {type(grads).__name__}")
    missing, extra = sorted(set(named) - set(grads)), sorted(set(grads) - set(named))
    if missing or extra:
        raise ValueError(f"grads must hold one gradient per model parameter; missing {missing}, "
                         f"unexpected {extra}")
    for k, g in grads.items():
        if g is None:
            raise ValueError(f"grads[{k!r}] is None (the parameter did not take part in the loss); "
                             "every parameter needs a gradient")
        check_tensor(f"grads[{k!r}]", g, floating=True)
    cast = sorted({str(g.dtype) for k, g in grads.items() if g.dtype != named[k].dtype})
    if cast:     # e.g. float64 gradients of a float32 model: the attack works in the model's dtype
        warnings.warn(f"grads hold {', '.join(cast)} tensors; cast to the model's {named[next(iter(named))].dtype} "
                      "for the attack", stacklevel=3)
        grads = {k: g.to(named[k].dtype) for k, g in grads.items()}
    exact = [k for k, p in named.items() if tuple(grads[k].shape) == tuple(p.shape)]
    if exact and len(exact) < len(named):    # some single releases, some not: blame the odd ones out
        k = next(k for k in named if k not in exact)
        g, p = grads[k], named[k]
        hint = " (it looks transposed: use the gradient as named_parameters() shapes it)" if (
            g.ndim == 2 and tuple(g.shape) == tuple(p.shape)[::-1]) else ""
        raise ValueError(f"grads[{k!r}] has shape {tuple(g.shape)}; expected the parameter's shape "
                         f"{tuple(p.shape)}, as the other gradients (single releases) have{hint}")
    single = len(exact) == len(named)
    if single:
        grads = {k: g.detach().unsqueeze(0) for k, g in grads.items()}
        T = 1
    else:
        T = None
        for k, p in named.items():
            g = grads[k]
            if tuple(g.shape[1:]) != tuple(p.shape) or g.ndim != p.ndim + 1:
                raise ValueError(f"grads[{k!r}] has shape {tuple(g.shape)}; expected the parameter's shape "
                                 f"{tuple(p.shape)} (one release) or (T, *{tuple(p.shape)}) (T releases)")
            T = g.shape[0] if T is None else T
            if g.shape[0] != T:
                raise ValueError(f"grads[{k!r}] has {g.shape[0]} releases, the others {T}")
        grads = {k: g.detach() for k, g in grads.items()}
    if all(float(g.abs().max()) == 0.0 for g in grads.values()):
        raise ValueError("grads are all zero: nothing was released (was the loss computed on this model?)")
    params = {k: p.detach().unsqueeze(0).expand(T, *p.shape).clone() for k, p in named.items()}
    return params, grads, single


def reconstruct(model: nn.Module, grads, *, input_shape, attack: str = "idlg", labels=None,
                batch_size: int | None = None, num_classes: int | None = None, device=None,
                seed: int = 0, progress: bool = True, **options) -> Reconstruction:
    """Reconstruct the batch behind one gradient ``grads`` of your own ``model`` at its current weights.

    Parameters
    ----------
    model
        The model the gradient was computed on (an ``nn.Module``; checked with
        :func:`leaklab.validate.check_model`), holding the weights at which it was computed.
    grads
        A dict ``name -> gradient`` over every parameter (each of the parameter's shape),
        or the tuple ``torch.autograd.grad(loss, model.parameters())`` returns.
        A leading trial dimension ``(T, *shape)`` is accepted too.
    input_shape
        The shape of one record, e.g. ``(3, 32, 32)``.
    attack
        A registered attack (:func:`leaklab.attacks.list_attacks`), ``"idlg"`` by default.
    labels
        The batch's labels when known (a list or a tensor of ``batch_size`` ints); by
        default the attack recovers them. With known labels ``idlg`` is DLG on the
        inputs alone, so it runs as ``dlg`` with the labels given.
    batch_size
        Records behind the gradient (default: the number of ``labels``, else 1).
    num_classes
        The class count (default: read off the model's output).
    options
        Passed to the attack (``iters``, ``restarts``, ...).

    Returns
    -------
    Reconstruction
        For a single release, ``x`` has shape ``(batch_size, *input_shape)``, ``y``
        ``(batch_size,)`` (or ``None``) and ``loss`` is a 0-d tensor; with a trial
        dimension the attack's own ``(T, ...)`` shapes are kept.
    """
    fn = get_attack(attack)
    k = check_model(model, input_shape, num_classes)
    shape = tuple(int(s) for s in (input_shape if not isinstance(input_shape, int) else (input_shape,)))
    params, g, single = as_release(model, grads)
    T = next(iter(g.values())).shape[0]
    if labels is not None:
        lab = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels, device=next(iter(g.values())).device)
        if lab.is_floating_point() or lab.dtype == torch.bool or lab.ndim not in (1, 2):
            raise TypeError(f"labels must be integer class labels (a list or a 1-d tensor), got {lab.dtype} "
                            f"of shape {tuple(lab.shape)}")
        if lab.ndim == 1:
            lab = lab.unsqueeze(0).expand(T, -1)
        if lab.shape[0] != T:
            raise ValueError(f"labels has {lab.shape[0]} rows, the gradient {T} releases")
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= k):
            raise ValueError(f"labels must lie in [0, {k - 1}] (the model's classes), got values in "
                             f"[{int(lab.min())}, {int(lab.max())}]")
        if batch_size is not None and batch_size != lab.shape[1]:
            raise ValueError(f"batch_size {batch_size} does not match the {lab.shape[1]} labels given")
        batch_size = int(lab.shape[1])
        if "labels" not in inspect.signature(fn).parameters:
            if attack != "idlg":
                raise ValueError(f"attack {attack!r} takes no labels (it recovers them itself or needs none)")
            fn = get_attack("dlg")
        options["labels"] = lab.long().clone()
    batch_size = 1 if batch_size is None else check_positive_int("batch_size", batch_size)
    dev = next(model.parameters()).device if device is None else device
    check_reconstruction_sizes(fn, model, shape, k, trials=T, batch_size=batch_size, device=dev)
    rec = fn(model, params, g, input_shape=shape, num_classes=k, batch_size=batch_size, device=dev,
             seed=seed, progress=progress, **options)
    if not single:
        return rec
    return Reconstruction(x=rec.x[0], y=None if rec.y is None else rec.y[0],
                          loss=None if rec.loss is None else rec.loss[0], info=rec.info)
