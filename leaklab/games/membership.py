"""Membership inference as a game: was a target record used?

The challenger draws, for every trial, a target record from its pool and a fair
coin ``a``: with ``a = 1`` the target is used, with ``a = 0`` it is not. Two things
can be released, and the adversary sees one of them:

* ``observe="release"`` (the server's view in FedSGD) — a batch of ``B`` records,
  with the target in it when ``a = 1`` and ``B`` other records otherwise, goes
  through one step of the release path (:func:`server_sum`, the defense ``M``
  included; with ``clients > 1`` the other clients' batches never hold the target). The white-box server knows the candidate record and
  the model.
* ``observe="model"`` (anyone who queries the trained model) — a model is trained
  on a set of ``m`` records drawn from the pool; the trials are ``2m`` candidates,
  half of them in that set. The training recipe (architecture, steps, learning
  rate, defense) is known to the adversary.

Adversaries (the default is the strongest for what is observed):

``alignment`` (release)
    The cosine between the candidate's own gradient and the release: the statistic
    CANIFE uses to measure a canary's influence on an update (Maddock et al.,
    2023). A member's gradient is a summand of the release, so it aligns with it.
    The score is centred midway between the median cosines of members and
    non-members in games the adversary simulates on its auxiliary records, so
    that a score above 0 guesses "member".
``loss`` (model)
    The loss threshold of Yeom et al. (2018): members have lower loss. The score is
    ``-loss`` centred on the median over auxiliary (non-member) records.
``lira`` and ``lira-offline`` (model)
    The likelihood-ratio attack of Carlini et al. (2022), as we read it (see
    PAPERS.md). Shadow models are trained with the same recipe, all together in one
    ``torch.func.vmap`` over stacked parameters (:func:`train_stacked`). The recipe
    carries the defense: an adaptive adversary (``adaptive=True``) trains its shadows
    through it as the target was trained (DP-SGD clipping and noising each record,
    pruning, sign, ... on the release path; under SPN on ``CE + alpha * L_pol`` with its
    own draw of the head and codes, never the client's); a static adversary trains them
    with plain cross-entropy and no defense. For each
    candidate, the logit-scaled confidence ``phi = log p_y - log(1 - p_y)`` of its
    label is compared with its distribution under shadow models that trained on
    it (``IN``, online only) and that did not (``OUT``), each a Gaussian. Online:
    ``log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)``, with shadows
    trained on random halves of the candidates, in pairs (a half and its complement) so
    that every candidate is IN for half of them. Offline: shadows trained on
    auxiliary data only, and the one-sided score ``(phi - mu_out) / s_out``. With
    few shadows the variances are pooled over candidates (``fixed_variance``), as
    the paper recommends for small numbers of shadow models.

>>> from leaklab.games import play
>>> r = play("membership", "digits", batch_size=1, trials=64, game_options={"observe": "release"},
...          progress=False)
>>> r.score().auroc > 0.9
True
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .._checks import check_choice, check_fraction, check_positive_int, check_seed
from ..data import Dataset
from ..fl import flatten
from ..metrics.classification import tpr_at_fprs
from ..release import objective_of, shared_names
from ..results import Record
from ..runtime import get_device
from .adversaries import Adversary, make_adversary, register_adversary
from .games import Game, Trials, register_game
from .protocol import GameResult, Knowledge, Observation, checked_dataset, set_up_players

__all__ = ["MembershipGame", "MembershipResult", "AlignmentAdversary", "LossAdversary", "LiRAAdversary",
           "train_stacked", "stacked_init", "play_membership", "OBSERVE", "DEFAULT_ADVERSARY"]

OBSERVE = ("release", "model")
#: The strongest adversary for what it observes.
DEFAULT_ADVERSARY = {"release": "alignment", "model": "lira"}
_ADVERSARY_OBSERVES = {"alignment": "release", "loss": "model", "lira": "model", "lira-offline": "model"}


def _other_records(n: int, target: torch.Tensor, shape: tuple[int, ...], generator) -> torch.Tensor:
    """Random indices in ``[0, n)`` of shape ``shape`` (T, ...) that never equal ``target[t]``."""
    T = target.shape[0]
    r = torch.randint(n - 1, shape, generator=generator)
    t = target.reshape(T, *[1] * (len(shape) - 1))
    return r + (r >= t).long()            # skip the target's own index


def server_sum(model: nn.Module, data: Dataset, idx: torch.Tensor, target: torch.Tensor, params, *,
               clients: int = 1, defense=None, engine: str = "batched", generator: torch.Generator | None = None,
               device=None, static_objective: bool = False):
    """What the server sees in the membership game: the release of the batches ``data[idx]`` (T, B)
    and, with ``clients > 1``, the secure sum with ``clients - 1`` other clients' releases.

    The other clients' batches are drawn from the records other than trial ``t``'s target
    ``target[t]``, for members and non-members alike: the target is in the sum exactly
    when it is in the first client's batch.
    """
    from ..fl import secure_sum
    from .protocol import release_gradients

    check_positive_int("clients", clients)
    dev = get_device(device)
    x, y = data.x.to(dev), data.y.to(dev)
    releases = []
    for c in range(clients):
        pick = idx if c == 0 else _other_records(len(data), target, tuple(idx.shape), generator)
        pick = pick.to(dev)
        releases.append(release_gradients(model, x[pick], y[pick], params, engine=engine, defense=defense,
                                          generator=generator, static_objective=static_objective))
    return releases[0] if clients == 1 else secure_sum(releases)


@register_game("membership")
class MembershipGame(Game):
    """Membership inference: whether a target record was used (in the batch, or in the training set)."""

    needs_attribute = False

    def secret_names(self, data):
        return ("non-member", "member")

    def describe(self):
        return "whether a target record was used"

    def draw_trials(self, data, trials, generator):
        if len(data) < 2:
            raise ValueError(f"the membership game needs at least 2 records, dataset {data.name!r} has {len(data)}")
        secret = torch.randint(2, (trials,), generator=generator)
        target = torch.randint(len(data), (trials,), generator=generator)
        return Trials(secret, target)

    def training_pool(self, data, trials):
        """The pool without the trials' targets, members' and non-members' alike.

        The release game's ``theta`` (after ``warmup_steps``) is given to the adversary,
        and its epsilon counts the one release; a warm-up on the targets, under DP-SGD
        or not, would be a use of them that the epsilon does not count. Without them,
        ``theta`` depends on no target at all.
        """
        keep = torch.ones(len(data), dtype=torch.bool)
        keep[trials.target.unique()] = False
        if not keep.any():
            raise ValueError(f"the membership game's {trials.target.shape[0]} trials draw every record of the "
                             f"challenger's pool ({len(data)}) as a target, leaving none to train on before the "
                             f"release: use fewer trials or warmup_steps=0")
        return data.subset(keep.nonzero().flatten())

    def draw_batches(self, data, trials, batch_size, generator):
        T = trials.secret.shape[0]
        batch = _other_records(len(data), trials.target, (T, batch_size), generator)
        member = trials.secret == 1
        batch[member, 0] = trials.target[member]
        return batch


# -- models trained together -------------------------------------------------------------------

def _reinitialise(model: nn.Module) -> None:
    """Draw every parameter of ``model`` afresh from torch's global RNG, as its own initialiser does.

    Every module's ``reset_parameters`` (PyTorch's defaults); then a wrapper that draws
    its own parameters in its constructor draws them the same way again: SPN's secret head
    at ``N(0, 0.01^2)``, not at ``nn.Linear``'s default scale.
    """
    from ..defenses.spn import SPNModel

    for mod in model.modules():
        if callable(getattr(mod, "reset_parameters", None)):
            mod.reset_parameters()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, SPNModel):
                mod.polar.weight.copy_(_SPN_HEAD_STD * torch.randn(mod.polar.weight.shape))


#: the scale at which :class:`~leaklab.defenses.spn.SPNModel` draws its secret head
_SPN_HEAD_STD = 0.01


def stacked_init(model: nn.Module, count: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """``count`` fresh initialisations of ``model``'s architecture, stacked: ``(count, *shape)`` per parameter.

    Each copy draws every parameter as the model's own initialiser does (each module's
    ``reset_parameters``; an SPN head at its own small scale), under its own seed.
    """
    check_positive_int("count", count)
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(count):
        m = copy.deepcopy(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 100003 + i)
            _reinitialise(m)
        for k, v in m.named_parameters():
            out.setdefault(k, []).append(v.detach())
    return {k: torch.stack(v) for k, v in out.items()}


def train_stacked(model: nn.Module, data: Dataset, members: torch.Tensor, *, steps: int, lr: float = 0.1,
                  batch_size: int = 32, momentum: float = 0.9, seed: int = 0, params=None, defense=None,
                  static_objective: bool = False, engine: str = "batched", device=None,
                  progress: bool = False) -> dict[str, torch.Tensor]:
    """Train ``S`` models of ``model``'s architecture, model ``s`` on the records ``data[members[s]]``.

    ``members`` is ``(S, m)``: each model's training set (indices into ``data``).
    Every model runs ``steps`` SGD steps (momentum ``momentum``) on mini-batches drawn
    without replacement from its own set, shuffled epochs of fixed-size batches as
    :func:`leaklab.fl.train` draws them (:func:`leaklab.fl.epoch_batches`). With a
    ``defense`` every step goes through the release path (:func:`leaklab.release.release`):
    DP-SGD clips and noises each record's gradient, pruning prunes, and so on, for all
    models at once; a model-side defense (SPN, VIB) acts through ``model``'s own
    objective, which ``static_objective=True`` replaces by plain cross-entropy.
    Secret parameters (an SPN head) are trained on their own gradient.
    ``engine="batched"`` trains all of them in one ``torch.func.vmap`` per step over
    stacked parameters; ``engine="loop"`` computes each model's gradient with ordinary
    autograd from the same draws (the oracle and the benchmark's baseline). Returns the
    stacked trained parameters ``(S, *shape)``.
    """
    from .._progress import trange
    from ..defenses import as_defense
    from ..fl import epoch_batches
    from ..release import release

    check_choice("engine", engine, ("batched", "loop"))
    check_positive_int("steps", steps, minimum=0)
    check_positive_int("batch_size", batch_size)
    if not isinstance(members, torch.Tensor) or members.ndim != 2 or members.dtype != torch.long:
        raise ValueError(f"members must be a (S, m) tensor of record indices, got "
                         f"{type(members).__name__} {tuple(getattr(members, 'shape', ()))}")
    if members.numel() and (int(members.min()) < 0 or int(members.max()) >= len(data)):
        raise ValueError(f"members must index records in [0, {len(data) - 1}]")
    defense = as_defense(defense)
    dev = get_device(device)
    S, m = members.shape
    params = stacked_init(model, S, seed=seed) if params is None else {k: v.clone() for k, v in params.items()}
    params = {k: v.to(dev) for k, v in params.items()}
    x, y = data.x.to(dev), data.y.to(dev)
    members = members.to(dev)
    loss = objective_of(model, static=static_objective)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    # every draw made up front, so that both engines see the same batches
    pos = epoch_batches(m, batch_size, steps, gen, models=S).to(dev)         # (steps, S, b)
    through = defense.name != "none" and defense.acts_on != "model"
    secret = [k for k in params if k not in set(shared_names(model))]
    buf = {k: torch.zeros_like(v) for k, v in params.items()}
    g = vmap(grad(loss), in_dims=(0, 0, 0))
    g1 = grad(loss)

    def plain(p, xs, ys):
        if engine == "batched":
            return g(p, xs, ys)
        per = [g1({k: v[i] for k, v in p.items()}, xs[i], ys[i]) for i in range(xs.shape[0])]
        return {k: torch.stack([d[k] for d in per]) for k in p}

    for s in trange(steps, desc="train models", progress=progress, leave=False):
        idx = torch.gather(members, 1, pos[s])
        if through:
            gr = release(model, x[idx], y[idx], params=params, params_batched=True, defense=defense,
                         generator=noise, engine=engine, check=False, static_objective=static_objective)
            if secret:
                gr.update({k: v for k, v in plain(params, x[idx], y[idx]).items() if k in secret})
        else:
            gr = plain(params, x[idx], y[idx])
        for k in params:
            buf[k] = momentum * buf[k] + gr[k]
            params[k] = params[k] - lr * buf[k]
    return params


def _confidence(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                *, chunk: int = 4096) -> torch.Tensor:
    """LiRA's logit-scaled confidence ``log p_y - log(1 - p_y)`` of ``S`` stacked models on ``N`` records: ``(S, N)``."""
    def one(p, xb):
        return functional_call(model, p, (xb,))
    outs = []
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            logits = vmap(one, in_dims=(0, None))(params, x[s:s + chunk]).double()   # (S, n, C)
            yb = y[s:s + chunk]
            correct = logits.gather(2, yb[None, :, None].expand(logits.shape[0], -1, 1)).squeeze(2)
            others = logits.scatter(2, yb[None, :, None].expand(logits.shape[0], -1, 1), -math.inf)
            outs.append(correct - torch.logsumexp(others, 2))
    return torch.cat(outs, 1)


def _losses(model: nn.Module, params: dict[str, torch.Tensor], x, y) -> torch.Tensor:
    with torch.no_grad():
        logits = functional_call(model, params, (x,))
        return F.cross_entropy(logits.double(), y, reduction="none")


# -- knowledge and results ----------------------------------------------------------------------

@dataclass
class MembershipKnowledge(Knowledge):
    """What the membership adversary knows besides :class:`Knowledge`.

    ``observe`` says what is released; for ``observe="model"``: the candidates
    (``candidates``, the records whose membership is asked), the training set size
    ``train_size`` and recipe ``recipe`` (steps, lr, batch size, momentum).
    """

    observe: str = "release"
    candidates: Dataset | None = None
    train_size: int = 0
    recipe: dict = field(default_factory=dict)


class MembershipResult(GameResult):
    """A :class:`GameResult` whose record adds the true-positive rates at 1% and 0.1% false positives.

    At 0.1% FPR the rate is meaningful only with well over 1000 non-member trials.
    Under DP-SGD the record (``epsilon``, ``epsilon_replace``, ``epsilon_add_remove``) and
    the repr carry the accountant's epsilon for the game's own neighbours
    (``config["privacy"]["neighbours"]``): replace-one for the release game, add/remove for
    the model game.
    """

    def tpr(self, fpr: float, rounds: int | None = None) -> float:
        return tpr_at_fprs(self.secret, self.scores(rounds), fprs=(fpr,))[fpr]

    def record(self, rounds=None) -> Record:
        rec = super().record(rounds)
        t = tpr_at_fprs(self.secret, self.scores(rounds), fprs=(0.01, 0.001))
        rec.numbers["tpr_at_1pct_fpr"] = t[0.01]
        rec.numbers["tpr_at_0.1pct_fpr"] = t[0.001]
        p = self.config.get("privacy")
        if p:
            rec.numbers.update(epsilon=p["epsilon"], epsilon_replace=p["epsilon_replace"],
                               epsilon_add_remove=p["epsilon_add_remove"])
        return rec

    def __repr__(self) -> str:
        text = super().__repr__()
        p = self.config.get("privacy")
        if not p:
            return text
        return (f"{text[:-1]}; epsilon {p['epsilon']:.3g} for {p['neighbours']} neighbours at delta "
                f"{p['delta']:g} ({p['steps']} step(s), sample rate {p['sample_rate']:.3g}))")


# -- adversaries ------------------------------------------------------------------------------------

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
        if getattr(obs, "client_params", None) is not None:          # tracing: one local model per client
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
            self.inside = torch.zeros(S, N, dtype=torch.bool).scatter_(1, members, True)
            data = cand
        else:
            aux = kn.auxiliary
            if len(aux) < m:
                raise ValueError(f"offline LiRA needs at least {m} auxiliary records to train each shadow, "
                                 f"got {len(aux)}")
            members = torch.argsort(torch.rand(S, len(aux), generator=gen), 1)[:, :m]
            self.inside = torch.zeros(S, len(cand), dtype=torch.bool)
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

def play_membership(dataset: str | Dataset, *, adversary: str | Adversary | None = None, observe: str | None = None,
                    batch_size: int = 1, trials: int = 256, defense=None, adaptive: bool = False,
                    model: nn.Module | None = None, warmup_steps: int = 0, train_steps: int = 300,
                    lr: float = 0.1, train_batch_size: int = 32, train_size: int | None = None, momentum: float = 0.9, aux_fraction: float = 0.5,
                    clients: int = 1, adversary_options: dict | None = None, engine: str = "batched",
                    device=None, seed: int = 0, progress: bool = True, **unused) -> MembershipResult:
    """Play ``trials`` trials of the membership game; see the module for what is observed.

    ``observe="release"``: a FedSGD release of a batch of ``batch_size`` records at
    the model after ``warmup_steps`` SGD steps (learning rate ``lr``) on the pool without
    the trials' targets (:meth:`MembershipGame.training_pool`: the epsilon recorded counts
    the release alone, and ``theta`` uses no target), through ``defense`` (``clients > 1``: the secure sum with other clients, whose batches
    never hold the target, for members and non-members alike).
    ``observe="model"``: a model trained for ``train_steps`` steps (mini-batches of
    ``train_batch_size`` drawn without replacement, ``momentum``; under ``defense`` when it
    is given, e.g. DP-SGD, all target models together on the release path) on
    ``train_size`` of ``2 * train_size`` candidate records drawn from the pool (default ``trials // 2``); with ``trials > 2 * train_size``, ``trials // (2 *
    train_size)`` target models are trained together, each on its own random half of
    the same candidates (every pair of a model and a candidate is a trial), and the
    accuracies recorded are those of the first.
    Under DP-SGD ``config["privacy"]`` holds the accountant's epsilon for the game's own
    neighbours (see :class:`MembershipResult`): replace-one for the release (sample rate 1,
    one step), add/remove for the model (``train_steps`` steps at ``q = train_batch_size /
    train_size``, fixed-size batches accounted as Poisson sampling at that rate).
    ``adversary`` defaults to the strongest for ``observe`` (``alignment``, ``lira``);
    ``observe`` defaults to what the adversary observes.
    """
    from .protocol import play as _play_signature  # noqa: F401  (the keyword names follow play's)

    for k, v in unused.items():
        if v not in (None, {}, 0, 1) and k not in ("steps_per_round", "rounds", "game_options", "attribute"):
            raise ValueError(f"the membership game takes no option {k}={v!r}")
    if unused.get("rounds", 1) != 1:
        raise ValueError(f"the membership game is played for one round, got rounds={unused['rounds']}")
    if adversary == "shadow":
        adversary = None
    if isinstance(adversary, str) and adversary not in _ADVERSARY_OBSERVES:
        raise ValueError(f"unknown membership adversary {adversary!r}; choose from: "
                         f"{', '.join(_ADVERSARY_OBSERVES)}")
    if observe is None:
        observe = _ADVERSARY_OBSERVES.get(adversary, "release") if isinstance(adversary, str) else \
            getattr(adversary, "observes", "release")
    check_choice("observe", observe, OBSERVE)
    adversary = DEFAULT_ADVERSARY[observe] if adversary is None else adversary
    adv = make_adversary(adversary, **dict(adversary_options or {}))
    if getattr(adv, "observes", observe) != observe:
        raise ValueError(f"the {adv.name} adversary observes the {adv.observes}, not the {observe} "
                         f"(observe={observe!r})")
    t0 = time.perf_counter()
    dev = get_device(device)
    check_positive_int("batch_size", batch_size)
    check_positive_int("trials", trials, minimum=4)
    check_positive_int("clients", clients)
    check_fraction("aux_fraction", aux_fraction, low=0.05, high=0.95)
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False, got {adaptive!r}")
    check_seed(seed)
    dataset = checked_dataset(dataset, model)
    from .games import make_game

    game = make_game("membership", dataset.info)
    adv.check(game, dataset.info)
    defense, aux, pool, model = set_up_players(dataset, defense, model, aux_fraction=aux_fraction, seed=seed,
                                               device=dev)
    gen = torch.Generator().manual_seed(seed)
    recipe = {"steps": train_steps, "lr": lr, "batch_size": train_batch_size, "momentum": momentum}
    config = {"observe": observe, "clients": clients, "engine": engine, "defense": defense.config(),
              "model": type(model).__name__, "aux_fraction": aux_fraction,
              **{f"adversary_{k}": v for k, v in dict(adversary_options or {}).items()}}
    if observe == "release":
        from ..fl import parameters_of, train

        tr = game.draw_trials(pool, trials, gen)
        if warmup_steps:                  # on the pool without the targets: theta depends on none of them
            warm = game.training_pool(pool, tr)
            train(model, warm, steps=warmup_steps, lr=lr, seed=seed + 7, defense=defense, progress=False)
            config.update(training_records=len(warm))
        kn = MembershipKnowledge(model=model, game=game, auxiliary=aux, batch_size=batch_size,
                                 secret_names=game.secret_names(pool), defense=defense, adaptive=adaptive,
                                 device=dev, engine=engine, clients=clients, observe=observe, seed=seed)
        adv.prepare(kn, seed=seed + 1)
        idx = game.draw_batches(pool, tr, batch_size, gen)
        theta = parameters_of(model)
        g = server_sum(model, pool, idx, tr.target, theta, clients=clients, defense=defense, engine=engine,
                       generator=gen, device=dev)
        shared = {k: theta[k] for k in shared_names(model)}
        obs = Observation(1, shared, g, pool.x[tr.target].to(dev), pool.y[tr.target].to(dev))
        config.update(warmup_steps=warmup_steps, lr=lr)
        privacy = _privacy(defense, neighbours="replace-one", sample_rate=1.0, steps=1)
    else:
        m = trials // 2 if train_size is None else check_positive_int("train_size", train_size)
        K = max(1, trials // (2 * m))                       # target models, each with its own half
        if 2 * m > len(pool):
            raise ValueError(f"{2 * m} candidate records (twice train_size={m}) need that many records in the "
                             f"challenger's pool, which holds {len(pool)}; use a smaller train_size or trials")
        pick = torch.randperm(len(pool), generator=gen)[:2 * m]
        cand = pool.subset(pick)
        half = torch.argsort(torch.rand(K, 2 * m, generator=gen), 1)[:, :m]          # (K, m) members
        inside = torch.zeros(K, 2 * m, dtype=torch.long).scatter_(1, half, 1)
        # the target models, all together, through the defense (the release path at every step)
        params = train_stacked(model, cand, half, steps=train_steps, lr=lr, batch_size=train_batch_size,
                               momentum=momentum, seed=seed + 3, defense=defense, engine=engine, device=dev)
        kn = MembershipKnowledge(model=model, game=game, auxiliary=aux, batch_size=batch_size,
                                 secret_names=game.secret_names(pool), defense=defense, adaptive=adaptive,
                                 device=dev, engine=engine, clients=clients, observe=observe,
                                 candidates=cand, train_size=m, recipe=recipe, seed=seed)
        adv.prepare(kn, seed=seed + 1)
        model_index = torch.arange(K).repeat_interleave(2 * m)
        cand_index = torch.arange(2 * m).repeat(K)
        tr = Trials(inside.flatten(), cand_index)
        shared = {k: params[k] for k in shared_names(model)}          # a secret head never leaves the client
        obs = Observation(1, shared, {}, cand.x[cand_index].to(dev), cand.y[cand_index].to(dev))
        obs.candidate_index, obs.model_index = cand_index, model_index
        others = torch.ones(len(pool), dtype=torch.bool)
        others[pick] = False
        test = pool.subset(others.nonzero().flatten()) if others.any() else aux
        first = {k: v[0] for k, v in params.items()}
        config.update(recipe={**recipe}, train_size=m, target_models=K,
                      train_accuracy=_accuracy(model, first, cand.subset(half[0]), dev),
                      test_accuracy=_accuracy(model, first, test, dev))
        trials = 2 * m * K
        privacy = _privacy(defense, neighbours="add/remove", sample_rate=min(train_batch_size, m) / m,
                           steps=max(train_steps, 1))
    with torch.no_grad() if observe == "model" else _null():
        s = adv.score(obs)
    s = np.asarray(s.detach().cpu().double() if isinstance(s, torch.Tensor) else s)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"the {adv.name} adversary produced non-finite scores (a defense too strong for "
                         f"its statistic?)")
    if privacy is not None:
        config["privacy"] = privacy
    return MembershipResult(
        game="membership", dataset=dataset.name, modality=dataset.modality, attribute=None,
        adversary=adv.name, adaptive=adaptive, batch_size=batch_size, secret=tr.secret.numpy(),
        round_scores=s[None], secret_names=game.secret_names(pool), seed=seed, config=config,
        wall_time=time.perf_counter() - t0, device=str(dev))


def _privacy(defense, *, neighbours: str, sample_rate: float, steps: int, delta: float = 1e-5) -> dict | None:
    """The accountant's epsilon for what the game compares, or ``None`` for a defense without one.

    ``neighbours`` names the game's neighbouring datasets: ``"replace-one"`` for the
    release game (a member's batch and a non-member's differ in one record's value),
    ``"add/remove"`` for the model game. ``epsilon`` is for those; both conventions are kept.
    """
    if not callable(getattr(defense, "privacy", None)):
        return None
    p = defense.privacy(delta=delta, sample_rate=sample_rate, steps=steps)
    eps = p["epsilon_replace"] if neighbours == "replace-one" else p["epsilon"]
    return {"neighbours": neighbours, "epsilon": eps, "epsilon_replace": p["epsilon_replace"],
            "epsilon_add_remove": p["epsilon"], "delta": p["delta"], "accountant": p["accountant"],
            "sample_rate": sample_rate, "steps": steps}


def _accuracy(model, params, data: Dataset, dev) -> float:
    mode = model.training
    model.eval()                          # a stochastic model (VIB) predicts from its mean: no draw
    try:
        with torch.no_grad():
            out = functional_call(model, params, (data.x.to(dev),))
    finally:
        model.train(mode)
    return float((out.argmax(1).cpu() == data.y).double().mean())


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
