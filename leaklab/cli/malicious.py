"""``leaklab reconstruct --attack imprint|trap``: a malicious server's model, its clients' releases, the records read."""
from __future__ import annotations

import sys

from .common import defense_json, non_negative_int, positive_int, print_json

#: The options only a malicious server's attack takes, with their defaults.
OPTIONS = {"bins": 128, "clients": 1, "secure": False, "protocol": "fedsgd", "local_steps": 1,
           "statistic": "projection"}


def add_arguments(p) -> None:
    """The options of ``--attack imprint`` and ``--attack trap`` (refused with the other attacks)."""
    from ..attacks.imprint import STATISTICS
    from ..attacks.malicious import PROTOCOLS

    g = p.add_argument_group("a malicious server (--attack imprint or trap)")
    g.add_argument("--bins", type=_bins, default=None, metavar="K",
                   help="units of the imprint block, one bin each (default 128)")
    g.add_argument("--clients", type=positive_int, default=None, metavar="C",
                   help="clients per round, each with --batch-size records (default 1)")
    g.add_argument("--secure", action="store_true", default=None,
                   help="secure aggregation: the server sees only the sum of the clients' releases")
    g.add_argument("--protocol", choices=PROTOCOLS, default=None,
                   help="what a client releases: its FedSGD gradient or its FedAvg update (default fedsgd)")
    g.add_argument("--local-steps", type=positive_int, default=None, metavar="S",
                   help="local SGD steps of a FedAvg client (default 1)")
    g.add_argument("--statistic", choices=STATISTICS, default=None,
                   help="what the imprint rows measure (default projection: a random projection)")


def _bins(text: str) -> int:
    import argparse

    v = non_negative_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 bins, got {v}")
    return v


def handles(args) -> bool:
    """Whether ``args`` asks for a malicious server's attack; a ValueError for its options on another attack."""
    from ..attacks.malicious import MALICIOUS_ATTACKS

    given = [k for k in OPTIONS if getattr(args, k, None) is not None]
    if args.attack in MALICIOUS_ATTACKS:
        return True
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags} only go with --attack imprint or trap (a malicious server), not "
                         f"--attack {args.attack}")
    return False


def run(args) -> int:
    """Run ``args`` (a parsed ``leaklab reconstruct`` command line) as a malicious server's round and print it."""
    from ..attacks.malicious import run_imprint
    from ..results import _jsonable

    if args.dataset is None:
        raise ValueError(f"--attack {args.attack} draws the clients' records from --dataset (the server holds a "
                         f"part of it to set its thresholds); --image is not supported")
    if args.adaptive:
        raise ValueError(f"--attack {args.attack} reads the release as it is; it has no --adaptive variant")
    if args.iters is not None:
        raise ValueError(f"--attack {args.attack} takes no --iters (it is not iterative)")
    opts = {k: d if getattr(args, k, None) is None else getattr(args, k) for k, d in OPTIONS.items()}
    if args.attack == "trap" and getattr(args, "bins", None) is not None:
        raise ValueError("--bins sets the imprint block; --attack trap plants trap weights in the model's own first "
                         "layer")
    r = run_imprint(attack=args.attack, model=args.model, dataset=args.dataset, batch_size=args.batch_size,
                    bins=opts["bins"], clients=opts["clients"], secure=bool(opts["secure"]),
                    protocol=opts["protocol"], local_steps=opts["local_steps"], statistic=opts["statistic"],
                    defense=args.defense, trials=args.trials, seed=args.seed, device=args.device,
                    progress=not args.json and sys.stderr.isatty())
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        from pathlib import Path

        figure = Path(args.out) / f"reconstruct_{args.attack}_{args.model}.png"
        r.figure().savefig(figure, dpi=120)
    else:
        figure = None
    psnr = r.scores.psnr
    recovered = r.result.info["recovered"]
    summary = r.summary() | {k: r.extra[k] for k in ("certified_share", "alone_share", "expected_alone_share",
                                                     "reads", "reason") if k in r.extra}
    summary["share_recovered_30db"] = r.scores.success_rate(30.0)
    problems = [{"psnr": float(psnr[i].clamp(max=100).mean()), "mse": float(r.scores.mse[i].mean()),
                 "psnr_records": [float(v) for v in psnr[i]], "recovered_exactly": int(recovered[i]),
                 "records": int(psnr.shape[1])} for i in range(psnr.shape[0])]
    if args.json:
        print_json(_jsonable({"attack": args.attack, "model": args.model, "config": r.config, "seed": args.seed,
                              "device": r.device, **defense_json(args.defense, False), "seconds": r.seconds,
                              "summary": summary, "trials": problems,
                              "figure": None if figure is None else str(figure)}))
        return 0
    c = r.config
    seen = "the secure sum of" if c["secure"] and c["clients"] > 1 else "each release of"
    print(f"{args.attack} on {args.model}, {c['data']}: {seen} {c['clients']} client(s) x {c['batch_size']} records, "
          f"{c['protocol']}" + (f" ({c['local_steps']} local steps)" if c["protocol"] == "fedavg" else "")
          + (f", {c['bins']} bins ({c['statistic']})" if args.attack == "imprint" else f", firing rate {c['rate']:.3g}")
          + f", {args.trials} trials")
    if args.defense is not None:
        print(f"defense {args.defense.spec()}")
    print(f"reads through it: {summary['reads']} ({summary['reason']})")
    print(f"{'problem':>7}  {'records':>7}  {'certified':>9}  {'>= 30 dB':>8}  {'mean PSNR dB':>12}")
    for i, p in enumerate(problems):
        print(f"{i:>7}  {p['records']:>7}  {p['recovered_exactly']:>9}  {int((psnr[i] >= 30).sum()):>8}  "
              f"{p['psnr']:12.2f}")
    line = f"share recovered at PSNR >= 30 dB: {summary['share_recovered_30db']:.1%}; certified: " \
           f"{summary['certified_share']:.1%}"
    if "alone_share" in summary:
        line += (f"; alone in a bin: {summary['alone_share']:.1%} (expected "
                 f"{summary['expected_alone_share']:.1%} for equal bins)")
    print(line)
    if figure is not None:
        print(f"figure: {figure}")
    return 0
