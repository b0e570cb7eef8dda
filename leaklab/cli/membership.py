"""The membership and tracing games on the command line (``leaklab game membership|tracing ...``).

Their options are added to ``leaklab game``'s parser; :func:`cmd_membership_tracing`
plays them, one setting per batch size.
"""
from __future__ import annotations

from pathlib import Path

from .common import positive_int, print_json


def add_arguments(p) -> None:
    g = p.add_argument_group("membership and tracing")
    g.add_argument("--clients", type=positive_int, default=None,
                   help="tracing: the number of clients, each releasing its own update (default 8)")
    g.add_argument("--local-steps", type=positive_int, default=None,
                   help="tracing: each client's local SGD steps; above 1 the releases are FedAvg updates "
                        "(default 1: FedSGD gradients)")
    g.add_argument("--observe", choices=("release", "model"), default=None,
                   help="membership: the FedSGD release or the trained model (default: what the adversary "
                        "observes; release for alignment)")
    g.add_argument("--train-size", type=positive_int, default=None,
                   help="membership on the model: records the target model trains on (default trials/2)")
    g.add_argument("--train-steps", type=positive_int, default=300,
                   help="membership on the model: SGD steps of the target and shadow models (default 300)")
    g.add_argument("--shadows", type=positive_int, default=16,
                   help="LiRA: shadow models, trained together (default 16)")


def _defense_args(args) -> dict:
    """--defense and --adaptive where the parser has them."""
    out = {}
    if getattr(args, "defense", None):
        out["defense"] = args.defense
    if getattr(args, "adaptive", False):
        out["adaptive"] = True
    return out


def cmd_membership_tracing(args) -> int:
    from ..data import dataset_info, load_dataset
    from ..games import make_game
    from ..games.membership import play_membership
    from ..games.tracing import play_tracing
    from ..runtime import get_device

    device = get_device(args.device)
    info = dataset_info(args.dataset)
    if args.attribute:
        raise ValueError(f"the {args.game} game takes no --attribute")
    if args.rounds != [1]:
        raise ValueError(f"the {args.game} game is played for one round; got --rounds {args.rounds}")
    opts = {}
    if args.game == "tracing":
        if args.adversary not in (None, "alignment", "loss"):
            raise ValueError(f"--adversary {args.adversary} does not play the tracing game; choose alignment or loss")
        if args.observe or args.train_size:
            raise ValueError("--observe and --train-size belong to the membership game")
        clients = 8 if args.clients is None else args.clients
        make_game("tracing", info, clients=clients)            # checks before any data is loaded
        opts["clients"] = clients
        opts["local_steps"] = args.local_steps or 1
    else:
        if args.clients is not None or args.local_steps is not None:
            raise ValueError(f"--{'clients' if args.clients is not None else 'local-steps'} belongs to the "
                             "tracing game")
        if args.adversary in ("informed", "shadow"):
            raise ValueError(f"--adversary {args.adversary} does not play the membership game; "
                             "choose alignment, loss, lira or lira-offline")
        make_game("membership", info)
        opts.update(observe=args.observe, train_size=args.train_size, train_steps=args.train_steps)
        if args.adversary in ("lira", "lira-offline"):
            opts["adversary_options"] = {"shadows": args.shadows}
    data = load_dataset(args.dataset)
    play = play_tracing if args.game == "tracing" else play_membership
    runs = [play(data, adversary=args.adversary, batch_size=b, trials=args.trials, seed=args.seed,
                 device=device, progress=args.progress, **opts, **_defense_args(args))
            for b in args.batch_size]
    records = [r.record() for r in runs]
    results = [{"batch_size": r.config["batch_size"], **{k: r.numbers[k] for k in
                ("auroc", "auroc_ci", "accuracy", "advantage", "tpr_at_1pct_fpr") if k in r.numbers},
                **({"tpr_at_0.1pct_fpr": r.numbers["tpr_at_0.1pct_fpr"]} if "tpr_at_0.1pct_fpr" in r.numbers else {})}
               for r in records]
    out = {"game": args.game, "dataset": info.name, "modality": info.modality, "adversary": runs[0].adversary,
           "trials": runs[0].trials, "seed": args.seed, "device": str(device),
           "defense": runs[0].config["defense"], "adaptive": runs[0].adaptive,
           **({"clients": opts["clients"], "chance": 1 / opts["clients"], "local_steps": opts["local_steps"]}
              if args.game == "tracing" else
              {"observe": runs[0].config["observe"]}),
           **({"privacy": runs[0].config["privacy"]} if "privacy" in runs[0].config else {}),
           "results": results}
    if args.out:
        from ..results import write_records

        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        lines = folder / f"game_{args.game}_{info.name}.jsonl"
        if lines.exists():
            lines.unlink()
        write_records(lines, records)
        out["files"] = [str(lines)]
    if args.json:
        print_json(out)
        return 0
    extra = (f"{out['clients']} clients (chance {out['chance']:.3f}), "
             + ("FedSGD releases" if out["local_steps"] == 1 else f"FedAvg releases ({out['local_steps']} local steps)")
             if args.game == "tracing" else f"observing the {out['observe']}")
    print(f"{args.game} game on {info.name} [{info.modality}], {out['adversary']} adversary, {extra}, "
          f"{out['trials']} trials, seed {args.seed}")
    p = out.get("privacy")
    if p:
        other = ("add/remove a record" if p["neighbours"] == "replace-one" else "replace one record")
        alt = p["epsilon_add_remove"] if p["neighbours"] == "replace-one" else p["epsilon_replace"]
        print(f"defense {runs[0].config['defense']['name']}: epsilon {p['epsilon']:.3g} for this game's "
              f"{p['neighbours']} neighbours ({alt:.3g} to {other}) at delta {p['delta']:g} ({p['accountant']}, "
              f"{p['steps']} step(s), sample rate {p['sample_rate']:.3g})")
    print(f"{'batch':>6} {'AUROC':>7}  {'95% CI':<15} {'accuracy':>8} {'advantage':>9} {'TPR@1%FPR':>9}")
    for r in results:
        lo, hi = r["auroc_ci"]
        t = r.get("tpr_at_1pct_fpr")
        print(f"{r['batch_size']:>6} {r['auroc']:>7.3f}  [{lo:.3f}, {hi:.3f}] {r['accuracy']:>8.3f} "
              f"{r['advantage']:>9.3f} {'-' if t is None else f'{t:.3f}':>9}")
    for f in out.get("files", []):
        print(f"wrote {f}")
    return 0
