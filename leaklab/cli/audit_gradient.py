"""``leaklab audit --canary gradient [--claim dp:clip=C,noise=S]``: a white-box audit of one DP-SGD release."""
from __future__ import annotations

import argparse

from .common import confidence_level


def _claim(text: str):
    from ..defenses import DPSGD
    from .common import defense_spec

    d = defense_spec(text)
    if not isinstance(d, DPSGD):
        raise argparse.ArgumentTypeError(f"a claim must read dp:clip=C,noise=S, got {text!r}")
    return d


def add_gradient_arguments(p) -> None:
    """The options of the gradient-canary audit (added to ``leaklab audit``)."""
    p.add_argument("--claim", type=_claim, default=None, metavar="dp:clip=C,noise=S",
                   help="with --canary gradient: check this DP-SGD claim against the mechanism given by "
                        "--defense (default: the claim itself) and print the verdict")
    p.add_argument("--direction", choices=("dirac", "random"), default="dirac",
                   help="with --canary gradient: the canary's direction (default dirac: one coordinate)")
    p.add_argument("--level", type=confidence_level, default=None,
                   help="confidence of the interval (default 0.95; 0.999 with --claim)")
    p.add_argument("--accountant", choices=("prv", "rdp"), default="prv",
                   help="with --canary gradient: the Opacus accountant of the promised epsilon (default prv)")


def cmd_audit_gradient(args) -> int:
    from ..audit import audit_gradient, check_claim
    from ..defenses import as_defense
    from ..runtime import get_device
    from .common import print_json

    if args.game is not None:
        raise ValueError("--canary gradient audits the release itself and takes no --game")
    if args.trials < 8:
        raise ValueError(f"--trials must be at least 8, got {args.trials}")
    if args.adaptive or args.rounds != 1:
        raise ValueError("--canary gradient audits one release: it takes no --adaptive and no --rounds")
    device = get_device(args.device)
    dataset = args.dataset or "diabetes"
    if args.claim is not None:
        level = 0.999 if args.level is None else args.level
        mech = args.claim if args.defense is None else args.defense
        res = check_claim(args.claim, mech, dataset=dataset, trials=args.trials, batch_size=args.batch_size,
                          canary=args.direction, delta=args.delta, level=level, accountant=args.accountant,
                          device=device, seed=args.seed, progress=args.progress)
        a = res.audit
        if args.json:
            out = res.to_dict()
            out.update({k: v for k, v in a.to_dict().items() if k in ("epsilon_lower", "ratio", "accountant_epsilon")})
            out["accountant_epsilon"] = a.accountant_epsilon
            out["device"] = str(device)
            print_json(out)
            return 0
        print(res.summary())
        ev = res.evidence
        print(f"evidence: {args.trials} one-step releases, {a.canary.summary()}, batch {args.batch_size} of "
              f"{dataset}; GDP fit epsilon >= {ev['gdp_epsilon_lower']:.3f} (point {ev['gdp_epsilon_point']:.3f}); "
              f"held-out threshold epsilon >= {ev['threshold_epsilon_lower']:.3f}; normality p "
              f"{ev['normality_p']:.3g}, equal-variance p {ev['equal_variance_p']:.3g}")
        return 0
    defense = as_defense(args.defense if args.defense is not None else "dp:clip=1,noise=1")
    level = 0.95 if args.level is None else args.level
    res = audit_gradient(dataset, defense=defense, trials=args.trials, batch_size=args.batch_size,
                         canary=args.direction, delta=args.delta, level=level, accountant=args.accountant,
                         device=device, seed=args.seed, progress=args.progress)
    if args.json:
        print_json({**res.to_dict(), "dataset": dataset, "device": str(device)})
        return 0
    print(f"gradient canary audit of {defense.spec()}: {res.canary.summary()}, batch {args.batch_size} of "
          f"{dataset}, {args.trials} one-step releases, seed {args.seed}")
    print(res.summary())
    return 0
