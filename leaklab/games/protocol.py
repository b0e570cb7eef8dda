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
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .._checks import check_choice, check_fraction, check_positive_int, check_seed, check_tensor
from ..data import as_dataset, Dataset
from ..defenses import Defense as DefenseBase
from ..defenses import as_defense
from ..fl import Params, parameters_of, secure_sum, train
from ..release import memory_chunk, release, shared_names
from ..metrics.classification import InferenceScore, score_guesses
from ..results import Record
from ..runtime import get_device
from .games import Game, Trials, make_game

__all__ = ["Defense", "identity", "Knowledge", "Observation", "GameResult", "release_gradients",
           "secure_release", "adversary_model", "secret_names",
           "default_model", "play", "ENGINES"]

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


@dataclass
class Knowledge:
    """What the game grants the adversary before the first round.

    ``model`` is given as the client's model; the adversary holds only
    :func:`adversary_model`'s frozen copy of it (the architecture and, with
    cross-entropy, the loss ``L``; the shared parameters; its own draw of the client's
    secrets when ``adaptive``, zeros when static), in ``model`` and ``view`` alike.
    ``auxiliary`` holds records from ``P(x, y, a)`` disjoint from the challenger's;
    ``defense`` is ``M``; an ``adaptive`` adversary simulates releases through it;
    ``clients`` is the number of clients whose releases the server sees only summed;
    ``seed`` (required) seeds the adversary's own draw of the secrets.
    """

    model: nn.Module
    game: Game
    auxiliary: Dataset
    batch_size: int
    secret_names: tuple[str, ...]
    defense: DefenseBase = field(default_factory=lambda: as_defense(None))
    adaptive: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    engine: str = "batched"
    clients: int = 1
    seed: int = field(kw_only=True)

    def __post_init__(self):
        # The adversary never holds the client's defense object: only its public settings
        # (Defense.public), so that what the client fitted on its own records (perturb's
        # surrogate) stays with the client; an adaptive adversary fits its own (_ready).
        self.defense = as_game_defense(self.defense).public()
        self._fitted_at = None
        # The adversary never holds the client's model: only a copy of what it may see,
        # with its own draw of the client's secrets (adaptive) or zeros (static).
        self.model = adversary_model(self.model, self.defense, adaptive=self.adaptive, seed=self.seed)
        self.view = self.model
        secret = set(getattr(self.model, "secret_parameters", ()) or ())
        self._own = {k: v.detach() for k, v in self.view.named_parameters() if k in secret}

    def _params(self, params: Params) -> Params:
        return {**params, **self._own} if self._own else params

    def _ready(self, defense, params: Params) -> None:
        """Fit what ``M`` learns from data (perturb's surrogate) on the adversary's own auxiliary
        records at ``params``, once per ``theta``, before simulating releases through it."""
        if defense is None or not callable(getattr(defense, "prepare", None)):
            return
        at = (id(defense), torch.cat([v.detach().reshape(-1).double().cpu() for v in params.values()]))
        last = self._fitted_at
        if last is not None and last[0] == at[0] and last[1].shape == at[1].shape and torch.equal(last[1], at[1]):
            return
        defense.prepare(model=self.view, game=self.game, data=self.auxiliary, batch_size=self.batch_size,
                        params=self._params(params), generator=torch.Generator().manual_seed(self.seed + 29))
        self._fitted_at = at

    def release(self, data: Dataset, idx: torch.Tensor, params: Params,
                generator: torch.Generator) -> Params:
        """Simulate what the server sees when the batches ``data[idx]`` (T, B) are released.

        With ``clients > 1`` the release is the secure sum of this client's gradient and
        those of ``clients - 1`` other clients with random batches from ``data``; the
        defense is applied by each client when the adversary is adaptive.
        """
        if self.adaptive:
            self._ready(self.defense, params)
        return secure_release(self.view, data, idx, self._params(params), clients=self.clients,
                              defense=self.defense if self.adaptive else None,
                              engine=self.engine, generator=generator, device=self.device,
                              static_objective=self.static)

    @property
    def static(self) -> bool:
        """A static adversary facing a model-side defense simulates plain cross-entropy gradients."""
        return not self.adaptive and self.defense.acts_on == "model"

    def gradients(self, xs: torch.Tensor, ys: torch.Tensor, params: Params, *,
                  defended: bool | None = None, generator: torch.Generator | None = None,
                  defense=None) -> Params:
        """Simulate releases of whole batches ``xs (T, B, ...)`` at ``params`` (through ``M`` if adaptive).

        ``M`` acts on a whole release (``M`` of a mean is not the mean of ``M``): pass
        whole simulated batches here, not single records, when ``defended``. ``defense``
        overrides which defense is simulated (e.g. ``M`` without its noise).
        """
        defended = self.adaptive if defended is None else defended
        if defense is None:
            defense = self.defense if defended else None
        self._ready(defense, params)
        return release_gradients(self.view, xs.to(self.device), ys.to(self.device), self._params(params),
                                 engine=self.engine,
                                 defense=defense, generator=generator,
                                 static_objective=self.static)


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
    (log-posteriors per secret value); the evidence after ``r`` observed rounds is the
    sum of the first ``r`` rows (for ``K > 2`` values normalised again by a log-softmax,
    so that it is a log-posterior).

    In the attribute game on tabular data, ``baseline_scores`` holds the scores of the
    ``phi``-only adversary (:class:`~leaklab.games.PhiAdversary`) on the same trials:
    what the auxiliary information about the target reveals without any release.
    :attr:`baseline` scores it; the leakage of the release is the gain over it,
    ``score().auroc - baseline.auroc``. It is ``None`` where there is no ``phi``.
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
    baseline_scores: np.ndarray | None = None

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
        total = self.round_scores[:r].sum(0)
        if total.ndim == 2:
            total = total - _logsumexp(total)
        return total

    def score(self, rounds: int | None = None, *, level: float = 0.95) -> InferenceScore:
        """AUROC with its confidence interval, accuracy and advantage after ``rounds`` rounds."""
        return score_guesses(self.secret, self.scores(rounds), level=level, seed=self.seed)

    def baseline_score(self, *, level: float = 0.95) -> InferenceScore | None:
        """The ``phi``-only adversary's score on the same trials (``None`` where there is no ``phi``)."""
        if self.baseline_scores is None:
            return None
        return score_guesses(self.secret, self.baseline_scores, level=level, seed=self.seed)

    @property
    def baseline(self) -> InferenceScore | None:
        """:meth:`baseline_score` at the 95% level: what ``phi(z)`` alone reveals."""
        return self.baseline_score()

    def gain_ci(self, rounds: int | None = None, *, level: float = 0.95) -> tuple[float, float] | None:
        """A paired bootstrap interval for the gain over ``phi`` (AUROC minus the ``phi``-only AUROC).

        Both adversaries are scored on the same resampled trials (seeded with the game's
        seed), so the interval is that of the difference, not of either AUROC. ``None``
        where there is no ``phi``.
        """
        if self.baseline_scores is None:
            return None
        from ..metrics.classification import auroc_gain_ci
        return auroc_gain_ci(self.secret, self.scores(rounds), self.baseline_scores, level=level, seed=self.seed)

    def record(self, rounds: int | None = None) -> Record:
        """A :class:`~leaklab.results.Record` of the setting after ``rounds`` observed rounds.

        Its ``numbers`` hold the adversary's score and, where there is a ``phi``
        baseline, ``baseline_auroc``, ``baseline_auroc_ci``, ``baseline_accuracy`` and
        ``gain_over_phi`` (the AUROC minus the baseline AUROC) with ``gain_over_phi_ci``, its
        paired 95% bootstrap interval over the same trials (:meth:`gain_ci`).
        """
        r = self.rounds if rounds is None else rounds
        config = {"game": self.game, "dataset": self.dataset, "modality": self.modality,
                  "attribute": self.attribute, "adversary": self.adversary, "adaptive": self.adaptive,
                  "batch_size": self.batch_size, "rounds": r, "trials": self.trials, **self.config}
        s = self.score(r)
        numbers = s.to_dict()
        b = self.baseline
        if b is not None:
            numbers.update(baseline_auroc=b.auroc, baseline_auroc_ci=list(b.auroc_ci),
                           baseline_accuracy=b.accuracy, gain_over_phi=s.auroc - b.auroc,
                           gain_over_phi_ci=list(self.gain_ci(r)))
        return Record(kind=f"game/{self.game}", config=config, seed=self.seed,
                      numbers=numbers, wall_time=self.wall_time, device=self.device)

    def __repr__(self) -> str:
        s = self.score()
        lo, hi = s.auroc_ci
        b = self.baseline
        if b is not None:
            glo, ghi = self.gain_ci()
        base = "" if b is None else (f"; phi alone AUROC {b.auroc:.3f} [{b.auroc_ci[0]:.3f}, "
                                     f"{b.auroc_ci[1]:.3f}], gain over phi {s.auroc - b.auroc:+.3f} "
                                     f"[{glo:+.3f}, {ghi:+.3f}]")
        return (f"GameResult({self.game} on {self.dataset}, adversary={self.adversary}, "
                f"batch_size={self.batch_size}, rounds={self.rounds}, trials={self.trials}: "
                f"AUROC {s.auroc:.3f} [{lo:.3f}, {hi:.3f}], accuracy {s.accuracy:.3f}{base})")


def _logsumexp(s: np.ndarray) -> np.ndarray:
    m = s.max(-1, keepdims=True)
    return m + np.log(np.exp(s - m).sum(-1, keepdims=True))


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
    from .adversaries import make_adversary

    base = make_adversary("phi")
    base.prepare(knowledge, seed=seed)
    s = base.score(Observation(1, {}, {}, phi_x, phi_y))
    return np.asarray(s.detach().cpu().double())


def _own_play(game):
    """The play function of a game that is not played round by round here (membership, tracing), or None."""
    name = game.name if isinstance(game, Game) else game
    if name == "membership":
        from .membership import play_membership
        return play_membership
    if name == "tracing":
        from .tracing import play_tracing
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

    from .adversaries import make_adversary

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
        secret=tr.secret.numpy(), round_scores=np.stack(per_round), secret_names=names, seed=seed,
        config=config, wall_time=time.perf_counter() - t0, device=str(dev),
        baseline_scores=_phi_baseline(knowledge, phi_x, phi_y, seed + 1),
    )
