"""The privacy–utility trade-off: sweep each defense's strength, measure accuracy and privacy loss.

For every defense, every strength on its grid and every seed, :func:`sweep_tradeoff`

1. trains a model by federated learning with every client releasing through the
   defense (:func:`leaklab.fl.train_federated`) and measures its test accuracy;
2. attacks the releases of that trained model with each requested attack, through
   the same defense (an *adaptive* adversary simulates it), and puts the result on
   the privacy-loss scale of :mod:`leaklab.metrics.privacy_loss`:

   * ``reconstruction`` — two attacks on the same single-record releases of the
     trained model (:func:`leaklab.attacks.run.run_reconstruction`): the analytic
     attack on the first fully connected layer (exact at batch size 1 without a
     defense) and iDLG (adaptive when asked: it simulates the defense, and against
     SPN treats the secret head and codes as unknowns); each trial keeps its best
     reconstruction, and the privacy loss is their mean SSIM against the inputs
     above the SSIM of the same reconstructions against other records (decoys);
   * ``membership`` — the membership game on FedSGD releases (alignment adversary);
     privacy loss: the membership advantage at a threshold chosen on held-out trials;
   * ``tracing`` — the tracing game among ``clients`` clients (alignment
     adversary); privacy loss: accuracy over chance, normalised.

   Each privacy loss is 0 in expectation (before clipping at 0) when the release
   carries nothing about the secret, and comes with its 95% null interval
   (``privacy_loss_null``): see :mod:`leaklab.metrics.privacy_loss`.

One :class:`~leaklab.results.Record` per (defense, strength, attack, seed) is
appended to ``DIR/tradeoff.jsonl`` as soon as it is measured. Its numbers: the
model's test ``accuracy``; ``privacy_loss`` and ``privacy_loss_null``; the attack's
own numbers prefixed ``attack_``; and, for DP-SGD, two epsilons at ``delta``, each
with its neighbouring relation, sampling and accountant:

* ``epsilon_training`` — a client's over the whole training: ``rounds * local_steps``
  noisy steps (FedAvg) at sample rate ``batch/shard``. The accountant (Opacus)
  assumes Poisson sampling and add/remove neighbours; the batches are of fixed size,
  drawn without replacement, so this number is the usual approximation, said so in
  ``epsilon_training_sampling``.
* ``epsilon_attacked`` — that of the release the attack measured, in which the
  target is always present (no sampling, ``q = 1``): one release for reconstruction
  (add/remove) and membership (replace-one: the target or another record in the
  batch), two for tracing (replace-one in the two clients' batches the target moves
  between). This is the one whose mechanism the privacy loss measures, the one
  :func:`plot_tradeoff` writes beside each point.

The sweep resumes: the records already in the file are skipped. Their key holds
the dataset's name and a fingerprint of the records actually used (their number, a
SHA-256 of ``x`` and ``y``, the seed of the subset drawn), the leaklab version, the
defense's settings, the attack, ``adaptive``, the sizes and the seed; a last line
torn by a kill is cut off before anything is appended
(:func:`leaklab.results.resume_records`).

:func:`compare_at_equal_loss` reads the records back and gives, for each attack and
privacy-loss level, each defense's best accuracy measured at that loss or below (the
curve read as a step function), with a confidence interval across seeds.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ._checks import check_positive_int
from .data import Dataset, load_dataset
from .defenses import list_defenses, make_defense, parse_defense
from .metrics.privacy_loss import (ATTACKS, heldout_advantage, membership_loss, membership_null, reconstruction_loss,
                                   reconstruction_null, tracing_loss, tracing_null)
from .profiles import get_profile
from .results import Record, fingerprint, resume_records, write_records
from .validate import check_sweep_plan

__all__ = ["DEFAULT_GRIDS", "expand_defenses", "sweep_tradeoff", "compare_at_equal_loss", "gap_at_equal_loss",
           "plot_tradeoff", "settings_for", "RECORDS_FILE"]

RECORDS_FILE = "tradeoff.jsonl"

#: For each defense, the setting swept and its default values (weakest first), plus fixed settings.
DEFAULT_GRIDS: dict[str, tuple[str | None, tuple, dict]] = {
    "none": (None, (None,), {}),
    "dp": ("noise", (0.0, 0.3, 1.0, 3.0), {"clip": 1.0}),
    "prune": ("ratio", (0.0, 0.5, 0.9, 0.99), {}),
    "noise": ("rel", (0.0, 0.3, 1.0, 3.0), {}),
    "sign": (None, (None,), {}),
    "perturb": ("budget", (0.0, 0.3, 1.0), {}),
    "vib": ("beta", (0.001, 0.01, 0.1), {}),
    "spn": ("alpha", (0.01, 0.1, 0.3, 1.0), {}),
}


def _values(text: str) -> list:
    out = []
    for t in text.split("/"):
        t = t.strip()
        try:
            v = float(t)
        except ValueError:
            raise ValueError(f"grid values must be numbers separated by '/', got {text!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"grid values must be finite, got {text!r}")
        if v in out:
            raise ValueError(f"grid value {t} is given twice in {text!r}; list each strength once")
        out.append(v)
    return out


def expand_defenses(spec: str | Sequence[str]) -> list[tuple[str, str | None, float | None, object]]:
    """The points of the sweep: ``(family, key, value, Defense)`` for each defense and strength.

    ``spec`` is ``"SPEC[;SPEC...]"`` (or a list of specs). A spec ``NAME`` sweeps the
    default grid of :data:`DEFAULT_GRIDS`; ``NAME:KEY=V1/V2/V3,OTHER=X`` sweeps ``KEY``
    over the values given, with the other settings fixed.

    >>> [(f, k, v) for f, k, v, _ in expand_defenses("dp:clip=1,noise=0.5/2;sign")]
    [('dp', 'noise', 0.5), ('dp', 'noise', 2.0), ('sign', None, None)]
    """
    specs = [s.strip() for s in (spec.split(";") if isinstance(spec, str) else spec) if s and s.strip()]
    if isinstance(spec, str) and specs and len(specs) != len(spec.strip().strip(";").split(";")):
        raise ValueError(f"defense {spec!r} has an empty item between ';' separators; remove it")
    if not specs:
        raise ValueError(f"defense must name at least one defense (SPEC[;SPEC...]), got {spec!r}; "
                         f"defenses: {', '.join(list_defenses())}")
    points = []
    for s in specs:
        name, _, rest = s.partition(":")
        name = name.strip()
        if name not in DEFAULT_GRIDS and name in list_defenses():
            raise ValueError(f"defense {name!r} has no default grid; give its strength as NAME:KEY=V1/V2")
        fixed, swept = {}, None
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, val = part.partition("=")
            if not eq:
                raise ValueError(f"defense setting {part!r} in {s!r} must read KEY=VALUE or KEY=V1/V2/...")
            if key.strip() in fixed or (swept is not None and swept[0] == key.strip()):
                raise ValueError(f"defense setting {key.strip()!r} is given twice in {s!r}; give each key once")
            if "/" in val:
                if swept is not None:
                    raise ValueError(f"sweep one setting per defense, {s!r} sweeps two")
                swept = (key.strip(), _values(val))
            else:
                fixed[key.strip()] = val.strip()
        if name not in DEFAULT_GRIDS:
            make_defense(name)                          # an unknown name: the error lists the defenses
        key, grid, defaults = DEFAULT_GRIDS[name]
        if swept is not None:
            key, grid = swept
        elif key is not None and key in fixed:          # a single value given: one point
            grid = _values(fixed.pop(key))
        for v in grid:
            settings = {**{k: str(x) for k, x in defaults.items()}, **fixed}
            if key is not None:
                settings[key] = repr(v)
            d = parse_defense(name + (":" + ",".join(f"{k}={x}" for k, x in settings.items()) if settings else ""))
            points.append((name, key, v, d))
    return points


def settings_for(profile: str | None = None) -> dict:
    """The sizes of one sweep point for a profile (smoke: seconds; book: the chapter's)."""
    p = get_profile(profile)
    return {
        "records": p.pick(smoke=600, book=1797, paper=60000),
        "clients": 8,
        "rounds": p.pick(smoke=10, book=40, paper=200),
        "protocol": "fedavg",
        "local_steps": 3,
        "batch_size": 16,
        "lr": 0.1,
        "hidden": 64,
        "membership_batch": 8,
        "tracing_batch": 4,
        "attack_trials": p.pick(smoke=64, book=256, paper=1024),
        "attack_iters": p.pick(smoke=20, book=100, paper=300),
    }


def _model(data: Dataset, hidden: int, seed: int):
    from .models import build_model
    return build_model("mlp", data.input_shape, data.num_classes, hidden=(hidden,), seed=seed)


#: Decoys per reconstruction trial: other records the reconstructions are also scored against (the SSIM floor).
DECOYS = 8


def _attack(attack: str, model, data: Dataset, defense, *, adaptive: bool, s: dict, seed: int, device) -> dict:
    """The attack's numbers, privacy loss and its null interval against releases of ``model`` through ``defense``."""
    from .games.membership import play_membership
    from .games.tracing import play_tracing

    if attack == "membership":
        r = play_membership(data, model=model, observe="release", batch_size=s["membership_batch"],
                            trials=s["attack_trials"], defense=defense, adaptive=adaptive, seed=seed,
                            device=device, progress=False)
        n = r.record().numbers
        secret, scores = r.secret, r.scores()
        return {**n, "heldout_advantage": heldout_advantage(secret, scores, seed=seed),
                "privacy_loss": membership_loss(secret, scores, seed=seed),
                "privacy_loss_null": list(membership_null(secret, scores, seed=seed))}
    if attack == "tracing":
        r = play_tracing(data, model=model, clients=s["clients"], batch_size=s["tracing_batch"],
                         trials=s["attack_trials"], defense=defense, adaptive=adaptive, seed=seed,
                         device=device, progress=False)
        n = r.record().numbers
        return {**n, "chance": 1 / s["clients"], "privacy_loss": tracing_loss(n["accuracy"], clients=s["clients"]),
                "privacy_loss_null": list(tracing_null(len(r.secret), clients=s["clients"]))}
    if attack == "reconstruction":
        from .attacks.run import run_reconstruction
        from .metrics.image import ssim

        if data.modality != "image":
            raise ValueError(f"the reconstruction attack needs images; dataset {data.name!r} holds "
                             f"{data.modality} records (use --attack membership,tracing)")
        T = max(8, s["attack_trials"] // 4)
        common = dict(model=model, dataset=data, trials=T, batch_size=1, seed=seed, defense=defense,
                      device=device, progress=False)
        runs = {"analytic": run_reconstruction(attack="analytic", **common),
                "idlg": run_reconstruction(attack="idlg", iters=s["attack_iters"], adaptive=adaptive, **common)}
        x = runs["analytic"].x[:, 0].cpu()                                         # (T, C, H, W), the same in both
        pick = torch.randint(len(data), (T, DECOYS), generator=torch.Generator().manual_seed(seed + 17))
        decoys = data.x[pick]                                                      # (T, K, C, H, W)
        own, dec = {}, {}
        for name, r in runs.items():
            xh = torch.nan_to_num(r.x_hat[:, 0].detach().cpu().float(), nan=0.0).clamp(0, 1)
            own[name] = ssim(x, xh).clamp(0, 1)                                    # (T,)
            dec[name] = ssim(decoys, xh[:, None].expand_as(decoys)).clamp(0, 1)    # (T, K)
        best = torch.stack(list(own.values())).max(0).values        # each trial: its best reconstruction,
        best_dec = torch.stack(list(dec.values())).max(0).values    # and the best of the same two on each decoy
        return {"ssim": float(best.mean()), "ssim_decoys": float(best_dec.mean()), "decoys": DECOYS, "trials": T,
                "attack": "best of analytic, idlg", **{f"ssim_{name}": float(v.mean()) for name, v in own.items()},
                "privacy_loss": reconstruction_loss(best, best_dec),
                "privacy_loss_null": list(reconstruction_null(best, best_dec, seed=seed))}
    raise ValueError(f"attack must be one of {', '.join(ATTACKS)}, got {attack!r}")


#: The neighbouring datasets of each attacked release, and the releases of the target they compose.
_ATTACKED = {
    "reconstruction": ("add/remove one record (the target alone in a batch of one, one release)", 1, "epsilon"),
    "membership": ("replace one record (the target or another record in a batch, one release)", 1,
                   "epsilon_replace"),
    "tracing": ("replace one record in two clients' releases (the target moved from one client's batch "
                "to another's)", 2, "epsilon_replace"),
}


def _epsilons(attack: str, defense, run, s: dict, train_size: int) -> dict:
    """The training epsilon and the epsilon of the release the attack measured, each with what it assumes."""
    if run.epsilon is None:
        return {"epsilon_training": None, "epsilon_attacked": None}
    delta = run.config["delta"]
    shard = train_size // s["clients"]
    steps = s["rounds"] * (s["local_steps"] if s["protocol"] == "fedavg" else 1)
    from .privacy.accounting import PrivacyEvent

    relation, releases, which = _ATTACKED[attack]
    event = PrivacyEvent(defense.noise, 1.0, releases, "replace-one" if which == "epsilon_replace" else "add/remove")
    return {
        "epsilon_training": run.epsilon, "epsilon_training_accountant": run.accountant, "delta": delta,
        "epsilon_training_neighbours": "add/remove one record of a client's shard",
        "epsilon_training_sampling": (f"Poisson sampling at q = batch/shard = {s['batch_size']}/{shard} over "
                                      f"{steps} steps, as the accountant assumes; the batches are of fixed size, "
                                      "drawn without replacement (an approximation)"),
        "epsilon_attacked": event.epsilon(delta=delta, accountant=run.accountant),
        "epsilon_attacked_accountant": run.accountant,
        "epsilon_attacked_neighbours": relation,
        "epsilon_attacked_sampling": f"none: the target is in the release (q = 1, {releases} release(s))",
    }


def sweep_tradeoff(dataset: str | Dataset, defenses: str | Sequence[str], *, attacks: Sequence[str] = ATTACKS,
                   adaptive: bool = False, seeds: int = 1, out: str | Path, settings: dict | None = None,
                   device=None, progress: bool = True,
                   on_record: Callable[[Record], None] | None = None) -> list[Record]:
    """Run (or resume) the sweep; every record of the sweep, in order, read back from ``out``.

    Records of other sweeps in the same file (other data, defenses, attacks or
    settings) are kept in the file and left out of what is returned.

    ``on_record`` is called after each new record is written (a progress hook; an
    exception raised there stops the sweep, as a kill would, with every record
    written so far kept).
    """
    from ._progress import tqdm

    from .fl import train_federated
    from .runtime import get_device

    attacks = [attacks] if isinstance(attacks, str) else list(attacks)
    bad = [a for a in attacks if a not in ATTACKS]
    if bad or not attacks:
        raise ValueError(f"attack must be one or more of {', '.join(ATTACKS)}, got {', '.join(bad) or 'none'}")
    check_positive_int("seeds", seeds)
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False, got {adaptive!r}")
    points = expand_defenses(defenses)
    s = {**settings_for(), **dict(settings or {})}
    check_sweep_plan(out, RECORDS_FILE, points=len(points), seeds=seeds, attacks=len(attacks), settings=s)
    dev = get_device(device)
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if not isinstance(data, Dataset):
        raise TypeError(f"dataset must be a dataset name or a Dataset, got {type(dataset).__name__}")
    if "reconstruction" in attacks and data.modality != "image":
        raise ValueError(f"the reconstruction attack needs images; dataset {data.name!r} holds "
                         f"{data.modality} records (use attacks membership,tracing)")
    subset_seed = None
    if len(data) > s["records"]:
        subset_seed = 0
        data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(subset_seed))
                           [:s["records"]])
    from ._version import __version__

    used = {"name": data.name, "records": len(data), "subset_seed": subset_seed,
            "sha256": fingerprint(data.x, data.y)}                       # the data actually used, not its name
    path = Path(out) / RECORDS_FILE
    done = {r.key(): r for r in resume_records(path)}
    todo = [(seed, p) for seed in range(seeds) for p in points]
    keys: list[str] = []
    bar = tqdm(total=len(todo) * len(attacks), desc="trade-off", progress=progress, leave=False)
    for seed, (family, key, value, defense) in todo:
        base = {"dataset": data.name, "data": used, "leaklab": __version__, "defense": defense.config(),
                "family": family, "strength_key": key, "strength": value, "adaptive": adaptive, "settings": s}
        recs = [Record(kind="tradeoff", config={**base, "attack": a}, seed=seed, numbers={}) for a in attacks]
        keys += [r.key() for r in recs]
        missing = [(a, r) for a, r in zip(attacks, recs) if r.key() not in done]
        bar.update(len(attacks) - len(missing))
        if not missing:
            continue
        t0 = time.perf_counter()
        test, train = data.split(0.3, seed=seed)
        model = _model(data, s["hidden"], seed)
        run = train_federated(model, train, test=test, clients=s["clients"], rounds=s["rounds"],
                              protocol=s["protocol"], batch_size=s["batch_size"], local_steps=s["local_steps"],
                              lr=s["lr"], defense=defense, seed=seed, device=dev, progress=False)
        for a, rec in missing:
            t1 = time.perf_counter()
            numbers = _attack(a, run.model, train, defense, adaptive=adaptive, s=s, seed=seed + 1000, device=dev)
            rec.numbers = {"accuracy": run.accuracy, **_epsilons(a, defense, run, s, len(train)),
                           "privacy_loss": numbers.pop("privacy_loss"),
                           "privacy_loss_null": numbers.pop("privacy_loss_null"),
                           **{f"attack_{k}": v for k, v in numbers.items()}}
            rec.wall_time = time.perf_counter() - t1 + (t1 - t0 if a == missing[0][0] else 0.0)
            rec.device = str(dev)
            write_records(path, [rec])
            done[rec.key()] = rec
            bar.update(1)
            if on_record is not None:
                on_record(rec)
    bar.close()
    back = {r.key(): r for r in resume_records(path)}
    return [back[k] for k in keys]


