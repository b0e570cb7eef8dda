"""Sweeps of a game over batch sizes and observed rounds, and their figure."""
from __future__ import annotations

from collections.abc import Sequence

from .._checks import check_positive_int
from ..results import Record
from .protocol import play

__all__ = ["sweep", "plot_sweep"]


def _ints(name: str, values) -> list[int]:
    if isinstance(values, int):
        values = [values]
    values = list(values)
    if not values:
        raise ValueError(f"{name} must hold at least one value")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} lists a value twice: {values}; list each once")
    return [check_positive_int(name, v) for v in values]


def sweep(game: str, dataset, *, batch_sizes: Sequence[int] = (1, 4, 16), rounds: Sequence[int] = (1,),
          seed: int = 0, progress: bool = True, **options) -> list[Record]:
    """Play ``game`` at every batch size and score it after each number of observed ``rounds``.

    One game is played per batch size, with ``max(rounds)`` rounds; the score after
    ``r`` rounds uses the first ``r`` rounds of the same trials. ``options`` go to
    :func:`~leaklab.games.play`. Returns one :class:`~leaklab.results.Record` per
    (batch size, rounds), with ``numbers`` holding ``auroc``, ``auroc_ci``,
    ``accuracy``, ``advantage``, and in the attribute game on tabular data the
    ``phi``-only baseline on the same trials (``baseline_auroc``,
    ``baseline_auroc_ci``, ``baseline_accuracy``, ``gain_over_phi``).
    """
    from .._progress import tqdm

    sizes = _ints("batch_sizes", batch_sizes)
    rs = sorted(set(_ints("rounds", rounds)))
    out = []
    for b in tqdm(sizes, desc="batch sizes", progress=progress, leave=False):
        res = play(game, dataset, batch_size=b, rounds=max(rs), seed=seed, progress=progress and max(rs) > 1,
                   **options)
        out += [res.record(r) for r in rs]
    return out


def plot_sweep(records: Sequence[Record], *, ax=None, title: str | None = None):
    """AUROC (with its confidence interval) against batch size, one line per number of rounds.

    Where the records carry the ``phi``-only baseline (attribute game on tabular
    data), it is drawn as a dash-dotted black line with its confidence band: the release leaks
    only where the adversary's AUROC rises above it, not above 0.5.
    """
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("records must hold at least one game record")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
    else:
        fig = ax.figure
    by_rounds: dict[int, list[Record]] = {}
    for r in records:
        by_rounds.setdefault(int(r.config["rounds"]), []).append(r)
    for n, recs in sorted(by_rounds.items()):
        recs = sorted(recs, key=lambda r: r.config["batch_size"])
        b = [r.config["batch_size"] for r in recs]
        a = [r.numbers["auroc"] for r in recs]
        lo = [r.numbers["auroc"] - r.numbers["auroc_ci"][0] for r in recs]
        hi = [r.numbers["auroc_ci"][1] - r.numbers["auroc"] for r in recs]
        ax.errorbar(b, a, yerr=[lo, hi], marker="o", capsize=3,
                    label=f"{n} observed round{'s' if n > 1 else ''}")
    base = sorted((r for r in records if "baseline_auroc" in r.numbers),
                  key=lambda r: r.config["batch_size"])
    if base:
        seen: dict[int, Record] = {}
        for r in base:
            seen.setdefault(int(r.config["batch_size"]), r)
        b = sorted(seen)
        a = [seen[k].numbers["baseline_auroc"] for k in b]
        lo = [seen[k].numbers["baseline_auroc_ci"][0] for k in b]
        hi = [seen[k].numbers["baseline_auroc_ci"][1] for k in b]
        line, = ax.plot(b, a, color="black", ls="-.", marker="s", ms=3, label="phi alone (no gradient)")
        ax.fill_between(b, lo, hi, color=line.get_color(), alpha=0.12, lw=0)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xscale("log", base=2)
    sizes = sorted({int(r.config["batch_size"]) for r in records})
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel("AUROC")
    ax.set_ylim(0.4, 1.02)
    first = records[0].config
    ax.set_title(title or f"{first['game']} game on {first['dataset']} ({first['adversary']} adversary)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
