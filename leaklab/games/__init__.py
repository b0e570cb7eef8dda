"""Privacy games: a challenger releases gradients, an adversary guesses a secret, a metric scores it.

>>> from leaklab.games import play
>>> result = play("attribute", "diabetes", adversary="informed", batch_size=1, trials=64,
...               progress=False)
>>> result.score().auroc > 0.9
True
"""
from .games import (AttributeGame, DistributionGame, Game, PropertyGame, Trials, UserGame,
                    list_games, make_game, register_game)
from .protocol import (ENGINES, Defense, GameResult, Knowledge, Observation, default_model,
                       identity, play, release_gradients, secure_release)
from .adversaries import (Adversary, CombinedAdversary, InformedAttributeAdversary, PhiAdversary,
                          ShadowAdversary, list_adversaries,
                          make_adversary, register_adversary)
from .sweep import plot_sweep, sweep

__all__ = [
    "Adversary", "AttributeGame", "CombinedAdversary", "Defense", "DistributionGame", "ENGINES", "Game", "GameResult",
    "InformedAttributeAdversary", "Knowledge", "Observation", "PhiAdversary", "PropertyGame", "ShadowAdversary",
    "Trials", "UserGame", "default_model", "identity", "list_adversaries", "list_games",
    "make_adversary", "make_game", "play", "plot_sweep", "register_adversary", "register_game",
    "release_gradients", "secure_release", "sweep",
]
