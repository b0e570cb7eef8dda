"""R-GAP-style recursive reconstruction: one linear system per layer, from the top down.

Our reading of R-GAP (Zhu and Blaschko, 2021), for one sample and a plain chain of
fully connected and convolutional layers with invertible activations:

1. Output layer ``z_L = W_L a + b_L``. With cross-entropy, ``dL/dz_L = p - onehot(y)``
   *is* the bias gradient, and its only negative entry is the label (iDLG). The
   layer's input ``a`` follows from ``dL/dW_L = delta_L a^T`` by the analytic
   formula (:func:`~leaklab.attacks.analytic.fc_input_from_gradients`).
2. Going down one layer: ``a`` is the activation of the layer below, so its
   pre-activation is ``z = act^{-1}(a)`` (leaky ReLU, sigmoid and tanh are
   invertible; ReLU is not) and its error is ``delta = act'(z) * J^T delta_above``,
   with ``J`` the forward map of the layer above.
3. That layer's input ``x`` now satisfies two sets of linear equations: the
   forward equations ``W x = z - b`` (for a convolution, through im2col) and the
   weight-gradient equations ``dL/dW = sum_p delta_p patch_p(x)^T``. They are
   stacked (each block scaled to unit norm), solved by least squares, and the rank
   of the stacked matrix says whether the solution is unique.
4. Repeat down to the input.

Where a layer's rank is below its number of unknowns, the minimum-norm solution is
used and the error travels down; ``info["layers"]`` reports rank and unknowns per
layer and ``info["rank_deficient"]`` names the layers where the condition fails.

The matrices are dense (float64), so this is meant for small inputs and narrow
networks, such as :class:`RGAPNet` on 8x8 digits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_positive_int, check_tensor
from ..models import ACTIVATIONS, register_model
from ..runtime import get_device
from ..theory.layers import _patch_selector
from .analytic import fc_input_from_gradients
from .base import Reconstruction, register_attack

__all__ = ["RGAPNet", "rgap_attack", "rgap_layers"]

DTYPE = torch.float64
#: Most float64 entries (trials x rows x columns) held at once; trials are chunked to fit.
CHUNK_ENTRIES = 20_000_000


@register_model("rgapnet")
class RGAPNet(nn.Module):
    """A small convolutional net that R-GAP can invert: strided convolutions, leaky ReLU, a linear head.

    ``channels`` sets the width of each convolution (kernel ``kernel``, stride
    ``stride``, padding ``kernel // 2``). The defaults, ``(4, 4)`` on a 1x8x8
    digit, give every layer at least as many independent equations as unknowns;
    ``channels=(1, 1)`` does not.
    """

    def __init__(self, input_shape, num_classes: int, *, channels=(4, 4), kernel: int = 3,
                 stride: int = 2, activation: str = "leaky_relu"):
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            raise ValueError(f"model 'rgapnet' needs an image input_shape (C, H, W), got {shape}")
        check_choice("activation", activation, ACTIVATIONS)
        check_positive_int("kernel", kernel)
        check_positive_int("stride", stride)
        c, h, w = shape
        layers: list[nn.Module] = []
        for width in channels:
            check_positive_int("channels", int(width))
            layers += [nn.Conv2d(c, int(width), kernel, stride=stride, padding=kernel // 2),
                       ACTIVATIONS[activation]()]
            c = int(width)
            h = (h + 2 * (kernel // 2) - kernel) // stride + 1
            w = (w + 2 * (kernel // 2) - kernel) // stride + 1
            if h < 1 or w < 1:
                raise ValueError(f"input_shape {shape} is too small for {len(channels)} strided layers")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * h * w, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


# --- activations and their inverses ------------------------------------------------------

def _inverse(act: nn.Module | None, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activation ``z`` and derivative ``act'(z)`` from the activation's output ``a``."""
    if act is None or isinstance(act, nn.Identity):
        return a, torch.ones_like(a)
    if isinstance(act, nn.LeakyReLU):
        s = float(act.negative_slope)
        return torch.where(a > 0, a, a / s), torch.where(a > 0, torch.ones_like(a), torch.full_like(a, s))
    if isinstance(act, nn.Sigmoid):
        p = a.clamp(1e-15, 1 - 1e-15)
        return torch.log(p) - torch.log1p(-p), p * (1 - p)
    if isinstance(act, nn.Tanh):
        t = a.clamp(-1 + 1e-15, 1 - 1e-15)
        return torch.atanh(t), 1 - t * t
    raise AssertionError(act)


_INVERTIBLE = (nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Identity)


@dataclass
class _Layer:
    name: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    act: nn.Module | None = None


def rgap_layers(model: nn.Module, input_shape) -> list[_Layer]:
    """The model as a chain of linear/conv layers with their activations (in execution order).

    Raises a ``ValueError`` naming the obstacle when the model is not such a chain
    (a ReLU, a normalisation layer, a skip connection, ...).
    """
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    names = {id(m): n for n, m in leaves}
    order: list[tuple[nn.Module, tuple, tuple]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: order.append(
        (mod, tuple(inp[0].shape[1:]), tuple(out.shape[1:])))) for _, m in leaves]
    try:
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
    chain: list[_Layer] = []
    for mod, ins, outs in order:
        name = names[id(mod)]
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            if isinstance(mod, nn.Conv2d):
                ok = (mod.groups == 1 and mod.dilation == (1, 1) and mod.padding_mode == "zeros"
                      and not isinstance(mod.padding, str) and mod.stride[0] == mod.stride[1]
                      and mod.padding[0] == mod.padding[1] and mod.kernel_size[0] == mod.kernel_size[1])
                if not ok:
                    raise ValueError(f"rgap supports plain square convolutions; layer {name!r} is not one")
            chain.append(_Layer(name, mod, ins, outs))
        elif isinstance(mod, nn.Flatten):
            continue
        elif isinstance(mod, _INVERTIBLE):
            if not chain or chain[-1].act is not None:
                raise ValueError(f"rgap expects each activation to follow a linear or conv layer; "
                                 f"{name!r} does not")
            chain[-1].act = mod
        else:
            raise ValueError(
                f"rgap inverts chains of Linear/Conv2d layers with invertible activations "
                f"(LeakyReLU, Sigmoid, Tanh); layer {name!r} is {type(mod).__name__}"
            )
    if not chain or not isinstance(chain[-1].module, nn.Linear) or chain[-1].act is not None:
        raise ValueError("rgap needs a model that ends in a Linear layer producing the logits")
    if chain[-1].module.bias is None:
        raise ValueError("rgap reads the output errors off the last layer's bias gradient; "
                         "the last layer has no bias")
    flat_in = math.prod(chain[0].in_shape)
    if math.prod(input_shape) != flat_in:
        raise ValueError("rgap: the first layer does not see the whole input")
    return chain


