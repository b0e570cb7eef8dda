"""The membership game: its trials and batches, what the server sees, the adversary's knowledge and the result."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..._checks import check_positive_int
from ...data import Dataset
from ...metrics.classification import tpr_at_fprs
from ...results import Record
from ...runtime import get_device
from ..games import Game, Trials, register_game
from ..types import GameResult, Knowledge


OBSERVE = ("release", "model")
#: The strongest adversary for what it observes.
DEFAULT_ADVERSARY = {"release": "alignment", "model": "lira"}
_ADVERSARY_OBSERVES = {"alignment": "release", "loss": "model", "lira": "model", "lira-offline": "model"}


def _other_records(n: int, target: torch.Tensor, shape: tuple[int, ...], generator) -> torch.Tensor:
    """Random indices in ``[0, n)`` of shape ``shape`` (T, ...) that never equal ``target[t]``."""
    T = target.shape[0]
    r = torch.randint(n - 1, shape, generator=generator)
    t = target.reshape(T, *[1] * (len(shape) - 1))
    return r + (r >= t).long()            # skip the target's own index


def server_sum(model: nn.Module, data: Dataset, idx: torch.Tensor, target: torch.Tensor, params, *,
               clients: int = 1, defense=None, engine: str = "batched", generator: torch.Generator | None = None,
               device=None, static_objective: bool = False):
    """What the server sees in the membership game: the release of the batches ``data[idx]`` (T, B)
    and, with ``clients > 1``, the secure sum with ``clients - 1`` other clients' releases.

    The other clients' batches are drawn from the records other than trial ``t``'s target
    ``target[t]``, for members and non-members alike: the target is in the sum exactly
    when it is in the first client's batch.
    """
    from ...fl import secure_sum
    from ..challenger import release_gradients

    check_positive_int("clients", clients)
    dev = get_device(device)
    x, y = data.x.to(dev), data.y.to(dev)
    releases = []
    for c in range(clients):
        pick = idx if c == 0 else _other_records(len(data), target, tuple(idx.shape), generator)
        pick = pick.to(dev)
        releases.append(release_gradients(model, x[pick], y[pick], params, engine=engine, defense=defense,
                                          generator=generator, static_objective=static_objective))
    return releases[0] if clients == 1 else secure_sum(releases)


@register_game("membership")
class MembershipGame(Game):
    """Membership inference: whether a target record was used (in the batch, or in the training set)."""

    needs_attribute = False

    def secret_names(self, data):
        return ("non-member", "member")

    def describe(self):
        return "whether a target record was used"

    def draw_trials(self, data, trials, generator):
        if len(data) < 2:
            raise ValueError(f"the membership game needs at least 2 records, dataset {data.name!r} has {len(data)}")
        secret = torch.randint(2, (trials,), generator=generator)
        target = torch.randint(len(data), (trials,), generator=generator)
        return Trials(secret, target)

    def training_pool(self, data, trials):
        """The pool without the trials' targets, members' and non-members' alike.

        The release game's ``theta`` (after ``warmup_steps``) is given to the adversary,
        and its epsilon counts the one release; a warm-up on the targets, under DP-SGD
        or not, would be a use of them that the epsilon does not count. Without them,
        ``theta`` depends on no target at all.
        """
        keep = torch.ones(len(data), dtype=torch.bool, device=trials.target.device)
        keep[trials.target.unique()] = False
        if not keep.any():
            raise ValueError(f"the membership game's {trials.target.shape[0]} trials draw every record of the "
                             f"challenger's pool ({len(data)}) as a target, leaving none to train on before the "
                             f"release: use fewer trials or warmup_steps=0")
        return data.subset(keep.nonzero().flatten())

    def draw_batches(self, data, trials, batch_size, generator):
        T = trials.secret.shape[0]
        batch = _other_records(len(data), trials.target, (T, batch_size), generator)
        member = trials.secret == 1
        batch[member, 0] = trials.target[member]
        return batch


@dataclass
class MembershipKnowledge(Knowledge):
    """What the membership adversary knows besides :class:`Knowledge`.

    ``observe`` says what is released; for ``observe="model"``: the candidates
    (``candidates``, the records whose membership is asked), the training set size
    ``train_size`` and recipe ``recipe`` (steps, lr, batch size, momentum).
    """

    observe: str = "release"
    candidates: Dataset | None = None
    train_size: int = 0
    recipe: dict = field(default_factory=dict)


class MembershipResult(GameResult):
    """A :class:`GameResult` whose record adds the true-positive rates at 1% and 0.1% false positives.

    At 0.1% FPR the rate is meaningful only with well over 1000 non-member trials.
    Under DP-SGD the record (``epsilon``, ``epsilon_replace``, ``epsilon_add_remove``) and
    the repr carry the accountant's epsilon for the game's own neighbours
    (``config["privacy"]["neighbours"]``): replace-one for the release game, add/remove for
    the model game.
    """

    def tpr(self, fpr: float, rounds: int | None = None) -> float:
        return tpr_at_fprs(self.secret, self.scores(rounds), fprs=(fpr,))[fpr]

    def record(self, rounds=None) -> Record:
        rec = super().record(rounds)
        t = tpr_at_fprs(self.secret, self.scores(rounds), fprs=(0.01, 0.001))
        rec.numbers["tpr_at_1pct_fpr"] = t[0.01]
        rec.numbers["tpr_at_0.1pct_fpr"] = t[0.001]
        p = self.config.get("privacy")
        if p:
            rec.numbers.update(epsilon=p["epsilon"], epsilon_replace=p["epsilon_replace"],
                               epsilon_add_remove=p["epsilon_add_remove"])
        return rec

    def __repr__(self) -> str:
        text = super().__repr__()
        p = self.config.get("privacy")
        if not p:
            return text
        return (f"{text[:-1]}; epsilon {p['epsilon']:.3g} for {p['neighbours']} neighbours at delta "
                f"{p['delta']:g} ({p['steps']} step(s), sample rate {p['sample_rate']:.3g}))")


# -- adversaries ------------------------------------------------------------------------------------
