"""The linear-system view of the Secret Polarization Network (our reading of paper A).

:mod:`leaklab.theory.linear` writes one layer's gradients as ``A(delta) x = b``: the
matrix ``A`` is built from the layer's output errors ``delta``. Under SPN the errors
of every layer below the penultimate features carry the secret head's contribution,
``delta = delta_CE + alpha * delta_pol``, and ``delta_pol`` depends on the secret head
``P`` and codes ``t``. For each layer of an SPN model, :func:`analyse_spn_layers`
compares three attackers:

* **oracle** — knows the true errors (the secret included): the system is the one
  chapter 2 studies, unique or not by its rank, and solved exactly when unique;
* **static** — computes the errors from cross-entropy alone (it ignores the secret):
  it writes a *different* matrix ``A(delta_CE)``; the data do not satisfy it, and its
  least-squares solution is wrong even without noise (``static_error``);
* **unknown errors** — treats the layer's errors as unknowns beside ``x``: the
  observations ``(dW, db)`` are then *bilinear* in ``(x, delta)``. Linearising at the
  truth gives a Jacobian whose null space holds the locally indistinguishable changes;
  ``x_free`` counts the directions of ``x`` among them (0: ``x`` is still determined
  locally, whatever the errors). This attacker knows less than an adaptive one
  (which knows ``delta_CE`` and the form of ``delta_pol``), so ``x_free = 0`` means no
  secret of SPN's kind can hide ``x`` at this layer.

Where SPN cannot help, whatever its secret: a fully connected layer with a bias and
a single record gives ``dW = delta x^T`` and ``db = delta``, so ``x = dW_i / db_i`` for
any row with ``db_i != 0``: the errors need not be known at all
(:func:`leaklab.attacks.analytic.fc_input_from_gradients`). The task head, whose
gradient SPN does not touch, gives away the penultimate features the same way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_tensor
from ..theory.layers import conv_system, fc_system
from ..theory.system import DTYPE

__all__ = ["spn_layer_errors", "bilinear_identifiability", "analyse_spn_layers", "ERROR_PARTS"]

#: Which errors :func:`spn_layer_errors` returns.
ERROR_PARTS = ("total", "ce", "secret")


def _layers(model) -> dict[str, nn.Module]:
    return {n: m for n, m in model.base.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def spn_layer_errors(model, layer: str, x: torch.Tensor, y: torch.Tensor, *,
                     part: str = "total") -> tuple[torch.Tensor, torch.Tensor]:
    """The input of a layer of an SPN model's shared network and its output errors.

    ``layer`` names a ``Linear``/``Conv2d`` module of ``model.base`` (e.g. ``"features.0"``).
    ``part`` selects the loss whose errors are returned: ``"total"`` (``CE + alpha * L_pol``,
    what the released gradient is made of), ``"ce"`` (cross-entropy alone: what a static
    attacker computes) or ``"secret"`` (``alpha * L_pol`` alone: the secret head's share).
    """
    from .model import SPNModel, polarization_loss

    if not isinstance(model, SPNModel):
        raise TypeError(f"model must be an SPN model, got {type(model).__name__}")
    check_tensor("x", x, floating=True)
    check_choice("part", part, ERROR_PARTS)
    layers = _layers(model)
    check_choice("layer", layer, layers)
    store: dict = {}

    def hook(_m, inputs, output):
        store["input"], store["output"] = inputs[0], output

    handle = layers[layer].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            feats, logits = model.features_and_logits(x)
            ce = F.cross_entropy(logits, y)
            pol = model.alpha * polarization_loss(model.polar(feats), model.codes[y], margin=model.margin)
            loss = {"total": ce + pol, "ce": ce, "secret": pol}[part]
            (deltas,) = torch.autograd.grad(loss, store["output"], allow_unused=True)
    finally:
        handle.remove()
    if deltas is None:
        deltas = torch.zeros_like(store["output"])
    return store["input"].detach(), deltas.detach()


def _observe(module: nn.Module, x: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """``(dW, db)`` of a layer for inputs ``x`` and output errors ``deltas``, flattened (bilinear in both)."""
    if isinstance(module, nn.Linear):
        dw = deltas.T @ x
        db = deltas.sum(0)
    else:
        k, s, p = module.kernel_size[0], module.stride[0], module.padding[0]
        patches = F.unfold(x, k, padding=p, stride=s)                       # (B, Cin*k*k, L)
        d = deltas.flatten(2)                                               # (B, Cout, L)
        dw = torch.einsum("bcl,brl->cr", d, patches)
        db = d.sum((0, 2))
    parts = [dw.flatten()] + ([db] if module.bias is not None else [])
    return torch.cat(parts)


def bilinear_identifiability(module: nn.Module, x: torch.Tensor, deltas: torch.Tensor) -> dict:
    """Local identifiability of ``x`` from one layer's gradients when its errors are unknown too.

    The observations ``g(x, delta) = (dW, db)`` are bilinear; the Jacobian ``J`` of ``g`` at
    the true ``(x, delta)`` (float64) has a null space of locally indistinguishable changes.
    Returns ``unknowns`` (entries of ``x`` and ``delta``), ``equations``, ``rank`` (of ``J`` with
    unit columns, with the tolerance of :class:`leaklab.theory.LinearSystem`) and ``x_free``: the dimension of
    the null space's projection on ``x`` (0: ``x`` is locally determined even with unknown errors).
    """
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise TypeError(f"module must be nn.Linear or nn.Conv2d, got {type(module).__name__}")
    x64, d64 = x.detach().to(DTYPE), deltas.detach().to(DTYPE)
    nx = x64.numel()
    jx, jd = torch.autograd.functional.jacobian(lambda a, b: _observe(module, a, b), (x64, d64),
                                                vectorize=True, strategy="forward-mode")
    J = torch.cat([jx.reshape(jx.shape[0], -1), jd.reshape(jd.shape[0], -1)], 1)
    # rescaling an unknown does not change what is identifiable; unit columns remove the imbalance
    # between the input's scale and the errors' (which otherwise decides the numerical rank)
    J = J / J.norm(dim=0, keepdim=True).clamp_min(1e-300)
    u, s, vh = torch.linalg.svd(J, full_matrices=True)
    eps = max(torch.finfo(x.dtype).eps, torch.finfo(deltas.dtype).eps)
    tol = float(s[0]) * max(J.shape) ** 0.5 * eps if s.numel() else 0.0
    rank = int((s > tol).sum())
    null = vh[rank:].T                                                      # (unknowns, dim)
    if null.shape[1] == 0:
        x_free = 0
    else:
        sx = torch.linalg.svdvals(null[:nx])
        x_free = int((sx > 1e-6).sum())
    return {"unknowns": J.shape[1], "equations": J.shape[0], "rank": rank, "x_free": x_free}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def analyse_spn_layers(model, x: torch.Tensor, y: torch.Tensor, *, layers=None) -> list[dict]:
    """For each ``Linear``/``Conv2d`` layer of the SPN model's shared network, the three attackers' systems.

    ``x`` ``(B, ...)``, ``y`` ``(B,)`` is the private batch. Each row holds ``layer``, ``kind``
    (``"fc"``/``"conv"``), ``unknowns`` and ``equations`` of the linear system in ``x``,
    ``secret_share`` (``|delta_pol| / |delta|`` of the layer's errors), the oracle's
    ``rank``, ``unique`` and ``oracle_error``, the static attacker's ``static_error`` (relative
    L2 error of its least-squares solution against the true gradient), and, with the
    errors unknown, ``bilinear_rank``, ``bilinear_unknowns`` and ``x_free`` (see
    :func:`bilinear_identifiability`). Relative errors compare to the layer's true input.
    """
    mods = _layers(model)
    names = list(mods) if layers is None else list(layers)
    rows = []
    for name in names:
        check_choice("layers", name, mods)
        m = mods[name]
        inp, d_tot = spn_layer_errors(model, name, x, y, part="total")
        _, d_ce = spn_layer_errors(model, name, x, y, part="ce")
        bias = m.bias is not None
        if isinstance(m, nn.Linear):
            inp = inp.flatten(1)
            build = lambda d, m=m: fc_system(m.weight, d, bias=bias)  # noqa: E731
        else:
            shape = tuple(inp.shape[1:])
            build = lambda d, m=m, shape=shape: conv_system(  # noqa: E731
                m.weight, d, input_shape=shape, stride=m.stride[0], padding=m.padding[0], bias=bias)
        oracle, static = build(d_tot), build(d_ce)
        observed = oracle.observe(inp)                   # the layer's true gradient (what was released)
        x_true = inp.to(DTYPE)
        ident = bilinear_identifiability(m, inp, d_tot)
        rows.append({
            "layer": name, "kind": "fc" if isinstance(m, nn.Linear) else "conv", "bias": bias,
            "unknowns": oracle.unknowns, "equations": oracle.equations,
            "secret_share": float((d_tot - d_ce).norm() / d_tot.norm().clamp_min(1e-30)),
            "rank": oracle.rank, "unique": oracle.unique,
            "oracle_error": _rel(oracle.solve(observed).reshape(x_true.shape), x_true),
            "static_error": _rel(static.solve(observed).reshape(x_true.shape), x_true),
            "bilinear_unknowns": ident["unknowns"], "bilinear_rank": ident["rank"], "x_free": ident["x_free"],
        })
    return rows
