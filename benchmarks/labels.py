"""Label recovery from batch gradients: the previous count heuristic against the estimates of today.

On 8x8 digits, an MLP (hidden 64, ReLU) is trained on one half of the records (the
clients' data) and the attacker holds records of the other half. For every batch
size, ``T`` batches are drawn from the clients' half (labels repeat, as they do in
real batches), their FedSGD gradients are released and the label multiset is read
off the last layer by

* ``previous``: the count heuristic this project used before (a uniform mean
  prediction assumed; for a head without bias the weight-gradient row sums read as
  if they were bias gradients);
* ``uniform``: :func:`leaklab.attacks.labels.label_recovery` without a model;
* ``dummy``: with the model, its predictions measured on random dummy inputs;
* ``auxiliary``: with the model on the attacker's labelled records.

It prints the share of batches whose label multiset is recovered exactly, for the
trained and for the untrained model, with and without a bias on the last layer, all
on the same batches in one run. Run by hand::

    python benchmarks/labels.py                  # 500 batches per setting
    python benchmarks/labels.py --trials 200 --batch-sizes 2,4,8,16
"""
from __future__ import annotations

import argparse

import torch

import leaklab
from leaklab.attacks.labels import last_layer_gradient, label_recovery
from leaklab.fl import accuracy, batch_gradients, train
from leaklab.models import build_model


def previous_estimate(grads, num_classes: int, batch_size: int) -> torch.Tensor:
    """The count heuristic leaklab used before: a uniform mean prediction, row sums taken as a bias."""
    g = last_layer_gradient(grads, num_classes).detach().float()
    if batch_size == 1:
        return g.argmin(-1, keepdim=True)
    T, C = g.shape
    est = batch_size * (1.0 / C - g)
    order = torch.argsort(g, dim=-1)
    counts = torch.zeros(T, C, dtype=torch.long)
    negative = torch.gather(g, 1, order) < 0
    take = negative & (torch.arange(C) < batch_size)
    counts.scatter_add_(1, order, take.long())
    for _ in range(batch_size):
        room = counts.sum(-1) < batch_size
        if not room.any():
            break
        best = (est - counts).argmax(-1)
        counts[room, best[room]] += 1
    return torch.repeat_interleave(torch.arange(C).repeat(T), counts.flatten()).reshape(T, batch_size)


def exact_share(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    return float((y_hat.sort(-1).values == y.sort(-1).values).all(-1).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--batch-sizes", default="2,4,8")
    ap.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    digits = leaklab.load_dataset("digits")
    gen = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(digits), generator=gen)
    clients, attacker = digits.subset(perm[: len(digits) // 2]), digits.subset(perm[len(digits) // 2:])
    print(f"{'model':<10} {'head':<8} {'acc':>5} {'B':>3}  " + "  ".join(
        f"{n:>9}" for n in ("previous", "uniform", "dummy", "auxiliary")))
    for bias in (True, False):
        for state in ("untrained", "trained"):
            model = build_model("mlp", digits.input_shape, 10, seed=args.seed, bias=bias)
            if state == "trained":
                train(model, clients, steps=args.steps, seed=args.seed, progress=False)
            acc = accuracy(model, attacker)
            for B in sizes:
                idx = torch.stack([torch.randperm(len(clients), generator=gen)[:B] for _ in range(args.trials)])
                xs, ys = clients.x[idx], clients.y[idx]
                grads = batch_gradients(model, xs, ys)
                common = dict(num_classes=10, batch_size=B)
                shares = [
                    exact_share(previous_estimate(grads, 10, B), ys),
                    exact_share(label_recovery(grads, **common).labels, ys),
                    exact_share(label_recovery(grads, **common, model=model,
                                               input_shape=digits.input_shape).labels, ys),
                    exact_share(label_recovery(grads, **common, model=model, aux=attacker.x[:200],
                                               aux_labels=attacker.y[:200]).labels, ys),
                ]
                print(f"{state:<10} {'bias' if bias else 'no bias':<8} {acc:5.2f} {B:>3}  "
                      + "  ".join(f"{s:9.3f}" for s in shares), flush=True)


if __name__ == "__main__":
    main()
