"""Batched DLG against a plain one-trial-at-a-time DLG loop, side by side in one run.

The private data are nine photographs shipped with scikit-image, written as 32x32
RGB PNG files into a temporary folder and read back as ``leaklab reconstruct
--image`` reads them. Every trial attacks the FedSGD gradient of one photograph
(batch 1) with a random label on a freshly initialised sigmoid LeNet; trial ``t``
uses photograph ``t mod 9``. Both methods see exactly the same models, labels and
gradients:

* plain loop: one trial after the other, ``torch.optim.LBFGS`` (its defaults:
  lr 1, up to 20 inner iterations per step) over a random-normal dummy image and
  a random dummy label optimised jointly, ``--steps`` calls of ``step`` on the
  squared gradient distance, as the original DLG code does it;
* leaklab: :func:`leaklab.attacks.dlg` with its default settings, all trials at once.

It prints the wall time per trial, the speed ratio and the success rates (PSNR at
least 30 dB) of both. Run by hand::

    python benchmarks/reconstruct.py                      # CPU, 9 trials
    python benchmarks/reconstruct.py --device cuda --trials 256 --plain-trials 16
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import leaklab
from leaklab.attacks import dlg, photographs
from leaklab.attacks.run import PHOTOGRAPHS, stack_params
from leaklab.cli.reconstruct import read_images
from leaklab.fl import batch_gradients
from leaklab.metrics import score_images



def write_photos(folder: Path, size: int = 32) -> list[str]:
    """The nine photographs of :func:`leaklab.attacks.photographs` as ``size`` x ``size`` RGB PNG files."""
    import matplotlib.image as mpimg

    paths = []
    for name, img in zip(PHOTOGRAPHS, photographs(size)):
        path = folder / f"{name}.png"
        mpimg.imsave(path, img.permute(1, 2, 0).numpy())
        paths.append(str(path))
    return paths


def plain_dlg(model, x_true, y_true, *, steps: int, seed: int):
    """One trial in the style of the original DLG code: joint dummy image and label, torch L-BFGS."""
    torch.manual_seed(seed)
    params = list(model.parameters())
    target = torch.autograd.grad(F.cross_entropy(model(x_true), y_true), params)
    target = [g.detach() for g in target]
    dummy_x = torch.randn(x_true.shape, device=x_true.device, requires_grad=True)
    dummy_y = torch.randn(x_true.shape[0], model.classifier.out_features, device=x_true.device,
                          requires_grad=True)
    opt = torch.optim.LBFGS([dummy_x, dummy_y])

    def closure():
        opt.zero_grad()
        out = model(dummy_x)
        loss = torch.mean(torch.sum(-torch.softmax(dummy_y, -1) * F.log_softmax(out, -1), -1))
        dummy_grad = torch.autograd.grad(loss, params, create_graph=True)
        diff = sum(((a - b) ** 2).sum() for a, b in zip(dummy_grad, target))
        diff.backward()
        return diff

    for _ in range(steps):
        opt.step(closure)
    return dummy_x.detach(), dummy_y.detach().argmax(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trials", type=int, default=9, help="trials of the batched attack (default 9)")
    ap.add_argument("--plain-trials", type=int, default=None,
                    help="trials of the plain loop (default: as many as --trials)")
    ap.add_argument("--steps", type=int, default=300, help="L-BFGS steps of the plain loop (default 300)")
    ap.add_argument("--iters", type=int, default=None, help="iterations of leaklab's DLG (default: its own)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads for both methods (default 1; 0 leaves torch's choice)")
    ap.add_argument("--weights", choices=("default", "dlg"), default="default",
                    help="model initialisation: torch's default, or uniform(-0.5, 0.5) for every weight "
                         "and bias as in the original DLG code")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = leaklab.get_device(args.device)
    T = args.trials
    plain_T = min(T, args.plain_trials or T)

    with tempfile.TemporaryDirectory() as tmp:
        photos = read_images(write_photos(Path(tmp)))                     # (9, 3, 32, 32)
    gen = torch.Generator().manual_seed(args.seed)
    xs = photos[torch.arange(T) % len(photos)].unsqueeze(1).to(device)   # (T, 1, 3, 32, 32)
    ys = torch.randint(10, (T, 1), generator=gen).to(device)
    seeds = torch.randint(2**31 - 1, (T,), generator=gen).tolist()
    models = [leaklab.build_model("lenet", (3, 32, 32), 10, seed=s) for s in seeds]
    if args.weights == "dlg":
        for m, s in zip(models, seeds):
            g = torch.Generator().manual_seed(s)
            with torch.no_grad():
                for p in m.parameters():
                    p.copy_(torch.rand(p.shape, generator=g) - 0.5)
    params = {k: v.to(device) for k, v in stack_params(models).items()}
    net = models[0].to(device)
    grads = batch_gradients(net, xs, ys, params=params, params_batched=True)

    kw = {} if args.iters is None else {"iters": args.iters}
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    rec = dlg(net, params, grads, input_shape=(3, 32, 32), num_classes=10, batch_size=1, device=device,
              seed=args.seed, progress=False, threads=None, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ours_s = (time.perf_counter() - start) / T
    ours = score_images(xs, rec.x, y=ys, y_hat=rec.y)

    plain_x, plain_y = [], []
    start = time.perf_counter()
    for t in range(plain_T):
        m = models[t].to(device)
        x_hat, y_hat = plain_dlg(m, xs[t], ys[t], steps=args.steps, seed=args.seed + t)
        plain_x.append(x_hat)
        plain_y.append(y_hat)
    if device.type == "cuda":
        torch.cuda.synchronize()
    plain_s = (time.perf_counter() - start) / plain_T
    plain = score_images(xs[:plain_T], torch.stack(plain_x), y=ys[:plain_T], y_hat=torch.stack(plain_y))

    def row(name, s, sc):
        p = sc.psnr.flatten()
        ok = int((p >= 30).sum())
        return (f"{name:<28} {s:8.2f} s/trial   PSNR>=30dB: {ok}/{p.numel()}   labels: "
                f"{float(sc.label_accuracy.mean()):.2f}   PSNR median {float(p.median()):6.1f} dB   "
                f"PSNR per trial: {' '.join(f'{v:.0f}' for v in p.tolist())}")

    print(f"device: {leaklab.describe_device(device)}; torch threads: {torch.get_num_threads()}; "
          f"sigmoid LeNet ({args.weights} weights), 32x32 RGB photographs, batch 1")
    print(row(f"plain loop (LBFGS x{args.steps})", plain_s, plain))
    print(row(f"leaklab dlg (batched, {rec.info['iterations']} it)", ours_s, ours))
    print(f"speed ratio (plain / leaklab, wall time per trial): {plain_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
