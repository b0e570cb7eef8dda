"""Adversaries of the inference games: turn released gradients into a score for the secret.

* ``informed`` — attribute inference when the adversary knows the target's other
  features and label (``phi(z)``). It computes the target's gradient for each
  candidate value of the sensitive feature and asks which one the observed batch
  gradient is closer to, after removing the expected contribution of the unknown
  rest of the batch. Under a Gaussian model of that rest, the score is a
  log-likelihood ratio, so scores of several rounds add up.
* ``phi`` — the imputation baseline of Jayaraman & Evans (2022), "Are Attribute
  Inference Attacks Just Imputation?": it ignores the gradients and predicts the
  sensitive attribute from ``phi(z)`` alone (the target's other features and its
  label) with a classifier fitted on the auxiliary records. Whatever it reaches is
  known without any release; the leakage of a release is the gain over it.
* ``combined`` — ``phi(z)`` and the gradients together: the informed adversary's
  log-likelihood ratio plus the ``phi``-only log-odds as the prior (Bayes' rule).
* ``shadow`` — any game. The adversary simulates the game on its auxiliary data at
  the same parameters ``theta`` (through the defense ``M`` when adaptive), and trains
  a logistic regression from standardised flattened gradients to the secret. Its
  log-odds (log-probabilities for more than two values) are summed over rounds.

Each adversary scores all ``T`` trials of a round at once and returns ``(T,)``
log-odds of secret value 1, or ``(T, K)`` log-posteriors (a log-softmax over the
values) for ``K > 2`` values. Per-round scores are evidence that adds up over rounds:
a log-likelihood ratio (two values) or a log-likelihood up to a per-trial constant
(more values, which :meth:`~leaklab.games.GameResult.scores` normalises again after
summing). An adversary whose score includes a prior (``phi``, ``combined``) adds it in
the first observed round only, so that it is counted once.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .._checks import Registry, check_positive_int
from ..data import DatasetInfo
from ..fl import flatten
from .games import Game
from .protocol import Knowledge, Observation

__all__ = ["Adversary", "InformedAttributeAdversary", "PhiAdversary", "CombinedAdversary",
           "ShadowAdversary", "register_adversary",
           "make_adversary", "list_adversaries"]


class Adversary:
    """Base class: ``check`` the game applies, ``prepare`` with the knowledge, ``score`` each round."""

    name: str = ""

    def check(self, game: Game, info: DatasetInfo) -> None:
        """Raise ``ValueError`` when this adversary cannot play ``game`` on the dataset."""

    def prepare(self, knowledge: Knowledge, *, seed: int = 0) -> None:
        self.knowledge = knowledge
        self.generator = torch.Generator().manual_seed(seed)

    def score(self, obs: Observation) -> torch.Tensor:
        raise NotImplementedError


_ADVERSARIES: Registry = Registry("an adversary", "adversary")


def register_adversary(name: str) -> Callable[[type[Adversary]], type[Adversary]]:
    """Class decorator: make an :class:`Adversary` available to :func:`make_adversary` as ``name``."""
    return _ADVERSARIES.decorator(name, set_name=True)


def list_adversaries() -> list[str]:
    return _ADVERSARIES.names()


def make_adversary(name: str | Adversary, **options) -> Adversary:
    """The adversary registered as ``name``, built with ``options`` (or ``name`` itself if an Adversary)."""
    if isinstance(name, Adversary):
        return name
    return _ADVERSARIES.lookup(name)(**options)


def _flat(grads) -> torch.Tensor:
    return flatten(grads, batch_dims=1).double()


def _check_tabular_attribute(name: str, game, info) -> None:
    """Raise unless ``game`` is the attribute game on a dataset that declares the attribute's column."""
    if game.name != "attribute":
        raise ValueError(f"the {name} adversary plays only the attribute game, not {game.name!r}; "
                         "use adversary 'shadow'")
    if game.attribute not in info.attribute_features or len(info.input_shape) != 1:
        have = [k for k in info.attribute_features] if len(info.input_shape) == 1 else []
        raise ValueError(
            f"the {name} adversary needs the feature column of attribute {game.attribute!r}, "
            f"which dataset {info.name!r} does not declare (attributes with a column: "
            f"{', '.join(have) or 'none'}); use adversary 'shadow'")


