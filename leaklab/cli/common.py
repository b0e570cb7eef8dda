"""Helpers shared by the subcommands: argument types and output."""
from __future__ import annotations

import argparse
import json
import sys


def _int_at_least(text: str, minimum: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
    return v


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a noise level, a rate)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def _open_unit(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what} in (0, 1), got {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"expected {what} in (0, 1), got {text!r}")
    return v


def fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a delta)."""
    return _open_unit(text, "a number")


def confidence_level(text: str) -> float:
    """A confidence level strictly between 0 and 1."""
    return _open_unit(text, "a confidence level")


def int_list(text: str) -> list[int]:
    """A comma-separated list of positive integers, e.g. ``1,4,16``."""
    parts = [t.strip() for t in text.split(",")]
    if "" in parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers with no empty item, "
                                         f"got {text!r}")
    try:
        vals = [int(t) for t in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    twice = sorted({v for v in vals if vals.count(v) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(map(str, twice))} given twice in {text!r}; list each value "
                                         "once")
    return vals


#: What every --help says of infinite numbers in --json.
JSON_NOTE = ("--json is strict JSON: an infinite number (e.g. the PSNR of an exact reconstruction, the epsilon of "
             "a release without noise) is null with a field NAME_infinite: 1 beside it")


def print_json(obj) -> None:
    """``obj`` as strict JSON on stdout: infinite numbers as ``null`` marked by ``<name>_infinite`` (1 or -1)."""
    from ..results import _jsonable

    json.dump(_jsonable(obj), sys.stdout, indent=2, sort_keys=False, allow_nan=False)
    sys.stdout.write("\n")


def defense_spec(text: str):
    """A defense spelled ``NAME[:KEY=VALUE,...]`` (``dp:clip=1,noise=2``, ``prune:ratio=0.9``, ``sign``)."""
    from ..defenses import parse_defense

    try:
        return parse_defense(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_defense_arguments(p) -> None:
    """``--defense SPEC`` and ``--adaptive``, the same in every command that releases gradients."""
    p.add_argument("--defense", type=defense_spec, default=None, metavar="SPEC",
                   help="the defense every client applies, NAME[:KEY=VALUE,...], e.g. dp:clip=1,noise=2, "
                        "prune:ratio=0.9, sign, noise:std=0.01, perturb:budget=0.5, vib:beta=0.01 "
                        "(see 'leaklab defenses list'; default: none)")
    p.add_argument("--adaptive", action="store_true",
                   help="the adversary knows the defense and simulates it (default: static, it ignores it)")


#: Adversaries that read no gradient or never simulate the defense: --adaptive changes nothing for them.
IGNORES_DEFENSE = {
    "phi": "the phi adversary reads no gradient (the target's other features alone)",
    "loss": "the loss adversary reads the model's loss on the target, not the defended release, and simulates nothing",
}


def check_adaptive(args, adversary: str | None = None) -> None:
    """Refuse ``--adaptive`` where it changes nothing: without ``--defense``, or with an adversary that ignores it."""
    if not getattr(args, "adaptive", False):
        return
    defense = getattr(args, "defense", None)
    if defense is None or getattr(defense, "name", None) == "none":
        raise ValueError("--adaptive has no effect without --defense (an adaptive adversary simulates the defense "
                         "it knows); add --defense SPEC or drop --adaptive")
    if adversary in IGNORES_DEFENSE:
        raise ValueError(f"--adaptive has no effect with --adversary {adversary}: {IGNORES_DEFENSE[adversary]}; "
                         "drop --adaptive or choose another --adversary")


def check_game_plan(game: str, data, *, batch_sizes, trials: int, rounds: int = 1, clients: int = 1, defense=None,
                    adaptive: bool = False, adversary=None, device=None, observe: str | None = None,
                    secrets: int = 2, seed: int = 0) -> None:
    """Check the largest batch size of a command's game against the data and the memory, naming its options.

    The same check as the library's (:func:`leaklab.validate.check_game_sizes`), made once for the
    whole command before its first game, on the challenger's pool and the default model.
    """
    from ..defenses import as_defense
    from ..games import default_model
    from ..validate import check_game_sizes

    _, pool = data.split(0.5, seed=seed)
    model = default_model(data, seed=seed, device="cpu")
    flags = {"batch_size": "--batch-size", "trials": "--trials", "clients": "--clients", "shadows": "--shadows",
             "rounds": "--rounds"}
    check_game_sizes(game, pool, model, batch_size=max(batch_sizes), trials=trials, rounds=rounds, clients=clients,
                     defense=as_defense(defense), adaptive=adaptive, adversary=adversary, device=device,
                     observe=observe, secrets=secrets, names=flags)


def defense_json(defense, adaptive: bool, *, delta: float = 1e-5, steps: int = 1) -> dict:
    """What ``--json`` says of the defense: its config, ``adaptive``, and for DP the privacy spent."""
    from ..defenses import as_defense

    d = as_defense(defense)
    out = {"defense": d.config(), "adaptive": bool(adaptive)}
    if d.name == "dp":
        p = d.privacy(delta=delta, sample_rate=1.0, steps=steps)
        out.update(epsilon=p["epsilon"], epsilon_replace=p["epsilon_replace"], delta=p["delta"],
                   accountant=p["accountant"])
    return out


# -- checks made before a command starts its work ------------------------------------------------

def check_out_dir(path, flag: str = "--out"):
    """The output folder ``path``, created if missing, after checking it can be written; else a ValueError
    naming ``flag`` and the fix (see :func:`leaklab.validate.check_out_folder`)."""
    from ..validate import check_out_folder

    return check_out_folder(path, flag)


def available_memory(device) -> int | None:
    """Bytes of memory free for a run on ``device`` (GPU memory on CUDA), or None when unknown."""
    from .._memory import free_bytes

    return free_bytes(device)


def gigabytes(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MB"
