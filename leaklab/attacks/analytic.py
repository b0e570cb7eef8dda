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
``delta_jk / sum_j delta_jk`` that change from row to row. The least-squares
combination is then a blend of all inputs, not any one of them. Rows where a
single sample dominates (after a ReLU, a hidden unit that only one sample
activates) still give that sample back; the attack returns, for a batch of
``B``, the ratios of the ``B`` rows with the largest bias gradients and leaves the
blend in ``info["mix"]``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_positive_int, check_tensor
from .base import Reconstruction, register_attack

__all__ = ["fc_input_from_gradients", "row_ratios", "first_linear_layer", "analytic_attack"]


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


def first_linear_layer(model: nn.Module, input_shape) -> tuple[str, nn.Linear]:
    """The name and module of the first ``nn.Linear`` that sees the flattened input.

    Only a ``Flatten`` (or nothing) may stand between the input and that layer,
    as in :class:`leaklab.models.MLP`; anything else raises a ``ValueError``.
    """
    n = math.prod(int(s) for s in input_shape)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Flatten, nn.Identity, nn.Sequential)) or module is model:
            continue
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
    returns the ratios of the ``B`` rows with the largest bias gradients, and
    ``info["mix"]`` the least-squares blend of the batch (see the module text).
    ``device``, ``seed`` and ``progress`` are accepted for the common signature;
    the attack is deterministic and has no loop.
    """
    if options:
        raise TypeError(f"the analytic attack takes no options, got: {', '.join(sorted(options))}")
    check_positive_int("batch_size", batch_size)
    name, layer = first_linear_layer(model, input_shape)
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
    if batch_size == 1:
        x = mix.reshape(T, 1, *shape)
    else:
        x = row_ratios(gw, gb, min(batch_size, layer.out_features))       # (T, <=B, N)
        if x.shape[1] < batch_size:   # fewer rows than samples: pad with the blend
            pad = mix.unsqueeze(1).expand(T, batch_size - x.shape[1], mix.shape[-1])
            x = torch.cat([x, pad], 1)
        x = x.reshape(T, batch_size, *shape)
    # residual of the rank-one fit: zero for a single sample, large for a batch
    resid = gw - gb.unsqueeze(-1) * mix.unsqueeze(-2)
    loss = resid.flatten(1).norm(dim=1) / gw.flatten(1).norm(dim=1).clamp_min(1e-30)
    y = None
    last = _last_bias(model, num_classes)
    if batch_size == 1 and last is not None and last in grads:
        y = grads[last].argmin(-1).reshape(T, 1)
    return Reconstruction(x=x, y=y, loss=loss, info={
        "layer": name, "mix": mix.reshape(T, *shape), "relative_residual": loss,
        "exact": batch_size == 1,
    })
