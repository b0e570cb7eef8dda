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
    return vals


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
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
    """The output folder ``path``, created if missing, after checking it can be written; else a ValueError.

    Refused in one line: a file in the way (``path`` or one of its parents is a file),
    a missing parent folder (only the last part of the path is created, so that a typo
    does not create a tree of folders), no permission to write.
    """
    import os
    from pathlib import Path

    if path is None:
        return None
    text = str(path)
    if not text.strip():
        raise ValueError(f"{flag} must name a folder, got an empty string")
    p = Path(text).expanduser()
    for parent in [p, *p.parents]:
        if parent.exists() and not parent.is_dir():
            where = "" if parent == p else f" (in the way of {text})"
            raise ValueError(f"{flag} {text}: {parent} is a file, not a folder{where}")
    if not p.exists():
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.exists():
            raise ValueError(f"{flag} {text}: the parent folder {parent} does not exist; create it first")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {text}: no permission to create a folder in {parent}")
        try:
            p.mkdir()
        except OSError as exc:
            raise ValueError(f"{flag} {text}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {text}: no permission to write in this folder")
    return p


def available_memory(device) -> int | None:
    """Bytes of memory free for a run on ``device`` (GPU memory on CUDA), or None when unknown."""
    from .._memory import free_bytes

    return free_bytes(device)


def gigabytes(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MB"
