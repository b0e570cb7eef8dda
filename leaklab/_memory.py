"""How much work fits in memory: chunk sizes of batched computations from the free memory of the device.

A batched engine (vmap over trials) holds every trial of a chunk at once. A fixed
chunk is either too small for a large GPU (many small calls, the device idles) or
too large for a small machine (it runs out of memory); so the chunk is sized to
what is free now: a fraction of the free memory of the device divided by the
bytes one item needs.
"""
from __future__ import annotations

import functools
import os

import torch

__all__ = ["free_bytes", "fit_chunk", "budget_bytes", "largest_fitting", "game_bytes", "shadow_models_bytes",
           "sweep_bytes", "reconstruction_bytes"]

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


# -- how much a planned run needs: estimates checked before any work starts ---------------------

#: A run may use this share of the free memory of its device before it is refused.
BUDGET_FRACTION = 0.5


def budget_bytes(device=None) -> int | None:
    """The bytes a planned run may use on ``device``: :data:`BUDGET_FRACTION` of what is free now (None: unknown)."""
    free = free_bytes(device)
    return None if free is None else int(BUDGET_FRACTION * free)


def largest_fitting(need, lo: int, hi: int, budget: float) -> int | None:
    """The largest ``v`` in ``[lo, hi]`` with ``need(v) <= budget`` (``need`` increasing), or None."""
    if hi < lo or need(lo) > budget:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= budget else (lo, mid - 1)
    return lo


def game_bytes(*, trials: int, batch_size: int, record_numel: int, params: int, rounds: int = 1,
               clients: int = 1, secrets: int = 2, per_sample: bool = False, simulations: int = 0,
               shadow_trials: int = 0) -> int:
    """A rough estimate of the peak memory of a game played over ``trials`` trials (bytes).

    Per trial: the records of its batches (``clients * batch_size`` records of
    ``record_numel`` values, with their activations and gradients: about 48 bytes per
    value, fitted to the peak memory of the informed and shadow adversaries in the
    attribute game on diabetes at batch 2000 and 500 or 2000 trials, within a factor 1.4), the releases (one per
    client, their sum and the adversary's copy: ``params`` floats each), ``simulations``
    simulated releases per secret value (the adaptive informed adversary) and the scores
    of every round. A shadow adversary simulates ``shadow_trials`` more batches. Under
    DP-SGD (``per_sample``), one chunk of at least 64 trials also holds a gradient per
    record.
    """
    per_value = 48
    batch = clients * batch_size * record_numel * per_value
    per_trial = (batch + 4 * params * (clients + 2) + secrets * simulations * batch
                 + 24 * rounds * max(secrets, 2))
    chunk = min(trials, 64) * clients * batch_size * params * 4 if per_sample else 0
    return trials * per_trial + shadow_trials * batch + chunk


def shadow_models_bytes(*, shadows: int, params: int, candidates: int, train_batch: int, record_numel: int,
                        classes: int) -> int:
    """Peak memory of training ``shadows`` models together (LiRA): parameters, gradients and momentum
    (4 copies), a training batch each with its activations, and their confidences on every candidate."""
    return shadows * (16 * params + train_batch * record_numel * 48 + 16 * candidates * max(classes, 2))


def sweep_bytes(records: int) -> int:
    """Memory of a trade-off sweep's bookkeeping: every record's key and the record read back (about 6 kB each)."""
    return records * 6 * 1024


def _activations(net, input_shape) -> int:
    """Elements output by the leaf modules of ``net`` for one record (a forward pass on one record of zeros,
    on the device of its parameters)."""
    total = [0]

    def hook(_mod, _inp, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    p = next(net.parameters(), None)
    try:
        with torch.no_grad():
            net(torch.zeros(1, *input_shape, device=None if p is None else p.device,
                            dtype=torch.float32 if p is None else p.dtype))
    except Exception:  # noqa: BLE001  (a model that fails on zeros: count its input only)
        total[0] = 0
    finally:
        for h in handles:
            h.remove()
    return total[0]


@functools.lru_cache(maxsize=64)
def _registered_stats(model: str, input_shape: tuple, num_classes: int) -> tuple[int, int]:
    """(parameters, activations per record) of a registered model.

    Built on the meta device (nothing allocated, whatever the input size); when it is small
    (under 50 million parameters, 10 million input values) its activations are counted on
    the CPU (uninitialised weights, one record of zeros), else on the meta device (slower:
    torch loads its meta kernels on the first pass).
    """
    import math

    from .models import build_model, num_parameters

    with torch.device("meta"):
        net = build_model(model, input_shape, num_classes, seed=0)
    params = num_parameters(net)
    if params <= 5 * 10**7 and math.prod(input_shape) <= 10**7:
        net = net.to_empty(device="cpu")
    return params, _activations(net, input_shape)


def reconstruction_bytes(attack, model, input_shape, num_classes: int, trials: int, batch_size: int) -> int:
    """A rough estimate of the memory a reconstruction run needs (bytes).

    Per trial, an optimisation attack holds the model's parameters ``P`` and released
    gradient several times over (stacked per trial, repeated per restart, inner and
    outer gradient), and per record its L-BFGS or Adam state over the ``D`` input values
    and the ``A`` activations of the double backward pass: about
    ``restarts * (250 B D + 16 P + 8 B A)`` floats. The constants are fitted to the
    peak memory of LeNet, ConvNet and ResNet runs on 32x32 and 64x64 images (within
    about 25%). ``attack`` is the attack function (iterative when it takes ``iters``; its
    ``restarts`` default counts). A registered ``model`` (a name) is built once on the CPU
    (cached); a module is measured as it is, by a forward pass on one record.
    """
    import inspect
    import math

    from torch import nn


    if isinstance(model, nn.Module):
        params = sum(p.numel() for p in model.parameters())
        acts = _activations(model, input_shape)
    else:
        params, acts = _registered_stats(model, tuple(input_shape), num_classes)
    d = math.prod(input_shape)
    sig = inspect.signature(attack).parameters
    restarts = sig["restarts"].default if "restarts" in sig else 1
    if "iters" in sig:
        per_trial = 4 * restarts * (250 * batch_size * d + 16 * params + 8 * batch_size * acts)
    else:
        per_trial = 4 * (8 * batch_size * d + 8 * params + 4 * batch_size * acts)
    return 150 * 2**20 + trials * per_trial
