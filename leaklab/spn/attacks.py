"""Reconstruction attacks against the Secret Polarization Network (:mod:`leaklab.defenses.spn`).

A client under SPN releases the gradient of ``CE + alpha * L_pol`` with respect to
the shared parameters; the polarization head ``P`` and the class codes ``t`` that
shape it stay with the client. Three attackers, from the weakest to the strongest:

* ``spn_static`` — ignores the secret part: it treats the shared model (body and
  task head) as the whole network and its cross-entropy as the whole objective,
  and runs DLG or Inverting Gradients (:mod:`leaklab.attacks.optimization`) on it.
* ``spn_adaptive`` — knows the architecture and SPN's settings (``alpha``, ``bits``,
  ``margin``; the defense ``M`` is public) but not the secret: it optimises a dummy
  head ``P~`` (``bits x features``, scaled as the defender's initialisation) and relaxed
  codes ``tanh(s)`` jointly with the dummy input, matching the release of
  ``CE + alpha * L_pol(P~, tanh(s))``.
* ``spn_oracle`` — is given the client's head and codes: the same matching with the
  true secret. It measures what the secret alone protects.

Labels are read off the task head's gradient (iDLG), which SPN does not touch: the
polarization head sits beside the task head, so the task head's gradient is pure
cross-entropy.

All trials (and restarts) run as one batched problem, with :func:`leaklab.attacks.optimization.lbfgs`
(``method="dlg"``: squared distance, L-BFGS) or Adam with the step schedule of
Inverting Gradients (``method="ig"``: cosine distance plus total variation, signed
gradients, the image projected to ``[0, 1]``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from .._checks import check_choice, check_positive_int, check_tensor
from .model import SPNModel, polarization_loss
from ..runtime import get_device
from ..attacks.base import Reconstruction, get_attack, register_attack
from ..attacks.labels import recover_labels
from ..attacks.optimization import DISTANCES, cpu_threads, lbfgs, total_variation

__all__ = ["split_release", "spn_static", "spn_adaptive", "spn_oracle", "spn_matching_objective",
           "SPN_METHODS", "run_spn_reconstruction", "SPN_ATTACKERS"]

Params = dict[str, torch.Tensor]
SPN_METHODS = ("dlg", "ig")
#: The attackers compared by :func:`run_spn_reconstruction`.
SPN_ATTACKERS = ("undefended", "static", "adaptive", "oracle")

_PREFIX = "base."


def _check_spn(model) -> SPNModel:
    if not isinstance(model, SPNModel):
        raise TypeError(f"model must be an SPN model (leaklab.defenses.spn.SPNModel, from "
                        f"make_defense('spn').wrap(...)), got {type(model).__name__}")
    return model


def split_release(model: SPNModel, params: Mapping[str, torch.Tensor],
                  grads: Mapping[str, torch.Tensor]) -> tuple[nn.Module, Params, Params]:
    """The shared model and its released parameters and gradients, under the shared model's own names.

    ``params`` and ``grads`` carry a leading trial dimension; secret entries (the
    polarization head) in ``params`` are dropped, and ``grads`` must hold exactly the
    shared parameters (what a release holds).
    """
    model = _check_spn(model)
    for name, d in (("params", params), ("grads", grads)):
        if not isinstance(d, Mapping):
            raise TypeError(f"{name} must be a dict of tensors, got {type(d).__name__}")
    shared = [k for k, _ in model.named_parameters() if k.startswith(_PREFIX)]
    missing = [k for k in shared if k not in params or k not in grads]
    if missing:
        raise ValueError(f"params and grads must hold the shared parameters; missing {missing}")
    extra = sorted(set(grads) - set(shared))
    if extra:
        raise ValueError(f"grads must hold only the shared parameters (a release), got also {extra}")
    strip = lambda d: {k[len(_PREFIX):]: d[k] for k in shared}  # noqa: E731
    return model.base, strip(params), strip(grads)


# -- the static attacker -----------------------------------------------------------------------------

@register_attack("spn_static")
def spn_static(model: nn.Module, params: Params, grads: Params, *, method: str = "dlg",
               **options) -> Reconstruction:
    """DLG or IG (``method``) on the shared model with cross-entropy, ignoring SPN's secret part.

    ``options`` go to :func:`leaklab.attacks.dlg` / :func:`leaklab.attacks.ig`.
    """
    check_choice("method", method, SPN_METHODS)
    base, p, g = split_release(model, params, grads)
    out = get_attack(method)(base, p, g, **options)
    out.info["attacker"] = "static"
    return out


# -- the adaptive and oracle attackers ---------------------------------------------------------------

class _FeaturesLogits(nn.Module):
    def __init__(self, model: SPNModel):
        super().__init__()
        self.m = model

    def forward(self, x):
        return self.m.features_and_logits(x)


def spn_matching_objective(model: SPNModel, *, input_shape: tuple[int, ...], batch_size: int,
                           distance: str = "l2", tv: float = 0.0, oracle: bool = False,
                           project: bool = False):
    """The gradient-matching objective of one problem against an SPN release.

    Returns ``f(v, params, grads, y, weight, codes)``: ``v`` holds the image (``batch_size *
    prod(input_shape)`` entries) followed, unless ``oracle``, by the dummy secret: the
    head ``P~ = 0.01 * w`` (``bits * features`` entries ``w``) and the code logits ``s``
    (``num_classes * bits``, codes ``tanh(s)``). With ``oracle`` the true ``weight``
    ``(bits, features)`` and ``codes`` ``(num_classes, bits)`` are used instead.
    ``params``/``grads`` are one trial's shared tensors under the shared model's names.
    """
    model = _check_spn(model)
    check_choice("distance", distance, DISTANCES)
    dist = DISTANCES[distance]
    n_img = batch_size * math.prod(input_shape)
    n_w = model.bits * model.features
    tap = _FeaturesLogits(model)
    alpha, margin = model.alpha, model.margin

    def f(v, p, g, y, weight, codes):
        x = v[:n_img].reshape(batch_size, *input_shape)
        if project:
            x = x.clamp(0.0, 1.0)
        if not oracle:
            weight = 0.01 * v[n_img:n_img + n_w].reshape(model.bits, model.features)
            codes = torch.tanh(v[n_img + n_w:]).reshape(model.num_classes, model.bits)

        def loss(q):
            feats, logits = functional_call(tap, {f"m.{_PREFIX}{k}": t for k, t in q.items()}, (x,))
            pol = polarization_loss(F.linear(feats, weight), codes[y], margin=margin)
            return F.cross_entropy(logits, y) + alpha * pol

        d = dist(grad(loss)(p), g)
        if tv:
            d = d + tv * total_variation(x)
        return d

    return f


def _adam(fg, v0, *, iters: int, lr: float, n_img: int, progress: bool, desc: str):
    """Adam on signed gradients with IG's schedule (lr x0.1 at 3/8, 5/8, 7/8); the image kept in [0, 1]."""
    from .._progress import trange

    v = v0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(iters * r) for r in (3 / 8, 5 / 8, 7 / 8)], 0.1)
    best_v, best_f = v.detach().clone(), torch.full((v.shape[0],), math.inf, device=v.device)
    for _ in trange(iters, desc=desc, progress=progress, leave=False):
        f, g = fg(v.detach())
        better = torch.isfinite(f) & (f < best_f)
        best_f[better], best_v[better] = f[better], v.detach()[better]
        v.grad = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0).sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            v[:, :n_img].clamp_(0.0, 1.0)
    f, _ = fg(v.detach())
    better = torch.isfinite(f) & (f < best_f)
    best_f[better], best_v[better] = f[better], v.detach()[better]
    return best_v, best_f, {"iterations": iters}


