"""Reconstruction as a linear system: ``A x = b``, its rank, its twins and its noise.

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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_positive_int, check_tensor
from ..runtime import get_device

__all__ = ["ERRORS", "LinearSystem", "LayerAnalysis", "fc_system", "conv_system", "layer_gradients",
           "layer_errors", "noise_sweep", "analyse_layer", "conv_output_size", "LAYERS", "MAX_ENTRIES"]

#: The largest dense system (rows x columns) the module will build.
MAX_ENTRIES = 30_000_000

DTYPE = torch.float64


def conv_output_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """The output length of a convolution along one axis."""
    return (n + 2 * padding - kernel) // stride + 1


def _work_device(device) -> torch.device:
    dev = get_device(device)
    return torch.device("cpu") if dev.type == "mps" else dev  # mps has no float64


@dataclass
class LinearSystem:
    """The affine system ``observed = A x + c`` that one layer's gradients pose.

    Its fields:

    - ``matrix``: ``A``, shape ``(equations, unknowns)``, float64.
    - ``offset``: ``c``, shape ``(equations,)``, the part of the observations the
      attacker can compute without ``x``.
    - ``input_shape``: shape of the unknown, ``(B, *layer_input_shape)``.
    - ``knowns``: what the attacker is assumed to know, in words.
    - ``blocks``: which rows hold which observed quantity (``"weight"``, ``"bias"``,
      ``"output"``), as ``(start, stop)`` pairs; ``block_shapes`` their shapes.
    - ``layer``: ``"fc"`` or ``"conv"``.
    - ``eps``: the relative precision of the numbers ``A`` was built from (float32
      weights and errors: about ``1.2e-7``); it sets the rank tolerance.
    - ``kron_factor``: for a fully connected layer without forward equations,
      ``M = D^T`` with ``A = M (x) I_N`` (then zero bias rows); the SVD of ``A`` is
      assembled from that of the small ``M``, which is exact and much faster.
    """

    matrix: torch.Tensor
    offset: torch.Tensor
    input_shape: tuple[int, ...]
    knowns: list[str]
    blocks: dict[str, tuple[int, int]]
    layer: str
    block_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    eps: float = float(torch.finfo(DTYPE).eps)
    kron_factor: torch.Tensor | None = field(default=None, repr=False)

    @property
    def unknowns(self) -> int:
        """The number of unknown input entries (``B`` times the layer's input size)."""
        return self.matrix.shape[1]

    @property
    def equations(self) -> int:
        """The number of observed entries (rows of ``A``), independent or not."""
        return self.matrix.shape[0]

    @cached_property
    def _svd(self):
        if self.kron_factor is not None:
            return self._kron_svd()
        a = self.matrix
        if a.shape[0] >= a.shape[1]:
            u, s, vh = torch.linalg.svd(a, full_matrices=False)
        else:  # keep every right singular vector: the null space lives there
            u, s, vh = torch.linalg.svd(a, full_matrices=True)
        return u, s, vh

    def _kron_svd(self):
        # A = [M (x) I_N ; 0] with M (K, B): its singular triplets are those of M, each N times.
        M = self.kron_factor
        K, B = M.shape
        N = self.unknowns // B
        u, s, vh = torch.linalg.svd(M, full_matrices=True)
        p = s.shape[0]
        eye = torch.eye(N, dtype=DTYPE, device=M.device)
        u_a = torch.zeros(self.equations, p * N, dtype=DTYPE, device=M.device)

        def kron_eye(a):  # a (x) I_N, rows (i, n), columns (j, m)
            return torch.einsum("ij,nm->injm", a, eye).reshape(a.shape[0] * N, a.shape[1] * N)

        u_a[:K * N] = kron_eye(u[:, :p])
        return u_a, s.repeat_interleave(N), kron_eye(vh)

    @property
    def singular_values(self) -> torch.Tensor:
        """The singular values of ``A``, largest first."""
        return self._svd[1]

    @cached_property
    def tolerance(self) -> float:
        """Singular values at or below this count as zero.

        ``s_max * sqrt(max(m, n)) * eps``: the size of the rounding error that the
        precision ``eps`` of the inputs leaves in ``A``. With float32 errors, a
        direction that is only "independent" by rounding counts as dependent.
        """
        s = self.singular_values
        if s.numel() == 0:
            return 0.0
        return float(s[0]) * math.sqrt(max(self.matrix.shape)) * self.eps

    @cached_property
    def rank(self) -> int:
        """The number of independent equations."""
        return int((self.singular_values > self.tolerance).sum())

    @property
    def unique(self) -> bool:
        """Whether the observations determine the input: ``rank(A) == unknowns``."""
        return self.rank == self.unknowns

    @property
    def s_max(self) -> float:
        return float(self.singular_values[0]) if self.rank else 0.0

    @property
    def s_min(self) -> float:
        """The smallest non-zero singular value (``0.0`` when ``A`` is zero)."""
        return float(self.singular_values[self.rank - 1]) if self.rank else 0.0

    def null_space(self) -> torch.Tensor:
        """An orthonormal basis of the null space of ``A``, shape ``(unknowns, dim)``."""
        return self._svd[2][self.rank:].T.conj()

    # --- observations -----------------------------------------------------------------
    def pack(self, *, weight: torch.Tensor, bias: torch.Tensor | None = None,
             output: torch.Tensor | None = None) -> torch.Tensor:
        """Stack observed layer quantities into the vector the rows of ``A`` describe.

        ``weight`` and ``bias`` are the layer's parameter gradients, ``output`` its
        pre-activation outputs ``(B, ...)`` (only for a system built with
        ``forward=True``).
        """
        given = {"weight": weight, "bias": bias, "output": output}
        parts = []
        for name, (start, stop) in self.blocks.items():
            value = given[name]
            if value is None:
                raise ValueError(f"this system observes the layer's {name}; pass {name}=")
            check_tensor(name, value, floating=True)
            if value.numel() != stop - start:
                raise ValueError(
                    f"{name} must have {stop - start} entries (shape {self.block_shapes.get(name)}), "
                    f"got shape {tuple(value.shape)}"
                )
            parts.append(value.detach().reshape(-1).to(self.matrix))
        for name, value in given.items():
            if value is not None and name not in self.blocks:
                raise ValueError(f"this system does not observe the layer's {name}; "
                                 f"it observes: {', '.join(self.blocks)}")
        return torch.cat(parts)

    def _observed(self, observed) -> torch.Tensor:
        if isinstance(observed, Mapping):
            return self.pack(**observed)
        check_tensor("observed", observed, ndim=1, floating=True)
        if observed.shape[0] != self.equations:
            raise ValueError(f"observed must have {self.equations} entries, got {observed.shape[0]}")
        return observed.to(self.matrix)

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        """What an attacker would observe for input ``x``: ``A x + c``."""
        x = self._check_input(x)
        return self.matrix @ x.reshape(-1) + self.offset

    def rhs(self, observed) -> torch.Tensor:
        """The right-hand side ``b = observed - c`` (``observed`` a vector or a dict for :meth:`pack`)."""
        return self._observed(observed) - self.offset

    def solve(self, observed) -> torch.Tensor:
        """The minimum-norm least-squares input for ``observed``, shaped like the input.

        Exact when :attr:`unique`; otherwise the solution closest to zero among all
        inputs that explain the observations.
        """
        u, s, vh = self._svd
        r = self.rank
        b = self.rhs(observed)
        coef = (u[:, :r].T @ b) / s[:r]
        return (vh[:r].T @ coef).reshape(self.input_shape)

    def _check_input(self, x) -> torch.Tensor:
        check_tensor("x", x, floating=True)
        if x.numel() != self.unknowns:
            raise ValueError(f"x must have shape {self.input_shape}, got {tuple(x.shape)}")
        return x.to(self.matrix)

    # --- twins and noise --------------------------------------------------------------
    def twin(self, x: torch.Tensor, *, direction: torch.Tensor | None = None,
             distance: float | None = None, seed: int = 0) -> torch.Tensor:
        """A different input with exactly the same observations (needs ``not unique``).

        The step ``x' - x`` lies in the null space of ``A``: the projection of
        ``direction`` onto it when given (e.g. another image), else a random null
        direction drawn with ``seed``. It is scaled to length ``distance``
        (default: a quarter of ``||x||``, at least 1).
        """
        x = self._check_input(x).reshape(self.input_shape)
        if self.unique:
            raise ValueError("the system has a unique solution (rank == unknowns): no twin exists")
        basis = self.null_space()                                   # (n, d)
        if direction is None:
            gen = torch.Generator().manual_seed(seed)
            coef = torch.randn(basis.shape[1], generator=gen, dtype=DTYPE).to(basis.device)
            step = basis @ coef
        else:
            d = self._check_input(direction).reshape(-1)
            step = basis @ (basis.T @ d)
            if step.norm() <= 1e-12 * max(d.norm(), 1e-300):
                raise ValueError("direction has no component in the null space of A; choose another")
        if distance is None:
            distance = max(0.25 * float(x.norm()), 1.0)
        if not (distance > 0 and math.isfinite(distance)):
            raise ValueError(f"distance must be a positive finite number, got {distance}")
        return x + (distance / step.norm()) * step.reshape(self.input_shape)

    def noise_bound(self, noise: torch.Tensor) -> tuple[float, float]:
        """``(lower, upper)`` bounds on the least-squares error caused by observation noise ``noise``.

        ``upper = ||e|| / s_min`` and ``lower = ||P e|| / s_max``, where ``P`` projects onto
        the range of ``A``. When the system is not unique they bound the error of the
        component of the solution that the observations determine.
        """
        e = self._observed(noise)
        if self.rank == 0:
            return 0.0, 0.0
        u = self._svd[0][:, :self.rank]
        proj = u @ (u.T @ e)
        return float(proj.norm()) / self.s_max, float(e.norm()) / self.s_min

    def __repr__(self) -> str:
        return (f"LinearSystem(layer={self.layer!r}, unknowns={self.unknowns}, equations={self.equations}, "
                f"rank={self.rank}, unique={self.unique})")


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
