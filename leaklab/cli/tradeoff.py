"""``leaklab tradeoff --dataset NAME --defense SPEC[;SPEC...] --attack A[,A...] --out DIR``: the trade-off sweep."""
from __future__ import annotations

from pathlib import Path

from .common import JSON_NOTE, check_out_dir, positive_int, print_json


def _attacks(text: str) -> list[str]:
    import argparse

    from ..metrics.privacy_loss import ATTACKS

    vals = [t.strip() for t in text.split(",")]
    bad = [v for v in vals if v not in ATTACKS]
    if not vals or bad:
        raise argparse.ArgumentTypeError(f"expected attacks among {', '.join(ATTACKS)} (comma-separated, no empty "
                                         f"item), got {text!r}")
    twice = sorted({v for v in vals if vals.count(v) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} given twice in {text!r}; list each attack once")
    return vals


def register(sub) -> None:
    p = sub.add_parser(
        "tradeoff", help="sweep defenses' strength: test accuracy against privacy loss",
        description="Train a model federatedly under each defense at each strength, attack its releases "
                    "(reconstruction, membership, tracing), and write one JSON-lines record per "
                    "(defense, strength, attack, seed) to DIR/tradeoff.jsonl. Resumable: run it again "
                    "with the same options and it continues where it stopped. Draws DIR/tradeoff.png and "
                    "prints each defense's best accuracy at equal privacy loss.")
    p.add_argument("--dataset", required=True, help="a dataset name (see 'leaklab data list')")
    p.add_argument("--defense", required=True, metavar="SPEC[;SPEC...]",
                   help="defenses to sweep: NAME (its default grid) or NAME:KEY=V1/V2/V3[,OTHER=X], "
                        "separated by ';' (e.g. 'dp;prune:ratio=0.5/0.9;sign')")
    p.add_argument("--attack", type=_attacks, default=["reconstruction", "membership", "tracing"],
                   metavar="LIST", help="reconstruction,membership,tracing (default: all three)")
    p.add_argument("--adaptive", action="store_true", help="the adversary knows and simulates the defense")
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds per point (default 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of tradeoff.jsonl and tradeoff.png")
    p.add_argument("--levels", default="0.1,0.25,0.5,0.75", metavar="LIST",
                   help="privacy-loss levels of the comparison (default 0.1,0.25,0.5,0.75)")
    p.add_argument("--gap", metavar="NAME", default=None,
                   help="also print defense NAME's accuracy minus the best other defense's at equal privacy "
                        "loss, paired per seed (e.g. --gap spn)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    p.add_argument("--json", action="store_true",
                   help="print the comparison as one JSON object: points, one per (defense, strength, attack, "
                        "seed), with accuracy (test accuracy of the federated model), privacy_loss (0: the "
                        "release carries nothing, 1: the attack succeeds fully), privacy_loss_null (its 95%% "
                        "interval when the release carries nothing), and for DP-SGD epsilon_attacked (the "
                        "attacked release: target present, sample rate 1; add/remove for reconstruction, "
                        "replace-one for membership and tracing) and epsilon_training (the training: Poisson "
                        "add/remove at q = batch / shard, rounds x local steps; both RDP at delta 1e-5; null "
                        "for other defenses); comparison: the best accuracy at each --levels loss (null: "
                        "unreachable) with its 95%% CI across seeds (null with one seed). " + JSON_NOTE)
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=cmd_tradeoff)


def cmd_tradeoff(args) -> int:
    import matplotlib

    from ..data import dataset_info
    from ..runtime import get_device
    from ..tradeoff import (RECORDS_FILE, compare_at_equal_loss, expand_defenses, gap_at_equal_loss, json_key,
                            plot_tradeoff, settings_for, sweep_tradeoff)

    try:
        levels = [float(t) for t in args.levels.split(",")]
    except ValueError:
        raise ValueError(f"--levels must be comma-separated numbers in [0, 1] with no empty item, got "
                         f"{args.levels!r}") from None
    if not levels or any(not 0 <= v <= 1 for v in levels):
        raise ValueError(f"--levels must be comma-separated numbers in [0, 1], got {args.levels!r}")
    if len(set(levels)) != len(levels):
        raise ValueError(f"--levels lists a level twice ({args.levels!r}); list each once")
    info = dataset_info(args.dataset)
    if "reconstruction" in args.attack and info.modality != "image":
        raise ValueError(f"--attack reconstruction needs images; dataset {info.name!r} holds {info.modality} "
                         "records (use --attack membership,tracing)")
    points = expand_defenses(args.defense)                 # check the specs before any work
    if args.gap is not None and args.gap not in {f for f, _, _, _ in points}:
        raise ValueError(f"--gap {args.gap!r} is not among the defenses swept "
                         f"({', '.join(sorted({f for f, _, _, _ in points}))})")
    from ..validate import check_sweep_plan

    check_out_dir(args.out)                                # before any work, naming --out
    check_sweep_plan(args.out, RECORDS_FILE, points=len(points), seeds=args.seeds, attacks=len(args.attack),
                     settings=settings_for(), flag="--out")
    device = get_device(args.device)
    records = sweep_tradeoff(args.dataset, args.defense, attacks=args.attack, adaptive=args.adaptive,
                             seeds=args.seeds, out=args.out, device=device, progress=args.progress)
    wanted = {json_key(d.config()) for _, _, _, d in expand_defenses(args.defense)}
    records = [r for r in records if json_key(r.config["defense"]) in wanted and r.config["attack"] in args.attack
               and r.config["adaptive"] == args.adaptive and r.seed < args.seeds and r.config["dataset"] == info.name]
    rows = compare_at_equal_loss(records, levels=levels)
    gaps = gap_at_equal_loss(records, args.gap, levels=levels) if args.gap else None
    matplotlib.use("Agg")
    fig = plot_tradeoff(records)
    png = Path(args.out) / "tradeoff.png"
    fig.savefig(png, dpi=120)
    files = [str(Path(args.out) / RECORDS_FILE), str(png)]
    if args.json:
        print_json({"dataset": info.name, "defense": args.defense, "attacks": args.attack,
                    "adaptive": args.adaptive, "seeds": args.seeds, "records": len(records),
                    "points": [{"defense": r.config["defense"], "attack": r.config["attack"], "seed": r.seed,
                                "accuracy": r.numbers["accuracy"], "privacy_loss": r.numbers["privacy_loss"],
                                "privacy_loss_null": r.numbers.get("privacy_loss_null"),
                                "epsilon_training": r.numbers.get("epsilon_training"),
                                "epsilon_attacked": r.numbers.get("epsilon_attacked")} for r in records],
                    "comparison": rows, **({"gap": {"defense": args.gap, "rows": gaps}} if gaps else {}),
                    "files": files})
        return 0
    print(f"trade-off on {info.name}: {len(records)} records, {args.seeds} seed(s), "
          f"{'adaptive' if args.adaptive else 'static'} adversary")
    print("privacy loss: 0 when the release carries nothing, with its 95% null interval; epsilon (DP-SGD): of the "
          "attacked release (target present, q = 1) and of the training (Poisson add/remove at q = batch/shard, "
          "applied to fixed-size batches)")
    print(f"{'attack':<15} {'defense':<8} {'strength':>10} {'privacy loss':>12} {'null 95%':>14} {'accuracy':>8}  "
          "epsilon attacked / training")

    def fmt(e):
        return f"{e}" if isinstance(e, str) else f"{e:.3g}"

    for r in sorted(records, key=lambda r: (r.config["attack"], r.config["family"], r.numbers["privacy_loss"])):
        n = r.numbers
        e = "" if n.get("epsilon_attacked") is None else \
            f"{fmt(n['epsilon_attacked'])} / {fmt(n['epsilon_training'])} ({n['epsilon_training_accountant']})"
        null = n.get("privacy_loss_null")
        null = "" if null is None else f"[{null[0]:.3f}, {null[1]:.3f}]"
        strength = "" if r.config["strength"] is None else f"{r.config['strength_key']}={r.config['strength']:g}"
        print(f"{r.config['attack']:<15} {r.config['family']:<8} {strength:>10} {n['privacy_loss']:>12.3f} "
              f"{null:>14} {n['accuracy']:>8.3f}  {e}  seed {r.seed}")
    print("\nbest accuracy at equal privacy loss (95% CI across seeds):")
    for row in rows:
        if row["accuracy"] is None:
            val = "unreachable"
        elif row["ci"] is None:
            val = f"{row['accuracy']:.3f}"
        else:
            val = f"{row['accuracy']:.3f} [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]"
        print(f"  {row['attack']:<15} loss <= {row['privacy_loss']:<5g} {row['defense']:<8} {val}")
    if gaps:
        print(f"\n{args.gap} minus the best other defense at equal privacy loss (paired per seed, 95% CI):")
        for g in gaps:
            if g["gap"] is None:
                val = "no comparison (one side loses more at every point)"
            else:
                ci = "" if g["ci"] is None else f" [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]"
                val = f"{g['gap']:+.3f}{ci} vs {g['best_baseline']} ({g['seeds']} seeds)"
            print(f"  {g['attack']:<15} loss <= {g['privacy_loss']:<5g} {val}")
    for f in files:
        print(f"wrote {f}")
    return 0
