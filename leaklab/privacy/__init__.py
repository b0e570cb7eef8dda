"""Privacy accounting: the epsilon of a game's or a training run's event, in one place.

:mod:`leaklab.privacy.accounting` turns an event (the noise multiplier of DP-SGD's
Gaussian mechanism, the sampling rate, the number of noisy steps, and the neighbouring
relation the experiment compares) into an epsilon at a given delta, with a kept
accountant (Opacus's RDP or PRV accountant). The defenses, the games, federated
training, the trade-off sweep, the command line and the audits all ask it.
"""
from .accounting import ACCOUNTANTS, NEIGHBOURS, PrivacyEvent, epsilon

__all__ = ["ACCOUNTANTS", "NEIGHBOURS", "PrivacyEvent", "epsilon"]
