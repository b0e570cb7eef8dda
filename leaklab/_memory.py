"""How much work fits in memory: chunk sizes of batched computations from the free memory of the device.

A batched engine (vmap over trials) holds every trial of a chunk at once. A fixed
chunk is either too small for a large GPU (many small calls, the device idles) or
too large for a small machine (it runs out of memory); so the chunk is sized to
what is free now: a fraction of the free memory of the device divided by the
bytes one item needs.
"""
from __future__ import annotations

import os

import torch

__all__ = ["free_bytes", "fit_chunk"]

#: Assumed free memory when the device cannot tell (1 GiB).
FALLBACK_BYTES = 2**30


def free_bytes(device: torch.device | str | None = None) -> int | None:
    """Free memory of ``device`` in bytes now, or ``None`` when it cannot be told.

    CUDA: ``torch.cuda.mem_get_info`` plus what torch's caching allocator holds but
    does not use. CPU: ``MemAvailable`` of ``/proc/meminfo`` (Linux), else the free
    physical pages from ``os.sysconf``.
    """
    dev = torch.device("cpu" if device is None else device)
    if dev.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(dev)
            return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
        except (RuntimeError, AssertionError):
            return None
    if dev.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def fit_chunk(bytes_per_item: int, *, device=None, fraction: float = 0.25, minimum: int = 1,
              maximum: int | None = None, available: int | None = None) -> int:
    """Items per chunk: ``fraction`` of the free memory (``available`` bytes, default :func:`free_bytes`)
    divided by ``bytes_per_item``, clipped to ``[minimum, maximum]``.

    >>> fit_chunk(1000, available=10**6, fraction=0.5)
    500
    """
    if not isinstance(bytes_per_item, int) or bytes_per_item < 1:
        raise ValueError(f"bytes_per_item must be a positive integer, got {bytes_per_item!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    if available is None:
        available = free_bytes(device)
    if available is None:
        available = FALLBACK_BYTES
    n = int(available * fraction) // bytes_per_item
    n = max(minimum, n)
    return n if maximum is None else min(n, maximum)
