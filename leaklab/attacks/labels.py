"""Reading labels off the last layer's gradient (iDLG).

For one sample with cross-entropy loss and softmax outputs ``p``, the gradient
with respect to the logits is ``p - onehot(y)``: every entry is positive except
the true class's, which is ``p_y - 1 < 0`` (Zhao et al., 2020). The last layer's
bias gradient *is* that vector, and the weight gradient's row ``c`` is
``(p_c - 1[c = y]) h`` for the penultimate features ``h``; after a sigmoid or a
ReLU ``h >= 0``, so the sign of each row's sum gives the same answer without a bias.

For a batch the FedSGD gradient averages these vectors. Classes present in the
batch pull their entry down by ``1/B`` per record, so the most negative entries
point at the labels; :func:`recover_labels` turns them into ``B`` labels with a
count estimate that assumes the model's mean prediction is close to uniform (exact
for ``B = 1``, a heuristic beyond).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from .._checks import check_positive_int

__all__ = ["last_layer_gradient", "recover_labels"]


def last_layer_gradient(grads: Mapping[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """The per-class signal of the output layer, shape ``(T, num_classes)``.

    ``grads`` holds gradients with a leading trial dimension. The output layer is
    the last parameter whose shape is ``(T, num_classes, F)``; its bias (the next
    parameter, shape ``(T, num_classes)``) is returned where there is one, else
    the row sums of the weight gradient.
    """
    check_positive_int("num_classes", num_classes, minimum=2)
    items = list(grads.items())
    for i in range(len(items) - 1, -1, -1):
        name, g = items[i]
        if g.ndim == 3 and g.shape[1] == num_classes:
            if i + 1 < len(items):
                bname, b = items[i + 1]
                if b.ndim == 2 and b.shape[1] == num_classes:
                    return b
            return g.sum(-1)
    shapes = {k: tuple(v.shape) for k, v in items}
    raise ValueError(
        f"grads has no output layer of shape (T, {num_classes}, F) to read labels from; got {shapes}"
    )


def recover_labels(grads: Mapping[str, torch.Tensor], *, num_classes: int, batch_size: int) -> torch.Tensor:
    """Labels ``(T, batch_size)`` read off the output layer's gradient (iDLG).

    For ``batch_size = 1`` this is the class with the (only) negative entry, which
    is exact for cross-entropy. For larger batches: every class with a negative
    entry gets one record (most negative first), and the remaining slots go to the
    classes with the largest estimated counts ``B (1/C - g_c)``.
    """
    check_positive_int("batch_size", batch_size)
    g = last_layer_gradient(grads, num_classes).detach().float()   # (T, C)
    if batch_size == 1:
        return g.argmin(-1, keepdim=True)
    T, C = g.shape
    est = batch_size * (1.0 / C - g)                                 # estimated counts (T, C)
    order = torch.argsort(g, dim=-1)                                 # most negative first
    counts = torch.zeros(T, C, dtype=torch.long, device=g.device)
    negative = torch.gather(g, 1, order) < 0
    take = negative & (torch.arange(C, device=g.device) < batch_size)
    counts.scatter_add_(1, order, take.long())
    for _ in range(batch_size):                                      # fill the remaining slots
        room = counts.sum(-1) < batch_size
        if not room.any():
            break
        best = (est - counts).argmax(-1)
        counts[room, best[room]] += 1
    labels = torch.repeat_interleave(torch.arange(C, device=g.device).repeat(T), counts.flatten())
    return labels.reshape(T, batch_size)