# --- one layer's system, batched over trials -----------------------------------------------

def _solve(blocks: list[tuple[torch.Tensor, torch.Tensor]], rcond: float | None, eps: float):
    """Least squares for stacked blocks ``[(A (T, m_i, n), b (T, m_i))]``; returns x, rank, residual."""
    mats, rhs = [], []
    for a, b in blocks:
        scale = a.flatten(1).norm(dim=1).clamp_min(1e-300)[:, None, None]
        mats.append(a / scale)
        rhs.append(b / scale[..., 0])
    A, bvec = torch.cat(mats, 1), torch.cat(rhs, 1)                       # (T, m, n), (T, m)
    u, s, vh = torch.linalg.svd(A, full_matrices=False)
    tol = s[:, :1] * (math.sqrt(max(A.shape[1:])) * eps if rcond is None else rcond)
    keep = s > tol
    rank = keep.sum(1)
    inv = torch.where(keep, 1.0 / s.clamp_min(1e-300), torch.zeros_like(s))
    coef = torch.einsum("tmk,tm->tk", u, bvec) * inv
    x = torch.einsum("tkn,tk->tn", vh, coef)
    resid = (torch.einsum("tmn,tn->tm", A, x) - bvec).norm(dim=1) / bvec.norm(dim=1).clamp_min(1e-300)
    return x, rank, resid


