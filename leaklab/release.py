"""The release path: one road from a client's data to what the server sees.

Every attack, game, defense and training loop computes what a client releases
through :func:`release`, so that a defense is written once and acts everywhere:

1. **the objective** — the model's training loss: cross-entropy on its logits,
   unless the model brings its own (a model-side defense such as VIB or SPN
   defines ``objective(x, y)``, see :func:`objective_of`);
2. **the gradients** — one per record ``(T, B, ...)`` when the defense clips each
   record (DP-SGD), else one per batch ``(T, ...)``; computed for all ``T`` trials in
   one ``torch.func.vmap``, with ``randomness="different"`` so that a stochastic
   model draws its own noise in every trial (seeded through ``generator``);
3. **the defense** ``M`` transforms them, drawing its noise from ``generator``;
4. **only the shared parameters leave the client**: a parameter named in the
   model's ``secret_parameters`` (a secret head) never does.

>>> import torch, leaklab
>>> from leaklab.release import release
>>> model = leaklab.build_model("mlp", (4,), 2, hidden=(3,), seed=0)
>>> xs, ys = torch.randn(5, 2, 4), torch.randint(2, (5, 2))
>>> g = release(model, xs, ys)
>>> tuple(g["net.1.weight"].shape)       # (T, *shape): one release per trial
(5, 3, 4)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ._checks import check_choice, check_positive_int, check_tensor

__all__ = ["Params", "release", "release_one", "objective_of", "shared_names", "is_stochastic",
           "check_batch", "seeded", "ENGINES", "memory_chunk"]

Params = dict[str, torch.Tensor]
ENGINES = ("batched", "loop")


# -- what the model is trained on, and what it shares ----------------------------------------------

class _Objective(nn.Module):
    """Calls ``model.<method>(x, y)`` through ``forward`` so that ``functional_call`` can reach it."""

    def __init__(self, model: nn.Module, method: str = "objective"):
        super().__init__()
        self.m = model
        self.method = method

    def forward(self, x, y):
        return getattr(self.m, self.method)(x, y)


def objective_of(model: nn.Module, *, static: bool = False,
                 surrogate: bool = False) -> Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of ``model`` as a function ``loss(params, x, y)`` of its parameters.

    A model that defines ``objective(x, y)`` (a model-side defense) is trained on it;
    any other on the cross-entropy of its logits. With ``static=True`` the model's
    own objective is ignored and cross-entropy on ``model(x)`` is used instead: what
    an attacker who does not adapt to a model-side defense assumes. With
    ``surrogate=True`` a model's ``surrogate_objective`` (a noise-free stand-in for a
    stochastic objective) is used where it has one.
    """
    if static or not callable(getattr(model, "objective", None)):
        def loss(params, x, y):
            return F.cross_entropy(functional_call(model, params, (x,)), y)
        return loss
    method = "surrogate_objective" if surrogate and callable(getattr(model, "surrogate_objective", None)) else "objective"
    wrapper = _Objective(model, method)

    def loss(params, x, y):
        return functional_call(wrapper, {f"m.{k}": v for k, v in params.items()}, (x, y))
    return loss


def shared_names(model: nn.Module) -> list[str]:
    """The names of the parameters a client releases (all but the model's ``secret_parameters``)."""
    secret = set(getattr(model, "secret_parameters", ()) or ())
    return [k for k, _ in model.named_parameters() if k not in secret]


def is_stochastic(model: nn.Module) -> bool:
    """Whether the model's objective draws random numbers (it declares ``stochastic = True``)."""
    return bool(getattr(model, "stochastic", False))


#: Trials per independently seeded block of a stochastic model's release (see :func:`release`).
SAMPLING_BLOCK = 64


