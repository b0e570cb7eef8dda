"""Tracing (source inference) as a game: which of ``n`` clients holds a given record?

In every trial ``n`` clients each draw a batch of ``B`` records from the
challenger's pool and release an update at the current model ``theta`` (each through
the defense ``M``): a FedSGD gradient, or, with ``local_steps > 1``, a FedAvg update —
``local_steps`` SGD steps of size ``lr`` on the client's batch, every step's gradient
released through ``M`` — which the server reads as the pseudo-gradient
``(theta - theta_local) / lr`` (with one local step, exactly the FedSGD gradient).
The secret ``a`` is uniform over the clients; a target record
is placed in client ``a``'s batch and in no other. The server sees every client's
release separately (no secure aggregation) and is given the target record, known
to belong to one of the clients; it names the client. Chance is ``1 / n``.

Adversaries (each returns one score per client, ``(T, n)``):

``alignment`` (default)
    The cosine between the target's gradient and each client's release: the
    client whose update the target shaped most.
``loss``
    The target's loss on each client's local model ``theta - lr * g_j`` (after one
    FedSGD step, or the client's own FedAvg model), as in source inference by
    smallest loss (Hu et al., 2021, as we read it); the score is minus that loss.

``identical=True`` gives every client the same batch (with the target in it): the
releases then carry nothing about who holds the target, the null case that must
stay at chance.

>>> from leaklab.games import play
>>> r = play("tracing", "digits", clients=4, trials=64, progress=False)
>>> r.score().accuracy > 0.5
True
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .._checks import check_choice, check_fraction, check_positive_int, check_seed
from ..data import Dataset
from ..fl import local_sgd, parameters_of, train
from ..release import shared_names
from ..runtime import get_device
from ..validate import check_game_sizes
from .adversaries import Adversary, make_adversary
from .games import Game, Trials, make_game, register_game
from .membership.game import _other_records
from .challenger import (ENGINES, as_game_defense, checked_dataset, release_gradients, secure_release,
                         set_up_players)
from .types import GameResult, Knowledge, Observation

__all__ = ["TracingGame", "play_tracing", "TRACING_ADVERSARIES"]

TRACING_ADVERSARIES = ("alignment", "loss")


@register_game("tracing")
class TracingGame(Game):
    """Tracing: which of ``clients`` clients holds a target record (its secret: the client)."""

    needs_attribute = False

    def __init__(self, info, *, attribute=None, clients: int = 8, identical: bool = False):
        super().__init__(info, attribute=attribute)
        self.clients = check_positive_int("clients", clients, minimum=2)
        if not isinstance(identical, bool):
            raise TypeError(f"identical must be True or False, got {identical!r}")
        self.identical = identical

    def secret_names(self, data):
        return tuple(f"client {j}" for j in range(self.clients))

    def describe(self):
        return f"which of {self.clients} clients holds a target record"

    def draw_trials(self, data, trials, generator):
        if len(data) < 2:
            raise ValueError(f"the tracing game needs at least 2 records, dataset {data.name!r} has {len(data)}")
        secret = torch.randint(self.clients, (trials,), generator=generator)
        target = torch.randint(len(data), (trials,), generator=generator)
        return Trials(secret, target)

    def draw_batches(self, data, trials, batch_size, generator):
        """Indices ``(T, n, B)``: client ``j``'s batch in trial ``t``; the target first in client ``a``'s."""
        T, n = trials.secret.shape[0], self.clients
        if self.identical:
            one = _other_records(len(data), trials.target, (T, 1, batch_size), generator)
            one[:, 0, 0] = trials.target
            return one.expand(T, n, batch_size).clone()
        idx = _other_records(len(data), trials.target, (T, n, batch_size), generator)
        idx[torch.arange(T, device=idx.device), trials.secret, 0] = trials.target
        return idx


def local_updates(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, params: dict[str, torch.Tensor], *,
                  steps: int, lr: float, defense=None, generator: torch.Generator | None = None,
                  engine: str = "batched") -> dict[str, torch.Tensor]:
    """FedAvg releases of ``N`` clients, as pseudo-gradients: ``(theta - theta_local) / lr``.

    Client ``i`` starts from its row of the stacked ``params`` (``(N, ...)`` each) and takes
    ``steps`` SGD steps of size ``lr`` on its batch ``xs[i], ys[i]``, every step's gradient
    released through ``defense`` (the release path, all clients in one vmap). Only the shared
    parameters move; a secret parameter in ``params`` stays as given. With ``steps=1`` the
    result is the defended gradient itself, up to rounding.
    """
    check_choice("engine", engine, ENGINES)
    cur = local_sgd(model, params, [(xs, ys)] * steps, lr=lr, defense=as_game_defense(defense),
                    generator=generator, params_batched=True, engine=engine, secret="keep")
    return {k: (params[k] - cur[k]) / lr for k in shared_names(model)}


def play_tracing(dataset: str | Dataset, *, adversary: str | Adversary | None = None, clients: int = 8,
                 batch_size: int = 1, trials: int = 256, defense=None, adaptive: bool = False,
                 model: nn.Module | None = None, warmup_steps: int = 0, lr: float = 0.1,
                 identical: bool = False, local_steps: int = 1, aux_fraction: float = 0.5,
                 adversary_options: dict | None = None,
                 engine: str = "batched", device=None, seed: int = 0, progress: bool = True,
                 **unused) -> GameResult:
    """Play ``trials`` trials of the tracing game among ``clients`` clients (see the module).

    The model is trained for ``warmup_steps`` SGD steps on the pool first (under the
    defense). ``lr`` is the clients' SGD step, which the ``loss`` adversary uses to
    form each client's local model; ``local_steps`` > 1 makes the releases FedAvg
    updates (see the module). A client's secret parameters (SPN's head and codes) stay
    as drawn during its local steps: only the shared parameters are updated and released.
    """
    for k, v in unused.items():
        if v not in (None, {}, 0, 1) and k not in ("steps_per_round", "rounds", "game_options", "attribute"):
            raise ValueError(f"the tracing game takes no option {k}={v!r}")
    if unused.get("rounds", 1) != 1:
        raise ValueError(f"the tracing game is played for one round, got rounds={unused['rounds']}")
    if adversary in (None, "shadow"):
        adversary = "alignment"
    if isinstance(adversary, str) and adversary not in TRACING_ADVERSARIES:
        raise ValueError(f"unknown tracing adversary {adversary!r}; choose from: {', '.join(TRACING_ADVERSARIES)}")
    adv = make_adversary(adversary, **dict(adversary_options or {}))
    t0 = time.perf_counter()
    dev = get_device(device)
    check_positive_int("batch_size", batch_size)
    check_positive_int("trials", trials, minimum=2)
    check_positive_int("local_steps", local_steps)
    check_fraction("aux_fraction", aux_fraction, low=0.05, high=0.95)
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False, got {adaptive!r}")
    check_seed(seed)
    dataset = checked_dataset(dataset, model)
    game = make_game("tracing", dataset.info, clients=clients, identical=identical)
    adv.check(game, dataset.info)
    defense, aux, pool, model = set_up_players(dataset, defense, model, aux_fraction=aux_fraction, seed=seed,
                                               device=dev)
    check_game_sizes("tracing", pool, model, batch_size=batch_size, trials=trials, clients=clients,
                     defense=defense, adversary=adv, device=dev)
    if warmup_steps:
        train(model, pool, steps=warmup_steps, lr=lr, seed=seed + 7, defense=defense, progress=False)
    gen = torch.Generator().manual_seed(seed)
    kn = Knowledge(model=model, game=game, auxiliary=aux, batch_size=batch_size,
                   secret_names=game.secret_names(pool), defense=defense, adaptive=adaptive, device=dev,
                   engine=engine, clients=1, seed=seed)
    adv.prepare(kn, seed=seed + 1)
    tr = game.draw_trials(pool, trials, gen)
    idx = game.draw_batches(pool, tr, batch_size, gen)                      # (T, n, B)
    T, n = trials, game.clients
    theta = parameters_of(model)
    own = defense.client_secrets(model, n, seed=seed + 11)          # each client's own secret (SPN), or none
    if local_steps > 1 or own:      # one model per (trial, client): its own secret, its own local steps
        flat = idx.reshape(T * n, batch_size).to(dev)
        xs, ys = pool.x.to(dev)[flat], pool.y.to(dev)[flat]
        params = {**{k: v[None].expand(T * n, *v.shape) for k, v in theta.items()},
                  **{k: v.to(dev).repeat(T, *([1] * (v.ndim - 1))) for k, v in own.items()}}
        if local_steps > 1:
            g = local_updates(model, xs, ys, params, steps=local_steps, lr=lr, defense=defense, generator=gen,
                              engine=engine)
        else:
            g = release_gradients(model, xs, ys, params, engine=engine, defense=defense, generator=gen,
                                  params_batched=True)
    else:
        g = secure_release(model, pool, idx.reshape(T * n, batch_size), theta, clients=1, defense=defense,
                           engine=engine, generator=gen, device=dev)
    g = {k: v.reshape(T, n, *v.shape[1:]) for k, v in g.items()}
    shared = {k: theta[k] for k in shared_names(model)}
    # each client's local model as the server can form it: the shared parameters only (a secret head never leaves)
    local = {k: theta[k] - lr * g[k] for k in shared} if adv.name == "loss" else None
    obs = Observation(1, shared, g, pool.x[tr.target].to(dev), pool.y[tr.target].to(dev), client_params=local)
    s = adv.score(obs)
    s = np.asarray(s.detach().cpu().double() if isinstance(s, torch.Tensor) else s)
    if s.shape != (T, n):
        raise RuntimeError(f"the {adv.name} adversary returned scores of shape {s.shape}, expected {(T, n)}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"the {adv.name} adversary produced non-finite scores")
    config = {"clients": n, "identical": identical, "warmup_steps": warmup_steps, "lr": lr, "engine": engine,
              "protocol": "fedavg" if local_steps > 1 else "fedsgd", "local_steps": local_steps,
              "defense": defense.config(), "model": type(model).__name__, "aux_fraction": aux_fraction,
              **{f"adversary_{k}": v for k, v in dict(adversary_options or {}).items()}}
    return GameResult(
        game="tracing", dataset=dataset.name, modality=dataset.modality, attribute=None,
        adversary=adv.name, adaptive=adaptive, batch_size=batch_size, secret=tr.secret.cpu().numpy(),
        round_scores=s[None], secret_names=game.secret_names(pool), seed=seed, config=config,
        wall_time=time.perf_counter() - t0, device=str(dev))