@register_adversary("informed")
class InformedAttributeAdversary(Adversary):
    """Attribute inference by gradient matching, knowing the target's other features and label.

    For each candidate value ``s`` of the sensitive feature the adversary computes the
    target's own gradient ``g(s)``. The observed release of a batch of ``k`` records is
    ``g_obs = (g(z) + sum of k - 1 unknown gradients) / k``; with ``m`` the mean
    gradient of its auxiliary records, ``r = k g_obs - (k - 1) m`` estimates ``g(z)``.
    With two values the score is ``|d| <r - (g(1) + g(0))/2, u> / sigma^2``, where
    ``d = g(1) - g(0)``, ``u = d / |d|`` and ``sigma^2`` is ``k - 1`` times the variance
    of the auxiliary gradients along ``u`` (a Gaussian log-likelihood ratio). Under
    secure aggregation over ``c`` clients the release is a sum of ``c`` such means, and
    ``k - 1`` becomes ``c k - 1``. With more
    values, each value has the log-likelihood ``-|r - g(s)|^2 / (2 sigma^2)`` with an
    isotropic ``sigma^2``, and the score is the log-posterior under a uniform prior,
    the log-softmax of these over the values (so that one-vs-rest AUROC ranks trials
    by posterior, not by an unnormalised likelihood). The candidate value of the feature is its mean among the auxiliary
    records with that attribute value (exact for a coded attribute such as sex).

    **What the static adversary assumes.** It ignores ``M``: it models the release as the
    plain mean gradient of the batch, with the unknown records' gradients spread around
    ``m`` as its auxiliary records' are. Under a defense that adds noise the release
    spreads much more than that, and a likelihood ratio with the model's ``sigma^2`` is
    overconfident: alone it ranks the trials almost as well, but added to a prior (the
    ``combined`` adversary) it swamps the prior with noise, and the combination can fall
    below the prior itself. Not knowing ``M``, the adversary cannot use ``M``'s noise; it
    can measure the spread of what it observes. With ``calibrate`` (the default) it
    compares, over the ``T`` releases of the round, the second moment of its projection
    with what its model predicts (``E[proj^2] = |d|^2/4 + sigma^2``) and adds the excess,
    if any, to ``sigma^2`` (a method-of-moments fit of the variance to the releases; for
    more values, the per-coordinate excess of the distance to the nearest candidate).
    Without a defense the excess is about zero and the score is the model's. The
    adaptive adversary measures the spread on releases it simulates through ``M``
    (:mod:`leaklab.games.adaptive`) and needs no calibration.
    """

    def __init__(self, *, floor: float = 1e-4, sims: int = 32, calibrate: bool = True):
        self.floor = float(floor)
        self.sims = check_positive_int("sims", sims, minimum=2)
        if not isinstance(calibrate, bool):
            raise TypeError(f"calibrate must be True or False, got {calibrate!r}")
        self.calibrate = calibrate

    def check(self, game, info):
        _check_tabular_attribute(self.name or "informed", game, info)

    def prepare(self, knowledge, *, seed=0):
        super().prepare(knowledge, seed=seed)
        aux, game = knowledge.auxiliary, knowledge.game
        self.column = aux.info.attribute_features[game.attribute]
        codes = aux.attributes[game.attribute]
        k = len(knowledge.secret_names)
        self.candidates = torch.stack([aux.x[codes == v, self.column].mean() if (codes == v).any()
                                       else torch.tensor(float(v)) for v in range(k)])

    def score(self, obs):
        kn = self.knowledge
        if obs.phi_x is None:
            raise ValueError("the informed adversary needs phi(z), the target's known features")
        if kn.adaptive and kn.defense.name != "none":     # M acts on whole releases: simulate them
            from .adaptive import simulated_informed_scores
            return simulated_informed_scores(kn, obs, self.candidates, self.column, sims=self.sims,
                                             generator=self.generator)
        T, B = obs.phi_x.shape[0], kn.batch_size
        K = self.candidates.shape[0]
        dev = kn.device
        cand = obs.phi_x[:, None, :].repeat(1, K, 1)                           # (T, K, F)
        cand[:, :, self.column] = self.candidates.to(dev)
        ys = obs.phi_y[:, None].expand(T, K).reshape(T * K, 1)
        gc = _flat(kn.gradients(cand.reshape(T * K, 1, -1), ys, obs.params, defended=False,
                                generator=self.generator)).reshape(T, K, -1)     # (a stochastic model samples)
        aux = kn.auxiliary
        ga = _flat(kn.gradients(aux.x[:, None], aux.y[:, None], obs.params, defended=False,
                                generator=self.generator))                       # (N, P) per record
        m = ga.mean(0)
        ga = ga - m
        others = kn.clients * B - 1                # unknown records in the (summed) release
        r = B * _flat(obs.gradients) - others * m                             # (T, P) estimates g(z)
        if K == 2:
            d = gc[:, 1] - gc[:, 0]
            nd = d.norm(dim=1).clamp_min(1e-12)
            u = d / nd[:, None]
            proj = ((r - 0.5 * (gc[:, 1] + gc[:, 0])) * u).sum(1)
            var = (ga @ u.T).pow(2).mean(0)                                    # (T,)
            sigma2 = others * var + self.floor * nd**2
            if self.calibrate:
                # E[proj^2] = |d|^2 / 4 + the variance along u: the excess over the model's
                # variance, measured on the round's releases, is spread the model does not know of
                excess = (proj.pow(2) - 0.25 * nd**2 - sigma2).mean().clamp_min(0.0)
                sigma2 = sigma2 + excess
            return (nd * proj / sigma2).cpu()
        sigma2 = others * ga.pow(2).mean() + self.floor * gc.pow(2).sum(-1).mean()
        dist = (r[:, None, :] - gc).pow(2).sum(-1)                             # (T, K)
        if self.calibrate:       # per coordinate, from the nearest candidate (a lower estimate)
            excess = (dist.min(1).values / r.shape[1] - sigma2).mean().clamp_min(0.0)
            sigma2 = sigma2 + excess
        loglik = -dist / (2 * sigma2)
        return torch.log_softmax(loglik, dim=1).cpu()


