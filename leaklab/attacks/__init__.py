"""Attacks on shared gradients: reconstruction of inputs and inference of secrets."""
from .base import Reconstruction, get_attack, list_attacks, register_attack

__all__ = ["Reconstruction", "get_attack", "list_attacks", "register_attack"]
