"""``leaklab game GAME --dataset NAME ...``: play an inference game over batch sizes and rounds."""
from __future__ import annotations

from pathlib import Path

from .common import (add_defense_arguments, available_memory, check_out_dir, defense_json, gigabytes, int_list,
                     positive_int, print_json)

#: Above this many rounds in all (batch sizes x the largest --rounds), a short probe estimates the time.
PROBE_ABOVE = 200

GAME_NAMES = ("attribute", "property", "distribution", "user", "membership", "tracing")


def register(sub) -> None:
    p = sub.add_parser(
        "game", help="play an inference game (attribute, property, distribution, user, membership, tracing)",
        description="Play an inference game against released gradients and report the adversary's "
                    "AUROC (with a 95%% confidence interval) and accuracy for each batch size and "
                    "number of observed rounds.")
    p.add_argument("game", choices=GAME_NAMES, help="the secret to infer")
    p.add_argument("--dataset", required=True, help="a dataset that declares the game (see 'leaklab data list')")
    p.add_argument("--attribute", help="the sensitive attribute (default: the dataset's first)")
    p.add_argument("--batch-size", type=int_list, default=[1], metavar="LIST",
                   help="batch sizes, comma-separated (default 1)")
    p.add_argument("--rounds", type=int_list, default=[1], metavar="LIST",
                   help="numbers of observed rounds, comma-separated (default 1)")
    p.add_argument("--adversary", choices=("informed", "combined", "phi", "shadow", "alignment", "loss", "lira",
                                           "lira-offline"), default=None,
                   help="informed: knows the target's other features (attribute game, tabular data); "
                        "phi: those features alone, no gradient (the baseline); combined: informed "
                        "with the phi baseline as its prior; shadow: a classifier trained on "
                        "simulated gradients (default of the first four games); membership and tracing: "
                        "alignment, loss, lira, lira-offline (default: the strongest for what is observed)")
    from .membership import add_arguments
    add_arguments(p)
    p.add_argument("--trials", type=positive_int, default=500, help="independent trials per setting (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    p.add_argument("--out", metavar="DIR", help="write DIR/game_<game>_<dataset>.png and .jsonl")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    add_defense_arguments(p)
    p.set_defaults(func=cmd_game)


def cmd_game(args) -> int:
    from ..data import dataset_info, load_dataset
    from ..games import make_adversary, make_game, sweep
    from ..runtime import get_device

    if args.trials < 2:
        raise ValueError(f"--trials must be at least 2, got {args.trials}")
    from .membership import cmd_membership_tracing
    if args.game in ("membership", "tracing"):
        return cmd_membership_tracing(args)
    args.adversary = args.adversary or "shadow"
    device = get_device(args.device)
    info = dataset_info(args.dataset)
    # check everything before any data is loaded or downloaded
    game = make_game(args.game, info, attribute=args.attribute)
    make_adversary(args.adversary).check(game, info)
    check_out_dir(args.out)
    data = load_dataset(args.dataset)
    _check_resources(args, game, data, device)
    records = sweep(args.game, data, attribute=game.attribute, adversary=args.adversary,
                    batch_sizes=args.batch_size, rounds=args.rounds, trials=args.trials,
                    seed=args.seed, device=device, progress=args.progress,
                    defense=args.defense, adaptive=args.adaptive)
    results = []
    for r in records:
        row = {"batch_size": r.config["batch_size"], "rounds": r.config["rounds"],
               "auroc": r.numbers["auroc"], "auroc_ci": list(r.numbers["auroc_ci"]),
               "accuracy": r.numbers["accuracy"], "advantage": r.numbers["advantage"]}
        if "baseline_auroc" in r.numbers:
            row.update(baseline_auroc=r.numbers["baseline_auroc"],
                       baseline_auroc_ci=list(r.numbers["baseline_auroc_ci"]),
                       baseline_accuracy=r.numbers["baseline_accuracy"],
                       gain_over_phi=r.numbers["gain_over_phi"],
                       gain_over_phi_ci=list(r.numbers.get("gain_over_phi_ci") or []))
        results.append(row)
    baseline = any("baseline_auroc" in r for r in results)
    out = {"game": args.game, "dataset": info.name, "modality": info.modality,
           "attribute": game.attribute, "adversary": args.adversary, "trials": args.trials,
           "seed": args.seed, "device": str(device),
           **defense_json(args.defense, args.adaptive, steps=max(args.rounds)), "results": results}
    if "epsilon_replace" in out and args.game == "attribute":
        # the attribute game's two worlds differ in one record's value (the target's attribute),
        # not by one record added or removed: its epsilon is the replace-one epsilon
        out["game_epsilon"] = out["epsilon_replace"]
        out["game_neighbours"] = "replace one record"
    elif "epsilon_replace" in out:
        out["game_neighbours"] = ("the secret changes several records of the batch: a record-level "
                                  "epsilon does not bound this game")
    if baseline:
        out["baseline"] = ("phi: the target's other features and label alone, no gradient "
                           "(a classifier fitted on the auxiliary records); leakage is the gain over it")
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        from ..games import plot_sweep
        from ..results import write_records

        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"game_{args.game}_{info.name}"
        lines = stem.with_suffix(".jsonl")
        if lines.exists():
            lines.unlink()
        write_records(lines, records)
        fig = plot_sweep(records)
        fig.savefig(stem.with_suffix(".png"), dpi=120)
        out["files"] = [str(stem.with_suffix(".png")), str(lines)]
    if args.json:
        print_json(out)
        return 0
    what = f" ({game.attribute})" if game.attribute else ""
    print(f"{args.game} game{what} on {info.name} [{info.modality}], {args.adversary} adversary, "
          f"{args.trials} trials, seed {args.seed}")
    if args.defense is not None:
        dj = defense_json(args.defense, args.adaptive, steps=max(args.rounds))
        eps = ""
        if "epsilon" in dj:
            how = (f"at delta {dj['delta']:g} ({dj['accountant']}, {max(args.rounds)} observed release(s), "
                   f"sample rate 1)")
            eps = (f", epsilon {dj['epsilon_replace']:.3g} for this game's neighbours (one record's attribute "
                   f"changed) {how}; {dj['epsilon']:.3g} for adding or removing a record"
                   if args.game == "attribute" else
                   f", epsilon {dj['epsilon_replace']:.3g} (one record changed) or {dj['epsilon']:.3g} (one added "
                   f"or removed) {how}: the secret changes several records, which neither bounds")
        print(f"defense {args.defense.spec()}, {'adaptive' if args.adaptive else 'static'} adversary{eps}")
    head = f"{'batch':>6} {'rounds':>6} {'AUROC':>7}  {'95% CI':<15} {'accuracy':>8}"
    if baseline:
        head += f"  {'phi AUROC':>9}  {'95% CI':<15} {'gain':>6}"
    print(head)
    for r in results:
        lo, hi = r["auroc_ci"]
        line = f"{r['batch_size']:>6} {r['rounds']:>6} {r['auroc']:>7.3f}  [{lo:.3f}, {hi:.3f}] {r['accuracy']:>8.3f}"
        if "baseline_auroc" in r:
            blo, bhi = r["baseline_auroc_ci"]
            line += f"  {r['baseline_auroc']:>9.3f}  [{blo:.3f}, {bhi:.3f}] {r['gain_over_phi']:>+6.3f}"
        print(line)
    if baseline:
        print("phi AUROC: the target's other features and label alone (no gradient); "
              "gain: AUROC minus phi AUROC, the leakage of the release")
    for f in out.get("files", []):
        print(f"wrote {f}")
    return 0


def _check_resources(args, game, data, device) -> None:
    """Refuse up front a run whose scores cannot fit in memory; estimate the time of a long one.

    Every observed round keeps one score per trial and secret value (float64) until the
    end; the refusal names the largest ``--rounds`` that fits. Above ``PROBE_ABOVE``
    rounds in all, the game is played for 1 and for 3 rounds at the largest batch
    size, and the difference (the cost of a round, without the adversary's one-off
    preparation) times the rounds gives the estimate printed on stderr.
    """
    import sys
    import time

    from ..games import play

    top = max(args.rounds)
    secrets = max(len(game.secret_names(data)), 2)
    per_round = args.trials * secrets * 8 * 3           # the scores, their stack and the scoring's copies
    free = available_memory(device)
    if free is not None and top * per_round > 0.5 * free:
        fit = max(int(0.5 * free // per_round), 0)
        raise ValueError(f"--rounds {top} x --trials {args.trials} keeps about {gigabytes(top * per_round)} of "
                         f"scores, more than half the {gigabytes(free)} free; use --rounds {fit} or fewer "
                         f"(or fewer --trials)")
    total = top * len(args.batch_size)
    if total <= PROBE_ABOVE:
        return
    options = dict(attribute=game.attribute, adversary=args.adversary, batch_size=max(args.batch_size),
                   trials=args.trials, seed=args.seed, device=device, progress=False, defense=args.defense,
                   adaptive=args.adaptive)
    t0 = time.perf_counter()
    play(args.game, data, rounds=1, **options)
    t1 = time.perf_counter()
    play(args.game, data, rounds=3, **options)
    t3 = time.perf_counter()
    per = max((t3 - t1) - (t1 - t0), 0.0) / 2
    print(f"note: {total} rounds in all; a probe took {per:.2g} s per round, so expect about "
          f"{_duration(per * total)} (--progress shows the time left)", file=sys.stderr)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
