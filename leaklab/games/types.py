"""What the players of a game hold: the adversary's :class:`Knowledge`, each round's :class:`Observation`,
and the :class:`GameResult` (secrets and scores over many trials).

These types are the protocol between the challenger and the adversaries: an adversary
imports them, never the code that plays a game (:mod:`leaklab.games.protocol`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._checks import check_positive_int
from ..data import Dataset
from ..defenses import Defense as DefenseBase
from ..defenses import as_defense
from ..fl import Params
from ..metrics.classification import InferenceScore, score_guesses
from ..results import Record
from .challenger import adversary_model, as_game_defense, release_gradients, secure_release
from .games import Game

__all__ = ["Knowledge", "Observation", "GameResult"]


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
    column blanked to 0, and its label; membership and tracing: the target record),
    else ``None``.

    What some games add, each ``None`` where a game has nothing of the kind:

    * ``client_params`` (tracing): each client's local model as the server can form it
      from the release, the shared parameters with a leading ``(T, N)`` client axis;
    * ``candidate_index``, ``model_index`` (membership, ``observe="model"``): for each
      trial, the candidate record and the target model it asks about (``(T,)`` each);
      the released model's ``params`` then carry a leading model axis.
    """

    round: int
    params: Params
    gradients: Params
    phi_x: torch.Tensor | None = None
    phi_y: torch.Tensor | None = None
    client_params: Params | None = field(default=None, kw_only=True)
    candidate_index: torch.Tensor | None = field(default=None, kw_only=True)
    model_index: torch.Tensor | None = field(default=None, kw_only=True)


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
