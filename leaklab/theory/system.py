"""The linear system ``A x = b`` that one layer's gradient gives, and what it says about ``x``.

:class:`LinearSystem` holds the equations, solves them in the least-squares sense, and
reports their rank, the null space (the twins: inputs the gradient cannot tell apart)
and the condition that bounds how noise in ``b`` moves the solution. The overview of the
linear-system view is in :mod:`leaklab.theory.linear`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch

from .._checks import check_tensor
from ..runtime import get_device

__all__ = ["LinearSystem", "conv_output_size", "MAX_ENTRIES", "DTYPE"]

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
