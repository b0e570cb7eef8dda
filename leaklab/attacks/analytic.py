"""Exact recovery of an input from a fully connected layer's gradients.

For a layer ``o = W x + b`` and one sample, ``dL/dW = delta x^T`` and
``dL/db = delta``: every row ``k`` of the weight gradient is the input scaled by
``delta_k``, so ``x = (dL/dW)_k / (dL/db)_k`` for any row with a non-zero bias
gradient (the observation of Phong et al., 2017). Rather than trust one row,
:func:`fc_input_from_gradients` combines all of them by least squares,

``x = sum_k g_k (dL/dW)_k / sum_k g_k^2``  with ``g = dL/db``,

which weights each row's ratio by ``g_k^2``: rows whose bias gradient is tiny
(and whose ratio is mostly rounding error) count for little.

For a batch, ``dL/dW = sum_j delta_j x_j^T`` and ``dL/db = sum_j delta_j``: each
row's ratio is a weighted mix of the batch, with weights
``delta_jk / sum_j delta_jk`` that change from row to row, and the least-squares
combination of all rows is a blend that resembles none of the inputs. But after a
ReLU ``delta_jk = 0`` whenever hidden unit ``k`` is off for record ``j``: a unit that
fires for exactly one record has a mix with a single term, and its row ratio *is*
that record. Two such rows of the same record give the same ratio vector, while two
rows that mix several records almost never do (their weights differ from row to
row). :func:`isolate_records` therefore groups the rows whose ratios agree (relative
distance below ``tol``); every group of two or more rows is one record read off
exactly, combined by least squares over the group's rows. The attacker knows the
model, so it can check a group and go further: for one label, the record's own
gradient (``1/B`` of it, the mean loss) reproduces the group's rows; that label
certifies the record, and subtracting the record's share from the release turns
every row that mixed it with a single other record into a copy of that other
record. The search then starts again on what is left, until ``B`` records are found
or no rows agree. Remaining slots take the rows that differ most from what was
found (the part of their ratio outside the span of the records found).
``info["recovered"]`` counts, per trial, the records certified (a group whose label
check passed, or, with ``peel=False``, a group of agreeing rows); ``info["exact"]``
marks them slot by slot and ``info["labels"]`` holds their labels (``-1`` elsewhere).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_positive_int, check_tensor
from .base import Reconstruction, register_attack

__all__ = ["fc_input_from_gradients", "row_ratios", "isolate_records", "first_linear_layer", "analytic_attack"]


def _check_pair(weight_grad, bias_grad) -> None:
    check_tensor("weight_grad", weight_grad, floating=True)
    check_tensor("bias_grad", bias_grad, floating=True)
    if weight_grad.ndim < 2:
        raise ValueError(f"weight_grad must have shape (..., K, N), got {tuple(weight_grad.shape)}")
    if tuple(bias_grad.shape) != tuple(weight_grad.shape[:-1]):
        raise ValueError(
            f"bias_grad must have shape {tuple(weight_grad.shape[:-1])} to match weight_grad "
            f"{tuple(weight_grad.shape)}, got {tuple(bias_grad.shape)}"
        )


def fc_input_from_gradients(weight_grad: torch.Tensor, bias_grad: torch.Tensor) -> torch.Tensor:
    """The input of a fully connected layer from its weight and bias gradients.

    ``weight_grad`` has shape ``(..., K, N)`` and ``bias_grad`` ``(..., K)``; the result
    ``(..., N)`` is exact for a single sample. Leading dimensions (trials) are
    batched. Where every bias gradient of a trial is zero the gradients carry no
    information about the input and the result is zero.
    """
    _check_pair(weight_grad, bias_grad)
    num = torch.einsum("...k,...kn->...n", bias_grad, weight_grad)
    den = (bias_grad ** 2).sum(-1, keepdim=True)
    tiny = torch.finfo(bias_grad.dtype).tiny
    return torch.where(den > tiny, num / den.clamp_min(tiny), torch.zeros_like(num))


def row_ratios(weight_grad: torch.Tensor, bias_grad: torch.Tensor, count: int) -> torch.Tensor:
    """The ratios ``(dL/dW)_k / (dL/db)_k`` of the ``count`` rows with the largest ``|dL/db|``.

    Shapes ``(..., K, N)`` and ``(..., K)`` give ``(..., count, N)``. For a single sample
    every row gives the input; for a batch each row gives its own mix of the batch.
    """
    _check_pair(weight_grad, bias_grad)
    check_positive_int("count", count)
    K = bias_grad.shape[-1]
    if count > K:
        raise ValueError(f"count must be <= the layer's {K} output features, got {count}")
    idx = bias_grad.abs().topk(count, dim=-1).indices                     # (..., count)
    g = bias_grad.gather(-1, idx)
    rows = weight_grad.gather(-2, idx.unsqueeze(-1).expand(*idx.shape, weight_grad.shape[-1]))
    tiny = torch.finfo(bias_grad.dtype).tiny
    safe = torch.where(g.abs() > tiny, g, torch.ones_like(g))
    return torch.where(g.abs().unsqueeze(-1) > tiny, rows / safe.unsqueeze(-1), torch.zeros_like(rows))


def _agreeing_groups(gw: torch.Tensor, gb: torch.Tensor, tol: float, floor: float) -> list[torch.Tensor]:
    """Groups (row indices) of two or more live rows whose ratios agree, largest first."""
    idx = (gb.abs() > floor).nonzero().flatten()
    if idx.numel() < 2:
        return []
    g = gb[idx]
    ratios = gw[idx] / g[:, None]
    norms = ratios.norm(dim=1)
    dist = torch.cdist(ratios, ratios) / torch.maximum(norms[:, None], norms[None, :]).clamp_min(1e-30)
    # leader clustering: the live row with the largest |bias gradient| gathers every row that agrees with it
    free = torch.ones(idx.numel(), dtype=torch.bool, device=g.device)
    groups = []
    for i in torch.argsort(g.abs(), descending=True).tolist():
        if not free[i]:
            continue
        members = (free & (dist[i] < tol)).nonzero().flatten()
        free[members] = False
        if members.numel() >= 2:
            groups.append(members)
    groups.sort(key=lambda m: (m.numel(), float((g[m] ** 2).sum())), reverse=True)
    return [idx[m] for m in groups]


def _isolate_one(gw: torch.Tensor, gb: torch.Tensor, count: int, tol: float, contrib=None):
    """One trial of :func:`isolate_records`: ``gw`` ``(K, N)``, ``gb`` ``(K,)`` in float64."""
    N = gw.shape[-1]
    x = gw.new_zeros(count, N)
    exact = torch.zeros(count, dtype=torch.bool, device=gw.device)
    labels = torch.full((count,), -1, dtype=torch.long, device=gw.device)
    scale = float(gb.abs().max())
    if scale == 0:
        return x, exact, labels
    floor = 1e-6 * scale                 # below this a row is rounding left over from a float32 release
    gw, gb = gw.clone(), gb.clone()
    found = 0
    while found < count:
        groups = _agreeing_groups(gw, gb, tol, floor)
        if not groups:
            break
        m = groups[0]
        g = gb[m]
        x[found] = (g[:, None] * gw[m]).sum(0) / (g ** 2).sum()   # least squares over the group's rows
        peeled = False
        if contrib is not None:
            # the record's own share of the gradient, for every label: the right label reproduces its rows
            cw, cb = contrib(x[found])
            err = (cb[:, m] - g).norm(dim=1) / g.norm()
            c = int(err.argmin())
            if err[c] < 1e-3:
                gw, gb = gw - cw[c], gb - cb[c]
                labels[found], peeled = c, True
        # with the model's help a record is certified by its label; without, by the agreement alone
        exact[found] = peeled or contrib is None
        if not peeled:                    # cannot subtract it: set its rows aside instead
            gb[m] = 0.0
        found += 1
    # fill the remaining slots with the rows least explained by what was found
    live = gb.abs() > floor
    done = [x[s] for s in range(found)]
    for slot in range(found, count):
        cand = live.nonzero().flatten()
        if cand.numel() == 0:
            x[slot] = fc_input_from_gradients(gw, gb) if done == [] else done[-1]
            continue
        r = gw[cand] / gb[cand, None]
        if done:
            q, _ = torch.linalg.qr(torch.stack(done, 1))                  # (N, F) orthonormal basis
            novelty = (r - (r @ q) @ q.T).norm(dim=1) / r.norm(dim=1).clamp_min(1e-30)
        else:
            novelty = torch.ones(cand.numel(), dtype=r.dtype, device=r.device)
        # the most novel row; among equally novel rows (nothing found yet) the largest |bias gradient|
        key = torch.round(novelty, decimals=6) * 1e6 + gb[cand].abs() / scale
        pick = int(key.argmax())
        x[slot] = r[pick]
        live[cand[pick]] = False
        done.append(r[pick])
    return x, exact, labels


def isolate_records(weight_grad: torch.Tensor, bias_grad: torch.Tensor, count: int, *,
                    tol: float = 1e-5, contributions=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``count`` records read off the rows of a batch gradient whose ratios agree.

    ``weight_grad`` ``(T, K, N)`` and ``bias_grad`` ``(T, K)`` give ``x`` ``(T, count, N)``,
    ``exact`` ``(T, count)`` and ``labels`` ``(T, count)``: ``exact[t, i]`` is true when
    slot ``i`` comes from a group of at least two rows whose ratios
    ``(dL/dW)_k / (dL/db)_k`` agree to a relative distance below ``tol`` (a record
    alone in those units: its copy, up to rounding). The other slots hold the best
    remaining guesses (see the module text).

    ``contributions(t, x)``, when given, returns the share ``(dL/dW, dL/db)`` that a
    record ``x`` ``(N,)`` would add to trial ``t``'s release for every label,
    ``(C, K, N)`` and ``(C, K)``. A record found is then peeled off: the label whose
    share reproduces the record's rows (relative error below ``1e-3``) goes to
    ``labels`` and its share is subtracted, which turns rows that mixed it with one
    other record into copies of that record. ``labels`` is ``-1`` where no label
    was found. The work runs in float64, trial by trial.
    """
    _check_pair(weight_grad, bias_grad)
    check_positive_int("count", count)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    if weight_grad.ndim != 3:
        raise ValueError(f"weight_grad must have shape (T, K, N), got {tuple(weight_grad.shape)}")
    gw, gb = weight_grad.detach().double().cpu(), bias_grad.detach().double().cpu()
    out = []
    for t in range(gw.shape[0]):
        fn = None if contributions is None else (lambda v, t=t: contributions(t, v))
        out.append(_isolate_one(gw[t], gb[t], count, float(tol), fn))
    x = torch.stack([o[0] for o in out]).to(weight_grad.device, weight_grad.dtype)
    exact = torch.stack([o[1] for o in out]).to(weight_grad.device)
    labels = torch.stack([o[2] for o in out]).to(weight_grad.device)
    return x, exact, labels