def _secret_inputs(model: SPNModel, params: Mapping[str, torch.Tensor], codes, T: int, oracle: bool, dev):
    if not oracle:
        return (torch.zeros(T, 1, device=dev), torch.zeros(T, 1, device=dev))
    w = params.get("polar.weight") if isinstance(params, Mapping) else None
    if w is None:
        raise ValueError("the oracle attack needs the secret head: params must hold 'polar.weight' (T, bits, features)")
    if tuple(w.shape) != (T, model.bits, model.features):
        raise ValueError(f"params['polar.weight'] must have shape ({T}, {model.bits}, {model.features}), "
                         f"got {tuple(w.shape)}")
    if codes is None:
        codes = model.codes.expand(T, *model.codes.shape)
    check_tensor("codes", codes, ndim=3, floating=True)
    if tuple(codes.shape) != (T, model.num_classes, model.bits):
        raise ValueError(f"codes must have shape ({T}, {model.num_classes}, {model.bits}), got {tuple(codes.shape)}")
    return w.detach().to(dev), codes.detach().to(dev)


def _joint(model, params, grads, *, input_shape, num_classes, batch_size, device, seed, progress, method,
           iters, restarts, oracle, codes, labels, lr, tv, history, threads) -> Reconstruction:
    model = _check_spn(model)
    check_choice("method", method, SPN_METHODS)
    check_positive_int("restarts", restarts)
    check_positive_int("batch_size", batch_size)
    input_shape = tuple(int(s) for s in input_shape)
    if num_classes != model.num_classes:
        raise ValueError(f"num_classes {num_classes} does not match the model's {model.num_classes}")
    base, p, g = split_release(model, params, grads)
    T = next(iter(g.values())).shape[0]
    for name, d in (("params", p), ("grads", g)):
        for k, v in d.items():
            check_tensor(f"{name}[{k!r}]", v, floating=True)
            if v.shape[0] != T:
                raise ValueError(f"{name}[{k!r}] has {v.shape[0]} trials, expected {T}")
    dev = get_device(device)
    if iters is None:
        iters = 2000 if method == "dlg" else 1000
    check_positive_int("iters", iters)
    p = {k: v.detach().to(dev) for k, v in p.items()}
    g = {k: v.detach().to(dev) for k, v in g.items()}
    if labels is None:
        y = recover_labels(g, num_classes=num_classes, batch_size=batch_size)
    else:
        check_tensor("labels", labels, ndim=2, finite=False)
        if tuple(labels.shape) != (T, batch_size) or labels.is_floating_point():
            raise ValueError(f"labels must be integers of shape ({T}, {batch_size}), got {labels.dtype} "
                             f"{tuple(labels.shape)}")
        y = labels.long()
    y = y.to(dev)
    W, C = _secret_inputs(model, params, codes, T, oracle, dev)
    model = model.to(dev)
    R = restarts
    n_img = batch_size * math.prod(input_shape)
    n_sec = 0 if oracle else model.bits * model.features + model.num_classes * model.bits
    gen = torch.Generator().manual_seed(int(seed))
    v0 = torch.cat([torch.rand(T * R, n_img, generator=gen), torch.randn(T * R, n_sec, generator=gen)], 1).to(dev)
    fn = spn_matching_objective(model, input_shape=input_shape, batch_size=batch_size,
                                distance="l2" if method == "dlg" else "cosine",
                                tv=0.0 if method == "dlg" else tv, oracle=oracle)
    rep = lambda t: t.repeat_interleave(R, dim=0)  # noqa: E731  (problem i*R + r: trial i, restart r)
    P, G, Y, Wr, Cr = {k: rep(v) for k, v in p.items()}, {k: rep(v) for k, v in g.items()}, rep(y), rep(W), rep(C)
    vg = vmap(grad_and_value(fn), in_dims=(0, 0, 0, 0, 0, 0))

    def fg(v, idx=None):
        if idx is None:
            gv, fv = vg(v, P, G, Y, Wr, Cr)
        else:
            gv, fv = vg(v, {k: t[idx] for k, t in P.items()}, {k: t[idx] for k, t in G.items()}, Y[idx],
                        Wr[idx], Cr[idx])
        return fv.detach(), gv.detach()

    name = f"spn_{'oracle' if oracle else 'adaptive'} ({method})"
    with cpu_threads(threads, dev):
        if method == "dlg":
            v, f, info = lbfgs(fg, v0, iters=iters, history=history, progress=progress, desc=name)
        else:
            v, f, info = _adam(fg, v0, iters=iters, lr=lr, n_img=n_img, progress=progress, desc=name)
    f = f.reshape(T, R)
    best = f.argmin(1)
    pick = torch.arange(T, device=dev) * R + best
    x = v[pick, :n_img].reshape(T, batch_size, *input_shape).clamp(0.0, 1.0)
    return Reconstruction(x=x.detach(), y=y, loss=f[torch.arange(T, device=dev), best].detach(), info={
        "attack": name, "attacker": "oracle" if oracle else "adaptive", "method": method, "restarts": R,
        "unknowns": n_img + n_sec, "iterations": info["iterations"]})