def _conv_params(mod: nn.Conv2d) -> tuple[int, int, int]:
    return mod.kernel_size[0], mod.stride[0], mod.padding[0]


def _rgap_chunk(chain, params, grads, device, rcond, selectors, eps):
    """The recursion for one chunk of trials; returns input (T, n), labels, per-layer ranks, residual."""
    last = chain[-1]
    gw = grads[f"{last.name}.weight"].to(device, DTYPE)                   # (T, K, N)
    gb = grads[f"{last.name}.bias"].to(device, DTYPE)                     # (T, K)
    labels = gb.argmin(-1)
    delta = gb                                                             # dL/dz_L
    a = fc_input_from_gradients(gw, gb)                                    # (T, N): input of the last layer
    ranks = [torch.where(gb.abs().amax(-1) > 0, gw.shape[-1], 0)]
    J_above = params[f"{last.name}.weight"].to(device, DTYPE)             # (T, K, N)
    resid = torch.zeros(gw.shape[0], dtype=DTYPE, device=device)
    for layer in reversed(chain[:-1]):
        z, dz = _inverse(layer.act, a)                                     # (T, n_out)
        delta = torch.einsum("tkn,tk->tn", J_above, delta) * dz           # dL/dz of this layer
        W = params[f"{layer.name}.weight"].to(device, DTYPE)
        bkey = f"{layer.name}.bias"
        b = params[bkey].to(device, DTYPE) if bkey in params else None
        gW = grads[f"{layer.name}.weight"].to(device, DTYPE)
        T = W.shape[0]
        if isinstance(layer.module, nn.Linear):
            # weight-gradient rows dW = delta x^T: closed form; forward rows W x = z - b
            fwd_rhs = z - (b if b is not None else 0)
            x, rank, resid = _solve([(torch.einsum("tk,nm->tknm", delta, torch.eye(W.shape[-1], dtype=DTYPE,
                                                                                     device=device)
                                                   ).flatten(1, 2), gW.flatten(1)),
                                     (W, fwd_rhs)], rcond, eps)
            J = W
        else:
            k, s, p = _conv_params(layer.module)
            U = selectors[layer.name]                                      # (r, L, n)
            Cout, L = W.shape[1], U.shape[1]
            Wm = W.reshape(T, Cout, -1)                                    # (T, Cout, r)
            D = delta.reshape(T, Cout, L)
            A_w = torch.einsum("tcl,rlq->tcrq", D, U).flatten(1, 2)       # (T, Cout*r, n)
            J = torch.einsum("tcr,rlq->tclq", Wm, U).flatten(1, 2)        # (T, Cout*L, n)
            fwd_rhs = z - (b.repeat_interleave(L, dim=1) if b is not None else 0)
            x, rank, resid = _solve([(A_w, gW.flatten(1)), (J, fwd_rhs)], rcond, eps)
        ranks.append(rank)
        a, J_above = x, J
    return a, labels, ranks[::-1], resid


