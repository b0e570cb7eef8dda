"""Batched analytic and R-GAP attacks against one trial at a time, side by side in one run.

Every trial attacks the FedSGD gradient of one 8x8 digit (batch 1) on its own
freshly initialised model (``mlp`` for the analytic attack, ``rgapnet`` for R-GAP).
Both ways see exactly the same models and gradients:

* loop: the attack is called once per trial (``T = 1`` each time);
* batched: one call with all ``T`` trials stacked on the leading dimension.

It prints wall time per trial (best of three runs after a warm-up), the speed ratio and the worst MSE of both (the
targets: MSE below 1e-6 for both attacks). Run by hand::

    python benchmarks/linear_attacks.py                 # CPU, 64 trials
    python benchmarks/linear_attacks.py --device cuda --trials 512
"""
from __future__ import annotations

import argparse
import time

import torch

import leaklab
from leaklab.attacks import get_attack
from leaklab.fl import batch_gradients
from leaklab.models import build_model


def setup(model_name: str, trials: int, device, **options):
    digits = leaklab.load_dataset("digits")
    xs, ys = digits.x[:trials, None].to(device), digits.y[:trials, None].to(device)
    models = [build_model(model_name, digits.input_shape, 10, seed=t, device=device, **options)
              for t in range(trials)]
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models])
              for k, _ in models[0].named_parameters()}
    grads = batch_gradients(models[0], xs, ys, params=params, params_batched=True)
    return models[0], params, grads, xs


def compare(name: str, model, params, grads, xs, device, repeats: int = 3) -> None:
    attack = get_attack(name)
    kw = dict(input_shape=tuple(xs.shape[2:]), num_classes=10, batch_size=1, device=device, seed=0,
              progress=False)
    T = xs.shape[0]

    def run_loop():
        return torch.cat([attack(model, {k: v[t:t + 1] for k, v in params.items()},
                                 {k: v[t:t + 1] for k, v in grads.items()}, **kw).x for t in range(T)])

    def run_batched():
        return attack(model, params, grads, **kw).x

    def best_of(fn, repeats):
        fn()                                             # warm-up (first call per shape is slower)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return out, min(times)

    loop, t_loop = best_of(run_loop, repeats)
    batched, t_batch = best_of(run_batched, repeats)
    mse = lambda x: float(((x - xs) ** 2).flatten(1).mean(1).max())
    print(f"{name:9s} trials {T:4d}  loop {1e3 * t_loop / T:8.2f} ms/trial  batched {1e3 * t_batch / T:8.2f} ms/trial"
          f"  speed-up x{t_loop / t_batch:5.1f}  worst MSE loop {mse(loop):.1e} batched {mse(batched):.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = leaklab.get_device(args.device)
    print(f"device {leaklab.describe_device(device)}, torch {torch.__version__}")
    compare("analytic", *setup("mlp", args.trials, device), device)
    compare("rgap", *setup("rgapnet", args.trials, device), device)


if __name__ == "__main__":
    main()
