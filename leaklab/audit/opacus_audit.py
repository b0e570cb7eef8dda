"""Audit a user's own Opacus DP-SGD loop with gradient canaries.

A training loop written with Opacus's ``PrivacyEngine`` has a ``GradSampleModule`` (it
stores each record's gradient in ``p.grad_sample`` during ``backward``) and a
``DPOptimizer`` whose ``step`` calls ``pre_step``: clip every row of ``grad_sample`` to
``max_grad_norm``, sum, add ``N(0, (noise_multiplier * max_grad_norm)^2)``, divide by the
expected batch size, then call the accountant's step hook. :class:`OpacusCanaryAudit`
wraps that ``pre_step`` on the user's optimizer object (nothing else changes, and
:meth:`OpacusCanaryAudit.close` restores it): at each step, with probability 1/2 it
appends a gradient canary (a random unit direction times ``norm``, by default
``max_grad_norm``) to every parameter's ``grad_sample`` as one more row, so that
Opacus's own code clips it and noises it like a record; after the step it records the
released gradient's projection on the canary's direction, from which it subtracts
the projection of the batch's own clipped sum (known to the white-box auditor; computed
with Opacus's flat-clipping formula). The statistic is then ``N(1, sigma^2)`` with the
canary and ``N(0, sigma^2)`` without (in units of the clip norm): exactly
``1/sigma``-GDP for one step.

:meth:`OpacusCanaryAudit.result` fits ``mu``-GDP (:func:`~leaklab.audit.gdp_fit`) and
compares it with what Opacus promises: the epsilon of one step of the optimizer's
noise multiplier (sample rate 1, the step the audit measures), the run's epsilon from
the user's accountant, and that accountant's epsilon recomputed with the noise the
audit measured (``1 / mu_lower`` in place of the noise multiplier, the same sample
rates and steps). The first is a direct check; the last says whether the run's
claim would survive the measured noise, assuming its sampling is as accounted.

Assumes flat clipping (``DPOptimizer``, not per-layer clipping), the canary inserted at
every step of the audited loop (the canaries nudge the model a little: audit a copy
when that matters), and steps the audit sees through ``optimizer.step()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .result import AuditResult

__all__ = ["OpacusCanaryAudit", "OpacusAudit", "audit_opacus"]


def _require_opacus():
    try:
        from opacus.optimizers import DPOptimizer
    except ImportError as exc:  # pragma: no cover - opacus is a dependency
        raise ImportError("auditing an Opacus run needs opacus: pip install opacus") from exc
    return DPOptimizer


@dataclass
class OpacusAudit:
    """What :meth:`OpacusCanaryAudit.result` returns."""

    fit: AuditResult
    noise_multiplier: float
    max_grad_norm: float
    step_epsilon: float
    run_epsilon: float | None
    implied_run_epsilon: float | None
    steps: int
    accountant: str | None
    scores_in: np.ndarray = field(repr=False, default=None)
    scores_out: np.ndarray = field(repr=False, default=None)

    @property
    def epsilon_lower(self) -> float:
        return self.fit.epsilon_lower

    @property
    def ratio(self) -> float:
        """``epsilon_lower / step_epsilon``: how much of one step's promised epsilon the audit certifies."""
        return self.epsilon_lower / self.step_epsilon if math.isfinite(self.step_epsilon) else float("nan")

    def to_dict(self) -> dict:
        d = self.fit.details
        return {"epsilon_lower": self.epsilon_lower, "epsilon_point": self.fit.epsilon_point, "mu": d["mu"],
                "mu_lower": d["mu_lower"], "mu_upper": d["mu_upper"], "level": self.fit.level, "delta": self.fit.delta,
                "step_epsilon": self.step_epsilon, "ratio": self.ratio, "run_epsilon": self.run_epsilon,
                "implied_run_epsilon": self.implied_run_epsilon, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.max_grad_norm, "steps": self.steps, "accountant": self.accountant}

    def summary(self) -> str:
        d = self.fit.details
        s = (f"Opacus audit over {self.steps} steps: mu {d['mu']:.3f} [{d['mu_lower']:.3f}, {d['mu_upper']:.3f}] "
             f"against 1/noise_multiplier = {1 / self.noise_multiplier:.3f}; one step: epsilon >= "
             f"{self.epsilon_lower:.3f} of the promised {self.step_epsilon:.3f} (delta {self.fit.delta:g})")
        if self.run_epsilon is not None:
            s += (f"; the run: accountant ({self.accountant}) {self.run_epsilon:.3f}, at the measured noise "
                  f"{self.implied_run_epsilon:.3f}")
        return s


