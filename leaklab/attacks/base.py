"""What every reconstruction attack takes and returns, and the registry of attacks.

A reconstruction attack sees what an honest-but-curious server sees in FedSGD:
the model's architecture, its parameters at the attacked round and the released
gradients. It runs ``T`` independent trials at once: ``params`` and ``grads`` carry
a leading trial dimension, and the result holds ``T`` reconstructed batches.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .._checks import Registry

__all__ = ["Reconstruction", "register_attack", "get_attack", "list_attacks"]


@dataclass
class Reconstruction:
    """The output of a reconstruction attack over ``T`` trials of batch size ``B``.

    ``x`` has shape ``(T, B, *input_shape)``; ``y`` holds the recovered labels
    ``(T, B)`` (or ``None`` when the attack does not recover labels); ``loss`` the
    attack's final objective per trial ``(T,)`` where it has one; ``info`` anything
    else the attack reports (iterations run, ranks, ...).
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


AttackFn = Callable[..., Reconstruction]
_ATTACKS: Registry = Registry("an attack", "attack")


def register_attack(name: str) -> Callable[[AttackFn], AttackFn]:
    """Decorator: register a reconstruction attack under ``name``.

    The attack is called as ``fn(model, params, grads, *, input_shape, num_classes,
    batch_size, device, seed, progress, **options)`` where ``params`` and ``grads``
    map parameter names to tensors with a leading trial dimension ``T``.
    """
    return _ATTACKS.decorator(name)


def get_attack(name: str) -> AttackFn:
    """The attack registered as ``name`` (a ValueError lists the registered ones)."""
    return _ATTACKS.lookup(name)


def list_attacks() -> list[str]:
    return _ATTACKS.names()
