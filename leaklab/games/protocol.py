"""The challenger/adversary protocol of an inference game, played for many trials at once.

The steps follow the game-based framework of Li et al. (2024), as far as we could read it:

1. The challenger obtains the latest parameters ``theta`` through the training
   algorithm ``T`` (here :func:`leaklab.fl.train`, one epoch of SGD on its pool
   between rounds).
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
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .._checks import check_choice, check_fraction, check_positive_int, check_tensor
from ..data import Dataset, load_dataset
from ..fl import Params, batch_gradients, parameters_of, secure_sum, train
from ..metrics.classification import InferenceScore, score_guesses
from ..results import Record
from ..runtime import get_device
from .games import Game, Trials, make_game

__all__ = ["Defense", "identity", "Knowledge", "Observation", "GameResult", "release_gradients",
           "secure_release",
           "default_model", "play", "ENGINES"]

#: A defense ``M``: maps a dict of gradients with a leading trial dimension to another.
Defense = Callable[[Params], Params]
ENGINES = ("batched", "loop")


def identity(grads: Params) -> Params:
    """The defense of an undefended game: release the gradients as they are."""
    return grads


def _chunk(xs: torch.Tensor, params: Params, budget: int | None = None) -> int:
    """Trials per vmap call: as many as fit a quarter of the device's free memory (a rough estimate
    of a trial's activations and gradients), or ``budget`` floats when given; at least 64."""
    from .._memory import fit_chunk

    per_sample = math.prod(xs.shape[2:]) if xs.ndim > 2 else 1
    per_trial = xs.shape[1] * per_sample * 16 + 2 * sum(v.numel() for v in params.values())
    per_trial = max(int(per_trial), 1) * xs.element_size()
    available = None if budget is None else int(budget) * xs.element_size() * 4
    return fit_chunk(per_trial, device=xs.device, minimum=64, available=available)


def release_gradients(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, params: Params, *,
                      engine: str = "batched", chunk: int | None = None) -> Params:
    """FedSGD gradients of ``T`` batches ``xs (T, B, ...)``, ``ys (T, B)`` at ``params``.

    ``engine="batched"`` vmaps over the trials, in chunks of ``chunk`` trials (by
    default as many as fit about 0.5 GB of activations); ``engine="loop"`` computes
    each trial's gradient with ``torch.autograd.grad``.
    """
    check_choice("engine", engine, ENGINES)
    if engine == "batched":
        chunk = _chunk(xs, params) if chunk is None else check_positive_int("chunk", chunk)
        if xs.shape[0] <= chunk:
            return batch_gradients(model, xs, ys, params=params)
        parts = [batch_gradients(model, xs[s:s + chunk], ys[s:s + chunk], params=params)
                 for s in range(0, xs.shape[0], chunk)]
        return {k: torch.cat([p[k] for p in parts]) for k in params}
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    out: dict[str, list[torch.Tensor]] = {k: [] for k in params}
    for t in range(xs.shape[0]):
        loss = F.cross_entropy(functional_call(model, leaves, (xs[t],)), ys[t])
        for k, g in zip(leaves, torch.autograd.grad(loss, list(leaves.values()))):
            out[k].append(g)
    return {k: torch.stack(v) for k, v in out.items()}


def secure_release(model: nn.Module, data: Dataset, idx: torch.Tensor, params: Params, *,
                   clients: int = 1, defense: Defense = identity, engine: str = "batched",
                   generator: torch.Generator | None = None, device=None) -> Params:
    """What the server sees when a client releases the batches ``data[idx]`` (``idx``: (T, B)).

    Each client applies the defense to its own gradient. With ``clients > 1``, the
    other ``clients - 1`` clients release gradients of random batches of the same
    size from ``data``, and the server sees only the sum of all releases
    (:func:`leaklab.fl.secure_sum`), as under secure aggregation.
    """
    dev = get_device(device)
    x, y = data.x.to(dev), data.y.to(dev)
    idx = idx.to(dev)
    releases = [defense(release_gradients(model, x[idx], y[idx], params, engine=engine))]
    for _ in range(clients - 1):
        other = torch.randint(len(data), tuple(idx.shape), generator=generator).to(dev)
        releases.append(defense(release_gradients(model, x[other], y[other], params, engine=engine)))
    return releases[0] if clients == 1 else secure_sum(releases)


