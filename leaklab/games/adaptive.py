"""The adaptive informed adversary: simulate the defended release of whole batches, for each candidate secret.

A defense acts on a whole release, and ``M`` of a mean is not the mean of ``M``
(the sign of a sum is not a sum of signs; DP-SGD clips each record and then adds
noise to the sum). So an informed adversary that knows ``M`` cannot push the
target's own gradient through it. Instead, for every trial and every candidate
value ``s`` of the sensitive feature, it simulates ``sims`` complete releases: the
target with its known features ``phi(z)`` and the value ``s``, plus ``k - 1`` records
drawn from its auxiliary data (and, under secure aggregation, the other clients'
releases), all passed through ``M`` exactly as the challenger does. The candidates
share the same simulated unknown records (common random numbers), so their
difference is not drowned by the spread of those records, and the direction along
which the release moves with the secret is estimated with ``M`` stripped of its
noise (:meth:`~leaklab.defenses.Defense.deterministic`): for DP-SGD it is exactly
the difference of the target's two clipped gradients. The observed release is
scored by the Gaussian log-likelihood ratio of its projection on that direction,
the two means taken from the noiseless simulations and the clouds' spread from the
fully defended ones (two values),
or by an isotropic Gaussian log-posterior (more values).
"""
from __future__ import annotations

import torch

from ..fl import flatten

__all__ = ["simulated_informed_scores"]


def simulated_informed_scores(kn, obs, candidates: torch.Tensor, column: int, *, sims: int = 32,
                              generator: torch.Generator, floor: float = 1e-6) -> torch.Tensor:
    """Scores ``(T,)`` (log-odds of value 1) or ``(T, K)`` (log-posteriors) from simulated defended releases.

    ``kn`` is the adversary's :class:`~leaklab.games.Knowledge`, ``obs`` the round's
    :class:`~leaklab.games.Observation`, ``candidates`` the value of the feature
    column ``column`` for each of the ``K`` secret values.
    """
    if obs.phi_x is None:
        raise ValueError("the informed adversary needs phi(z), the target's known features")
    dev = kn.device
    T, F = obs.phi_x.shape
    K, B, S = candidates.shape[0], kn.batch_size, sims
    aux = kn.auxiliary
    ax, ay = aux.x.to(dev), aux.y.to(dev)
    target = obs.phi_x[:, None, None, :].expand(T, K, S, F).clone()
    target[..., column] = candidates.to(dev)[None, :, None]
    n = T * K * S
    xs = target.reshape(n, 1, F)
    ys = obs.phi_y[:, None, None].expand(T, K, S).reshape(n, 1)
    if B > 1:       # the same unknown records for every candidate (common random numbers)
        rest = torch.randint(len(aux), (T, 1, S, B - 1), generator=generator).expand(T, K, S, B - 1)
        rest = rest.reshape(n, B - 1).to(dev)
        xs = torch.cat([xs, ax[rest]], 1)
        ys = torch.cat([ys, ay[rest]], 1)
    others = [torch.randint(len(aux), (T, 1, S, B), generator=generator).expand(T, K, S, B).reshape(n, B).to(dev)
              for _ in range(kn.clients - 1)]

    def simulate(defense):
        total = flatten(kn.gradients(xs, ys, obs.params, defense=defense, generator=generator), batch_dims=1)
        for o in others:             # the other clients' releases, summed by the server
            total = total + flatten(kn.gradients(ax[o], ay[o], obs.params, defense=defense, generator=generator),
                                    batch_dims=1)
        return total.double().reshape(T, K, S, -1)                       # (T, K, S, P)

    exact = simulate(kn.defense.deterministic()).mean(2)                  # (T, K, P): where the release moves
    rel = simulate(kn.defense)                                            # the spread, noise included
    seen = flatten(obs.gradients, batch_dims=1).double().to(dev)          # (T, P)
    if K == 2:
        d = exact[:, 1] - exact[:, 0]
        u = d / d.norm(dim=1, keepdim=True).clamp_min(1e-30)
        proj = (rel * u[:, None, None, :]).sum(-1)                          # (T, K, S)
        # the means from M without its noise (exact in the noise: a mean of a few noisy
        # simulations would put the noise of the simulations into the likelihood ratio's
        # weight), the spread from the fully defended simulations
        m = (exact * u[:, None, :]).sum(-1)                                # (T, K)
        var = ((proj - proj.mean(2, keepdim=True)) ** 2).mean((1, 2)) + floor * (m[:, 1] - m[:, 0]) ** 2 + 1e-30
        p = (seen * u).sum(1)
        return ((m[:, 1] - m[:, 0]) * (p - 0.5 * (m[:, 1] + m[:, 0])) / var).cpu()
    mean = rel.mean(2)
    var = ((rel - mean[:, :, None]) ** 2).mean((1, 2, 3)) + 1e-30          # (T,) pooled, isotropic
    ll = -((seen[:, None, :] - mean) ** 2).sum(-1) / (2 * var[:, None])
    return torch.log_softmax(ll, dim=1).cpu()
