"""The membership adversaries: gradient alignment (release), the loss threshold and LiRA (model)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from ..._checks import check_choice, check_positive_int
from ...fl import flatten
from ..adversaries import Adversary, register_adversary
from .game import server_sum
from .training import _confidence, _losses, train_stacked


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-30)


class _MembershipAdversary(Adversary):
    observes = "release"

    def check(self, game, info):
        if game.name not in self.games:
            raise ValueError(f"the {self.name} adversary plays the {' and '.join(self.games)} game(s), "
                             f"not {game.name!r}")


@register_adversary("alignment")
class AlignmentAdversary(_MembershipAdversary):
    """The cosine between the candidate record's gradient and each release (membership or tracing).

    The candidate's gradient is computed at the observed parameters with the model's
    loss; an adaptive adversary passes it through ``M`` as well (and so clips it
    under DP-SGD, signs it under signSGD, prunes it...). For membership the score is
    centred midway between the median cosines of simulated members and non-members:
    the adversary plays ``reference`` trials of the game on its auxiliary records. For tracing it returns one cosine per client.
    """

    games = ("membership", "tracing")
    observes = "release"

    def __init__(self, *, reference: int = 256):
        self.reference = check_positive_int("reference", reference)

    def _candidate(self, obs):
        kn = self.knowledge
        if obs.phi_x is None:
            raise ValueError("the alignment adversary needs the candidate record (phi_x, phi_y)")
        return _flat64(kn.gradients(obs.phi_x[:, None], obs.phi_y[:, None], obs.params,
                                    generator=self.generator, defense=self._through()))

    def _through(self):
        """What the candidate's own gradient goes through: nothing (static), else ``M`` without its
        noise (noise drawn by the adversary itself would only blur its own reference)."""
        kn = self.knowledge
        return kn.defense.deterministic() if kn.adaptive else None

    def score(self, obs):
        kn = self.knowledge
        gc = self._candidate(obs)                                   # (T, P)
        if kn.game.name == "tracing":                               # releases (T, n, ...): one cosine per client
            return _cosine(gc[:, None, :], _flat64(obs.gradients, batch_dims=2)).cpu()
        s = _cosine(gc, _flat64(obs.gradients))
        return (s - self._threshold(obs)).cpu()

    def _threshold(self, obs) -> torch.Tensor:
        """Midway between the median cosines of simulated members and non-members (auxiliary records)."""
        kn = self.knowledge
        aux = kn.auxiliary
        tr = kn.game.draw_trials(aux, self.reference, self.generator)
        idx = kn.game.draw_batches(aux, tr, kn.batch_size, self.generator)
        rel = _flat64(server_sum(kn.view, aux, idx, tr.target, kn._params(obs.params), clients=kn.clients,
                                 defense=kn.defense if kn.adaptive else None, engine=kn.engine,
                                 generator=self.generator, device=kn.device, static_objective=kn.static))
        x, y = aux.x[tr.target].to(kn.device), aux.y[tr.target].to(kn.device)
        gc = _flat64(kn.gradients(x[:, None], y[:, None], obs.params, generator=self.generator,
                                  defense=self._through()))
        c = _cosine(gc, rel)
        member = tr.secret.to(c.device) == 1
        if member.all() or not member.any():
            return c.median()
        return 0.5 * (c[member].median() + c[~member].median())


def _flat64(grads, batch_dims: int = 1) -> torch.Tensor:
    return flatten(grads, batch_dims=batch_dims).double()


@register_adversary("loss")
class LossAdversary(_MembershipAdversary):
    """Loss threshold (Yeom et al., 2018): lower loss on the released model means member (tracing: per client)."""

    games = ("membership", "tracing")
    observes = "model"

    def score(self, obs):
        kn = self.knowledge
        if obs.client_params is not None:          # tracing: one local model per client
            return -_tracing_losses(kn, obs)
        aux = kn.auxiliary
        mi, ci = obs.model_index, obs.candidate_index
        K = int(mi.max()) + 1
        loss = torch.stack([_losses(kn.model, {n: v[k] for n, v in obs.params.items()},
                                    kn.candidates.x.to(kn.device), kn.candidates.y.to(kn.device)).cpu()
                            for k in range(K)])                              # (K, N)
        ref = torch.stack([_losses(kn.model, {n: v[k] for n, v in obs.params.items()},
                                   aux.x.to(kn.device), aux.y.to(kn.device)).median().cpu() for k in range(K)])
        return -(loss[mi, ci] - ref[mi])


def _tracing_losses(kn, obs) -> torch.Tensor:
    """``(T, n)`` losses of each trial's candidate on each client's local model."""
    cp = obs.client_params                                  # name -> (T, n, *shape)
    T, n = obs.phi_y.shape[0], next(iter(cp.values())).shape[1]
    flat = {k: v.reshape(T * n, *v.shape[2:]) for k, v in cp.items()}
    x = obs.phi_x.repeat_interleave(n, 0)
    y = obs.phi_y.repeat_interleave(n, 0)

    def one(p, xi, yi):
        return F.cross_entropy(functional_call(kn.model, p, (xi[None],)), yi[None])
    with torch.no_grad():
        return vmap(one)(flat, x, y).reshape(T, n).double().cpu()


@register_adversary("lira")
class LiRAAdversary(_MembershipAdversary):
    """LiRA (Carlini et al., 2022): per-candidate Gaussians of shadow models' confidences; see the module."""

    games = ("membership",)
    observes = "model"
    online = True

    def __init__(self, *, shadows: int = 16, fixed_variance: bool = True, engine: str = "batched"):
        self.shadows = check_positive_int("shadows", shadows, minimum=2)
        self.fixed_variance = bool(fixed_variance)
        self.engine = check_choice("engine", engine, ("batched", "loop"))

    def prepare(self, knowledge, *, seed=0):
        super().prepare(knowledge, seed=seed)
        kn = knowledge
        if kn.candidates is None:
            raise ValueError("LiRA needs observe='model' (a trained model and its candidates)")
        S, m = self.shadows, kn.train_size
        cand = kn.candidates
        gen = torch.Generator().manual_seed(seed)
        if self.online:
            # shadows in pairs: a random half of the candidates and its complement, so that every
            # candidate is IN for exactly half of the shadows (S even) and OUT for the rest
            N = len(cand)
            order = torch.argsort(torch.rand((S + 1) // 2, N, generator=gen), 1)
            members = torch.stack([order[:, :m], order[:, N - m:]], 1).reshape(-1, m)[:S]
            self.inside = torch.zeros(S, N, dtype=torch.bool, device=members.device).scatter_(1, members, True)
            data = cand
        else:
            aux = kn.auxiliary
            if len(aux) < m:
                raise ValueError(f"offline LiRA needs at least {m} auxiliary records to train each shadow, "
                                 f"got {len(aux)}")
            members = torch.argsort(torch.rand(S, len(aux), generator=gen), 1)[:, :m]
            self.inside = torch.zeros(S, len(cand), dtype=torch.bool, device=members.device)
            data = aux
        r = kn.recipe
        # the recipe, defense included, is known: an adaptive adversary trains its shadows through it
        # (DP-SGD, pruning, ... on the release path; under SPN with its own head and codes, kn.view),
        # a static one with plain cross-entropy and no defense
        self.shadow_data, self.shadow_members, self.shadow_seed = data, members, seed + 5
        self.shadow_params = train_stacked(kn.view if kn.adaptive else kn.model, data, members,
                                           steps=r["steps"], lr=r["lr"], batch_size=r["batch_size"],
                                           momentum=r["momentum"], seed=self.shadow_seed,
                                           defense=kn.defense if kn.adaptive else None,
                                           static_objective=not kn.adaptive, engine=self.engine,
                                           device=kn.device)
        self.phi = _confidence(kn.model, self.shadow_params, cand.x.to(kn.device), cand.y.to(kn.device)).cpu()

    def score(self, obs):
        kn = self.knowledge
        cand = kn.candidates
        conf = _confidence(kn.model, obs.params, cand.x.to(kn.device), cand.y.to(kn.device)).cpu()   # (K, N)
        idx = obs.candidate_index.cpu()
        phi = conf[obs.model_index.cpu(), idx]                                     # (T,)
        self.observed_phi = phi                     # kept for inspection beside the shadows' self.phi
        return lira_score(phi, self.phi[:, idx], self.inside[:, idx], online=self.online,
                          fixed_variance=self.fixed_variance)


@register_adversary("lira-offline")
class OfflineLiRAAdversary(LiRAAdversary):
    """Offline LiRA: shadows trained on auxiliary data only (never on a candidate); one-sided score."""

    online = False


def lira_score(phi: torch.Tensor, shadow_phi: torch.Tensor, inside: torch.Tensor, *, online: bool = True,
               fixed_variance: bool = True) -> torch.Tensor:
    """LiRA's score of ``T`` observed confidences ``phi`` given the shadows' ``shadow_phi (S, T)``.

    ``inside (S, T)`` says which shadow trained on trial ``t``'s candidate. The OUT
    Gaussian is fitted on the other shadows only, the IN one (online) on those. Online:
    ``log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)``; offline: ``(phi - mu_out) / s_out``.
    """
    mu_out, var_out = _masked_moments(shadow_phi, ~inside, fixed_variance)
    if not online:
        return (phi - mu_out) / var_out.sqrt()
    mu_in, var_in = _masked_moments(shadow_phi, inside, fixed_variance)
    return _log_normal(phi, mu_in, var_in) - _log_normal(phi, mu_out, var_out)


def _masked_moments(v: torch.Tensor, mask: torch.Tensor, pooled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and variance of ``v (S, T)`` over the rows where ``mask``; the variance pooled over columns if asked."""
    w = mask.double()
    n = w.sum(0)
    if (n < 1).any():
        raise ValueError("a candidate has no shadow model on one side (IN or OUT); use more shadow models")
    mu = (v * w).sum(0) / n
    dev2 = ((v - mu) ** 2 * w)
    if pooled:
        var = dev2.sum() / (n.sum() - n.numel()).clamp_min(1)
        var = var.expand_as(mu)
    else:
        var = dev2.sum(0) / (n - 1).clamp_min(1)
    return mu, var.clamp_min(1e-6)


def _log_normal(x, mu, var):
    return -0.5 * (x - mu) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)


# -- playing it ---------------------------------------------------------------------------------