def _contributions(model: nn.Module, params, keys: tuple[str, str], *, input_shape, num_classes: int,
                   batch_size: int):
    """``f(t, x)``: one record's share of trial ``t``'s mean-loss gradient of the first layer, every label."""
    from torch.func import functional_call, grad, vmap

    wkey, bkey = keys

    def loss(p, x, y):
        return F.cross_entropy(functional_call(model, p, (x[None],)), y[None])

    per_label = vmap(grad(loss), in_dims=(None, None, 0))

    def f(t: int, x: torch.Tensor):
        p = {k: v[t].detach() for k, v in params.items()}
        ref = p[wkey]
        xi = x.to(ref.device, ref.dtype).reshape(input_shape)
        g = per_label(p, xi, torch.arange(num_classes, device=ref.device))
        return g[wkey].double().cpu() / batch_size, g[bkey].double().cpu() / batch_size

    return f


def first_linear_layer(model: nn.Module, input_shape) -> tuple[str, nn.Linear]:
    """The name and module of the first ``nn.Linear`` that sees the flattened input.

    Only a ``Flatten`` (or nothing) may stand between the input and that layer,
    as in :class:`leaklab.models.MLP`; anything else raises a ``ValueError``.
    """
    n = math.prod(int(s) for s in input_shape)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Flatten, nn.Identity)) or next(module.children(), None) is not None:
            continue                                  # a container (a model-side defense's wrapper too): look inside
        if isinstance(module, nn.Linear) and module.in_features == n:
            if module.bias is None:
                raise ValueError(f"the analytic attack needs a bias on the first linear layer "
                                 f"{name!r}; this model has none")
            return name, module
        raise ValueError(
            f"the analytic attack needs a model whose first layer is nn.Linear on the flattened "
            f"input ({n} features), e.g. 'mlp'; the first layer here is {name!r} "
            f"({type(module).__name__})"
        )
    raise ValueError("the model has no layers")


