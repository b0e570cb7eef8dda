"""Models of one architecture trained together (stacked parameters, one vmap per step): the targets and LiRA's shadows."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..._checks import check_choice, check_positive_int
from ...data import Dataset
from ...release import objective_of
from ...runtime import get_device


# -- models trained together -------------------------------------------------------------------

def _reinitialise(model: nn.Module) -> None:
    """Draw every parameter of ``model`` afresh from torch's global RNG, as its own initialiser does.

    Every module's ``reset_parameters`` (PyTorch's defaults); then a wrapper that draws
    its own parameters in its constructor draws them the same way again: SPN's secret head
    at ``N(0, 0.01^2)``, not at ``nn.Linear``'s default scale.
    """
    from ...spn.model import SPNModel

    for mod in model.modules():
        if callable(getattr(mod, "reset_parameters", None)):
            mod.reset_parameters()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, SPNModel):
                w = mod.polar.weight
                w.copy_(_SPN_HEAD_STD * torch.randn(w.shape, dtype=w.dtype, device=w.device))


#: the scale at which :class:`~leaklab.spn.model.SPNModel` draws its secret head
_SPN_HEAD_STD = 0.01


def stacked_init(model: nn.Module, count: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """``count`` fresh initialisations of ``model``'s architecture, stacked: ``(count, *shape)`` per parameter.

    Each copy draws every parameter as the model's own initialiser does (each module's
    ``reset_parameters``; an SPN head at its own small scale), under its own seed.
    """
    check_positive_int("count", count)
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(count):
        m = copy.deepcopy(model).cpu()      # drawn on the CPU from the seeded CPU RNG, the same on every device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 100003 + i)
            _reinitialise(m)
        for k, v in m.named_parameters():
            out.setdefault(k, []).append(v.detach())
    return {k: torch.stack(v) for k, v in out.items()}


def train_stacked(model: nn.Module, data: Dataset, members: torch.Tensor, *, steps: int, lr: float = 0.1,
                  batch_size: int = 32, momentum: float = 0.9, seed: int = 0, params=None, defense=None,
                  static_objective: bool = False, engine: str = "batched", device=None,
                  progress: bool = False) -> dict[str, torch.Tensor]:
    """Train ``S`` models of ``model``'s architecture, model ``s`` on the records ``data[members[s]]``.

    ``members`` is ``(S, m)``: each model's training set (indices into ``data``).
    Every model runs ``steps`` SGD steps (momentum ``momentum``) on mini-batches drawn
    without replacement from its own set, shuffled epochs of fixed-size batches as
    :func:`leaklab.fl.train` draws them (:func:`leaklab.fl.epoch_batches`). With a
    ``defense`` every step goes through the release path (:func:`leaklab.release.release`):
    DP-SGD clips and noises each record's gradient, pruning prunes, and so on, for all
    models at once; a model-side defense (SPN, VIB) acts through ``model``'s own
    objective, which ``static_objective=True`` replaces by plain cross-entropy.
    Secret parameters (an SPN head) are trained on their own gradient.
    ``engine="batched"`` trains all of them in one ``torch.func.vmap`` per step over
    stacked parameters; ``engine="loop"`` computes each model's gradient with ordinary
    autograd from the same draws (the oracle and the benchmark's baseline). Returns the
    stacked trained parameters ``(S, *shape)``.
    """
    from ..._progress import trange
    from ...defenses import as_defense
    from ...fl import defended_gradients, epoch_batches

    check_choice("engine", engine, ("batched", "loop"))
    check_positive_int("steps", steps, minimum=0)
    check_positive_int("batch_size", batch_size)
    if not isinstance(members, torch.Tensor) or members.ndim != 2 or members.dtype != torch.long:
        raise ValueError(f"members must be a (S, m) tensor of record indices, got "
                         f"{type(members).__name__} {tuple(getattr(members, 'shape', ()))}")
    if members.numel() and (int(members.min()) < 0 or int(members.max()) >= len(data)):
        raise ValueError(f"members must index records in [0, {len(data) - 1}]")
    defense = as_defense(defense)
    dev = get_device(device)
    S, m = members.shape
    params = stacked_init(model, S, seed=seed) if params is None else {k: v.clone() for k, v in params.items()}
    params = {k: v.to(dev) for k, v in params.items()}
    x, y = data.x.to(dev), data.y.to(dev)
    members = members.to(dev)
    loss = objective_of(model, static=static_objective)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    # every draw made up front, so that both engines see the same batches
    pos = epoch_batches(m, batch_size, steps, gen, models=S).to(dev)         # (steps, S, b)
    through = defense.name != "none" and defense.acts_on != "model"
    buf = {k: torch.zeros_like(v) for k, v in params.items()}
    g = vmap(grad(loss), in_dims=(0, 0, 0))
    g1 = grad(loss)

    def plain(p, xs, ys):
        if engine == "batched":
            return g(p, xs, ys)
        per = [g1({k: v[i] for k, v in p.items()}, xs[i], ys[i]) for i in range(xs.shape[0])]
        return {k: torch.stack([d[k] for d in per]) for k in p}

    for s in trange(steps, desc="train models", progress=progress, leave=False):
        idx = torch.gather(members, 1, pos[s])
        if through:      # one step under the defense, as every local step in the library takes it
            gr = defended_gradients(model, x[idx], y[idx], params, defense=defense, generator=noise,
                                    params_batched=True, engine=engine, static_objective=static_objective)
        else:
            gr = plain(params, x[idx], y[idx])
        for k in params:
            buf[k] = momentum * buf[k] + gr[k]
            params[k] = params[k] - lr * buf[k]
    return params


def _confidence(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                *, chunk: int = 4096) -> torch.Tensor:
    """LiRA's logit-scaled confidence ``log p_y - log(1 - p_y)`` of ``S`` stacked models on ``N`` records: ``(S, N)``."""
    def one(p, xb):
        return functional_call(model, p, (xb,))
    outs = []
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            logits = vmap(one, in_dims=(0, None))(params, x[s:s + chunk]).double()   # (S, n, C)
            yb = y[s:s + chunk]
            correct = logits.gather(2, yb[None, :, None].expand(logits.shape[0], -1, 1)).squeeze(2)
            others = logits.scatter(2, yb[None, :, None].expand(logits.shape[0], -1, 1), -math.inf)
            outs.append(correct - torch.logsumexp(others, 2))
    return torch.cat(outs, 1)


def _losses(model: nn.Module, params: dict[str, torch.Tensor], x, y) -> torch.Tensor:
    with torch.no_grad():
        logits = functional_call(model, params, (x,))
        return F.cross_entropy(logits.double(), y, reduction="none")


# -- knowledge and results ----------------------------------------------------------------------
