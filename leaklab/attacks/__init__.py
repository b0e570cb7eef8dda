"""Attacks on shared gradients: reconstruction of inputs and inference of secrets."""
from .base import Reconstruction, get_attack, list_attacks, register_attack
from . import analytic, rgap  # noqa: F401  (register the "analytic" and "rgap" attacks, the "rgapnet" model)
from .analytic import fc_input_from_gradients

__all__ = ["Reconstruction", "get_attack", "list_attacks", "register_attack"]
__all__ += ["analytic", "fc_input_from_gradients", "rgap"]
