"""Auditing: empirical lower bounds on the epsilon of a differential-privacy claim.

Two estimators, both returning an :class:`AuditResult` with ``summary()``:

- :func:`empirical_epsilon`: a threshold test on many "in" and "out" trials, with the
  threshold chosen on a held-out split and Clopper--Pearson bounds on both error rates
  (Jagielski et al. 2020; Nasr et al. 2021); :func:`epsilon_from_counts` takes the
  confusion counts directly.
- :func:`one_run_audit`: Steinke, Nasr and Jagielski's audit in one run, from the scores
  of ``m`` canaries each included with probability 1/2; :func:`one_run_epsilon` takes
  the counts (canaries, guesses, correct).

Tight audits of DP-SGD (Nasr et al. 2023): :func:`audit_gradient` inserts a gradient
canary into one release and :func:`gdp_fit` fits mu-GDP to its statistics;
:func:`check_claim` refutes (or not) a ``dp:clip=C,noise=S`` claim against the mechanism run;
:func:`one_shot_federated` estimates epsilon from random canaries in one federated run
(Andrew et al. 2023); :func:`audit_opacus` and :class:`OpacusCanaryAudit` put gradient
canaries into a user's own Opacus DP-SGD loop.
"""
from .one_run import one_run_audit, one_run_epsilon, one_run_guesses, one_run_p_value
from .result import AuditResult
from .gdp import gdp_fit
from .gradient import audit_gradient, gradient_canary
from .claims import check_claim
from .oneshot import one_shot_federated
from .opacus_audit import OpacusCanaryAudit, audit_opacus
from .threshold import (clopper_pearson_upper, counts_at, empirical_epsilon, epsilon_bound,
                        epsilon_from_counts, select_threshold)

__all__ = ["OpacusCanaryAudit", "audit_gradient", "audit_opacus", "check_claim", "gdp_fit", "gradient_canary",
           "one_shot_federated"]
__all__ += ["AuditResult", "clopper_pearson_upper", "counts_at", "empirical_epsilon", "epsilon_bound",
           "epsilon_from_counts", "one_run_audit", "one_run_epsilon", "one_run_guesses",
           "one_run_p_value", "select_threshold"]
