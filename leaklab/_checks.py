"""Validation helpers used at every public boundary.

Each helper raises ``TypeError`` or ``ValueError`` with a message that names the
argument, what was expected and what was given, so that a user error never
surfaces as a shape mismatch deep inside torch.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch


def check_tensor(
    name: str,
    value,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool = False,
    finite: bool = True,
) -> torch.Tensor:
    """Return ``value`` if it is a tensor of the expected rank, else raise."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(
                f"{name} must have {want} dimensions, got shape {tuple(value.shape)}"
            )
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if finite and value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return value


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_seed(seed) -> int:
    """``seed`` if it is an int (not a bool), else a TypeError."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return seed


def check_fraction(name: str, value, *, low: float = 0.0, high: float = 1.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not (low <= v <= high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {v}")
    return v


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise ValueError(
            f"unknown {name} {value!r}; choose from: {', '.join(sorted(choices))}"
        )
    return value


def check_labels(name: str, y, *, num_classes: int, length: int | None = None) -> torch.Tensor:
    check_tensor(name, y, ndim=1, finite=False)
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if length is not None and y.shape[0] != length:
        raise ValueError(f"{name} must have {length} labels, got {y.shape[0]}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes - 1}], got values in "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    return y


class Registry(dict):
    """Names mapped to the classes or functions registered under them.

    ``kind`` names what is registered ("an attack", "a game", ...) in error messages.
    It is a dict, so ``name in registry`` and ``registry[name]`` work as usual.
    Registering a name again replaces the entry with a warning, so that a notebook
    cell that defines and registers something can be run twice.
    """

    def __init__(self, kind: str, noun: str):
        super().__init__()
        self.kind = kind      # "an attack": used when a name is registered twice
        self.noun = noun      # "attack": used when a name is unknown

    def add(self, name: str, obj):
        if not isinstance(name, str) or not name:
            raise TypeError(f"the name of {self.kind} must be a non-empty string, got {name!r}")
        if name in self:
            warnings.warn(f"{self.kind} named {name!r} was already registered; replacing it", stacklevel=3)
        self[name] = obj
        return obj

    def decorator(self, name: str, *, set_name: bool = False):
        """A decorator that registers what it decorates as ``name`` (and, with ``set_name``,
        sets the class attribute ``name``): the body of every ``register_*`` function."""
        def deco(obj):
            self.add(name, obj)
            if set_name:
                obj.name = name
            return obj
        return deco

    def lookup(self, name: str):
        """The object registered as ``name``; an unknown name raises a ValueError listing the known ones."""
        check_choice(self.noun, name, self)
        return self[name]

    def names(self) -> list[str]:
        return sorted(self)
