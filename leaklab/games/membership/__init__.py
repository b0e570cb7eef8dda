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

The game in four modules: :mod:`~leaklab.games.membership.game` (trials, batches, what the
server sees, the knowledge and the result), :mod:`~leaklab.games.membership.training` (models
trained together: targets and shadows), :mod:`~leaklab.games.membership.adversaries`
(alignment, loss, LiRA) and :mod:`~leaklab.games.membership.play` (:func:`play_membership`).
This package re-exports their public names.

>>> from leaklab.games import play
>>> r = play("membership", "digits", batch_size=1, trials=64, game_options={"observe": "release"},
...          progress=False)
>>> r.score().auroc > 0.9
True
"""
from .game import (DEFAULT_ADVERSARY, OBSERVE, MembershipGame, MembershipKnowledge,  # noqa: F401
                   MembershipResult, _other_records, server_sum)
from .training import stacked_init, train_stacked
from .adversaries import (AlignmentAdversary, LiRAAdversary, LossAdversary, OfflineLiRAAdversary,  # noqa: F401
                          lira_score)
from .play import play_membership

__all__ = ["MembershipGame", "MembershipResult", "AlignmentAdversary", "LossAdversary", "LiRAAdversary",
           "train_stacked", "stacked_init", "play_membership", "OBSERVE", "DEFAULT_ADVERSARY"]
