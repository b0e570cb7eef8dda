"""Benchmark: models trained together (vmap) against one after another, for LiRA and federated training.

Two measurements, each side by side in one run (the same draws, the same code but
for the engine), so that the load of a shared machine weighs on both sides:

1. LiRA's shadow models: ``--shadows`` MLPs trained on random halves of the
   candidates by :func:`leaklab.games.train_stacked`, ``engine="batched"`` (one
   ``torch.func.vmap`` per SGD step over stacked parameters) against
   ``engine="loop"`` (one model after another). The trained parameters are compared.
2. Federated training: ``--clients`` clients of FedAvg with local steps through a
   defense, :func:`leaklab.federated.train_federated` with the clients computed
   together (``params_batched`` releases) against one client at a time.

Prints both wall times and the ratio ``together / one after another``.

    python benchmarks/tradeoff.py
    python benchmarks/tradeoff.py --shadows 64 --device cuda
"""
from __future__ import annotations

import argparse
import time

import torch

from leaklab.data import load_dataset
from leaklab.federated import train_federated
from leaklab.games import train_stacked
from leaklab.models import build_model


def timed(fn):
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--shadows", type=int, default=16)
    p.add_argument("--train-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-steps", type=int, default=3)
    p.add_argument("--defense", default="dp:clip=1,noise=1")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: small models)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=(args.hidden,), seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    members = torch.argsort(torch.rand(args.shadows, len(data), generator=gen), 1)[:, :args.train_size]
    print(f"device {args.device}, {torch.get_num_threads()} CPU thread(s), torch {torch.__version__}")

    def shadows(engine):
        return train_stacked(model, data, members, steps=args.steps, seed=args.seed, engine=engine, device=args.device)

    shadows("batched")                                   # warm-up (first vmap call traces)
    t_vec, a = timed(lambda: shadows("batched"))
    t_loop, b = timed(lambda: shadows("loop"))
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"shadow models: {args.shadows} MLPs (hidden {args.hidden}) x {args.steps} steps on {args.dataset}")
    print(f"  together (vmap)      {t_vec:8.2f} s")
    print(f"  one after another    {t_loop:8.2f} s")
    print(f"  ratio together/loop  {t_vec / t_loop:8.3f}   (max parameter difference {diff:.1e})")

    def federated(engine):
        m = build_model("mlp", data.input_shape, data.num_classes, hidden=(64,), seed=args.seed)
        return train_federated(m, data, clients=args.clients, rounds=args.rounds, protocol="fedavg",
                               local_steps=args.local_steps, batch_size=16, defense=args.defense, engine=engine,
                               seed=args.seed, device=args.device, progress=False)

    federated("batched")
    t_vec, a = timed(lambda: federated("batched"))
    t_loop, b = timed(lambda: federated("loop"))
    print(f"federated: {args.clients} clients, FedAvg {args.rounds} rounds x {args.local_steps} local steps, "
          f"defense {args.defense}")
    print(f"  together (vmap)      {t_vec:8.2f} s   accuracy {a.accuracy:.3f}")
    print(f"  one at a time        {t_loop:8.2f} s   accuracy {b.accuracy:.3f}")
    print(f"  ratio together/loop  {t_vec / t_loop:8.3f}")


if __name__ == "__main__":
    main()