@register_attack("spn_adaptive")
def spn_adaptive(model: nn.Module, params: Params, grads: Params, *, input_shape, num_classes: int,
                 batch_size: int, device=None, seed: int = 0, progress: bool = True, method: str = "dlg",
                 iters: int | None = None, restarts: int = 1, labels: torch.Tensor | None = None,
                 lr: float = 0.1, tv: float = 1e-4, history: int = 50, threads: int | None = 1) -> Reconstruction:
    """The adaptive attacker: dummy input, dummy secret head and relaxed codes optimised together.

    ``method="dlg"``: squared gradient distance (normalised), L-BFGS, up to ``iters``
    (default 2000) iterations; ``"ig"``: cosine distance plus ``tv`` times total
    variation, Adam on signed gradients with step ``lr`` (default 1000 iterations).
    Labels are recovered from the task head unless given ``(T, B)``.
    """
    return _joint(model, params, grads, input_shape=input_shape, num_classes=num_classes, batch_size=batch_size,
                  device=device, seed=seed, progress=progress, method=method, iters=iters, restarts=restarts,
                  oracle=False, codes=None, labels=labels, lr=lr, tv=tv, history=history, threads=threads)


@register_attack("spn_oracle")
def spn_oracle(model: nn.Module, params: Params, grads: Params, *, input_shape, num_classes: int,
               batch_size: int, device=None, seed: int = 0, progress: bool = True, method: str = "dlg",
               iters: int | None = None, restarts: int = 1, codes: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, lr: float = 0.1, tv: float = 1e-4, history: int = 50,
               threads: int | None = 1) -> Reconstruction:
    """The attacker given the secret: ``params`` hold the clients' heads ``"polar.weight"`` ``(T, bits, F)``,
    ``codes`` their codes ``(T, num_classes, bits)`` (default: the model's own). Options as :func:`spn_adaptive`."""
    return _joint(model, params, grads, input_shape=input_shape, num_classes=num_classes, batch_size=batch_size,
                  device=device, seed=seed, progress=progress, method=method, iters=iters, restarts=restarts,
                  oracle=True, codes=codes, labels=labels, lr=lr, tv=tv, history=history, threads=threads)