def _curve_value(pl: np.ndarray, acc: np.ndarray, level: float) -> float:
    """The best accuracy measured at privacy loss <= level (NaN if none): the curve read as a step function.

    Not interpolated: between two measured points nothing is known of a setting that
    would reach the level, and a line between them can promise more accuracy than
    any point measured at that loss or below.
    """
    ok = pl <= level
    return float(acc[ok].max()) if ok.any() else math.nan


def _curves(records: Sequence[Record]) -> dict[tuple, list[tuple[float, float]]]:
    """The sweep's points ``(privacy_loss, accuracy)`` of each (attack, defense family, seed)."""
    by: dict = {}
    for r in records:
        if r.kind == "tradeoff":
            by.setdefault((r.config["attack"], r.config["family"], r.seed), []).append(
                (r.numbers["privacy_loss"], r.numbers["accuracy"]))
    return by


def _value_at(points: list[tuple[float, float]], level: float) -> float:
    """:func:`_curve_value` of a list of ``(privacy_loss, accuracy)`` points."""
    return _curve_value(np.array([p for p, _ in points]), np.array([q for _, q in points]), level)


def compare_at_equal_loss(records: Sequence[Record], *, levels: Sequence[float] = (0.1, 0.25, 0.5, 0.75),
                          level: float = 0.95) -> list[dict]:
    """For each attack, privacy-loss level and defense: the best accuracy (mean over seeds, with a CI).

    Each seed's curve is read at the level as a step function: the best accuracy
    among its points whose privacy loss is at most the level (see
    :func:`_curve_value`); the interval is Student's t over seeds (none with one seed). A defense whose weakest point
    already loses more than the level has no value there.
    """
    rows = []
    by = _curves(records)
    attacks = sorted({k[0] for k in by})
    families = sorted({k[1] for k in by})
    for a in attacks:
        for L in levels:
            for f in families:
                vals = [_value_at(pts, L) for (aa, ff, _), pts in sorted(by.items()) if aa == a and ff == f]
                vals = [v for v in vals if not math.isnan(v)]
                if not vals:
                    rows.append({"attack": a, "privacy_loss": L, "defense": f, "accuracy": None, "ci": None,
                                 "seeds": 0})
                    continue
                rows.append({"attack": a, "privacy_loss": L, "defense": f, "accuracy": float(np.mean(vals)),
                             "ci": _t_interval(vals, level), "seeds": len(vals)})
    return rows


