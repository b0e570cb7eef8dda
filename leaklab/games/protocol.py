"""The challenger/adversary protocol of an inference game, played for many trials at once.

The steps follow the game-based framework of Li et al. (2024), as far as we could read it:

1. The challenger obtains the latest parameters ``theta`` through the training
   algorithm ``T`` (here :func:`leaklab.fl.train`, one epoch of SGD on its pool
   between rounds; in the attribute game the pool without the trials' targets).
2. It draws the secret ``a`` of each trial, then a batch of ``k`` records from
   ``P(x, y | a)`` (:mod:`leaklab.games.games`).
3. It computes the FedSGD gradient ``g_i = grad L(theta_{i-1}, D_a)`` and releases
   ``M(g_i)``, where the defense ``M`` is a callable on gradient dicts (the identity
   when there is no defense).
4. The adversary gets the loss and architecture, ``theta_{i-1}`` of every observed
   round, the released gradients, auxiliary records from ``P(x, y, a)`` (a split of
   the data disjoint from the challenger's pool), the auxiliary information
   ``phi(z)`` about a target record, and ``M``. A *static* adversary ignores ``M``
   when it simulates releases; an *adaptive* one passes its simulated gradients
   through ``M`` too.
5. After each round the model is trained for one more epoch; the adversary sums its
   per-round evidence over the observed rounds and guesses.

``T`` trials share the training trajectory but have their own secrets and batches;
all their gradients are computed in one batched call (``torch.func.vmap`` through
:func:`leaklab.fl.batch_gradients`). ``engine="loop"`` computes the same gradients one
trial at a time with ordinary autograd (for benchmarks and as a cross-check).

This module plays the games round by round (:func:`play`) and dispatches the membership and
tracing games to their own modules. What the players hold lives below it, so that the
adversaries never import the code that plays them: :mod:`leaklab.games.types`
(:class:`Knowledge`, :class:`Observation`, :class:`GameResult`) and
:mod:`leaklab.games.challenger` (the releases, the adversary's copy of the model, the set-up).
Their names stay importable from here.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .._checks import check_choice, check_fraction, check_positive_int, check_seed, check_tensor
from ..data import Dataset
from ..fl import parameters_of, train
from ..release import shared_names
from ..runtime import get_device
from ..validate import check_game_sizes
from .adversaries import make_adversary
from .challenger import (ENGINES, Defense, _CallableDefense, _chunk, adversary_model, as_game_defense,  # noqa: F401
                         checked_dataset, default_model, identity, release_gradients, secret_names,
                         secure_release, set_up_players)
from .games import Game, Trials, make_game
from .membership import play_membership
from .tracing import play_tracing
from .types import GameResult, Knowledge, Observation

__all__ = ["Defense", "identity", "Knowledge", "Observation", "GameResult", "release_gradients",
           "secure_release", "adversary_model", "secret_names",
           "default_model", "play", "ENGINES"]


def _phi(game: Game, pool: Dataset, trials: Trials) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if trials.target is None:
        return None, None
    col = pool.info.attribute_features.get(game.attribute)
    if col is None or pool.x.ndim != 2:
        return None, None
    x = pool.x[trials.target].clone()
    x[:, col] = 0.0                     # the adversary does not know the sensitive feature
    return x, pool.y[trials.target]


def _phi_baseline(knowledge: Knowledge, phi_x: torch.Tensor | None,
                  phi_y: torch.Tensor | None, seed: int) -> np.ndarray | None:
    """The ``phi``-only adversary's scores of the trials (``None`` when there is no ``phi``)."""
    if phi_x is None or knowledge.game.name != "attribute":
        return None
    base = make_adversary("phi")
    base.prepare(knowledge, seed=seed)
    s = base.score(Observation(1, {}, {}, phi_x, phi_y))
    return np.asarray(s.detach().cpu().double())


