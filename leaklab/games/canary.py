"""The attribute game with a fixed target: a canary, for auditing.

In the ordinary attribute game the target is drawn from the pool afresh in every
trial. An audit asks how much the release reveals about one chosen record, so here
the target is fixed: the canary (:class:`Canary`, built by :func:`leaklab.audit.canaries.make_canary`), a natural
record or a crafted one. The challenger draws the secret ``a`` uniformly and puts
the canary with its sensitive feature at value ``a`` in every observed batch; the
other ``k - 1`` records are drawn from the pool as usual. The adversary's
``phi(z)`` is the canary's other features and its label.

The canary enters the game through the data: :func:`with_canary` wraps a dataset so
that its challenger's pool (the part :meth:`~leaklab.data.Dataset.split` does not give
the adversary) ends with one row per value of the canary. The two rows are both in
the pool whatever the secret, so training on the pool between rounds says nothing
about it; the batches draw their other records from the pool without those rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data import Dataset
from .games import AttributeGame, Trials

__all__ = ["Canary", "CanaryAttributeGame", "CanaryDataset", "with_canary"]


@dataclass
class Canary:
    """A target record for the attribute game: its features, label, and the two values of its sensitive column.

    ``x`` holds the features with the sensitive column set to ``values[0]``;
    :meth:`records` gives one row per secret value. ``kind`` is ``"random"``,
    ``"natural"`` (the most exposed record of the data) or ``"crafted"``; ``index``
    is the natural record's position in the data it was found in.
    """

    x: torch.Tensor
    y: int
    attribute: str
    column: int
    values: tuple[float, ...]
    kind: str
    exposure: float
    index: int | None = None
    details: dict = field(default_factory=dict)

    def records(self) -> torch.Tensor:
        """``(K, F)``: the canary with its sensitive column at each value."""
        out = self.x[None].repeat(len(self.values), 1)
        out[:, self.column] = torch.tensor(self.values, dtype=out.dtype, device=out.device)
        return out

    def summary(self) -> str:
        where = f" (record {self.index})" if self.index is not None else ""
        return f"{self.kind} canary{where}: label {self.y}, exposure {self.exposure:.3f}"


@dataclass(repr=False)
class _CanaryPool(Dataset):
    """A pool whose last ``canary_rows`` records are the canary, one per secret value."""

    canary_rows: int = 0


@dataclass(repr=False)
class CanaryDataset(Dataset):
    """A dataset whose :meth:`split` appends the canary's rows to the challenger's part (the second)."""

    canary: object = None

    def split(self, fraction: float, *, seed: int = 0):
        aux, pool = Dataset.split(self, fraction, seed=seed)
        c = self.canary
        rows = c.records().to(pool.x.dtype).to(pool.x.device)
        k = rows.shape[0]
        attrs = {}
        for name, codes in pool.attributes.items():
            if name == c.attribute:
                extra = torch.arange(k, dtype=codes.dtype, device=codes.device)
            elif c.index is not None and c.index < len(self):
                extra = self.attributes[name][c.index].repeat(k)
            else:
                extra = torch.zeros(k, dtype=codes.dtype, device=codes.device)
            attrs[name] = torch.cat([codes, extra.to(codes.device)])
        users = None if pool.users is None else torch.cat([pool.users, pool.users[:1].repeat(k)])
        ys = torch.full((k,), int(c.y), dtype=pool.y.dtype, device=pool.y.device)
        return aux, _CanaryPool(info=pool.info, x=torch.cat([pool.x, rows]), y=torch.cat([pool.y, ys]),
                                attributes=attrs, users=users, canary_rows=k)

    def __repr__(self) -> str:
        return f"CanaryDataset({self.name!r}, n={len(self)}, canary={self.canary.kind})"


def with_canary(data: Dataset, canary) -> CanaryDataset:
    """``data`` with ``canary`` to be put in the challenger's pool when the game splits it."""
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a leaklab Dataset, got {type(data).__name__}")
    if not isinstance(canary, Canary):
        raise TypeError(f"canary must be a leaklab Canary (leaklab.audit.canaries.make_canary), got {type(canary).__name__}")
    if tuple(canary.x.shape) != tuple(data.input_shape):
        raise ValueError(f"the canary has shape {tuple(canary.x.shape)}, the records of {data.name!r} "
                         f"{tuple(data.input_shape)}")
    return CanaryDataset(info=data.info, x=data.x, y=data.y, attributes=data.attributes, users=data.users,
                         canary=canary)


class CanaryAttributeGame(AttributeGame):
    """Attribute inference about a fixed target, the canary (an audit's game).

    It is the attribute game (same name, same adversaries' view) except that the
    target is the canary in every trial: with secret ``a``, the canary's row with
    the sensitive feature at value ``a``. Play it on :func:`with_canary` data.
    """

    def __init__(self, info, *, canary, attribute=None):
        super().__init__(info, attribute=canary.attribute if attribute is None else attribute)
        if self.attribute != canary.attribute:
            raise ValueError(f"the canary is about {canary.attribute!r}, not {self.attribute!r}")
        self.canary = canary

    def describe(self):
        return f"the {self.attribute} of a fixed {self.canary.kind} canary in the batch"

    @staticmethod
    def _rows(data) -> int:
        k = getattr(data, "canary_rows", 0)
        if not k:
            raise ValueError("the canary attribute game needs the canary in the challenger's pool: play it on "
                             "leaklab.games.canary.with_canary(data, canary) with the informed adversary "
                             "(a shadow adversary would simulate it on auxiliary data without the canary)")
        return k

    def draw_trials(self, data, trials, generator):
        k = self._rows(data)
        if k != self.num_secrets(data):
            raise ValueError(f"the canary has {k} rows but {self.attribute!r} takes {self.num_secrets(data)} values")
        secret = torch.randint(k, (trials,), generator=generator)
        return Trials(secret, len(data) - k + secret)

    def training_pool(self, data, trials):
        """The whole pool: it holds the canary with every value of its attribute, whatever the secret."""
        return data

    def draw_batches(self, data, trials, batch_size, generator):
        k = self._rows(data)
        T = trials.secret.shape[0]
        rest = torch.randint(len(data) - k, (T, batch_size - 1), generator=generator)
        return torch.cat([trials.target[:, None], rest], 1)
