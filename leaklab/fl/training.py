"""Training a model in place, under a defense, so that accuracy measures what the defense costs.

:func:`train` takes SGD steps on mini-batches drawn without replacement
(:func:`epoch_batches`), each step's gradient taken on the release path with the defense;
:func:`accuracy` scores the result.
"""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_positive_int
from ..data import Dataset
from ..release import is_stochastic, objective_of, seeded
from .gradients import _finite
from .local import defended_gradients

__all__ = ["epoch_batches", "check_training_data", "train", "accuracy"]


def epoch_batches(n: int, batch_size: int, steps: int, generator: torch.Generator | None = None,
                  *, models: int | None = None) -> torch.Tensor:
    """The record indices of ``steps`` mini-batches drawn without replacement from ``n`` records.

    Shuffled epochs of fixed-size batches: every epoch is a fresh random permutation of
    the ``n`` records cut into ``n // b`` consecutive batches of ``b = min(batch_size, n)``
    (the last ``n % b`` records of a permutation wait for a later epoch). No record
    appears twice in a batch, and none more than once in an epoch; when ``b`` divides
    ``n`` every record appears exactly once per epoch. Returns ``(steps, b)``, or
    ``(steps, models, b)`` with ``models`` independent streams (one per model trained
    together), all drawn from ``generator``.
    """
    check_positive_int("n", n)
    check_positive_int("batch_size", batch_size)
    check_positive_int("steps", steps, minimum=0)
    b = min(batch_size, n)
    per_epoch = n // b
    epochs = -(-steps // per_epoch) if steps else 0
    S = 1 if models is None else check_positive_int("models", models)
    perms = torch.argsort(torch.rand(epochs, S, n, generator=generator), -1)[..., :per_epoch * b]
    out = perms.reshape(epochs, S, per_epoch, b).permute(0, 2, 1, 3).reshape(epochs * per_epoch, S, b)[:steps]
    return out[:, 0] if models is None else out


def check_training_data(data: Dataset, num_classes: int | None, *, name: str = "data") -> None:
    """Refuse non-finite features and labels outside ``[0, num_classes)`` before any training step."""
    if not isinstance(data, Dataset):
        raise TypeError(f"{name} must be a leaklab Dataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} holds no records to train on")
    x = data.x
    if not x.is_floating_point():
        raise TypeError(f"{name}.x must hold floating-point features, got dtype {x.dtype}")
    bad = ~torch.isfinite(x).reshape(x.shape[0], -1).all(1)
    if bad.any():
        rows = bad.nonzero().flatten()
        raise ValueError(f"{name}.x must be finite: {int(bad.sum())} of {len(data)} records hold NaN or inf "
                         f"(the first at index {int(rows[0])})")
    y = data.y
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name}.y must hold integer class labels, got dtype {y.dtype}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        top = "" if num_classes is None else f", {num_classes - 1}"
        raise ValueError(f"{name}.y must hold class labels in [0{top}] (the model's classes), got labels "
                         f"from {lo} to {hi}")


def train(model: nn.Module, data: Dataset, *, steps: int, lr: float = 0.05, batch_size: int = 32,
          seed: int = 0, momentum: float = 0.9, defense=None, progress: bool = True) -> nn.Module:
    """Train ``model`` in place with SGD for ``steps`` mini-batch steps (a chosen training state).

    Mini-batches are drawn without replacement: shuffled epochs of fixed-size batches of
    ``min(batch_size, len(data))`` records (:func:`epoch_batches`), so no record appears
    twice in a batch. The loss is the model's objective (cross-entropy unless the model
    defines its own). With a ``defense``, every step uses the release path's defended
    gradient (DP-SGD for ``dp``: clipped per record, noised), so that accuracy measures
    what the defense costs; a model-side defense must already be applied
    (``defense.wrap(model)``). Secret parameters, if the model has any, are trained on
    their own gradient. For DP accounting, these fixed-size batches are treated as
    Poisson sampling at the rate ``q = batch_size / len(data)`` (add/remove neighbours),
    the usual approximation for shuffled batches, not an exact account of them.
    Non-finite features and labels outside the model's classes are refused.
    """
    from ..release import _num_classes

    check_positive_int("steps", steps, minimum=0)
    check_positive_int("batch_size", batch_size)
    lr = _finite("lr", lr)
    check_training_data(data, _num_classes(model))
    from ..defenses import as_defense

    defense = as_defense(defense)
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    x, y = data.x.to(dev), data.y.to(dev)
    loss_of = objective_of(model)
    plain = defense.name == "none" or defense.acts_on == "model"
    named = dict(model.named_parameters())
    batches = epoch_batches(len(data), batch_size, steps, gen)
    from .._progress import trange

    model.train()
    for step in trange(steps, desc="train", progress=progress and steps > 0, leave=False):
        idx = batches[step].to(dev)
        opt.zero_grad()
        if plain:
            theta = {k: v for k, v in named.items()}
            with seeded(noise_gen if is_stochastic(model) else None):
                loss_of(theta, x[idx], y[idx]).backward()
        else:
            theta = {k: v.detach() for k, v in named.items()}
            g = defended_gradients(model, x[idx][None], y[idx][None], theta, defense=defense,
                                   generator=noise_gen)       # secret parameters: their own gradient
            for k, p in named.items():
                p.grad = g[k][0].detach().clone()
        opt.step()
    model.eval()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, *, batch_size: int = 1024) -> float:
    """The fraction of ``data`` that ``model`` classifies correctly."""
    dev = next(model.parameters()).device
    correct = 0
    for s in range(0, len(data), batch_size):
        out = model(data.x[s:s + batch_size].to(dev))
        correct += int((out.argmax(1).cpu() == data.y[s:s + batch_size]).sum())
    return correct / max(len(data), 1)
