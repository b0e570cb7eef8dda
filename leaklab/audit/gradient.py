"""Gradient canaries: a white-box audit of one FedSGD / DP-SGD release (Nasr et al. 2023).

The strongest adversary of DP-SGD's guarantee does not need a record: it may insert a
*gradient*. A gradient canary ``c`` is a vector in the space of the shared
parameters, either a Dirac (one coordinate) or a uniformly random direction, of norm
``canary_norm`` (the clip norm by default). The audit fixes a batch of ``B`` records
(the dataset ``D``) and plays ``trials`` releases of one step, half of them with the
canary added as one more per-record gradient *before clipping* (``D'``, the canary
"in") and half with a zero gradient in its place (``D``: a zero gradient adds nothing
to the clipped sum, so both worlds have ``B + 1`` rows and the same normalisation).
Every release goes through the defense's own step, ``defense(grads, generator=...)``
(for DP-SGD: :class:`leaklab.defenses.DPSGD`, which clips each row, sums, adds
``N(0, (sigma C)^2)`` and divides by the rows). The statistic of a trial is the
release's projection on the canary's direction ``u = c / |c|``, multiplied by the
``B + 1`` rows (the projection of the summed release).

For DP-SGD with clip ``C`` and noise ``sigma`` the statistic is ``N(p, (sigma C)^2)``
without the canary and ``N(p + C, (sigma C)^2)`` with it (``p`` the fixed batch's
clipped projection): exactly ``1/sigma``-GDP, the exact privacy of one Gaussian step
for adding or removing one record. :func:`audit_gradient` fits ``mu``-GDP to the two
samples (:func:`~leaklab.audit.gdp_fit`) and also counts errors with a held-out
threshold (:func:`~leaklab.audit.empirical_epsilon`); the accountant's epsilon of one
step at sample rate 1 stands beside them.

Trials are batched: the per-record gradients of the batch are computed once
(``torch.func.vmap``), broadcast over a chunk of trials ``(T, B + 1, ...)``, and the
defense draws all the chunk's noise at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._checks import check_choice, check_positive_int
from .result import AuditResult

__all__ = ["CANARY_DIRECTIONS", "GradientCanary", "gradient_canary", "canary_statistics", "GradientAudit",
           "audit_gradient", "accountant_epsilon"]

#: The kinds of direction :func:`gradient_canary` draws.
CANARY_DIRECTIONS = ("dirac", "random")


@dataclass
class GradientCanary:
    """A gradient inserted as one more record: ``direction`` (unit norm over all shared parameters) times ``norm``."""

    direction: dict
    norm: float
    kind: str
    index: int | None = None          # the Dirac canary's coordinate in the flattened shared parameters

    def gradient(self) -> dict:
        """The canary gradient itself, ``norm * direction``, by parameter name."""
        return {k: self.norm * v for k, v in self.direction.items()}

    def flat_direction(self) -> torch.Tensor:
        return torch.cat([v.reshape(-1) for v in self.direction.values()])

    def summary(self) -> str:
        where = f" at coordinate {self.index}" if self.index is not None else ""
        return f"{self.kind} gradient canary{where}, norm {self.norm:g}"


def _number(name: str, value, *, low: float = 0.0, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < low or (low_open and v == low):
        raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low:g}, got {value!r}")
    return v


def gradient_canary(params, *, kind: str = "dirac", norm: float = 1.0, seed: int = 0) -> GradientCanary:
    """A canary shaped like ``params`` (a dict of tensors, or a model's shared parameters).

    ``kind="dirac"``: one coordinate, drawn uniformly with ``seed``, set to ``norm``;
    ``kind="random"``: a direction drawn uniformly on the unit sphere (a normalised
    Gaussian vector), times ``norm``.
    """
    from ..release import shared_names

    check_choice("kind", kind, CANARY_DIRECTIONS)
    norm = _number("norm", norm)
    if isinstance(params, nn.Module):
        shared = set(shared_names(params))
        params = {k: v.detach() for k, v in params.named_parameters() if k in shared}
    if not isinstance(params, dict) or not params:
        raise TypeError(f"params must be a model or a non-empty dict of tensors, got {type(params).__name__}")
    sizes = [v.numel() for v in params.values()]
    P = sum(sizes)
    gen = torch.Generator().manual_seed(int(seed))
    ref = next(iter(params.values()))
    if kind == "dirac":
        index = int(torch.randint(P, (1,), generator=gen))
        flat = torch.zeros(P, dtype=ref.dtype, device=ref.device)
        flat[index] = 1.0
    else:
        index = None
        flat = torch.randn(P, generator=gen, dtype=ref.dtype)
        flat = flat / flat.norm()
    parts = torch.split(flat.to(ref.device), sizes)
    direction = {k: p.reshape(v.shape) for (k, v), p in zip(params.items(), parts)}
    return GradientCanary(direction=direction, norm=norm, kind=kind, index=index)


def _shared_batch_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params) -> dict:
    from ..fl import per_sample_gradients
    from ..release import shared_names

    g = per_sample_gradients(model, x, y, params=params)          # (B, ...) per parameter
    return {k: g[k].detach() for k in shared_names(model)}


def canary_statistics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, canary: GradientCanary, *,
                      defense, trials: int, params=None, seed: int = 0, chunk: int | None = None,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The statistics ``(in, out)`` of ``trials`` one-step releases of the batch ``x (B, ...)``, ``y (B,)``.

    The first half of the trials (``trials // 2``, rounded up) have the canary "in".
    Each trial's release is ``defense`` applied to the batch's per-record gradients
    with the canary's gradient (in) or a zero gradient (out) as one more row; a
    defense acting on the batch gradient gets the mean of those ``B + 1`` rows. The
    statistic is ``(B + 1) <release, u>``. Model-side defenses (VIB, SPN) change the
    model, not the gradient, and have no place for a gradient canary.
    """
    from .._progress import trange
    from ..defenses import as_defense

    defense = as_defense(defense)
    if defense.acts_on not in ("sample", "batch"):
        raise ValueError(f"a gradient canary needs a defense that acts on gradients (per record or per batch); "
                         f"{defense.name!r} acts on the model")
    trials = check_positive_int("trials", trials, minimum=4)
    if params is None:
        params = {k: v.detach() for k, v in model.named_parameters()}
    grads = _shared_batch_grads(model, x, y, params)
    if set(grads) != set(canary.direction):
        raise ValueError(f"the canary's parameters {sorted(canary.direction)} are not the model's shared "
                         f"parameters {sorted(grads)}")
    B1 = next(iter(grads.values())).shape[0] + 1
    P = sum(v[0].numel() for v in grads.values())
    if chunk is None:
        chunk = max(1, min(trials, (1 << 23) // max(B1 * P, 1)))      # about 32 MB of float32 per chunk
    chunk = check_positive_int("chunk", chunk)
    gen_device = next(iter(grads.values())).device
    gen = torch.Generator(device=gen_device).manual_seed(int(seed))
    cg = {k: v.to(grads[k].device, grads[k].dtype) for k, v in canary.gradient().items()}
    u = {k: v.to(grads[k].device, grads[k].dtype) for k, v in canary.direction.items()}
    n_in = (trials + 1) // 2
    is_in = torch.arange(trials, device=gen_device) < n_in
    stats = []
    for s in trange(0, trials, chunk, desc="canary trials", progress=progress, leave=False):
        inn = is_in[s:s + chunk].to(gen_device)
        T = int(inn.shape[0])
        rows = {}
        for k, g in grads.items():                                   # (T, B + 1, ...)
            slot = inn.reshape(T, *[1] * g[0].ndim).to(g.dtype) * cg[k][None]
            rows[k] = torch.cat([g[None].expand(T, *g.shape), slot[:, None]], dim=1)
        if defense.acts_on == "batch":
            rows = {k: v.mean(1) for k, v in rows.items()}
        with torch.no_grad():
            rel = defense(rows, generator=gen)
        proj = sum((rel[k].reshape(T, -1) * u[k].reshape(1, -1)).sum(1) for k in u)
        stats.append(proj.detach().cpu().double() * B1)
    s = torch.cat(stats).cpu().numpy()
    if not np.isfinite(s).all():
        raise ValueError("the defense released NaN or inf values; no statistic can be computed")
    return s[:n_in], s[n_in:]


def accountant_epsilon(defense, *, delta: float, accountant: str = "prv") -> float | None:
    """The accountant's epsilon of one DP-SGD step at sample rate 1 (adding or removing one record); None
    for a defense that is not DP-SGD."""
    from ..defenses import as_defense

    defense = as_defense(defense)
    if defense.name != "dp" or not hasattr(defense, "epsilon"):
        return None
    return float(defense.epsilon(delta=delta, sample_rate=1.0, steps=1, accountant=accountant))


@dataclass
class GradientAudit:
    """The outcome of :func:`audit_gradient`.

    ``gdp`` is the mu-GDP fit (the audit's headline ``epsilon_lower``), ``threshold`` the
    distribution-free held-out Clopper--Pearson bound on the same trials;
    ``accountant_epsilon`` the Opacus accountant's epsilon of one step at sample rate 1
    (``None`` unless the defense is DP-SGD) and ``exact_epsilon`` that of
    ``1/sigma``-GDP, the exact epsilon of one Gaussian step.
    """

    gdp: AuditResult
    threshold: AuditResult
    canary: GradientCanary
    defense: dict
    trials: int
    batch_size: int
    accountant: str
    accountant_epsilon: float | None = None
    exact_epsilon: float | None = None
    seed: int = 0
    scores_in: np.ndarray | None = field(default=None, repr=False)
    scores_out: np.ndarray | None = field(default=None, repr=False)

    @property
    def epsilon_lower(self) -> float:
        return self.gdp.epsilon_lower

    @property
    def ratio(self) -> float | None:
        """``epsilon_lower / accountant_epsilon``: how tight the audit is (1 is tight)."""
        if self.accountant_epsilon is None or not math.isfinite(self.accountant_epsilon):
            return None
        return self.epsilon_lower / self.accountant_epsilon

    def to_dict(self) -> dict:
        g = self.gdp
        return {"epsilon_lower": g.epsilon_lower, "epsilon_point": g.epsilon_point,
                "epsilon_upper": g.details["epsilon_upper"], "estimator": "gdp", "method": g.details["method"],
                "assumes": g.details["assumes"], "mu": g.details["mu"], "mu_lower": g.details["mu_lower"],
                "mu_upper": g.details["mu_upper"], "normality_p": g.details.get("normality_p"),
                "equal_variance_p": g.details.get("equal_variance_p"), "level": g.level, "delta": g.delta,
                "accountant_epsilon": self.accountant_epsilon, "accountant": self.accountant,
                "ratio": self.ratio, "exact_epsilon": self.exact_epsilon,
                "threshold_epsilon_lower": self.threshold.epsilon_lower,
                "threshold_counts": dict(self.threshold.counts),
                "canary": self.canary.kind, "canary_norm": self.canary.norm, "defense": self.defense,
                "trials": self.trials, "batch_size": self.batch_size, "seed": self.seed}

    def summary(self) -> str:
        g = self.gdp
        s = (f"{self.canary.summary()}; GDP fit mu {g.details['mu']:.3f} "
             f"[{g.details['mu_lower']:.3f}, {g.details['mu_upper']:.3f}], epsilon >= {g.epsilon_lower:.3f} "
             f"({g.level:.0%} interval, {g.details['method']}, delta {g.delta:g}); held-out threshold: epsilon >= "
             f"{self.threshold.epsilon_lower:.3f}")
        if self.accountant_epsilon is not None:
            s += (f"; accountant ({self.accountant}) {self.accountant_epsilon:.3f}, ratio {self.ratio:.3f}; "
                  f"exact 1/sigma-GDP {self.exact_epsilon:.3f}")
        return s


def audit_gradient(dataset="diabetes", *, defense="dp:clip=1,noise=1", trials: int = 2000, batch_size: int = 8,
                   canary: str | GradientCanary = "dirac", canary_norm: float | None = None, delta: float = 1e-5,
                   level: float = 0.95, method: str = "exact", accountant: str = "prv",
                   model: nn.Module | None = None, device=None, seed: int = 0,
                   progress: bool = False) -> GradientAudit:
    """Audit one release of ``defense`` with a gradient canary: the GDP fit and the held-out threshold bound.

    ``dataset`` (a name or a :class:`~leaklab.data.Dataset`) supplies the fixed batch of
    ``batch_size`` records (drawn with ``seed``) and, with ``model`` (default: the
    game's default model for the dataset, at its initialisation with ``seed``), their
    gradients. ``canary`` is ``"dirac"``, ``"random"`` or a :class:`GradientCanary`;
    ``canary_norm`` defaults to the defense's clip norm (1 without one). ``trials``
    releases are played, half with the canary. ``method`` is the GDP interval's
    (``"exact"`` or ``"bootstrap"``, see :func:`~leaklab.audit.gdp_fit`).

    >>> r = audit_gradient(defense="dp:clip=1,noise=1", trials=400, seed=0)
    >>> 0 < r.epsilon_lower < r.accountant_epsilon
    True
    """
    from ..data import Dataset, load_dataset
    from ..defenses import ACCOUNTANTS, as_defense
    from ..games import default_model
    from ..runtime import get_device
    from ..theory.information import gdp_epsilon
    from .gdp import gdp_fit
    from .threshold import empirical_epsilon

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    check_choice("accountant", accountant, ACCOUNTANTS)
    trials = check_positive_int("trials", trials, minimum=8)
    batch_size = check_positive_int("batch_size", batch_size)
    defense = as_defense(defense)
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if not isinstance(data, Dataset):
        raise TypeError(f"dataset must be a name or a leaklab Dataset, got {type(dataset).__name__}")
    if batch_size > len(data):
        raise ValueError(f"batch_size must be at most the {len(data)} records of {data.name!r}, got {batch_size}")
    dev = get_device(device)
    if model is None:
        model = default_model(data, seed=seed, device=dev)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = model.to(dev)
    if canary_norm is None:
        canary_norm = float(getattr(defense, "clip", 1.0))
    # three independent streams from one seed: the batch, the canary's direction, the defense's noise
    # (one stream for all would make the first noise draw equal the random canary's direction)
    s_batch, s_canary, s_noise = (int(v) for v in torch.randint(2**62, (3,), generator=torch.Generator().manual_seed(seed)))
    if isinstance(canary, str):
        canary = gradient_canary(model, kind=canary, norm=canary_norm, seed=s_canary)
    if not isinstance(canary, GradientCanary):
        raise TypeError(f"canary must be one of {', '.join(CANARY_DIRECTIONS)} or a GradientCanary, "
                        f"got {type(canary).__name__}")
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(s_batch))[:batch_size]
    x, y = data.x[idx].to(dev), data.y[idx].to(dev)
    s_in, s_out = canary_statistics(model, x, y, canary, defense=defense, trials=trials, seed=s_noise,
                                    progress=progress)
    fit = gdp_fit(s_in, s_out, delta=delta, level=level, method=method, seed=seed)
    thr = empirical_epsilon(s_in, s_out, delta=delta, level=level, seed=seed)
    acc = accountant_epsilon(defense, delta=delta, accountant=accountant)
    exact = None
    if acc is not None:
        exact = gdp_epsilon(delta, 1.0 / defense.noise) if defense.noise > 0 else math.inf
    return GradientAudit(gdp=fit, threshold=thr, canary=canary, defense=defense.config(), trials=trials,
                         batch_size=batch_size, accountant=accountant, accountant_epsilon=acc, exact_epsilon=exact,
                         seed=seed, scores_in=s_in, scores_out=s_out)