@contextmanager
def _forked(seed: int):
    """Run the block with torch's global RNG (CPU and the current CUDA device) seeded with ``seed``,
    restored afterwards."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def seeded(generator: torch.Generator | None):
    """Run the block with torch's global RNG seeded from ``generator`` (restored afterwards).

    ``vmap(..., randomness="different")`` draws from the global RNG; forking it and
    seeding it from the caller's generator keeps stochastic models repeatable
    without disturbing anyone else's random stream.
    """
    if generator is None:
        yield
        return
    with _forked(int(torch.randint(2**62, (1,), generator=generator))):
        yield


def check_batch(x, y, *, batch_dims: int, num_classes: int | None = None) -> None:
    """Check that ``x`` is a finite float tensor and ``y`` integer labels of shape ``x.shape[:batch_dims]``."""
    check_tensor("x", x, floating=True)
    check_tensor("y", y, finite=False)
    if x.ndim < batch_dims + 1:
        raise ValueError(f"x must have at least {batch_dims + 1} dimensions, got shape {tuple(x.shape)}")
    if tuple(y.shape) != tuple(x.shape[:batch_dims]):
        raise ValueError(
            f"y must have shape {tuple(x.shape[:batch_dims])} to match x {tuple(x.shape)}, got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"y must hold class labels >= 0, got {int(y.min())}")
    if num_classes is not None and y.numel() and int(y.max()) >= num_classes:
        raise ValueError(f"y must hold class labels below {num_classes} (the model's classes), got {int(y.max())}")


def _num_classes(model: nn.Module) -> int | None:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    n = getattr(model, "num_classes", None)
    return int(n) if isinstance(n, int) else (last.out_features if last is not None else None)


def memory_chunk(xs: torch.Tensor, params: Mapping[str, torch.Tensor], *, per_sample: bool = False,
                 budget: int | None = None, minimum: int = 1) -> int:
    """Trials per vmap call: as many as fit a quarter of the device's free memory, or ``budget`` floats.

    A trial needs about ``16`` floats per input entry of its batch (activations and their
    gradients) and two copies of the parameters, plus one per record when the gradients
    are kept per record (DP-SGD). See :func:`leaklab._memory.fit_chunk`.
    """
    from ._memory import fit_chunk

    per_record = math.prod(xs.shape[2:]) if xs.ndim > 2 else 1
    n_params = sum(v.numel() for v in params.values())
    B = xs.shape[1] if xs.ndim > 1 else 1
    floats = B * per_record * 16 + n_params * (2 + (B if per_sample else 0))
    size = xs.element_size()
    available = None if budget is None else int(budget) * size * 4
    return fit_chunk(max(int(floats), 1) * size, device=xs.device, minimum=minimum, available=available)


# -- the release ---------------------------------------------------------------------------------

def _gradients(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, params: Params, *,
               params_batched: bool, per_sample: bool, static: bool, engine: str) -> Params:
    loss = objective_of(model, static=static)
    randomness = "different" if is_stochastic(model) else "error"
    if engine == "loop":
        out: dict[str, list[torch.Tensor]] = {k: [] for k in params}
        for t in range(xs.shape[0]):
            p = {k: (v[t] if params_batched else v).detach().requires_grad_(True) for k, v in params.items()}
            rows = [(xs[t, i:i + 1], ys[t, i:i + 1]) for i in range(xs.shape[1])] if per_sample else [(xs[t], ys[t])]
            per = []
            for x, y in rows:
                per.append(dict(zip(p, torch.autograd.grad(loss(p, x, y), list(p.values()), allow_unused=True))))
            for k in p:
                gs = [d[k] if d[k] is not None else torch.zeros_like(p[k]) for d in per]
                out[k].append(torch.stack(gs) if per_sample else gs[0])
        return {k: torch.stack(v) for k, v in out.items()}
    pdim = 0 if params_batched else None
    if per_sample:
        def one(p, x, y):                       # gradient of one record's loss
            return grad(loss)(p, x[None], y[None])
        inner = vmap(one, in_dims=(None, 0, 0), randomness=randomness)
        return vmap(inner, in_dims=(pdim, 0, 0), randomness=randomness)(params, xs, ys)
    return vmap(grad(loss), in_dims=(pdim, 0, 0), randomness=randomness)(params, xs, ys)


def release(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, *, params: Mapping[str, torch.Tensor] | None = None,
            params_batched: bool = False, defense=None, generator: torch.Generator | None = None,
            engine: str = "batched", chunk: int | None = None, static_objective: bool = False,
            check: bool = True) -> Params:
    """What ``T`` clients (or trials) release for the batches ``xs (T, B, ...)``, ``ys (T, B)``.

    Parameters
    ----------
    model
        The architecture; its ``objective`` (if it defines one) is the training loss.
    params
        The parameters ``theta`` (default: the model's current ones), with a leading
        trial dimension when ``params_batched`` (one model per trial). They may
        include the model's secret parameters, which shape the gradients but are
        never released, and may hold buffers of the model (e.g. each client's own secret
        class codes under SPN, batched like the parameters), used in place of the model's.
    defense
        A :class:`leaklab.defenses.Defense`, a spec string such as ``"dp:clip=1,noise=2"``,
        or ``None`` (no defense). A model-side defense must already be applied to
        ``model`` (``defense.wrap(model)``); here it leaves the gradients as they are.
    generator
        The source of every random draw (the defense's noise, a stochastic model's
        sampling); the same generator state gives the same release. Required for a
        stochastic model (``stochastic = True``, e.g. VIB): its sampling runs under
        ``vmap(randomness="different")``, which draws from torch's global RNG; each block of
        :data:`SAMPLING_BLOCK` trials forks that RNG and seeds it from ``generator``, so the
        draws of a trial depend on the generator and the trial's place alone, not on the
        caller's global RNG state or on how many trials fit in memory (unless fewer than
        :data:`SAMPLING_BLOCK` do).
    engine
        ``"batched"`` (vmap over trials, in chunks that fit memory) or ``"loop"``
        (ordinary autograd, one trial at a time: the oracle the batched path is tested against).
    static_objective
        Use cross-entropy even if the model has its own objective (see :func:`objective_of`).

    Returns
    -------
    dict
        For each shared parameter, a ``(T, *shape)`` tensor: the released gradient.
    """
    from .defenses import as_defense

    check_choice("engine", engine, ENGINES)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if check:
        check_batch(xs, ys, batch_dims=2, num_classes=_num_classes(model))
    defense = as_defense(defense)
    names = [k for k, _ in model.named_parameters()]
    if params is None:
        params = {k: v.detach() for k, v in model.named_parameters()}
        params_batched = False
    else:
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of tensors, got {type(params).__name__}")
        missing = [k for k in names if k not in params]
        if missing:
            raise ValueError(f"params lacks the model's parameters {missing}")
        # buffers given beside the parameters (a client's own secret codes, say) are used as given
        names += [k for k, _ in model.named_buffers() if k in params]
        params = {k: params[k] for k in names}
    per_sample = defense.acts_on == "sample"
    T = xs.shape[0]
    if engine == "batched":
        chunk = memory_chunk(xs, params, per_sample=per_sample) if chunk is None else check_positive_int("chunk", chunk)
    else:
        chunk = T
    def part(s, e):
        p = {k: v[s:e] for k, v in params.items()} if params_batched else params
        return _gradients(model, xs[s:e], ys[s:e], p, params_batched=params_batched,
                          per_sample=per_sample, static=static_objective, engine=engine)

    if is_stochastic(model):
        if generator is None:
            raise ValueError(f"{type(model).__name__} draws random numbers in its objective: pass generator= "
                             f"(a seeded torch.Generator) so that its draws repeat with the seed")
        # Each block of SAMPLING_BLOCK trials samples from its own seed, drawn from ``generator`` in
        # order, so that a trial's draws do not depend on how many trials fit in memory at once.
        seeds = torch.randint(2**62, (-(-T // SAMPLING_BLOCK),), generator=generator).tolist()
        step = min(chunk, SAMPLING_BLOCK)
        parts = []
        for b, seed in enumerate(seeds):
            lo, hi = b * SAMPLING_BLOCK, min((b + 1) * SAMPLING_BLOCK, T)
            with _forked(seed):
                parts += [part(s, min(s + step, hi)) for s in range(lo, hi, step)]
    else:
        parts = [part(s, min(s + chunk, T)) for s in range(0, T, chunk)]
    grads = parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    shared = shared_names(model)
    grads = {k: grads[k] for k in shared}
    return defense(grads, generator=generator)


def release_one(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, params: Mapping[str, torch.Tensor] | None = None,
                defense=None, generator: torch.Generator | None = None) -> Params:
    """The release of a single batch ``x (B, ...)``, ``y (B,)``: each tensor without a trial dimension."""
    check_batch(x, y, batch_dims=1)
    g = release(model, x[None], y[None], params=params, defense=defense, generator=generator, check=False)
    return {k: v[0] for k, v in g.items()}
