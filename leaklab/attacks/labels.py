"""Reading labels off the last layer's gradient (iDLG and its batch version).

For one record with cross-entropy loss and softmax outputs ``p``, the gradient
with respect to the logits is ``p - onehot(y)``: every entry is positive except
the true class's, which is ``p_y - 1 < 0`` (Zhao et al., 2020). The last layer
``o = W h + b`` turns it into

``dL/db_c = p_c - 1[c = y]``  and  ``dL/dW_c = (p_c - 1[c = y]) h``,

so the bias gradient *is* that vector, and without a bias the sum of row ``c`` of
the weight gradient is ``(p_c - 1[c = y]) s`` with ``s = sum_j h_j``, which has the
same sign whenever the features are non-negative (after a ReLU or a sigmoid).

For a batch of ``B`` records the FedSGD gradient averages these vectors:

``g_c = (1/B) sum_i s_i (p_ic - 1[y_i = c])``

with ``s_i = 1`` for the bias and ``s_i = sum_j h_ij`` for the row sums. A class
absent from the batch has ``g_c > 0`` (when every ``s_i > 0``), so every class with
``g_c < 0`` is present. The *counts* ``n_c`` need the unknown batch terms
``s_i p_ic``. We replace them by what the known model does on data the attacker has
(auxiliary records, or random dummy inputs): grouping those inputs by their class
(their label when known, else the model's prediction), the mean of
``s_i (p_i - e_c)`` over the inputs of class ``c`` is the column ``m_c`` of a matrix
``M``, and the counts are the non-negative integers summing to ``B`` that best fit

``g ~ M n / B``

in least squares, found greedily one record at a time, every class with
``g_c < 0`` starting with one record. Without a model, ``M`` assumes a uniform mean
prediction (``m_c = 1/C - e_c``) and, for the row sums, fits the unknown feature
scale ``s`` as well. With a bias and a model that is still untrained this is the
count estimate ``n_c = B (p_bar_c - g_c)`` of Geng et al. (2021) with the mean
prediction ``p_bar`` measured instead of assumed; on a trained model, whose
predictions depend on the class, the class-wise columns matter (a confident model
has ``g_c`` close to ``-n_c (1 - p_bar_cc) / B``, not ``p_bar_c - n_c / B``). The
result says which estimate was used.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .._checks import check_positive_int, check_tensor

__all__ = ["LabelRecovery", "last_layer_gradient", "recover_labels", "label_recovery", "ESTIMATES"]

#: How the batch's predictions were estimated: from labelled auxiliary records, unlabelled
#: auxiliary records (classes from the model's predictions), random dummy inputs, or assumed uniform.
ESTIMATES = ("auxiliary", "auxiliary (predicted classes)", "dummy", "uniform")


@dataclass
class LabelRecovery:
    """The labels read off a batch gradient and how they were estimated.

    ``labels`` ``(T, B)`` (sorted per trial), ``counts`` ``(T, C)``; ``estimate`` is one
    of :data:`ESTIMATES` (``"exact"`` for a batch of one, where no estimate is needed);
    ``head`` is ``"bias"`` (the bias gradient was read) or ``"no bias"`` (the weight
    gradient's row sums, scaled by the feature sums measured on the attacker's data);
    ``sign_rule`` whether every class with a negative entry was given a record (valid
    with a bias or with non-negative features); ``residual`` ``(T,)`` the relative
    misfit ``|M n / B - g| / |g|`` of the chosen counts.
    """

    labels: torch.Tensor
    counts: torch.Tensor
    estimate: str
    head: str
    sign_rule: bool
    residual: torch.Tensor
    info: dict = field(default_factory=dict)


def _output_layer(grads: Mapping[str, torch.Tensor], num_classes: int) -> tuple[str, str | None]:
    """Keys of the output layer's weight gradient ``(T, C, F)`` and its bias ``(T, C)`` (or None)."""
    check_positive_int("num_classes", num_classes, minimum=2)
    items = list(grads.items())
    for i in range(len(items) - 1, -1, -1):
        name, g = items[i]
        if isinstance(g, torch.Tensor) and g.ndim == 3 and g.shape[1] == num_classes:
            if i + 1 < len(items):
                bname, b = items[i + 1]
                if isinstance(b, torch.Tensor) and b.ndim == 2 and b.shape[1] == num_classes:
                    return name, bname
            return name, None
    shapes = {k: tuple(v.shape) for k, v in items}
    raise ValueError(
        f"grads has no output layer of shape (T, {num_classes}, F) to read labels from; got {shapes}"
    )


