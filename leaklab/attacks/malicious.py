"""A malicious server's round, end to end: build the model, let the clients release, read, score.

:func:`run_imprint` plays the whole game over ``trials`` rounds. The server builds its
model (an imprint block in front of a registered model, or trap weights in its first
layer) from data it holds, disjoint from the clients'. Each of ``clients`` clients
releases through :func:`leaklab.release.release` like for any other model: FedSGD (the
mean gradient of a batch) or FedAvg (the update after ``local_steps`` SGD steps, each
through the defense), every defense applying unchanged. Under secure aggregation the
server reads the sum of the releases, otherwise each release on its own. The attack's
slots are matched to the private records and scored as for every other attack
(:func:`leaklab.metrics.score_images`).

:func:`reads_through` says, from the equations, which of these the reading survives.

>>> run = run_imprint(model="mlp", dataset="digits", batch_size=8, bins=32, trials=1)
>>> run.x.shape
torch.Size([1, 8, 1, 8, 8])
"""
from __future__ import annotations

import time

import torch
from torch import nn

from .._checks import check_choice, check_positive_int
from ..data import Dataset, load_dataset
from ..metrics.image import ImageScores, score_images
from ..models import build_model
from ..release import release
from ..runtime import get_device
from .base import get_attack
from .imprint import STATISTICS, alone_in_bin, bins_of, expected_alone_share, find_imprint, imprint_model, trap_weights
from .run import ReconstructionRun, stack_params

__all__ = ["MALICIOUS_ATTACKS", "PROTOCOLS", "reads_through", "run_imprint"]

MALICIOUS_ATTACKS = ("imprint", "trap")
PROTOCOLS = ("fedsgd", "fedavg")

#: Why the reading survives (or not) each way a client can release; see :func:`reads_through`.
_REASONS = {
    "fedsgd": ("exact", "a record alone in its bin is the ratio of the bin's weight and bias differences"),
    "fedavg1": ("exact", "one local step releases -lr times the gradient; the ratio does not see the factor"),
    "fedavg": ("approximate", "each step adds delta_j x_j to the bin of record j, so the ratio stays x_j while no "
                              "record changes bins; the rows drift by lr * delta * x between steps, and the record's "
                              "error delta_j changes, so the certificate needs a looser tolerance"),
    "secure": ("exact", "the sum of the clients' releases is one release of all their records: a larger batch "
                        "in the same bins"),
    "dp": ("no", "clipping only rescales each record's delta_j (the ratio survives), but the noise, noise * clip per "
                 "entry, swamps a bin difference that one record of the batch contributes"),
    "noise": ("no", "Gaussian noise on every entry of the two rows does not cancel in their difference"),
    "sign": ("no", "each entry becomes +-1: a difference of two rows is 0 or +-2, a pattern of signs, not a record"),
    "prune": ("no", "a bin difference needs every entry of two rows; the cut zeroes the small entries, and the "
                    "rows that few records activate are small: each zeroed entry is a lost pixel of a record"),
}


def reads_through(defense=None, *, protocol: str = "fedsgd", local_steps: int = 1,
                  secure: bool = False) -> tuple[str, str]:
    """Whether the imprint reading survives a release: ``(verdict, reason)``.

    ``verdict`` is ``"exact"`` (records alone in a bin come back to rounding),
    ``"approximate"``, ``"no"`` or ``"unknown"`` (not derived: measure
    it with :func:`run_imprint`). The defense decides first, then the protocol.
    """
    from ..defenses import as_defense

    check_choice("protocol", protocol, PROTOCOLS)
    d = as_defense(defense)
    if d.name != "none":
        if d.name == "dp" and float(d.noise) == 0.0:
            return "exact", "clipping alone rescales each record's delta_j, and the ratio does not see it"
        if d.name in _REASONS:
            return _REASONS[d.name]
        return "unknown", f"not derived for the defense {d.name!r}: measure it"
    if protocol == "fedavg" and check_positive_int("local_steps", local_steps) > 1:
        return _REASONS["fedavg"]
    if secure:
        return _REASONS["secure"]
    return _REASONS["fedavg1" if protocol == "fedavg" else "fedsgd"]