@register_attack("rgap")
def rgap_attack(model: nn.Module, params, grads, *, input_shape, num_classes: int, batch_size: int = 1,
                device=None, seed: int = 0, progress: bool = True, rcond: float | None = None,
                **options) -> Reconstruction:
    """Recursive gradient attack: solve each layer's linear system from the output down.

    ``params`` and ``grads`` map parameter names to ``(T, ...)`` tensors (one model
    initialisation and one released gradient per trial). Only ``batch_size = 1``
    is supported: the output errors come from the last bias gradient, which for a
    batch is a sum. ``rcond`` sets the relative cut-off below which singular values
    count as zero (default: ``sqrt(max(m, n))`` times the machine epsilon of the
    gradients' dtype, the rounding level of the equations).

    ``info["layers"]`` lists, from the input up, each layer's ``unknowns``,
    ``equations``, smallest ``rank`` over trials and whether it is ``unique`` in
    every trial; ``info["rank_deficient"]`` names the layers where it is not;
    ``loss`` is the relative residual of the input layer's system per trial.
    """
    if options:
        raise TypeError(f"the rgap attack takes no options besides rcond, got: {', '.join(sorted(options))}")
    check_positive_int("batch_size", batch_size)
    if batch_size != 1:
        raise ValueError(f"rgap recovers a single input (batch_size=1), got batch_size={batch_size}: "
                         "for a batch the last layer's bias gradient is a sum of output errors")
    shape = tuple(int(s) for s in input_shape)
    dev = get_device(device)
    dev = torch.device("cpu") if dev.type == "mps" else dev
    chain = rgap_layers(model, shape)
    if chain[-1].module.out_features != num_classes:
        raise ValueError(f"num_classes is {num_classes} but the model's last layer has "
                         f"{chain[-1].module.out_features} outputs")
    T = None
    for layer in chain:
        for suffix in ("weight", "bias"):
            key = f"{layer.name}.{suffix}"
            has = getattr(layer.module, suffix) is not None
            for src, label in ((params, "params"), (grads, "grads")):
                if has and key not in src:
                    raise ValueError(f"{label} has no entry {key!r}")
                if has:
                    t = check_tensor(f"{label}[{key!r}]", src[key], floating=True)
                    want = (t.shape[0], *getattr(layer.module, suffix).shape)
                    if tuple(t.shape) != want or (T is not None and t.shape[0] != T):
                        raise ValueError(f"{label}[{key!r}] must have shape (T, "
                                         f"{', '.join(map(str, want[1:]))}), got {tuple(t.shape)}")
                    T = t.shape[0]
    selectors, layers_info, rows_per_trial = {}, [], 0
    for layer in chain:
        n_in, n_out = math.prod(layer.in_shape), math.prod(layer.out_shape)
        if isinstance(layer.module, nn.Conv2d):
            k, s, p = _conv_params(layer.module)
            if n_in * layer.module.in_channels * k * k * math.prod(layer.out_shape[1:]) > CHUNK_ENTRIES:
                raise ValueError(f"layer {layer.name!r} is too large for rgap's dense systems "
                                 f"(input {layer.in_shape}); use a smaller input or a narrower network")
            selectors[layer.name] = _patch_selector(layer.in_shape, k, s, p, dev)
            eqs = layer.module.weight.numel() + n_out
        else:
            eqs = layer.module.weight.numel() + (n_out if layer is not chain[-1] else 0)
        if layer.module.bias is not None and layer is chain[-1]:
            eqs += layer.module.out_features
        layers_info.append({"layer": layer.name, "kind": "conv" if isinstance(layer.module, nn.Conv2d) else "linear",
                            "unknowns": n_in, "equations": eqs})
        if layer is not chain[-1]:
            rows_per_trial = max(rows_per_trial, eqs * n_in)
    chunk = max(1, CHUNK_ENTRIES // max(rows_per_trial, 1))
    eps = max(float(torch.finfo(t.dtype).eps) for t in [*params.values(), *grads.values()])
    from .._progress import tqdm

    xs, ys, res, ranks = [], [], [], []
    for start in tqdm(range(0, T, chunk), desc="rgap", progress=progress, leave=False):
        sl = slice(start, start + chunk)
        x, y, r, resid = _rgap_chunk(chain, {k: v[sl] for k, v in params.items()},
                                     {k: v[sl] for k, v in grads.items()}, dev, rcond, selectors, eps)
        xs.append(x), ys.append(y), ranks.append(torch.stack([torch.as_tensor(v, device=dev) for v in r], 1))
        res.append(resid)
    rank = torch.cat(ranks)                                                # (T, layers)
    deficient = []
    for i, info in enumerate(layers_info):
        info["rank"] = int(rank[:, i].min())
        info["unique"] = bool((rank[:, i] == info["unknowns"]).all())
        if not info["unique"]:
            deficient.append(info["layer"])
    out_dtype = next(iter(grads.values())).dtype
    x = torch.cat(xs).to(out_dtype).reshape(T, 1, *shape)
    return Reconstruction(x=x, y=torch.cat(ys).reshape(T, 1), loss=torch.cat(res).to(out_dtype),
                          info={"layers": layers_info, "rank_deficient": deficient,
                                "complete": not deficient})
