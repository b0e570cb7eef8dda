"""Batched DLG against a plain one-trial-at-a-time DLG loop, side by side in one run.

The private data are photographs shipped with scikit-image, written as 32x32 RGB
PNG files into a temporary folder and read back as ``leaklab reconstruct --image``
reads them. Every trial attacks the FedSGD gradient of one photograph (batch 1)
with a random label on a freshly initialised sigmoid LeNet with ``--num-classes``
outputs (default 100). The trials are those of the command: for photograph ``c``
(the first ``--photos`` of them), ``leaklab reconstruct --attack dlg --image P
--model lenet --num-classes 100 --trials 3 --seed SEED+c`` draws three labels and
three model initialisations; the benchmark draws the same ones. Three ways to
attack the same trials:

* plain loop: one trial after the other, ``torch.optim.LBFGS`` (its defaults:
  lr 1, up to 20 inner iterations per step) over a random-normal dummy image and
  a random dummy label optimised jointly, ``--steps`` calls of ``step`` on the
  squared gradient distance, as the original DLG code does it;
* leaklab, warm engine: :func:`leaklab.attacks.dlg` with its default settings on
  all trials at once, inside this process;
* leaklab, whole process: the command above, one call per photograph, run as a
  user runs it (a fresh process each: start-up, reading the image, the attack,
  scoring, printing), timed from outside.

It prints the wall time per trial of each, the ratios to the plain loop and the
success rates (PSNR at least 30 dB). Run by hand::

    python benchmarks/reconstruct.py                  # CPU, 3 photographs x 3 trials
    python benchmarks/reconstruct.py --device cuda --photos 9 --trials 32
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
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


def command_trials(photo: torch.Tensor, *, trials: int, num_classes: int, seed: int):
    """The labels and models that ``leaklab reconstruct --image ... --seed seed`` draws (see run_reconstruction)."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.randint(num_classes, (trials, 1), generator=gen)
    seeds = torch.randint(2**31 - 1, (trials,), generator=gen).tolist()
    models = [leaklab.build_model("lenet", tuple(photo.shape), num_classes, seed=s) for s in seeds]
    return photo.expand(trials, 1, *photo.shape).clone(), ys, models


def run_command(path: str, *, trials: int, num_classes: int, seed: int, device: str) -> tuple[float, list[float]]:
    """Wall time of one ``leaklab reconstruct`` process and the PSNR of its trials."""
    cmd = [sys.executable, "-m", "leaklab", "reconstruct", "--attack", "dlg", "--image", path, "--model", "lenet",
           "--num-classes", str(num_classes), "--trials", str(trials), "--seed", str(seed), "--device", device,
           "--json"]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return wall, [t["psnr"] for t in json.loads(out.stdout)["trials"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--photos", type=int, default=3, help="photographs, one command call each (default 3)")
    ap.add_argument("--trials", type=int, default=3, help="trials per photograph (default 3)")
    ap.add_argument("--num-classes", type=int, default=100, help="outputs of the LeNet (default 100)")
    ap.add_argument("--plain-trials", type=int, default=None,
                    help="trials of the plain loop (default: all); fewer are timed per trial")
    ap.add_argument("--steps", type=int, default=300, help="L-BFGS steps of the plain loop (default 300)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads in this process (default 1; 0 leaves torch's choice)")
    ap.add_argument("--no-process", action="store_true", help="skip the whole-process runs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = leaklab.get_device(args.device)
    K = args.num_classes

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp))[:args.photos]
        photos = read_images(paths)                                       # (P, 3, 32, 32)
        xs, ys, models = [], [], []
        for c in range(len(paths)):
            x, y, m = command_trials(photos[c], trials=args.trials, num_classes=K, seed=args.seed + c)
            xs.append(x), ys.append(y), models.extend(m)
        xs, ys = torch.cat(xs).to(device), torch.cat(ys).to(device)       # (T, 1, 3, 32, 32), (T, 1)
        T = xs.shape[0]
        plain_T = min(T, args.plain_trials or T)

        # whole processes: the command as a user runs it
        proc_wall, proc_psnr = 0.0, []
        if not args.no_process:
            for c, path in enumerate(paths):
                w, p = run_command(path, trials=args.trials, num_classes=K, seed=args.seed + c,
                                   device=args.device)
                proc_wall += w
                proc_psnr += p
        proc_s = proc_wall / T

    # the warm engine: every trial in one call
    params = {k: v.to(device) for k, v in stack_params(models).items()}
    net = models[0].to(device)
    grads = batch_gradients(net, xs, ys, params=params, params_batched=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    rec = dlg(net, params, grads, input_shape=(3, 32, 32), num_classes=K, batch_size=1, device=device,
              seed=args.seed, progress=False, threads=None)
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

    def row(name, s, psnr, extra=""):
        p = torch.as_tensor(psnr, dtype=torch.float64).flatten()
        ok = int((p >= 30).sum())
        return (f"{name:<36} {s:8.2f} s/trial   PSNR>=30dB: {ok}/{p.numel()}   PSNR median "
                f"{float(p.median()):6.1f} dB   per trial: {' '.join(f'{v:.0f}' for v in p.tolist())}{extra}")

    print(f"device: {leaklab.describe_device(device)}; torch threads here: {torch.get_num_threads()}; "
          f"sigmoid LeNet, {K} classes, 32x32 RGB photographs ({len(paths)} x {args.trials} trials), batch 1")
    print(row(f"plain loop (LBFGS x{args.steps}, joint label)", plain_s, plain.psnr,
              f"   labels {float(plain.label_accuracy.mean()):.2f}"))
    conv = rec.info["converged"]
    print(row("leaklab dlg, warm engine (all trials)", ours_s, ours.psnr,
              f"   converged {int(conv.sum())}/{conv.numel()}, evaluations per trial "
              f"{' '.join(str(int(e)) for e in rec.info['evaluations'])}"))
    if not args.no_process:
        print(row("leaklab reconstruct, whole processes", proc_s, proc_psnr,
                  f"   ({len(paths)} calls, {proc_wall:.1f} s in all)"))
    print(f"time per trial / plain loop: warm engine {ours_s / plain_s:.3f}"
          + ("" if args.no_process else
             f", whole process {proc_s / plain_s:.3f} (target <= 0.35: "
             f"{'met' if proc_s / plain_s <= 0.35 else 'NOT met'})"))
    if not args.no_process:
        ok = sum(p >= 30 for p in proc_psnr)
        print(f"whole process success: {ok}/{len(proc_psnr)} trials at PSNR >= 30 dB "
              f"(target >= {max(1, (8 * len(proc_psnr) + 8) // 9)}: "
              f"{'met' if 9 * ok >= 8 * len(proc_psnr) else 'NOT met'})")


if __name__ == "__main__":
    main()
