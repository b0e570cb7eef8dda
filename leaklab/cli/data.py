"""``leaklab data list`` and ``leaklab data show NAME``."""
from __future__ import annotations

from .common import check_out_dir, positive_int, print_json

#: The largest sample grid ``data show --samples`` draws (a bigger grid is unreadable).
MAX_SAMPLES = 256


def samples(text: str) -> int:
    """``--samples``: a positive integer up to :data:`MAX_SAMPLES`."""
    import argparse

    n = positive_int(text)
    if n > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SAMPLES} samples, got {n}")
    return n


def register(sub) -> None:
    p = sub.add_parser("data", help="list and inspect datasets", description="List and inspect datasets.")
    dsub = p.add_subparsers(dest="data_command", metavar="{list,show}")
    dsub.required = True
    pl = dsub.add_parser("list", help="list every dataset", description="List every registered dataset.")
    pl.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    pl.set_defaults(func=cmd_list)
    ps = dsub.add_parser("show", help="summarise one dataset", description="Summarise a dataset and draw samples.")
    ps.add_argument("name", help="dataset name (see 'leaklab data list')")
    ps.add_argument("--out", metavar="DIR", help="write a grid of samples to DIR/NAME.png")
    ps.add_argument("--samples", type=samples, default=None,
                    help=f"number of samples in the grid written with --out (default 32, at most {MAX_SAMPLES})")
    ps.add_argument("--seed", type=int, default=0, help="seed for drawing samples")
    ps.add_argument("--json", action="store_true", help="print the summary as JSON")
    ps.set_defaults(func=cmd_show)


def cmd_list(args) -> int:
    from ..data import list_datasets

    infos = list_datasets()
    if args.json:
        print_json([{
            "name": i.name, "modality": i.modality, "size": i.size, "num_classes": i.num_classes,
            "input_shape": list(i.input_shape), "task": i.task, "games": list(i.games),
            "attributes": {k: list(v) for k, v in i.attributes.items()}, "embedded": i.embedded,
            "source": i.source,
        } for i in infos])
        return 0
    rows = [("name", "modality", "size", "embedded", "games")]
    rows += [(i.name, i.modality, str(i.size), "yes" if i.embedded else "download", ",".join(i.games))
             for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def cmd_show(args) -> int:
    import torch

    from ..data import dataset_info, load_dataset

    info = dataset_info(args.name)  # raises ValueError naming the datasets for an unknown name
    if args.samples is not None and not args.out:
        raise ValueError("--samples sets the size of the grid written with --out; add --out DIR")
    out = check_out_dir(args.out)   # before loading (or downloading) anything
    ds = load_dataset(args.name)
    summary = info.to_dict() | {
        "loaded": len(ds),
        "class_counts": torch.bincount(ds.y, minlength=ds.num_classes).tolist(),
        "attribute_counts": {k: torch.bincount(v, minlength=len(info.attributes[k])).tolist()
                             for k, v in ds.attributes.items()},
        "users": None if ds.users is None else int(ds.users.max()) + 1,
    }
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        from ..plot import sample_grid

        fig = sample_grid(ds, args.samples or 32, seed=args.seed)
        path = out / f"{info.name}.png"
        fig.savefig(path, dpi=120)
        summary["figure"] = str(path)
    if args.json:
        print_json(summary)
        return 0
    print(f"{info.name}: {info.description}")
    print(f"  modality     {info.modality}, input shape {tuple(info.input_shape)}")
    print(f"  task         {info.task} ({info.num_classes} classes)")
    print(f"  records      {len(ds)}; per class {summary['class_counts']}")
    for k, names in info.attributes.items():
        print(f"  attribute    {k}: " + ", ".join(f"{n} {c}" for n, c in zip(names, summary['attribute_counts'][k])))
    if summary["users"]:
        print(f"  users        {summary['users']}")
    print(f"  games        {', '.join(info.games)}")
    print(f"  source       {info.source}")
    if args.out:
        print(f"  figure       {summary['figure']}")
    return 0
