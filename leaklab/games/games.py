"""The four inference games: what the secret is, and how the challenger draws a batch given it.

A game says two things. First, how the secret ``a`` of each trial is drawn
(:meth:`Game.draw_trials`, uniformly over its values so that guessing gives an
AUROC of 0.5). Second, how a batch of ``k`` records is drawn from ``P(x, y | a)``
(:meth:`Game.draw_batches`). Records are drawn i.i.d. from a finite pool of records,
that is *with replacement*: a batch of 64 can be drawn from a pool of 200 records,
and a record may appear twice in a batch, as an i.i.d. draw allows.

Games are registered by name (:func:`register_game`) and built with
:func:`make_game`, which checks that the dataset declares the game and has what it
needs (a sensitive attribute, user ids).
"""
from __future__ import annotations

import warnings

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._checks import Registry, check_choice, check_fraction
from ..data import Dataset, DatasetInfo, list_datasets

__all__ = ["Game", "Trials", "AttributeGame", "PropertyGame", "DistributionGame", "UserGame",
           "register_game", "make_game", "list_games"]


@dataclass
class Trials:
    """The secrets of ``T`` trials; ``target`` indexes the target record (attribute game only)."""

    secret: torch.Tensor                 # (T,) long, values in [0, num_secrets)
    target: torch.Tensor | None = None   # (T,) long indices into the pool, or None


def _groups(codes: torch.Tensor, k: int, what: str, data: Dataset) -> list[torch.Tensor]:
    groups = [(codes == v).nonzero().flatten() for v in range(k)]
    empty = [v for v, g in enumerate(groups) if g.numel() == 0]
    if empty:
        raise ValueError(f"dataset {data.name!r} ({len(data)} records) has no record with {what} "
                         f"value(s) {empty}; use more records")
    return groups


def _draw_from(groups: list[torch.Tensor], values: torch.Tensor, generator) -> torch.Tensor:
    """For each entry of ``values`` (any shape), one random member of ``groups[value]``."""
    out = torch.empty(values.shape, dtype=torch.long, device=values.device)
    for v, g in enumerate(groups):
        mask = values == v
        n = int(mask.sum())
        if n:
            out[mask] = g[torch.randint(len(g), (n,), generator=generator)].to(out.device)
    return out


class Game:
    """Base class of the games. Subclasses set ``name`` and implement the draws."""

    name: str = ""
    needs_attribute: bool = True

    def __init__(self, info: DatasetInfo, *, attribute: str | None = None):
        self.info = info
        if self.needs_attribute:
            if not info.attributes:
                raise ValueError(f"dataset {info.name!r} has no sensitive attribute for the {self.name} game")
            attribute = attribute if attribute is not None else next(iter(info.attributes))
            check_choice(f"attribute of dataset {info.name!r}", attribute, info.attributes)
        elif attribute is not None:
            raise ValueError(f"the {self.name} game takes no attribute (its secret is the user), "
                             f"got attribute={attribute!r}")
        self.attribute = attribute

    # -- what the secret is -------------------------------------------------
    def secret_names(self, data: Dataset) -> tuple[str, ...]:
        """Names of the secret's values (index = code)."""
        raise NotImplementedError

    def num_secrets(self, data: Dataset) -> int:
        return len(self.secret_names(data))

    def describe(self) -> str:
        raise NotImplementedError

    # -- the challenger's draws --------------------------------------------
    def draw_trials(self, data: Dataset, trials: int, generator: torch.Generator) -> Trials:
        """Draw the secrets of ``trials`` trials, uniformly over the secret's values."""
        k = self.num_secrets(data)
        return Trials(torch.randint(k, (trials,), generator=generator))

    def draw_batches(self, data: Dataset, trials: Trials, batch_size: int,
                     generator: torch.Generator) -> torch.Tensor:
        """Indices ``(T, batch_size)`` into ``data`` of each trial's batch, drawn from ``P(x, y | a)``."""
        raise NotImplementedError

    def training_pool(self, data: Dataset, trials: Trials) -> Dataset:
        """The records the challenger may train its model on between rounds, given the trials.

        Training must not depend on the trials' secrets, or the next ``theta`` (which the
        adversary receives) carries them. Here the secret is a property of the batch drawn
        from the pool, not of the pool, so the whole pool (the default).
        """
        return data

    def __repr__(self) -> str:
        extra = f", attribute={self.attribute!r}" if self.attribute else ""
        return f"{type(self).__name__}(dataset={self.info.name!r}{extra})"