def last_layer_gradient(grads: Mapping[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """The per-class signal of the output layer, shape ``(T, num_classes)``.

    ``grads`` holds gradients with a leading trial dimension. The output layer is
    the last parameter whose shape is ``(T, num_classes, F)``; its bias gradient
    (the next parameter, shape ``(T, num_classes)``) is returned where there is one,
    else the row sums of the weight gradient, which are the bias gradient scaled
    record by record by the sum of its features (see the module text).
    """
    wkey, bkey = _output_layer(grads, num_classes)
    g = grads[bkey] if bkey is not None else grads[wkey].sum(-1)
    check_tensor("the output layer's gradient", g, floating=True)
    return g


def _last_linear(model: nn.Module, num_classes: int, weight_shape) -> str:
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None or tuple(last[1].weight.shape) != tuple(weight_shape):
        raise ValueError(f"the model's last nn.Linear must map to {num_classes} classes with weight shape "
                         f"{tuple(weight_shape)} to estimate label counts")
    return last[0]


@torch.no_grad()
def _columns(model: nn.Module, params: Mapping[str, torch.Tensor], layer: str, x: torch.Tensor,
             y: torch.Tensor | None, *, num_classes: int, bias: bool):
    """Per trial, ``M`` ``(T, C, C)`` (column c: mean of s_i (p_i - e_c) over inputs of class c) and
    whether every feature on the attacker's data is non-negative."""
    from torch.func import functional_call

    module = dict(model.named_modules())[layer]
    store: dict = {}
    handle = module.register_forward_hook(lambda _m, inp, _o: store.__setitem__("h", inp[0]))
    T = next(iter(params.values())).shape[0]
    Ms, nonneg = [], True
    try:
        for t in range(T):
            p = {k: v[t] for k, v in params.items()}
            out = functional_call(model, p, (x,)).double()
            h = store["h"].double().flatten(1)
            prob = torch.softmax(out, -1)                                      # (n, C)
            cls = out.argmax(-1) if y is None else y
            s = torch.ones(len(x), dtype=prob.dtype, device=prob.device) if bias else h.sum(1)
            nonneg = nonneg and bool((h >= 0).all())
            onehot = torch.nn.functional.one_hot(cls, num_classes).to(prob.dtype)
            col_sum = (s[:, None] * prob).T @ onehot                          # (C, C): sum over class c of s p
            s_sum = s @ onehot                                                 # (C,): sum over class c of s
            count = onehot.sum(0)
            overall = (s[:, None] * prob).mean(0)                              # for classes never seen
            M = torch.where(count > 0, col_sum / count.clamp_min(1), overall[:, None])
            M = M - torch.diag(torch.where(count > 0, s_sum / count.clamp_min(1), s.mean()))
            Ms.append(M.cpu())
    finally:
        handle.remove()
    return torch.stack(Ms), nonneg


def _fit_counts(g: torch.Tensor, M: torch.Tensor, B: int, present: torch.Tensor, restrict: bool,
                fit_scale: bool):
    """Greedy integer least squares: ``n >= 0``, ``sum n = B``, ``g ~ a M n / B`` (``a = 1`` unless fitted).

    Every class in ``present`` (``(T, C)`` bool) starts with one record (the most negative
    entries first if there are more than ``B``); with ``restrict`` the other records go to
    those classes only (where any is present).
    """
    T, C = g.shape
    order = torch.argsort(torch.where(present, g, torch.full_like(g, math.inf)), dim=-1)
    take = torch.gather(present, 1, order) & (torch.arange(C, device=g.device) < B)
    counts = torch.zeros(T, C, dtype=torch.long, device=g.device).scatter_(1, order, take.long())
    allowed = present if restrict else torch.ones_like(present)
    allowed = torch.where(allowed.any(-1, keepdim=True), allowed, torch.ones_like(allowed))
    eye = torch.eye(C, dtype=g.dtype, device=g.device)

    def misfit(n):                                     # n (T, K, C) candidate counts -> (T, K)
        pred = torch.einsum("tcd,tkd->tkc", M, n.to(g.dtype)) / B
        if fit_scale:
            a = (pred * g[:, None]).sum(-1) / (pred * pred).sum(-1).clamp_min(1e-300)
            pred = a.clamp_min(0)[..., None] * pred
        return ((pred - g[:, None]) ** 2).sum(-1)

    for _ in range(B):
        room = counts.sum(-1) < B
        if not room.any():
            break
        cand = counts[:, None, :] + eye.long()[None]     # add one record to each class
        best = misfit(cand).masked_fill(~allowed, math.inf).argmin(-1)
        counts[room, best[room]] += 1
    resid = misfit(counts[:, None])[:, 0].sqrt() / g.norm(dim=-1).clamp_min(1e-300)
    return counts, resid


def label_recovery(grads: Mapping[str, torch.Tensor], *, num_classes: int, batch_size: int,
                   model: nn.Module | None = None, params: Mapping[str, torch.Tensor] | None = None,
                   aux: torch.Tensor | None = None, aux_labels: torch.Tensor | None = None,
                   input_shape=None, dummies: int = 64, seed: int = 0) -> LabelRecovery:
    """The labels of ``T`` batches read off their gradients, with the estimate used.

    ``grads`` maps parameter names to ``(T, ...)`` gradients. For ``batch_size = 1``
    the label is the class with the most negative entry (exact for cross-entropy).
    For larger batches the counts are fitted as in the module text. The batch's
    predictions are estimated with ``model`` at the trial's ``params`` (``(T, ...)``
    tensors) on ``aux`` inputs ``(n, *input_shape)`` (with ``aux_labels`` ``(n,)``
    when known), or, without ``aux``, on ``dummies`` random inputs uniform in
    ``[0, 1]`` of ``input_shape`` drawn with ``seed``; without ``model`` the mean
    prediction is assumed uniform.
    """
    check_positive_int("batch_size", batch_size)
    wkey, bkey = _output_layer(grads, num_classes)
    g = last_layer_gradient(grads, num_classes).detach().double().cpu()        # (T, C)
    T, C = g.shape
    head = "bias" if bkey is not None else "no bias"
    if batch_size == 1:
        labels = g.argmin(-1, keepdim=True)
        counts = torch.nn.functional.one_hot(labels[:, 0], C)
        return LabelRecovery(labels, counts, "exact", head, True, torch.zeros(T, dtype=g.dtype, device=g.device))
    if model is not None:
        if params is None:
            params = {k: v.detach().unsqueeze(0).expand(T, *v.shape) for k, v in model.named_parameters()}
        dev = next(iter(params.values())).device
        if aux is not None:
            check_tensor("aux", aux, floating=True)
            x = aux.to(dev)
            if aux_labels is not None:
                check_tensor("aux_labels", aux_labels, ndim=1, finite=False)
                if aux_labels.is_floating_point() or aux_labels.shape[0] != aux.shape[0]:
                    raise ValueError(f"aux_labels must be {aux.shape[0]} integer labels, got "
                                     f"{aux_labels.dtype} {tuple(aux_labels.shape)}")
                if aux_labels.numel() and (aux_labels.min() < 0 or aux_labels.max() >= C):
                    raise ValueError(f"aux_labels must lie in [0, {C - 1}]")
                estimate = "auxiliary"
            else:
                estimate = "auxiliary (predicted classes)"
        else:
            if input_shape is None:
                raise ValueError("input_shape is needed to draw dummy inputs when no aux records are given")
            check_positive_int("dummies", dummies)
            gen = torch.Generator().manual_seed(int(seed))
            x = torch.rand(dummies, *tuple(int(s) for s in input_shape), generator=gen).to(dev)
            estimate = "dummy"
        layer = _last_linear(model, C, grads[wkey].shape[1:])
        M, nonneg = _columns(model, params, layer, x, None if aux_labels is None else aux_labels.to(dev),
                             num_classes=C, bias=bkey is not None)
        # random dummies do not have the feature scale of real records: fit it for the row sums
        fit_scale = bkey is None and aux is None
        sign_rule = bkey is not None or nonneg
        rows = nonneg            # non-negative features: a row of an absent class has no negative entry
    else:
        M = (torch.full((C, C), 1.0 / C, dtype=g.dtype, device=g.device)
             - torch.eye(C, dtype=g.dtype, device=g.device)).expand(T, C, C)
        estimate, fit_scale = "uniform", bkey is None   # row sums carry an unknown feature scale
        sign_rule, rows = True, False
    present = (g < 0) if sign_rule else torch.zeros_like(g, dtype=torch.bool)
    if rows:
        present = present | (grads[wkey].detach().cpu().amin(-1) < 0)
    counts, resid = _fit_counts(g, M, batch_size, present, rows, fit_scale)
    labels = torch.repeat_interleave(torch.arange(C, device=counts.device).repeat(T), counts.flatten()).reshape(T, batch_size)
    dev = grads[wkey].device
    return LabelRecovery(labels.to(dev), counts.to(dev), estimate, head, sign_rule, resid,
                         info={"columns": M, "present": present, "row_test": rows})


def recover_labels(grads: Mapping[str, torch.Tensor], *, num_classes: int, batch_size: int,
                   **estimate) -> torch.Tensor:
    """Labels ``(T, batch_size)`` read off the output layer's gradient (iDLG and batches).

    A shortcut for ``label_recovery(...).labels``; ``estimate`` holds its
    ``model``, ``params``, ``aux``, ``aux_labels``, ``input_shape``, ``dummies`` and ``seed``.
    """
    return label_recovery(grads, num_classes=num_classes, batch_size=batch_size, **estimate).labels
