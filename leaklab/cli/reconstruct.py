"""``leaklab reconstruct``: attack FedSGD gradients of private images and score the reconstructions."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import (JSON_NOTE, add_defense_arguments, available_memory, check_adaptive, check_out_dir,
                     defense_json, gigabytes, positive_int, print_json)


def register(sub) -> None:
    from ..attacks import list_attacks
    from ..models import list_models

    p = sub.add_parser(
        "reconstruct", help="reconstruct private images from their gradients",
        description=(
            "Run a reconstruction attack over independent trials: each trial draws a fresh model "
            "initialisation and a private batch (records of --dataset, or the --image files with a "
            "random label), releases the batch's FedSGD gradient, attacks it and scores the result "
            "(PSNR, MSE, SSIM after matching, label accuracy). Each trial's line gives the mean "
            "over its batch and, for a batch of several records, the PSNR of every record; attacks "
            "that certify records (analytic) also give how many they recovered exactly."
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
    p.add_argument("--image-size", type=image_size, default=None, metavar="S",
                   help="resize --image files to S x S (default: the first image's size)")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole run (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--out", metavar="DIR", help="write a figure of inputs and reconstructions to DIR")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of a table: the run's config; summary, over all images: "
                        "images, psnr_mean (each PSNR capped at 100 dB), psnr_median, ssim_mean, mse_mean, "
                        "label_accuracy (null when the attack recovers no labels), success_rate_30db, seconds, "
                        "seconds_per_trial; trials, one entry each with the means over its batch: psnr, mse, ssim, "
                        "label_accuracy, loss (the final matching loss; null for attacks without one), "
                        "psnr_records (one per record), recovered_exactly (attacks that certify records); with "
                        "DP-SGD, epsilon (add or remove a record) and epsilon_replace (replace one) at delta, RDP "
                        "accountant, one release at sample rate 1. An exact reconstruction has an infinite PSNR: "
                        "null, with psnr_infinite: 1 beside it (psnr_records_infinite: 1 at the exact records). "
                        + JSON_NOTE)
    add_defense_arguments(p)
    from . import malicious

    malicious.add_arguments(p)               # --bins, --clients, --secure, ... of --attack imprint|trap
    p.set_defaults(func=cmd_reconstruct)


def image_size(text: str) -> int:
    """``--image-size``: a side of at least 4 pixels (the smallest the models accept)."""
    import argparse

    v = positive_int(text)
    if v < 4:
        raise argparse.ArgumentTypeError(f"expected a side of at least 4 pixels, got {v}")
    return v


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

    arrays = []
    for path in paths:
        check_image_path(path)
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
            from skimage.transform import resize

            a = resize(a, (h, w), anti_aliasing=True)
        out.append(np.clip(a, 0.0, 1.0).transpose(2, 0, 1))
    return torch.tensor(np.ascontiguousarray(np.stack(out)), dtype=torch.float32).contiguous()


def cmd_reconstruct(args) -> int:
    from ..attacks.run import run_reconstruction
    from ..data import dataset_info
    from ..results import _jsonable
    from ..runtime import get_device

    device = get_device(args.device)
    check_adaptive(args)
    check_out_dir(args.out)                  # before any work: a file in the way, no permission, ...
    from . import malicious

    if malicious.handles(args):              # a malicious server's model: its own round (cli/malicious.py)
        return malicious.run(args)
    if args.dataset is not None:
        info = dataset_info(args.dataset)    # a ValueError names the datasets for an unknown name
        if info.modality != "image":
            raise ValueError(f"--dataset {args.dataset} holds {info.modality} records; reconstruct needs an "
                             "image dataset (see 'leaklab data list')")
        source = {"dataset": args.dataset}
        input_shape, num_classes = tuple(info.input_shape), args.num_classes or info.num_classes
    else:
        if args.image_size is None:
            check_image_sizes(args.image)
        header = header_shape(args.image, args.image_size)
        if header is not None:             # before decoding and resizing the files
            check_resources(args, header, args.num_classes or 10, device, from_images=True)
        images = read_images(args.image, size=args.image_size)
        if args.batch_size > images.shape[0]:
            raise ValueError(f"--batch-size {args.batch_size} is larger than the {images.shape[0]} "
                             f"--image files given")
        source = {"images": images}
        input_shape, num_classes = tuple(images.shape[1:]), args.num_classes or 10
    check_resources(args, input_shape, num_classes, device, from_images=args.dataset is None)
    run = run_reconstruction(attack=args.attack, model=args.model, num_classes=args.num_classes,
                             batch_size=args.batch_size, trials=args.trials, iters=args.iters,
                             seed=args.seed, device=device, progress=not args.json and sys.stderr.isatty(),
                             defense=args.defense, adaptive=args.adaptive, **source)
    figure = None
    if args.out:
        import matplotlib
        matplotlib.use("Agg")

        out = Path(args.out)
        figure = out / f"reconstruct_{args.attack}_{args.model}.png"
        run.figure().savefig(figure, dpi=120)
    warn_if_not_converged(run)
    summary = run.summary()
    trials = run.trials()
    recovered = run.result.info.get("recovered")
    for i, t in enumerate(trials):
        t["psnr_records"] = [float(v) for v in run.scores.psnr[i]]          # one per private record
        if recovered is not None:
            t["recovered_exactly"] = int(recovered[i])
    if args.json:
        print_json(_jsonable({
            "attack": args.attack, "model": args.model, "config": run.config, "seed": args.seed,
            "device": str(device), **defense_json(args.defense, args.adaptive),
            "seconds": run.seconds, "summary": summary, "trials": trials,
            "figure": None if figure is None else str(figure),
        }))
        return 0
    print(f"{args.attack} on {args.model}, {run.config['data']}, batch {args.batch_size}, "
          f"{args.trials} trials in {run.seconds:.1f} s ({summary['seconds_per_trial']:.2f} s per trial)")
    if args.defense is not None:
        dj = defense_json(args.defense, args.adaptive)
        eps = (f", epsilon {dj['epsilon']:.3g} (add/remove a record) or {dj['epsilon_replace']:.3g} (change one "
               f"record) at delta {dj['delta']:g} ({dj['accountant']})") if "epsilon" in dj else ""
        print(f"defense {args.defense.spec()}, {'adaptive' if args.adaptive else 'static'} attack{eps}")
    many = args.batch_size > 1
    head = f"{'trial':>5}  {'PSNR dB':>8}  {'SSIM':>6}  {'MSE':>9}  {'labels':>6}"
    if recovered is not None:
        head += f"  {'exact':>5}"
    print(head + ("  PSNR dB per record" if many else ""))
    for i, t in enumerate(trials):
        line = f"{i:>5}  {t['psnr']:8.2f}  {t['ssim']:6.3f}  {t['mse']:9.2e}  {t['label_accuracy']:6.2f}"
        if recovered is not None:
            line += f"  {t['recovered_exactly']:>5}"
        if many:
            line += "  " + " ".join(f"{v:.1f}" for v in t["psnr_records"])
        print(line)
    if recovered is not None:
        print(f"records recovered exactly (certified by the attack): {int(recovered.sum())} of "
              f"{run.scores.psnr.numel()}")
    print(f"images at PSNR >= 30 dB: {summary['success_rate_30db']:.0%}; mean PSNR {summary['psnr_mean']:.2f} dB "
          f"(capped at 100), mean SSIM {summary['ssim_mean']:.3f}")
    if figure is not None:
        print(f"figure: {figure}")
    return 0


# -- checks before the run (resources, image files) and after it (convergence) ------------------

#: Without --image-size the model's input is the image itself; a side above this is refused.
MAX_IMAGE_SIDE = 128


def check_image_path(path: str) -> None:
    """A ValueError in one line when ``path`` is a directory or does not exist."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--image {path} is a directory, not an image file; give the files "
                         f"themselves (e.g. --image {p / 'photo.png'})")
    if not p.is_file():
        raise ValueError(f"image file not found: {path}")


