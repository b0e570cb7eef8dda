"""Device choice and seeding: the two things every entry point takes."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["get_device", "seed_everything", "make_generator", "describe_device"]


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return a torch device: the one asked for, else cuda, then mps, then cpu.

    ``device`` may be ``None`` or ``"auto"`` (pick the best available), or any
    string torch understands (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
    Asking for a device that is not available raises a ``ValueError`` that says
    what is available; on Colab, a GPU comes from *Runtime > Change runtime type*.
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, str):
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"unknown device {device!r}; choose from: auto, cpu, cuda, cuda:N, mps"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but no CUDA GPU is visible; use device='cpu' "
            "(on Colab: Runtime > Change runtime type > GPU)"
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but is not available; use device='cpu'")
    return dev


def describe_device(device: torch.device | str | None = None) -> str:
    """A one-line human description of a device (its GPU name where there is one)."""
    dev = get_device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return dev.type


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that CPU runs repeat exactly."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def make_generator(seed: int, device: torch.device | str | None = "cpu") -> torch.Generator:
    """A torch.Generator seeded with ``seed`` on ``device`` (local randomness, no global state)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    gen = torch.Generator(device=get_device(device))
    gen.manual_seed(seed)
    return gen