def _build(attack: str, model, input_shape, num_classes: int, aux: torch.Tensor, *, bins: int, statistic: str,
           strength: float, gain: float, rate: float, seed: int, model_options: dict) -> nn.Module:
    base = build_model(model, input_shape, num_classes, seed=seed, **model_options)
    if attack == "imprint":
        return imprint_model(base, aux, bins=bins, statistic=statistic, strength=strength, gain=gain, seed=seed)
    return trap_weights(base, aux, rate=rate, seed=seed)


def run_imprint(*, attack: str = "imprint", model: str = "mlp", dataset: str | Dataset = "digits",
                batch_size: int = 64, bins: int = 128, clients: int = 1, secure: bool = False,
                protocol: str = "fedsgd", local_steps: int = 1, lr: float = 0.1, defense=None,
                statistic: str = "projection", strength: float = 0.01, gain: float = 0.01,
                rate: float | None = None,
                aux_fraction: float = 0.3, trials: int = 1, seed: int = 0, device=None,
                model_options: dict | None = None, tol: float | None = None,
                progress: bool = False) -> ReconstructionRun:
    """``trials`` rounds of a malicious server against ``clients`` clients of ``batch_size`` records each.

    ``attack`` is ``"imprint"`` (an imprint block of ``bins`` units measuring
    ``statistic`` in front of ``model``) or ``"trap"`` (trap weights firing for a share
    ``rate``, default ``1/batch_size``, in ``model``'s first layer). The server's data
    are a share ``aux_fraction`` of ``dataset``; the clients draw their records, without
    replacement, from the rest. ``protocol``, ``local_steps`` and ``lr`` say what a
    client releases, ``defense`` (an object or a spec such as ``"dp:clip=1,noise=1"``)
    what it does to it, ``secure`` whether the server sees only the sum.

    Returns a :class:`~leaklab.attacks.ReconstructionRun` with one problem per read
    release (``trials`` under secure aggregation or with one client, else
    ``trials * clients``), each holding the records behind it. ``scores`` match slots to
    records one to one, as for every attack; ``extra["recovered"]`` marks the records that
    some slot reproduces at 30 dB or more (``extra["nearest_mse"]``: that slot's MSE),
    ``extra["alone"]`` those alone in a bin (from the statistic, not the gradient), and
    ``extra`` also holds their shares, the share expected for equal bins, the share
    certified by the attack and :func:`reads_through`'s verdict.
    """
    from ..defenses import as_defense
    from ..fl import fedavg_update

    check_choice("attack", attack, MALICIOUS_ATTACKS)
    check_choice("protocol", protocol, PROTOCOLS)
    check_choice("statistic", statistic, STATISTICS)
    for name, v in (("batch_size", batch_size), ("bins", bins), ("clients", clients), ("trials", trials),
                    ("local_steps", local_steps)):
        check_positive_int(name, v, minimum=2 if name == "bins" else 1)
    if not isinstance(secure, bool):
        raise TypeError(f"secure must be True or False, got {secure!r}")
    if not isinstance(model, str):
        raise TypeError(f"model must be a registered model name (the server builds it), got {type(model).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    rate = 1.0 / batch_size if rate is None else rate
    defense = as_defense(defense)
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if not isinstance(ds, Dataset):
        raise TypeError(f"dataset must be a dataset name or a Dataset, got {type(dataset).__name__}")
    if ds.modality != "image":
        raise ValueError(f"dataset {ds.name!r} holds {ds.modality} records; the imprint attack reads images")
    aux, pool = ds.split(aux_fraction, seed=seed)
    need = clients * batch_size
    if need > len(pool):
        raise ValueError(f"clients x batch_size = {need} records is more than the {len(pool)} records of "
                         f"{ds.name!r} left to the clients (the server holds {len(aux)})")
    dev = get_device(device)
    gen = torch.Generator().manual_seed(seed)
    seeds = torch.randint(2**31 - 1, (trials,), generator=gen).tolist()
    options = dict(model_options or {})
    nets = [_build(attack, model, ds.input_shape, ds.num_classes, aux.x, bins=bins, statistic=statistic,
                   strength=strength, gain=gain, rate=rate, seed=s, model_options=options) for s in seeds]
    if defense.acts_on == "model":
        nets = [defense.wrap(n, seed=s) for n, s in zip(nets, seeds)]
    net = nets[0].to(dev)
    params = {k: v.to(dev) for k, v in stack_params(nets).items()}          # (T, ...)
    idx = torch.stack([torch.randperm(len(pool), generator=gen)[:need] for _ in range(trials)])
    xs = pool.x[idx].reshape(trials * clients, batch_size, *ds.input_shape).to(dev)   # (T*c, B, ...)
    ys = pool.y[idx].reshape(trials * clients, batch_size).to(dev)
    per_client = {k: v.repeat_interleave(clients, 0) for k, v in params.items()}
    noise = torch.Generator(device=dev).manual_seed(seed + 1)
    if protocol == "fedsgd":
        grads = release(net, xs, ys, params=per_client, params_batched=True, defense=defense, generator=noise)
        scale = 1.0 / batch_size
    else:
        ups = [fedavg_update(net, xs[i], ys[i], local_steps=local_steps, lr=lr, defense=defense, generator=noise,
                             params={k: v[i] for k, v in per_client.items()}) for i in range(trials * clients)]
        grads = {k: torch.stack([u[k] for u in ups]) for k in ups[0]}
        scale = -lr * local_steps / batch_size
    if secure and clients > 1:          # the server sees the sum of each round's releases
        grads = {k: v.reshape(trials, clients, *v.shape[1:]).sum(1) for k, v in grads.items()}
        read_params, xs, ys, slots = params, xs.reshape(trials, need, *ds.input_shape), ys.reshape(trials, need), need
    else:
        read_params, slots = per_client, batch_size
    if tol is None:
        tol = 1e-5 if protocol == "fedsgd" or local_steps == 1 else 0.05
    start = time.perf_counter()
    result = get_attack(attack)(net, read_params, grads, input_shape=ds.input_shape, num_classes=ds.num_classes,
                                batch_size=slots, device=dev, seed=seed, progress=progress, scale=scale, tol=tol)
    seconds = time.perf_counter() - start
    scores = score_images(xs, result.x.to(dev))
    # a record is recovered when some slot reproduces it at 30 dB or more (whatever the one-to-one matching
    # of the scores does with the slots that hold mixtures)
    err = torch.cdist(xs.flatten(2).double(), result.x.to(dev).clamp(0, 1).flatten(2).double()) ** 2
    nearest = err.min(-1).values / xs[0, 0].numel()                         # (P, slots): the best slot's MSE
    recovered = (10 * torch.log10(1.0 / nearest.clamp_min(1e-30)) >= 30.0).cpu()
    extra = {"certified_share": float(result.info["recovered"].sum()) / xs.shape[0] / slots,
             "recovered": recovered, "recovered_share": float(recovered.float().mean()),
             "nearest_mse": nearest.cpu()}
    if attack == "imprint":
        blocks = [find_imprint(n)[1] for n in nets]
        per_trial = xs.reshape(trials, -1, *ds.input_shape)
        b = torch.stack([bins_of(blk.to(dev), per_trial[t]) for t, blk in enumerate(blocks)])   # (T, c*B)
        b = b.reshape(xs.shape[0], slots)
        extra["alone"] = alone_in_bin(b).cpu()
        extra["alone_share"] = float(extra["alone"].float().mean())
        extra["expected_alone_share"] = expected_alone_share(slots, bins)
    verdict, reason = reads_through(defense, protocol=protocol, local_steps=local_steps, secure=secure)
    extra.update(reads=verdict, reason=reason)
    config = {"attack": attack, "model": model, "model_options": options, "data": ds.name,
              "input_shape": list(ds.input_shape), "num_classes": ds.num_classes, "batch_size": batch_size,
              "bins": bins if attack == "imprint" else None, "rate": rate if attack == "trap" else None,
              "statistic": statistic if attack == "imprint" else None, "clients": clients, "secure": secure,
              "protocol": protocol, "local_steps": local_steps, "lr": lr, "trials": trials,
              "aux_fraction": aux_fraction, "defense": defense.config()}
    if defense.name == "dp":
        extra["privacy"] = defense.privacy(delta=1e-5, sample_rate=1.0, steps=local_steps if protocol == "fedavg" else 1)
    return ReconstructionRun(config=config, x=xs.cpu(), y=ys.cpu(), result=result,
                             scores=ImageScores(**{k: getattr(scores, k).cpu() for k in
                                                   ("mse", "psnr", "ssim", "label_accuracy", "perm", "x_hat")}),
                             seconds=seconds, seed=seed, device=str(dev), extra=extra)