def _phi_features(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> np.ndarray:
    """The classifier's input: the known features and a one-hot label."""
    onehot = torch.nn.functional.one_hot(y.long().cpu(), num_classes).double()
    return torch.cat([x.detach().cpu().double(), onehot], 1).numpy()


@register_adversary("phi")
class PhiAdversary(Adversary):
    """The imputation baseline: the attribute from ``phi(z)`` alone, no gradient.

    Jayaraman & Evans (2022) ask whether attribute inference attacks do better than
    *imputation*, predicting the attribute from what the adversary already knows
    about the target. This adversary is that imputation: it fits a logistic regression
    (:class:`leaklab.metrics._logistic.Logistic`, scikit-learn's objective with inverse
    regularisation ``C`` on standardised inputs, in torch) from
    the auxiliary records' other features (the sensitive column blanked, as in
    ``phi``) and one-hot label to their attribute, and scores each target by the
    log-odds of ``P(a | phi(z))``. The game draws secrets uniformly, so the
    auxiliary data's base rate is taken out: the score is ``log P(phi | a = 1) /
    P(phi | a = 0)`` (log-posteriors over the values for ``K > 2``). The score comes
    in the first observed round; later rounds add nothing.
    """

    def __init__(self, *, C: float = 1.0, max_iter: int = 1000):
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C = float(C)
        self.max_iter = check_positive_int("max_iter", max_iter)

    def check(self, game, info):
        _check_tabular_attribute(self.name or "phi", game, info)

    def prepare(self, knowledge, *, seed=0):
        from ..metrics._logistic import Logistic

        super().prepare(knowledge, seed=seed)
        aux, game = knowledge.auxiliary, knowledge.game
        self.column = aux.info.attribute_features[game.attribute]
        self.num_classes = aux.info.num_classes
        K = len(knowledge.secret_names)
        codes = aux.attributes[game.attribute].cpu().numpy()
        x = aux.x.clone()
        x[:, self.column] = 0.0                      # as in phi: the sensitive feature is unknown
        present = np.unique(codes)
        self.K = K
        if present.size < 2:
            raise ValueError(f"the auxiliary data holds only {game.attribute} value(s) {present.tolist()}; "
                             "the phi adversary needs at least two")
        self.clf = Logistic(C=self.C, max_iter=self.max_iter)
        self.clf.fit(_phi_features(x, aux.y, self.num_classes), codes)
        counts = np.bincount(codes, minlength=K).astype(np.float64)
        self.log_prior = np.log(np.maximum(counts, 1.0) / counts.sum())

    def log_posterior(self, phi_x: torch.Tensor, phi_y: torch.Tensor) -> torch.Tensor:
        """``(T, K)`` log-posteriors of the secret given ``phi`` under the game's uniform prior."""
        f = _phi_features(phi_x, phi_y, self.num_classes)
        logp = np.full((f.shape[0], self.K), -50.0)
        classes = self.clf.classes_
        logp[:, classes] = np.log(np.maximum(self.clf.predict_proba(f), math.exp(-50.0))) - self.log_prior[classes]
        return torch.log_softmax(torch.from_numpy(logp), dim=1)

    def prior_scores(self, obs: Observation) -> torch.Tensor:
        """The ``phi``-only score of the trials: ``(T,)`` log-odds or ``(T, K)`` log-posteriors."""
        if obs.phi_x is None or obs.phi_y is None:
            raise ValueError(f"the {self.name} adversary needs phi(z), the target's known features and label")
        lp = self.log_posterior(obs.phi_x, obs.phi_y)
        return lp[:, 1] - lp[:, 0] if self.K == 2 else lp

    def score(self, obs):
        s = self.prior_scores(obs)
        if obs.round == 1:
            return s
        # no new evidence after the first round: zero log-odds, or a uniform posterior
        return torch.zeros_like(s) if self.K == 2 else torch.full_like(s, -math.log(self.K))


@register_adversary("combined")
class CombinedAdversary(Adversary):
    """``phi(z)`` and the gradients: the informed log-likelihood ratio plus the ``phi`` log-odds.

    The informed adversary's score is a log-likelihood ratio of the release given the
    secret and ``phi(z)``, ``log p(g | a = 1, phi) / p(g | a = 0, phi)``; the ``phi``
    adversary's score is the log-odds of the secret given ``phi(z)`` alone. By Bayes'
    rule their sum is the log-odds of the secret given both, ``log P(a = 1 | g, phi) /
    P(a = 0 | g, phi)``, so the prior enters once (first observed round) and every
    round adds its likelihood ratio. For ``K > 2`` values the same holds for
    log-likelihoods, normalised by a log-softmax. The sum is exact when the
    likelihood model is; the informed one is a Gaussian approximation, and an
    overconfident likelihood ratio (a static adversary's under noise it does not model)
    drowns the prior in noise: the sum can then rank the trials worse than the prior
    alone. The informed part's ``calibrate`` (on by default) fits its variance to the
    spread of the observed releases, so that under a release that carries nothing the
    sum stays at the prior instead of falling below it.
    ``floor``, ``sims`` and ``calibrate`` go to the informed part, ``C`` to the ``phi`` part.
    """

    def __init__(self, *, floor: float = 1e-4, C: float = 1.0, sims: int = 32, calibrate: bool = True):
        self.informed = InformedAttributeAdversary(floor=floor, sims=sims, calibrate=calibrate)
        self.phi = PhiAdversary(C=C)

    def check(self, game, info):
        _check_tabular_attribute(self.name or "combined", game, info)

    def prepare(self, knowledge, *, seed=0):
        super().prepare(knowledge, seed=seed)
        self.informed.prepare(knowledge, seed=seed)
        self.phi.prepare(knowledge, seed=seed)

    def score(self, obs):
        g = self.informed.score(obs).double()
        if obs.round != 1:
            return g
        p = self.phi.prior_scores(obs).double()
        return g + p if g.ndim == 1 else torch.log_softmax(g + p, dim=1)


@register_adversary("shadow")
class ShadowAdversary(Adversary):
    """A shadow-gradient classifier: simulate the game on auxiliary data, learn gradient -> secret.

    In each observed round the adversary draws ``shadow_trials`` secrets and batches
    from its auxiliary data with the game's own sampler, computes their releases at
    the observed ``theta`` (through ``M`` when adaptive), and fits a scikit-learn
    ``LogisticRegression`` (inverse regularisation ``C``) on the standardised
    flattened gradients. Gradients with more than ``max_features`` entries are first
    reduced by a fixed Gaussian random projection to ``max_features`` dimensions
    (which keeps distances nearly unchanged and the classifier fast).
    """

    def __init__(self, *, shadow_trials: int = 1000, C: float = 0.05, max_iter: int = 300,
                 max_features: int = 512):
        self.shadow_trials = check_positive_int("shadow_trials", shadow_trials, minimum=10)
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C = float(C)
        self.max_iter = check_positive_int("max_iter", max_iter)
        self.max_features = check_positive_int("max_features", max_features)
        self._projection = None

    def _features(self, grads) -> np.ndarray:
        f = _flat(grads)
        P = f.shape[1]
        if P > self.max_features:
            if self._projection is None or self._projection.shape[0] != P:
                g = torch.Generator().manual_seed(int(torch.randint(2**31, (1,), generator=self.generator)))
                self._projection = (torch.randn(P, self.max_features, generator=g, dtype=torch.float64)
                                    / self.max_features**0.5).to(f.device)
            f = f @ self._projection
        return f.cpu().numpy()

    def score(self, obs):
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        kn = self.knowledge
        aux, game = kn.auxiliary, kn.game
        K = len(kn.secret_names)
        tr = game.draw_trials(aux, self.shadow_trials, self.generator)
        idx = game.draw_batches(aux, tr, kn.batch_size, self.generator)
        feats = self._features(kn.release(aux, idx, obs.params, self.generator))
        scaler = StandardScaler().fit(feats)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        labels = tr.secret.numpy()
        clf.fit(scaler.transform(feats), labels)
        x = scaler.transform(self._features(obs.gradients))
        if K == 2:
            return torch.from_numpy(clf.decision_function(x))
        logp = np.full((x.shape[0], K), -50.0)
        logp[:, clf.classes_] = np.log(np.maximum(clf.predict_proba(x), math.exp(-50.0)))
        return torch.log_softmax(torch.from_numpy(logp), dim=1)
