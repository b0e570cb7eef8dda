"""Optimisation attacks: find inputs whose gradient matches the released one.

Three attacks share one machinery here:

* ``dlg`` — Deep Leakage from Gradients (Zhu et al., 2019): minimise the squared
  distance between the dummy input's gradient and the released gradient with
  L-BFGS, optimising a soft dummy label jointly with the input.
* ``idlg`` — improved DLG (Zhao et al., 2020): read the labels off the output
  layer's gradient first (:mod:`leaklab.attacks.labels`), then optimise the input only.
* ``ig`` — Inverting Gradients (Geiping et al., 2020): cosine distance between
  gradients plus a total-variation prior, Adam with a step schedule, several
  restarts of which the one with the lowest objective is kept.

All ``T`` trials (and their restarts) run as one batched optimisation: the
gradient-matching loss of one problem is written for a single trial with
``torch.func`` (the inner gradient with respect to the parameters, the outer one
with respect to the dummy input) and ``vmap`` maps it over the problems.
L-BFGS is our own batched implementation (:func:`lbfgs`): each problem keeps its
own curvature history and its own step size, so the problems stay independent as
if each had been solved alone; only the arithmetic is shared.

Defaults of ``dlg`` ("DLG with its default settings" in the book): up to 2000
L-BFGS iterations with a history of 50 pairs and a backtracking (Armijo) line search,
one restart, one retry from fresh noise for a problem left with a distance above
``1e-6``, the squared gradient distance normalised by the released
gradient's squared norm (a problem leaves the batch once its match is as close as
float arithmetic can tell, see :func:`enough_match`, or once it stalls; retries run
in the same loop, see :func:`lbfgs`),
the image optimised unconstrained from uniform noise in ``[0, 1]`` and clipped
to ``[0, 1]`` at the end (``image_param="free"``; a ``sigmoid`` parametrisation
slows L-BFGS down near saturated pixels), and ``labels="auto"``: for a
batch of one the label is recovered iDLG-style (exact for cross-entropy) and
only the image is optimised; for larger batches the labels are optimised jointly
as in the original. ``labels="joint"`` gives the original joint optimisation at
every batch size.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from .._checks import check_choice, check_positive_int, check_tensor
from ..runtime import get_device
from .base import Reconstruction, register_attack
from .labels import label_recovery, recover_labels  # noqa: F401

__all__ = ["dlg", "idlg", "ig", "lbfgs", "check_release", "cpu_threads", "matching_objective", "total_variation",
           "DISTANCES", "IMAGE_PARAMS", "LABEL_MODES"]

Params = dict[str, torch.Tensor]

LABEL_MODES = ("auto", "joint", "recover")
IMAGE_PARAMS = ("sigmoid", "clamp", "free")


# -- distances between a dummy gradient and the released one -----------------------------------

def _l2(gx: Mapping[str, torch.Tensor], g: Mapping[str, torch.Tensor]) -> torch.Tensor:
    num = sum(((gx[k] - g[k]) ** 2).sum() for k in g)
    den = sum((g[k] ** 2).sum() for k in g)
    return num / den.clamp_min(1e-30)


def _cosine(gx: Mapping[str, torch.Tensor], g: Mapping[str, torch.Tensor]) -> torch.Tensor:
    dot = sum((gx[k] * g[k]).sum() for k in g)
    nx = sum((gx[k] ** 2).sum() for k in g)
    ng = sum((g[k] ** 2).sum() for k in g)
    return 1.0 - dot / (nx.clamp_min(1e-30).sqrt() * ng.clamp_min(1e-30).sqrt())


#: Gradient distances: ``l2`` is ``|g(x) - g|^2 / |g|^2``, ``cosine`` is ``1 - cos(g(x), g)``.
DISTANCES: dict[str, Callable] = {"l2": _l2, "cosine": _cosine}


def total_variation(x: torch.Tensor, dims: int | None = None) -> torch.Tensor:
    """Mean absolute difference between neighbours along each sample's own spatial axes, summed over axes.

    ``x`` is a batch ``(B, *input_shape)``. The spatial axes are the last ``dims``;
    by default the two of an image (``x`` with 4 or more dimensions, ``(..., C, H, W)``)
    and the last one otherwise (``(B, C, L)`` signals, ``(B, N)`` feature vectors),
    so that no difference is ever taken across the batch or the channels. The mean
    runs over samples, channels and positions, so the value is the mean over the
    batch of each sample's total variation.
    """
    check_tensor("x", x, floating=True, finite=False)
    if dims is None:
        dims = 2 if x.ndim >= 4 else 1
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= x.ndim - 1:
        raise ValueError(f"dims must be an int between 1 and {x.ndim - 1} (x has shape {tuple(x.shape)}), "
                         f"got {dims!r}")
    total = x.new_zeros(())
    for axis in range(x.ndim - dims, x.ndim):
        n = x.shape[axis]
        if n > 1:
            total = total + (x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1)).abs().mean()
    return total


# -- validation ----------------------------------------------------------------------------------

def check_release(model: nn.Module, params: Mapping[str, torch.Tensor],
                  grads: Mapping[str, torch.Tensor]) -> int:
    """Check that ``params`` and ``grads`` fit ``model`` with one leading trial dimension; return ``T``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, d in (("params", params), ("grads", grads)):
        if not isinstance(d, Mapping):
            raise TypeError(f"{name} must be a dict of tensors, got {type(d).__name__}")
    from ..release import shared_names

    expected = {k: tuple(v.shape) for k, v in model.named_parameters()}
    shared = set(shared_names(model))
    for name, d, want in (("params", params, set(expected)), ("grads", grads, shared)):
        if set(d) != want:
            missing, extra = want - set(d), set(d) - want
            what = "parameters" if name == "params" else "shared (released) parameters"
            raise ValueError(
                f"{name} must hold the model's {what} {sorted(want)}; "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
    T = None
    for name, d in (("params", params), ("grads", grads)):
        for k, v in d.items():
            check_tensor(f"{name}[{k!r}]", v, floating=True)
            if tuple(v.shape[1:]) != expected[k]:
                raise ValueError(
                    f"{name}[{k!r}] must have shape (T, *{expected[k]}), got {tuple(v.shape)}"
                )
            if T is None:
                T = v.shape[0]
            elif v.shape[0] != T:
                raise ValueError(f"{name}[{k!r}] has {v.shape[0]} trials, expected {T} like the others")
    return int(T)


# -- the matching objective of one problem -------------------------------------------------------

def _to_image(z: torch.Tensor, image_param: str) -> torch.Tensor:
    if image_param == "sigmoid":
        return torch.sigmoid(z)
    if image_param == "clamp":
        return z.clamp(0.0, 1.0)
    return z


def matching_objective(model: nn.Module, *, input_shape: tuple[int, ...], batch_size: int,
                       num_classes: int, joint_labels: bool, distance: str = "l2",
                       tv: float = 0.0, image_param: str = "sigmoid", defense=None,
                       adaptive: bool = False) -> Callable:
    """The gradient-matching objective of a single problem, for ``torch.func`` transforms.

    Returns ``f(v, params, grads, y) -> loss`` where ``v`` is the flat vector of
    unknowns (the image variables ``z``, ``batch_size * prod(input_shape)`` of
    them, followed by ``batch_size * num_classes`` label logits when
    ``joint_labels``), ``params``/``grads`` one trial's tensors and ``y`` the labels
    ``(batch_size,)`` (ignored with ``joint_labels``). The dummy batch's gradient is
    computed with ``torch.func.grad``, so ``grad(f)`` differentiates through it.
    Only the parameters present in ``grads`` (the released ones) are compared.

    ``defense`` is the defense ``M`` the release went through. A *static* attack
    (``adaptive=False``) ignores it: it matches the plain cross-entropy gradient of
    its dummy batch (a stochastic model-side defense is treated as deterministic,
    in eval mode). An *adaptive* attack passes its dummy gradient through
    ``defense.simulate`` (``M`` itself where it is differentiable, else a documented
    surrogate), computes per-record gradients when ``M`` clips each record, and uses
    the model's own objective for a model-side defense (its noise-free
    ``surrogate_objective`` where it has one, else with its own random draws).
    """
    import copy

    from ..defenses import as_defense
    from ..release import is_stochastic, objective_of

    check_choice("distance", distance, DISTANCES)
    check_choice("image_param", image_param, IMAGE_PARAMS)
    defense = as_defense(defense)
    dist = DISTANCES[distance]
    n_img = batch_size * math.prod(input_shape)
    use_objective = adaptive and defense.acts_on == "model"
    per_sample = adaptive and defense.acts_on == "sample"
    simulate = adaptive and defense.acts_on in ("sample", "batch")
    if use_objective and getattr(model, "secret_parameters", ()):
        raise ValueError(f"the model keeps secret parameters {tuple(model.secret_parameters)}: matching its own "
                         f"objective would hand the attacker the client's secret. Use the defense's adaptive "
                         f"attack ({getattr(defense, 'adaptive_attack', None) or 'none registered'}) instead")
    if use_objective and joint_labels:
        raise ValueError(f"an adaptive attack on the model-side defense {defense.name!r} matches the model's "
                         "own objective, which needs labels: use labels='recover' (idlg, ig) or give them")
    net = model if (use_objective or not is_stochastic(model)) else copy.deepcopy(model).eval()
    objective = objective_of(net, surrogate=True) if use_objective else None
    stochastic = use_objective and is_stochastic(model) and not callable(getattr(model, "surrogate_objective", None))
    if per_sample and batch_size == 1:     # one record: its gradient is the batch gradient
        per_sample = False
        simulate_one = True
    else:
        simulate_one = False

    def f(v, p, g, y):
        x = _to_image(v[:n_img], image_param).reshape(batch_size, *input_shape)
        target = torch.softmax(v[n_img:].reshape(batch_size, num_classes), -1) if joint_labels else y

        def loss(q, xb, tb):
            if objective is not None:
                return objective(q, xb, tb)
            out = functional_call(net, q, (xb,))
            if joint_labels:
                return -(tb * torch.log_softmax(out, -1)).sum(-1).mean()
            return F.cross_entropy(out, tb)

        if per_sample:
            gx = vmap(lambda xi, ti: grad(loss)(p, xi[None], ti[None]))(x, target)
        else:
            gx = grad(loss)(p, x, target)
        gx = {k: gx[k] for k in g}
        if simulate_one:
            gx = {k: v[None] for k, v in gx.items()}
        if simulate:
            gx = defense.simulate(gx, g)
        d = dist(gx, g)
        if tv:
            d = d + tv * total_variation(x)
        return d

    f.randomness = "different" if stochastic else "error"
    return f


def _batched(fn: Callable, params: Params, grads: Params, y: torch.Tensor) -> Callable:
    """``fg(v, idx)``: losses and gradients of the problems ``idx`` at ``v`` (rows of those problems)."""
    vg = vmap(grad_and_value(fn), in_dims=(0, 0, 0, 0), randomness=getattr(fn, "randomness", "error"))

    def fg(v: torch.Tensor, idx: torch.Tensor | None = None):
        if idx is None:
            gv, fv = vg(v, params, grads, y)
        else:
            gv, fv = vg(v, {k: t[idx] for k, t in params.items()},
                        {k: t[idx] for k, t in grads.items()}, y[idx])
        return fv.detach(), gv.detach()

    return fg


# -- batched L-BFGS ------------------------------------------------------------------------------

def enough_match(dtype: torch.dtype = torch.float32) -> float:
    """The default stopping threshold of the matching: ``(10 * eps)^2`` for the floating type ``dtype``.

    The attacker cannot see the private input, so "enough" is decided on what it
    can see, the gradient distance. The released gradient is itself computed in
    floating point: its entries carry a relative rounding error of a few machine
    epsilons ``eps`` (``1.2e-7`` in float32), so a dummy input whose gradient lies
    within ``10 * eps`` of it, in relative norm, matches it as closely as the
    arithmetic can tell; iterating further fits rounding noise. The ``l2`` distance
    of the attacks is the squared relative distance, hence ``(10 * eps)^2``
    (``1.4e-12`` in float32). On our photographs (sigmoid LeNet, 32x32) a match at
    this level reconstructs the image at about 40 dB PSNR; PSNR plays no part in
    the rule.
    """
    return float((10 * torch.finfo(dtype).eps) ** 2)


def lbfgs(fg: Callable, v0: torch.Tensor, *, iters: int, history: int = 20, c1: float = 1e-4,
          max_backtracks: int = 12, max_stalls: int = 2, tol: float | None = None, patience: int | None = 200,
          retries: int = 0, retry_above: float = math.inf, restart: Callable | None = None,
          progress: bool = True, desc: str = "L-BFGS") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Minimise ``N`` independent problems at once with L-BFGS; each leaves the batch when it is done.

    ``fg(v, idx)`` returns the losses ``(n,)`` and gradients ``(n, D)`` of the problems
    ``idx`` (all when ``None``) at the rows ``v`` ``(n, D)``; ``v0`` is ``(N, D)``.
    Each problem has its own curvature pairs (the two-loop recursion runs on all
    of them at once) and its own step size from a backtracking line search with
    the Armijo condition; only the problems still running are evaluated, in the
    line search too (a problem whose step is accepted waits for no backtracking
    of the others), so the work shrinks as problems finish.

    The stopping rule of a problem, evaluated on its own:

    * **converged**: its loss is at most ``tol`` (default :func:`enough_match` of
      ``v0``'s dtype, the level at which a gradient match is as good as floating
      point can tell);
    * **stalled**: no step decreases the loss ``max_stalls`` times in a row (after
      a failure it forgets its curvature pairs and tries steepest descent once),
      or its best loss fell by less than a factor of 2 over the last ``patience``
      iterations (``None``: never); a healthy matching gains a decade in about
      a hundred iterations;
    * **budget**: ``iters`` iterations.

    A problem that ends a run (stalled or out of budget) with its best loss still
    above ``retry_above`` starts again from ``restart(idx, attempt)`` (fresh rows
    ``(len(idx), D)`` for the problems ``idx`` on their ``attempt``-th retry), up
    to ``retries`` times, *in the same loop*: the others carry on meanwhile, and the
    whole call ends when the last problem ends. Each problem keeps the best point
    over all its runs.

    Returns the best point and loss of every problem and a dict with
    ``evaluations`` (function evaluations per problem, ``(N,)``), ``iterations``
    (of the loop; at most ``iters * (retries + 1)``), ``converged`` (``(N,)``
    bool: best loss at most ``tol``), ``tol``, and ``retried`` (runs started
    afresh per problem). The loop synchronises with the device once per iteration
    and once per backtracking step (to know which problems still run); nothing else
    reads values back, except the progress bar every 10 iterations.
    """
    check_positive_int("iters", iters, minimum=0)
    check_positive_int("history", history)
    check_positive_int("retries", retries, minimum=0)
    if patience is not None:
        check_positive_int("patience", patience)
    if retries and restart is None:
        raise ValueError("retries > 0 needs restart=, a function that draws fresh starting points")
    tol = enough_match(v0.dtype) if tol is None else float(tol)
    from .._progress import trange

    v = v0.detach().clone()
    N, D = v.shape
    dev = v.device
    f, g = fg(v)
    evals = torch.ones(N, dtype=torch.long, device=dev)
    S = v.new_zeros(history, N, D)
    Y = v.new_zeros(history, N, D)
    rho = v.new_zeros(history, N)
    inf = torch.full_like(f, math.inf)
    f = torch.where(torch.isfinite(f), f, inf)

    def first_scale(grad):          # first step as torch's L-BFGS: min(1, 1/|g|_1)
        return 1.0 / grad.abs().sum(-1).clamp_min(1.0)

    gamma = first_scale(g)
    zeros = torch.zeros(N, dtype=torch.long, device=dev)
    stalls, age, tries = zeros.clone(), zeros.clone(), zeros.clone()
    best_v, best_f = v.clone(), f.clone()
    run_best, mark_f = f.clone(), f.clone()   # best loss of the current run, and at the last patience mark
    active = f > tol
    pending = torch.zeros_like(active)        # to be restarted from fresh noise at the next iteration
    total = iters * (retries + 1)
    it_done = 0
    bar = trange(total, desc=desc, progress=progress, leave=False)
    for it in bar:
        rows = torch.stack([active, pending]).nonzero().cpu()    # the one device sync of an iteration
        if rows.shape[0] == 0:
            break                                                # every problem is done: a normal stop
        ridx = rows[rows[:, 0] == 1, 1].to(dev)
        if ridx.numel():                                         # restarts, in place, while others go on
            fresh = restart(ridx, tries[ridx]).to(v)
            fr, gr = fg(fresh, ridx)
            evals[ridx] += 1
            v[ridx], f[ridx], g[ridx] = fresh, torch.where(torch.isfinite(fr), fr, inf[ridx]), gr
            rho[:, ridx] = 0.0
            gamma[ridx] = first_scale(gr)
            stalls[ridx], age[ridx] = 0, 0
            run_best[ridx], mark_f[ridx] = f[ridx], f[ridx]
            better = f[ridx] < best_f[ridx]
            best_f[ridx] = torch.where(better, f[ridx], best_f[ridx])
            best_v[ridx] = torch.where(better[:, None], fresh, best_v[ridx])
            pending[ridx] = False
            active[ridx] = f[ridx] > tol
        idx = active.nonzero().flatten() if ridx.numel() else rows[rows[:, 0] == 0, 1].to(dev)
        if idx.numel() == 0:
            continue
        it_done = it + 1
        va, fa, ga = v[idx], f[idx], g[idx]
        Sa, Ya, ra = S[:, idx], Y[:, idx], rho[:, idx]
        # two-loop recursion, newest pair first (slots are a ring buffer shared by all problems; a
        # problem without a pair in a slot has rho = 0 there, which makes the slot a no-op for it)
        order = [(it - 1 - j) % history for j in range(min(it, history))]
        q = ga.clone()
        alphas = []
        for j in order:
            a = ra[j] * (Sa[j] * q).sum(-1)
            q = q - a[:, None] * Ya[j]
            alphas.append(a)
        r = gamma[idx, None] * q
        for j, a in zip(reversed(order), reversed(alphas)):
            b = ra[j] * (Ya[j] * r).sum(-1)
            r = r + Sa[j] * (a - b)[:, None]
        d = -r
        gd = (ga * d).sum(-1)
        uphill = ~(gd < 0) | ~torch.isfinite(gd)                 # fall back to steepest descent
        d = torch.where(uphill[:, None], -gamma[idx, None] * ga, d)
        gd = (ga * d).sum(-1)
        rho[:, idx] = torch.where(uphill, 0.0, ra)
        # backtracking line search, each problem with its own step; only those not yet accepted
        t = torch.ones_like(fa)
        accepted = torch.zeros_like(fa, dtype=torch.bool)
        vn, fn, gn = va.clone(), fa.clone(), ga.clone()
        for _ in range(max_backtracks):
            todo = (~accepted).nonzero().flatten()
            if todo.numel() == 0:
                break
            tt = t[todo]
            cand = va[todo] + tt[:, None] * d[todo]
            fc, gc = fg(cand, idx[todo])
            evals[idx[todo]] += 1
            ok = torch.isfinite(fc) & (fc <= fa[todo] + c1 * tt * gd[todo])
            vn[todo] = torch.where(ok[:, None], cand, vn[todo])
            fn[todo] = torch.where(ok, fc, fn[todo])
            gn[todo] = torch.where(ok[:, None], gc, gn[todo])
            accepted[todo] = ok
            t[todo] = torch.where(ok, tt, 0.5 * tt)
        # curvature pairs
        s, yv = vn - va, gn - ga
        sy = (s * yv).sum(-1)
        yy = (yv * yv).sum(-1)
        good = accepted & (sy > 1e-10 * yy.sqrt() * s.norm(dim=-1)) & (yy > 0)
        slot = it % history
        S[slot, idx] = torch.where(good[:, None], s, torch.zeros_like(s))
        Y[slot, idx] = torch.where(good[:, None], yv, torch.zeros_like(yv))
        rho[slot, idx] = torch.where(good, 1.0 / sy.where(good, torch.ones_like(sy)), torch.zeros_like(sy))
        gamma[idx] = torch.where(good, sy / yy.where(good, torch.ones_like(yy)), gamma[idx])
        # no acceptable step: forget the curvature pairs and try steepest descent next
        rho[:, idx] = torch.where(accepted, rho[:, idx], 0.0)
        v[idx], f[idx], g[idx] = vn, fn, gn
        better = fn < best_f[idx]
        best_f[idx] = torch.where(better, fn, best_f[idx])
        best_v[idx] = torch.where(better[:, None], vn, best_v[idx])
        # the stopping rule, all on the device
        st = torch.where(accepted, 0, stalls[idx] + 1)
        stalls[idx] = st
        ag = age[idx] + 1
        age[idx] = ag
        rb = torch.minimum(run_best[idx], fn)
        run_best[idx] = rb
        ended = (st >= max_stalls) | (ag >= iters)
        if patience is not None:
            at_mark = ag % patience == 0
            ended = ended | (at_mark & (rb > 0.5 * mark_f[idx]))
            mark_f[idx] = torch.where(at_mark, rb, mark_f[idx])
        converged = best_f[idx] <= tol
        again = ended & ~converged & (best_f[idx] > retry_above) & (tries[idx] < retries)
        tries[idx] += again.long()
        pending[idx] = again
        active[idx] = ~converged & ~ended
        if progress and it % 10 == 0:
            bar.set_postfix(loss=f"{float(best_f.median()):.2e}", running=int(active.sum() + pending.sum()))
    bar.stop()                   # most runs end before iters * (retries + 1): a finished bar, not a failed one
    return best_v, best_f, {"evaluations": evals, "iterations": it_done, "converged": best_f <= tol,
                            "tol": tol, "retried": tries}


def _adam(fg: Callable, v0: torch.Tensor, *, iters: int, lr: float, signed: bool, project: bool,
          progress: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Adam with the step schedule of Inverting Gradients (lr x0.1 at 3/8, 5/8 and 7/8 of ``iters``).

    Every problem runs all ``iters`` steps. A plateau of the objective is no sign
    of being done here: the schedule makes the objective level off before each
    drop of the step size and fall again after it (with signed gradients the steps
    are of fixed size, so the objective dithers at a level set by the step size),
    and the total-variation term keeps the minimum away from an exact gradient
    match, so the convergence rule of :func:`lbfgs` is seldom reached either. The
    loop never reads values back to the host except for the progress bar.
    """
    from .._progress import trange

    v = v0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    milestones = [int(iters * r) for r in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    best_v = v.detach().clone()
    best_f = torch.full((v.shape[0],), math.inf, device=v.device, dtype=v.dtype)

    def keep_best(f):
        better = torch.isfinite(f) & (f < best_f)
        best_f.copy_(torch.where(better, f, best_f))
        best_v.copy_(torch.where(better[:, None], v.detach(), best_v))

    bar = trange(iters, desc=desc, progress=progress, leave=False)
    for it in bar:
        f, g = fg(v.detach())
        keep_best(f)
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        v.grad = g.sign() if signed else g
        opt.step()
        sched.step()
        if project:
            with torch.no_grad():
                v.clamp_(0.0, 1.0)
        if progress and it % 10 == 0:
            bar.set_postfix(loss=f"{float(best_f.median()):.2e}")
    f, _ = fg(v.detach())
    keep_best(f)
    bar.close()
    return best_v, best_f, {"evaluations": torch.full_like(best_f, iters + 1, dtype=torch.long),
                            "iterations": iters}


# -- the attacks ---------------------------------------------------------------------------------

@contextmanager
def cpu_threads(n: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (restored afterwards); no-op for ``None`` or a GPU.

    The matching loop is made of many small operations; on a CPU, splitting each of
    them over threads costs more than it saves, and on a shared machine it is far
    slower (we measured several times on 2 busy cores), so the attacks use one
    thread by default.
    """
    if n is None or device.type != "cpu":
        yield
        return
    check_positive_int("threads", n)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _setup(model, params, grads, *, input_shape, num_classes, batch_size, device, labels):
    T = check_release(model, params, grads)
    input_shape = tuple(int(s) for s in input_shape)
    check_positive_int("batch_size", batch_size)
    check_positive_int("num_classes", num_classes, minimum=2)
    dev = get_device(device)
    model = model.to(dev)
    params = {k: v.detach().to(dev) for k, v in params.items()}
    grads = {k: v.detach().to(dev) for k, v in grads.items()}
    if isinstance(labels, torch.Tensor):
        check_tensor("labels", labels, ndim=2, finite=False)
        if tuple(labels.shape) != (T, batch_size) or labels.is_floating_point():
            raise ValueError(f"labels given as a tensor must be integers of shape ({T}, {batch_size}), "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        return T, input_shape, dev, model, params, grads, labels.to(dev).long(), False, "given"
    check_choice("labels", labels, LABEL_MODES)
    joint = labels == "joint" or (labels == "auto" and batch_size > 1)
    # labels of a batch: counts fitted with the known model's predictions on random dummy inputs
    if joint:
        return T, input_shape, dev, model, params, grads, torch.zeros(T, batch_size, dtype=torch.long,
                                                                     device=dev), True, "joint"
    rec = label_recovery(grads, num_classes=num_classes, batch_size=batch_size, model=model, params=params,
                         input_shape=input_shape)
    return T, input_shape, dev, model, params, grads, rec.labels.to(dev), False, rec.estimate


def _init(n: int, dim: int, *, init: str, image_param: str, gen: torch.Generator, device) -> torch.Tensor:
    check_choice("init", init, ("uniform", "normal"))
    u = torch.rand(n, dim, generator=gen) if init == "uniform" else torch.randn(n, dim, generator=gen)
    if image_param == "sigmoid":       # so that the image itself starts as the chosen noise
        u = torch.logit(u.clamp(1e-3, 1 - 1e-3)) if init == "uniform" else u
    return u.to(device)


def _optimise(model, params, grads, *, threads, **kwargs):
    dev = get_device(kwargs["device"])
    with cpu_threads(threads, dev):
        return _optimise_inner(model, params, grads, **kwargs)


def _optimise_inner(model, params, grads, *, input_shape, num_classes, batch_size, device, seed, progress,
                    labels, restarts, optimiser, distance, tv, image_param, init, opt_kwargs, name,
                    defense=None, adaptive=False):
    T, input_shape, dev, model, params, grads, y, joint, label_estimate = _setup(
        model, params, grads, input_shape=input_shape, num_classes=num_classes,
        batch_size=batch_size, device=device, labels=labels)
    check_positive_int("restarts", restarts)
    R = restarts
    n_img = batch_size * math.prod(input_shape)
    dim = n_img + (batch_size * num_classes if joint else 0)
    gen = torch.Generator().manual_seed(int(seed))
    v0 = _init(T * R, n_img, init=init, image_param=image_param, gen=gen, device=dev)
    if joint:
        v0 = torch.cat([v0, torch.randn(T * R, dim - n_img, generator=gen).to(dev)], 1)
    rep = lambda t: t.repeat_interleave(R, dim=0)  # noqa: E731  (problem i*R + r: trial i, restart r)
    fn = matching_objective(model, input_shape=input_shape, batch_size=batch_size, num_classes=num_classes,
                            joint_labels=joint, distance=distance, tv=tv, image_param=image_param,
                            defense=defense, adaptive=adaptive)
    fg = _batched(fn, {k: rep(v) for k, v in params.items()}, {k: rep(v) for k, v in grads.items()}, rep(y))
    if optimiser == "lbfgs":
        def restart(idx: torch.Tensor, attempt: torch.Tensor) -> torch.Tensor:
            # fresh noise of problem i on its a-th retry, from a generator of its own: a problem's
            # retries do not depend on which other problems share the batch
            rows = []
            for i, a in zip(idx.tolist(), attempt.tolist()):
                g_i = torch.Generator().manual_seed((int(seed) * 1_000_003 + i * 7_919 + a) % 2**63)
                row = _init(1, n_img, init=init, image_param=image_param, gen=g_i, device=dev)
                if joint:
                    row = torch.cat([row, torch.randn(1, dim - n_img, generator=g_i).to(dev)], 1)
                rows.append(row)
            return torch.cat(rows)

        v, f, info = lbfgs(fg, v0, progress=progress, desc=name, restart=restart, **opt_kwargs)
    else:
        v, f, info = _adam(fg, v0, progress=progress, desc=name, project=image_param == "clamp", **opt_kwargs)
    f = f.reshape(T, R)
    best = f.argmin(1)                                             # keep the best restart per trial
    pick = torch.arange(T, device=dev) * R + best
    v, loss = v[pick], f[torch.arange(T, device=dev), best]
    x = _to_image(v[:, :n_img], image_param).reshape(T, batch_size, *input_shape)
    if image_param == "free":
        x = x.clamp(0.0, 1.0)
    # did the matching converge? The gradient distance alone (without a prior term) of the kept
    # point against the rule of lbfgs; for the cosine distance, 1 - cos is half the squared
    # relative distance for small angles
    if tv:
        pure = matching_objective(model, input_shape=input_shape, batch_size=batch_size,
                                  num_classes=num_classes, joint_labels=joint, distance=distance,
                                  tv=0.0, image_param=image_param)
        distance_t, _ = _batched(pure, params, grads, y)(v)
    else:
        distance_t = loss
    tol = info.get("tol", enough_match(v.dtype))
    converged = distance_t <= (tol / 2 if distance == "cosine" else tol)
    if joint:
        y = v[:, n_img:].reshape(T, batch_size, num_classes).argmax(-1)
    out = {
        "attack": name, "labels": "joint" if joint else ("given" if isinstance(labels, torch.Tensor) else "recovered"),
        "label_estimate": label_estimate,
        "restarts": R, "best_restart": best, "iterations": info["iterations"],
        "evaluations": info["evaluations"].reshape(T, R).sum(1),
        "distance": distance_t.detach(), "converged": converged, "tol": tol,
    }
    if "retried" in info:
        out["retried"] = info["retried"].reshape(T, R).sum(1)
    return Reconstruction(x=x.detach(), y=y, loss=loss.detach(), info=out)


@register_attack("dlg")
def dlg(model: nn.Module, params: Params, grads: Params, *, input_shape, num_classes: int, batch_size: int,
        device=None, seed: int = 0, progress: bool = True, iters: int = 2000, restarts: int = 1,
        labels="auto", history: int = 50, image_param: str = "free", init: str = "uniform",
        distance: str = "l2", retries: int = 1, retry_above: float = 1e-6,
        threads: int | None = 1, defense=None, adaptive: bool = False) -> Reconstruction:
    """Deep Leakage from Gradients over ``T`` trials at once (batched L-BFGS).

    ``params`` and ``grads`` map parameter names to ``(T, ...)`` tensors. See the
    module docstring for the defaults. ``labels`` is ``"auto"`` (recovered for a
    batch of one, joint otherwise), ``"joint"``, ``"recover"`` or a ``(T, B)``
    tensor of known labels. ``restarts`` runs that many random initialisations per
    trial and keeps the one with the lowest gradient distance. A problem whose
    distance is still above ``retry_above`` at the end (it stalled far from any
    match) starts again from fresh noise, up to ``retries`` times, and the better
    of its runs is kept; only those problems are re-run. ``threads`` sets
    torch's CPU threads while the attack runs (see :func:`cpu_threads`; ``None``
    leaves them alone). ``defense`` is the defense the release went through and
    ``adaptive`` whether the attack simulates it (see :func:`matching_objective`).
    """
    return _optimise(model, params, grads, input_shape=input_shape, num_classes=num_classes,
                     batch_size=batch_size, device=device, seed=seed, progress=progress, labels=labels,
                     restarts=restarts, optimiser="lbfgs", distance=distance, tv=0.0,
                     image_param=image_param, init=init, opt_kwargs={"iters": iters, "history": history, "retries": retries,
                                 "retry_above": float(retry_above)},
                     name="dlg", threads=threads, defense=defense, adaptive=adaptive)


@register_attack("idlg")
def idlg(model: nn.Module, params: Params, grads: Params, *, input_shape, num_classes: int, batch_size: int,
         device=None, seed: int = 0, progress: bool = True, iters: int = 2000, restarts: int = 1,
         history: int = 50, image_param: str = "free", init: str = "uniform",
         distance: str = "l2", retries: int = 1, retry_above: float = 1e-6,
        threads: int | None = 1, defense=None, adaptive: bool = False) -> Reconstruction:
    """iDLG: labels read off the output layer's gradient, then DLG on the inputs only.

    The labels are exact for a batch of one; for larger batches they come from the
    count estimate of :func:`leaklab.attacks.labels.label_recovery`, with the
    model's predictions measured on random dummy inputs. The other
    options are those of :func:`dlg`.
    """
    return _optimise(model, params, grads, input_shape=input_shape, num_classes=num_classes,
                     batch_size=batch_size, device=device, seed=seed, progress=progress, labels="recover",
                     restarts=restarts, optimiser="lbfgs", distance=distance, tv=0.0,
                     image_param=image_param, init=init, opt_kwargs={"iters": iters, "history": history, "retries": retries,
                                 "retry_above": float(retry_above)},
                     name="idlg", threads=threads, defense=defense, adaptive=adaptive)


@register_attack("ig")
def ig(model: nn.Module, params: Params, grads: Params, *, input_shape, num_classes: int, batch_size: int,
       device=None, seed: int = 0, progress: bool = True, iters: int = 1000, restarts: int = 2,
       lr: float = 0.1, tv: float = 1e-4, signed: bool = True, labels="recover",
       image_param: str = "clamp", init: str = "uniform", threads: int | None = 1, defense=None,
       adaptive: bool = False) -> Reconstruction:
    """Inverting Gradients: cosine distance plus ``tv`` times total variation, Adam.

    The step size ``lr`` drops tenfold at 3/8, 5/8 and 7/8 of ``iters``; with
    ``signed`` Adam is fed the sign of the gradient (as in the authors' code); the
    image is projected to ``[0, 1]`` after every step (``image_param="clamp"``).
    ``restarts`` random initialisations per trial run together and the one with
    the lowest objective is kept. Labels are recovered from the output layer.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not tv >= 0:
        raise ValueError(f"tv must be >= 0, got {tv}")
    return _optimise(model, params, grads, input_shape=input_shape, num_classes=num_classes,
                     batch_size=batch_size, device=device, seed=seed, progress=progress, labels=labels,
                     restarts=restarts, optimiser="adam", distance="cosine", tv=float(tv),
                     image_param=image_param, init=init,
                     opt_kwargs={"iters": check_positive_int("iters", iters), "lr": float(lr),
                                 "signed": bool(signed)},
                     name="ig", threads=threads, defense=defense, adaptive=adaptive)