def _t_interval(vals: Sequence[float], level: float) -> list[float] | None:
    from scipy import stats

    if len(vals) < 2:
        return None
    m = float(np.mean(vals))
    half = float(stats.t.ppf(0.5 + level / 2, len(vals) - 1) * np.std(vals, ddof=1) / np.sqrt(len(vals)))
    return [m - half, m + half]


def gap_at_equal_loss(records: Sequence[Record], family: str, *, levels: Sequence[float] = (0.1, 0.25, 0.5),
                      exclude: Sequence[str] = ("none",), level: float = 0.95) -> list[dict]:
    """``family``'s best accuracy minus the best other defense's, at equal privacy loss, per seed.

    For each attack and privacy-loss level, each seed's curves are read as in
    :func:`compare_at_equal_loss` (best accuracy measured at that loss or below);
    the seed's gap is ``family``'s value minus the largest value of the other families
    (those in ``exclude`` left out: no defense is not a defense). The row holds the mean
    gap over the seeds where both exist, Student's t interval, and which baseline was
    best most often. A level where ``family`` or every baseline loses more has no gap.
    """
    from collections import Counter

    by = _curves(records)
    if not any(k[1] == family for k in by):
        raise ValueError(f"the records hold no defense {family!r}; defenses: {sorted({k[1] for k in by})}")
    rows = []
    for a in sorted({k[0] for k in by}):
        seeds = sorted({k[2] for k in by if k[0] == a})
        for L in levels:
            gaps, best = [], Counter()
            for sd in seeds:
                curves = {f: _value_at(pts, L) for (aa, f, ss), pts in by.items() if aa == a and ss == sd}
                mine = curves.pop(family, math.nan)
                others = {f: v for f, v in curves.items() if f not in exclude and not math.isnan(v)}
                if math.isnan(mine) or not others:
                    continue
                top = max(others, key=others.get)
                gaps.append(mine - others[top])
                best[top] += 1
            rows.append({"attack": a, "privacy_loss": L, "gap": float(np.mean(gaps)) if gaps else None,
                         "ci": _t_interval(gaps, level), "seeds": len(gaps),
                         "best_baseline": best.most_common(1)[0][0] if best else None})
    return rows


