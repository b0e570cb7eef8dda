"""``leaklab flower demo ...``: a Flower federation of leaklab clients, recorded and attacked.

Needs the optional extra ``leaklab[flower]``; without it the command says so in one line.
Building the parser imports nothing of Flower.
"""
from __future__ import annotations

import math

from .common import defense_spec, non_negative_int, positive_int, print_json

ATTACKS = ("analytic", "idlg")


def _lr(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def register(sub) -> None:
    p = sub.add_parser(
        "flower", help="audit a Flower federation: record what its server sees and attack it",
        description="Audit a Flower (flwr) federation with leaklab; needs pip install \"leaklab[flower]\".")
    cmds = p.add_subparsers(dest="flower_command", metavar="SUBCOMMAND")
    cmds.required = True
    d = cmds.add_parser(
        "demo", help="a recorded Flower federation of leaklab clients, every update attacked",
        description="Run a Flower federation (ServerApp + ClientApp, Message API) whose clients hold "
                    "disjoint shares of the dataset and train on leaklab's release path, record every "
                    "update the server receives, and attack each one. Prints, per client and round, the "
                    "PSNR and SSIM of the reconstruction against the records really used, the defense and, "
                    "for DP-SGD, each client's epsilon from the accountant.")
    d.add_argument("--dataset", default="digits", help="an image dataset (default digits)")
    d.add_argument("--clients", type=positive_int, default=4, help="Flower client nodes (default 4)")
    d.add_argument("--rounds", type=positive_int, default=3, help="federated rounds (default 3)")
    d.add_argument("--attack", choices=ATTACKS, default="analytic", help="the attack on every update "
                   "(default analytic)")
    d.add_argument("--defense", type=defense_spec, default=None, metavar="SPEC",
                   help="the defense a client mod puts on every client, NAME[:KEY=VALUE,...], e.g. "
                        "dp:clip=1,noise=1, prune:ratio=0.9, sign (default: none)")
    d.add_argument("--protocol", choices=("fedsgd", "fedavg"), default="fedsgd",
                   help="fedsgd: clients send a gradient; fedavg: their parameters after local steps")
    d.add_argument("--batch-size", type=positive_int, default=1, help="records per local step (default 1)")
    d.add_argument("--local-steps", type=positive_int, default=1, help="FedAvg's local steps (default 1)")
    d.add_argument("--records", type=positive_int, default=16, help="records each client holds (default 16)")
    d.add_argument("--lr", type=_lr, default=0.1, help="learning rate (default 0.1)")
    d.add_argument("--hidden", type=positive_int, default=64, help="the MLP's hidden units (default 64)")
    d.add_argument("--iters", type=positive_int, default=None, help="iDLG's iterations (default: the profile's)")
    d.add_argument("--delta", type=float, default=1e-5, help="delta of DP's epsilon (default 1e-5)")
    d.add_argument("--backend", choices=("inline", "ray"), default="inline",
                   help="inline: every client call in this process (default); ray: Flower's simulation engine")
    d.add_argument("--seed", type=non_negative_int, default=0, help="seed of every random draw (default 0)")
    d.add_argument("--json", action="store_true", help="print the result as one JSON object")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    import time

    from ..data import dataset_info, load_dataset
    from ..models import build_model
    from ..profiles import get_profile

    try:
        from .. import flower as lf
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    if not 0 < args.delta < 1:
        raise ValueError(f"--delta must lie in (0, 1), got {args.delta}")
    info = dataset_info(args.dataset)
    if info.modality != "image":
        raise ValueError(f"--dataset {args.dataset} holds {info.modality} records; the demo attacks images "
                         "(choose an image dataset, e.g. digits)")
    if args.batch_size > args.records:
        raise ValueError(f"--batch-size {args.batch_size} exceeds the {args.records} --records each client holds")
    t0 = time.perf_counter()
    data = load_dataset(args.dataset)
    shape = tuple(info.input_shape)
    model = build_model("mlp", shape, info.num_classes, hidden=(args.hidden,), seed=args.seed)
    parts = lf.split(data, args.clients, args.records, seed=args.seed)
    run = lf.simulate(model, parts, rounds=args.rounds, protocol=args.protocol, lr=args.lr,
                      local_steps=args.local_steps, batch_size=args.batch_size, defense=args.defense,
                      delta=args.delta, seed=args.seed, backend=args.backend)
    options = {}
    if args.attack == "idlg":
        options["iters"] = args.iters or get_profile().iters
    results = run.attack(args.attack, **options)
    psnrs = [p for r in results for p in r["psnr"]]
    eps = [r["epsilon"] for r in results if r["epsilon"] is not None]
    out = {"dataset": info.name, "clients": args.clients, "rounds": args.rounds, "protocol": args.protocol,
           "batch_size": args.batch_size, "local_steps": args.local_steps, "attack": args.attack,
           "defense": run.config["defense"], "delta": args.delta,
           "epsilon": max(eps) if eps else None, "flwr": lf.FLWR_VERSION, "backend": args.backend,
           "results": [{k: r[k] for k in ("round", "client", "node", "psnr", "ssim", "labels", "labels_found",
                                          "epsilon")} for r in results],
           "psnr_min": min(psnrs), "psnr_max": max(psnrs),
           "recovered_40db": sum(p >= 40 for p in psnrs), "records_attacked": len(psnrs),
           "seed": args.seed, "wall_time": round(time.perf_counter() - t0, 3)}
    if args.json:
        print_json(out)
        return 0
    d = run.config["defense"]
    spec = d["name"] if len(d) == 1 else d["name"] + ":" + ",".join(f"{k}={v:g}" for k, v in d.items() if k != "name")
    print(f"Flower {lf.FLWR_VERSION}: {args.clients} clients x {args.rounds} rounds, {args.protocol}, batch "
          f"{args.batch_size}, {info.name}, defense {spec}, attack {args.attack}")
    print("round  client   PSNR (dB)   SSIM    epsilon")
    for r in results:
        e = "-" if r["epsilon"] is None else f"{r['epsilon']:.3f}"
        print(f"{r['round']:>5}  {r['client']:>6}  {min(r['psnr']):>9.1f}  {min(r['ssim']):>6.3f}  {e:>9}")
    print(f"{out['recovered_40db']} of {out['records_attacked']} records recovered at PSNR >= 40 dB "
          f"(PSNR from {out['psnr_min']:.1f} to {out['psnr_max']:.1f} dB)")
    return 0
