"""``leaklab audit --game attribute --dataset NAME ...``: an empirical epsilon from a canary."""
from __future__ import annotations

import math
import sys

from .common import (JSON_NOTE, add_defense_arguments, check_adaptive, check_game_plan, fraction, positive_int,
                     print_json)

#: What --help says of each field of --json (and of the printed summary).
OUTPUT_FIELDS = (
    "Output (--json fields): epsilon_lower: the audit's lower confidence bound on the epsilon of the attribute game "
    "at --delta (with confidence 'level', threshold test, threshold chosen on a held-out half of the trials, "
    "Clopper-Pearson bounds on its error rates; 0 when the data reject nothing); epsilon_point: the same formula "
    "with the observed error rates (no guarantee; infinite, so null with epsilon_point_infinite, when an error "
    "rate is 0); counts (tp, fn, fp, tn of the held-out half) and threshold; auroc: the informed adversary's AUROC "
    "on all trials; canary, canary_exposure, canary_label: the target record. With a DP-SGD defense, three "
    "epsilons at --delta from the defense's noise multiplier: accountant_epsilon: the RDP accountant's epsilon "
    "for this game's neighbours (one record's attribute changed, replace-one: sensitivity 2C, sample rate 1, "
    "--rounds steps), the claim the audit checks; ratio = epsilon_lower / accountant_epsilon (1 is a tight "
    "audit); membership_epsilon: the same accountant for adding or removing one record (sensitivity C), shown for "
    "comparison, it does not bound this game; gdp_epsilon: the exact epsilon of the Gaussian mechanism of the "
    "attribute change, 2 sqrt(rounds) / noise -GDP. These four fields are "
    "absent for other defenses. " + JSON_NOTE + ".")


def register(sub) -> None:
    p = sub.add_parser(
        "audit", help="audit attribute privacy with a canary: an empirical lower bound on epsilon",
        description="Play the attribute game with a canary (a natural record or a crafted one) as the "
                    "target, with the informed adversary, and turn its scores into a lower confidence "
                    "bound on epsilon (threshold test, threshold chosen on a held-out half, "
                    "Clopper-Pearson). For DP-SGD the accountant's epsilon for the same game is printed "
                    "beside it. With --canary gradient: a white-box audit of one DP-SGD release with a "
                    "gradient canary (no --game), a mu-GDP fit beside the held-out bound, and --claim to "
                    "check a DP claim against the mechanism run.",
        epilog=OUTPUT_FIELDS)
    p.add_argument("--game", choices=("attribute",), help="the game audited (attribute; not with --canary gradient)")
    p.add_argument("--dataset", help="a tabular dataset with an attribute feature column (gradient canary: the "
                                     "batch's records, default diabetes)")
    p.add_argument("--attribute", help="the sensitive attribute (default: the dataset's first with a column)")
    p.add_argument("--canary", choices=("natural", "crafted", "random", "gradient"), default="crafted",
                   help="natural: the most exposed record of the data; crafted: optimised within the "
                        "data's range (default); random: a random record; gradient: a gradient inserted "
                        "into one release before clipping (white-box DP-SGD audit)")
    p.add_argument("--trials", type=positive_int, default=1000, help="independent trials (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="records per release (default 8)")
    p.add_argument("--rounds", type=positive_int, default=1, help="observed rounds (default 1)")
    p.add_argument("--delta", type=fraction, default=1e-5, help="delta of the audited claim (default 1e-5)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    from .audit_gradient import add_gradient_arguments
    add_gradient_arguments(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object (fields below)")
    p.add_argument("--progress", action="store_true",
                   help="show progress bars (the canary's crafting and the game; on by default at a terminal)")
    add_defense_arguments(p)
    p.set_defaults(func=cmd_audit)


def cmd_audit(args) -> int:
    from ..audit.canaries import _column, audit_attribute
    from ..data import dataset_info, load_dataset
    from ..defenses import as_defense
    from ..runtime import get_device

    if args.canary == "gradient":
        from .audit_gradient import cmd_audit_gradient
        return cmd_audit_gradient(args)
    if args.game is None or args.dataset is None:
        raise ValueError("audit needs --game and --dataset (or --canary gradient, which needs neither)")
    if args.claim is not None:
        raise ValueError("--claim needs --canary gradient (a claim is checked with a gradient canary)")
    if args.trials < 8:
        raise ValueError(f"--trials must be at least 8 (half of them choose the threshold), got {args.trials}")
    info = dataset_info(args.dataset)
    if "attribute" not in info.games or not info.attribute_features or len(info.input_shape) != 1:
        raise ValueError(f"dataset {info.name!r} has no tabular attribute with a feature column to audit; "
                         "choose a tabular dataset with the attribute game (e.g. diabetes)")
    check_adaptive(args)
    if as_defense(args.defense).name != "dp":
        spec = "none" if args.defense is None else args.defense.spec()
        raise ValueError(f"--defense {spec} makes no epsilon claim for the audit to check (only DP-SGD has an "
                         "accountant's epsilon); give --defense dp:clip=C,noise=S, or check a DP claim about "
                         "a mechanism with --canary gradient --claim dp:clip=C,noise=S")
    device = get_device(args.device)
    data = load_dataset(args.dataset)
    attribute, _ = _column(data, args.attribute)
    from types import SimpleNamespace

    check_game_plan("attribute", data, batch_sizes=[args.batch_size], trials=args.trials, rounds=args.rounds,
                    defense=args.defense, adaptive=args.adaptive, device=device, seed=args.seed,
                    adversary=SimpleNamespace(name="informed", sims=32))
    res = audit_attribute(data, canary=args.canary, defense=args.defense, adaptive=args.adaptive,
                          trials=args.trials, batch_size=args.batch_size, rounds=args.rounds, delta=args.delta,
                          attribute=attribute, device=device, seed=args.seed,
                          progress=args.progress or (not args.json and sys.stderr.isatty()))   # crafting's bar
    out = {"game": args.game, "dataset": info.name, "attribute": attribute, **res.to_dict(),
           "device": str(device)}
    if args.json:
        print_json(out)
        return 0
    d = as_defense(args.defense)
    print(f"attribute game ({attribute}) on {info.name}, {res.canary.summary()}, informed "
          f"{'adaptive' if args.adaptive else 'static'} adversary, defense {d.spec()}, batch {args.batch_size}, "
          f"{args.rounds} round(s), {args.trials} trials, seed {args.seed}")
    a = res.audit
    point = "inf" if math.isinf(a.epsilon_point) else f"{a.epsilon_point:.3f}"
    print(f"epsilon_lower {a.epsilon_lower:.3f} (confidence {a.level:.0%}, delta {a.delta:g}, estimator "
          f"{a.estimator}, threshold held out; point estimate {point}; AUROC {res.auroc:.3f})")
    if res.accountant_epsilon is not None:
        print(f"accountant epsilon {res.accountant_epsilon:.3f} (rdp, attribute change = sensitivity 2C, "
              f"sample rate 1, {args.rounds} step(s)); ratio {res.ratio:.3f}; "
              f"add/remove epsilon {res.membership_epsilon:.3f}; GDP epsilon {res.gdp_epsilon:.3f}")
    return 0