_GAMES: Registry = Registry("a game", "game")


def register_game(name: str) -> Callable[[type[Game]], type[Game]]:
    """Class decorator: make a :class:`Game` subclass available to :func:`make_game` as ``name``."""
    return _GAMES.decorator(name, set_name=True)


def list_games() -> list[str]:
    """The names of the registered games."""
    return _GAMES.names()


def make_game(name: str, info: DatasetInfo | Dataset, *, attribute: str | None = None, **options) -> Game:
    """The game registered as ``name`` on a dataset, after checking the dataset declares it.

    ``info`` is a :class:`~leaklab.data.DatasetInfo` or a :class:`~leaklab.data.Dataset`;
    ``attribute`` names the sensitive attribute (default: the dataset's first);
    ``options`` go to the game (``proportions`` of the distribution game, ...).
    """
    check_choice("game", name, _GAMES)
    if isinstance(info, Dataset):
        info = info.info
    if not isinstance(info, DatasetInfo):
        raise TypeError(f"info must be a DatasetInfo or Dataset, got {type(info).__name__}")
    if name not in info.games:
        games = [g for g in info.games if g in _GAMES]
        others = [d.name for d in list_datasets(game=name)]
        raise ValueError(f"dataset {info.name!r} does not declare the {name} game; "
                         f"its games: {', '.join(games) or 'none of the inference games'}; "
                         f"datasets with the {name} game: {', '.join(others)}")
    return _GAMES[name](info, attribute=attribute, **options)


@register_game("attribute")
class AttributeGame(Game):
    """Attribute inference: the secret is a target record's sensitive attribute.

    The target (drawn from the records with attribute value ``a``) is in the batch of
    every observed round; the other ``k - 1`` records are drawn at random from the
    whole pool, afresh each round, and are unknown to the adversary.
    """

    def secret_names(self, data):
        return tuple(self.info.attributes[self.attribute])

    def describe(self):
        return f"the {self.attribute} of a target record in the batch"

    def draw_trials(self, data, trials, generator):
        t = super().draw_trials(data, trials, generator)
        k = self.num_secrets(data)
        groups = _groups(data.attributes[self.attribute], k, self.attribute, data)
        return Trials(t.secret, _draw_from(groups, t.secret, generator))

    def draw_batches(self, data, trials, batch_size, generator):
        T = trials.secret.shape[0]
        rest = torch.randint(len(data), (T, batch_size - 1), generator=generator)
        return torch.cat([trials.target[:, None], rest], 1)

    def training_pool(self, data, trials):
        """The pool without the trials' targets.

        A target is a record of the pool with its real attribute; a model trained on it
        between rounds (or before the first) moves with that attribute, and the adversary
        receives that model: its later ``theta`` would leak the secret outside every
        accounted release. Without the targets, training depends on the trials only
        through which records were left out, not on any target's attribute.
        """
        keep = torch.ones(len(data), dtype=torch.bool, device=data.x.device)
        keep[trials.target.unique()] = False
        if not keep.any():
            raise ValueError(f"the {trials.target.numel()} trials' targets cover all {len(data)} records of the "
                             "challenger's pool, which leaves no record to train on between rounds; use fewer "
                             "trials, more records, or steps_per_round=0")
        kept = int(keep.sum())
        if kept < 0.1 * len(data):
            warnings.warn(f"the {trials.target.numel()} trials' targets leave {kept} of the {len(data)} records of "
                          "the challenger's pool to train on between rounds: the model is trained on a small, "
                          "unusual sample; use fewer trials, more records, or steps_per_round=0", stacklevel=3)
        return data.subset(keep)