#: How the plot names each attack's epsilon (the attacked release's neighbouring relation).
_EPS_NOTE = {"reconstruction": "add/remove, 1 release", "membership": "replace-one, 1 release",
             "tracing": "replace-one, 2 releases"}


def _eps_text(e) -> str:
    return "ε=∞" if e == "inf" or (isinstance(e, float) and math.isinf(e)) else f"ε={e:.3g}"


def plot_tradeoff(records: Sequence[Record]):
    """Accuracy against privacy loss, one panel per attack, one curve per defense (mean ± sd over seeds).

    Each DP-SGD point is labelled with ``epsilon_attacked`` (mean over seeds): the
    epsilon of the release its privacy loss was measured on (the target present,
    q = 1), not the training's (``epsilon_training``, in the records).
    """
    import matplotlib.pyplot as plt

    recs = [r for r in records if r.kind == "tradeoff"]
    attacks = [a for a in ATTACKS if any(r.config["attack"] == a for r in recs)]
    fig, axes = plt.subplots(1, max(1, len(attacks)), figsize=(4.2 * max(1, len(attacks)), 3.6), squeeze=False)
    for ax, a in zip(axes[0], attacks):
        fams = sorted({r.config["family"] for r in recs if r.config["attack"] == a})
        labelled = False
        for f in fams:
            pts = {}
            for r in recs:
                if r.config["attack"] == a and r.config["family"] == f:
                    pts.setdefault(json_key(r.config["defense"]), []).append(
                        (r.numbers["privacy_loss"], r.numbers["accuracy"], r.numbers.get("epsilon_attacked")))
            xs = np.array([np.mean([p[0] for p in v]) for v in pts.values()])
            ys = np.array([np.mean([p[1] for p in v]) for v in pts.values()])
            ex = np.array([np.std([p[0] for p in v]) for v in pts.values()])
            ey = np.array([np.std([p[1] for p in v]) for v in pts.values()])
            order = np.argsort(xs)
            ax.errorbar(xs[order], ys[order], xerr=ex[order], yerr=ey[order], marker="o", ms=4, capsize=2, label=f)
            for v, x, y in zip(pts.values(), xs, ys):
                eps = [p[2] for p in v if p[2] is not None]
                if not eps:
                    continue
                e = "inf" if any(isinstance(q, str) or math.isinf(q) for q in eps) else float(np.mean(eps))
                ax.annotate(_eps_text(e), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
                labelled = True
        ax.set_xlabel(f"privacy loss ({a})")
        ax.set_ylabel("test accuracy")
        ax.set_xlim(-0.03, 1.03)
        ax.set_title(a if not labelled else f"{a}\nε of the attacked release ({_EPS_NOTE[a]})", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def json_key(d: dict) -> str:
    import json
    return json.dumps(d, sort_keys=True)
