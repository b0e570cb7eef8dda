"""Canaries for auditing attribute inference: natural records and crafted ones.

An audit is only as strong as its worst case. In the attribute game the target's
sensitive feature takes one of two values; how well any adversary can tell them
apart from a release depends on the target. For a record ``(x, y)`` with its
sensitive column set to value ``v``, let ``g_v`` be its gradient at the parameters
``theta`` (each clipped to norm ``C`` when the defense clips, as DP-SGD does) and
``d = g_1 - g_0``. The rest of the batch adds gradients that the adversary does not
know; along ``u = d / |d|`` they spread with variance ``var_u``, estimated on the
auditor's records (``background``). The **exposure** of the record is::

    exposure = |d| / sqrt(others * var_u + noise_std^2)

the distance between the two hypotheses in units of the spread of what hides them
(``others`` unknown records in the summed release, Gaussian noise of standard
deviation ``noise_std`` on the sum). It is the signal-to-noise ratio of the informed
adversary's projection.

* a **random** natural canary is a record drawn from the data;
* the **most exposed** natural canary is the record of the data with the largest
  exposure (a search over every record);
* a **crafted** canary is a point of the data's valid range (the box between the
  per-feature minimum and maximum of the data) whose exposure is maximised by
  gradient ascent (``torch.func``: the gradient of the exposure with respect to the
  canary's features, through the parameter gradient), the sensitive column held at
  each of its two values, from the most exposed natural record and random starts,
  for every label.

:func:`audit_attribute` plays the attribute game with a canary as the target
(:class:`leaklab.games.canary.CanaryAttributeGame`) and turns the adversary's scores
into an empirical epsilon.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import grad, vmap

from types import SimpleNamespace

from .._checks import check_choice, check_positive_int
from ..data import Dataset
from ..validate import check_game_sizes
from ..games.canary import Canary  # the record type lives with the game that plays it
from .result import AuditResult

__all__ = ["Canary", "CANARY_KINDS", "attribute_values", "exposure", "natural_canary", "craft_canary",
           "make_canary", "CanaryAudit", "audit_attribute", "attribute_accountant_epsilon"]

#: The kinds of canary :func:`make_canary` builds.
CANARY_KINDS = ("random", "natural", "crafted")


# --------------------------------------------------------------------------- validation
def _check_data(data) -> Dataset:
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a leaklab Dataset, got {type(data).__name__}")
    if data.x.ndim != 2:
        raise ValueError(f"canaries need tabular records (N, F); dataset {data.name!r} has shape "
                         f"{tuple(data.x.shape)}")
    return data


def _column(data: Dataset, attribute: str | None) -> tuple[str, int]:
    feats = data.info.attribute_features
    if attribute is None:
        if not feats:
            raise ValueError(f"dataset {data.name!r} declares no attribute with a feature column; "
                             "canaries need one")
        attribute = next(iter(feats))
    check_choice(f"attribute with a feature column of dataset {data.name!r}", attribute, feats)
    return attribute, int(feats[attribute])


def _number(name: str, value, *, low: float = 0.0, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < low:
        raise ValueError(f"{name} must be a finite number >= {low}, got {value}")
    return v


def attribute_values(data: Dataset, attribute: str | None = None) -> tuple[float, ...]:
    """The value of the sensitive feature column for each code of ``attribute``: its mean over the records
    with that code (exact for a coded attribute such as sex; the informed adversary's candidates)."""
    data = _check_data(data)
    attribute, col = _column(data, attribute)
    codes = data.attributes[attribute]
    k = len(data.info.attributes[attribute])
    out = []
    for v in range(k):
        m = codes == v
        if not bool(m.any()):
            raise ValueError(f"dataset {data.name!r} has no record with {attribute} code {v}")
        out.append(float(data.x[m, col].mean()))
    return tuple(out)


# --------------------------------------------------------------------------- gradients
def _setup(model: nn.Module, params):
    from ..release import objective_of, shared_names

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if params is None:
        params = {k: v.detach() for k, v in model.named_parameters()}
    params = {k: v.detach() for k, v in params.items()}
    shared = shared_names(model)
    loss = objective_of(model, surrogate=True)

    def flat_grad(x, y):                              # one record (F,), label () -> (P,)
        g = grad(loss)(params, x[None], y[None])
        return torch.cat([g[k].reshape(-1) for k in shared])
    return flat_grad


def _clip(g: torch.Tensor, clip: float | None) -> torch.Tensor:
    if clip is None:
        return g
    factor = (clip / (g.norm(dim=-1, keepdim=True) + 1e-6)).clamp(max=1.0)
    return g * factor


def _background(flat_grad, data: Dataset, clip, max_background: int, generator) -> torch.Tensor:
    n = len(data)
    idx = torch.randperm(n, generator=generator)[:max_background] if n > max_background else torch.arange(n)
    dev = next(iter([data.x])).device
    g = vmap(flat_grad)(data.x[idx].to(dev), data.y[idx].to(dev)).detach()
    g = _clip(g, clip)
    return g - g.mean(0)                                               # centred (N, P)


def _exposure_from(d: torch.Tensor, bg: torch.Tensor, others: float, noise_var: float) -> torch.Tensor:
    """``|d| / sqrt(others var_u + noise^2)`` for rows of ``d`` (..., P) against centred ``bg`` (N, P)."""
    nd2 = (d * d).sum(-1)
    proj = d @ bg.T                                                    # (..., N) = |d| <b, u>
    var_u = (proj * proj).mean(-1) / nd2.clamp_min(1e-30)
    return nd2.sqrt() / (others * var_u + noise_var).clamp_min(1e-30).sqrt()


def exposure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, column: int, values, background: Dataset,
             params=None, clip: float | None = None, noise_std: float = 0.0, others: float = 1.0,
             max_background: int = 512, seed: int = 0) -> torch.Tensor:
    """The exposure ``(N,)`` of records ``x (N, F)`` with labels ``y (N,)`` (see the module's formula).

    ``values`` are the sensitive column's two values; ``background`` the records whose
    gradients play the unknown rest of the batch (at most ``max_background`` of them,
    drawn with ``seed``); ``clip`` clips every gradient as DP-SGD does; ``noise_std``
    is the standard deviation of the noise on the summed release, ``others`` the
    number of unknown records in it.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise TypeError(f"x must be a float tensor (N, F), got {getattr(x, 'shape', type(x).__name__)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf values")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape[:1]:
        raise ValueError(f"y must be a tensor of shape ({x.shape[0]},), got {getattr(y, 'shape', y)}")
    values = tuple(float(v) for v in values)
    if len(values) != 2:
        raise ValueError(f"values must hold the sensitive column's two values, got {values!r}")
    clip = _number("clip", clip, allow_none=True)
    noise_var = _number("noise_std", noise_std) ** 2
    others = _number("others", others)
    flat_grad = _setup(model, params)
    gen = torch.Generator().manual_seed(int(seed))
    bg = _background(flat_grad, _check_data(background), clip, check_positive_int("max_background", max_background),
                     gen)

    def d_of(xi, yi):
        a, b = xi.clone(), xi.clone()
        a[column], b[column] = values[0], values[1]
        return _clip(flat_grad(b, yi), clip) - _clip(flat_grad(a, yi), clip)
    d = vmap(d_of)(x, y).detach()
    return _exposure_from(d, bg, others, noise_var)


# --------------------------------------------------------------------------- canaries
def natural_canary(data: Dataset, model: nn.Module, *, kind: str = "natural", attribute: str | None = None,
                   params=None, clip: float | None = None, noise_std: float = 0.0, others: float = 1.0,
                   background: Dataset | None = None, max_background: int = 512, seed: int = 0) -> Canary:
    """A natural record of ``data`` as the canary: ``kind="random"`` (one drawn with ``seed``) or
    ``"natural"`` (the record with the largest :func:`exposure`, found by searching every record)."""
    data = _check_data(data)
    check_choice("kind", kind, ("random", "natural"))
    attribute, col = _column(data, attribute)
    values = attribute_values(data, attribute)
    if len(values) != 2:
        raise ValueError(f"canaries audit a binary attribute; {attribute!r} has {len(values)} values")
    bg = data if background is None else background
    e = exposure(model, data.x, data.y, column=col, values=values, background=bg, params=params, clip=clip,
                 noise_std=noise_std, others=others, max_background=max_background, seed=seed)
    if kind == "random":
        i = int(torch.randint(len(data), (1,), generator=torch.Generator().manual_seed(int(seed))))
    else:
        i = int(torch.argmax(e))
    x = data.x[i].clone()
    x[col] = values[0]
    return Canary(x=x, y=int(data.y[i]), attribute=attribute, column=col, values=values, kind=kind,
                  exposure=float(e[i]), index=i,
                  details={"exposure_median": float(e.median()), "exposure_max": float(e.max())})


def craft_canary(data: Dataset, model: nn.Module, *, attribute: str | None = None, params=None,
                 clip: float | None = None, noise_std: float = 0.0, others: float = 1.0,
                 background: Dataset | None = None, steps: int = 150, lr: float = 0.05, restarts: int = 8,
                 max_background: int = 512, seed: int = 0, progress: bool = False) -> Canary:
    """A crafted canary: maximise :func:`exposure` over the data's valid range by gradient ascent.

    The free features (all but the sensitive column) start from the most exposed
    natural record and from ``restarts - 1`` uniform points of the box
    ``[min, max]`` of each feature over ``data``, each with every label; ``steps``
    steps of Adam (step size ``lr`` times the box's width) ascend the log-exposure,
    whose gradient with respect to the features ``torch.func`` computes through the
    parameter gradient (vmapped over starts). After every step the features are
    projected back into the box. The best end point wins; it is never worse than
    the most exposed natural record, which is one of the starts.
    """
    from .._progress import trange

    data = _check_data(data)
    steps = check_positive_int("steps", steps, minimum=0)
    restarts = check_positive_int("restarts", restarts)
    lr = _number("lr", lr)
    attribute, col = _column(data, attribute)
    values = attribute_values(data, attribute)
    if len(values) != 2:
        raise ValueError(f"canaries audit a binary attribute; {attribute!r} has {len(values)} values")
    clip = _number("clip", clip, allow_none=True)
    noise_var = _number("noise_std", noise_std) ** 2
    others = _number("others", others)
    bg_data = data if background is None else _check_data(background)
    nat = natural_canary(data, model, attribute=attribute, params=params, clip=clip, noise_std=noise_std,
                         others=others, background=bg_data, max_background=max_background, seed=seed)
    flat_grad = _setup(model, params)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    bg = _background(flat_grad, bg_data, clip, max_background, torch.Generator().manual_seed(int(seed)))
    lo, hi = data.x.min(0).values, data.x.max(0).values
    width = (hi - lo).clamp_min(1e-12)
    starts = torch.cat([nat.x[None], lo + torch.rand(restarts - 1, lo.shape[0], generator=gen) * width])
    labels = torch.arange(data.num_classes, device=data.x.device)
    z = starts.repeat_interleave(len(labels), 0).clone()               # (S, F)
    ys = labels.repeat(starts.shape[0])

    def log_exposure(zi, yi):
        a, b = zi.clone(), zi.clone()
        a[col], b[col] = values[0], values[1]
        d = _clip(flat_grad(b, yi), clip) - _clip(flat_grad(a, yi), clip)
        return torch.log(_exposure_from(d, bg, others, noise_var).clamp_min(1e-30))

    ascent = vmap(grad(log_exposure))
    value = vmap(log_exposure)
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    free = torch.ones(z.shape[1], device=z.device)
    free[col] = 0.0
    b1, b2 = 0.9, 0.999
    best_z, best_val = z.clone(), value(z, ys).detach()
    for t in trange(1, steps + 1, desc="crafting a canary", progress=progress, leave=False):
        g = ascent(z, ys).detach() * free
        g = torch.nan_to_num(g)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + 1e-12)
        z = torch.minimum(torch.maximum(z + lr * width * step, lo), hi)   # projection onto the box
        val = value(z, ys).detach()
        better = val > best_val
        best_z[better], best_val[better] = z[better], val[better]
    i = int(torch.argmax(best_val))
    x = best_z[i].clone()
    x[col] = values[0]
    if not (bool((x >= lo).all()) and bool((x <= hi).all())):          # cannot happen: we project every step
        raise RuntimeError("the crafted canary left the data's valid range")
    e = exposure(model, x[None], ys[i:i + 1], column=col, values=values, background=bg_data, params=params,
                 clip=clip, noise_std=noise_std, others=others, max_background=max_background, seed=seed)
    return Canary(x=x, y=int(ys[i]), attribute=attribute, column=col, values=values, kind="crafted",
                  exposure=float(e[0]), index=None,
                  details={"natural_exposure": nat.exposure, "natural_index": nat.index, "steps": steps,
                           "restarts": restarts, "lr": lr})


def _noise_model(defense, batch_size: int, clients: int = 1) -> dict:
    """What the exposure should assume for a defense: DP-SGD's clip and noise; the unknown records."""
    others = max(clients * batch_size - 1, 1)
    if getattr(defense, "name", None) == "dp":
        return {"clip": defense.clip, "noise_std": defense.noise * defense.clip, "others": others}
    return {"clip": None, "noise_std": 0.0, "others": others}


def make_canary(kind: str, data: Dataset, model: nn.Module, *, defense=None, batch_size: int = 1,
                seed: int = 0, **options) -> Canary:
    """A canary of ``kind`` (``random``, ``natural`` or ``crafted``) for the game against ``defense``.

    The exposure assumes what the auditor knows of the release: DP-SGD's clipping
    and noise when the defense is ``dp``, and ``batch_size - 1`` unknown records.
    """
    from ..defenses import as_defense

    check_choice("canary", kind, CANARY_KINDS)
    defense = as_defense(defense)
    check_positive_int("batch_size", batch_size)
    opts = {**_noise_model(defense, batch_size), **options}
    if defense.acts_on == "model":                   # the release is the gradient of the wrapped model
        model = defense.wrap(copy.deepcopy(model), seed=seed)
    if kind == "crafted":
        return craft_canary(data, model, seed=seed, **opts)
    for key in ("steps", "lr", "restarts", "progress"):      # options of the crafting only
        opts.pop(key, None)
    return natural_canary(data, model, kind=kind, seed=seed, **opts)


# --------------------------------------------------------------------------- the audit
def attribute_accountant_epsilon(defense, *, delta: float, rounds: int, accountant: str = "rdp") -> float:
    """The accountant's epsilon for the attribute game against DP-SGD, ``rounds`` rounds, sample rate 1.

    Opacus accounts for adding or removing one record (sensitivity ``C``). Changing the
    target's attribute replaces its clipped gradient by another, which moves the sum
    by up to ``2C``: a Gaussian mechanism with sensitivity ``2C`` and noise ``sigma C``,
    the same as sensitivity ``C`` with noise multiplier ``sigma / 2``. So the epsilon of
    the attribute game is the accountant's at ``sigma / 2`` (:mod:`leaklab.privacy.accounting`'s
    replace-one event).
    """
    from ..defenses import DPSGD
    from ..privacy.accounting import PrivacyEvent

    if not isinstance(defense, DPSGD):
        raise TypeError(f"defense must be a DP-SGD defense, got {type(defense).__name__}")
    return PrivacyEvent(defense.noise, 1.0, rounds, "replace-one").epsilon(delta=delta, accountant=accountant)


@dataclass
class CanaryAudit:
    """The outcome of :func:`audit_attribute`: the empirical epsilon and what it was measured on.

    ``audit`` is the :class:`~leaklab.audit.AuditResult` (threshold estimator, held-out
    threshold); ``auroc`` the adversary's AUROC on the same trials; for DP-SGD,
    ``accountant_epsilon`` is the accountant's epsilon for the attribute game
    (:func:`attribute_accountant_epsilon`), ``membership_epsilon`` the accountant's
    epsilon at the defense's own noise multiplier (adding or removing a record) and
    ``gdp_epsilon`` the exact epsilon of ``2 sqrt(R) / sigma``-GDP.

    :meth:`to_dict` (what ``leaklab audit --json`` prints) holds ``epsilon_lower``,
    ``epsilon_point`` (infinite when an error rate is 0), ``level``, ``delta``,
    ``estimator``, ``counts``, ``threshold`` (those of :class:`~leaklab.audit.AuditResult`),
    ``auroc``, ``canary``, ``canary_exposure``, ``canary_label``, ``defense``, ``adaptive``,
    ``trials``, ``batch_size``, ``rounds``, ``seed``; for DP-SGD also the three epsilons
    above and ``ratio = epsilon_lower / accountant_epsilon`` (``None`` when the accountant's
    epsilon is infinite). :meth:`summary` is one line of the same.
    """

    audit: AuditResult
    canary: Canary
    defense: dict
    adaptive: bool
    trials: int
    batch_size: int
    rounds: int
    auroc: float
    accountant_epsilon: float | None = None
    membership_epsilon: float | None = None
    gdp_epsilon: float | None = None
    seed: int = 0
    scores: np.ndarray | None = field(default=None, repr=False)
    secret: np.ndarray | None = field(default=None, repr=False)

    @property
    def epsilon_lower(self) -> float:
        return self.audit.epsilon_lower

    @property
    def ratio(self) -> float | None:
        """``epsilon_lower / accountant_epsilon`` for DP-SGD: how tight the audit is (1 is tight)."""
        if self.accountant_epsilon is None or not math.isfinite(self.accountant_epsilon):
            return None
        return self.epsilon_lower / self.accountant_epsilon

    def to_dict(self) -> dict:
        a = self.audit
        out = {"epsilon_lower": a.epsilon_lower, "epsilon_point": a.epsilon_point, "level": a.level,
               "delta": a.delta, "estimator": a.estimator, "counts": dict(a.counts), "threshold": a.threshold,
               "auroc": self.auroc, "canary": self.canary.kind, "canary_exposure": self.canary.exposure,
               "canary_label": self.canary.y, "defense": self.defense, "adaptive": self.adaptive,
               "trials": self.trials, "batch_size": self.batch_size, "rounds": self.rounds, "seed": self.seed}
        if self.accountant_epsilon is not None:
            out.update(accountant_epsilon=self.accountant_epsilon, membership_epsilon=self.membership_epsilon,
                       gdp_epsilon=self.gdp_epsilon, ratio=self.ratio)
        return out

    def summary(self) -> str:
        s = f"{self.canary.summary()}; {self.audit.summary()}; AUROC {self.auroc:.3f}"
        if self.accountant_epsilon is not None:
            s += f"; accountant epsilon {self.accountant_epsilon:.3f} (ratio {self.ratio:.3f})"
        return s


def audit_attribute(dataset, *, canary: str | Canary = "crafted", defense=None, adaptive: bool = False,
                    trials: int = 1000, batch_size: int = 8, rounds: int = 1, delta: float = 1e-5,
                    level: float = 0.95, attribute: str | None = None, model: nn.Module | None = None,
                    canary_options: dict | None = None, adversary_options: dict | None = None,
                    device=None, seed: int = 0, progress: bool = False) -> CanaryAudit:
    """Audit attribute privacy with a canary as the target of the attribute game.

    The canary (``"random"``, ``"natural"`` — the most exposed record —, ``"crafted"``,
    or a :class:`Canary`) is built on the auditor's data at the parameters of the
    game's first round, then the game is played ``trials`` times with the informed
    adversary (``adaptive`` to the defense or not). The secret of each trial is
    uniform; the trials with secret 1 are the "in" trials and those with secret 0
    the "out" trials of :func:`~leaklab.audit.empirical_epsilon` (held-out threshold,
    Clopper--Pearson, ``delta``). That is the right test: DP bounds every test between
    the releases of two neighbouring datasets, and the two datasets that differ only
    in the target's attribute are neighbours (replace one record), so ``(eps, delta)``-DP
    bounds exactly this test's error rates.
    """
    from ..data import load_dataset
    from ..defenses import as_defense
    from ..games import default_model, play
    from ..games.canary import CanaryAttributeGame, with_canary
    from ..runtime import get_device
    from ..theory.information import dpsgd_attribute_mu, gdp_epsilon
    from .threshold import empirical_epsilon

    if isinstance(dataset, str):
        dataset = load_dataset(dataset)
    data = _check_data(dataset)
    check_positive_int("trials", trials, minimum=4)
    check_positive_int("batch_size", batch_size)
    check_positive_int("rounds", rounds)
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False, got {adaptive!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    defense = as_defense(defense)
    dev = get_device(device)
    if model is None:
        model = default_model(data, seed=seed, device=dev)
    check_game_sizes("attribute", data, model, batch_size=batch_size, trials=trials, rounds=rounds, defense=defense,
                     adaptive=adaptive, device=dev, adversary=SimpleNamespace(
                         name="informed", sims=dict(adversary_options or {}).get("sims", 32)))   # before crafting
    if isinstance(canary, str):
        canary = make_canary(canary, data, model, defense=defense, batch_size=batch_size, seed=seed,
                             **dict(canary_options or {}))
    if not isinstance(canary, Canary):
        raise TypeError(f"canary must be one of {', '.join(CANARY_KINDS)} or a Canary, got {type(canary).__name__}")
    game = CanaryAttributeGame(data.info, canary=canary)
    res = play(game, with_canary(data, canary), adversary="informed", batch_size=batch_size, rounds=rounds,
               trials=trials, defense=defense, adaptive=adaptive, model=model,
               adversary_options=adversary_options, device=dev, seed=seed, progress=progress)
    scores, secret = res.scores(), res.secret
    audit = empirical_epsilon(scores[secret == 1], scores[secret == 0], delta=delta, level=level, seed=seed)
    acc = member = gdp = None
    if defense.name == "dp":
        acc = attribute_accountant_epsilon(defense, delta=delta, rounds=rounds)
        member = defense.epsilon(delta=delta, sample_rate=1.0, steps=rounds)
        gdp = gdp_epsilon(delta, dpsgd_attribute_mu(rounds, defense.noise)) if defense.noise > 0 else math.inf
    return CanaryAudit(audit=audit, canary=canary, defense=defense.config(), adaptive=adaptive, trials=trials,
                       batch_size=batch_size, rounds=rounds, auroc=float(res.score().auroc),
                       accountant_epsilon=acc, membership_epsilon=member, gdp_epsilon=gdp, seed=seed,
                       scores=scores, secret=secret)
