"""Check a differential-privacy claim against the mechanism actually run.

A claim such as ``dp:clip=1,noise=1`` promises an epsilon: the accountant's epsilon of
one DP-SGD step at that noise multiplier (for adding or removing one record, sample
rate 1). :func:`check_claim` audits the mechanism that really runs (by default the
claim itself; in practice whatever implementation is being checked, a
:class:`~leaklab.defenses.Defense` or its ``NAME:KEY=VALUE`` spelling) with a gradient
canary (:func:`~leaklab.audit.audit_gradient`) and refutes the claim when the audit's
lower confidence bound on epsilon exceeds the promised epsilon.

The canary is larger than the claimed clip norm (four times by default): a mechanism
that clips as claimed reduces it to the clip norm and nothing changes, while one that
skips clipping lets all of it through and is caught.

What a verdict means. "Refuted" is evidence at the stated confidence: with the GDP
estimator (the default) a correct Gaussian mechanism is refuted with probability at
most ``(1 - level) / 2`` (the lower end of a two-sided ``level`` interval; 0.05% at the
default ``level=0.999``), provided the statistic is Gaussian with one variance in both
worlds, which holds for any mechanism that adds Gaussian noise to a sum of gradients.
``estimator="threshold"`` uses the held-out Clopper--Pearson bound instead, which
assumes nothing about the scores and refutes far less. "Not refuted" proves nothing:
an audit only ever finds violations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .._checks import check_choice
from .gradient import GradientAudit

__all__ = ["ClaimCheck", "check_claim", "CLAIM_ESTIMATORS"]

#: The estimators :func:`check_claim` can decide with.
CLAIM_ESTIMATORS = ("gdp", "threshold")


@dataclass
class ClaimCheck:
    """The verdict of :func:`check_claim` and its evidence.

    ``refuted`` is True when the audit's ``epsilon_lower`` (by ``estimator``) exceeds
    ``claimed_epsilon``; ``audit`` is the :class:`~leaklab.audit.gradient.GradientAudit`
    of the mechanism actually run.
    """

    claim: dict
    mechanism: dict
    claimed_epsilon: float
    accountant: str
    estimator: str
    refuted: bool
    audit: GradientAudit
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"refuted": self.refuted, "claim": self.claim, "mechanism": self.mechanism,
                "claimed_epsilon": self.claimed_epsilon, "accountant": self.accountant,
                "estimator": self.estimator, "evidence": dict(self.evidence), "audit": self.audit.to_dict()}

    def summary(self) -> str:
        e = self.evidence
        verdict = "REFUTED" if self.refuted else "not refuted"
        why = (f"{self.estimator} lower bound {e['epsilon_lower']:.3f} "
               f"{'>' if self.refuted else '<='} claimed {self.claimed_epsilon:.3f} ({self.accountant})")
        return (f"claim {_spec(self.claim)}: {verdict}: {why} at {e['level']:.1%} confidence, delta {e['delta']:g}; "
                f"measured mu {e['mu']:.3f} [{e['mu_lower']:.3f}, {e['mu_upper']:.3f}] against the claim's "
                f"{e['claimed_mu']:.3f}; mechanism run {_spec(self.mechanism)}")

    def __str__(self) -> str:
        return self.summary()


def _spec(config: dict) -> str:
    kv = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items() if k != "name")
    return f"{config['name']}:{kv}" if kv else config["name"]


def check_claim(claim, mechanism=None, *, dataset="diabetes", trials: int = 2000, batch_size: int = 8,
                canary: str = "dirac", canary_norm: float | None = None, delta: float = 1e-5,
                level: float = 0.999, estimator: str = "gdp", accountant: str = "prv", model=None, device=None,
                seed: int = 0, progress: bool = False) -> ClaimCheck:
    """Audit ``mechanism`` (default: the claim's own defense) against the epsilon that ``claim`` promises.

    ``claim`` is a DP-SGD defense (``"dp:clip=C,noise=S"`` or a :class:`~leaklab.defenses.DPSGD`);
    its promised epsilon is the ``accountant``'s for one step at sample rate 1 at
    ``delta``. ``mechanism`` is the defense that really runs: any defense acting on
    gradients, per record or per batch (a user's own :class:`~leaklab.defenses.Defense`
    subclass included). ``canary_norm`` defaults to four times the claimed clip norm.
    The other arguments are :func:`~leaklab.audit.audit_gradient`'s.

    >>> check_claim("dp:clip=1,noise=1", "dp:clip=1,noise=0.5", trials=1000).refuted
    True
    """
    from ..defenses import as_defense
    from .gradient import audit_gradient

    check_choice("estimator", estimator, CLAIM_ESTIMATORS)
    claim = as_defense(claim)
    if claim.name != "dp" or not hasattr(claim, "epsilon"):
        raise ValueError(f"claim must be a DP-SGD defense such as 'dp:clip=1,noise=1', got {claim.spec()!r}")
    if claim.noise <= 0:
        raise ValueError(f"claim {claim.spec()!r} has no noise: it promises no finite epsilon, there is nothing "
                         "to refute")
    mechanism = claim if mechanism is None else as_defense(mechanism)
    if canary_norm is None:
        canary_norm = 4.0 * claim.clip
    claimed = float(claim.epsilon(delta=delta, sample_rate=1.0, steps=1, accountant=accountant))
    res = audit_gradient(dataset, defense=mechanism, trials=trials, batch_size=batch_size, canary=canary,
                         canary_norm=canary_norm, delta=delta, level=level, accountant=accountant, model=model,
                         device=device, seed=seed, progress=progress)
    decisive = res.gdp if estimator == "gdp" else res.threshold
    g = res.gdp.details
    evidence = {"epsilon_lower": decisive.epsilon_lower, "estimator": estimator, "level": level, "delta": delta,
                "claimed_epsilon": claimed, "claimed_mu": 1.0 / claim.noise, "mu": g["mu"],
                "mu_lower": g["mu_lower"], "mu_upper": g["mu_upper"], "gdp_epsilon_lower": res.gdp.epsilon_lower,
                "gdp_epsilon_point": res.gdp.epsilon_point,
                "threshold_epsilon_lower": res.threshold.epsilon_lower,
                "normality_p": g.get("normality_p"), "equal_variance_p": g.get("equal_variance_p"),
                "assumes": g["assumes"] if estimator == "gdp" else "nothing about the scores (Clopper-Pearson)",
                "trials": trials, "canary": canary, "canary_norm": canary_norm}
    refuted = bool(math.isfinite(claimed) and decisive.epsilon_lower > claimed)
    return ClaimCheck(claim=claim.config(), mechanism=mechanism.config(), claimed_epsilon=claimed,
                      accountant=accountant, estimator=estimator, refuted=refuted, audit=res, evidence=evidence)
