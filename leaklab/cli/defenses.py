"""``leaklab defenses list``: the defenses, where they act, their settings and the adaptive adversary."""
from __future__ import annotations

from .common import print_json


def register(sub) -> None:
    p = sub.add_parser("defenses", help="list the defenses (--defense NAME[:KEY=VALUE,...])",
                       description="The defenses a client can apply to what it releases, with their "
                                   "settings; spell one as NAME[:KEY=VALUE,...] after --defense.")
    p.add_argument("action", choices=("list",), help="what to do (list)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_defenses)


def cmd_defenses(args) -> int:
    from ..defenses import describe_defenses

    rows = describe_defenses()
    if args.json:
        print_json({"defenses": rows})
        return 0
    for r in rows:
        keys = ", ".join(f"{k}: {v}" for k, v in r["keys"].items()) or "no settings"
        print(f"{r['name']:<8} acts on the {r['acts_on']:<6}  {r['summary']}")
        print(f"{'':<8} settings: {keys}")
        print(f"{'':<8} adaptive adversary: {r['adaptive']}")
    return 0
