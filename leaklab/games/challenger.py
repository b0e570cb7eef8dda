"""The challenger's side of a game: the defense it applies, its releases, and the set-up every game shares.

What a client releases in a game goes through the one release path
(:func:`leaklab.release.release`): :func:`release_gradients` for ``T`` trials at once,
:func:`secure_release` for what the server sees of several clients (their secure sum).
:func:`adversary_model` is the copy of the client's model that an adversary may hold;
:func:`set_up_players` splits the data between the challenger and the adversary and
builds the model, for every game alike.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .._checks import check_choice
from ..data import as_dataset, Dataset
from ..defenses import Defense as DefenseBase
from ..defenses import as_defense
from ..fl import Params, secure_sum
from ..release import memory_chunk, release
from ..runtime import get_device

__all__ = ["Defense", "ENGINES", "identity", "as_game_defense", "release_gradients", "secure_release",
           "adversary_model", "secret_names", "default_model", "checked_dataset", "set_up_players"]

#: A defense ``M``: a :class:`leaklab.defenses.Defense`, a spec string, or (for experiments) any
#: callable on gradient dicts with a leading trial dimension.
Defense = Callable[[Params], Params]
ENGINES = ("batched", "loop")


class _CallableDefense(DefenseBase):
    """A plain callable ``grads -> grads`` used as a batch-level defense (named ``custom``)."""

    name = "custom"
    acts_on = "batch"

    def __init__(self, fn):
        self.fn = fn

    def config(self):
        return {"name": "custom", "function": getattr(self.fn, "__name__", type(self.fn).__name__)}

    def apply(self, grads, generator):
        return self.fn(grads)


def as_game_defense(defense) -> DefenseBase:
    """``None``, a spec, a :class:`~leaklab.defenses.Defense` or a plain callable, as a Defense."""
    if defense is not None and not isinstance(defense, (str, DefenseBase)):
        if not callable(defense):
            raise TypeError(f"defense must be a Defense, a spec such as 'dp:clip=1,noise=2', a callable "
                            f"on gradient dicts, or None; got {type(defense).__name__}")
        return _CallableDefense(defense)
    return as_defense(defense)


def identity(grads: Params) -> Params:
    """The defense of an undefended game: release the gradients as they are."""
    return grads


def _chunk(xs: torch.Tensor, params: Params, budget: int | None = None) -> int:
    """Trials per vmap call: as many as fit a quarter of the device's free memory (a rough estimate
    of a trial's activations and gradients), or ``budget`` floats when given; at least 64."""
    return memory_chunk(xs, params, budget=budget, minimum=64)


def release_gradients(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, params: Params, *,
                      engine: str = "batched", chunk: int | None = None, defense=None,
                      generator: torch.Generator | None = None, static_objective: bool = False,
                      params_batched: bool = False) -> Params:
    """The releases of ``T`` batches ``xs (T, B, ...)``, ``ys (T, B)`` at ``params``, through ``defense``.

    The release path (:func:`leaklab.release.release`): ``engine="batched"`` vmaps over
    the trials in chunks sized to the device's free memory; ``engine="loop"`` computes each trial with
    ``torch.autograd.grad``.
    """
    check_choice("engine", engine, ENGINES)
    return release(model, xs, ys, params=params, defense=as_game_defense(defense), generator=generator,
                   engine=engine, chunk=chunk, check=False, static_objective=static_objective,
                   params_batched=params_batched)


def secure_release(model: nn.Module, data: Dataset, idx: torch.Tensor, params: Params, *,
                   clients: int = 1, defense=None, engine: str = "batched",
                   generator: torch.Generator | None = None, device=None, static_objective: bool = False) -> Params:
    """What the server sees when a client releases the batches ``data[idx]`` (``idx``: (T, B)).

    Each client applies the defense to its own gradient. With ``clients > 1``, the
    other ``clients - 1`` clients release gradients of random batches of the same
    size from ``data``, and the server sees only the sum of all releases
    (:func:`leaklab.fl.secure_sum`), as under secure aggregation.
    """
    dev = get_device(device)
    x, y = data.x.to(dev), data.y.to(dev)
    idx = idx.to(dev)
    releases = [release_gradients(model, x[idx], y[idx], params, engine=engine, defense=defense,
                                  generator=generator, static_objective=static_objective)]
    for _ in range(clients - 1):
        other = torch.randint(len(data), tuple(idx.shape), generator=generator).to(dev)
        releases.append(release_gradients(model, x[other], y[other], params, engine=engine, defense=defense,
                                          generator=generator, static_objective=static_objective))
    return releases[0] if clients == 1 else secure_sum(releases)