def _last_bias(model: nn.Module, num_classes: int) -> str | None:
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None or last[1].bias is None or last[1].out_features != num_classes:
        return None
    return f"{last[0]}.bias"


@register_attack("analytic")
def analytic_attack(model: nn.Module, params, grads, *, input_shape, num_classes: int,
                    batch_size: int = 1, device=None, seed: int = 0, progress: bool = False,
                    **options) -> Reconstruction:
    """Read the input off the first fully connected layer's gradients (no optimisation).

    ``grads`` maps parameter names to ``(T, ...)`` tensors. For ``batch_size = 1``
    the result is exact (up to floating-point rounding) and the label comes from
    the sign of the output layer's bias gradient. For ``batch_size = B > 1`` it
    returns one reconstruction per record from the groups of rows whose ratios
    agree (:func:`isolate_records`); ``info["recovered"]`` ``(T,)`` counts the
    records certified exact by such a group, ``info["exact"]`` ``(T, B)`` marks
    them, and ``info["mix"]`` holds the least-squares blend of all rows. ``tol``
    is the relative distance under which two row ratios count as the same record.
    ``device``, ``seed`` and ``progress`` are accepted for the common signature;
    the attack is deterministic and has no optimisation loop.
    """
    tol, peel = options.pop("tol", 1e-5), options.pop("peel", True)
    if options:
        raise TypeError(f"the analytic attack takes no options but tol and peel, got: "
                        f"{', '.join(sorted(options))}")
    check_positive_int("batch_size", batch_size)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    name, _ = first_linear_layer(model, input_shape)
    wkey, bkey = f"{name}.weight", f"{name}.bias"
    for key in (wkey, bkey):
        if key not in grads:
            raise ValueError(f"grads has no entry {key!r} (the first linear layer's gradient)")
    gw, gb = grads[wkey], grads[bkey]
    check_tensor(f"grads[{wkey!r}]", gw, ndim=3, floating=True)
    check_tensor(f"grads[{bkey!r}]", gb, ndim=2, floating=True)
    T = gw.shape[0]
    shape = tuple(int(s) for s in input_shape)
    mix = fc_input_from_gradients(gw, gb)                                   # (T, N)
    # residual of the rank-one fit: zero for a single sample, large for a batch
    resid = gw - gb.unsqueeze(-1) * mix.unsqueeze(-2)
    loss = resid.flatten(1).norm(dim=1) / gw.flatten(1).norm(dim=1).clamp_min(1e-30)
    if batch_size == 1:
        x = mix.reshape(T, 1, *shape)
        exact = (loss < tol).reshape(T, 1)
        labels = None
    else:
        contrib = _contributions(model, params, (wkey, bkey), input_shape=shape, num_classes=num_classes,
                                 batch_size=batch_size) if peel else None
        x, exact, labels = isolate_records(gw, gb, batch_size, tol=tol, contributions=contrib)
        x = x.reshape(T, batch_size, *shape)
    y = None
    last = _last_bias(model, num_classes)
    if batch_size == 1 and last is not None and last in grads:
        y = grads[last].argmin(-1).reshape(T, 1)
    return Reconstruction(x=x, y=y, loss=loss, info={
        "layer": name, "mix": mix.reshape(T, *shape), "relative_residual": loss,
        "exact": exact, "recovered": exact.sum(1), "labels": labels, "tol": tol, "peel": bool(peel),
    })
