"""Benchmark: the batched game engine against a plain loop of the same game.

Plays the attribute game on the diabetes data (sensitive attribute sex, informed
adversary, batch size 16) twice with the same seed: once with the batched engine
(every trial's gradients from one ``torch.func.vmap`` call) and once with
``engine="loop"``, which computes each trial's gradients (the challenger's release
and the adversary's candidate gradients) one at a time with ordinary autograd.
Everything else, the draws, the training between rounds and the scoring, is the
same code. Prints both wall times, their ratio and both AUROCs.

    python benchmarks/games.py                      # 20000 trials, the loop on all of them
    python benchmarks/games.py --loop-trials 2000   # the loop on a subset, extrapolated per trial
    python benchmarks/games.py --processes 5        # median of 5 whole-process runs (default 3)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from leaklab.games import play


def run(engine: str, trials: int, args) -> tuple[float, float]:
    start = time.perf_counter()
    res = play("attribute", "diabetes", attribute="sex", adversary="informed",
               batch_size=args.batch_size, rounds=args.rounds, trials=trials, engine=engine,
               device=args.device, seed=args.seed, progress=False)
    return time.perf_counter() - start, res.score().auroc


def run_process(trials: int, args) -> tuple[float, float]:
    """Wall time and AUROC of one ``leaklab game`` process."""
    cmd = [sys.executable, "-m", "leaklab", "game", "attribute", "--dataset", "diabetes", "--attribute", "sex",
           "--adversary", "informed", "--batch-size", str(args.batch_size), "--rounds", str(args.rounds),
           "--trials", str(trials), "--seed", str(args.seed), "--device", args.device, "--json"]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return wall, json.loads(out.stdout)["results"][0]["auroc"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20000)
    p.add_argument("--loop-trials", type=int, default=None,
                   help="trials for the plain loop (default: --trials); fewer are timed and extrapolated")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=3, help="whole-process runs, median taken (default 3)")
    args = p.parse_args(argv)
    loop_trials = args.loop_trials or args.trials

    procs = [run_process(args.trials, args) for _ in range(args.processes)]
    t_proc = statistics.median(w for w, _ in procs)

    play("attribute", "diabetes", adversary="informed", trials=8, progress=False)  # warm-up (imports, vmap)
    t_batched, auc_batched = run("batched", args.trials, args)
    t_loop, auc_loop = run("loop", loop_trials, args)
    t_loop_all = t_loop * args.trials / loop_trials
    extrapolated = loop_trials != args.trials

    print(f"attribute game, diabetes (sex), informed adversary, batch size {args.batch_size}, "
          f"{args.rounds} round(s), seed {args.seed}, device {args.device}; wall times of whole games "
          f"(draws, training, releases, adversary, scoring) after a warm-up")
    print(f"batched engine: {args.trials} trials in {t_batched:.2f} s, AUROC {auc_batched:.4f}")
    if extrapolated:
        _, auc_same = run("batched", loop_trials, args)
        print(f"plain loop:     {loop_trials} trials in {t_loop:.2f} s, AUROC {auc_loop:.4f} "
              f"(batched engine on the same {loop_trials} trials: AUROC {auc_same:.4f}); "
              f"extrapolated per trial to {args.trials} trials: {t_loop_all:.2f} s")
    else:
        print(f"plain loop:     {args.trials} trials in {t_loop:.2f} s, AUROC {auc_loop:.4f}")
    print(f"whole process:  {args.trials} trials in {t_proc:.2f} s (median of {args.processes}: "
          f"{', '.join(f'{w:.2f}' for w, _ in procs)} s), AUROC {procs[0][1]:.4f}")
    ratio = t_batched / t_loop_all
    print(f"time ratio batched / loop, warm engine: {ratio:.3f} (target <= 0.2: "
          f"{'met' if ratio <= 0.2 else 'NOT met'}); speed-up {1 / ratio:.1f}x")
    ratio_p = t_proc / t_loop_all
    print(f"time ratio whole process / loop: {ratio_p:.3f} (target <= 0.15: "
          f"{'met' if ratio_p <= 0.15 else 'NOT met'}); speed-up {1 / ratio_p:.1f}x")
    diff = abs(auc_batched - auc_loop)
    print(f"AUROC difference: {diff:.4f} (target <= 0.05: {'met' if diff <= 0.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
