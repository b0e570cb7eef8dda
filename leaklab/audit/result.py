"""The record an audit returns: a lower confidence bound on epsilon and how it was obtained."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["AuditResult"]


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3f}"


@dataclass(frozen=True)
class AuditResult:
    """An empirical lower bound on the epsilon of an (epsilon, delta)-DP claim.

    Its fields:

    estimator
        ``"threshold"`` (a threshold test on in/out trials, Clopper--Pearson bounds) or
        ``"one-run"`` (Steinke, Nasr and Jagielski's audit in one training run).
    epsilon_lower
        With probability at least ``level`` the mechanism is not (eps, delta)-DP for any
        eps below this value (0 when the data reject nothing).
    epsilon_point
        The same formula with the observed rates in place of their bounds (no guarantee;
        ``inf`` when an error rate is 0).
    level
        The confidence of ``epsilon_lower``.
    delta
        The delta of the claim being audited.
    counts
        The counts behind the bound (``tp, fn, fp, tn`` for the threshold test;
        ``canaries, guesses, correct`` for the one-run audit).
    threshold
        The decision threshold (scores at or above it are guessed "in"); ``None`` for the
        one-run audit's guesses made from a ranking.
    details
        Anything else the estimator reports (the split, the rates and their bounds).
    """

    estimator: str
    epsilon_lower: float
    epsilon_point: float
    level: float
    delta: float
    counts: dict
    threshold: float | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        thr = "" if self.threshold is None else f", threshold {self.threshold:.4g}"
        return (f"{self.estimator} audit: epsilon >= {_fmt(self.epsilon_lower)} with confidence "
                f"{self.level:.0%} at delta={self.delta:g} (point estimate {_fmt(self.epsilon_point)}; "
                f"{counts}{thr})")

    def __str__(self) -> str:
        return self.summary()