class OpacusCanaryAudit:
    """Gradient canaries in the steps of an Opacus ``DPOptimizer`` (a context manager).

    >>> # with OpacusCanaryAudit(optimizer, seed=0) as audit:
    >>> #     for x, y in loader: ...; loss.backward(); optimizer.step()
    >>> # print(audit.result(delta=1e-5, accountant=privacy_engine.accountant).summary())
    """

    def __init__(self, optimizer, *, norm: float | None = None, seed: int = 0):
        DPOptimizer = _require_opacus()
        from opacus.optimizers import DPPerLayerOptimizer

        if not isinstance(optimizer, DPOptimizer):
            raise TypeError(f"optimizer must be an Opacus DPOptimizer (from PrivacyEngine.make_private), "
                            f"got {type(optimizer).__name__}")
        if isinstance(optimizer, DPPerLayerOptimizer):
            raise ValueError("per-layer clipping is not supported: the audit assumes Opacus's flat clipping")
        self.optimizer = optimizer
        self.norm = float(optimizer.max_grad_norm if norm is None else norm)
        if not math.isfinite(self.norm) or self.norm <= 0:
            raise ValueError(f"norm must be a finite number > 0, got {norm!r}")
        self.gen = torch.Generator().manual_seed(int(seed))
        params = optimizer.params
        sizes = [p.numel() for p in params]
        flat = torch.randn(sum(sizes), generator=self.gen, dtype=torch.float64)
        flat = flat / flat.norm()
        self.direction = [d.reshape(p.shape).to(p.device, p.dtype) for d, p in zip(torch.split(flat, sizes), params)]
        self.scores: list[float] = []
        self.inserted: list[bool] = []
        self._original = None
        self.open()

    # -- wiring into the optimizer ------------------------------------------------------------
    def open(self) -> None:
        if self._original is None:
            self._original = self.optimizer.pre_step
            self.optimizer.pre_step = self._pre_step

    def close(self) -> None:
        """Restore the optimizer's own ``pre_step``."""
        if self._original is not None:
            del self.optimizer.pre_step                     # the instance attribute; the class method is back
            self._original = None

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _pre_step(self, closure=None):
        opt = self.optimizer
        params = opt.params
        if opt.grad_samples is None or len(opt.grad_samples) == 0 or opt._check_skip_next_step(pop_next=False):
            return self._original(closure)
        gs = [opt._get_flat_grad_sample(p) for p in params]            # each (B, ...)
        # the batch's own clipped sum along the canary (Opacus's flat clipping, as in clip_and_accumulate)
        if gs[0].shape[0]:
            norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in gs], dim=1).norm(2, dim=1)
            factor = (opt.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
            known = sum(float((torch.einsum("i,i...", factor.to(g.dtype), g) * u).sum())
                        for g, u in zip(gs, self.direction))
        else:
            known = 0.0
        inside = bool(torch.rand((), generator=self.gen) < 0.5)
        if inside:
            for p, u in zip(params, self.direction):
                row = (self.norm * u).to(p.grad_sample[-1].dtype if isinstance(p.grad_sample, list)
                                         else p.grad_sample.dtype)[None]
                if isinstance(p.grad_sample, list):
                    p.grad_sample[-1] = torch.cat([p.grad_sample[-1], row])
                else:
                    p.grad_sample = torch.cat([p.grad_sample, row])
        stepped = self._original(closure)
        if stepped:
            scale = opt.expected_batch_size * opt.accumulated_iterations if opt.loss_reduction == "mean" else 1.0
            released = sum(float((p.grad * u).sum()) for p, u in zip(params, self.direction)) * scale
            self.scores.append((released - known) / opt.max_grad_norm)
            self.inserted.append(inside)
        return stepped

    # -- the result ---------------------------------------------------------------------------
    def result(self, *, delta: float = 1e-5, level: float = 0.95, accountant=None,
               step_accountant: str = "prv") -> OpacusAudit:
        """Fit ``mu``-GDP to the recorded steps; compare with Opacus's promises (see the module's notes).

        ``accountant`` is the run's Opacus accountant (``privacy_engine.accountant``), for the
        run's epsilon and its recomputation at the measured noise; ``step_accountant`` the
        accountant (``"prv"`` or ``"rdp"``) of one step's promised epsilon.
        """
        from ..defenses import DPSGD
        from .gdp import gdp_fit

        s = np.asarray(self.scores)
        inside = np.asarray(self.inserted, dtype=bool)
        if inside.sum() < 4 or (~inside).sum() < 4:
            raise ValueError(f"the audit saw {len(s)} steps ({int(inside.sum())} with the canary): it needs at "
                             "least 4 with and 4 without; run more steps under it")
        fit = gdp_fit(s[inside], s[~inside], delta=delta, level=level)
        sigma = float(self.optimizer.noise_multiplier)
        step_eps = DPSGD(clip=self.optimizer.max_grad_norm, noise=sigma).epsilon(
            delta=delta, sample_rate=1.0, steps=1, accountant=step_accountant) if sigma > 0 else math.inf
        run_eps = implied = name = None
        if accountant is not None:
            name = accountant.mechanism()
            run_eps = float(accountant.get_epsilon(delta=delta))
            mu_lo = fit.details["mu_lower"]
            if mu_lo <= 0:
                implied = 0.0
            else:
                again = type(accountant)()
                again.history = [(1.0 / mu_lo, q, n) for (_, q, n) in accountant.history]
                implied = float(again.get_epsilon(delta=delta))
        return OpacusAudit(fit=fit, noise_multiplier=sigma, max_grad_norm=float(self.optimizer.max_grad_norm),
                           step_epsilon=float(step_eps), run_epsilon=run_eps, implied_run_epsilon=implied,
                           steps=len(s), accountant=name, scores_in=s[inside], scores_out=s[~inside])


def audit_opacus(model, optimizer, data_loader, *, criterion=None, epochs: int = 1, accountant=None,
                 delta: float = 1e-5, level: float = 0.95, seed: int = 0, progress: bool = False) -> OpacusAudit:
    """Run the ordinary Opacus loop (``zero_grad``, ``criterion(model(x), y).backward()``, ``step``) for
    ``epochs`` over ``data_loader`` under :class:`OpacusCanaryAudit` and return its result.

    ``model``, ``optimizer`` and ``data_loader`` are what ``PrivacyEngine.make_private`` returned;
    ``criterion`` defaults to cross-entropy; ``accountant`` is ``privacy_engine.accountant``.
    A loop of one's own runs the same way inside ``with OpacusCanaryAudit(optimizer) as audit:``.
    """
    from .._checks import check_positive_int
    from .._progress import trange

    epochs = check_positive_int("epochs", epochs)
    criterion = torch.nn.CrossEntropyLoss() if criterion is None else criterion
    with OpacusCanaryAudit(optimizer, seed=seed) as audit:
        for _ in trange(epochs, desc="audited epochs", progress=progress, leave=False):
            for x, y in data_loader:
                optimizer.zero_grad()
                if len(x) == 0:                     # Poisson sampling may draw an empty batch
                    continue
                criterion(model(x), y).backward()
                optimizer.step()
    return audit.result(delta=delta, level=level, accountant=accountant)
