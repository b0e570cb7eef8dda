"""The systems of fully connected and convolutional layers, their gradients, and noise on them.

:func:`fc_system` and :func:`conv_system` build a layer's :class:`~leaklab.theory.system.LinearSystem`
from its weight and the gradient flowing into its output; :func:`layer_gradients` and
:func:`layer_errors` compute those from a model; :func:`noise_sweep` measures how noise on
the observed gradient moves the solution against the system's bounds.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_positive_int, check_tensor
from .system import DTYPE, MAX_ENTRIES, LinearSystem, _work_device, conv_output_size

__all__ = ["fc_system", "conv_system", "layer_gradients", "layer_errors", "noise_sweep", "LAYERS", "ERRORS"]


def _check_size(m: int, n: int) -> None:
    if m * n > MAX_ENTRIES:
        raise ValueError(
            f"the linear system would have {m} x {n} entries (more than {MAX_ENTRIES:,}); "
            "use smaller shapes or a smaller batch"
        )


def _eps(*tensors) -> float:
    """The coarsest floating-point precision among the tensors given (and float64's)."""
    eps = [torch.finfo(t.dtype).eps for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return float(max(eps + [torch.finfo(DTYPE).eps]))


def _bias_arg(bias, out: int, forward: bool, dev) -> tuple[bool, torch.Tensor | None]:
    if isinstance(bias, bool):
        if bias and forward:
            raise ValueError("forward=True needs the bias values: pass bias=<tensor> (or bias=False)")
        return bias, None
    b = check_tensor("bias", bias, ndim=1, floating=True)
    if b.shape[0] != out:
        raise ValueError(f"bias must have {out} entries, got {b.shape[0]}")
    return True, b.detach().to(dev, DTYPE)


def fc_system(weight: torch.Tensor, deltas: torch.Tensor, *, bias: bool | torch.Tensor = True,
              forward: bool = False, device=None) -> LinearSystem:
    """The system posed by a fully connected layer ``o = W x + b`` for a batch of ``B`` inputs.

    The unknown is the batch ``X`` of shape ``(B, N)``. Row ``(k, n)`` of the weight
    block reads ``sum_j delta_j[k] x_j[n] = dL/dW[k, n]``.

    Parameters
    ----------
    weight : torch.Tensor
        The weights ``W``, shape ``(K, N)``.
    deltas : torch.Tensor
        The output errors ``dL/do_j`` of the released (mean) loss, shape ``(B, K)``.
    bias : bool or torch.Tensor
        ``False`` for a layer without bias; ``True`` when it has one (its gradient
        is observed); the bias values themselves when ``forward=True``.
    forward : bool
        Whether the attacker also knows the outputs ``o_j`` (adds ``W x_j = o_j - b``).
    """
    dev = _work_device(device)
    check_tensor("weight", weight, ndim=2, floating=True)
    check_tensor("deltas", deltas, ndim=2, floating=True)
    K, N = weight.shape
    if deltas.shape[1] != K:
        raise ValueError(f"deltas must have shape (B, {K}) to match weight {tuple(weight.shape)}, "
                         f"got {tuple(deltas.shape)}")
    has_bias, b = _bias_arg(bias, K, forward, dev)
    W = weight.detach().to(dev, DTYPE)
    D = deltas.detach().to(dev, DTYPE)
    B = D.shape[0]
    m = K * N + (K if has_bias else 0) + (B * K if forward else 0)
    _check_size(m, B * N)
    eye = torch.eye(N, dtype=DTYPE, device=dev)
    rows = [torch.einsum("jk,nm->knjm", D, eye).reshape(K * N, B * N)]      # weight gradient
    offsets = [torch.zeros(K * N, dtype=DTYPE, device=dev)]
    blocks, shapes, start = {"weight": (0, K * N)}, {"weight": (K, N)}, K * N
    if has_bias:                                                              # bias gradient: no x
        rows.append(torch.zeros(K, B * N, dtype=DTYPE, device=dev))
        offsets.append(D.sum(0))
        blocks["bias"], shapes["bias"], start = (start, start + K), (K,), start + K
    if forward:                                                               # o_j = W x_j + b
        rows.append(torch.block_diag(*([W] * B)))
        offsets.append((b if b is not None else torch.zeros(K, dtype=DTYPE, device=dev)).repeat(B))
        blocks["output"], shapes["output"] = (start, start + B * K), (B, K)
    knowns = ["weights W", "output errors delta_j = dL/do_j of every sample"]
    if forward:
        knowns += ["outputs o_j of every sample"] + (["bias b"] if has_bias else [])
    return LinearSystem(torch.cat(rows), torch.cat(offsets), (B, N), knowns, blocks, "fc", shapes,
                        _eps(weight, deltas, bias), kron_factor=None if forward else D.T.contiguous())


def _patch_selector(in_shape, kernel: int, stride: int, padding: int, dev) -> torch.Tensor:
    """im2col as a 0/1 tensor ``U[r, l, q]``: patch row ``r`` at position ``l`` reads input entry ``q``."""
    C, H, W = in_shape
    n = C * H * W
    basis = torch.eye(n, dtype=DTYPE, device=dev).reshape(n, C, H, W)
    cols = F.unfold(basis, kernel, padding=padding, stride=stride)          # (n, C*k*k, L)
    return cols.permute(1, 2, 0)                                             # (C*k*k, L, n)


def conv_system(weight: torch.Tensor, deltas: torch.Tensor, *, input_shape: Sequence[int],
                stride: int = 1, padding: int = 0, bias: bool | torch.Tensor = True,
                forward: bool = False, device=None) -> LinearSystem:
    """The system posed by a 2-D convolution for a batch of ``B`` inputs.

    Through im2col, ``patches(x_j) = U x_j`` is linear in the input, and row
    ``(c, r)`` of the weight block reads
    ``sum_j sum_l delta_j[c, l] (U x_j)[r, l] = dL/dW[c, r]``.

    Parameters
    ----------
    weight : torch.Tensor
        The kernels, shape ``(C_out, C_in, k, k)`` (square kernels).
    deltas : torch.Tensor
        Output errors ``dL/do_j``, shape ``(B, C_out, H_out, W_out)``.
    input_shape : tuple of int
        The shape ``(C_in, H, W)`` of one input.
    stride, padding : int
        As in ``torch.nn.functional.conv2d``.
    bias, forward
        As in :func:`fc_system`.
    """
    dev = _work_device(device)
    check_tensor("weight", weight, ndim=4, floating=True)
    check_tensor("deltas", deltas, ndim=4, floating=True)
    check_positive_int("stride", stride)
    check_positive_int("padding", padding, minimum=0)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}")
    Cout, Cin, k, k2 = weight.shape
    if k != k2:
        raise ValueError(f"weight must have a square kernel, got shape {tuple(weight.shape)}")
    C, H, Wd = shape
    if Cin != C:
        raise ValueError(f"weight expects {Cin} input channels, input_shape has {C}")
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(Wd, k, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"kernel {k} does not fit input {H}x{Wd} with padding {padding}")
    if tuple(deltas.shape[1:]) != (Cout, Ho, Wo):
        raise ValueError(f"deltas must have shape (B, {Cout}, {Ho}, {Wo}), got {tuple(deltas.shape)}")
    has_bias, b = _bias_arg(bias, Cout, forward, dev)
    B, n, L, r = deltas.shape[0], C * H * Wd, Ho * Wo, Cin * k * k
    m = Cout * r + (Cout if has_bias else 0) + (B * Cout * L if forward else 0)
    _check_size(m, B * n)
    U = _patch_selector(shape, k, stride, padding, dev)                      # (r, L, n)
    D = deltas.detach().to(dev, DTYPE).reshape(B, Cout, L)
    Wm = weight.detach().to(dev, DTYPE).reshape(Cout, r)
    # weight gradient: A[(c, r), (j, q)] = sum_l D[j, c, l] U[r, l, q]
    rows = [torch.einsum("jcl,rlq->crjq", D, U).reshape(Cout * r, B * n)]
    offsets = [torch.zeros(Cout * r, dtype=DTYPE, device=dev)]
    blocks, shapes, start = {"weight": (0, Cout * r)}, {"weight": tuple(weight.shape)}, Cout * r
    if has_bias:
        rows.append(torch.zeros(Cout, B * n, dtype=DTYPE, device=dev))
        offsets.append(D.sum((0, 2)))
        blocks["bias"], shapes["bias"], start = (start, start + Cout), (Cout,), start + Cout
    if forward:  # o_j[c, l] = sum_r W[c, r] (U x_j)[r, l] + b[c]
        conv = torch.einsum("cr,rlq->clq", Wm, U).reshape(Cout * L, n)
        rows.append(torch.block_diag(*([conv] * B)))
        bb = b if b is not None else torch.zeros(Cout, dtype=DTYPE, device=dev)
        offsets.append(bb.repeat_interleave(L).repeat(B))
        blocks["output"], shapes["output"] = (start, start + B * Cout * L), (B, Cout, Ho, Wo)
    knowns = ["weights W", "output errors delta_j = dL/do_j of every sample (every output position)"]
    if forward:
        knowns += ["outputs o_j of every sample"] + (["bias b"] if has_bias else [])
    return LinearSystem(torch.cat(rows), torch.cat(offsets), (B, *shape), knowns, blocks, "conv", shapes,
                        _eps(weight, deltas, bias))


def layer_gradients(layer: str, x: torch.Tensor, weight: torch.Tensor, deltas: torch.Tensor, *,
                    bias: torch.Tensor | None = None, stride: int = 1, padding: int = 0,
                    forward: bool = False) -> dict[str, torch.Tensor]:
    """The observations computed by autograd with the actual layer (an oracle for the systems).

    Back-propagates ``deltas`` through ``F.linear`` or ``F.conv2d`` applied to the batch
    ``x`` and returns ``{"weight": dL/dW, "bias": dL/db, "output": o}`` (bias only with a
    bias, output only with ``forward=True``), ready for :meth:`LinearSystem.pack`.
    """
    check_choice("layer", layer, LAYERS)
    W = weight.detach().clone().requires_grad_(True)
    b = None if bias is None else bias.detach().clone().requires_grad_(True)
    out = F.linear(x, W, b) if layer == "fc" else F.conv2d(x, W, b, stride=stride, padding=padding)
    leaves = [W] + ([b] if b is not None else [])
    grads = torch.autograd.grad((out * deltas).sum(), leaves)
    result = {"weight": grads[0]}
    if b is not None:
        result["bias"] = grads[1]
    if forward:
        result["output"] = out.detach()
    return result


LAYERS = ("fc", "conv")

#: How :func:`analyse_layer` draws the output errors ``delta_j``.
ERRORS = {
    "random": "random (Gaussian, independent entries)",
    "softmax": "softmax cross-entropy (p_j - onehot(y_j)) / B, random labels: each delta_j sums to zero",
}


def layer_errors(model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, *,
                 loss_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of a named ``Linear``/``Conv2d`` layer and its output errors for a batch.

    Runs ``model`` on ``x`` (``(B, ...)``) with the mean cross-entropy (or ``loss_fn``)
    against ``y`` and returns ``(layer_input, deltas)``, where ``deltas`` is the
    gradient of the loss with respect to the layer's output (so it already holds
    the ``1/B`` of the mean). This is the knowledge :func:`fc_system` and
    :func:`conv_system` assume the attacker has; here an oracle provides it.
    """
    check_tensor("x", x, floating=True)
    modules = dict(model.named_modules())
    names = [n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
    check_choice("layer", layer, names)
    store: dict = {}

    def hook(_module, inputs, output):
        store["input"], store["output"] = inputs[0], output

    handle = modules[layer].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            loss = (loss_fn or F.cross_entropy)(model(x), y)
            (deltas,) = torch.autograd.grad(loss, store["output"])
    finally:
        handle.remove()
    return store["input"].detach(), deltas.detach()


def noise_sweep(system: LinearSystem, x: torch.Tensor, sigmas: Sequence[float], *, trials: int = 8,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """Least-squares error against Gaussian observation noise, beside its bounds.

    For each ``sigma``, draws ``trials`` noise vectors ``e`` (standard deviation
    ``sigma`` on every observed entry), solves from ``A x + c + e`` and returns the
    mean over trials of the error ``||x_hat(e) - x_hat(0)||`` and of the bounds
    ``||P e|| / s_max`` (``lower``) and ``||e|| / s_min`` (``upper``), as tensors
    indexed like ``sigmas``.
    """
    check_positive_int("trials", trials)
    sig = torch.as_tensor(list(sigmas), dtype=DTYPE)
    if sig.ndim != 1 or not torch.isfinite(sig).all() or (sig < 0).any():
        raise ValueError(f"sigmas must be finite numbers >= 0, got {list(sigmas)}")
    clean = system.observe(x)
    gen = torch.Generator().manual_seed(seed)
    u, s, vh = system._svd
    r = system.rank
    out = {"sigma": sig, "error": [], "lower": [], "upper": []}
    for sigma in sig.tolist():
        e = sigma * torch.randn(trials, system.equations, generator=gen, dtype=DTYPE).to(clean.device)
        coef = (e @ u[:, :r]) / s[:r]                       # (trials, r): the noise seen by A
        err = (coef @ vh[:r]).norm(dim=1)                   # ||x_hat(e) - x_hat(0)||
        out["error"].append(float(err.mean()))
        out["lower"].append(float((e @ u[:, :r]).norm(dim=1).mean()) / system.s_max if r else 0.0)
        out["upper"].append(float(e.norm(dim=1).mean()) / system.s_min if r else 0.0)
    return {k: (v if k == "sigma" else torch.tensor(v, dtype=DTYPE)) for k, v in out.items()}
