"""Benchmark: defended releases and defended games, leaklab's batched path against a loop.

1. **DP-SGD releases.** ``T`` releases of a small ConvNet on 8x8 digits, each of a
   batch of ``B`` records, under DP-SGD (clip 1, noise multiplier 1): through
   :func:`leaklab.release.release` (every record of every trial in one
   ``torch.func.vmap`` call), and one release at a time with Opacus's per-sample
   machinery (``opacus.GradSampleModule`` for the per-record gradients, then
   ``DPOptimizer.pre_step``, which clips each record, sums, adds the noise and divides
   by the batch size). Before timing, both sides compute the same ``T`` releases with
   noise 0 and must agree to 1e-5 (with a clip bound that some records exceed and
   others do not).
2. **Games under each defense.** The attribute game on the diabetes data (sex,
   informed adversary, static) under every defense, played with the batched engine
   and with ``engine="loop"`` (ordinary autograd, one trial and, for DP-SGD, one
   record at a time) on the same seed; both wall times, their ratio and both AUROCs.
3. **A whole process.** ``python -m leaklab game attribute --dataset diabetes
   --defense dp:clip=1,noise=1 ...`` run as a subprocess: imports, data, the game and
   the report, beside the warm in-process time of the same game.

Timings are wall times on whatever the machine runs at the same moment; each pair is
measured side by side, alternating the two sides, and the median of ``--repeats`` is kept.

    python benchmarks/defenses.py                 # 256 DP releases, 2000 game trials
    python benchmarks/defenses.py --quick         # a fast look (32 releases, 200 trials)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F

import leaklab
from leaklab.defenses import DPSGD, parse_defense
from leaklab.games import play
from leaklab.release import release

#: The defenses of the game benchmark, at a moderate strength each.
GAME_DEFENSES = ("none", "prune:ratio=0.9", "sign", "noise:std=0.01", "dp:clip=1,noise=1",
                 "perturb:budget=0.5", "vib:beta=0.001")


# -- 1. DP-SGD releases against Opacus ------------------------------------------------------------

def _convnet(data, seed: int, device):
    return leaklab.build_model("convnet", data.input_shape, data.num_classes, width=8, depth=2,
                               seed=seed, device=device)


class OpacusReleases:
    """One DP-SGD release at a time with Opacus: GradSampleModule, then DPOptimizer.pre_step."""

    def __init__(self, model: torch.nn.Module, *, clip: float, noise: float, batch_size: int, seed: int):
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        self.gsm = GradSampleModule(model, loss_reduction="mean")
        self.opt = DPOptimizer(torch.optim.SGD(self.gsm.parameters(), lr=0.1), noise_multiplier=noise,
                               max_grad_norm=clip, expected_batch_size=batch_size, loss_reduction="mean",
                               generator=torch.Generator(device=next(model.parameters()).device).manual_seed(seed))
        self.names = [k for k, _ in model.named_parameters()]

    def __call__(self, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, list[torch.Tensor]] = {k: [] for k in self.names}
        for x, y in zip(xs, ys):
            self.opt.zero_grad(set_to_none=True)
            F.cross_entropy(self.gsm(x), y).backward()
            self.opt.pre_step()                   # clip each record, sum, add noise, divide by B
            for k, p in zip(self.names, self.gsm.parameters()):
                out[k].append(p.grad.detach().clone())
        return {k: torch.stack(v) for k, v in out.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def bench_dp_releases(args, device) -> None:
    data = leaklab.load_dataset("digits")
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randint(len(data), (args.trials, args.batch_size), generator=gen)
    xs, ys = data.x[idx].to(device), data.y[idx].to(device)
    model = _convnet(data, args.seed, device)

    # agreement with noise 0, at a clip bound that some records exceed and others do not
    from leaklab.fl import per_sample_gradients
    per = per_sample_gradients(model, xs[0], ys[0])
    norms = torch.sqrt(sum(v.reshape(v.shape[0], -1).pow(2).sum(1) for v in per.values()))
    clip0 = float(norms.median())
    ours = release(model, xs, ys, defense=DPSGD(clip=clip0, noise=0.0))
    theirs = OpacusReleases(_convnet(data, args.seed, device), clip=clip0, noise=0.0,
                            batch_size=args.batch_size, seed=args.seed)(xs, ys)
    diff = max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
    scale = max(float(v.abs().max()) for v in ours.values())
    print(f"[1] DP-SGD releases of a ConvNet (width 8, depth 2, {sum(p.numel() for p in model.parameters())} "
          f"parameters) on 8x8 digits: T = {args.trials} releases of B = {args.batch_size} records, device {device}")
    print(f"    agreement with Opacus at noise 0 (clip {clip0:.3f}, the median record norm of trial 0): "
          f"max |difference| {diff:.2e} over entries up to {scale:.2e} -> "
          f"{'agree' if diff <= 1e-5 else 'DISAGREE'} (tolerance 1e-5)")
    if diff > 1e-5:
        raise SystemExit("leaklab's DP-SGD release disagrees with Opacus's; timings would compare different things")

    defense = parse_defense("dp:clip=1,noise=1")
    opacus = OpacusReleases(_convnet(data, args.seed, device), clip=1.0, noise=1.0,
                            batch_size=args.batch_size, seed=args.seed)
    g = torch.Generator(device=device).manual_seed(args.seed)
    # warm-up: the first vmap call traces the model; Opacus's first call registers its hooks
    release(model, xs[:2], ys[:2], defense=defense, generator=g)
    opacus(xs[:2], ys[:2])
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t_ours.append(_timed(lambda: release(model, xs, ys, defense=defense, generator=g), device))
        t_theirs.append(_timed(lambda: opacus(xs, ys), device))
    a, b = statistics.median(t_ours), statistics.median(t_theirs)
    ratio = a / b
    print(f"    dp:clip=1,noise=1, warm, median of {args.repeats}: leaklab batched {a:.3f} s, "
          f"Opacus one at a time {b:.3f} s")
    print(f"    time ratio leaklab / Opacus: {ratio:.3f} (target <= 0.2 on CPU: "
          f"{'met' if ratio <= 0.2 else 'NOT met'}); speed-up {1 / ratio:.1f}x")


# -- 2. games under each defense, batched against loop ----------------------------------------------

def _game(spec: str, engine: str, trials: int, args, device):
    t = time.perf_counter()
    res = play("attribute", "diabetes", attribute="sex", adversary="informed", batch_size=args.game_batch,
               trials=trials, defense=spec, adaptive=False, engine=engine, device=device, seed=args.seed,
               progress=False)
    return time.perf_counter() - t, res.score().auroc


def bench_games(args, device) -> float:
    print(f"[2] attribute game on diabetes (sex), informed static adversary, batch size {args.game_batch}, "
          f"1 round, seed {args.seed}; batched engine on {args.game_trials} trials, loop on "
          f"{args.loop_trials} (per-trial time scaled to {args.game_trials} when fewer); warm, whole games")
    play("attribute", "diabetes", adversary="informed", trials=4, defense="dp:clip=1,noise=1",
         device=device, progress=False)                                  # warm-up: imports, vmap tracing
    print(f"    {'defense':<20} {'batched s':>10} {'loop s':>10} {'ratio':>7} {'AUROC batched':>14} {'AUROC loop':>11}")
    dp_batched = float("nan")
    for spec in args.defenses:
        tb, ab = _game(spec, "batched", args.game_trials, args, device)
        tl, al = _game(spec, "loop", args.loop_trials, args, device)
        if args.loop_trials != args.game_trials:
            _, ab_same = _game(spec, "batched", args.loop_trials, args, device)
        else:
            ab_same = ab
        tl_all = tl * args.game_trials / args.loop_trials
        if spec == "dp:clip=1,noise=1":
            dp_batched = tb
        note = "" if args.loop_trials == args.game_trials else f"  (batched on the loop's trials: {ab_same:.3f})"
        print(f"    {spec:<20} {tb:>10.2f} {tl_all:>10.2f} {tb / tl_all:>7.3f} {ab:>14.3f} {al:>11.3f}{note}")
    return dp_batched


# -- 3. the whole process ---------------------------------------------------------------------------

def bench_process(args, device, warm: float) -> None:
    help_text = subprocess.run([sys.executable, "-m", "leaklab", "game", "--help"], capture_output=True,
                               text=True).stdout
    if "--defense" not in help_text:
        print("[3] whole process: skipped; this version of the command line has no `leaklab game --defense`")
        return
    if warm != warm:                      # the games part was skipped: time the same game warm here
        play("attribute", "diabetes", adversary="informed", trials=4, defense="dp:clip=1,noise=1",
             device=device, progress=False)
        warm, _ = _game("dp:clip=1,noise=1", "batched", args.game_trials, args, device)
    cmd = [sys.executable, "-m", "leaklab", "game", "attribute", "--dataset", "diabetes", "--attribute", "sex",
           "--adversary", "informed", "--batch-size", str(args.game_batch), "--trials", str(args.game_trials),
           "--defense", "dp:clip=1,noise=1", "--seed", str(args.seed), "--device", str(device), "--json"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        print(f"[3] whole process: `{' '.join(cmd[1:])}` failed (exit {done.returncode}): "
              f"{done.stderr.strip().splitlines()[-1:]}")
        return
    try:
        auroc = json.loads(done.stdout)["results"][0]["auroc"]
        auroc_text = f", AUROC {auroc:.3f}"
    except (ValueError, KeyError, IndexError, TypeError):
        auroc_text = ""
    print(f"[3] whole process `python -m leaklab game attribute --dataset diabetes --defense dp:clip=1,noise=1 "
          f"--adversary informed --batch-size {args.game_batch} --trials {args.game_trials}`: {wall:.2f} s{auroc_text} "
          f"(the same game warm in this process: {warm:.2f} s; the rest is start-up: imports, data, first tracing)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=256, help="DP-SGD releases T (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="records per DP-SGD release (default 8)")
    p.add_argument("--game-trials", type=int, default=2000, help="trials per game (default 2000)")
    p.add_argument("--loop-trials", type=int, default=None,
                   help="trials for the loop engine (default: --game-trials); fewer are scaled per trial")
    p.add_argument("--game-batch", type=int, default=4, help="batch size in the games (default 4)")
    p.add_argument("--defenses", default=";".join(GAME_DEFENSES),
                   help="defense specs for the games, separated by ';' (default: one of each)")
    p.add_argument("--repeats", type=int, default=3, help="timings per side of the DP benchmark (median kept)")
    p.add_argument("--quick", action="store_true", help="32 releases, 200 game trials, 1 repeat")
    p.add_argument("--skip", default="", help="parts to skip, comma-separated: dp, games, process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.game_trials, args.repeats = 32, 200, 1
    args.loop_trials = args.loop_trials or args.game_trials
    args.defenses = [s.strip() for s in args.defenses.split(";") if s.strip()]
    for spec in args.defenses:
        parse_defense(spec)                                  # a bad spec fails here, before any timing
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    device = leaklab.get_device(args.device)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")   # Opacus on a first layer
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if "dp" not in skip:
        bench_dp_releases(args, device)
    warm = float("nan")
    if "games" not in skip:
        warm = bench_games(args, device)
    if "process" not in skip:
        bench_process(args, device, warm)


if __name__ == "__main__":
    main()
