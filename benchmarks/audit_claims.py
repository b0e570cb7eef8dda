"""Benchmark: claim checks over many seeds, the tightness of the gradient audit, and its speed.

1. **Claims.** ``check_claim("dp:clip=1,noise=S", mechanism)`` over ``--seeds`` seeds
   (2000 trials each by default) for three mechanisms: the claim itself (correct), DP-SGD
   with half the claimed noise, and DP-SGD that skips clipping (same noise). Prints the
   share of seeds each was refuted in.
2. **Tightness.** ``audit_gradient`` at sigma 1 and 2 (2000 trials): the GDP fit's lower
   end, the held-out Clopper--Pearson bound and the accountant's epsilon, per seed.
3. **Speed.** 1000 canary trials: the batched path (:func:`leaklab.audit.gradient.canary_statistics`,
   one defense call per chunk of trials) against a loop of one defense call per trial,
   then the whole ``audit_gradient`` (both fits included), wall time; the machine's
   torch threads are printed beside it.

    python benchmarks/audit_claims.py               # 20 seeds
    python benchmarks/audit_claims.py --seeds 5     # a fast look
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

import leaklab
from leaklab.audit import audit_gradient, check_claim, gradient_canary
from leaklab.audit.gradient import canary_statistics
from leaklab.defenses import DPSGD
from leaklab.games import default_model


class SkipsClipping(DPSGD):
    """DP-SGD that adds the claimed noise and forgets to clip."""

    def clipped(self, grads, dims):
        return grads


def claims(seeds: int, trials: int, sigma: float) -> None:
    claim = f"dp:clip=1,noise={sigma}"
    mechanisms = {"correct": None, "half noise": DPSGD(clip=1, noise=sigma / 2),
                  "skips clipping": SkipsClipping(clip=1, noise=sigma)}
    print(f"claim {claim}, {trials} trials per check, seeds 0..{seeds - 1}")
    for name, mech in mechanisms.items():
        t0 = time.perf_counter()
        res = [check_claim(claim, mech, trials=trials, seed=s) for s in range(seeds)]
        refuted = sum(r.refuted for r in res)
        lows = [r.evidence["epsilon_lower"] for r in res]
        print(f"  {name:15s} refuted in {refuted}/{seeds} ({refuted / seeds:.0%}); GDP epsilon_lower "
              f"min {min(lows):.2f} median {np.median(lows):.2f} max {max(lows):.2f} against claimed "
              f"{res[0].claimed_epsilon:.3f}; {time.perf_counter() - t0:.1f} s")


def tightness(seeds: int, trials: int) -> None:
    for sigma in (1.0, 2.0):
        rows = [audit_gradient(defense=f"dp:clip=1,noise={sigma}", trials=trials, seed=s) for s in range(seeds)]
        ratios = [r.ratio for r in rows]
        print(f"sigma {sigma}: accountant (prv) {rows[0].accountant_epsilon:.3f}, exact {rows[0].exact_epsilon:.3f}; "
              f"GDP lower end: min {min(r.epsilon_lower for r in rows):.3f}, median "
              f"{np.median([r.epsilon_lower for r in rows]):.3f}; ratio min {min(ratios):.3f} median "
              f"{np.median(ratios):.3f}; held-out Clopper-Pearson median "
              f"{np.median([r.threshold.epsilon_lower for r in rows]):.3f}; seeds with ratio >= 0.7: "
              f"{sum(q >= 0.7 for q in ratios)}/{seeds}")


def speed(trials: int = 1000, repeats: int = 3) -> None:
    data = leaklab.load_dataset("diabetes")
    model = default_model(data, seed=0)
    x, y = data.x[:8], data.y[:8]
    c = gradient_canary(model, kind="dirac", norm=1.0, seed=0)
    d = DPSGD(clip=1.0, noise=1.0)

    def batched():
        canary_statistics(model, x, y, c, defense=d, trials=trials, seed=0)

    def loop():                                   # one defense call per trial
        canary_statistics(model, x, y, c, defense=d, trials=trials, seed=0, chunk=1)

    def whole():
        audit_gradient(defense="dp:clip=1,noise=1", trials=trials, seed=0)

    for f in (batched, loop, whole):              # warm-up: imports, the first vmap, the accountant
        f()
    times = {f.__name__: [] for f in (batched, loop, whole)}
    for _ in range(repeats):                      # alternate the sides, keep the median
        for f in (batched, loop, whole):
            t0 = time.perf_counter()
            f()
            times[f.__name__].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{trials} canary trials (torch threads {torch.get_num_threads()}, median of {repeats}): batched "
          f"{med['batched']:.3f} s, one defense call per trial {med['loop']:.3f} s, ratio "
          f"{med['loop'] / med['batched']:.1f}x; whole audit_gradient (trials, GDP fit, held-out threshold, "
          f"accountant) {med['whole']:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=2000)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    speed()
    claims(args.seeds, args.trials, 1.0)
    tightness(args.seeds, args.trials)


if __name__ == "__main__":
    main()
