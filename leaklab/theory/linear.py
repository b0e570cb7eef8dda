"""Reconstruction as a linear system: ``A x = b``, its rank, its twins and its noise.

The view in three modules: :mod:`leaklab.theory.system` (the :class:`LinearSystem` and what
it says about ``x``), :mod:`leaklab.theory.layers` (the systems of fully connected and
convolutional layers, their gradients, noise on them) and this one (:func:`analyse_layer`,
the whole analysis of a layer), which re-exports the names of the other two.

What the attacker knows
-----------------------
Take one layer of a network, fully connected (``o = W x + b``) or convolutional
(``o = conv(x, W) + b``), and a batch of ``B`` inputs ``x_j``. The attacker is
given the layer's weights ``W`` and the *output errors*
``delta_j = dL/do_j``: the gradient of the released (mean) loss with respect to
the layer's output for sample ``j``, so the ``1/B`` of the mean is already inside
``delta_j``. With those known, every observed gradient entry is a linear function
of the unknown inputs:

* fully connected: ``dL/dW = sum_j delta_j x_j^T`` (``K*N`` numbers) and
  ``dL/db = sum_j delta_j`` (``K`` numbers);
* convolution: ``dL/dW[c, :] = sum_j sum_p delta_j[c, p] patch_p(x_j)`` over the
  output positions ``p`` (im2col), and ``dL/db[c] = sum_j sum_p delta_j[c, p]``.

The bias gradient contains no input at all: its rows of ``A`` are zero. Its use to
an attacker is elsewhere: for ``B = 1`` it *is* ``delta``, which is how the
single-sample attack learns the errors without being told them.

With ``forward=True`` the attacker also knows the layer's pre-activation outputs
``o_j`` (R-GAP recovers them from the layer above by inverting the activation),
which adds the forward equations ``W x_j = o_j - b``.

Everything is stacked as an affine map ``observed = A x + c`` (``c`` holds the
known parts: the bias gradient's ``sum_j delta_j`` and the bias ``b`` of the
forward rows), so that ``A x = observed - c``. Uniqueness is decided by
``rank(A) == unknowns``; otherwise a *twin* ``x + t v`` with ``v`` in the null
space of ``A`` produces exactly the same observations. With noise ``e`` on the
observations, the least-squares error obeys
``||P e|| / s_max <= ||x_hat - x|| <= ||e|| / s_min`` (``P`` projects onto the
range of ``A``; ``s_min`` is its smallest non-zero singular value).

All linear algebra runs in float64.

>>> from leaklab.theory import analyse_layer
>>> r = analyse_layer("fc", input_shape=16, out=3, batch_size=4, seed=0)
>>> r.unknowns, r.rank, r.unique
(64, 48, False)
>>> r.twin["gradient_distance"] < 1e-12
True
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_positive_int
from .layers import ERRORS, LAYERS, conv_system, fc_system, layer_errors, layer_gradients, noise_sweep  # noqa: F401
from .system import DTYPE, MAX_ENTRIES, LinearSystem, _work_device, conv_output_size  # noqa: F401

__all__ = ["ERRORS", "LinearSystem", "LayerAnalysis", "fc_system", "conv_system", "layer_gradients",
           "layer_errors", "noise_sweep", "analyse_layer", "conv_output_size", "LAYERS", "MAX_ENTRIES"]


@dataclass
class LayerAnalysis:
    """The verdict on one layer's linear system, with the checks that bear it out.

    ``mse`` is the mean squared error of the least-squares solution from exact
    gradients; ``twin`` (when not unique) holds ``input_distance`` (L2) and
    ``gradient_distance`` (the twin's gradients against the original's, relative to
    the gradient's norm, recomputed by autograd); with ``noise > 0``, ``error`` is the
    L2 change of the solution caused by the noise and ``error_bound`` /
    ``error_lower`` its bounds ``||e|| / s_min`` and ``||P e|| / s_max``.
    """

    layer: str
    input_shape: tuple[int, ...]
    out: int
    kernel: int | None
    stride: int | None
    padding: int | None
    batch_size: int
    bias: bool
    forward: bool
    noise: float
    seed: int
    errors: str
    unknowns: int
    equations: int
    rank: int
    unique: bool
    knowns: list[str]
    mse: float
    twin: dict | None = None
    error: float | None = None
    error_bound: float | None = None
    error_lower: float | None = None
    s_min: float = 0.0
    s_max: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    def summary(self) -> str:
        """A few readable lines."""
        shape = "x".join(str(s) for s in self.input_shape)
        head = f"{self.layer} layer, input {shape}, out {self.out}"
        if self.layer == "conv":
            head += f", kernel {self.kernel}, stride {self.stride}, padding {self.padding}"
        head += f", batch {self.batch_size}, {'with' if self.bias else 'no'} bias"
        lines = [head,
                 f"  output errors: {ERRORS[self.errors]}",
                 f"  unknowns {self.unknowns}, equations {self.equations}, rank {self.rank}: "
                 + ("unique" if self.unique else f"not unique (null space of dimension {self.unknowns - self.rank})"),
                 f"  knowns: {'; '.join(self.knowns)}",
                 f"  least-squares mse {self.mse:.3g}"]
        if self.twin is not None:
            lines.append(f"  twin: input distance {self.twin['input_distance']:.3g}, "
                         f"relative gradient distance {self.twin['gradient_distance']:.3g}")
        if self.error is not None:
            lines.append(f"  noise {self.noise:g}: error {self.error:.3g} <= bound {self.error_bound:.3g}")
        return "\n".join(lines)


def analyse_layer(layer: str = "fc", *, input_shape: int | Sequence[int], out: int, kernel: int = 3,
                  stride: int = 1, padding: int = 0, batch_size: int = 1, bias: bool = True,
                  forward: bool = False, noise: float = 0.0, seed: int = 0, errors: str = "random",
                  device=None) -> LayerAnalysis:
    """Build one layer's system for random weights, inputs and errors, and check its verdict.

    Draws (with ``seed``) weights, a bias, a batch of inputs in ``[0, 1)`` and output
    errors; builds the system; solves it from the exact gradients (computed by
    autograd with the real layer); when it is not unique, builds a twin and
    recomputes its gradients with the same errors; with ``noise = sigma > 0`` adds
    Gaussian noise of standard deviation ``sigma`` to every observed entry and
    compares the change of the solution with its bounds.

    ``input_shape`` is ``N`` (or any shape, flattened) for ``layer="fc"`` and
    ``(C, H, W)`` for ``"conv"``; ``out`` is the number of output features or channels.

    ``errors`` says how the output errors are drawn: ``"random"`` (independent
    Gaussian entries of scale ``1/B``: a hidden layer in general position) or
    ``"softmax"`` (fully connected only: the layer is a classifier's last layer with
    ``out`` classes under the mean cross-entropy, ``delta_j = (softmax(o_j) - e_{y_j}) / B``
    for random labels ``y_j``). Softmax errors sum to zero, so ``rank D <= out - 1``
    and a batch of ``out`` records is never determined, where random errors would
    say it is.
    """
    check_choice("layer", layer, LAYERS)
    check_choice("errors", errors, ERRORS)
    if errors == "softmax" and layer != "fc":
        raise ValueError("errors 'softmax' describes a classifier's last layer: use it with layer 'fc'")
    if errors == "softmax" and out < 2:
        raise ValueError(f"errors 'softmax' needs out >= 2 classes, got {out}")
    check_positive_int("out", out)
    check_positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    try:
        noise = float(noise)
    except (TypeError, ValueError):
        raise TypeError(f"noise must be a number, got {type(noise).__name__}") from None
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"input_shape must hold positive integers, got {input_shape!r}")
    dev = _work_device(device)
    gen = torch.Generator().manual_seed(seed)

    def draw(*size, scale=1.0, uniform=False):
        t = torch.rand(*size, generator=gen, dtype=DTYPE) if uniform else torch.randn(*size, generator=gen, dtype=DTYPE)
        return (t * scale).to(dev)

    B = batch_size
    if layer == "fc":
        N = math.prod(shape)
        W, b = draw(out, N, scale=N ** -0.5), draw(out, scale=0.1)
        x, deltas = draw(B, N, uniform=True), draw(B, out, scale=1.0 / B)
        if errors == "softmax":
            logits = x @ W.T + (b if bias else 0.0)
            labels = torch.randint(out, (B,), generator=gen).to(dev)
            deltas = (torch.softmax(logits, -1) - F.one_hot(labels, out).to(DTYPE)) / B
        conv_args: dict = {}
        system = fc_system(W, deltas, bias=b if (bias and forward) else bias, forward=forward, device=dev)
        kernel_, stride_, padding_ = None, None, None
    else:
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W) for a conv layer, got {shape}")
        check_positive_int("kernel", kernel)
        check_positive_int("stride", stride)
        check_positive_int("padding", padding, minimum=0)
        C, H, Wd = shape
        Ho, Wo = conv_output_size(H, kernel, stride, padding), conv_output_size(Wd, kernel, stride, padding)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"kernel {kernel} does not fit input {H}x{Wd} with padding {padding}")
        W, b = draw(out, C, kernel, kernel, scale=(C * kernel * kernel) ** -0.5), draw(out, scale=0.1)
        x, deltas = draw(B, C, H, Wd, uniform=True), draw(B, out, Ho, Wo, scale=1.0 / B)
        conv_args = {"stride": stride, "padding": padding}
        system = conv_system(W, deltas, input_shape=shape, bias=b if (bias and forward) else bias,
                             forward=forward, device=dev, **conv_args)
        kernel_, stride_, padding_ = kernel, stride, padding

    def observe(inp):
        return layer_gradients(layer, inp, W, deltas, bias=b if bias else None, forward=forward, **conv_args)

    obs = observe(x)
    flat = system.pack(**obs)
    x_hat = system.solve(flat)
    mse = float(((x_hat.reshape(x.shape) - x) ** 2).mean())
    result = LayerAnalysis(
        layer=layer, input_shape=shape, out=out, kernel=kernel_, stride=stride_, padding=padding_,
        batch_size=B, bias=bool(bias), forward=forward, noise=noise, seed=seed, errors=errors,
        unknowns=system.unknowns, equations=system.equations, rank=system.rank, unique=system.unique,
        knowns=list(system.knowns), mse=mse, s_min=system.s_min, s_max=system.s_max,
    )
    if not system.unique:
        x_twin = system.twin(x, seed=seed).reshape(x.shape)
        flat_twin = system.pack(**observe(x_twin))
        result.twin = {
            "input_distance": float((x_twin - x).norm()),
            "gradient_distance": float((flat_twin - flat).norm() / flat.norm().clamp_min(1e-300)),
        }
    if noise > 0:
        e = draw(flat.shape[0], scale=noise)
        x_noisy = system.solve(flat + e)
        result.error = float((x_noisy - x_hat).norm())
        result.error_lower, result.error_bound = system.noise_bound(e)
    return result