def _pixels(path: str) -> tuple[int, int] | None:
    """(width, height) of an image file read from its header, or None when the header cannot be read."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001  (read_images reports unreadable files)
        return None


def header_shape(paths: list[str], size: int | None) -> tuple[int, int, int] | None:
    """The input shape ``(C, H, W)`` that :func:`read_images` will return, from the files' headers (None if unreadable)."""
    shapes = []
    for path in paths:
        check_image_path(path)
        try:
            from PIL import Image

            with Image.open(path) as im:
                grey = im.mode in ("1", "L", "LA", "I", "I;16", "F")
                shapes.append((1 if grey else 3, im.size[1], im.size[0]))
        except Exception:  # noqa: BLE001  (read_images reports unreadable files)
            return None
    free = available_memory("cpu")
    for path, (ch, hh, ww) in zip(paths, shapes):
        need = hh * ww * 4 * 8 * 3            # RGBA decoded, as float64, and two working copies
        if free is not None and need > 0.8 * free:
            raise ValueError(f"--image {path} is {ww}x{hh} pixels: decoding it needs about {gigabytes(need)}, "
                             f"more than the {gigabytes(0.8 * free)} free; shrink the file first")
    c = max(s[0] for s in shapes)
    h, w = (size, size) if size is not None else shapes[0][1:]
    return (c, h, w)


