"""What a client can check in a model it receives before it trains on it.

A malicious server (chapter 13) sends a model built to make records alone in rows of a
layer's gradient. Two signs of it can be read off the model a client receives:

* **an imprint layer**: a fully connected layer whose rows all measure one statistic (its
  rows are parallel, nearly, while the rows of a trained or freshly initialised layer
  point in many directions), with biases that form a ladder of thresholds;
* **trap weights**: a hidden fully connected layer whose units fire for a small share of
  the client's own records (a layer initialised the usual way fires for about half).

:func:`inspect_model` reports both, layer by layer. It is a screen, not a proof: a server
that knows the check can hide a construction from it (chapter 13's exercises try one).

>>> import leaklab, torch
>>> from leaklab.attacks.imprint import imprint_model
>>> digits = leaklab.load_dataset("digits")
>>> honest = leaklab.build_model("mlp", digits.input_shape, 10, seed=0)
>>> inspect_model(honest, digits.x[:64])
[]
>>> [f.kind for f in inspect_model(imprint_model(honest, digits.x[1000:], bins=32), digits.x[:64])]
['imprint']
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_fraction, check_tensor

__all__ = ["Finding", "inspect_model"]


@dataclass
class Finding:
    """One suspicious layer: its ``layer`` name, ``kind`` (``"imprint"`` or ``"trap"``), a
    measured ``score`` (the rows' alignment, or the units' median firing rate) and a ``detail`` line."""

    layer: str
    kind: str
    score: float
    detail: str


def _linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def inspect_model(model: nn.Module, x: torch.Tensor | None = None, *, aligned: float = 0.99,
                  firing: float = 0.1) -> list[Finding]:
    """The layers of ``model`` that look like an imprint block or trap weights (empty: none found).

    A fully connected layer with at least four rows is an *imprint* when the median
    ``|cos|`` between its rows and their leading direction reaches ``aligned``. With the
    client's own records ``x (B, ...)``, a hidden fully connected layer (not the last
    one, whose outputs are logits) is a *trap* when the median share of the records for
    which its units fire (pre-activation > 0) is below ``firing``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    aligned = check_fraction("aligned", aligned)
    firing = check_fraction("firing", firing)
    layers = _linear_layers(model)
    found: list[Finding] = []
    for name, mod in layers:
        w = mod.weight.detach().double()
        if w.shape[0] < 4:
            continue
        rows = w / w.norm(dim=1, keepdim=True).clamp_min(1e-30)
        lead = torch.linalg.svd(rows, full_matrices=False).Vh[0]            # the rows' leading direction
        score = float((rows @ lead).abs().median())
        if score >= aligned:
            spread = ""
            if mod.bias is not None:
                b = mod.bias.detach()
                spread = f", biases from {float(b.min()):.3g} to {float(b.max()):.3g} ({b.unique().numel()} distinct)"
            found.append(Finding(name, "imprint", score,
                                 f"its {w.shape[0]} rows measure one statistic (median |cos| to their leading "
                                 f"direction {score:.4f}){spread}: a ladder of thresholds on one number"))
    if x is not None:
        check_tensor("x", x, floating=True)
        hidden = layers[:-1]
        rates: dict[str, torch.Tensor] = {}

        def hook(name):
            def f(_mod, _inp, out):
                rates[name] = (out > 0).double().reshape(-1, out.shape[-1]).mean(0)
            return f

        handles = [m.register_forward_hook(hook(n)) for n, m in hidden]
        try:
            dev = next((p.device for p in model.parameters()), torch.device("cpu"))
            model(x.to(dev))
        finally:
            for h in handles:
                h.remove()
        for name, _ in hidden:
            if name not in rates or any(f.layer == name for f in found):
                continue
            med = float(rates[name].median())
            if med < firing:
                found.append(Finding(name, "trap", med,
                                     f"its units fire for a median {med:.1%} of your {x.shape[0]} records (a layer "
                                     f"initialised the usual way fires for about half): few records per unit"))
    return found
