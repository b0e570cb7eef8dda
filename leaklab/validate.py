"""Checks for a model brought by the user, run before any work starts.

:func:`check_model` is called by every entry point that takes an ``nn.Module``
(:func:`leaklab.attacks.run_reconstruction`, :func:`leaklab.games.play`,
:func:`leaklab.attacks.reconstruct`). It does what a user would otherwise learn from
a deep torch error half-way through a run:

* layers whose output for one record depends on the other records of the batch
  (BatchNorm in training mode) or on chance (active dropout) are named with the fix,
  in the way Opacus's ``ModuleValidator`` lists the layers DP-SGD cannot handle;
* a dry forward pass on one record checks the input shape and the class count, and
  infers the class count when it is not given.

>>> from leaklab.models import build_model
>>> check_model(build_model("mlp", (10,), 3), (10,))
3
>>> from torch import nn
>>> check_model(nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)), (10,))
Traceback (most recent call last):
...
ValueError: model: BatchNorm1d layer '1' is in training mode, where each record's output depends on the other records of its batch (and torch.func cannot compute per-trial gradients through it); call model.eval() so that it uses its running statistics, or replace it with nn.GroupNorm (e.g. nn.GroupNorm(1, 8))
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_model", "model_problems"]


def _fix_norm(name: str, mod: nn.Module) -> str:
    channels = getattr(mod, "num_features", None)
    example = f" (e.g. nn.GroupNorm(1, {channels}))" if channels else ""
    return (f"{type(mod).__name__} layer '{name}' is in training mode, where each record's output depends "
            "on the other records of its batch (and torch.func cannot compute per-trial gradients through "
            "it); call model.eval() so that it uses its running statistics, or replace it with "
            f"nn.GroupNorm{example}")


def model_problems(model: nn.Module) -> list[str]:
    """Layers of ``model`` that the batched gradient code cannot handle as they are, each with its fix.

    BatchNorm in training mode (batch statistics couple the records of a batch) and
    dropout with ``p > 0`` in training mode (a random mask on every call: the release is
    not a function of the batch, and ``torch.func.vmap`` refuses random operations).
    Both are fine in evaluation mode (``model.eval()``).
    """
    problems = []
    for name, mod in model.named_modules():
        label = name or "(the model itself)"
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training:
            problems.append(_fix_norm(label, mod))
        elif isinstance(mod, nn.modules.instancenorm._InstanceNorm) and mod.training and mod.track_running_stats:
            problems.append(f"{type(mod).__name__} layer '{label}' tracks running statistics in training mode "
                            "(an in-place update torch.func cannot batch); call model.eval() or build it with "
                            "track_running_stats=False")
        elif isinstance(mod, nn.modules.dropout._DropoutNd) and mod.training and mod.p > 0:
            problems.append(f"{type(mod).__name__} layer '{label}' (p={mod.p:g}) is active in training mode: "
                            "every forward pass draws a new random mask, so the released gradient is not a "
                            "function of the batch and torch.func.vmap refuses it; call model.eval() (dropout "
                            "off) or remove the layer")
    return problems


def _shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a sequence of positive ints, got {input_shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must hold positive sizes, got {shape}")
    return shape


def check_model(model, input_shape, num_classes: int | None = None) -> int:
    """Check that ``model`` maps one record of ``input_shape`` to ``num_classes`` logits; return the class count.

    Raises ``TypeError`` when ``model`` is not an ``nn.Module`` and ``ValueError``, in one
    line, when it has layers the attacks and games cannot batch (see
    :func:`model_problems`), no trainable floating-point parameters, parameters other than
    float32 (call ``model.float()``), non-finite parameters, or when a dry forward pass on one record (zeros of shape
    ``(1, *input_shape)``, without gradients, on the model's device) fails or gives an
    output other than ``(1, num_classes)``. With ``num_classes=None`` the class count is
    read off that output.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _shape(input_shape)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    problems = model_problems(model)
    if problems:
        more = f" (and {len(problems) - 1} more layer(s) like it)" if len(problems) > 1 else ""
        raise ValueError(f"model: {problems[0]}{more}")
    params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True), so it releases no gradient")
    for k, p in params:
        if not p.is_floating_point():
            raise ValueError(f"model parameter {k!r} has dtype {p.dtype}; gradients need floating-point parameters")
        if not torch.isfinite(p).all():
            raise ValueError(f"model parameter {k!r} contains NaN or inf values")
    dtypes = {p.dtype for _, p in params}
    if dtypes != {torch.float32}:
        k, p = next((k, p) for k, p in params if p.dtype != torch.float32)
        raise ValueError(f"model parameter {k!r} has dtype {p.dtype}; leaklab computes in float32 (its data, "
                         "dummy inputs and defenses are float32): call model.float() before handing it over")
    devices = {p.device for _, p in params}
    if len(devices) > 1:
        raise ValueError(f"model parameters lie on several devices ({', '.join(sorted(map(str, devices)))}); "
                         "move the model to one with model.to(device)")
    dev, dtype = params[0][1].device, params[0][1].dtype
    x = torch.zeros((1, *shape), device=dev, dtype=dtype)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001  (any failure of the user's forward pass is a shape/model error)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"model does not accept one record of input_shape {shape} (a batch of shape "
                         f"{(1, *shape)}): {type(exc).__name__}: {detail}") from None
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"model must return a tensor of logits, got {type(out).__name__} for input_shape {shape}")
    if callable(getattr(model, "objective", None)):   # its own objective: the output need not be logits
        return int(num_classes) if num_classes is not None else int(out.shape[-1]) if out.ndim else 1
    if out.ndim != 2 or out.shape[0] != 1:
        raise ValueError(f"model maps a batch of shape {(1, *shape)} to shape {tuple(out.shape)}; expected "
                         f"(1, num_classes) logits (input_shape {shape})")
    k = int(out.shape[1])
    if num_classes is not None and k != num_classes:
        raise ValueError(f"model outputs {k} classes, the data have num_classes={num_classes} "
                         f"(input_shape {shape}); build the model's last layer with {num_classes} outputs")
    if k < 2:
        raise ValueError(f"model outputs {k} logit per record; leaklab needs class logits (num_classes >= 2) "
                         "for its cross-entropy objective")
    if not torch.isfinite(out).all():
        raise ValueError(f"model outputs NaN or inf for a record of zeros of input_shape {shape}")
    return k
