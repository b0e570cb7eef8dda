"""Adversaries of the inference games: turn released gradients into a score for the secret.

* ``informed`` — attribute inference when the adversary knows the target's other
  features and label (``phi(z)``). It computes the target's gradient for each
  candidate value of the sensitive feature and asks which one the observed batch
  gradient is closer to, after removing the expected contribution of the unknown
  rest of the batch. Under a Gaussian model of that rest, the score is a
  log-likelihood ratio, so scores of several rounds add up.
* ``shadow`` — any game. The adversary simulates the game on its auxiliary data at
  the same parameters ``theta`` (through the defense ``M`` when adaptive), and trains
  a logistic regression from standardised flattened gradients to the secret. Its
  log-odds (log-probabilities for more than two values) are summed over rounds.

Each adversary scores all ``T`` trials of a round at once and returns ``(T,)``
log-odds of secret value 1, or ``(T, K)`` scores for ``K > 2`` values.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .._checks import Registry, check_positive_int
from ..data import DatasetInfo
from ..fl import flatten
from .games import Game
from .protocol import Knowledge, Observation

__all__ = ["Adversary", "InformedAttributeAdversary", "ShadowAdversary", "register_adversary",
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
    def deco(cls):
        _ADVERSARIES.add(name, cls)
        cls.name = name
        return cls
    return deco


def list_adversaries() -> list[str]:
    return _ADVERSARIES.names()


def make_adversary(name: str | Adversary, **options) -> Adversary:
    """The adversary registered as ``name``, built with ``options`` (or ``name`` itself if an Adversary)."""
    if isinstance(name, Adversary):
        return name
    return _ADVERSARIES.lookup(name)(**options)


def _flat(grads) -> torch.Tensor:
    return flatten(grads, batch_dims=1).double()


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
    values, each value scores ``-|r - g(s)|^2 / (2 sigma^2)`` with an isotropic
    ``sigma^2``. The candidate value of the feature is its mean among the auxiliary
    records with that attribute value (exact for a coded attribute such as sex).
    """

    def __init__(self, *, floor: float = 1e-4, sims: int = 32):
        self.floor = float(floor)
        self.sims = check_positive_int("sims", sims, minimum=2)

    def check(self, game, info):
        if game.name != "attribute":
            raise ValueError(f"the informed adversary plays only the attribute game, not {game.name!r}; "
                             "use adversary 'shadow'")
        if game.attribute not in info.attribute_features or len(info.input_shape) != 1:
            have = [k for k in info.attribute_features] if len(info.input_shape) == 1 else []
            raise ValueError(
                f"the informed adversary needs the feature column of attribute {game.attribute!r}, "
                f"which dataset {info.name!r} does not declare (attributes with a column: "
                f"{', '.join(have) or 'none'}); use adversary 'shadow'")

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
        gc = _flat(kn.gradients(cand.reshape(T * K, 1, -1), ys, obs.params, defended=False)).reshape(T, K, -1)
        aux = kn.auxiliary
        ga = _flat(kn.gradients(aux.x[:, None], aux.y[:, None], obs.params, defended=False))   # (N, P) per record
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
            return (nd * proj / sigma2).cpu()
        sigma2 = others * ga.pow(2).mean() + self.floor * gc.pow(2).sum(-1).mean()
        return (-(r[:, None, :] - gc).pow(2).sum(-1) / (2 * sigma2)).cpu()


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
        logp[:, clf.classes_] = np.maximum(clf.predict_log_proba(x), -50.0)
        return torch.from_numpy(logp)
