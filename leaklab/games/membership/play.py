"""Playing the membership game: set up, release or train, score, and account for the privacy spent."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..._checks import check_choice, check_fraction, check_positive_int, check_seed
from ...data import Dataset
from ...release import shared_names
from ...runtime import get_device
from ...validate import check_game_sizes
from ..adversaries import Adversary, make_adversary
from ..games import Trials
from ..challenger import checked_dataset, set_up_players
from ..types import Observation
from . import adversaries as _adversaries  # noqa: F401  (registers alignment, loss, lira, lira-offline)
from .game import (_ADVERSARY_OBSERVES, DEFAULT_ADVERSARY, OBSERVE, MembershipKnowledge, MembershipResult,
                   server_sum)
from .training import train_stacked


def play_membership(dataset: str | Dataset, *, adversary: str | Adversary | None = None, observe: str | None = None,
                    batch_size: int = 1, trials: int = 256, defense=None, adaptive: bool = False,
                    model: nn.Module | None = None, warmup_steps: int = 0, train_steps: int = 300,
                    lr: float = 0.1, train_batch_size: int = 32, train_size: int | None = None, momentum: float = 0.9, aux_fraction: float = 0.5,
                    clients: int = 1, adversary_options: dict | None = None, engine: str = "batched",
                    device=None, seed: int = 0, progress: bool = True, **unused) -> MembershipResult:
    """Play ``trials`` trials of the membership game; see the module for what is observed.

    ``observe="release"``: a FedSGD release of a batch of ``batch_size`` records at
    the model after ``warmup_steps`` SGD steps (learning rate ``lr``) on the pool without
    the trials' targets (:meth:`MembershipGame.training_pool`: the epsilon recorded counts
    the release alone, and ``theta`` uses no target), through ``defense`` (``clients > 1``: the secure sum with other clients, whose batches
    never hold the target, for members and non-members alike).
    ``observe="model"``: a model trained for ``train_steps`` steps (mini-batches of
    ``train_batch_size`` drawn without replacement, ``momentum``; under ``defense`` when it
    is given, e.g. DP-SGD, all target models together on the release path) on
    ``train_size`` of ``2 * train_size`` candidate records drawn from the pool (default ``trials // 2``); with ``trials > 2 * train_size``, ``trials // (2 *
    train_size)`` target models are trained together, each on its own random half of
    the same candidates (every pair of a model and a candidate is a trial), and the
    accuracies recorded are those of the first.
    Under DP-SGD ``config["privacy"]`` holds the accountant's epsilon for the game's own
    neighbours (see :class:`MembershipResult`): replace-one for the release (sample rate 1,
    one step), add/remove for the model (``train_steps`` steps at ``q = train_batch_size /
    train_size``, fixed-size batches accounted as Poisson sampling at that rate).
    ``adversary`` defaults to the strongest for ``observe`` (``alignment``, ``lira``);
    ``observe`` defaults to what the adversary observes.
    """
    for k, v in unused.items():
        if v not in (None, {}, 0, 1) and k not in ("steps_per_round", "rounds", "game_options", "attribute"):
            raise ValueError(f"the membership game takes no option {k}={v!r}")
    if unused.get("rounds", 1) != 1:
        raise ValueError(f"the membership game is played for one round, got rounds={unused['rounds']}")
    if adversary == "shadow":
        adversary = None
    if isinstance(adversary, str) and adversary not in _ADVERSARY_OBSERVES:
        raise ValueError(f"unknown membership adversary {adversary!r}; choose from: "
                         f"{', '.join(_ADVERSARY_OBSERVES)}")
    if observe is None:
        observe = _ADVERSARY_OBSERVES.get(adversary, "release") if isinstance(adversary, str) else \
            getattr(adversary, "observes", "release")
    check_choice("observe", observe, OBSERVE)
    adversary = DEFAULT_ADVERSARY[observe] if adversary is None else adversary
    adv = make_adversary(adversary, **dict(adversary_options or {}))
    if getattr(adv, "observes", observe) != observe:
        raise ValueError(f"the {adv.name} adversary observes the {adv.observes}, not the {observe} "
                         f"(observe={observe!r})")
    t0 = time.perf_counter()
    dev = get_device(device)
    check_positive_int("batch_size", batch_size)
    check_positive_int("trials", trials, minimum=4)
    check_positive_int("clients", clients)
    check_fraction("aux_fraction", aux_fraction, low=0.05, high=0.95)
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False, got {adaptive!r}")
    check_seed(seed)
    dataset = checked_dataset(dataset, model)
    from ..games import make_game

    game = make_game("membership", dataset.info)
    adv.check(game, dataset.info)
    defense, aux, pool, model = set_up_players(dataset, defense, model, aux_fraction=aux_fraction, seed=seed,
                                               device=dev)
    check_game_sizes("membership", pool, model, batch_size=batch_size, trials=trials, clients=clients,
                     defense=defense, adversary=adv, device=dev, observe=observe)
    gen = torch.Generator().manual_seed(seed)
    recipe = {"steps": train_steps, "lr": lr, "batch_size": train_batch_size, "momentum": momentum}
    config = {"observe": observe, "clients": clients, "engine": engine, "defense": defense.config(),
              "model": type(model).__name__, "aux_fraction": aux_fraction,
              **{f"adversary_{k}": v for k, v in dict(adversary_options or {}).items()}}
    if observe == "release":
        from ...fl import parameters_of, train

        tr = game.draw_trials(pool, trials, gen)
        if warmup_steps:                  # on the pool without the targets: theta depends on none of them
            warm = game.training_pool(pool, tr)
            train(model, warm, steps=warmup_steps, lr=lr, seed=seed + 7, defense=defense, progress=False)
            config.update(training_records=len(warm))
        kn = MembershipKnowledge(model=model, game=game, auxiliary=aux, batch_size=batch_size,
                                 secret_names=game.secret_names(pool), defense=defense, adaptive=adaptive,
                                 device=dev, engine=engine, clients=clients, observe=observe, seed=seed)
        adv.prepare(kn, seed=seed + 1)
        idx = game.draw_batches(pool, tr, batch_size, gen)
        theta = parameters_of(model)
        g = server_sum(model, pool, idx, tr.target, theta, clients=clients, defense=defense, engine=engine,
                       generator=gen, device=dev)
        shared = {k: theta[k] for k in shared_names(model)}
        obs = Observation(1, shared, g, pool.x[tr.target].to(dev), pool.y[tr.target].to(dev))
        config.update(warmup_steps=warmup_steps, lr=lr)
        privacy = _privacy(defense, neighbours="replace-one", sample_rate=1.0, steps=1)
    else:
        m = trials // 2 if train_size is None else check_positive_int("train_size", train_size)
        K = max(1, trials // (2 * m))                       # target models, each with its own half
        if 2 * m > len(pool):
            raise ValueError(f"{2 * m} candidate records (twice train_size={m}) need that many records in the "
                             f"challenger's pool, which holds {len(pool)}; use a smaller train_size or trials")
        pick = torch.randperm(len(pool), generator=gen)[:2 * m]
        cand = pool.subset(pick)
        half = torch.argsort(torch.rand(K, 2 * m, generator=gen), 1)[:, :m]          # (K, m) members
        inside = torch.zeros(K, 2 * m, dtype=torch.long, device=half.device).scatter_(1, half, 1)
        # the target models, all together, through the defense (the release path at every step)
        params = train_stacked(model, cand, half, steps=train_steps, lr=lr, batch_size=train_batch_size,
                               momentum=momentum, seed=seed + 3, defense=defense, engine=engine, device=dev)
        kn = MembershipKnowledge(model=model, game=game, auxiliary=aux, batch_size=batch_size,
                                 secret_names=game.secret_names(pool), defense=defense, adaptive=adaptive,
                                 device=dev, engine=engine, clients=clients, observe=observe,
                                 candidates=cand, train_size=m, recipe=recipe, seed=seed)
        adv.prepare(kn, seed=seed + 1)
        model_index = torch.arange(K, device=inside.device).repeat_interleave(2 * m)
        cand_index = torch.arange(2 * m, device=inside.device).repeat(K)
        tr = Trials(inside.flatten(), cand_index)
        shared = {k: params[k] for k in shared_names(model)}          # a secret head never leaves the client
        obs = Observation(1, shared, {}, cand.x[cand_index].to(dev), cand.y[cand_index].to(dev),
                          candidate_index=cand_index, model_index=model_index)
        others = torch.ones(len(pool), dtype=torch.bool, device=pick.device)
        others[pick] = False
        test = pool.subset(others.nonzero().flatten()) if others.any() else aux
        first = {k: v[0] for k, v in params.items()}
        config.update(recipe={**recipe}, train_size=m, target_models=K,
                      train_accuracy=_accuracy(model, first, cand.subset(half[0]), dev),
                      test_accuracy=_accuracy(model, first, test, dev))
        trials = 2 * m * K
        privacy = _privacy(defense, neighbours="add/remove", sample_rate=min(train_batch_size, m) / m,
                           steps=max(train_steps, 1))
    with torch.no_grad() if observe == "model" else _null():
        s = adv.score(obs)
    s = np.asarray(s.detach().cpu().double() if isinstance(s, torch.Tensor) else s)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"the {adv.name} adversary produced non-finite scores (a defense too strong for "
                         f"its statistic?)")
    if privacy is not None:
        config["privacy"] = privacy
    return MembershipResult(
        game="membership", dataset=dataset.name, modality=dataset.modality, attribute=None,
        adversary=adv.name, adaptive=adaptive, batch_size=batch_size, secret=tr.secret.cpu().numpy(),
        round_scores=s[None], secret_names=game.secret_names(pool), seed=seed, config=config,
        wall_time=time.perf_counter() - t0, device=str(dev))


def _privacy(defense, *, neighbours: str, sample_rate: float, steps: int, delta: float = 1e-5) -> dict | None:
    """The accountant's epsilon for what the game compares, or ``None`` for a defense without one.

    ``neighbours`` names the game's neighbouring datasets: ``"replace-one"`` for the
    release game (a member's batch and a non-member's differ in one record's value),
    ``"add/remove"`` for the model game. ``epsilon`` is for those; both conventions are kept.
    """
    from ...privacy.accounting import PrivacyEvent

    if getattr(defense, "name", None) != "dp":
        return None
    p = PrivacyEvent(defense.noise, sample_rate, steps, neighbours).record(delta=delta)
    return {k: p[k] for k in ("neighbours", "epsilon", "epsilon_replace", "epsilon_add_remove", "delta",
                              "accountant", "sample_rate", "steps")}


def _accuracy(model, params, data: Dataset, dev) -> float:
    mode = model.training
    model.eval()                          # a stochastic model (VIB) predicts from its mean: no draw
    try:
        with torch.no_grad():
            out = functional_call(model, params, (data.x.to(dev),))
    finally:
        model.train(mode)
    return float((out.argmax(1).cpu() == data.y).double().mean())


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