def _own_play(game):
    """The play function of a game that is not played round by round here (membership, tracing), or None."""
    name = game.name if isinstance(game, Game) else game
    if name == "membership":
        return play_membership
    if name == "tracing":
        return play_tracing
    return None


def play(game: str | Game, dataset: str | Dataset, *, adversary: str = "shadow",
         attribute: str | None = None, batch_size: int = 1, rounds: int = 1, trials: int = 256,
         defense: Defense | None = None, adaptive: bool = False, model: nn.Module | None = None,
         warmup_steps: int = 0, steps_per_round: int | None = None, lr: float = 0.05,
         aux_fraction: float = 0.5, clients: int = 1, game_options: Mapping | None = None,
         adversary_options: Mapping | None = None, engine: str = "batched", device=None,
         seed: int = 0, progress: bool = True) -> GameResult:
    """Play ``trials`` independent trials of an inference game and return the adversary's scores.

    Parameters
    ----------
    game
        ``"attribute"``, ``"property"``, ``"distribution"`` or ``"user"`` (or a :class:`Game`).
    dataset
        A dataset name or a :class:`~leaklab.data.Dataset` that declares the game.
    adversary
        ``"informed"`` (attribute game, tabular data) or ``"shadow"`` (any game).
    attribute
        The sensitive attribute (default: the dataset's first).
    batch_size, rounds, trials
        Records per released batch, observed rounds, independent trials.
    defense, adaptive
        The defense ``M``: a :class:`leaklab.defenses.Defense`, a spec such as
        ``"dp:clip=1,noise=2"``, a plain callable on gradient dicts, or ``None`` (no
        defense); the challenger releases through it and trains under it between
        rounds. ``adaptive``: whether the adversary knows ``M`` and simulates it.
    model
        The model (default: :func:`default_model`, initialised with ``seed``); it is
        trained in place by the challenger between rounds.
    warmup_steps, steps_per_round, lr
        SGD steps before the first round; steps between rounds (default: one epoch of
        the training pool at batch size 32); the learning rate. The challenger trains on
        :meth:`Game.training_pool`: in the attribute game its pool without the trials'
        targets, so that no later ``theta`` carries a target's attribute (the releases
        are then the only thing that reveals it, and the only thing an epsilon counts).
    aux_fraction
        The share of the records given to the adversary as auxiliary data; the rest is
        the challenger's pool.
    clients
        With more than one, the server (and so the adversary) sees only the secure sum
        of the target client's release and those of ``clients - 1`` other clients, each
        with a random batch of ``batch_size`` records from the pool.
    game_options, adversary_options
        Extra options of the game (``proportions``, ``value``) and of the adversary
        (``shadow_trials``, ``C``).
    engine
        ``"batched"`` (vmap over trials) or ``"loop"`` (one trial at a time).
    device, seed, progress
        Where to compute, the seed of every random draw, and a progress bar over rounds.
    """
    import time

    from .._progress import trange

    own = _own_play(game)
    if own is not None:      # membership and tracing are played by their own modules
        return own(dataset, adversary=adversary, attribute=attribute, batch_size=batch_size, rounds=rounds,
                   trials=trials, defense=defense, adaptive=adaptive, model=model, warmup_steps=warmup_steps,
                   lr=lr, aux_fraction=aux_fraction, clients=clients, adversary_options=adversary_options,
                   engine=engine, device=device, seed=seed, progress=progress,
                   steps_per_round=steps_per_round, **dict(game_options or {}))
    t0 = time.perf_counter()
    dev = get_device(device)
    check_positive_int("batch_size", batch_size)
    check_positive_int("rounds", rounds)
    check_positive_int("trials", trials, minimum=2)
    check_positive_int("warmup_steps", warmup_steps, minimum=0)
    check_positive_int("clients", clients)
    check_fraction("aux_fraction", aux_fraction, low=0.05, high=0.95)
    check_choice("engine", engine, ENGINES)
    check_seed(seed)
    dataset = checked_dataset(dataset, model)
    if not isinstance(game, Game):
        game = make_game(game, dataset.info, attribute=attribute, **dict(game_options or {}))
    adv = make_adversary(adversary, **dict(adversary_options or {}))
    adv.check(game, dataset.info)
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False, got {adaptive!r}")
    defense, aux, pool, model = set_up_players(dataset, defense, model, aux_fraction=aux_fraction, seed=seed,
                                               device=dev)
    check_game_sizes(game.name, pool, model, batch_size=batch_size, trials=trials, rounds=rounds, clients=clients,
                     defense=defense, adaptive=adaptive, adversary=adv, device=dev, secrets=game.num_secrets(pool))
    names = game.secret_names(pool)
    if steps_per_round is not None:
        check_positive_int("steps_per_round", steps_per_round, minimum=0)

    knowledge = Knowledge(model=model, game=game, auxiliary=aux, batch_size=batch_size,
                          secret_names=names, defense=defense, adaptive=adaptive, device=dev,
                          engine=engine, clients=clients, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    adv.prepare(knowledge, seed=seed + 1)
    train_defense = None if isinstance(defense, _CallableDefense) else defense
    tr = game.draw_trials(pool, trials, gen)
    # The challenger trains on a pool whose content does not depend on the secrets (the attribute
    # game leaves the targets out): the adversary receives every later theta, and only the releases
    # are accounted.
    needs_training = bool(warmup_steps) or (rounds > 1 and steps_per_round != 0)
    train_pool = game.training_pool(pool, tr) if needs_training else pool
    steps = math.ceil(len(train_pool) / 32) if steps_per_round is None else steps_per_round
    if warmup_steps:
        train(model, train_pool, steps=warmup_steps, lr=lr, seed=seed + 7, defense=train_defense, progress=False)
    phi_x, phi_y = _phi(game, pool, tr)
    per_round = []
    for i in trange(rounds, desc=f"{game.name} game", progress=progress, leave=False):
        theta = parameters_of(model)
        idx = game.draw_batches(pool, tr, batch_size, gen)                # (T, B)
        if callable(getattr(defense, "prepare", None)):   # e.g. perturb fits its surrogate on the pool
            defense.prepare(model=model, game=game, data=pool, batch_size=batch_size, params=theta, generator=gen)
        g = secure_release(model, pool, idx, theta, clients=clients, defense=defense, engine=engine,
                           generator=gen, device=dev)
        for k, v in g.items():
            check_tensor(f"released gradient {k!r}", v)
        shared = {k: theta[k] for k in shared_names(model)}       # a secret parameter is never seen
        obs = Observation(i + 1, shared, g,
                          None if phi_x is None else phi_x.to(dev),
                          None if phi_y is None else phi_y.to(dev))
        s = adv.score(obs)
        per_round.append(np.asarray(s.detach().cpu().double() if isinstance(s, torch.Tensor) else s))
        if i + 1 < rounds and steps:
            train(model, train_pool, steps=steps, lr=lr, seed=seed + 11 + i, defense=train_defense, progress=False)
    config = {"warmup_steps": warmup_steps, "steps_per_round": steps, "lr": lr,
              "training_records": len(train_pool),
              "aux_fraction": aux_fraction, "clients": clients, "engine": engine,
              "defense": defense.config(),
              "model": type(model).__name__, **{k: v for k, v in dict(game_options or {}).items()},
              **{f"adversary_{k}": v for k, v in dict(adversary_options or {}).items()}}
    return GameResult(
        game=game.name, dataset=dataset.name, modality=dataset.modality, attribute=game.attribute,
        adversary=adv.name, adaptive=adaptive, batch_size=batch_size,
        secret=tr.secret.cpu().numpy(), round_scores=np.stack(per_round), secret_names=names, seed=seed,
        config=config, wall_time=time.perf_counter() - t0, device=str(dev),
        baseline_scores=_phi_baseline(knowledge, phi_x, phi_y, seed + 1),
    )