def check_image_sizes(paths: list[str]) -> None:
    """Refuse, before decoding, image files far larger than a model input when no --image-size is given."""
    for path in paths:
        check_image_path(path)
        wh = _pixels(path)
        if wh is not None and max(wh) > MAX_IMAGE_SIDE:
            raise ValueError(f"--image {path} is {wh[0]}x{wh[1]} pixels, far larger than a model input "
                             f"(without --image-size the image itself is the input; at most "
                             f"{MAX_IMAGE_SIDE} on a side); add --image-size 32")


def estimate_bytes(attack: str, model: str, input_shape, num_classes: int, trials: int, batch_size: int) -> int:
    """A rough estimate of the memory a reconstruction run needs: :func:`leaklab._memory.reconstruction_bytes`."""
    from .._memory import reconstruction_bytes
    from ..attacks import get_attack

    return reconstruction_bytes(get_attack(attack), model, input_shape, num_classes, trials, batch_size)


def check_resources(args, input_shape, num_classes: int, device, *, from_images: bool) -> None:
    """Refuse a run whose estimated memory exceeds what is free, naming the smallest change that fits."""
    free = available_memory(device)
    if free is None:
        return
    budget = 0.8 * free
    need = estimate_bytes(args.attack, args.model, input_shape, num_classes, args.trials, args.batch_size)
    if need <= budget:
        return
    shape = "x".join(map(str, input_shape))
    what = (f"this run needs about {gigabytes(need)} of memory (--trials {args.trials} x --batch-size "
            f"{args.batch_size} x {shape} inputs, {args.model}), more than the {gigabytes(budget)} "
            f"that can be used on {device}")
    one = estimate_bytes(args.attack, args.model, input_shape, num_classes, 1, args.batch_size)
    if one <= budget:
        base = estimate_bytes(args.attack, args.model, input_shape, num_classes, 0, args.batch_size)
        fit = int((budget - base) // max(one - base, 1))
        raise ValueError(f"{what}; --trials {fit} fits")
    def largest(lo: int, hi: int, fits) -> int | None:     # the largest v in [lo, hi] that fits (monotone)
        if hi < lo or not fits(lo):
            return None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        return lo

    b = largest(1, args.batch_size - 1, lambda b: estimate_bytes(
        args.attack, args.model, input_shape, num_classes, 1, b) <= budget)
    if b is not None:
        raise ValueError(f"{what}; --trials 1 --batch-size {b} fits")
    if from_images:
        side = largest(4, min(input_shape[1:]) - 1, lambda v: estimate_bytes(
            args.attack, args.model, (input_shape[0], v, v), num_classes, 1, 1) <= budget)
        if side is not None:
            raise ValueError(f"{what}; --trials 1 --batch-size 1 --image-size {side} fits")
    raise ValueError(f"{what}; even one trial of one record does not fit: use a smaller --model")


def warn_if_not_converged(run) -> None:
    """One line on stderr when most trials' gradient matching did not converge.

    Reads ``run.result.info["converged"]`` (a ``(T,)`` bool tensor) where the attack
    reports it; says nothing otherwise.
    """
    converged = getattr(run.result, "info", {}).get("converged")
    if converged is None:
        return
    try:
        import torch

        flags = torch.as_tensor(converged).bool().flatten()
    except (TypeError, ValueError, RuntimeError):
        return
    n, bad = int(flags.numel()), int((~flags).sum())
    if n and bad * 2 > n:
        print(f"leaklab: warning: the gradient matching did not converge in {bad} of {n} trials "
              "(reconstructions are unreliable: try more --iters, or check that the gradients were "
              "released at the parameters of the model given)", file=sys.stderr)