@dataclass
class Knowledge:
    """What the game grants the adversary before the first round.

    ``model`` gives the architecture and, with cross-entropy, the loss ``L``;
    ``auxiliary`` holds records from ``P(x, y, a)`` disjoint from the challenger's;
    ``defense`` is ``M``; an ``adaptive`` adversary simulates releases through it;
    ``clients`` is the number of clients whose releases the server sees only summed.
    """

    model: nn.Module
    game: Game
    auxiliary: Dataset
    batch_size: int
    secret_names: tuple[str, ...]
    defense: Defense = identity
    adaptive: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    engine: str = "batched"
    clients: int = 1

    def release(self, data: Dataset, idx: torch.Tensor, params: Params,
                generator: torch.Generator) -> Params:
        """Simulate what the server sees when the batches ``data[idx]`` (T, B) are released.

        With ``clients > 1`` the release is the secure sum of this client's gradient and
        those of ``clients - 1`` other clients with random batches from ``data``; the
        defense is applied by each client when the adversary is adaptive.
        """
        return secure_release(self.model, data, idx, params, clients=self.clients,
                              defense=self.defense if self.adaptive else identity,
                              engine=self.engine, generator=generator, device=self.device)

    def gradients(self, xs: torch.Tensor, ys: torch.Tensor, params: Params, *,
                  defended: bool | None = None) -> Params:
        """Simulate releases of batches ``xs (T, B, ...)`` at ``params`` (through ``M`` if adaptive)."""
        g = release_gradients(self.model, xs.to(self.device), ys.to(self.device), params, engine=self.engine)
        defended = self.adaptive if defended is None else defended
        return self.defense(g) if defended else g


@dataclass
class Observation:
    """What the adversary sees in one observed round ``i``, for ``T`` trials.

    ``params`` is ``theta_{i-1}``; ``gradients`` the released (defended) gradients,
    each ``(T, *shape)``; ``phi_x``/``phi_y`` the auxiliary information about the
    target record (attribute game on tabular data: its features with the sensitive
    column blanked to 0, and its label), else ``None``.
    """

    round: int
    params: Params
    gradients: Params
    phi_x: torch.Tensor | None = None
    phi_y: torch.Tensor | None = None


@dataclass
class GameResult:
    """Secrets and the adversary's per-round scores over ``T`` trials of one setting.

    ``round_scores`` has shape ``(R, T)`` (log-odds of secret value 1) or ``(R, T, K)``
    (a score per secret value); the evidence after ``r`` observed rounds is the sum of
    the first ``r`` rows.
    """

    game: str
    dataset: str
    modality: str
    attribute: str | None
    adversary: str
    adaptive: bool
    batch_size: int
    secret: np.ndarray
    round_scores: np.ndarray
    secret_names: tuple[str, ...]
    seed: int
    config: dict = field(default_factory=dict)
    wall_time: float = 0.0
    device: str = "cpu"

    @property
    def rounds(self) -> int:
        return int(self.round_scores.shape[0])

    @property
    def trials(self) -> int:
        return int(self.secret.shape[0])

    def scores(self, rounds: int | None = None) -> np.ndarray:
        """The adversary's evidence after the first ``rounds`` observed rounds (all by default)."""
        r = self.rounds if rounds is None else check_positive_int("rounds", rounds)
        if r > self.rounds:
            raise ValueError(f"rounds must be at most {self.rounds} (the rounds played), got {r}")
        return self.round_scores[:r].sum(0)

    def score(self, rounds: int | None = None, *, level: float = 0.95) -> InferenceScore:
        """AUROC with its confidence interval, accuracy and advantage after ``rounds`` rounds."""
        return score_guesses(self.secret, self.scores(rounds), level=level, seed=self.seed)

    def record(self, rounds: int | None = None) -> Record:
        """A :class:`~leaklab.results.Record` of the setting after ``rounds`` observed rounds."""
        r = self.rounds if rounds is None else rounds
        config = {"game": self.game, "dataset": self.dataset, "modality": self.modality,
                  "attribute": self.attribute, "adversary": self.adversary, "adaptive": self.adaptive,
                  "batch_size": self.batch_size, "rounds": r, "trials": self.trials, **self.config}
        return Record(kind=f"game/{self.game}", config=config, seed=self.seed,
                      numbers=self.score(r).to_dict(), wall_time=self.wall_time, device=self.device)

    def __repr__(self) -> str:
        s = self.score()
        lo, hi = s.auroc_ci
        return (f"GameResult({self.game} on {self.dataset}, adversary={self.adversary}, "
                f"batch_size={self.batch_size}, rounds={self.rounds}, trials={self.trials}: "
                f"AUROC {s.auroc:.3f} [{lo:.3f}, {hi:.3f}], accuracy {s.accuracy:.3f})")


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


