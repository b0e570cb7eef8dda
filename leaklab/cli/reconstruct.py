"""``leaklab reconstruct``: attack FedSGD gradients of private images and score the reconstructions."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import add_defense_arguments, defense_json, positive_int, print_json


def register(sub) -> None:
    from ..attacks import list_attacks
    from ..models import list_models

    p = sub.add_parser(
        "reconstruct", help="reconstruct private images from their gradients",
        description=(
            "Run a reconstruction attack over independent trials: each trial draws a fresh model "
            "initialisation and a private batch (records of --dataset, or the --image files with a "
            "random label), releases the batch's FedSGD gradient, attacks it and scores the result "
            "(PSNR, MSE, SSIM after matching, label accuracy)."
        ),
    )
    p.add_argument("--attack", required=True, choices=list_attacks(), help="the attack to run")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", metavar="NAME", help="draw private batches from this image dataset")
    src.add_argument("--image", metavar="PATH", action="append",
                     help="an image file for the private batch (repeat for several)")
    p.add_argument("--model", required=True, choices=list_models(), help="the architecture attacked")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="classes of the model (default: the dataset's, or 10 with --image)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="records per private batch (default 1)")
    p.add_argument("--trials", type=positive_int, default=4, help="independent trials (default 4)")
    p.add_argument("--iters", type=positive_int, default=None,
                   help="iterations of an iterative attack (default: the attack's own)")
    p.add_argument("--image-size", type=positive_int, default=None, metavar="S",
                   help="resize --image files to S x S (default: the first image's size)")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole run (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--out", metavar="DIR", help="write a figure of inputs and reconstructions to DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_defense_arguments(p)
    p.set_defaults(func=cmd_reconstruct)


def read_images(paths: list[str], *, size: int | None = None):
    """Read image files into a ``(N, C, H, W)`` float tensor in ``[0, 1]``.

    Grey images have one channel, colour images three (an alpha channel is
    dropped); when the files mix both, grey ones are repeated to RGB. Every image
    is resized (with a note on stderr) to ``size`` x ``size``, or to the first
    image's size.
    """
    import matplotlib.image as mpimg
    import numpy as np
    import torch
    from skimage.transform import resize

    arrays = []
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"image file not found: {path}")
        try:
            a = np.asarray(mpimg.imread(path))
        except Exception as exc:  # noqa: BLE001  (any reader failure is a bad input file)
            raise ValueError(f"cannot read image file {path}: {exc}") from None
        if a.dtype.kind in "ui":
            a = a.astype(np.float64) / np.iinfo(a.dtype).max
        a = a.astype(np.float64)
        if a.ndim == 3:
            a = a[..., :3] if a.shape[-1] >= 3 else a[..., :1]
        elif a.ndim == 2:
            a = a[..., None]
        else:
            raise ValueError(f"image file {path} has shape {a.shape}; expected a grey or colour image")
        arrays.append((path, a))
    channels = 3 if any(a.shape[-1] == 3 for _, a in arrays) else 1
    h, w = (size, size) if size is not None else arrays[0][1].shape[:2]
    out = []
    for path, a in arrays:
        if a.shape[-1] != channels:
            a = np.repeat(a, channels, axis=-1)
        if a.shape[:2] != (h, w):
            print(f"leaklab: resizing {path} from {a.shape[0]}x{a.shape[1]} to {h}x{w}", file=sys.stderr)
            a = resize(a, (h, w), anti_aliasing=True)
        out.append(np.clip(a, 0.0, 1.0).transpose(2, 0, 1))
    return torch.tensor(np.ascontiguousarray(np.stack(out)), dtype=torch.float32).contiguous()


def cmd_reconstruct(args) -> int:
    from ..attacks.run import run_reconstruction
    from ..data import dataset_info
    from ..results import _jsonable
    from ..runtime import get_device

    device = get_device(args.device)
    if args.dataset is not None:
        dataset_info(args.dataset)           # a ValueError names the datasets for an unknown name
        source = {"dataset": args.dataset}
    else:
        images = read_images(args.image, size=args.image_size)
        if args.batch_size > images.shape[0]:
            raise ValueError(f"--batch-size {args.batch_size} is larger than the {images.shape[0]} "
                             f"--image files given")
        source = {"images": images}
    run = run_reconstruction(attack=args.attack, model=args.model, num_classes=args.num_classes,
                             batch_size=args.batch_size, trials=args.trials, iters=args.iters,
                             seed=args.seed, device=device, progress=not args.json and sys.stderr.isatty(),
                             defense=args.defense, adaptive=args.adaptive, **source)
    figure = None
    if args.out:
        import matplotlib
        matplotlib.use("Agg")

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        figure = out / f"reconstruct_{args.attack}_{args.model}.png"
        run.figure().savefig(figure, dpi=120)
    summary = run.summary()
    if args.json:
        print_json(_jsonable({
            "attack": args.attack, "model": args.model, "config": run.config, "seed": args.seed,
            "device": str(device), **defense_json(args.defense, args.adaptive),
            "seconds": run.seconds, "summary": summary, "trials": run.trials(),
            "figure": None if figure is None else str(figure),
        }))
        return 0
    print(f"{args.attack} on {args.model}, {run.config['data']}, batch {args.batch_size}, "
          f"{args.trials} trials in {run.seconds:.1f} s ({summary['seconds_per_trial']:.2f} s per trial)")
    if args.defense is not None:
        dj = defense_json(args.defense, args.adaptive)
        eps = f", epsilon {dj['epsilon']:.3g} at delta {dj['delta']:g} ({dj['accountant']})" if "epsilon" in dj else ""
        print(f"defense {args.defense.spec()}, {'adaptive' if args.adaptive else 'static'} attack{eps}")
    print(f"{'trial':>5}  {'PSNR dB':>8}  {'SSIM':>6}  {'MSE':>9}  labels")
    for i, t in enumerate(run.trials()):
        print(f"{i:>5}  {t['psnr']:8.2f}  {t['ssim']:6.3f}  {t['mse']:9.2e}  {t['label_accuracy']:.2f}")
    print(f"images at PSNR >= 30 dB: {summary['success_rate_30db']:.0%}; mean PSNR {summary['psnr_mean']:.2f} dB "
          f"(capped at 100), mean SSIM {summary['ssim_mean']:.3f}")
    if figure is not None:
        print(f"figure: {figure}")
    return 0
