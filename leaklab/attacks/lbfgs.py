"""The optimisers of the gradient-matching attacks: batched L-BFGS and Adam over many trials at once.

Every trial of an attack is an independent problem; :func:`lbfgs` runs them together,
each with its own history, line search and stopping rule, so that a GPU is busy with
all of them (checked against ``torch.optim.LBFGS`` in the tests).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.func import grad

from .._checks import check_positive_int

__all__ = ["lbfgs", "enough_match"]


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