def _phi(game: Game, pool: Dataset, trials: Trials) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if trials.target is None:
        return None, None
    col = pool.info.attribute_features.get(game.attribute)
    if col is None or pool.x.ndim != 2:
        return None, None
    x = pool.x[trials.target].clone()
    x[:, col] = 0.0                     # the adversary does not know the sensitive feature
    return x, pool.y[trials.target]


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
        The defense ``M`` (identity by default) and whether the adversary adapts to it.
    model
        The model (default: :func:`default_model`, initialised with ``seed``); it is
        trained in place by the challenger between rounds.
    warmup_steps, steps_per_round, lr
        SGD steps before the first round; steps between rounds (default: one epoch of
        the challenger's pool at batch size 32); the learning rate.
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

    from tqdm.auto import trange

    from .adversaries import make_adversary

    t0 = time.perf_counter()
    dev = get_device(device)
    check_positive_int("batch_size", batch_size)
    check_positive_int("rounds", rounds)
    check_positive_int("trials", trials, minimum=2)
    check_positive_int("warmup_steps", warmup_steps, minimum=0)
    check_positive_int("clients", clients)
    check_fraction("aux_fraction", aux_fraction, low=0.05, high=0.95)
    check_choice("engine", engine, ENGINES)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if isinstance(dataset, str):
        dataset = load_dataset(dataset)
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a dataset name or a Dataset, got {type(dataset).__name__}")
    if not isinstance(game, Game):
        game = make_game(game, dataset.info, attribute=attribute, **dict(game_options or {}))
    adv = make_adversary(adversary, **dict(adversary_options or {}))
    adv.check(game, dataset.info)
    defense = identity if defense is None else defense
    if not callable(defense):
        raise TypeError(f"defense must be a callable on gradient dicts, got {type(defense).__name__}")

    aux, pool = dataset.split(aux_fraction, seed=seed)
    names = game.secret_names(pool)
    if model is None:
        model = default_model(dataset, seed=seed, device=dev)
    model = model.to(dev)
    steps = math.ceil(len(pool) / 32) if steps_per_round is None else check_positive_int(
        "steps_per_round", steps_per_round, minimum=0)

    knowledge = Knowledge(model=model, game=game, auxiliary=aux, batch_size=batch_size,
                          secret_names=names, defense=defense, adaptive=adaptive, device=dev,
                          engine=engine, clients=clients)
    gen = torch.Generator().manual_seed(seed)
    adv.prepare(knowledge, seed=seed + 1)
    if warmup_steps:
        train(model, pool, steps=warmup_steps, lr=lr, seed=seed + 7, progress=False)
    tr = game.draw_trials(pool, trials, gen)
    phi_x, phi_y = _phi(game, pool, tr)
    per_round = []
    for i in trange(rounds, desc=f"{game.name} game", disable=not progress, leave=False):
        theta = parameters_of(model)
        idx = game.draw_batches(pool, tr, batch_size, gen)                # (T, B)
        g = secure_release(model, pool, idx, theta, clients=clients, defense=defense, engine=engine,
                           generator=gen, device=dev)
        for k, v in g.items():
            check_tensor(f"released gradient {k!r}", v)
        obs = Observation(i + 1, theta, g,
                          None if phi_x is None else phi_x.to(dev),
                          None if phi_y is None else phi_y.to(dev))
        s = adv.score(obs)
        per_round.append(np.asarray(s.detach().cpu().double() if isinstance(s, torch.Tensor) else s))
        if i + 1 < rounds and steps:
            train(model, pool, steps=steps, lr=lr, seed=seed + 11 + i, progress=False)
    config = {"warmup_steps": warmup_steps, "steps_per_round": steps, "lr": lr,
              "aux_fraction": aux_fraction, "clients": clients, "engine": engine,
              "model": type(model).__name__, **{k: v for k, v in dict(game_options or {}).items()},
              **{f"adversary_{k}": v for k, v in dict(adversary_options or {}).items()}}
    return GameResult(
        game=game.name, dataset=dataset.name, modality=dataset.modality, attribute=game.attribute,
        adversary=adv.name, adaptive=adaptive, batch_size=batch_size,
        secret=tr.secret.numpy(), round_scores=np.stack(per_round), secret_names=names, seed=seed,
        config=config, wall_time=time.perf_counter() - t0, device=str(dev),
    )
