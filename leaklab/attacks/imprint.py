r"""A malicious server: the imprint block (Robbing the Fed) and trap weights, read as a linear system.

Every other attack of leaklab reads the model that everyone agreed on. A malicious
server sends a model of its own making. Fowl et al. (2022, "Robbing the Fed") insert
one fully connected *imprint* block in front of any model; Boenisch et al. (2023, "When
the Curious Abandon Honesty") plant *trap weights* in the first fully connected layer.
Both make a record alone in some row of a layer's gradient, the case chapter 2's
analytic attack reads exactly.

The imprint block (our own construction after Fowl et al.). It has ``K`` units

.. math::

   h_k(x) = \mathrm{ReLU}(m^\top x - c_k), \qquad c_1 < c_2 < \dots < c_K,

every row measuring the same statistic ``s = m^T x`` of the flattened input (the mean
brightness, ``m = 1/N``, or a random projection) against a ladder of thresholds: the
quantiles of ``s`` on data the server holds, so that each of the ``K`` bins
``(c_k, c_{k+1}]`` (and ``(c_K, inf)``) catches a record with probability ``1/K``. The
block returns ``x + u * sum_k h_k(x)`` with one read-out vector ``u`` shared by all
units, so the rest of the model sees its usual input, barely moved. For a record ``j``
the error ``dL/dh_k = u^T dL/dy_j =: delta_j`` is then the same in every unit it
activates, and the released mean-loss gradient of row ``k`` is

.. math::

   \frac{\partial L}{\partial W_k} = \tfrac1B \sum_{j:\, s_j > c_k} \delta_j x_j, \qquad
   \frac{\partial L}{\partial b_k} = \tfrac1B \sum_{j:\, s_j > c_k} \delta_j .

Consecutive rows differ by the records of one bin: row ``k`` minus row ``k+1`` is
``(1/B) sum_{j in bin k} delta_j x_j`` and ``(1/B) sum_{j in bin k} delta_j``. A record
alone in its bin is their ratio, exactly. This module reads every bin that way
(:func:`bin_differences`), certifies a candidate the way the analytic attack does
(the record's own gradient, for one of the labels, must reproduce the bin's bias
difference; that label is recovered with it) and fills the remaining slots with the
uncertified mixtures.

Trap weights (our reading of Boenisch et al.): the server keeps the architecture and
sets the first fully connected layer so that each unit fires for a small share of the
records (here: random rows, each with the bias that puts its threshold at the
``1 - rate`` quantile of its pre-activation on the server's data). A unit that fires for
one record only has a row ratio equal to that record, read and certified as above
without differences.

>>> import torch, leaklab
>>> from leaklab.attacks.imprint import imprint_model, bins_of
>>> digits = leaklab.load_dataset("digits")
>>> base = leaklab.build_model("mlp", digits.input_shape, 10, seed=0)
>>> net = imprint_model(base, digits.x[:500], bins=32, seed=0)
>>> net.imprint.measure.weight.shape       # 32 rows, all measuring one statistic
torch.Size([32, 64])
>>> int(bins_of(net.imprint, digits.x[500:502]).min()) >= 1   # every record lands in a bin
True
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .._checks import check_choice, check_positive_int, check_tensor
from .analytic import first_linear_layer
from .base import Reconstruction, register_attack

__all__ = ["STATISTICS", "ImprintBlock", "ImprintModel", "imprint_model", "smooth_quantiles", "find_imprint",
           "bins_of", "alone_in_bin", "expected_alone_share", "trap_weights", "bin_differences", "read_rows",
           "imprint_attack", "trap_attack"]

#: The statistics an imprint block can measure.
STATISTICS = ("projection", "brightness")


class ImprintBlock(nn.Module):
    """``K`` ReLU units measuring one statistic against a ladder of thresholds; returns ``x + u * sum_k h_k``.

    ``measure`` is an ``nn.Linear(N, K)`` (row ``k``: the direction ``m``, bias ``-c_k``),
    ``readout`` the vector ``u`` ``(N,)`` shared by every unit. Built uncalibrated
    (all zeros: the identity); :func:`imprint_model` sets it from the server's data.
    """

    def __init__(self, input_shape, bins: int):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.bins = check_positive_int("bins", bins, minimum=2)
        n = math.prod(self.input_shape)
        self.measure = nn.Linear(n, self.bins)
        self.readout = nn.Parameter(torch.zeros(n))
        with torch.no_grad():
            self.measure.weight.zero_()
            self.measure.bias.zero_()

    def units(self, x: torch.Tensor) -> torch.Tensor:
        """The unit activations ``h (B, K)`` for inputs ``x (B, *input_shape)``."""
        return torch.relu(self.measure(x.flatten(1)))

    def forward(self, x):
        h = self.units(x)                                       # (B, K)
        return x + (h.sum(1, keepdim=True) * self.readout).reshape(x.shape)


class ImprintModel(nn.Module):
    """A model with an imprint block in front: ``model(imprint(x))``."""

    def __init__(self, imprint: ImprintBlock, model: nn.Module):
        super().__init__()
        self.imprint = imprint
        self.model = model
        n = getattr(model, "num_classes", None)
        if isinstance(n, int):
            self.num_classes = n

    def forward(self, x):
        return self.model(self.imprint(x))


def _aux(name: str, aux, input_shape=None) -> torch.Tensor:
    check_tensor(name, aux, floating=True)
    if aux.ndim < 2 or aux.shape[0] < 2:
        raise ValueError(f"{name} must hold at least two records (M, ...), got shape {tuple(aux.shape)}")
    if input_shape is not None and tuple(aux.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{name} must hold records of shape {tuple(input_shape)}, got {tuple(aux.shape[1:])}")
    return aux


def _generator(seed) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def imprint_model(model: nn.Module, aux: torch.Tensor, *, bins: int, statistic: str = "projection",
                  strength: float = 0.01, gain: float = 0.01, seed: int = 0) -> ImprintModel:
    """``model`` with an imprint block of ``bins`` units in front, calibrated on the server's data ``aux``.

    ``aux`` ``(M, *input_shape)`` are records the server holds (disjoint from the
    clients'). The thresholds ``c_k`` are the ``(k-1)/K`` quantiles of the statistic on
    ``aux``, smoothed (:func:`smooth_quantiles`; ``c_1`` lies below every record), so each
    bin holds a share of about ``1/K`` of such data.
    ``statistic`` is ``"projection"`` (a random unit direction, drawn from ``seed``) or
    ``"brightness"`` (the mean of the input). ``strength`` sets the read-out ``u`` so
    that ``|u * sum_k h_k|`` is about ``strength`` on ``aux``: small, so the model's
    predictions barely change. ``gain`` scales the rows and thresholds (the statistic is
    ``gain * m^T x``): small rows with a large read-out make the rows' gradients large
    beside the rows themselves, so that a FedAvg update ``theta_local - theta``, computed
    in float32, keeps them above the rounding of ``theta``; but each local step then moves
    the rows more, and records drift across bins. The block and ``model`` share
    ``model``'s device.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    aux = _aux("aux", aux)
    check_choice("statistic", statistic, STATISTICS)
    check_positive_int("bins", bins, minimum=2)
    for name, v in (("strength", strength), ("gain", gain)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    gen = _generator(seed)
    flat = aux.flatten(1).double().cpu()                         # (M, N)
    n = flat.shape[1]
    if statistic == "brightness":
        m = torch.full((n,), 1.0 / n, dtype=torch.float64, device=flat.device)
    else:
        m = torch.randn(n, generator=gen, dtype=torch.float64)
        m = m / m.norm()
    s = flat @ m                                                 # (M,)
    levels = torch.arange(1, bins, dtype=torch.float64, device=flat.device) / bins
    c = torch.cat([(s.min() - (s.max() - s.min()) - 1.0)[None], smooth_quantiles(s, levels)])   # (K,) ascending
    block = ImprintBlock(aux.shape[1:], bins)
    block.measure.weight.copy_((gain * m).expand(bins, n).float())
    block.measure.bias.copy_((-gain * c).float())
    u = torch.randn(n, generator=gen, dtype=torch.float64)
    total = gain * torch.relu(s[:, None] - c[None, :]).sum(1).mean()   # the mean of sum_k h_k on aux
    block.readout.copy_((strength * u / u.norm() / total.clamp_min(1e-30)).float())
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    return ImprintModel(block, model).to(dev)


def smooth_quantiles(s: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Quantiles of a kernel density estimate of the sample ``s (M,)`` at ``levels`` (ascending, in (0, 1)).

    A Gaussian kernel of Silverman's bandwidth ``1.06 std M^(-1/5)``; the smoothed
    distribution function is evaluated on a fine grid and inverted by linear
    interpolation. With as many bins as records, the sample's own quantiles make bins of
    very unequal mass (their spacings are nearly exponential); the smoothed ones come
    close to equal mass.
    """
    s = s.double().cpu()
    levels = levels.double().cpu()
    h = 1.06 * float(s.std()) * len(s) ** -0.2
    if not h > 0:
        return torch.quantile(s, levels)
    grid = torch.linspace(float(s.min()) - 6 * h, float(s.max()) + 6 * h, 2048, dtype=torch.float64,
                          device=s.device)
    z = ((grid[:, None] - s[None, :]) / h).float()                 # float32 is plenty for a distribution function
    cdf = torch.special.ndtr(z).double().mean(1)
    # invert the increasing cdf: for each level, interpolate between the grid points around it
    i = torch.searchsorted(cdf, levels).clamp(1, len(grid) - 1)
    f0, f1 = cdf[i - 1], cdf[i]
    w = ((levels - f0) / (f1 - f0).clamp_min(1e-300)).clamp(0, 1)
    return grid[i - 1] + w * (grid[i] - grid[i - 1])


def find_imprint(model: nn.Module) -> tuple[str, ImprintBlock]:
    """The name and module of the imprint block inside ``model`` (a defense's wrapper may hold it)."""
    for name, mod in model.named_modules():
        if isinstance(mod, ImprintBlock):
            return name, mod
    raise ValueError(f"the imprint attack reads a model the server built with an imprint block "
                     f"(leaklab.attacks.imprint.imprint_model); this {type(model).__name__} has none")


def _thresholds(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The threshold ``c_k = -b_k / |w_k|`` of every row (all rows share one direction)."""
    return -bias / weight.norm(dim=-1).clamp_min(1e-30)


def bins_of(block: ImprintBlock, x: torch.Tensor) -> torch.Tensor:
    """The bin of each record of ``x (..., *input_shape)``: the number of units it activates (0: none).

    Bin ``k`` (1-based) is the records activating units ``1..k``: row ``k`` minus row
    ``k + 1`` of the gradient holds exactly them. Computed from the statistic directly,
    not from any gradient (what the tests compare the attack with).
    """
    lead = x.shape[:x.ndim - len(block.input_shape)]
    w, b = block.measure.weight.detach(), block.measure.bias.detach()
    pre = x.reshape(-1, w.shape[1]).to(w) @ w.T + b               # (n, K)
    return (pre > 0).sum(-1).reshape(lead)


def alone_in_bin(bins: torch.Tensor) -> torch.Tensor:
    """Which records are alone in their bin: ``bins (..., B)`` from :func:`bins_of` gives a bool mask ``(..., B)``."""
    same = bins.unsqueeze(-1) == bins.unsqueeze(-2)              # (..., B, B)
    return (same.sum(-1) == 1) & (bins > 0)


def expected_alone_share(batch_size: int, bins: int) -> float:
    """``(1 - 1/K)^(B-1)``: the chance that a record shares its bin with none of ``B - 1`` others.

    Exact when the ``K`` bins are equally likely for every record and records fall
    independently (bins from quantiles of the clients' own distribution).
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("bins", bins, minimum=2)
    return (1.0 - 1.0 / bins) ** (batch_size - 1)


@torch.no_grad()
def trap_weights(model: nn.Module, aux: torch.Tensor, *, rate: float, seed: int = 0) -> nn.Module:
    """Plant trap weights in ``model``'s first fully connected layer (in place; returns ``model``).

    Each unit gets a random Gaussian row and the bias that puts its threshold at the
    ``1 - rate`` quantile of its pre-activation on ``aux``: it fires for a share ``rate``
    of such records. With ``rate`` near ``1/B`` a unit fires for exactly one record of a
    batch of ``B`` with probability about ``1/e``. Only a model whose first layer is a
    linear layer on the flattened input qualifies (e.g. ``mlp``): in a convolution every
    weight sums over positions, so no row of its gradient is a copy of a record.
    """
    aux = _aux("aux", aux)
    try:
        name, layer = first_linear_layer(model, tuple(aux.shape[1:]))
    except ValueError as exc:
        raise ValueError(f"trap weights need a model whose first layer is fully connected on the input, "
                         f"e.g. 'mlp' ({exc}); for a convolutional model put an imprint block in front "
                         f"(imprint_model)") from None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
        raise ValueError(f"rate must be a number in (0, 1), got {rate!r}")
    gen = _generator(seed)
    w = torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64) / math.sqrt(layer.in_features)
    pre = aux.flatten(1).double().cpu() @ w.T                    # (M, K)
    cut = torch.quantile(pre, 1.0 - rate, dim=0)                 # (K,)
    layer.weight.copy_(w.to(layer.weight))
    layer.bias.copy_((-cut).to(layer.bias))
    return model


# -- reading ----------------------------------------------------------------------------------------

def bin_differences(weight_grad: torch.Tensor, bias_grad: torch.Tensor, order: torch.Tensor | None = None):
    """Row ``k`` minus row ``k + 1`` (the last row as it is) of an imprint layer's gradients.

    ``weight_grad (..., K, N)`` and ``bias_grad (..., K)``, rows taken in ``order`` (the
    thresholds ascending; default: as stored). Returns ``(dw (..., K, N), db (..., K))``:
    for bin ``k``, ``sum_{j in bin k} delta_j x_j`` and ``sum_{j in bin k} delta_j``.
    """
    if order is not None:
        weight_grad, bias_grad = weight_grad[..., order, :], bias_grad[..., order]
    dw = weight_grad - F.pad(weight_grad[..., 1:, :], (0, 0, 0, 1))
    db = bias_grad - F.pad(bias_grad[..., 1:], (0, 1))
    return dw, db


def _own_rows(model: nn.Module, params: dict, bias_key: str, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``dl(f(x_i), c)/db`` for every candidate ``x (n, *shape)`` and label ``c``: ``(n, C, K)``."""
    rest = {k: v for k, v in params.items() if k != bias_key}

    def loss(b, xi, yi):
        p = dict(rest)
        p[bias_key] = b
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    labels = torch.arange(num_classes, device=x.device)
    per_label = vmap(grad(loss), in_dims=(None, None, 0))
    per_record = vmap(per_label, in_dims=(None, 0, None), chunk_size=256)
    return per_record(params[bias_key], x, labels)


def read_rows(model: nn.Module, params: dict, weight_grad: torch.Tensor, bias_grad: torch.Tensor, *,
              weight_key: str, bias_key: str, input_shape, num_classes: int, count: int, scale: float,
              differences: bool, tol: float = 1e-5, floor: float = 1e-6):
    """Records read off the rows of one release, certified by their own gradient; one problem.

    ``weight_grad (K, N)`` and ``bias_grad (K,)`` are the release of the layer
    ``weight_key``/``bias_key``; ``params`` the parameters the clients started from.
    With ``differences`` (an imprint layer) the rows are first taken in the order of
    their thresholds and differenced (:func:`bin_differences`). A row (or bin) ``k``
    whose bias entry exceeds ``floor`` times the largest gives the candidate
    ``x_k = dw_k / db_k``; it is certified when, for some label ``c``, ``scale`` times the
    candidate's own bias gradient reproduces ``db_k`` to a relative error below ``tol``
    once the float32 rounding of the released rows (``2e-6`` of their size) is allowed
    for (``scale = 1/B`` for a FedSGD mean over ``B`` records). Each certificate is one
    of ``C`` tries per row, so ``tol`` is kept small: a mixture passes by chance with a
    probability of about ``C * tol`` per row. Certified candidates come
    first, deduplicated (one record alone in several rows is one record), then the
    others by decreasing ``|db_k|``; ``count`` slots in all, zeros where nothing is left.

    Returns ``x (count, *input_shape)``, ``exact (count,)`` and ``labels (count,)``
    (``-1`` where uncertified), all on the gradient's device.
    """
    dev, dtype = weight_grad.device, weight_grad.dtype
    shape = tuple(input_shape)
    K = bias_grad.shape[0]
    order = None
    if differences:
        w, b = params[weight_key], params[bias_key]
        order = torch.argsort(_thresholds(w.double(), b.double()))
    gw, gb = weight_grad.double(), bias_grad.double()
    if differences:
        dw, db = bin_differences(gw, gb, order)
    else:
        dw, db = gw, gb
    x = torch.zeros(count, *shape, dtype=dtype, device=dev)
    exact = torch.zeros(count, dtype=torch.bool, device=dev)
    labels = torch.full((count,), -1, dtype=torch.long, device=dev)
    top = float(db.abs().max()) if db.numel() else 0.0
    if top == 0.0:
        return x, exact, labels
    live = (db.abs() > floor * top).nonzero().flatten()
    cand = dw[live] / db[live, None]                              # (n, N)
    own = _own_rows(model, params, bias_key, cand.to(dtype).reshape(-1, *shape), num_classes).double()
    if differences:                                               # the same differences of the own rows
        own = own[..., order]
        own = own - F.pad(own[..., 1:], (0, 1))
    pred = scale * own[torch.arange(live.numel(), device=live.device), :, live]   # (n, C): each candidate's own row
    # the float32 rounding of the released rows themselves: about eps * (|row k| + |row k+1|)
    rows = gb[order] if differences else gb
    rounding = 2e-6 * (rows.abs() + (F.pad(rows[1:], (0, 1)).abs() if differences else 0))
    err = ((pred - db[live, None]).abs() - rounding[live, None]).clamp_min(0) / db[live, None].abs()
    best, label = err.min(1)
    ok = best < tol
    rank = [int(i) for i in torch.argsort(db[live].abs(), descending=True)]
    kept: list[int] = []
    for i in (i for i in rank if ok[i]):
        if not any(float((cand[i] - cand[j]).norm()) <= 1e-4 * float(cand[i].norm()) for j in kept):
            kept.append(i)                                        # the same record alone in two rows counts once
    # an uncertified bin mixes records with errors of either sign: a mixture far outside the range of the
    # records found is an extrapolation, not a guess of any record, and is left out
    mixed = [i for i in rank if not ok[i]]
    if kept:
        found = cand[kept]
        lo, hi = float(found.min()), float(found.max())
        pad = 0.05 * (hi - lo)
        mixed = [i for i in mixed if float(cand[i].min()) >= lo - pad and float(cand[i].max()) <= hi + pad]
    picks = (kept + mixed)[:count]
    for slot, i in enumerate(picks):
        x[slot] = cand[i].to(dtype).reshape(shape)
        exact[slot] = bool(ok[i])
        labels[slot] = int(label[i]) if ok[i] else -1
    # a bin that mixes records holds two or more of them: its mixture is the best guess for each;
    # without any, the mean of the records found
    for slot in range(len(picks), count):
        if mixed:
            x[slot] = cand[mixed[(slot - len(picks)) % len(mixed)]].to(dtype).reshape(shape)
        elif kept:
            x[slot] = cand[kept].mean(0).to(dtype).reshape(shape)
    return x, exact, labels


def _scale_tol(options: dict, batch_size: int) -> tuple[float, float]:
    scale, tol = options.pop("scale", None), options.pop("tol", 1e-5)
    if options:
        raise TypeError(f"this attack takes no options but scale and tol, got: {', '.join(sorted(options))}")
    scale = 1.0 / batch_size if scale is None else scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale == 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite non-zero number, got {scale!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    return float(scale), float(tol)


def _read_all(model, params, grads, keys, *, input_shape, num_classes, batch_size, scale, tol,
              differences, progress) -> Reconstruction:
    from .._progress import trange

    wkey, bkey = keys
    for key in keys:
        if key not in grads:
            raise ValueError(f"grads has no entry {key!r} (the layer the attack reads)")
    gw, gb = grads[wkey], grads[bkey]
    check_tensor(f"grads[{wkey!r}]", gw, ndim=3, floating=True)
    check_tensor(f"grads[{bkey!r}]", gb, ndim=2, floating=True)
    T = gw.shape[0]
    out = []
    for t in trange(T, desc="read rows", progress=progress and T > 1, leave=False):
        p = {k: v[t].detach() for k, v in params.items()}
        out.append(read_rows(model, p, gw[t].detach(), gb[t].detach(), weight_key=wkey, bias_key=bkey,
                             input_shape=input_shape, num_classes=num_classes, count=batch_size, scale=scale,
                             differences=differences, tol=tol))
    x = torch.stack([o[0] for o in out])
    exact = torch.stack([o[1] for o in out])
    labels = torch.stack([o[2] for o in out])
    return Reconstruction(x=x, y=None, loss=None, info={
        "layer": wkey.rsplit(".", 1)[0], "exact": exact, "recovered": exact.sum(1), "labels": labels,
        "scale": scale, "tol": tol})


@register_attack("imprint")
def imprint_attack(model: nn.Module, params, grads, *, input_shape, num_classes: int, batch_size: int = 1,
                   device=None, seed: int = 0, progress: bool = False, **options) -> Reconstruction:
    """Read records off the bins of the imprint block of ``model`` (see the module text).

    ``grads`` and ``params`` map names to ``(T, ...)`` tensors; ``batch_size`` is the
    number of slots returned per trial (the records behind the release: under secure
    aggregation, those of all clients). Options: ``scale``, the factor with which one
    record's gradient enters the release (default ``1/batch_size``; ``1/B`` for a sum of
    clients' means over ``B`` records each, ``-lr/B`` for one FedAvg step), and ``tol``,
    the relative error under which a candidate is certified. ``info["recovered"]``
    ``(T,)`` counts the certified records, ``info["exact"]`` marks them slot by slot and
    ``info["labels"]`` holds their labels (``-1`` elsewhere).
    """
    check_positive_int("batch_size", batch_size)
    scale, tol = _scale_tol(dict(options), batch_size)
    name, _ = find_imprint(model)
    prefix = f"{name}." if name else ""
    return _read_all(model, params, grads, (f"{prefix}measure.weight", f"{prefix}measure.bias"),
                     input_shape=tuple(input_shape), num_classes=num_classes, batch_size=batch_size, scale=scale,
                     tol=tol, differences=True, progress=progress)


@register_attack("trap")
def trap_attack(model: nn.Module, params, grads, *, input_shape, num_classes: int, batch_size: int = 1,
                device=None, seed: int = 0, progress: bool = False, **options) -> Reconstruction:
    """Read records off the rows of ``model``'s first fully connected layer (trap weights; see the module text).

    The same reading as :func:`imprint_attack` without differences: a unit that fires
    for one record only gives it as ``(dL/dW)_k / (dL/db)_k``. Options ``scale`` and ``tol`` as there.
    """
    check_positive_int("batch_size", batch_size)
    scale, tol = _scale_tol(dict(options), batch_size)
    name, _ = first_linear_layer(model, tuple(input_shape))
    return _read_all(model, params, grads, (f"{name}.weight", f"{name}.bias"), input_shape=tuple(input_shape),
                     num_classes=num_classes, batch_size=batch_size, scale=scale, tol=tol, differences=False,
                     progress=progress)