# -- one experiment: the same data and shared weights, four attackers ---------------------------------

def run_spn_reconstruction(*, dataset, model: str = "lenet", alpha: float = 1.0, bits: int = 64,
                           margin: float = 1.0, method: str = "dlg", attackers=SPN_ATTACKERS, trials: int = 4,
                           batch_size: int = 1, iters: int | None = None, restarts: int = 1, seed: int = 0,
                           device=None, progress: bool = True, model_options: dict | None = None,
                           weights: nn.Module | None = None, **attack_options):
    """Attack ``trials`` FedSGD releases of SPN clients and of undefended clients on the same data.

    Trial ``t`` draws ``batch_size`` records, a shared model (a fresh initialisation
    of ``model`` per trial, or the given ``weights``, e.g. a trained model) and an SPN
    client with its own secret head and codes around it. ``"undefended"`` attacks the
    cross-entropy release of the shared model; the others attack the SPN release.
    Returns a :class:`pandas.DataFrame` with one row per trial and attacker: ``psnr``,
    ``ssim``, ``mse`` (means over the batch), ``label_accuracy``, ``loss``.
    """
    import pandas as pd

    from ..data import load_dataset
    from ..defenses.base import make_defense
    from ..metrics.image import score_images
    from ..models import build_model
    from ..release import release
    from ..attacks.run import stack_params

    check_choice("method", method, SPN_METHODS)
    attackers = tuple(attackers)
    for a in attackers:
        check_choice("attackers", a, SPN_ATTACKERS)
    check_positive_int("trials", trials)
    check_positive_int("batch_size", batch_size)
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if ds.modality != "image":
        raise ValueError(f"dataset {ds.name!r} holds {ds.modality} records; reconstruction needs images")
    dev = get_device(device)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(len(ds), generator=gen)[:batch_size] for _ in range(trials)])
    xs, ys = ds.x[idx].to(dev), ds.y[idx].to(dev)
    shape = tuple(xs.shape[2:])
    seeds = torch.randint(2**31 - 1, (trials, 2), generator=gen).tolist()
    defense = make_defense("spn", alpha=alpha, bits=bits, margin=margin)
    bases = ([weights] * trials if weights is not None else
             [build_model(model, shape, ds.num_classes, seed=s, **dict(model_options or {})) for s, _ in seeds])
    clients = [defense.wrap(b.to(dev), seed=s) for b, (_, s) in zip(bases, seeds)]
    params = stack_params(clients)                                  # shared and secret, (T, ...)
    rel = [release(c, xs[t:t + 1], ys[t:t + 1]) for t, c in enumerate(clients)]
    grads = {k: torch.cat([r[k] for r in rel]) for k in rel[0]}     # what the server sees
    codes = torch.stack([c.codes for c in clients])
    common = dict(input_shape=shape, num_classes=ds.num_classes, batch_size=batch_size, device=dev, seed=seed,
                  progress=progress, restarts=restarts, **attack_options)
    if iters is not None:
        common["iters"] = iters
    rows = []
    for a in attackers:
        if a == "undefended":
            base_params = {k[len(_PREFIX):]: v for k, v in params.items() if k.startswith(_PREFIX)}
            plain = release(bases[0].to(dev), xs, ys, params=base_params, params_batched=True)
            out = get_attack(method)(bases[0], base_params, plain, **common)
        elif a == "static":
            out = spn_static(clients[0], params, grads, method=method, **common)
        elif a == "adaptive":
            out = spn_adaptive(clients[0], params, grads, method=method, **common)
        else:
            out = spn_oracle(clients[0], params, grads, method=method, codes=codes, **common)
        s = score_images(xs, out.x.to(dev), y=ys, y_hat=None if out.y is None else out.y.to(dev))
        for t in range(trials):
            rows.append({"attacker": a, "trial": t, "method": method, "alpha": alpha, "bits": bits,
                         "psnr": float(s.psnr[t].mean()), "ssim": float(s.ssim[t].mean()),
                         "mse": float(s.mse[t].mean()), "label_accuracy": float(s.label_accuracy[t]),
                         "loss": None if out.loss is None else float(out.loss[t])})
    return pd.DataFrame(rows)
