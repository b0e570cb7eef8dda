"""Run a reconstruction attack end to end over many trials and score it.

One call plays the whole game ``T`` times at once: each trial gets its own model
initialisation (or a given, e.g. trained, model), its own private batch drawn
from a dataset or taken from given images, the FedSGD gradient of that batch
(:func:`leaklab.fl.batch_gradients`, one model per trial), the attack's
reconstruction, and its scores after matching reconstructions to inputs.

>>> run = run_reconstruction(attack="idlg", model="mlp", dataset="digits", trials=2,
...                          iters=20, progress=False, model_options={"hidden": ()})
>>> run.scores.psnr.shape
torch.Size([2, 1])
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .._checks import check_positive_int, check_tensor
from ..data import Dataset, load_dataset
from ..release import release
from ..data.photos import PHOTOGRAPHS, photographs  # noqa: F401  (re-exported: they used to live here)
from ..metrics.image import ImageScores, score_images
from ..models import build_model
from ..results import Record
from ..runtime import get_device
from ..validate import check_model, check_reconstruction_sizes
from .base import Reconstruction, get_attack

__all__ = ["ReconstructionRun", "run_reconstruction", "stack_params", "photographs", "PHOTOGRAPHS"]


def stack_params(models: list[nn.Module]) -> dict[str, torch.Tensor]:
    """The parameters of several models of one architecture, stacked along a new trial dimension."""
    if not models:
        raise ValueError("models must hold at least one model")
    names = [k for k, _ in models[0].named_parameters()]
    return {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]) for k in names}


@dataclass
class ReconstructionRun:
    """The outcome of :func:`run_reconstruction`.

    ``x`` ``(T, B, C, H, W)`` and ``y`` ``(T, B)`` are the private batches,
    ``result`` what the attack returned, ``scores`` the matched scores
    (:class:`leaklab.metrics.ImageScores`; ``scores.x_hat`` holds the
    reconstructions in the order of ``x``), ``seconds`` the attack's wall time.
    """

    config: dict
    x: torch.Tensor
    y: torch.Tensor
    result: Reconstruction
    scores: ImageScores
    seconds: float
    seed: int = 0
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    @property
    def x_hat(self) -> torch.Tensor:
        return self.scores.x_hat

    def trials(self) -> list[dict]:
        """One dict per trial: mean ``psnr``, ``mse``, ``ssim`` over its batch, ``label_accuracy``, ``loss``."""
        s, out = self.scores, []
        for t in range(self.x.shape[0]):
            out.append({
                "psnr": float(s.psnr[t].mean()), "mse": float(s.mse[t].mean()),
                "ssim": float(s.ssim[t].mean()), "label_accuracy": float(s.label_accuracy[t]),
                "loss": None if self.result.loss is None else float(self.result.loss[t]),
            })
        return out

    def summary(self) -> dict:
        """Means over all images, the success rate at 30 dB, and the time per trial.

        Keys: those of :meth:`leaklab.metrics.image.ImageScores.summary` (``images``,
        ``psnr_mean`` capped at 100 dB, ``psnr_median``, ``ssim_mean``, ``mse_mean``,
        ``label_accuracy`` — NaN when the attack recovers no labels —, ``success_rate_30db``),
        ``seconds`` (the attack's wall time) and ``seconds_per_trial``.
        """
        return self.scores.summary() | {"seconds": self.seconds,
                                        "seconds_per_trial": self.seconds / self.x.shape[0]}

    def to_record(self) -> Record:
        """A :class:`leaklab.results.Record` holding the config, the per-trial numbers and the summary."""
        return Record(kind="reconstruction", config=self.config, seed=self.seed,
                      numbers={"trials": self.trials(), "summary": self.summary(), **self.extra},
                      wall_time=self.seconds, device=self.device)

    def figure(self, max_trials: int = 8):
        """Private images above their reconstructions: the batches of the first ``max_trials`` trials (16 images at most)."""
        from ..plot import compare_rows

        n = min(max_trials, self.x.shape[0])
        xs = self.x[:n].flatten(0, 1)[:16]          # (n * B, C, H, W), trial after trial
        xh = self.x_hat[:n].flatten(0, 1)[:16]
        return compare_rows({"private": xs.cpu(), "reconstruction": xh.cpu()})


def _draw_batches(ds: Dataset, trials: int, batch_size: int, gen: torch.Generator):
    if batch_size > len(ds):
        raise ValueError(f"batch_size {batch_size} is larger than the {len(ds)} records of {ds.name!r}")
    idx = torch.stack([torch.randperm(len(ds), generator=gen)[:batch_size] for _ in range(trials)])
    return ds.x[idx], ds.y[idx]


def run_reconstruction(*, attack: str, model: str | nn.Module = "lenet", dataset: str | Dataset | None = None,
                       images: torch.Tensor | None = None, num_classes: int | None = None,
                       batch_size: int = 1, trials: int = 8, iters: int | None = None, seed: int = 0,
                       device=None, progress: bool = True, model_options: dict | None = None,
                       defense=None, adaptive: bool = False, **attack_options) -> ReconstructionRun:
    """Attack ``trials`` independent FedSGD releases with the attack registered as ``attack``.

    The private batches come from ``dataset`` (a name or a :class:`~leaklab.data.Dataset`;
    each trial draws ``batch_size`` records and their labels) or from ``images``
    ``(N, C, H, W)`` in ``[0, 1]`` (trial ``t`` takes images ``t*B, ..., t*B + B - 1``
    modulo ``N``, each with a label drawn at random). ``model`` is a registered model
    name (a fresh initialisation per trial, options in ``model_options``) or an
    ``nn.Module`` whose current weights (e.g. trained ones) every trial shares.
    ``iters`` and ``attack_options`` go to the attack.

    ``defense`` (a :class:`~leaklab.defenses.Defense`, a spec such as ``"prune:ratio=0.9"``,
    or ``None``) is what every client applies on the release path (a model-side
    defense such as VIB changes each trial's model); its noise is drawn from a
    generator seeded by ``seed``. ``adaptive`` makes an optimisation attack (``dlg``,
    ``idlg``, ``ig``) simulate the defense while it matches (see
    :func:`leaklab.attacks.optimization.matching_objective`); a static attack ignores it.
    """
    from ..defenses import as_defense

    fn = get_attack(attack)
    if not isinstance(model, (str, nn.Module)):
        raise TypeError(f"model must be a registered model name or a torch.nn.Module, got {type(model).__name__}")
    defense = as_defense(defense)
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False, got {adaptive!r}")
    takes_defense = "defense" in inspect.signature(fn).parameters
    if adaptive and not takes_defense:
        raise ValueError(f"attack {attack!r} has no adaptive variant (it reads the release directly); "
                         f"adaptive attacks: dlg, idlg, ig")
    check_positive_int("batch_size", batch_size)
    check_positive_int("trials", trials)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if (dataset is None) == (images is None):
        raise ValueError("give exactly one of dataset= or images=")
    dev = get_device(device)
    gen = torch.Generator().manual_seed(seed)
    if images is not None:
        check_tensor("images", images, ndim=4, floating=True)
        if images.min() < 0 or images.max() > 1:
            raise ValueError("images must hold values in [0, 1]")
        if batch_size > images.shape[0]:
            raise ValueError(f"batch_size {batch_size} is larger than the number of images given ({images.shape[0]})")
        if num_classes is None:   # read off the model where there is one
            num_classes = check_model(model, tuple(images.shape[1:])) if isinstance(model, nn.Module) else 10
        check_positive_int("num_classes", num_classes, minimum=2)
        check_reconstruction_sizes(fn, model, tuple(images.shape[1:]), num_classes, trials=trials,
                                   batch_size=batch_size, device=dev)
        n = images.shape[0]
        step = torch.arange(batch_size, device=images.device)
        idx = (torch.arange(trials, device=images.device)[:, None] * batch_size + step[None, :]) % n
        xs, ys = images[idx], torch.randint(num_classes, (trials, batch_size), generator=gen)
        source = "images"
    else:
        ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
        if not isinstance(ds, Dataset):
            raise TypeError(f"dataset must be a dataset name or a Dataset, got {type(dataset).__name__}")
        if ds.modality != "image":
            raise ValueError(f"dataset {ds.name!r} holds {ds.modality} records; reconstruction needs images")
        if num_classes is not None and num_classes != ds.num_classes:
            raise ValueError(f"num_classes {num_classes} does not match dataset {ds.name!r} ({ds.num_classes} classes)")
        num_classes = ds.num_classes
        if batch_size <= len(ds):            # (a larger batch is refused by the draw, naming the dataset's size)
            check_reconstruction_sizes(fn, model, tuple(ds.input_shape), num_classes, trials=trials,
                                       batch_size=batch_size, device=dev)
        xs, ys = _draw_batches(ds, trials, batch_size, gen)
        source = ds.name
    input_shape = tuple(xs.shape[2:])
    if isinstance(model, nn.Module):
        check_model(model, input_shape, num_classes)
    model_options = dict(model_options or {})
    if isinstance(model, nn.Module):
        net = defense.wrap(model.to(dev), seed=seed)
        params = {k: v.detach().unsqueeze(0).expand(trials, *v.shape).clone() for k, v in net.named_parameters()}
        model_name = type(model).__name__
    else:
        seeds = torch.randint(2**31 - 1, (trials,), generator=gen).tolist()
        nets = [build_model(model, input_shape, num_classes, seed=s, **model_options) for s in seeds]
        if defense.acts_on == "model":
            nets = [defense.wrap(n, seed=s) for n, s in zip(nets, seeds)]
        net, params, model_name = nets[0].to(dev), stack_params(nets), model
    params = {k: v.to(dev) for k, v in params.items()}
    xs, ys = xs.to(dev), ys.to(dev)
    noise = torch.Generator(device=dev).manual_seed(seed + 1)
    grads = release(net, xs, ys, params=params, params_batched=True, defense=defense, generator=noise)
    kwargs = dict(attack_options)
    if adaptive and getattr(net, "secret_parameters", ()):
        # The client's secrets (SPN's head and codes) are unknowns to an adaptive attacker:
        # matching with the true ones would be an oracle. The defense's own adaptive attack.
        own = getattr(defense, "adaptive_attack", None)
        if own is None:
            raise ValueError(f"defense {defense.name!r} keeps secret parameters but names no adaptive attack")
        fn = get_attack(own)
        kwargs = {"method": "ig" if attack == "ig" else "dlg", **{k: v for k, v in kwargs.items() if k != "labels"}}
    elif takes_defense:
        kwargs.update(defense=defense, adaptive=adaptive)
    if iters is not None:
        if "iters" not in inspect.signature(fn).parameters:
            raise ValueError(f"attack {attack!r} takes no iters (it is not iterative)")
        kwargs["iters"] = check_positive_int("iters", iters)
    start = time.perf_counter()
    result = fn(net, params, grads, input_shape=input_shape, num_classes=num_classes, batch_size=batch_size,
                device=dev, seed=seed, progress=progress, **kwargs)
    seconds = time.perf_counter() - start
    scores = score_images(xs, result.x.to(dev), y=ys, y_hat=None if result.y is None else result.y.to(dev))
    config = {"attack": attack, "model": model_name, "model_options": model_options, "data": source,
              "input_shape": list(input_shape), "num_classes": num_classes, "batch_size": batch_size,
              "trials": trials, "iters": iters, "attack_options": {k: v for k, v in attack_options.items()
                                                                  if isinstance(v, (int, float, str, bool))},
              "defense": defense.config(), "adaptive": adaptive}
    extra = {}
    if defense.name == "dp":    # one release of a batch that holds the record: sample rate 1, one step
        extra["privacy"] = defense.privacy(delta=1e-5, sample_rate=1.0, steps=1)
    return ReconstructionRun(config=config, x=xs.cpu(), y=ys.cpu(), result=result,
                             scores=ImageScores(**{k: getattr(scores, k).cpu() for k in
                                                   ("mse", "psnr", "ssim", "label_accuracy", "perm", "x_hat")}),
                             seconds=seconds, seed=seed, device=str(dev), extra=extra)