def secret_names(model: nn.Module) -> tuple[str, ...]:
    """The names of what a client keeps to itself: its ``secret_parameters`` and ``secret_buffers``."""
    return (tuple(getattr(model, "secret_parameters", ()) or ())
            + tuple(getattr(model, "secret_buffers", ()) or ()))


def adversary_model(model: nn.Module, defense, *, adaptive: bool, seed: int) -> nn.Module:
    """The one frozen model an adversary holds: a copy of what it may see of the client's ``model``.

    The copy has the shared parameters (the server sees them) and the architecture;
    what the client keeps secret (``secret_parameters`` and ``secret_buffers``: SPN's
    head and codes) is never copied. An ``adaptive`` adversary holds its own draw of it
    (:meth:`~leaklab.defenses.Defense.adversary_view` with ``seed``), a static one a
    neutral value (zeros). Every parameter is frozen (``requires_grad=False``), and the
    copy shares no storage with ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False, got {adaptive!r}")
    if seed is None or isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int (the adversary's own draw), got {type(seed).__name__}")
    defense = as_game_defense(defense)
    secret = secret_names(model)
    if secret:
        view = defense.adversary_view(model, seed=seed, neutral=not adaptive)
        if view is model:
            raise ValueError(f"defense {defense.name!r} keeps {list(secret)} secret but its adversary_view "
                             f"returns the client's own model")
    else:
        view = copy.deepcopy(model)
    view.requires_grad_(False)
    mine = {t.data_ptr() for t in list(model.parameters()) + list(model.buffers()) if t.numel()}
    shared = [k for k, t in list(view.named_parameters()) + list(view.named_buffers())
              if t.numel() and t.data_ptr() in mine]
    if shared:
        raise RuntimeError(f"the adversary's model shares storage with the client's: {shared}")
    return view.train(model.training)


#: The default architecture for each modality (small, so that CPU runs stay short).
_DEFAULT_MODELS = {
    "tabular": ("mlp", {"hidden": (32,)}),
    "sequence": ("mlp", {"hidden": (32,)}),
    "image": ("convnet", {"width": 8, "depth": 2}),
}


def default_model(dataset: Dataset, *, seed: int = 0, device=None) -> nn.Module:
    """The model a game uses by default for the dataset's modality (an MLP or a small ConvNet)."""
    from ..models import build_model

    name, opts = _DEFAULT_MODELS[dataset.modality]
    return build_model(name, dataset.input_shape, dataset.num_classes, seed=seed, device=device, **opts)


def checked_dataset(dataset, model: nn.Module | None) -> Dataset:
    """The dataset (a name or a :class:`Dataset`), and the reader's own model checked against it
    (a dry forward pass: a wrong input shape or class count, BatchNorm or dropout is one line)."""
    dataset = as_dataset(dataset)
    if model is not None:
        from ..validate import check_model
        check_model(model, dataset.input_shape, dataset.num_classes)
    return dataset


def set_up_players(dataset: Dataset, defense, model: nn.Module | None, *, aux_fraction: float, seed: int,
                   device) -> tuple[DefenseBase, Dataset, Dataset, nn.Module]:
    """What every game's set-up shares: the defense, the adversary's auxiliary records and the
    challenger's pool (split by ``seed``), and the model — the default for the modality when none
    is given — moved to ``device`` and wrapped by a model-side defense (which changes the model), its
    draws for the client (SPN's secret head and codes) seeded by ``seed``: every game seed plays
    against another secret."""
    defense = as_game_defense(defense)
    aux, pool = dataset.split(aux_fraction, seed=seed)
    if model is None:
        model = default_model(dataset, seed=seed, device=device)
    return defense, aux, pool, defense.wrap(model.to(device), seed=seed)
