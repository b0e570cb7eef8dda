"""Profiles: one knob for the size of every experiment.

``LEAKLAB_PROFILE`` selects one of three profiles:

* ``smoke`` — CI: every notebook runs in seconds; numbers are not meaningful.
* ``book`` — the default: each chapter within about three minutes on a 2-core CPU.
* ``paper`` — paper scale, meant for a GPU (Colab): more trials, more iterations,
  larger datasets (downloaded on first use).

An invalid ``LEAKLAB_PROFILE`` is an error everywhere: :func:`get_profile` and every
``leaklab`` command refuse it in one line.

This module is the one place that says what each profile sets. Notebooks call
:func:`get_profile` and read its fields, or :meth:`Profile.pick` for a value of
their own, instead of testing the environment variable themselves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["Profile", "PROFILES", "get_profile", "check_environment"]

ENV_VAR = "LEAKLAB_PROFILE"


@dataclass(frozen=True)
class Profile:
    name: str
    trials: int            # independent trials per setting of an experiment
    iters: int             # optimisation steps of an iterative attack
    restarts: int          # random restarts of an iterative attack
    train_steps: int       # SGD steps when a chapter trains a model
    max_samples: int       # cap on the number of records a chapter loads from a dataset
    batch_sizes: tuple[int, ...] = field(default=(1, 4, 16))   # batch sizes swept
    rounds: tuple[int, ...] = field(default=(1, 5))            # observed rounds swept
    image_dataset: str = "digits"                              # the chapters' default image data
    photo_size: int = 32                                       # side of photo-like images

    def pick(self, *, smoke, book, paper):
        """Return the value given for this profile (for chapter-specific knobs)."""
        return {"smoke": smoke, "book": book, "paper": paper}[self.name]


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", trials=4, iters=10, restarts=1, train_steps=10, max_samples=256,
        batch_sizes=(1, 4), rounds=(1, 2), image_dataset="digits", photo_size=16,
    ),
    "book": Profile(
        name="book", trials=64, iters=300, restarts=1, train_steps=300, max_samples=2000,
        batch_sizes=(1, 4, 16, 64), rounds=(1, 5), image_dataset="digits", photo_size=32,
    ),
    "paper": Profile(
        name="paper", trials=512, iters=2000, restarts=4, train_steps=3000, max_samples=60000,
        batch_sizes=(1, 4, 16, 64, 128), rounds=(1, 5, 10), image_dataset="cifar10", photo_size=32,
    ),
}


def check_environment() -> str:
    """The profile name ``$LEAKLAB_PROFILE`` selects (``book`` when unset); a ValueError when it is invalid.

    Case and surrounding spaces are ignored; an empty value is an error (unset the
    variable to get the default).
    """
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return "book"
    name = raw.strip().lower()
    if name not in PROFILES:
        raise ValueError(f"{ENV_VAR}={raw!r} is not a profile; choose from: {', '.join(PROFILES)} "
                         f"(or unset {ENV_VAR} for book)")
    return name


def get_profile(name: str | None = None) -> Profile:
    """The profile named by ``name``, else by ``$LEAKLAB_PROFILE``, else ``book``."""
    if name is None:
        return PROFILES[check_environment()]
    if not isinstance(name, str):
        raise TypeError(f"profile name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from: {', '.join(PROFILES)}")
    return PROFILES[key]

