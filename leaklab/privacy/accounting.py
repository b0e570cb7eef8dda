"""The epsilon of an event: ``(noise, sample rate, steps, neighbours) -> epsilon`` at ``delta``.

DP-SGD adds ``N(0, (sigma C)^2)`` to a sum of per-record gradients clipped to norm ``C``
(Abadi et al., 2016). What that buys depends on the event an experiment compares:

* ``steps`` noisy releases, each with every record Poisson-sampled at rate ``sample_rate``
  (1 when the target is in every release: no amplification by sampling);
* the neighbouring datasets: ``"add/remove"`` (one record more or less, Opacus's
  convention: the clipped sum moves by at most ``C``) or ``"replace-one"`` (one record's
  value changed, as in the attribute and membership-of-a-batch games: the sum can move by
  ``2C``, which is the Gaussian mechanism with the noise multiplier halved).

The accountant is kept, not written here: Opacus's ``RDPAccountant`` (Mironov, 2017) or
``PRVAccountant`` (Gopi et al., 2021).

>>> from leaklab.privacy import PrivacyEvent
>>> round(PrivacyEvent(noise=2.0).epsilon(delta=1e-5), 2)
2.17
>>> PrivacyEvent(noise=2.0, neighbours="replace-one").epsilon(delta=1e-5) > 2.17
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .._checks import check_choice, check_fraction

__all__ = ["ACCOUNTANTS", "NEIGHBOURS", "PrivacyEvent", "epsilon"]

#: The kept accountants: Opacus's Renyi-DP and privacy-random-variable accountants.
ACCOUNTANTS = ("rdp", "prv")
#: The neighbouring relations: one record added or removed, or one record's value replaced.
NEIGHBOURS = ("add/remove", "replace-one")


def _number(name: str, value, *, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < low:
        raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
    return v


@dataclass(frozen=True)
class PrivacyEvent:
    """What DP-SGD's noise protects in an experiment: the event whose epsilon is asked for.

    ``noise`` is the noise multiplier ``sigma``; ``sample_rate`` the Poisson sampling rate
    of a record at each step; ``steps`` the number of noisy releases; ``neighbours`` one of
    :data:`NEIGHBOURS`.
    """

    noise: float
    sample_rate: float = 1.0
    steps: int = 1
    neighbours: str = "add/remove"

    def __post_init__(self):
        object.__setattr__(self, "noise", _number("noise", self.noise))
        rate = check_fraction("sample_rate", self.sample_rate)
        if rate == 0:
            raise ValueError("sample_rate must be > 0")
        object.__setattr__(self, "sample_rate", rate)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {self.steps!r}")
        check_choice("neighbours", self.neighbours, NEIGHBOURS)

    @property
    def noise_multiplier(self) -> float:
        """The noise multiplier of the add/remove mechanism with the same privacy: ``sigma``, or
        ``sigma / 2`` for replace-one neighbours (the clipped sum moves by up to ``2 C``)."""
        return self.noise / 2 if self.neighbours == "replace-one" else self.noise

    def epsilon(self, *, delta: float, accountant: str = "rdp") -> float:
        """The epsilon of the event at ``delta`` from the Opacus ``accountant``; infinite without noise."""
        check_choice("accountant", accountant, ACCOUNTANTS)
        delta = check_fraction("delta", delta)
        if not 0 < delta < 1:
            raise ValueError(f"delta must lie in (0, 1), got {delta}")
        if self.noise == 0:
            return math.inf
        if accountant == "rdp":
            from opacus.accountants import RDPAccountant as Acc
        else:
            from opacus.accountants import PRVAccountant as Acc
        import numpy as np

        acc = Acc()
        acc.history = [(self.noise_multiplier, self.sample_rate, self.steps)]
        with np.errstate(divide="ignore", invalid="ignore"):   # PRV at sample_rate 1 takes log(0) on purpose
            return float(acc.get_epsilon(delta=delta))

    def record(self, *, delta: float = 1e-5, accountant: str = "rdp") -> dict:
        """The epsilon with what it was computed from (for result records and ``--json``): ``epsilon`` for
        this event's neighbours, and both conventions, ``epsilon_add_remove`` and ``epsilon_replace``."""
        both = {n: PrivacyEvent(self.noise, self.sample_rate, self.steps, n).epsilon(delta=delta, accountant=accountant)
                for n in NEIGHBOURS}
        return {"neighbours": self.neighbours, "epsilon": both[self.neighbours],
                "epsilon_add_remove": both["add/remove"], "epsilon_replace": both["replace-one"],
                "delta": delta, "accountant": accountant, "sample_rate": self.sample_rate, "steps": self.steps,
                "noise": self.noise}


def epsilon(noise: float, *, delta: float, sample_rate: float = 1.0, steps: int = 1,
            neighbours: str = "add/remove", accountant: str = "rdp") -> float:
    """The epsilon of :class:`PrivacyEvent` ``(noise, sample_rate, steps, neighbours)`` at ``delta``."""
    return PrivacyEvent(noise, sample_rate, steps, neighbours).epsilon(delta=delta, accountant=accountant)
