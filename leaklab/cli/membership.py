"""The membership and tracing games on the command line (``leaklab game membership|tracing ...``).

Their options are added to ``leaklab game``'s parser; :func:`cmd_membership_tracing`
plays them, one setting per batch size.
"""
from __future__ import annotations

from pathlib import Path

from .common import check_adaptive, check_game_plan, check_out_dir, positive_int, print_json

#: The options of the membership and tracing games, and the games or adversaries they belong to.
#: What each membership adversary observes (the default --observe).
OBSERVES = {"alignment": "release", "loss": "model", "lira": "model", "lira-offline": "model"}
MEMBERSHIP_ONLY = ("observe", "train_size", "train_steps", "shadows")
TRACING_ONLY = ("clients", "local_steps")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def refuse_foreign_options(args, game: str) -> None:
    """Refuse an option of the membership or tracing game given to another game (it would be ignored)."""
    own = {"membership": MEMBERSHIP_ONLY, "tracing": TRACING_ONLY}.get(game, ())
    for key in MEMBERSHIP_ONLY + TRACING_ONLY:
        if key not in own and getattr(args, key, None) is not None:
            where = "the membership game" if key in MEMBERSHIP_ONLY else "the tracing game"
            raise ValueError(f"{_flag(key)} belongs to {where}; the {game} game would ignore it")


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
    g.add_argument("--train-steps", type=positive_int, default=None,
                   help="membership on the model: SGD steps of the target and shadow models (default 300)")
    g.add_argument("--shadows", type=positive_int, default=None,
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
    refuse_foreign_options(args, args.game)
    if args.attribute:
        raise ValueError(f"the {args.game} game takes no --attribute")
    if args.rounds != [1]:
        raise ValueError(f"the {args.game} game is played for one round; got --rounds {args.rounds}")
    opts = {}
    if args.game == "tracing":
        if args.adversary not in (None, "alignment", "loss"):
            raise ValueError(f"--adversary {args.adversary} does not play the tracing game; choose alignment or loss")
        clients = 8 if args.clients is None else args.clients
        make_game("tracing", info, clients=clients)            # checks before any data is loaded
        opts["clients"] = clients
        opts["local_steps"] = args.local_steps or 1
        adversary, observe = args.adversary or "alignment", None
    else:
        if args.adversary in ("informed", "shadow", "combined", "phi"):
            raise ValueError(f"--adversary {args.adversary} does not play the membership game; "
                             "choose alignment, loss, lira or lira-offline")
        make_game("membership", info)
        observe = args.observe or OBSERVES.get(args.adversary, "release")
        adversary = args.adversary or {"release": "alignment", "model": "lira"}[observe]
        if args.shadows is not None and adversary not in ("lira", "lira-offline"):
            raise ValueError(f"--shadows sets LiRA's shadow models; the {adversary} adversary trains none "
                             "(use --adversary lira or lira-offline)")
        if observe == "release" and (args.train_size is not None or args.train_steps is not None):
            raise ValueError(f"--{'train-size' if args.train_size is not None else 'train-steps'} sets the "
                             "training of the target model, observed with --observe model; the release game "
                             "(--observe release) trains none")
        opts.update(observe=args.observe, train_size=args.train_size,
                    train_steps=300 if args.train_steps is None else args.train_steps)
        if adversary in ("lira", "lira-offline"):
            opts["adversary_options"] = {"shadows": 16 if args.shadows is None else args.shadows}
    check_adaptive(args, adversary)
    check_out_dir(args.out)                                   # before any work
    data = load_dataset(args.dataset)
    from types import SimpleNamespace

    plan = SimpleNamespace(name=adversary, shadows=opts.get("adversary_options", {}).get("shadows", 0))
    check_game_plan(args.game, data, batch_sizes=args.batch_size, trials=args.trials, clients=opts.get("clients", 1),
                    defense=getattr(args, "defense", None), adversary=plan, device=device, observe=observe,
                    seed=args.seed)
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
    if args.game == "tracing":
        out["notes"] = {"tpr_at_1pct_fpr": "null: the secret (which of the clients holds the target) has more than "
                                           "two values, and a true-positive rate at a false-positive rate needs "
                                           "a yes/no secret"}
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