@register_game("property")
class PropertyGame(Game):
    """Property inference: does the batch have the property "most records have ``attribute = value``"?

    Secret 1: the number of records with the value is drawn uniformly from
    ``floor(k/2) + 1 .. k``; secret 0: from ``0 .. floor(k/2)``. The records are
    then drawn from the two groups and shuffled.
    """

    def __init__(self, info, *, attribute=None, value: int | str = 1):
        super().__init__(info, attribute=attribute)
        names = info.attributes[self.attribute]
        if isinstance(value, str):
            check_choice(f"value of {self.attribute}", value, names)
            value = names.index(value)
        if not (isinstance(value, int) and 0 <= value < len(names)):
            raise ValueError(f"value must be one of {list(names)} or a code in [0, {len(names) - 1}], got {value!r}")
        self.value = value

    def secret_names(self, data):
        v = self.info.attributes[self.attribute][self.value]
        return (f"minority {v}", f"majority {v}")

    def describe(self):
        return f"whether most records of the batch have {self.attribute} = " \
               f"{self.info.attributes[self.attribute][self.value]}"

    def draw_batches(self, data, trials, batch_size, generator):
        T = trials.secret.shape[0]
        half = batch_size // 2
        u = torch.rand(T, generator=generator)
        lo = torch.floor(u * (half + 1)).long()                               # 0 .. half
        hi = half + 1 + torch.floor(u * (batch_size - half)).long()           # half+1 .. k
        count = torch.where(trials.secret == 1, hi, lo)                       # (T,)
        has = torch.arange(batch_size, device=count.device)[None] < count[:, None]                 # (T, k)
        perm = torch.argsort(torch.rand(T, batch_size, generator=generator), 1)
        has = torch.gather(has, 1, perm)
        codes = data.attributes[self.attribute]
        inside = (codes == self.value).nonzero().flatten()
        outside = (codes != self.value).nonzero().flatten()
        if inside.numel() == 0 or outside.numel() == 0:
            raise ValueError(f"dataset {data.name!r} needs records with and without "
                             f"{self.attribute} = {self.value} for the property game")
        return _draw_from([outside, inside], has.long(), generator)


@register_game("distribution")
class DistributionGame(Game):
    """Distributional inference: which of two proportions the batch was drawn with.

    Each record has ``attribute = value`` with probability ``proportions[a]`` for the
    secret ``a``, independently (default proportions 0.2 and 0.8).
    """

    def __init__(self, info, *, attribute=None, value: int | str = 1,
                 proportions: tuple[float, float] = (0.2, 0.8)):
        super().__init__(info, attribute=attribute)
        if len(proportions) != 2:
            raise ValueError(f"proportions must hold two numbers, got {proportions!r}")
        p0, p1 = (check_fraction("proportions", p) for p in proportions)
        if p0 == p1:
            raise ValueError(f"proportions must differ, got {p0} and {p1}")
        self.proportions = (p0, p1)
        names = info.attributes[self.attribute]
        if isinstance(value, str):
            check_choice(f"value of {self.attribute}", value, names)
            value = names.index(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
            raise ValueError(f"value must be one of {list(names)} or a code in [0, {len(names) - 1}], got {value!r}")
        self.value = value

    def secret_names(self, data):
        return tuple(f"p={p:g}" for p in self.proportions)

    def describe(self):
        v = self.info.attributes[self.attribute][self.value]
        return (f"whether the batch was drawn with {self.proportions[0]:g} or "
                f"{self.proportions[1]:g} of records with {self.attribute} = {v}")

    def draw_batches(self, data, trials, batch_size, generator):
        T = trials.secret.shape[0]
        p = torch.tensor(self.proportions, device=trials.secret.device)[trials.secret]                     # (T,)
        has = (torch.rand(T, batch_size, generator=generator) < p[:, None]).long()
        codes = data.attributes[self.attribute]
        groups = [(codes != self.value).nonzero().flatten(), (codes == self.value).nonzero().flatten()]
        if min(g.numel() for g in groups) == 0:
            raise ValueError(f"dataset {data.name!r} needs records with and without "
                             f"{self.attribute} = {self.value} for the distribution game")
        return _draw_from(groups, has, generator)


@register_game("user")
class UserGame(Game):
    """User inference: which user produced the batch (every record comes from that user)."""

    needs_attribute = False

    def __init__(self, info, *, attribute=None):
        if not info.has_users:
            raise ValueError(f"dataset {info.name!r} has no user ids for the user game")
        super().__init__(info, attribute=attribute)

    def secret_names(self, data):
        if data.users is None:
            raise ValueError(f"dataset {data.name!r} has no user ids for the user game")
        return tuple(f"user {u}" for u in range(int(data.users.max()) + 1))

    def describe(self):
        return "which user the batch comes from"

    def draw_batches(self, data, trials, batch_size, generator):
        k = self.num_secrets(data)
        groups = _groups(data.users, k, "user", data)
        return _draw_from(groups, trials.secret[:, None].expand(-1, batch_size), generator)
