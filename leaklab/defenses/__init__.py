"""Defenses: what a client does to its gradient (or its model) before the server sees it.

Seven defenses, each registered by name and spelled ``NAME[:KEY=VALUE,...]`` on the
command line:

=========  ===========  =================================================================
name       acts on      what it does
=========  ===========  =================================================================
prune      batch        zero the share ``ratio`` of smallest entries of each tensor
sign       batch        release the sign of every entry (signSGD)
noise      batch        add Gaussian noise (``std``, or ``rel`` to the gradient's norm)
dp         sample       DP-SGD: clip each record to ``clip``, sum, add noise ``noise*clip``, / B
perturb    batch        fool a surrogate inference classifier within ``budget * |g|``
vib        model        a variational information bottleneck before the last layer
spn        model        a secret polarization head and class codes (CE + alpha * L_pol)
=========  ===========  =================================================================

Every defense is applied on the one release path (:func:`leaklab.release.release`),
so the games, the reconstruction attacks and federated training all see the same
``M``. A *static* adversary ignores ``M``; an *adaptive* one knows it and simulates it
(each defense's ``adaptive_note`` says how).

>>> from leaklab.defenses import parse_defense
>>> d = parse_defense("dp:clip=1,noise=2")
>>> d.config()
{'name': 'dp', 'clip': 1.0, 'noise': 2.0}
>>> round(d.epsilon(delta=1e-5, sample_rate=1.0, steps=1), 2)
2.17
"""
from .base import (Defense, NoDefense, as_defense, describe_defenses, list_defenses, make_defense,
                   parse_defense, register_defense)
from .gradient import ACCOUNTANTS, DPSGD, GaussianNoise, Prune, Sign
from .perturb import Perturb
from .vib import VIB, VIBModel
# SPN lives in its own subpackage (leaklab.spn); importing its model registers "spn". A plain
# submodule import, last: leaklab.spn.model imports this package's base classes.
from ..spn import model as _spn_model  # noqa: F401,E402

__all__ = ["ACCOUNTANTS", "DPSGD", "Defense", "GaussianNoise", "NoDefense", "Perturb", "Prune", "Sign",
           "VIB", "VIBModel", "as_defense", "describe_defenses", "list_defenses", "make_defense",
           "parse_defense", "register_defense"]
